"""Every PromQL template the function can send gives the same per-pod values on VictoriaMetrics
and on Prometheus' own engine (promtool ``promql_expr_test`` over the same series).

A query that only works on one engine is a bug users of the other would meet in production:
PostHog's pod-rebalancer's main query returns nothing on Prometheus.
"""

from __future__ import annotations

import math
import subprocess
import time
from datetime import timedelta

import pytest
import yaml

from rebalancer.core import promql
from tests.metricsdata import (
    KAFKA_EXPORTER_LAG_JOIN,
    STEP_SECONDS,
    consumer_records_lag,
    cpu_usage,
    partition_lag_with_assignment,
    to_promtool_input_series,
    to_victoriametrics_import,
)
from tests.servers import require_binary

NS, CONTAINER = "posthog", "ingestion-consumer"
PODS = [f"{CONTAINER}-7d9f8c6b5-{s}" for s in ("bbbbb", "bbbbc", "bbbbd", "bbbbf", "bbbbg")]
# The engines order their floating-point operations differently, so results differ in the last
# few bits (~1e-11 relative); promtool 2.42 compares exactly. Both sides are rounded to 1e-9 the
# way PromQL's round() does it, in IEEE doubles on both sides, so the comparison is exact to 9 places.
TO_NEAREST = 1e-9


def promql_round(value: float) -> float:
    inverse = 1.0 / TO_NEAREST
    return math.floor(value * inverse + 0.5) / inverse


def scenario(name: str, start: float, end: float):
    if name == "cpu":
        rates = dict(zip(PODS, [0.125, 0.25, 0.3125, 0.28125, 1.5], strict=True))
        return promql.DEFAULT_CPU_TEMPLATE, cpu_usage(NS, CONTAINER, rates, start, end, noise=0.05, seed=11)
    if name == "lag":
        return promql.DEFAULT_LAG_TEMPLATE, consumer_records_lag(NS, CONTAINER, dict(zip(PODS, [10, 20, 30, 40, 9000], strict=True)), start, end)
    assignment = {p: PODS[p % 5] for p in range(15)}
    lag = {p: (5000.0 if p % 5 == 4 else 10.0 * p) for p in range(15)}
    return KAFKA_EXPORTER_LAG_JOIN, partition_lag_with_assignment(NS, "ingestion", lag, assignment, start, end)


@pytest.mark.parametrize("name", ["cpu", "lag", "lag-join"])
def test_template_gives_the_same_per_pod_values_on_victoriametrics_and_prometheus(name, victoria_metrics, tmp_path):
    end = (int(time.time()) // STEP_SECONDS) * STEP_SECONDS
    start = end - 20 * 60
    template, series = scenario(name, start, end)
    query = promql.render(template, namespace=NS, deployment=CONTAINER, container=CONTAINER, window=timedelta(minutes=5))

    victoria_metrics.import_prometheus(to_victoriametrics_import(series))
    # Once seen in a clean-clone run: VictoriaMetrics' answer matched a window ending one sample
    # early. Say so plainly if it happens again, instead of as a value mismatch.
    names = sorted({s.name for s in series})
    newest = victoria_metrics.query(f'min(timestamp({{__name__=~"{"|".join(names)}"}}))', end)["data"]["result"]
    assert newest and float(newest[0]["value"][1]) == end, f"VictoriaMetrics does not see the newest samples at {end}: {newest}"
    result = victoria_metrics.query(query, end)["data"]["result"]
    from_vm = {r["metric"]["pod"]: float(r["value"][1]) for r in result}
    assert sorted(from_vm) == sorted(PODS), f"VictoriaMetrics returned {from_vm} for {query}"

    test_file = tmp_path / "engines_agree_test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [],
        "evaluation_interval": f"{STEP_SECONDS}s",
        "tests": [{
            "interval": f"{STEP_SECONDS}s",
            "input_series": to_promtool_input_series(series, start),
            "promql_expr_test": [{
                "expr": f"round({query}, {TO_NEAREST})",
                "eval_time": f"{int(end - start)}s",
                "exp_samples": [{"labels": f'{{pod="{pod}"}}', "value": promql_round(value)} for pod, value in sorted(from_vm.items())],
            }],
        }],
    }))
    checked = subprocess.run([require_binary("promtool"), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, f"Prometheus disagrees with VictoriaMetrics on {query}:\n{checked.stdout}\n{checked.stderr}"


def test_promtool_comparison_can_fail(victoria_metrics, tmp_path):
    """The check above must be able to fail: a wrong expected value is reported by promtool."""
    test_file = tmp_path / "wrong_test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": [],
        "tests": [{"interval": "15s", "input_series": [{"series": 'x{pod="a"}', "values": "1 2 3"}],
                   "promql_expr_test": [{"expr": "sum by (pod) (x)", "eval_time": "30s",
                                         "exp_samples": [{"labels": '{pod="a"}', "value": 4}]}]}],
    }))
    checked = subprocess.run([require_binary("promtool"), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60)
    assert checked.returncode != 0 and "FAILED" in (checked.stdout + checked.stderr)
