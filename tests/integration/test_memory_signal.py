"""The memory signal, decided by the function itself on cAdvisor's working-set gauges in a real
VictoriaMetrics and in Prometheus (backfilled with promtool), the pods on the real control plane."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rebalancer.config import Settings
from rebalancer.core.durations import parse_duration
from rebalancer.tools import rules
from tests.conftest import AUTH, aligned_now
from tests.metricsdata import memory_working_set

GIB = 2**30
AHEAD = 900


def memory_target(namespace: str) -> dict:
    return {"name": "consumer", "namespace": namespace, "deployment": "consumer", "min_pods": 3,
            "signals": {"memory": {"threshold": 0.3}}}


@pytest.mark.parametrize(("sizes", "code", "hot", "cold"), [
    ([1.0, 1.0, 1.0, 1.0, 3.0, 0.5], "skew_verified", 4, 5),  # one pod holds three times the others
    ([0.1, 0.1, 0.1, 0.1, 0.3, 0.05], "below_floor", None, None),  # the same shape at a tenth: under 256 MiB
], ids=["skewed", "below-floor"])
def test_memory_skew_is_verified_on_both_engines(load_metrics, make_client, kube, clock, sizes, code, hot, cold):
    pods = kube.deployment("consumer", replicas=len(sizes))
    now = aligned_now() + AHEAD
    clock.at(datetime.fromtimestamp(now, timezone.utc))
    backend = load_metrics(memory_working_set(kube.namespace, "consumer",
                                              {p: s * GIB for p, s in zip(pods, sizes, strict=True)}, now - 1200, now))
    client = make_client(backend.url, [memory_target(kube.namespace)])

    decision = client.post("/rebalance", json={"target": "consumer", "signal": "memory"}, headers=AUTH).get_json()["decisions"][0]

    assert decision["code"] == code, decision["reason"]
    assert decision["verified"]["mean"] == pytest.approx(sum(sizes) / len(sizes) * GIB)  # the container's own series only
    assert decision["verified"]["floor"] == 256 * 2**20
    if hot is not None:
        assert [(s["pod"], s["role"]) for s in decision["selected"]] == [(pods[hot], "hot"), (pods[cold], "cold")]
    else:
        assert "below the floor 256 MiB" in decision["reason"]


def test_the_memory_alert_rule_is_generated_like_the_others():
    settings = Settings(metrics_url="http://vm:8428", targets=[memory_target("ns")])
    (rule,) = rules.rules_document(settings, parse_duration("5m"), parse_duration("30s"))["groups"][0]["rules"]
    assert rule["alert"] == "ConsumerMemorySkew" and rule["labels"]["rebalancer_signal"] == "memory"
    query = 'sum by (pod) (container_memory_working_set_bytes{namespace="ns", container="consumer"})'
    assert f"(stddev({query}) / avg({query})) > 0.3" in rule["expr"]
    assert f"avg({query}) >= 268435456" in rule["expr"]
