"""The backtest as a picture: the signal over time, the line it must cross, the would-act moments.

matplotlib is an operator's tool, not the function's: it is in requirements-dev.txt, not in
the function's requirements.txt, and imported only when a plot is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rebalancer.core.workload import Rules


@dataclass(frozen=True)
class Drawn:
    """What the plot shows: the would-act moments, and the spans it shaded."""

    actions: int
    cooldown_spans: int
    closed_spans: int  # outside the maintenance windows, or in a blackout


def closed_spans(times: list[datetime], allows: Any) -> list[tuple[datetime, datetime]]:
    """The runs of consecutive steps at which the schedule does not allow acting."""
    spans: list[tuple[datetime, datetime]] = []
    start: datetime | None = None
    for previous, at in zip([None, *times], times, strict=False):
        if not allows(at):
            start = start or at
        elif start is not None and previous is not None:
            spans.append((start, previous))
            start = None
    if start is not None:
        spans.append((start, times[-1]))
    return spans


def plot(report: Any, rules: Rules, path: Path) -> Drawn:
    """Write a PNG of a ``backtest.Report`` (which imports this module, not the other way
    round). The cooldown after each would-act moment and the closed maintenance windows are
    shaded spans, so that what held an episode back shows at a day's scale."""
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
    held = sum(1 for s in measured if s.held_by in ("cooldown", "hourly_budget"))
    for i, s in enumerate(acted):
        axes.axvspan(mdates.date2num(s.at), mdates.date2num(s.at + report.cooldown), color="#ff7f0e", alpha=0.15,
                     linewidth=0, zorder=1, label=f"cooldown after an action (held {held} steps)" if i == 0 else None)
    closed = closed_spans([s.at for s in report.steps], report.schedule.allows)
    for i, (start, end) in enumerate(closed):
        axes.axvspan(mdates.date2num(start), mdates.date2num(end), color="#7f7f7f", alpha=0.2, linewidth=0, zorder=1,
                     label="outside the maintenance windows" if i == 0 else None)
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
    return Drawn(len(acted), len(acted), len(closed))
