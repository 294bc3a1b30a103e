"""The backtest as a picture: the signal over time, the line it must cross, the would-act moments.

matplotlib is an operator's tool, not the function's: it is in requirements-dev.txt, not in
the function's requirements.txt, and imported only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rebalancer import policy


def plot(report: Any, rules: policy.Rules, path: Path) -> int:
    """Write a PNG of a ``backtest.Report`` (which imports this module, not the other way
    round); returns how many would-act moments it marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    measured = [s for s in report.steps if s.verdict.stats is not None]  # a step with stats has a hot pod too
    if rules.mode == "hpa":
        label, limit_label = "busiest pod's CPU (cores)", "HPA target x tolerance"
        def value(s: Any) -> float: return float(s.verdict.hot.value)
        def limit(s: Any) -> float: return float(s.verdict.threshold)
    else:
        label, limit_label = "coefficient of variation", f"threshold {rules.threshold:g}"
        def value(s: Any) -> float: return float(s.verdict.stats.value)
        def limit(s: Any) -> float: return rules.threshold
    series = [(s.at, value(s), limit(s)) for s in measured]

    figure, axes = plt.subplots(figsize=(12, 4.5), dpi=110)
    axes.plot([t for t, _, _ in series], [v for _, v, _ in series], color="#1f77b4", linewidth=1.2, label=label)
    axes.plot([t for t, _, _ in series], [limit for _, _, limit in series], color="#d62728", linestyle="--",
              linewidth=1, label=limit_label)
    acted = [s for s in measured if s.acted]
    held = [s for s in measured if s.held_by in ("cooldown", "hourly_budget")]
    axes.scatter([s.at for s in held], [value(s) for s in held], marker="x", color="#ff7f0e", s=18, zorder=3,
                 label=f"held by the cooldown ({len(held)} steps)")
    axes.scatter([s.at for s in acted], [value(s) for s in acted], marker="v", color="#d62728", s=90, zorder=4,
                 label=f"would act ({len(acted)})")
    for s in acted:
        axes.annotate(s.at.strftime("%H:%M"), (s.at, value(s)), textcoords="offset points", xytext=(0, 9),
                      ha="center", fontsize=8, color="#d62728")
    axes.set_title(f"{report.target} / {report.signal}: what pod-rebalancer would have done "
                   f"({len(acted)} actions, {len(acted) / report.days:.1f} per day)")
    axes.set_ylabel(label)
    axes.set_xlabel("time (UTC)")
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper right", fontsize=8)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return len(acted)
