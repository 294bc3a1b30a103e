"""What one invocation costs upstream, whatever the size of the Deployment, and the answer's own
account of where its time went (Server-Timing). Timing figures live in `make bench`; these tests
assert on counts and on the shape of what is reported, never on durations."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone

import pytest

from rebalancer.kube import KubeGateway, api_client
from tests.conftest import AUTH, aligned_now
from tests.metricsdata import consumer_records_lag, cpu_usage, to_victoriametrics_import
from tests.proxy import LoggingProxy
from tests.standin.fixtures import seed_deployment


def seed(standin, victoria_metrics, namespace: str, pods: int) -> list[str]:
    """A consumer with one lag-hot pod (so the decision goes as far as the cooldown read)."""
    now = aligned_now()
    names = seed_deployment(standin, namespace, "consumer", replicas=pods, realistic=True)
    lag = {pod: 1000.0 + i for i, pod in enumerate(names)}
    lag[names[0]] = 500_000.0
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(namespace, "consumer", {pod: 0.5 for pod in names}, now - 600, now)
        + consumer_records_lag(namespace, "consumer", lag, now - 600, now)))
    return names


def consumer(namespace: str) -> dict:
    return {"name": f"consumer-{namespace}", "namespace": namespace, "deployment": "consumer", "min_pods": 2,
            "signals": {"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}}}


@pytest.fixture
def proxy(victoria_metrics):
    running = LoggingProxy(victoria_metrics.url).start()
    yield running
    running.stop()


def test_upstream_requests_per_invocation_do_not_grow_with_the_pod_count(make_client, standin, victoria_metrics, proxy):
    seed(standin, victoria_metrics, "small", 4)
    seed(standin, victoria_metrics, "large", 400)
    client = make_client(proxy.url, [consumer("small"), consumer("large")])

    profiles = {}
    for namespace in ("small", "large"):
        standin.requests.clear()
        proxy.clear()
        answer = client.post("/rebalance", json={"target": f"consumer-{namespace}"}, headers=AUTH).get_json()
        assert [d["outcome"] for d in answer["decisions"]] == ["skipped", "dry_run"], answer["reason"]
        profiles[namespace] = (Counter((r.verb, r.resource) for r in standin.requests), len(proxy.queries()))

    assert profiles["small"] == profiles["large"]
    kube, queries = profiles["large"]
    # One read of the Deployment, one list each of its ReplicaSets, pods and the namespace's
    # autoscalers, one read of the cooldown ConfigMap; one query per signal.
    assert kube == Counter({("get", "deployments"): 1, ("list", "replicasets"): 1, ("list", "pods"): 1,
                            ("list", "horizontalpodautoscalers"): 1, ("get", "configmaps"): 1})
    assert queries == 2


def test_every_answer_says_where_its_time_went(make_client, standin, victoria_metrics):
    seed(standin, victoria_metrics, "small", 4)
    client = make_client(victoria_metrics.url, [consumer("small")])

    decided = client.post("/rebalance", json={"target": "consumer-small"}, headers=AUTH)
    health = client.get("/healthz")

    timing = server_timing(decided.headers["Server-Timing"])
    assert set(timing) == {"total", "cpu", "kubernetes", "metrics"}
    assert 0 < timing["kubernetes"] + timing["metrics"] <= timing["total"]
    assert 0 < timing["cpu"] <= timing["total"] * 1.05  # CPU and wall clocks tick apart by a rounding
    assert set(server_timing(health.headers["Server-Timing"])) == {"total", "cpu"}  # no upstream call


def server_timing(header: str) -> dict[str, float]:
    entries = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        entries[name] = float(duration)
    return entries


def test_real_world_pods_read_the_same_as_minimal_ones(standin, tmp_path):
    """The adapter decodes only the fields it uses; the ~6 KB a real pod carries besides
    (managedFields, env, probes, statuses) must change nothing it reads."""
    shape = {"replicas": 3, "now": datetime.now(timezone.utc), "ready": [True, False, True],
             "annotations": [{}, {}, {"pod-rebalancer/exclude": "true"}]}
    seed_deployment(standin, "minimal", "consumer", **shape)
    seed_deployment(standin, "real", "consumer", **shape, realistic=True)
    gateway = KubeGateway(api_client(kubeconfig=standin.write_kubeconfig(tmp_path / "kubeconfig"), in_cluster=False), 5)

    minimal, real = gateway.deployment_pods("minimal", "consumer"), gateway.deployment_pods("real", "consumer")

    assert real.pods == minimal.pods
    assert [(p.ready, p.owned, p.excluded, p.phase) for p in real.pods] == [
        (True, True, False, "Running"), (False, True, False, "Running"), (True, True, True, "Running")]
    assert real.workload == minimal.workload
    # Requests are read only when asked for (hpa mode), as Kubernetes quantities.
    assert {p.cpu_request for p in real.pods} == {None}
    assert {p.cpu_request for p in gateway.deployment_pods("real", "consumer", "consumer").pods} == {0.5}  # "500m"
