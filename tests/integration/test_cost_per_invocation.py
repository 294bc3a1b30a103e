"""What one invocation costs upstream, whatever the size of the Deployment, and the answer's own
account of where its time went (Server-Timing). Timing figures live in `make bench`; these tests
assert on counts and on the shape of what is reported, never on durations. Kubernetes is the real
control plane; its audit log counts the function's requests."""

from __future__ import annotations

from collections import Counter

import pytest

from rebalancer.adapters.kube import KubeGateway, api_client
from tests.conftest import AUTH, aligned_now
from tests.metricsdata import consumer_records_lag, cpu_usage, to_victoriametrics_import
from tests.proxy import LoggingProxy
from tests.realcluster import READY_ANNOTATION, Cluster, drop_namespace, new_namespace


def seed(cluster: Cluster, victoria_metrics, pods: int) -> list[str]:
    """A consumer with one lag-hot pod (so the decision goes as far as the cooldown read)."""
    names = cluster.deployment("consumer", replicas=pods, realistic=True)
    namespace = cluster.namespace
    now = aligned_now()
    lag = {pod: 1000.0 + i for i, pod in enumerate(names)}
    lag[names[0]] = 500_000.0
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(namespace, "consumer", {pod: 0.5 for pod in names}, now - 600, now)
        + consumer_records_lag(namespace, "consumer", lag, now - 600, now)))
    return names


def consumer(name: str, namespace: str) -> dict:
    return {"name": f"consumer-{name}", "namespace": namespace, "deployment": "consumer", "min_pods": 2, "min_pod_age": "0s",
            "signals": {"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}}}


@pytest.fixture
def proxy(victoria_metrics):
    running = LoggingProxy(victoria_metrics.url).start()
    yield running
    running.stop()


@pytest.fixture
def large(control_plane):
    cluster = new_namespace(control_plane)
    cluster.grant()
    yield cluster
    drop_namespace(cluster)


def test_upstream_requests_per_invocation_do_not_grow_with_the_pod_count(make_client, kube, large, victoria_metrics, proxy):
    clusters = {"small": kube, "large": large}
    seed(kube, victoria_metrics, 4)
    seed(large, victoria_metrics, 400)
    client = make_client(proxy.url, [consumer(name, cluster.namespace) for name, cluster in clusters.items()])

    profiles = {}
    for name, cluster in clusters.items():
        cluster.forget_requests()
        proxy.clear()
        answer = client.post("/rebalance", json={"target": f"consumer-{name}"}, headers=AUTH).get_json()
        assert [d["outcome"] for d in answer["decisions"]] == ["skipped", "dry_run"], answer["reason"]
        profiles[name] = (Counter((r.verb, r.resource) for r in cluster.requests()), len(proxy.queries()))

    assert profiles["small"] == profiles["large"]
    kube, queries = profiles["large"]
    # One read of the Deployment, one list each of its ReplicaSets, pods and the namespace's
    # autoscalers, one read of the cooldown ConfigMap; one query per signal.
    assert kube == Counter({("get", "deployments"): 1, ("list", "replicasets"): 1, ("list", "pods"): 1,
                            ("list", "horizontalpodautoscalers"): 1, ("get", "configmaps"): 1})
    assert queries == 2


def test_every_answer_says_where_its_time_went(make_client, kube, victoria_metrics):
    seed(kube, victoria_metrics, 4)
    client = make_client(victoria_metrics.url, [consumer("small", kube.namespace)])

    decided = client.post("/rebalance", json={"target": "consumer-small"}, headers=AUTH)
    health = client.get("/healthz")

    timing = server_timing(decided.headers["Server-Timing"])
    assert set(timing) == {"total", "cpu", "kubernetes", "metrics"}
    # The queries run beside the Kubernetes read: each within the total, not necessarily their sum.
    assert 0 < timing["kubernetes"] <= timing["total"] and 0 < timing["metrics"] <= timing["total"]
    assert 0 < timing["cpu"] <= timing["total"] * 1.05  # CPU and wall clocks tick apart by a rounding
    assert set(server_timing(health.headers["Server-Timing"])) == {"total", "cpu"}  # no upstream call


def server_timing(header: str) -> dict[str, float]:
    entries = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        entries[name] = float(duration)
    return entries


def test_real_world_pods_read_the_same_as_minimal_ones(kube, tmp_path):
    """The adapter decodes only the fields it uses; what the API server serves besides
    (managedFields, env, probes, ports, statuses) must change nothing it reads."""
    gateway = KubeGateway(api_client(kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"), in_cluster=False), 5)
    shapes = {}
    for name, realistic in (("minimal", False), ("real", True)):
        pods = kube.deployment(name, replicas=3, realistic=realistic)
        kube.core.patch_namespaced_pod(pods[1], kube.namespace, {"metadata": {"annotations": {READY_ANNOTATION: "false"}}})
        kube.core.patch_namespaced_pod(pods[2], kube.namespace, {"metadata": {"annotations": {"pod-rebalancer/exclude": "true"}}})
        kube.wait_for(lambda name=name: len(kube.ready_pods(f"app={name}")) == 2, f"one pod of {name} to turn unready")
        read = gateway.deployment_pods(kube.namespace, name)
        shapes[name] = ([(p.ready, p.owned, p.excluded, p.phase, p.terminating) for p in sorted(read.pods, key=lambda p: p.name)],
                        read.workload)

    assert shapes["real"][0] == shapes["minimal"][0] == [
        (True, True, False, "Running", False), (False, True, False, "Running", False), (True, True, True, "Running", False)]
    assert shapes["real"][1].replicas == shapes["minimal"][1].replicas == 3
    # Requests are read only when asked for (hpa mode), as Kubernetes quantities.
    assert {p.cpu_request for p in gateway.deployment_pods(kube.namespace, "real").pods} == {None}
    assert {p.cpu_request for p in gateway.deployment_pods(kube.namespace, "real", "real").pods} == {0.5}  # "500m"
