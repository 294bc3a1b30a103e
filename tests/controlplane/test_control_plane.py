"""The test control plane itself (tests/controlplane): the pinned Kubernetes, and a node
simulator that behaves as the scheduler and kubelet would for what the function does."""

from __future__ import annotations

from datetime import datetime, timezone

from kubernetes.client import V1Eviction, V1ObjectMeta, VersionApi

from tests.realcluster import READY_ANNOTATION


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
