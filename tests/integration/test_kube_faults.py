"""The real API server failing a chosen request while the function acts, through a validating
admission webhook (tests/admission.py): a denial with the code the webhook picks (403, 429, 500),
a webhook that stalls past its timeout, and one that cannot be reached, both under
``failurePolicy: Fail``. These are the API server's own answers; the request was not carried out.

For each fault: what the answer says and its status, what the history and the Events say, that
the lock is consistent afterwards and the next invocation behaves, and that no pod was acted on
twice (the API server's audit log)."""

from __future__ import annotations

import json

import pytest

from rebalancer.core.timestamps import stamp
from tests.acting import AHEAD, INVOCATION, LAST, decision, fire, history, replacements_report_like_the_rest
from tests.admission import AdmissionFaults
from tests.conftest import AUTH, aligned_now
from tests.metricsdata import consumer_records_lag, to_victoriametrics_import


@pytest.fixture
def admission(control_plane, kube, tmp_path):
    with AdmissionFaults(control_plane, kube.namespace, tmp_path) as faults:
        yield faults


def evictions(kube) -> list[tuple[str, int]]:
    return [(r.name, r.code) for r in kube.requests("create", "pods") if r.subresource == "eviction"]


def lock_of(kube) -> dict[str, str]:
    annotations = kube.annotations("configmaps", "pod-rebalancer-state") or {}
    return {key: annotations[key] for key in (LAST, INVOCATION) if key in annotations}


SECOND_EVICTION_FAULTS = {
    # fault: (how the webhook fails it, the result recorded, what the detail says, the API server's code)
    "denied": (lambda f, pod: f.deny("pods", subresource="eviction", name=pod, code=403, message="change freeze"),
               "failed", "HTTP 403: admission webhook", 403),
    "throttled": (lambda f, pod: f.deny("pods", subresource="eviction", name=pod, code=429, message="slow down"),
                  "failed", "HTTP 429: admission webhook", 429),
    "server error": (lambda f, pod: f.deny("pods", subresource="eviction", name=pod, code=500, message="etcd is sad"),
                     "failed", "HTTP 500: admission webhook", 500),
    "webhook timeout": (lambda f, pod: f.stall("pods", subresource="eviction", name=pod),
                        "failed", "failed calling webhook", 500),
}


@pytest.mark.parametrize("fault", list(SECOND_EVICTION_FAULTS))
def test_a_second_eviction_the_api_server_refuses_is_recorded_beside_the_first(live, kube, admission, fault):
    pods, build = live
    inject, result, detail, code = SECOND_EVICTION_FAULTS[fault]
    inject(admission, pods[0])  # the cold pod goes second
    client = build()

    response = fire(client, kube)

    body = decision(response)
    assert response.status_code == 200 and body["outcome"] == "acted", body
    assert [(a["pod"], a["result"]) for a in body["actions"]] == [(pods[4], "evicted"), (pods[0], result)]
    assert detail in body["actions"][1]["detail"], body["actions"][1]
    assert evictions(kube) == [(pods[4], 201), (pods[0], code)]  # each pod asked once
    assert kube.terminating(pods) == [pods[4]]
    (entry,) = history(kube)
    assert entry["outcome"] == "acted" and entry["invocation"] == response.get_json()["invocation"]
    assert [(p["pod"], p["result"]) for p in entry["pods"]] == [(pods[4], "evicted"), (pods[0], result)]
    assert {e["involvedObject"]["name"] for e in kube.events("RebalanceBlocked")} == {pods[0]}
    assert {e["involvedObject"]["name"] for e in kube.events("Rebalanced")} == {pods[4], "ingestion-consumer"}
    assert lock_of(kube)[INVOCATION] == response.get_json()["invocation"]

    writes = len(kube.writes())
    again = decision(fire(client, kube))  # the webhook would allow it now: the cooldown must hold it
    assert again["outcome"] == "skipped" and again["code"] == "cooldown", again
    assert len(kube.writes()) == writes and evictions(kube) == [(pods[4], 201), (pods[0], code)]


LOCK_FAULTS = {
    # fault: (how the webhook fails the lock's create, the answer's status, the decision's code)
    # A definite refusal is not retried by Alertmanager (200, the decision says why); a 5xx is (503).
    "denied": (lambda f: f.deny("configmaps", name="pod-rebalancer-state", code=403, message="no new state now"), 200,
               "kubernetes_error"),
    "server error": (lambda f: f.deny("configmaps", name="pod-rebalancer-state", code=500, message="etcd is sad"), 503, None),
    "webhook timeout": (lambda f: f.stall("configmaps", name="pod-rebalancer-state"), 503, None),
    "webhook unreachable": (lambda f: f.unreachable(), 503, None),
}


def ours(events: list[dict]) -> list[dict]:
    return [e for e in events if e["source"].get("component") == "pod-rebalancer"]


@pytest.mark.parametrize("fault", list(LOCK_FAULTS))
def test_a_lock_write_the_api_server_refuses_moves_no_pod_and_the_retry_acts_once(live, kube, admission, fault):
    pods, build = live
    inject, status, code = LOCK_FAULTS[fault]
    inject(admission)
    client = build()

    response = fire(client, kube)

    assert response.status_code == status, response.get_json()
    said = json.dumps(response.get_json())
    assert ("admission webhook" in said) if fault in ("denied", "server error") else ("failed calling webhook" in said), said
    if code is not None:
        assert decision(response)["outcome"] == "skipped" and decision(response)["code"] == code
    assert evictions(kube) == [] and kube.terminating(pods) == []
    assert kube.annotations("configmaps", "pod-rebalancer-state") is None  # no lock was left behind
    assert ours(kube.events()) == []

    admission.faults.clear()
    if fault == "webhook unreachable":
        admission.remove()  # the configuration goes with the webhook; nothing reviews any more
    retried = fire(client, kube)  # Alertmanager's retry, or the next notification
    body = decision(retried)
    assert retried.status_code == 200 and body["outcome"] == "acted", body
    assert evictions(kube) == [(pods[4], 201), (pods[0], 201)]
    assert lock_of(kube)[INVOCATION] == retried.get_json()["invocation"]


def test_a_history_write_the_api_server_refuses_after_the_evictions_leaves_the_run_on_record(live, kube, admission,
                                                                                             victoria_metrics):
    """The lock is taken (the ConfigMap's create), both pods are evicted, and the write that
    records their results (an update) is refused: the answer and the Events still say what was
    done, and the lock holds the cooldown, so the next delivery does not act again."""
    pods, build = live
    admission.deny("configmaps", name="pod-rebalancer-state", operation="UPDATE", code=500, message="etcd is sad", times=10)
    client = build()

    response = fire(client, kube)

    body = decision(response)
    assert response.status_code == 200 and body["outcome"] == "acted", body
    assert [(a["pod"], a["result"]) for a in body["actions"]] == [(pods[4], "evicted"), (pods[0], "evicted")]
    assert "history not written" in json.dumps(body), body
    assert evictions(kube) == [(pods[4], 201), (pods[0], 201)]
    (entry,) = history(kube)
    assert entry["outcome"] == "in_progress" and entry["invocation"] == response.get_json()["invocation"]
    assert {e["involvedObject"]["name"] for e in kube.events("Rebalanced")} == {pods[4], pods[0], "ingestion-consumer"}
    assert lock_of(kube)[INVOCATION] == response.get_json()["invocation"]

    replacements_report_like_the_rest(kube, victoria_metrics, pods)
    again = decision(fire(client, kube))
    assert again["outcome"] == "skipped" and again["code"] == "cooldown", again
    assert evictions(kube) == [(pods[4], 201), (pods[0], 201)]


def test_losing_the_lock_to_another_writer_stands_down_every_signal_of_the_target(live, kube, admission, victoria_metrics, clock):
    """Another delivery creates the state ConfigMap between this invocation's read and its write
    (the webhook does it while the function's create is reviewed), so the API server answers the
    function's create 409: both signals stand down, and nothing is evicted."""
    pods, build = live
    start = aligned_now() - AHEAD  # the clock runs AHEAD of the pods' creation (tests/acting.py)
    victoria_metrics.import_prometheus(to_victoriametrics_import(consumer_records_lag(
        kube.namespace, "ingestion-consumer", dict(zip(pods, [10, 20, 30, 40, 9000, 50], strict=True)),
        start - 1200, start + 2 * AHEAD)))
    other = {LAST: stamp(clock()), INVOCATION: "the-other-delivery"}
    admission.race("pod-rebalancer-state", other)
    client = build(signals={"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}})

    response = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH)  # every signal

    decisions = response.get_json()["decisions"]
    assert response.status_code == 200
    assert [(d["signal"], d["outcome"], d["code"]) for d in decisions] == [("cpu", "skipped", "lock_taken"),
                                                                            ("lag", "skipped", "lock_taken")]
    assert [r.code for r in kube.requests("create", "configmaps")] == [409]
    assert evictions(kube) == [] and kube.terminating(pods) == []
    assert lock_of(kube) == other  # the winner's lock, untouched
    assert ours(kube.events()) == []

    again = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH)
    assert {(d["signal"], d["code"]) for d in again.get_json()["decisions"]} == {
        ("cpu", "cooldown"), ("lag", "cooldown")}
    assert evictions(kube) == []
