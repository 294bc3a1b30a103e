"""The composite signal on real data, in a real VictoriaMetrics and in Prometheus (backfilled with
promtool): per-pod CPU counters and memory working sets, the pods on the real control plane.
Each pod's score is the weighted sum of its signals' values, each over that signal's mean; the
CV is taken over the scores. Each signal is queried once, whatever number of decisions read it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import requests

from rebalancer.config import Settings
from rebalancer.core.durations import parse_duration
from rebalancer.tools import backtest, rules
from tests.conftest import AUTH, aligned_now
from tests.metricsdata import cpu_usage, memory_working_set
from tests.proxy import LoggingProxy

GIB = 2**30
AHEAD = 900


def composite_target(namespace: str, weights: dict[str, float]) -> dict:
    return {"name": "consumer", "namespace": namespace, "deployment": "consumer", "min_pods": 3,
            "signals": {"cpu": {"threshold": 0.3}, "memory": {"threshold": 0.3}},
            "composite": {"weights": weights, "threshold": 0.2}}


@pytest.fixture
def decide(load_metrics, make_client, kube, clock):
    def run(cpu: list[float], memory_gib: list[float], weights: dict[str, float]):
        pods = kube.deployment("consumer", replicas=len(cpu))
        now = aligned_now() + AHEAD
        clock.at(datetime.fromtimestamp(now, timezone.utc))
        backend = load_metrics(cpu_usage(kube.namespace, "consumer", dict(zip(pods, cpu, strict=True)), now - 1200, now)
                               + memory_working_set(kube.namespace, "consumer",
                                                    {p: m * GIB for p, m in zip(pods, memory_gib, strict=True)}, now - 1200, now))
        proxy = LoggingProxy(backend.url).start()
        try:
            client = make_client(proxy.url, [composite_target(kube.namespace, weights)])
            answer = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()
            queries = [q.query for q in proxy.seen]
        finally:
            proxy.stop()
        decisions = {d["signal"]: d for d in answer["decisions"]}
        return pods, decisions, queries, (backend, datetime.fromisoformat(answer["at"].replace("Z", "+00:00")))

    return run


def test_the_composite_crosses_its_threshold_where_no_single_signal_does(decide):
    # The same pod a little hotter in CPU and in memory: a CV of 0.26 in each, under their 0.3;
    # over the composite's 0.2, since the two agree.
    pods, decisions, queries, (backend, at) = decide([0.5, 0.5, 0.5, 0.5, 0.9, 0.5], [1, 1, 1, 1, 1.8, 1], {"cpu": 1, "memory": 1})

    assert decisions["cpu"]["code"] == decisions["memory"]["code"] == "below_threshold"
    combined = decisions["composite"]
    assert combined["code"] == "skew_verified" and combined["verified"]["value"] == pytest.approx(0.2626, abs=1e-3)
    assert combined["selected"][0]["pod"] == pods[4]
    shown = combined["composite"]["pods"][pods[4]]  # every component of every selected pod
    assert shown["cpu"] == pytest.approx(0.9, rel=0.02) and shown["memory"] == pytest.approx(1.8 * GIB)
    assert shown["score"] == pytest.approx(combined["selected"][0]["value"])
    assert combined["composite"]["weights"] == {"cpu": 1.0, "memory": 1.0}
    assert len(queries) == 2  # cpu and memory once each, for three decisions

    # The generated alert rule computes the same CV from the same queries, on this engine.
    settings = Settings(metrics_url=backend.url, targets=[composite_target("placeholder", {"cpu": 1, "memory": 1})])
    rule = next(r for r in rules.rules_document(settings, parse_duration("5m"), parse_duration("30s"))["groups"][0]["rules"]
                if r["alert"] == "ConsumerCompositeSkew")
    cv_expression = rule["expr"].split(" > ")[0].replace('"placeholder"', f'"{combined["namespace"]}"')
    value = requests.post(f"{backend.url}/api/v1/query", data={"query": cv_expression, "time": at.timestamp()},
                          timeout=10).json()
    assert float(value["data"]["result"][0]["value"][1]) == pytest.approx(combined["verified"]["value"], rel=0.02)


def test_a_signal_can_cross_its_threshold_where_the_composite_does_not(decide):
    # The CPU-hot pod holds the least memory: weighted 1 to 3, the two even out.
    _, decisions, _, _ = decide([0.5, 0.5, 0.5, 0.5, 1.5, 0.5], [1, 1, 1, 1, 0.538, 1], {"cpu": 1, "memory": 3})

    assert decisions["cpu"]["code"] == "skew_verified"
    assert decisions["composite"]["code"] == "below_threshold", decisions["composite"]["reason"]
    assert decisions["composite"]["verified"]["value"] < 0.01


def test_a_component_below_its_floor_does_not_count(decide):
    # CPU idles at a few millicores: its skew is noise, left out of the composite.
    _, decisions, _, _ = decide([0.002, 0.002, 0.002, 0.002, 0.02, 0.002], [1, 1, 1, 1, 1, 1], {"cpu": 1, "memory": 1})

    combined = decisions["composite"]
    assert combined["composite"]["weights"] == {"memory": 1.0} and "cpu" in combined["composite"]["left_out"]
    assert combined["code"] == "below_threshold"


def test_the_backtest_replays_the_composite_from_its_components(decide):
    pods, decisions, _, (backend, at) = decide([0.5, 0.5, 0.5, 0.5, 0.9, 0.5], [1, 1, 1, 1, 1.8, 1], {"cpu": 1, "memory": 1})
    settings = Settings(metrics_url=backend.url, targets=[{**composite_target(decisions["cpu"]["namespace"],
                                                                              {"cpu": 1, "memory": 1}), "min_pod_age": "0s"}])
    period = backtest.Period(at - timedelta(minutes=10), at, timedelta(minutes=1))

    report = backtest.run(settings, settings.targets[0], "composite", period, backtest.Assumed())

    assert [s.verdict.code for s in report.steps[-3:]] == ["skew_verified"] * 3
    assert report.steps[-1].verdict.stats.value == pytest.approx(decisions["composite"]["verified"]["value"], rel=0.05)
    assert len(report.actions) == 1 and report.actions[0].verdict.selected[0].pod == pods[4]
