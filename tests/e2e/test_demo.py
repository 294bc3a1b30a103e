"""`make demo` keeps working: it runs the function as a functions-framework process against a
real VictoriaMetrics and the stand-in, tells the story, and leaves no process behind."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_demo_verifies_the_skew_prints_the_story_and_stops_everything():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, f"demo failed:\n{out}\n{result.stderr}"
    assert "HTTP 200" in out and "outcome dry_run" in out
    assert "ingestion-consumer / cpu: dry_run" in out and "session-recordings / cpu: skipped" in out
    assert "-bbbbg   hot" in out  # the generated hot pod is the one selected
    assert "without the token -> HTTP 401" in out
    assert "of which writes: 0" in out
    leftover = subprocess.run(["pgrep", "-f", "rebalancer-demo-"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"demo left processes running: {leftover.stdout}"
