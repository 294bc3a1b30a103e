"""The stand-in's own behaviours that the contract suite cannot set up through the API alone:
budget arithmetic with percentages and unhealthy pods (concepts/workloads/pods/disruptions,
tasks/run-application/configure-pdb), the simulated kubelet's clock, and the test controls."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import kubernetes
import pytest
from kubernetes.client import ApiException, CoreV1Api, PolicyV1Api, V1Eviction, V1ObjectMeta

from tests.standin import KubeApiStandIn
from tests.standin.fixtures import seed_deployment, seed_stray_pod
from tests.standin.selectors import SelectorError, from_label_selector, parse

NS = "posthog"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def api(clock):
    with KubeApiStandIn(clock=clock) as standin:
        yield standin


@pytest.fixture
def core(api, tmp_path) -> CoreV1Api:
    return CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(api.write_kubeconfig(tmp_path / "kc"))))


@pytest.fixture
def policy(api, tmp_path) -> PolicyV1Api:
    return PolicyV1Api(kubernetes.config.new_client_from_config(config_file=str(api.write_kubeconfig(tmp_path / "kc2"))))


def budget(policy, **spec):
    policy.create_namespaced_pod_disruption_budget(
        NS, {"metadata": {"name": "budget"}, "spec": {"selector": {"matchLabels": {"app": "consumer"}}, **spec}}
    )
    return policy.read_namespaced_pod_disruption_budget("budget", NS).status


def evict(core, pod):
    return core.create_namespaced_pod_eviction(pod, NS, V1Eviction(metadata=V1ObjectMeta(name=pod, namespace=NS)))


@pytest.mark.parametrize(
    ("spec", "ready", "desired", "allowed"),
    [
        ({"minAvailable": "50%"}, [True] * 4, 2, 2),  # ceil(50% of 4 expected)
        ({"minAvailable": "60%"}, [True] * 4, 3, 1),  # ceil(2.4) = 3: percentages round up
        ({"maxUnavailable": "25%"}, [True] * 4, 3, 1),  # 4 - ceil(1.0)
        ({"maxUnavailable": "30%"}, [True] * 4, 2, 2),  # 4 - ceil(1.2) = 2
        ({"maxUnavailable": 1}, [True, True, True, False], 3, 0),  # one already unhealthy uses the budget
        ({"minAvailable": 3}, [True, True, True, False], 3, 0),
    ],
)
def test_budget_arithmetic_follows_the_disruption_controller(api, policy, spec, ready, desired, allowed):
    seed_deployment(api, NS, "consumer", replicas=4, ready=ready)
    status = budget(policy, **spec)
    assert (status.desired_healthy, status.disruptions_allowed) == (desired, allowed)
    assert status.current_healthy == sum(ready) and status.expected_pods == 4


def test_unhealthy_pod_can_be_evicted_while_the_budget_is_healthy(api, core, policy):
    pods = seed_deployment(api, NS, "consumer", replicas=4, ready=[True, True, True, False])
    budget(policy, minAvailable=3)  # 3 healthy >= 3 desired: unhealthy pods may go
    with pytest.raises(ApiException) as raised:
        evict(core, pods[0])
    assert raised.value.status == 429
    evict(core, pods[3])
    assert api.get("pods", NS, pods[3])["metadata"]["deletionTimestamp"]


def test_unhealthy_pod_is_protected_under_if_healthy_budget_when_the_budget_is_short(api, core, policy):
    pods = seed_deployment(api, NS, "consumer", replicas=3, ready=[True, False, False])
    budget(policy, minAvailable=2)
    with pytest.raises(ApiException) as raised:
        evict(core, pods[1])
    assert raised.value.status == 429


def test_always_allow_policy_lets_unhealthy_pods_go_even_when_the_budget_is_short(api, core, policy):
    pods = seed_deployment(api, NS, "consumer", replicas=3, ready=[True, False, False])
    budget(policy, minAvailable=2, unhealthyPodEvictionPolicy="AlwaysAllow")
    evict(core, pods[1])
    assert api.get("pods", NS, pods[1])["metadata"]["deletionTimestamp"]


def test_terminating_pod_is_evicted_without_a_budget_check(api, core, policy):
    pods = seed_deployment(api, NS, "consumer", replicas=2)
    budget(policy, maxUnavailable=0)
    core.delete_namespaced_pod(pods[0], NS)
    evict(core, pods[0])  # would be 429 for a running pod


def test_pod_that_matches_no_controller_leaves_a_percentage_budget_with_nothing_to_give(api, policy):
    seed_stray_pod(api, NS, "handmade", {"app": "consumer"})
    status = budget(policy, maxUnavailable="50%")
    assert status.disruptions_allowed == 0


def test_terminated_pod_disappears_when_its_grace_period_has_passed(api, core, clock):
    pods = seed_deployment(api, NS, "consumer", replicas=1, grace_seconds=45)
    core.delete_namespaced_pod(pods[0], NS)
    clock.now += timedelta(seconds=44)
    assert core.read_namespaced_pod(pods[0], NS).metadata.deletion_timestamp is not None
    clock.now += timedelta(seconds=2)
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_pod(pods[0], NS)
    assert raised.value.status == 404


def test_explicit_grace_period_overrides_the_pods_own(api, core):
    pods = seed_deployment(api, NS, "consumer", replicas=1, grace_seconds=45)
    core.delete_namespaced_pod(pods[0], NS, grace_period_seconds=5)
    assert core.read_namespaced_pod(pods[0], NS).metadata.deletion_grace_period_seconds == 5


def test_replica_set_controller_replaces_a_terminating_pod_when_enabled(clock, tmp_path):
    with KubeApiStandIn(clock=clock, replace_deleted_pods=True, pod_ready_after=timedelta(seconds=20)) as api:
        core = CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(api.write_kubeconfig(tmp_path / "kc"))))
        pods = seed_deployment(api, NS, "consumer", replicas=2)
        evict(core, pods[0])
        names = {p["metadata"]["name"] for p in api.objects("pods", NS)}
        (successor,) = names - set(pods)
        assert api.get("pods", NS, successor)["status"]["conditions"][-1]["status"] == "False"
        clock.now += timedelta(seconds=21)
        assert api.get("pods", NS, successor)["status"]["conditions"][-1]["status"] == "True"


def test_injected_fault_answers_once_with_the_status_then_heals(api, core):
    seed_deployment(api, NS, "consumer", replicas=1)
    api.fail("list", "pods", 503)
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_pod(NS)
    assert raised.value.status == 503 and json.loads(raised.value.body)["kind"] == "Status"
    assert len(core.list_namespaced_pod(NS).items) == 1


def test_denied_verb_answers_403_forbidden(api, core):
    pods = seed_deployment(api, NS, "consumer", replicas=1)
    api.deny("create", "pods", "eviction")
    with pytest.raises(ApiException) as raised:
        evict(core, pods[0])
    assert raised.value.status == 403 and "cannot create resource \"pods/eviction\"" in json.loads(raised.value.body)["message"]


def test_wrong_token_answers_401(api, tmp_path):
    config = api.write_kubeconfig(tmp_path / "kc")
    config.write_text(config.read_text().replace(api.token, "wrong"))
    core = CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(config)))
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_pod(NS)
    assert raised.value.status == 401


def test_request_log_records_verbs_in_rbac_vocabulary(api, core):
    pods = seed_deployment(api, NS, "consumer", replicas=1)
    core.list_namespaced_pod(NS, label_selector="app=consumer")
    evict(core, pods[0])
    assert [(r.verb, r.resource, r.subresource) for r in api.requests] == [("list", "pods", ""), ("create", "pods", "eviction")]
    assert api.requests[0].query["labelSelector"] == "app=consumer"


def test_concurrent_creates_of_one_configmap_let_exactly_one_win(api, core):
    outcomes: list[int] = []

    def create():
        try:
            core.create_namespaced_config_map(NS, {"metadata": {"name": "state"}})
            outcomes.append(201)
        except ApiException as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=create) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [201] + [409] * 19


def test_concurrent_conditional_updates_from_one_version_let_exactly_one_win(api, core):
    version = core.create_namespaced_config_map(NS, {"metadata": {"name": "state"}}).metadata.resource_version
    outcomes: list[int] = []

    def update(i):
        try:
            core.patch_namespaced_config_map(
                "state", NS, {"metadata": {"resourceVersion": version, "annotations": {"writer": str(i)}}},
                _content_type="application/merge-patch+json",
            )
            outcomes.append(200)
        except ApiException as e:
            outcomes.append(e.status)

    threads = [threading.Thread(target=update, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200] + [409] * 19


# -- the selector parser on its own ------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["app in (a", "app in a)", "=x", "app notin", "a b"])
def test_malformed_selectors_are_refused(bad):
    with pytest.raises(SelectorError):
        parse(bad)


def test_nil_structured_selector_matches_nothing_and_empty_matches_everything():
    assert not from_label_selector(None).matches({"app": "x"})
    assert from_label_selector({}).matches({"app": "x"})
    assert from_label_selector({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}).matches({})


def test_horizontal_pod_autoscalers_are_stored_and_read_back(api, tmp_path):
    from kubernetes.client import AutoscalingV2Api

    autoscaling = AutoscalingV2Api(kubernetes.config.new_client_from_config(config_file=str(api.write_kubeconfig(tmp_path / "kc3"))))
    autoscaling.create_namespaced_horizontal_pod_autoscaler(NS, {
        "metadata": {"name": "consumer"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "consumer"}, "minReplicas": 2, "maxReplicas": 10},
    })
    (hpa,) = autoscaling.list_namespaced_horizontal_pod_autoscaler(NS).items
    assert hpa.spec.scale_target_ref.name == "consumer" and hpa.metadata.generation == 1
