"""The acting scene of tests/integration (its conftest registers the fixtures): six Ready pods of
posthog's ingestion-consumer on this test's namespace of the real control plane, their CPU
skewed as RATES in the real VictoriaMetrics, and the function's clock (freezegun, through the
``clock`` fixture) 20 minutes ahead of the pods' creation, past min_pod_age; the series reach 40
minutes past it, so that "after the cooldown" has data too. Shared by the tests that act for
real (test_acting.py) and those that make the real API server fail while acting
(test_kube_faults.py)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from rebalancer.cooldown import annotation_keys
from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.samples import sample_in_namespace

FIRING = "alertmanager-0.25-firing-cpu-two-deployments.json"
LAST, INVOCATION, HISTORY = annotation_keys("ingestion-consumer")
RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]  # after the hot and cold pods go, 1.6 stands out among 0.5s
AHEAD = 1200  # how far the function's clock runs ahead of the pods' creation


def skewed_pods(cluster, victoria_metrics, clock, rates=RATES, grace_seconds: int = 30, series_until: int = 2 * AHEAD) -> list[str]:
    """Ready pods of posthog's ingestion-consumer on ``cluster`` (their names, sorted), skewed as
    ``rates``, the function's clock AHEAD of their creation, their series to ``series_until`` past it."""
    pods = cluster.deployment("ingestion-consumer", replicas=len(rates), grace_seconds=grace_seconds)
    now = aligned_now()
    clock.at(datetime.fromtimestamp(now + AHEAD, timezone.utc))
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(cluster.namespace, "ingestion-consumer", dict(zip(pods, rates, strict=True)), now - 1200, now + series_until)))
    return pods


@pytest.fixture
def scene(kube, victoria_metrics, clock):
    """Six Ready pods of posthog's ingestion-consumer (their names, sorted), skewed as RATES."""

    def build(rates=RATES, grace_seconds: int = 30) -> list[str]:
        return skewed_pods(kube, victoria_metrics, clock, rates, grace_seconds)

    return build


@pytest.fixture
def live(scene, make_client, victoria_metrics, kube):
    pods = scene()

    def build(**overrides):
        return make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace, **overrides)],
                           env_rebalancer_dry_run="false")

    return pods, build


def fire(client, kube):
    return client.post("/", json=sample_in_namespace(FIRING, kube.namespace), headers=AUTH)


def decision(response):
    return next(d for d in response.get_json()["decisions"] if d["target"] == "ingestion-consumer")


def replacements_report_like_the_rest(kube, victoria_metrics, pods) -> list[str]:
    """Wait for the ReplicaSet's replacements, and give them series as balanced as most pods:
    on a real cluster they are scraped within a minute of starting."""
    replacements = sorted(set(kube.wait_for_ready_pods("ingestion-consumer", 6)) - set(pods))
    now = aligned_now()
    victoria_metrics.import_prometheus(to_victoriametrics_import(cpu_usage(
        kube.namespace, "ingestion-consumer", dict.fromkeys(replacements, 0.5), now - 1200, now + 2 * AHEAD)))
    return replacements


def history(kube):
    return json.loads(kube.annotations("configmaps", "pod-rebalancer-state")[HISTORY])


def evictions(kube) -> list[tuple[str, int]]:
    """(pod, the API server's answer) for each eviction the function asked for, oldest first (the audit log)."""
    return [(r.name, r.code) for r in kube.requests("create", "pods") if r.subresource == "eviction"]
