"""What pod-rebalancer relies on from the Kubernetes API, each behaviour as the docs state it.

Run against the real control plane and the stand-in in ``make test``, and against any cluster
with ``make test-real-cluster``; the assertions are the same for all.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes.client import ApiException, V1DeleteOptions, V1Eviction, V1ObjectMeta, V1Preconditions


def status_body(error: ApiException) -> dict:
    body = json.loads(error.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == error.status
    return body


def evict(cluster, pod: str, grace: int | None = None):
    options = V1DeleteOptions(grace_period_seconds=grace) if grace is not None else None
    return cluster.core.create_namespaced_pod_eviction(
        pod, cluster.namespace, V1Eviction(metadata=V1ObjectMeta(name=pod, namespace=cluster.namespace), delete_options=options)
    )


def pdb(cluster, name: str, selector: dict, **spec):
    return cluster.policy.create_namespaced_pod_disruption_budget(
        cluster.namespace,
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
         "spec": {"selector": {"matchLabels": selector}, **spec}},
    )


def wait_for_budget(cluster, name: str, allowed: int):
    """The disruption controller fills in the status asynchronously on a real cluster; until it
    has observed the budget, the status reads zero allowed (and evictions answer 429)."""
    def computed():
        found = cluster.policy.read_namespaced_pod_disruption_budget(name, cluster.namespace)
        status = found.status
        return status and status.observed_generation == found.metadata.generation and status.disruptions_allowed == allowed and status
    return cluster.wait_for(
        computed,
        f"PDB {name} to allow {allowed} disruption(s)",
    )


def configmap(cluster, name: str, annotations: dict | None = None):
    return cluster.core.create_namespaced_config_map(
        cluster.namespace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "annotations": annotations or {}}}
    )


# -- label selectors (concepts/overview/working-with-objects/labels) -------------------------------

@pytest.fixture
def labelled_pods(cluster):
    cluster.bare_pod("web-x", {"app": "web", "tier": "x"})
    cluster.bare_pod("web-y", {"app": "web", "tier": "y"})
    cluster.bare_pod("db", {"app": "db"})
    return cluster


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", {"web-x", "web-y"}),
        ("app==web", {"web-x", "web-y"}),
        ("app!=web", {"db"}),
        ("app=web,tier=x", {"web-x"}),
        ("tier in (x,y)", {"web-x", "web-y"}),
        ("tier notin (x)", {"web-y", "db"}),  # notin also selects pods without the key
        ("tier", {"web-x", "web-y"}),
        ("!tier", {"db"}),
        ("app in (web, db),!tier", {"db"}),
        ("", {"web-x", "web-y", "db"}),
    ],
)
def test_list_pods_filters_by_equality_and_set_based_label_selectors(labelled_pods, selector, expected):
    pods = labelled_pods.core.list_namespaced_pod(labelled_pods.namespace, label_selector=selector).items
    assert {p.metadata.name for p in pods} == expected


def test_unparseable_label_selector_is_a_bad_request(cluster):
    with pytest.raises(ApiException) as raised:
        cluster.core.list_namespaced_pod(cluster.namespace, label_selector="app in (web")
    assert raised.value.status == 400
    assert status_body(raised.value)["reason"] == "BadRequest"


# -- Status bodies (reference/using-api/api-concepts) ----------------------------------------------

def test_missing_pod_answers_404_with_a_not_found_status(cluster):
    with pytest.raises(ApiException) as raised:
        cluster.core.read_namespaced_pod("nowhere", cluster.namespace)
    body = status_body(raised.value)
    assert raised.value.status == 404 and body["reason"] == "NotFound"
    assert body["details"]["name"] == "nowhere" and body["details"]["kind"] == "pods"


# -- ConfigMaps: create, resourceVersion preconditions ---------------------------------------------

def test_creating_an_existing_configmap_answers_409_already_exists(cluster):
    configmap(cluster, "state")
    with pytest.raises(ApiException) as raised:
        configmap(cluster, "state")
    body = status_body(raised.value)
    assert raised.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["details"]["name"] == "state"


def test_update_with_a_stale_resource_version_answers_409_conflict_and_changes_nothing(cluster):
    created = configmap(cluster, "state", {"a": "1"})
    stale = created.metadata.resource_version
    current = cluster.core.replace_namespaced_config_map(
        "state", cluster.namespace, {"metadata": {"name": "state", "resourceVersion": stale, "annotations": {"a": "2"}}}
    )
    assert current.metadata.resource_version != stale
    with pytest.raises(ApiException) as raised:
        cluster.core.replace_namespaced_config_map(
            "state", cluster.namespace, {"metadata": {"name": "state", "resourceVersion": stale, "annotations": {"a": "3"}}}
        )
    assert raised.value.status == 409 and status_body(raised.value)["reason"] == "Conflict"
    assert cluster.core.read_namespaced_config_map("state", cluster.namespace).metadata.annotations == {"a": "2"}


def test_merge_patch_carrying_a_resource_version_is_conditional(cluster):
    created = configmap(cluster, "state", {"keep": "yes", "drop": "me"})
    version = created.metadata.resource_version
    patched = cluster.core.patch_namespaced_config_map(
        "state", cluster.namespace,
        {"metadata": {"resourceVersion": version, "annotations": {"new": "1", "drop": None}}},
        _content_type="application/merge-patch+json",
    )
    assert patched.metadata.annotations == {"keep": "yes", "new": "1"}  # null deletes a key
    with pytest.raises(ApiException) as raised:
        cluster.core.patch_namespaced_config_map(
            "state", cluster.namespace,
            {"metadata": {"resourceVersion": version, "annotations": {"late": "1"}}},
            _content_type="application/merge-patch+json",
        )
    assert raised.value.status == 409 and status_body(raised.value)["reason"] == "Conflict"
    assert "late" not in cluster.core.read_namespaced_config_map("state", cluster.namespace).metadata.annotations


def test_json_patch_applies_operations_and_a_failed_test_changes_nothing(cluster):
    configmap(cluster, "state", {"a": "1"})
    cluster.core.patch_namespaced_config_map(
        "state", cluster.namespace, [{"op": "add", "path": "/metadata/annotations/b", "value": "2"}],
        _content_type="application/json-patch+json",
    )
    with pytest.raises(ApiException) as raised:
        cluster.core.patch_namespaced_config_map(
            "state", cluster.namespace,
            [{"op": "test", "path": "/metadata/annotations/a", "value": "not-1"},
             {"op": "replace", "path": "/metadata/annotations/a", "value": "3"}],
            _content_type="application/json-patch+json",
        )
    assert 400 <= raised.value.status < 500
    assert cluster.core.read_namespaced_config_map("state", cluster.namespace).metadata.annotations == {"a": "1", "b": "2"}


def test_an_object_patch_without_content_type_merges_maps(cluster):
    """The client sends a dict body as a strategic merge patch; for annotations that merges keys."""
    configmap(cluster, "state", {"a": "1"})
    patched = cluster.core.patch_namespaced_config_map("state", cluster.namespace, {"metadata": {"annotations": {"b": "2"}}})
    assert patched.metadata.annotations == {"a": "1", "b": "2"}


# -- Pods: graceful deletion (concepts/workloads/pods/pod-lifecycle#pod-termination) ---------------

def test_deleting_a_pod_marks_it_terminating_for_its_own_grace_period(cluster):
    pods = cluster.deployment("consumer", replicas=1)
    before = datetime.now(timezone.utc)
    cluster.core.delete_namespaced_pod(pods[0], cluster.namespace)
    pod = cluster.core.read_namespaced_pod(pods[0], cluster.namespace)
    assert pod.metadata.deletion_grace_period_seconds == 30  # the pod's terminationGracePeriodSeconds
    expected = before + timedelta(seconds=30)
    assert abs((pod.metadata.deletion_timestamp - expected).total_seconds()) < 5


def test_delete_with_a_stale_uid_precondition_answers_409_and_keeps_the_pod(cluster):
    pods = cluster.deployment("consumer", replicas=1)
    with pytest.raises(ApiException) as raised:
        cluster.core.delete_namespaced_pod(
            pods[0], cluster.namespace, body=V1DeleteOptions(preconditions=V1Preconditions(uid="00000000-0000-0000-0000-000000000000"))
        )
    assert raised.value.status == 409 and status_body(raised.value)["reason"] == "Conflict"
    assert cluster.core.read_namespaced_pod(pods[0], cluster.namespace).metadata.deletion_timestamp is None


# -- Eviction (concepts/scheduling-eviction/api-eviction) ------------------------------------------

def test_eviction_without_a_budget_is_allowed_and_terminates_the_pod(cluster):
    pods = cluster.deployment("consumer", replicas=2)
    evict(cluster, pods[0])
    assert cluster.core.read_namespaced_pod(pods[0], cluster.namespace).metadata.deletion_timestamp is not None


def test_eviction_that_would_violate_the_budget_answers_429_and_keeps_the_pod(cluster):
    pods = cluster.deployment("consumer", replicas=3)
    pdb(cluster, "consumer", {"app": "consumer"}, maxUnavailable=0)
    status = wait_for_budget(cluster, "consumer", allowed=0)
    with pytest.raises(ApiException) as raised:
        evict(cluster, pods[0])
    body = status_body(raised.value)
    assert raised.value.status == 429 and body["reason"] == "TooManyRequests"
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert f"needs {status.desired_healthy} healthy pods" in body["details"]["causes"][0]["message"]
    assert cluster.core.read_namespaced_pod(pods[0], cluster.namespace).metadata.deletion_timestamp is None


def test_budget_with_min_available_allows_exactly_the_surplus(cluster):
    # Bare pods, so that no ReplicaSet replaces the evicted one: on a real cluster a Ready
    # replacement gives the budget its allowance back within a second.
    pods = [cluster.bare_pod(f"consumer-{i}", {"app": "consumer"}).metadata.name for i in range(3)]
    cluster.wait_for(lambda: len(cluster.ready_pods("app=consumer")) == 3, "3 Ready pods")
    pdb(cluster, "consumer", {"app": "consumer"}, minAvailable=2)
    status = wait_for_budget(cluster, "consumer", allowed=1)
    assert (status.current_healthy, status.desired_healthy, status.expected_pods) == (3, 2, 3)
    evict(cluster, pods[0])
    with pytest.raises(ApiException) as raised:
        evict(cluster, pods[1])
    assert raised.value.status == 429
    assert cluster.core.read_namespaced_pod(pods[1], cluster.namespace).metadata.deletion_timestamp is None


def test_pod_covered_by_two_budgets_cannot_be_evicted_500(cluster):
    pods = cluster.deployment("consumer", replicas=3)
    pdb(cluster, "one", {"app": "consumer"}, maxUnavailable=1)
    pdb(cluster, "two", {"app": "consumer"}, maxUnavailable=1)
    wait_for_budget(cluster, "two", allowed=1)
    with pytest.raises(ApiException) as raised:
        evict(cluster, pods[0])
    body = status_body(raised.value)
    assert raised.value.status == 500 and "reason" not in body and "details" not in body  # as kube-apiserver answers
    assert body["message"] == "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    assert cluster.core.read_namespaced_pod(pods[0], cluster.namespace).metadata.deletion_timestamp is None


def test_eviction_of_a_missing_pod_answers_404(cluster):
    with pytest.raises(ApiException) as raised:
        evict(cluster, "nowhere")
    assert raised.value.status == 404 and status_body(raised.value)["reason"] == "NotFound"


# -- Owner references (concepts/overview/working-with-objects/owners-dependents) -------------------

def test_deployment_pods_are_controlled_by_a_replica_set_the_deployment_controls(cluster):
    pods = cluster.deployment("consumer", replicas=2)
    deployment = cluster.apps.read_namespaced_deployment("consumer", cluster.namespace)
    pod = cluster.core.read_namespaced_pod(pods[0], cluster.namespace)
    (pod_owner,) = [r for r in pod.metadata.owner_references if r.controller]
    assert pod_owner.kind == "ReplicaSet"
    replica_set = cluster.apps.read_namespaced_replica_set(pod_owner.name, cluster.namespace)
    (rs_owner,) = [r for r in replica_set.metadata.owner_references if r.controller]
    assert (rs_owner.kind, rs_owner.uid) == ("Deployment", deployment.metadata.uid)


# -- Events -------------------------------------------------------------------------------------------

def test_events_are_created_and_listed_by_involved_object(cluster):
    pods = cluster.deployment("consumer", replicas=1)
    cluster.core.create_namespaced_event(
        cluster.namespace,
        {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "rebalanced-"},
         "involvedObject": {"kind": "Pod", "name": pods[0], "namespace": cluster.namespace},
         "reason": "Rebalanced", "message": "evicted by pod-rebalancer", "type": "Normal",
         "source": {"component": "pod-rebalancer"}},
    )
    found = cluster.core.list_namespaced_event(cluster.namespace, field_selector=f"involvedObject.name={pods[0]},reason=Rebalanced").items
    assert [e.message for e in found] == ["evicted by pod-rebalancer"]
