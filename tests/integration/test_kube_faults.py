"""The real API server failing a chosen request while the function acts.

- Through a validating admission webhook (tests/admission.py): a denial with the code the webhook
  picks (403, 429, 500), a webhook that stalls past its timeout, and one that cannot be reached,
  both under ``failurePolicy: Fail``; these are the API server's own answers, and the request was
  not carried out. And the losing side of a race: another writer creates the state ConfigMap
  while the function's create is under review.
- Through API Priority and Fairness (tests/flowcontrol.py): the function's ServiceAccount on a
  priority level that rejects what finds no free seat.

For each fault: what the answer says and its status, what the history and the Events say, that
the lock is consistent afterwards and the next invocation behaves, and that no pod was acted on
twice (the API server's audit log)."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import kubernetes
import pytest
import requests
from kubernetes.client import CoreV1Api
from kubernetes.client.exceptions import ApiException

from rebalancer.core.timestamps import stamp
from tests.acting import (
    AHEAD,
    FIRING,
    INVOCATION,
    LAST,
    decision,
    evictions,
    fire,
    history,
    replacements_report_like_the_rest,
)
from tests.admission import AdmissionFaults
from tests.conftest import AUTH, TOKEN, aligned_now
from tests.fleet import skewed_consumer, start_live_functions
from tests.flowcontrol import Throttled
from tests.metricsdata import consumer_records_lag, to_victoriametrics_import
from tests.realcluster import Cluster
from tests.samples import sample_in_namespace


@pytest.fixture
def admission(control_plane, kube, tmp_path):
    with AdmissionFaults(control_plane, kube.namespace, tmp_path) as faults:
        yield faults


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


# -- the API server throttling the function (API Priority and Fairness) ---------------------------------

@pytest.fixture
def throttled(control_plane, kube, tmp_path):
    """``throttled(shares)``: the function's ServiceAccount on a priority level of its own that
    rejects what finds no free seat (tests/flowcontrol.py)."""
    return lambda shares: Throttled(control_plane, shares, str(kube.write_kubeconfig(tmp_path / "throttled-kubeconfig")))


def test_a_throttled_function_sends_each_rejected_request_again_then_answers_503_and_moves_nothing(
        live, kube, throttled, control_plane, tmp_path):
    """The function's priority level has no seats of its own: APF then runs one of its requests at
    a time. A request of the same identity holds that seat for ten seconds (an admission webhook
    stalls it), so every request of the invocation is rejected: each is sent again twice, a second
    apart as Retry-After asks, then the invocation gives up with a 503, having moved nothing. Once
    the seat is free, Alertmanager's retry acts once."""
    pods, build = live
    client = build()
    function = CoreV1Api(kubernetes.config.new_client_from_config(config_file=str(kube.write_kubeconfig(tmp_path / "hog"))))
    hog = {"metadata": {"name": "seat-hog"}}

    with throttled(0), AdmissionFaults(control_plane, kube.namespace, tmp_path / "webhook", timeout_seconds=10) as webhook, \
            ThreadPoolExecutor(1) as background:
        webhook.stall("configmaps", name="seat-hog")
        holding = background.submit(function.create_namespaced_config_map, kube.namespace, hog, dry_run="All")
        Cluster.wait_for(lambda: webhook.reviewed("configmaps"), "the seat hog under review", timeout=10)
        kube.forget_requests()
        response = fire(client, kube)
        with pytest.raises(ApiException):  # the hog's own end: the webhook's timeout, a 500
            holding.result()

    said = json.dumps(response.get_json())
    assert response.status_code == 503, said
    assert "HTTP 429" in said and "throttled before it was handled" in said and "Retry-After" in said
    made = [r for r in kube.requests() if r.name != "seat-hog"]  # (the hog's own 500 is audited when it ends)
    assert made and {r.code for r in made} == {429}  # the API server's own rejections, audited
    sent = Counter((r.verb, r.resource, r.subresource, r.name) for r in made)
    assert set(sent.values()) == {3}, sent  # each request sent again twice, then given up
    assert evictions(kube) == [] and kube.annotations("configmaps", "pod-rebalancer-state") is None
    assert ours(kube.events()) == []

    retried = fire(client, kube)
    body = decision(retried)
    assert retried.status_code == 200 and body["outcome"] == "acted", body
    assert evictions(kube) == [(pods[4], 201), (pods[0], 201)]


DELIVERIES = 20


def test_concurrent_deliveries_the_api_server_throttles_never_act_twice(victoria_metrics, kube, tmp_path, throttled):
    """Twenty copies of one notification at once, over two processes, with the function's
    ServiceAccount given about three seats: the API server rejects many of their requests. Each
    answer is a 200 or a 503 that says it was throttled; at most one lock is taken; no pod is
    evicted twice; and once the throttling is lifted the next delivery finishes the job or is
    held by the cooldown."""
    pods = skewed_consumer(kube, victoria_metrics)
    functions = start_live_functions(tmp_path, kube, victoria_metrics.url, 2)
    notification = sample_in_namespace(FIRING, kube.namespace)

    def deliver(i: int) -> requests.Response:
        return requests.post(f"{functions[i % 2].url}/alertmanager", json=notification,
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)

    try:
        with throttled(1), ThreadPoolExecutor(max_workers=DELIVERIES) as pool:
            answers = list(pool.map(deliver, range(DELIVERIES)))
        after = deliver(0)
    finally:
        for function in functions:
            function.stop()

    assert {a.status_code for a in answers} <= {200, 503}, [a.text for a in answers]
    assert all("throttled before it was handled" in a.text for a in answers if a.status_code == 503)
    assert any(r.code == 429 for r in kube.requests()), "the API server throttled nothing: the test proved nothing"
    decided = [next(d for d in a.json()["decisions"] if d["target"] == "ingestion-consumer")
               for a in [*answers, after] if a.status_code == 200]
    # Exactly one delivery took the lock. It acted, or (seen in CI) the API server throttled every
    # one of its evictions past their retries: then it says so, `blocked` with each pod `failed`
    # on a 429, nothing is evicted, and the cooldown holds the next delivery all the same.
    holders = [d for d in decided if d["outcome"] in ("acted", "blocked")]
    assert len(holders) == 1, Counter((d["outcome"], d.get("code")) for d in decided)
    holder = holders[0]
    if holder["outcome"] == "blocked":
        assert all(a["result"] == "failed" and "429" in a["detail"] for a in holder["actions"]), holder
    evicted = [name for name, code in evictions(kube) if code == 201]
    assert sorted(evicted) == sorted({a["pod"] for a in holder["actions"] if a["result"] == "evicted"})
    assert len(evicted) == len(set(evicted)) and set(evicted) <= {pods[4], pods[0]}
    (entry,) = history(kube)
    assert entry["outcome"] == holder["outcome"] and [(p["pod"], p["result"]) for p in entry["pods"]] == [
        (a["pod"], a["result"]) for a in holder["actions"]]
    assert after.status_code == 200
