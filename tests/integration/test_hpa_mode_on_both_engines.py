"""hpa mode end to end: PostHog's pod-rebalancer's test cases as real per-pod CPU counters in a
real VictoriaMetrics and in Prometheus (backfilled with promtool), a real HorizontalPodAutoscaler
and real pods' CPU requests on the real control plane, decided by the function itself. The pods
are seconds old, so the function's clock (and the newest sample, where rate() is exact on both
engines) is 15 minutes ahead of them, past min_pod_age.

Their own queries compare a per-pod vector with a label-less ``avg(...)``, which matches
nothing on Prometheus. Here the query is the target's ordinary per-pod CPU query; the HPA's
target and the requests come from the Kubernetes API, so both engines decide alike."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import AUTH, aligned_now
from tests.metricsdata import cpu_usage, to_victoriametrics_import

AHEAD = 900
FIRST = [1.2, 1.1, 0.8, 0.6, 0.6, 0.3, 0.4]  # hot line 70 % x 1 core x 1.5 = 1.05
CLOSE = [0.9, 0.85, 0.82, 0.81, 0.81, 0.8, 0.75]  # hot line 50 % x 1 core x 1.5 = 0.75; 5.7 %
WIDE = [2.5, 2.4, 2.3, 1.2, 1.0, 0.9, 0.5, 0.6, 0.7]  # hot line 70 % x 1 core x 2.0 = 1.4; 37.5 %


def hpa_target(namespace: str, tolerance: float = 1.5, top_k: int = 2, min_improvement: float = 0.1) -> dict:
    return {"name": "consumer", "namespace": namespace, "deployment": "consumer", "min_pods": 3,
            "min_improvement": min_improvement,
            "signals": {"cpu": {"mode": "hpa", "tolerance": tolerance, "top_k": top_k}}}


@pytest.mark.parametrize(("rates", "utilization", "target", "acts", "hot", "cold", "improvement"), [
    (FIRST, 70, {}, True, [0, 1], [5, 6], 0.348),
    (CLOSE, 50, {}, False, [0, 1], [5, 6], 0.057),
    (WIDE, 70, {"tolerance": 2.0, "top_k": 3, "min_improvement": 0.2}, True, [0, 1, 2], [6, 7, 8], 0.375),
], ids=["acts-at-34.8%", "holds-at-5.7%", "k3-tolerance2-acts-at-37.5%"])
def test_posthogs_cases_decide_alike_on_both_engines(load_metrics, make_client, kube, clock,
                                                      rates, utilization, target, acts, hot, cold, improvement):
    pods = kube.deployment("consumer", replicas=len(rates), cpu_request="1")
    kube.hpa("consumer", cpu_utilization=utilization)
    now = aligned_now() + AHEAD
    clock.at(datetime.fromtimestamp(now, timezone.utc))  # at the newest sample: rate() is exact on both
    backend = load_metrics(cpu_usage(kube.namespace, "consumer", dict(zip(pods, rates, strict=True)), now - 1200, now))
    client = make_client(backend.url, [hpa_target(kube.namespace, **target)])

    decision = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()["decisions"][0]

    assert decision["outcome"] == ("dry_run" if acts else "skipped"), decision["reason"]
    assert decision["code"] == ("skew_verified" if acts else "no_improvement")
    assert sorted(s["pod"] for s in decision["selected"] if s["role"] == "hot") == sorted(pods[i] for i in hot)
    assert sorted(s["pod"] for s in decision["selected"] if s["role"] == "cold") == sorted(pods[i] for i in cold)
    assert decision["measures"]["improvement"] == pytest.approx(improvement, abs=0.001)
    assert decision["measures"]["hpa_target_utilization"] == utilization
    assert decision["measures"]["avg_cpu_request"] == 1.0


def test_two_hpas_on_one_deployment_are_refused_not_guessed(load_metrics, make_client, kube, clock):
    pods = kube.deployment("consumer", replicas=len(FIRST), cpu_request="1000m")
    kube.hpa("consumer", cpu_utilization=70, name="consumer-cpu")
    kube.hpa("consumer", cpu_utilization=50, name="keda-hpa-consumer")
    now = aligned_now() + AHEAD
    clock.at(datetime.fromtimestamp(now, timezone.utc))
    backend = load_metrics(cpu_usage(kube.namespace, "consumer", dict(zip(pods, FIRST, strict=True)), now - 1200, now))
    client = make_client(backend.url, [hpa_target(kube.namespace)])

    decision = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()["decisions"][0]

    assert decision["outcome"] == "skipped" and decision["code"] == "no_hpa_target"
    assert "2 HorizontalPodAutoscalers target the Deployment" in decision["reason"]


def test_a_live_hpa_mode_action_says_in_its_events_which_line_it_crossed(victoria_metrics, make_client, kube, clock):
    pods = kube.deployment("consumer", replicas=len(FIRST), cpu_request="1")
    kube.hpa("consumer", cpu_utilization=70)
    now = aligned_now() + AHEAD
    clock.at(datetime.fromtimestamp(now, timezone.utc))
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(kube.namespace, "consumer", dict(zip(pods, FIRST, strict=True)), now - 1200, now)))
    client = make_client(victoria_metrics.url, [hpa_target(kube.namespace)], env_rebalancer_dry_run="false")

    decision = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()["decisions"][0]

    assert decision["outcome"] == "acted", decision["reason"]
    assert sorted(a["pod"] for a in decision["actions"]) == sorted(pods[i] for i in (0, 1, 5, 6))
    messages = [e["message"] for e in kube.events() if e["involvedObject"]["kind"] == "Pod"]
    assert len(messages) == 4 and all("cpu above 1.05 cores (HPA target x tolerance)" in m for m in messages)
