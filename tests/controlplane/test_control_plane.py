"""The test control plane itself (tests/controlplane): the pinned Kubernetes, and a node
simulator that behaves as the scheduler and kubelet would for what the function does."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from kubernetes.client import V1Eviction, V1ObjectMeta, VersionApi

from tests.realcluster import READY_ANNOTATION, ControlPlane, new_namespace


def test_the_api_server_is_the_pinned_kubernetes(control_plane):
    version = VersionApi(control_plane.admin).get_code()
    assert (version.git_version, version.major, version.minor) == ("v1.37.2", "1", "37")


def test_evicted_pod_terminates_after_its_grace_period_and_is_replaced_by_a_ready_pod(kube):
    pods = kube.deployment("consumer", replicas=3, grace_seconds=2)
    budget = kube.pdb("consumer", {"app": "consumer"}, maxUnavailable=1)
    assert budget.status.disruptions_allowed == 1 and budget.status.current_healthy == 3
    victim = pods[0]
    running = kube.core.read_namespaced_pod(victim, kube.namespace)
    assert running.status.phase == "Running" and running.spec.node_name == "sim-node-0"

    evicted_at = datetime.now(timezone.utc)
    _, status, _ = kube.core.create_namespaced_pod_eviction_with_http_info(
        victim, kube.namespace, V1Eviction(metadata=V1ObjectMeta(name=victim, namespace=kube.namespace)))

    assert status == 201
    terminating = kube.core.read_namespaced_pod(victim, kube.namespace)
    assert terminating.metadata.deletion_grace_period_seconds == 2
    assert abs((terminating.metadata.deletion_timestamp - evicted_at).total_seconds() - 2) < 1.5
    kube.wait_for(lambda: victim not in {p.metadata.name for p in kube.core.list_namespaced_pod(kube.namespace).items},
                  "the evicted pod to be removed", timeout=30)
    # Not before its grace period: deletionTimestamp is eviction + grace, at one-second precision.
    assert datetime.now(timezone.utc) >= terminating.metadata.deletion_timestamp
    replacements = set(kube.wait_for_ready_pods("consumer", 3)) - set(pods)
    assert len(replacements) == 1
    kube.wait_for(lambda: kube.policy.read_namespaced_pod_disruption_budget("consumer", kube.namespace)
                  .status.disruptions_allowed == 1, "the budget's allowance to recover", timeout=30)


def test_a_backdated_pod_is_served_with_its_old_creation_time_and_keeps_it_through_updates(kube):
    pods = kube.deployment("consumer", replicas=2)
    day_before = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)

    kube.backdate(pods[:1], day_before)

    listed = {p.metadata.name: p for p in kube.core.list_namespaced_pod(kube.namespace).items}
    assert listed[pods[0]].metadata.creation_timestamp == day_before
    assert listed[pods[1]].metadata.creation_timestamp > day_before + timedelta(hours=23)  # the other one untouched
    kube.core.patch_namespaced_pod(pods[0], kube.namespace, {"metadata": {"labels": {"touched": "yes"}}})
    patched = kube.core.read_namespaced_pod(pods[0], kube.namespace)
    assert patched.metadata.labels["touched"] == "yes" and patched.metadata.creation_timestamp == day_before
    assert patched.status.phase == "Running" and patched.metadata.uid == listed[pods[0]].metadata.uid


def test_backdating_a_pod_that_does_not_exist_fails_and_says_which(kube):
    with pytest.raises(AssertionError, match=f"backdate /registry/pods/{kube.namespace}/nope: no such key in etcd"):
        kube.backdate(["nope"], datetime.now(timezone.utc) - timedelta(days=1))


def test_a_pod_annotated_not_ready_runs_but_is_not_ready_until_the_annotation_goes(kube):
    kube.deployment("consumer", replicas=2, pod_annotations={READY_ANNOTATION: "false"}, wait=False)
    selector = kube.selector("consumer")
    pods = kube.wait_for(lambda: (found := kube.core.list_namespaced_pod(kube.namespace, label_selector=selector).items)
                         and len(found) == 2 and all(p.status.phase == "Running" for p in found) and found, "2 Running pods")
    assert kube.ready_pods(selector) == []
    kube.core.patch_namespaced_pod(pods[0].metadata.name, kube.namespace, {"metadata": {"annotations": {READY_ANNOTATION: None}}})
    ready = kube.wait_for(lambda: kube.ready_pods(selector), "the pod to become Ready")
    assert [p.metadata.name for p in ready] == [pods[0].metadata.name]


def test_new_pods_of_a_held_namespace_run_unready_until_the_hold_is_lifted(kube):
    before = kube.deployment("consumer", replicas=2)
    kube.hold_new_pods(True)
    kube.apps.patch_namespaced_deployment_scale("consumer", kube.namespace, {"spec": {"replicas": 4}})
    selector = kube.selector("consumer")
    kube.wait_for(lambda: len([p for p in kube.core.list_namespaced_pod(kube.namespace, label_selector=selector).items
                               if p.status.phase == "Running"]) == 4, "4 Running pods")
    assert sorted(p.metadata.name for p in kube.ready_pods(selector)) == before  # the old ones stay Ready
    status = kube.apps.read_namespaced_deployment("consumer", kube.namespace).status
    assert (status.replicas, status.available_replicas or 0) == (4, 2)

    kube.hold_new_pods(False)

    assert len(kube.wait_for_ready_pods("consumer", 4)) == 4


# -- containers that run ----------------------------------------------------------------------

PROBE_CONTAINER = Path(__file__).with_name("probe_container.py")


def running_pod_spec(record: Path, grace_seconds: int, ignore_sigterm: bool = False) -> dict:
    """A container that runs (tests/controlplane/probe_container.py), with the downward API's
    name, namespace and IP, and a readiness probe on its own port."""
    env = [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
           for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"), ("POD_IP", "status.podIP"))]
    env += [{"name": "RECORD_DIR", "value": str(record)}, {"name": "IGNORE_SIGTERM", "value": "1" if ignore_sigterm else "0"}]
    return {"terminationGracePeriodSeconds": grace_seconds, "containers": [{
        "name": "main", "image": "pod-rebalancer.test/probe:1", "command": [sys.executable, str(PROBE_CONTAINER)], "env": env,
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1}}]}


def started(record: Path, pod: str) -> list[dict]:
    path = record / f"{pod}.started"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def running_pods(kube, count: int) -> list:
    selector = kube.selector("runner")
    return kube.wait_for(lambda: (found := [p for p in kube.core.list_namespaced_pod(kube.namespace, label_selector=selector).items
                                            if p.status.phase == "Running" and p.metadata.deletion_timestamp is None])
                         and len(found) == count and found, f"{count} Running pods")


def test_a_container_with_a_command_runs_with_the_downward_api_and_is_ready_when_its_probe_passes(kube, tmp_path):
    kube.deployment("runner", replicas=2, pod_spec=running_pod_spec(tmp_path, grace_seconds=10), wait=False)
    pods = running_pods(kube, 2)

    records = {p.metadata.name: kube.wait_for(lambda p=p: started(tmp_path, p.metadata.name), "the process to start")
               for p in pods}
    for pod in pods:
        (record,) = records[pod.metadata.name]
        assert (record["POD_NAME"], record["POD_NAMESPACE"], record["POD_IP"]) == (pod.metadata.name, kube.namespace, pod.status.pod_ip)
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network("127.0.0.0/8")
    assert len({p.status.pod_ip for p in pods}) == 2
    assert kube.ready_pods(kube.selector("runner")) == []  # the probe answers 503 so far

    first = pods[0].metadata.name
    (tmp_path / f"{first}.ready").touch()

    ready = kube.wait_for(lambda: kube.ready_pods(kube.selector("runner")), "the probe to pass")
    assert [p.metadata.name for p in ready] == [first]


def test_a_deleted_pod_gets_sigterm_and_goes_once_its_process_exits_and_its_replacement_runs_anew(kube, tmp_path):
    kube.deployment("runner", replicas=2, pod_spec=running_pod_spec(tmp_path, grace_seconds=30), wait=False)
    pods = [p.metadata.name for p in running_pods(kube, 2)]
    victim = pods[0]
    (pid,) = [r["pid"] for r in kube.wait_for(lambda: started(tmp_path, victim), "the process to start")]

    deleted_at = time.monotonic()
    kube.core.delete_namespaced_pod(victim, kube.namespace)

    kube.wait_for(lambda: kube.get("pods", victim) is None, "the pod to go", timeout=20)
    assert time.monotonic() - deleted_at < 15  # its process stopped at SIGTERM: no need to wait out 30 s
    assert (tmp_path / f"{victim}.signals").read_text() == "SIGTERM\n"
    assert not Path(f"/proc/{pid}").exists()
    (replacement,) = {p.metadata.name for p in running_pods(kube, 2)} - set(pods)
    (record,) = kube.wait_for(lambda: started(tmp_path, replacement), "the replacement's process to start")
    assert record["pid"] != pid and record["POD_NAME"] == replacement


def test_a_process_that_ignores_sigterm_is_killed_when_the_grace_period_ends(kube, tmp_path):
    kube.deployment("runner", replicas=1, pod_spec=running_pod_spec(tmp_path, grace_seconds=3, ignore_sigterm=True), wait=False)
    (victim,) = [p.metadata.name for p in running_pods(kube, 1)]
    (pid,) = [r["pid"] for r in kube.wait_for(lambda: started(tmp_path, victim), "the process to start")]

    deleted_at = time.monotonic()
    kube.core.delete_namespaced_pod(victim, kube.namespace)

    kube.wait_for(lambda: kube.get("pods", victim) is None, "the pod to go", timeout=20)
    assert time.monotonic() - deleted_at >= 2  # the grace period, at the API server's one-second precision
    assert (tmp_path / f"{victim}.signals").read_text() == "SIGTERM\n"
    assert not Path(f"/proc/{pid}").exists()


def test_the_simulated_kubelet_reports_each_running_containers_cpu_and_memory_as_cadvisor_does(kube, tmp_path, control_plane):
    kube.deployment("runner", replicas=1, pod_spec=running_pod_spec(tmp_path, grace_seconds=5), wait=False)
    kube.deployment("idle", replicas=1)  # runs nothing: no series
    (pod,) = [p.metadata.name for p in running_pods(kube, 1)]
    node = kube.core.read_node(control_plane.info["node"])
    assert control_plane.info["cadvisor"].endswith(f":{node.status.daemon_endpoints.kubelet_endpoint.port}/metrics/cadvisor")

    def samples() -> dict[str, float]:
        text = requests.get(control_plane.info["cadvisor"], timeout=5).text
        return {line.split("{")[0]: float(line.split()[1]) for line in text.splitlines()
                if f'namespace="{kube.namespace}"' in line and f'pod="{pod}"' in line and 'container="main"' in line}

    found = kube.wait_for(lambda: len(samples()) == 2 and samples(), "the container's series")
    assert found["container_memory_working_set_bytes"] > 2**20 and found["container_cpu_usage_seconds_total"] >= 0
    text = requests.get(control_plane.info["cadvisor"], timeout=5).text
    assert 'container="idle"' not in text


def test_two_control_planes_on_one_machine_never_give_two_pods_one_address(kube, tmp_path):
    # Found when a test session's control plane and `make try`'s ran side by side: both handed
    # out 127.1.0.x, and a consumer could not bind its metrics port on its own pod IP.
    (tmp_path / "here").mkdir()
    kube.deployment("runner", replicas=1, pod_spec=running_pod_spec(tmp_path / "here", grace_seconds=5), wait=False)
    (ours,) = running_pods(kube, 1)
    other = ControlPlane(tmp_path / "other").start()
    try:
        cluster = new_namespace(other)
        theirs = cluster.deployment("runner", replicas=1)
        their_ip = cluster.core.read_namespaced_pod(theirs[0], cluster.namespace).status.pod_ip
    finally:
        other.stop()
    assert ours.status.pod_ip.split(".")[:2] != their_ip.split(".")[:2], (ours.status.pod_ip, their_ip)
