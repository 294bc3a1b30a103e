"""`make backtest-example`: the README's backtest example, regenerated.

Loads a synthetic day with four skew episodes into a real VictoriaMetrics (the same day the
backtest tests use), writes a configuration pointing at it, runs
`python -m rebalancer backtest ... --plot docs/backtest.png` and prints its report.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The synthetic day of tests/integration/test_backtest.py: six pods, four skew episodes.
from tests.integration.test_backtest import BALANCED, EPISODES, NS, SKEWED, TARGET  # noqa: E402
from tests.metricsdata import cpu_usage, to_victoriametrics_import  # noqa: E402
from tests.servers import Stopping, VictoriaMetrics  # noqa: E402

PODS = [f"ingestion-consumer-7d9f8c6b5-{suffix}" for suffix in ("bbbbb", "bbbbc", "bbbbd", "bbbbf", "bbbbg", "bbbbh")]


def main() -> int:
    end = int(datetime(2026, 11, 25, tzinfo=timezone.utc).timestamp())  # a fixed day, so the example reads the same
    start = end - 86400
    phases = [(start - 3600, dict(zip(PODS, BALANCED, strict=True)))]
    for begin, finish in EPISODES:
        phases.append((start + begin.total_seconds(), dict(zip(PODS, SKEWED, strict=True))))
        phases.append((start + finish.total_seconds(), dict(zip(PODS, BALANCED, strict=True))))
    # Stopping: VictoriaMetrics goes on Ctrl-C, SIGTERM or SIGHUP too, not only at the end.
    with tempfile.TemporaryDirectory(prefix="rebalancer-backtest-") as tmp, Stopping() as started:
        vm = started.add(VictoriaMetrics(Path(tmp) / "vm")).start()
        vm.import_prometheus(to_victoriametrics_import(cpu_usage(NS, "ingestion-consumer", phases, start - 600, end,
                                                                 with_neighbours=False)))
        config = Path(tmp) / "rebalancer.yaml"
        config.write_text(yaml.safe_dump({"metrics_url": vm.url, "targets": [TARGET]}))
        (REPO / "docs").mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "rebalancer", "backtest", "--config", str(config), "--target", "ingestion-consumer",
                "--start", "2026-11-24T00:00:00Z", "--end", "2026-11-25T00:00:00Z", "--step", "1m",
                "--plot", "docs/backtest.png"]
        print("$ python -m rebalancer backtest --config rebalancer.yaml --target ingestion-consumer \\\n"
              "    --start 2026-11-24T00:00:00Z --end 2026-11-25T00:00:00Z --step 1m --plot docs/backtest.png\n", flush=True)
        return subprocess.run(argv, cwd=REPO).returncode


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: VictoriaMetrics was stopped on the way out
        sys.exit(130)
