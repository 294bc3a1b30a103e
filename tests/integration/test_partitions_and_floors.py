"""Knowing when moving pods cannot help, decided by the function itself on real data: kafka-exporter's
per-partition ``kafka_consumergroup_lag`` attributed to pods by the consumers' own per-partition
records-lag series, and cAdvisor CPU counters, in a real VictoriaMetrics and in Prometheus (backfilled with
promtool), the pods on the real control plane. The pods are seconds old, so the function's clock
(and the newest sample) is 15 minutes ahead of them, past min_pod_age."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import AUTH, aligned_now
from tests.metricsdata import KAFKA_EXPORTER_PARTITIONS, cpu_usage, partition_lag_with_assignment

AHEAD = 900
PARTITIONS = KAFKA_EXPORTER_PARTITIONS


def lag_target(namespace: str) -> dict:
    return {"name": "consumer", "namespace": namespace, "deployment": "consumer", "min_pods": 3,
            "signals": {"lag": {"threshold": 0.5, "partitions": PARTITIONS}}}


def cpu_target(namespace: str) -> dict:
    return {"name": "consumer", "namespace": namespace, "deployment": "consumer", "min_pods": 3,
            "signals": {"cpu": {"threshold": 0.3}}}


@pytest.fixture
def decide(load_metrics, make_client, kube, clock):
    """``decide(replicas, series_for, target, live=False)``: that many pods, the series
    ``series_for(pods, start, end)`` in the engine, and the function's decision on them."""

    def run(replicas: int, series_for, target: dict, live: bool = False) -> tuple[list[str], dict]:
        pods = kube.deployment("consumer", replicas=replicas)
        now = aligned_now() + AHEAD
        clock.at(datetime.fromtimestamp(now, timezone.utc))  # at the newest sample: rate() is exact on both
        backend = load_metrics(series_for(pods, now - 1200, now))
        client = make_client(backend.url, [target], **({"env_rebalancer_dry_run": "false"} if live else {}))
        answer = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()
        return pods, answer["decisions"][0]

    return run


def lag(kube, by_partition: dict[int, float], owner: dict[int, int]):
    """Series for partitions ``by_partition`` (their lag), partition p held by pod ``owner[p]``."""
    return lambda pods, start, end: partition_lag_with_assignment(
        kube.namespace, "ingestion", by_partition, {p: pods[i] for p, i in owner.items()}, start, end, container="consumer")


def test_one_hot_partition_is_named_and_nothing_is_evicted(decide, kube):
    owner = {p: p // 2 for p in range(12)}  # twelve partitions, two per pod
    by_partition = {p: 50_000.0 if p == 6 else 100.0 for p in range(12)}

    pods, decision = decide(6, lag(kube, by_partition, owner), lag_target(kube.namespace), live=True)

    assert decision["outcome"] == "skipped" and decision["code"] == "hot_partition", decision["reason"]
    assert "events/6 with lag 50,000" in decision["reason"] and f"100% of {pods[3]}'s excess" in decision["reason"]
    assert decision["partitions"]["hot_partition"]["pod"] == pods[3]
    assert decision["actions"] == [] and kube.requests("create", "pods") == [] and kube.terminating(pods) == []


def test_an_uneven_assignment_is_acted_on_and_the_reason_says_so(decide, kube):
    owner = dict(enumerate([0, 0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5]))  # pods[0] holds five of twelve
    by_partition = dict.fromkeys(range(12), 1000.0)  # equal lag per partition

    pods, decision = decide(6, lag(kube, by_partition, owner), lag_target(kube.namespace))

    assert decision["outcome"] == "dry_run", decision["reason"]
    assert f"the assignment is uneven: {pods[0]} holds 5 of 12 partitions, more than its fair share 2" in decision["reason"]
    assert decision["selected"][0] == {"pod": pods[0], "value": 5000.0, "role": "hot"}
    assert decision["partitions"]["over_fair_share"] == {pods[0]: 5}
    assert decision["projected_cv"] == 0.0  # six whole partitions even the four that stay out at 3,000 each


def test_more_pods_than_partitions_leaves_the_idle_ones_out_and_balanced_partitions_alone(decide, kube):
    owner = {p: p for p in range(6)}  # six partitions, eight consumers
    by_partition = dict.fromkeys(range(6), 1000.0)

    pods, decision = decide(8, lag(kube, by_partition, owner), lag_target(kube.namespace))

    assert decision["outcome"] == "skipped" and decision["code"] == "below_threshold", decision["reason"]
    assert decision["verified"]["pods"] == 6 and decision["verified"]["value"] == 0.0
    assert decision["missing_pods"] == []
    assert decision["partitions"]["idle_by_assignment"] == sorted(pods[6:])
    assert {(n["pod"], n["why"]) for n in decision["ignored_pods"]} == {
        (pod, "holds no partition: idle by assignment") for pod in pods[6:]}


def test_three_messages_of_lag_are_below_the_floor(decide, kube):
    owner = {p: p // 2 for p in range(12)}
    by_partition = {p: 3.0 if p == 0 else 0.0 for p in range(12)}

    _, decision = decide(6, lag(kube, by_partition, owner), lag_target(kube.namespace))

    assert decision["outcome"] == "skipped" and decision["code"] == "below_floor", decision["reason"]
    assert decision["verified"]["value"] == pytest.approx(2.236, abs=1e-3) and decision["verified"]["floor"] == 500.0
    assert "the mean lag 0.5 messages is below the floor 500 messages" in decision["reason"]


def test_idle_cpu_is_below_the_floor(decide, kube):
    rates = [0.002] * 6 + [0.020]  # six pods idling at 2 millicores, one at 20

    _, decision = decide(7, lambda pods, start, end: cpu_usage(kube.namespace, "consumer", dict(zip(pods, rates, strict=True)),
                                                               start, end), cpu_target(kube.namespace))

    assert decision["outcome"] == "skipped" and decision["code"] == "below_floor", decision["reason"]
    assert decision["verified"]["value"] > 1.2 and decision["verified"]["floor"] == 0.1
    assert "below the floor 0.1 cores" in decision["reason"]
