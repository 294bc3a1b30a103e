"""`make bench` is not part of `make test`, but it must not rot: one small run, end to end, with
the table checked for the counts that do not depend on the machine (never for durations)."""

from __future__ import annotations

import os
import re

from bench import run


def test_the_benchmark_runs_and_reports_constant_upstream_requests(capsys):
    assert run.main(["--sizes", "10", "100", "--runs", "2", "--settle", "10", "--cold-starts", "1", "--imports", "1"]) == 0
    table = capsys.readouterr().out

    timings, rest = table.split("Ratios of the medians")
    ratio_part, cpu_part = rest.split("CPU spent on the machine during a run")
    rows, cpu = (
        {(m.group(1), m.group(2)): [c.strip() for c in m.group(0).strip("|").split("|")]
         for m in re.finditer(r"^\| ([\d,]+) \| ([a-z][a-z ,-]*?) \|.*\|$", part, re.M)}
        for part in (timings, cpu_part))
    assert {variant for _, variant in rows} == set(run.VARIANTS)
    assert set(cpu) == {(pods, variant) for pods in ("10", "100")
                        for variant in ("after", "client-go, run once", "pod list alone", "queries alone")}
    for cells in cpu.values():  # the floor is the machine's CPU over its cores, and the ratio the median's to it
        machine, floor = float(cells[6]), float(cells[7])
        assert abs(floor - machine / os.cpu_count()) <= 1, cells
        if floor > 1:  # the cells are rounded: the median and the floor to 1 ms, the ratio to 0.01
            median, shown = float(cells[2]), float(cells[8].rstrip("×"))
            assert (median - 0.5) / (floor + 0.5) - 0.006 <= shown <= (median + 0.5) / (floor - 0.5) + 0.006, cells
    for pods in ("10", "100"):
        # Kubernetes requests per run, from the API server's audit log, the same at every size: the
        # function's five reads (before and after), client-go's two, the pod list's one.
        requests = {variant: rows[(pods, variant)][8] for variant in run.VARIANTS}
        assert requests == {"after": "5", "before": "5", "client-go, run once": "2", "client-go, in process": "2",
                            "pod list alone": "1", "queries alone": "0"}, requests
    ratios = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([\d,]+) \| [\d.]+× \|.*\|$", ratio_part, re.M)}
    assert set(ratios) == {"10", "100"} and all(row.rstrip("| ").endswith("yes") for row in ratios.values()), ratios
    assert "Cold start (process start to the first answered webhook, 1 starts each, alternating): after:" in table
    assert "lag: dry_run (skew_verified)" in table


def test_the_effect_benchmark_runs_one_eviction_on_a_real_group_and_reports_it(capsys):
    from bench import effects

    assert effects.main(["--runs", "1", "--scenarios", "uneven"]) == 0
    table = capsys.readouterr().out

    runs, summary = table.split("| scenario | runs |")
    (row,) = [line for line in runs.splitlines() if line.startswith("| uneven assignment | 1 |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    # The range assignor left one consumer with every topic's extra partition, and one again after.
    assert cells[2] == "6/3/3/3" and cells[12] == "6/3/3/3", row
    best, _, worst = cells[5].partition(" to ")
    assert 0 <= float(best) < float(worst) and float(cells[6]) > 0 and float(cells[9]) > 0, row  # the delays' band
    assert cells[14] == "yes", row  # range is projected exactly: the real assignment falls inside the projection
    assert "| uneven assignment | 1 | " in summary


def test_the_sources_benchmark_reads_one_group_at_the_brokers_and_through_victoriametrics(capsys):
    from bench import sources

    assert sources.main(["--rounds", "2", "--scenarios", "slow consumer"]) == 0
    table = capsys.readouterr().out

    agreement, cost = table.split("Per invocation")
    (row,) = [line for line in agreement.splitlines() if line.startswith("| slow consumer |")]
    assert row.rstrip().endswith("| yes |"), row  # within one production scrape interval of inflow
    (row,) = [line for line in cost.splitlines() if line.startswith("| slow consumer |")]
    decided = row.rsplit("|", 2)[1]
    # The three functions (through VictoriaMetrics, at the brokers, at the brokers over TLS) name one hot pod.
    pods = set(re.findall(r"\((consumer-[a-z0-9-]+)\)", decided))
    assert len(pods) == 1 and decided.count("skew_verified") == 3, decided
