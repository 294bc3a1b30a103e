"""The Kubernetes reads in protobuf (as client-go makes them) against JSON, on the real API server:
the same pods read both ways are the same values and give the same decision, and the server's
error answers, which come back as a protobuf Status, say the same as its JSON ones. Only the
real server can prove this (it chooses the wire), so nothing here runs on a test double."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from rebalancer.adapters.kube import KubeGateway, api_client, connection
from rebalancer.config import Settings
from rebalancer.core.policy import decide
from rebalancer.errors import KubeError, KubeForbiddenError, KubeNotFoundError
from tests.realcluster import READY_ANNOTATION, drop_namespace, new_namespace

PROTOBUF = "application/vnd.kubernetes.protobuf"


@pytest.fixture
def wires(kube, tmp_path, monkeypatch):
    """The function's gateway twice, as its ServiceAccount: protobuf first (the default), and
    JSON only. Records the media type of every answer each one read."""
    seen: list[str] = []
    called = connection.KubeConnection._call

    def recording(self, *args, **kwargs):
        answer = called(self, *args, **kwargs)
        seen.append(answer.media_type)
        return answer

    monkeypatch.setattr(connection.KubeConnection, "_call", recording)
    client = api_client(kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"), in_cluster=False)
    return {"protobuf": KubeGateway(client, 10), "json": KubeGateway(client, 10, protobuf=False),
            "namespace": kube.namespace}, seen


def consumer_target(kube) -> Settings:
    return Settings(metrics_url="http://metrics.invalid", targets=[{
        "name": "consumer", "namespace": kube.namespace, "deployment": "consumer", "container": "consumer",
        "min_pods": 3, "min_pod_age": "0s",
        "signals": {"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5, "floor": 0}}}])


def read_while_still(gateways, container):
    """Protobuf, JSON, protobuf again, until the two protobuf reads agree: the controllers keep
    updating the Deployment's and the HPA's status for a while, and a read between two equal
    ones saw the same objects."""
    for _ in range(20):
        before = gateways["protobuf"].deployment_pods(gateways["namespace"], "consumer", container)
        as_json = gateways["json"].deployment_pods(gateways["namespace"], "consumer", container)
        if gateways["protobuf"].deployment_pods(gateways["namespace"], "consumer", container) == before:
            return {"protobuf": before, "json": as_json}
        time.sleep(0.5)
    raise AssertionError("the Deployment kept changing for 10 s")


def test_pods_read_as_protobuf_and_as_json_are_the_same_and_decide_the_same(kube, wires):
    gateways, seen = wires
    pods = kube.deployment("consumer", replicas=6, realistic=True)  # realistic: requests cpu "500m"
    kube.hpa("consumer", cpu_utilization=70)
    stray = kube.bare_pod("stray", {"app": "consumer"}).metadata.name  # matches the selector, owned by nothing
    kube.core.patch_namespaced_pod(pods[1], kube.namespace, {"metadata": {"annotations": {READY_ANNOTATION: "false"}}})
    kube.core.patch_namespaced_pod(pods[2], kube.namespace, {"metadata": {"annotations": {"pod-rebalancer/exclude": "true"}}})
    # Terminating and kept so by a finalizer: deletionTimestamp is set, the pod still listed.
    kube.core.patch_namespaced_pod(pods[3], kube.namespace, {"metadata": {"finalizers": ["example.com/hold"]}})
    kube.core.delete_namespaced_pod(pods[3], kube.namespace)
    try:
        kube.wait_for(lambda: pods[1] not in {p.metadata.name for p in kube.ready_pods("app=consumer")},
                      "one pod to turn unready")
        # Ready: four of the six, the replacement of the terminating one, and the stray.
        kube.wait_for_ready_pods("consumer", 6)
        listed = {p.metadata.name for p in kube.core.list_namespaced_pod(kube.namespace, label_selector="app=consumer").items}
        read = read_while_still(gateways, "consumer")
        without_requests = read_while_still(gateways, None)
    finally:
        kube.core.patch_namespaced_pod(pods[3], kube.namespace, {"metadata": {"finalizers": None}})

    assert PROTOBUF in seen and set(seen) == {PROTOBUF, "application/json"}
    assert seen.count(PROTOBUF) == 2 * seen.count("application/json")  # four reads each time, in its wire
    assert read["protobuf"] == read["json"] and without_requests["protobuf"] == without_requests["json"]
    by_name = {p.name: p for p in read["protobuf"].pods}
    # The Deployment's replacement for the terminating pod is listed too.
    assert set(by_name) >= listed >= {*pods, stray}
    # What protobuf's defaults could get wrong: presence, an absent map key, an unset controller.
    assert [name for name, p in by_name.items() if p.terminating] == [pods[3]]
    assert [name for name, p in by_name.items() if p.excluded] == [pods[2]]
    assert not by_name[pods[1]].ready and by_name[pods[0]].ready and by_name[pods[0]].phase == "Running"
    assert not by_name[stray].owned and all(by_name[p].owned for p in pods)
    assert {by_name[p].cpu_request for p in pods} == {0.5} and by_name[stray].cpu_request is None
    assert all(p.created_at is not None and p.created_at.tzinfo is not None for p in by_name.values())
    assert {p.cpu_request for p in without_requests["protobuf"].pods} == {None}
    workload = read["protobuf"].workload
    assert (workload.replicas, workload.hpa_name, workload.hpa_count, workload.hpa_cpu_target_utilization) == (6, "consumer", 1, 70.0)
    assert set(read["protobuf"].pod_uids) == set(by_name) and set(read["protobuf"].pod_ips) >= {*pods, stray}

    target = consumer_target(kube).targets[0]
    samples = {name: 100.0 for name in by_name} | {pods[0]: 5_000.0, pods[4]: 4_000.0}
    now = datetime.now(timezone.utc)
    verdicts = {wire: decide("lag", found.pods, samples, target.rules("lag"), now, workload=found.workload)
                for wire, found in read.items()}
    assert verdicts["protobuf"] == verdicts["json"]
    assert verdicts["protobuf"].code == "rolling_out"  # one pod unready: fewer available than replicas
    # The same pods without the rollout guard: the hot pod is selected, both ways.
    verdicts = {wire: decide("lag", found.pods, samples, target.rules("lag"), now) for wire, found in read.items()}
    assert verdicts["protobuf"] == verdicts["json"]
    assert verdicts["protobuf"].code == "skew_verified" and pods[0] in {s.pod for s in verdicts["protobuf"].selected}


def test_a_missing_object_is_not_found_in_protobuf_as_in_json(kube, wires):
    gateways, _ = wires
    errors = {}
    for wire in ("protobuf", "json"):
        with pytest.raises(KubeNotFoundError) as raised:
            gateways[wire].deployment_pods(kube.namespace, "absent")
        errors[wire] = str(raised.value)

    assert errors["protobuf"] == errors["json"]
    assert 'deployments.apps "absent" not found' in errors["protobuf"] and "HTTP 404 NotFound" in errors["protobuf"]
    # The missing state ConfigMap reads as empty both ways; a present one as its annotations.
    assert {wire: gateways[wire].read_configmap(kube.namespace, "pod-rebalancer-state").resource_version
            for wire in ("protobuf", "json")} == {"protobuf": None, "json": None}
    kube.core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "pod-rebalancer-state",
                                                                        "annotations": {"a.pod-rebalancer.io/x": "1"}}})
    states = {wire: gateways[wire].read_configmap(kube.namespace, "pod-rebalancer-state") for wire in ("protobuf", "json")}
    assert states["protobuf"] == states["json"] and states["protobuf"].annotations == {"a.pod-rebalancer.io/x": "1"}


def test_a_refusal_says_the_same_in_protobuf_as_in_json(control_plane, tmp_path, monkeypatch):
    """403: the function's ServiceAccount holds no Role in this namespace."""
    ungranted = new_namespace(control_plane)
    try:
        client = api_client(kubeconfig=ungranted.write_kubeconfig(tmp_path / "kubeconfig"), in_cluster=False)
        media_types = []
        text = connection._status_text
        monkeypatch.setattr(connection, "_status_text", lambda data, media_type: media_types.append(media_type) or text(data, media_type))
        errors: dict[str, KubeError] = {}
        for wire, protobuf in (("protobuf", True), ("json", False)):
            with pytest.raises(KubeForbiddenError) as raised:
                KubeGateway(client, 10, protobuf=protobuf).deployment_pods(ungranted.namespace, "consumer")
            errors[wire] = raised.value
    finally:
        drop_namespace(ungranted)

    assert media_types == [PROTOBUF, "application/json"]
    assert str(errors["protobuf"]) == str(errors["json"])
    assert "cannot get resource \"deployments\"" in str(errors["protobuf"]) and errors["protobuf"].reason == "Forbidden"
