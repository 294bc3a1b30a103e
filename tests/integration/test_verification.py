"""The function re-verifies an alert against a real metrics server and the real control plane.

Every test runs twice: against VictoriaMetrics (data imported through /api/v1/import/prometheus)
and against Prometheus (the same data backfilled with promtool), through the real app built
by functions-framework, fed Alertmanager's own payloads (their namespace label set to the
test's own namespace). The pods are seconds old, so the targets set min_pod_age to 0.
"""

from __future__ import annotations

from statistics import fmean, pstdev

import pytest

from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import KAFKA_EXPORTER_LAG_JOIN, consumer_records_lag, cpu_usage, partition_lag_with_assignment
from tests.samples import sample_in_namespace

FIRING_CPU = "alertmanager-0.25-firing-cpu-two-deployments.json"
FIRING_LAG = "alertmanager-0.25-firing-lag-two-deployments.json"
LAG_JOIN = KAFKA_EXPORTER_LAG_JOIN


def value_tolerance(backend) -> float:
    """Per-pod values are exact on VictoriaMetrics. Prometheus' rate() extrapolates only part of
    the gap between the last sample and the evaluation time (the real 'now', seconds later), so
    its values sit up to ~10 % low; the CV, a ratio, is the same on both."""
    return 1e-6 if backend.kind == "victoriametrics" else 0.1


def cv(values):
    return pstdev(values) / fmean(values)


def decisions_by_target(response):
    return {d["target"]: d for d in response.get_json()["decisions"]}


def test_skewed_cpu_is_verified_and_names_the_hottest_and_coldest_pods(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=5)
    now = aligned_now()
    rates = dict(zip(pods, [0.125, 0.25, 0.3125, 0.28125, 1.5], strict=True))
    backend = load_metrics(cpu_usage(kube.namespace, "ingestion-consumer", rates, now - 1200, now))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")])

    response = client.post("/", json=sample_in_namespace(FIRING_CPU, kube.namespace), headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    decision = decisions_by_target(response)["ingestion-consumer"]
    assert decision["outcome"] == "dry_run" and body["outcome"] == "dry_run"
    assert decision["verified"]["value"] == pytest.approx(cv(rates.values()), rel=1e-6)
    assert decision["verified"]["pods"] == 5
    tolerance = value_tolerance(backend)
    assert decision["verified"]["mean"] == pytest.approx(fmean(rates.values()), rel=tolerance)
    assert decision["selected"] == [
        {"pod": pods[4], "value": pytest.approx(1.5, rel=tolerance), "role": "hot"},
        {"pod": pods[0], "value": pytest.approx(0.125, rel=tolerance), "role": "cold"},
    ]
    assert decision["actions"] == [{"pod": pods[4], "result": "dry_run"}, {"pod": pods[0], "result": "dry_run"}]
    # The second alert of the notification names a Deployment that is not configured.
    refused = [d for d in body["decisions"] if d["outcome"] == "rejected"]
    assert len(refused) == 1 and refused[0]["alerts"] == ["57d07e435287b672"]


def test_noisy_counters_still_select_the_outliers(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=6)
    now = aligned_now()
    rates = dict(zip(pods, [0.4, 0.1, 0.45, 0.42, 1.8, 0.38], strict=True))
    backend = load_metrics(cpu_usage(kube.namespace, "ingestion-consumer", rates, now - 1800, now, noise=0.1, seed=7))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")])

    decision = decisions_by_target(client.post("/alertmanager", json=sample_in_namespace(FIRING_CPU, kube.namespace), headers=AUTH))["ingestion-consumer"]

    assert decision["outcome"] == "dry_run"
    assert [(s["pod"], s["role"]) for s in decision["selected"]] == [(pods[4], "hot"), (pods[1], "cold")]
    assert decision["verified"]["value"] == pytest.approx(cv(rates.values()), rel=0.1)


def test_balanced_cpu_is_skipped_with_the_measured_numbers(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=4)
    now = aligned_now()
    rates = dict(zip(pods, [0.5, 0.52, 0.49, 0.51], strict=True))
    backend = load_metrics(cpu_usage(kube.namespace, "ingestion-consumer", rates, now - 1200, now))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")])

    response = client.post("/", json=sample_in_namespace(FIRING_CPU, kube.namespace), headers=AUTH)

    decision = decisions_by_target(response)["ingestion-consumer"]
    assert response.status_code == 200 and decision["outcome"] == "skipped"
    assert decision["code"] == "below_threshold" and decision["actions"] == []
    assert decision["verified"]["value"] == pytest.approx(cv(rates.values()), rel=1e-6)
    assert "not above the threshold 0.3" in decision["reason"]


def test_stale_alert_is_skipped_when_the_skew_is_gone_by_now(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=4)
    now = aligned_now()
    skewed = dict(zip(pods, [0.1, 0.2, 0.2, 1.6], strict=True))
    balanced = dict.fromkeys(pods, 0.5)
    # The alert fired on the skewed phase; six minutes ago the load evened out.
    phases = [(now - 1800, skewed), (now - 360, balanced)]
    backend = load_metrics(cpu_usage(kube.namespace, "ingestion-consumer", phases, now - 1800, now))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")])

    decision = decisions_by_target(client.post("/", json=sample_in_namespace(FIRING_CPU, kube.namespace), headers=AUTH))["ingestion-consumer"]

    assert decision["outcome"] == "skipped" and decision["code"] == "below_threshold"
    assert decision["verified"]["value"] == pytest.approx(0.0, abs=1e-6)


def test_lag_skew_is_verified_through_a_join_of_partition_lag_and_assignment(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=4)
    now = aligned_now()
    assignment = {p: pods[p % 4] for p in range(12)}  # three partitions each
    lag = {p: (5000.0 if assignment[p] == pods[2] else 40.0 + p) for p in range(12)}
    backend = load_metrics(partition_lag_with_assignment(kube.namespace, "ingestion", lag, assignment, now - 900, now))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s", min_pods=2, signals={"lag": {"threshold": 0.5, "query": LAG_JOIN}})])

    response = client.post("/", json=sample_in_namespace(FIRING_LAG, kube.namespace), headers=AUTH)

    decision = decisions_by_target(response)["ingestion-consumer"]
    per_pod = {pod: sum(lag[p] for p in range(12) if assignment[p] == pod) for pod in pods}
    assert decision["outcome"] == "dry_run" and decision["signal"] == "lag"
    assert decision["verified"]["value"] == pytest.approx(cv(per_pod.values()), rel=1e-9)
    assert [(s["pod"], s["role"]) for s in decision["selected"]] == [(pods[2], "hot"), (pods[0], "cold")]
    assert f'namespace="{kube.namespace}"' in decision["query"]


def test_default_lag_query_reads_the_consumers_own_records_lag(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=4)
    now = aligned_now()
    by_pod = dict(zip(pods, [100.0, 120.0, 9000.0, 110.0], strict=True))
    backend = load_metrics(consumer_records_lag(kube.namespace, "ingestion-consumer", by_pod, now - 900, now))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s", signals={"lag": {"threshold": 0.5}})])

    decision = decisions_by_target(client.post("/", json=sample_in_namespace(FIRING_LAG, kube.namespace), headers=AUTH))["ingestion-consumer"]

    assert decision["verified"]["value"] == pytest.approx(cv(by_pod.values()), rel=1e-9)
    assert decision["selected"][0]["pod"] == pods[2]


def test_pods_the_backend_does_not_know_are_listed_and_too_many_skip(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=5)
    now = aligned_now()
    known = dict(zip(pods[:3], [0.1, 0.2, 1.5], strict=True))  # 2 of 5 pods have no series
    backend = load_metrics(cpu_usage(kube.namespace, "ingestion-consumer", known, now - 900, now))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")])

    decision = decisions_by_target(client.post("/", json=sample_in_namespace(FIRING_CPU, kube.namespace), headers=AUTH))["ingestion-consumer"]

    assert decision["outcome"] == "skipped" and decision["code"] == "incomplete_data"
    assert sorted(decision["missing_pods"]) == sorted(pods[3:])


def test_series_of_other_workloads_in_the_namespace_never_enter_the_statistics(load_metrics, make_client, kube):
    pods = kube.deployment("ingestion-consumer", replicas=4)
    now = aligned_now()
    ours = dict(zip(pods, [0.5, 0.5, 0.5, 0.5], strict=True))
    # Same container name, other pods (an old ReplicaSet's, or another Deployment's): a huge skew.
    strangers = {"ingestion-consumer-old-aaaaa": 9.0, "ingestion-consumer-old-bbbbb": 0.01}
    backend = load_metrics(cpu_usage(kube.namespace, "ingestion-consumer", ours, now - 900, now)
                           + cpu_usage(kube.namespace, "ingestion-consumer", strangers, now - 900, now, seed=3))
    client = make_client(backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")])

    decision = decisions_by_target(client.post("/", json=sample_in_namespace(FIRING_CPU, kube.namespace), headers=AUTH))["ingestion-consumer"]

    assert decision["code"] == "below_threshold" and decision["verified"]["pods"] == 4
    assert decision["series_ignored"] == 2
