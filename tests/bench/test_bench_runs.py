"""`make bench` is not part of `make test`, but it must not rot: one small run, end to end, with
the table checked for the counts that do not depend on the machine (never for durations)."""

from __future__ import annotations

import re

from bench import run


def test_the_benchmark_runs_and_reports_constant_upstream_requests(capsys):
    assert run.main(["--sizes", "10", "100", "--lean", "10", "--runs", "2", "--cold-starts", "1", "--imports", "1"]) == 0
    table = capsys.readouterr().out

    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([\d,]+(?: \(lean pods\))?) \|.*\|$", table, re.M)}
    assert set(rows) == {"10", "100", "10 (lean pods)"}
    for row in rows.values():
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[8:10] == ["5", "2"], row  # kube requests, metrics queries: the same at every size
    assert "Cold start (process start to the first answered webhook, 1 starts)" in table
    assert "lag: dry_run (skew_verified)" in table
