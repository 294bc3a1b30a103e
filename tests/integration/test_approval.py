"""Approval mode end to end, live, on the real control plane and a real VictoriaMetrics: a
verified skew becomes a proposal (state ConfigMap, Event, no eviction); approving it in time
acts on exactly its pods; an expired proposal, one carried out already, an unknown id, and a skew
that is gone by the time of the approval are refused, and nothing changes. The pods are seconds
old, so the function's clock (freezegun) runs 20 minutes ahead of them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from rebalancer.cooldown import proposals_key
from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import

AHEAD = 1200
SKEW = [0.1, 0.5, 0.5, 0.5, 1.9, 0.5]
BALANCED = [0.5] * 6


@pytest.fixture
def approving(kube, victoria_metrics, make_client, clock):
    """Six pods, skewed from the start; balanced from ``balanced_after`` seconds past the function's
    first moment, if given. Returns (pods, client)."""

    def build(balanced_after: float | None = None):
        pods = kube.deployment("consumer", replicas=6)
        now = aligned_now()
        moment = now + AHEAD
        phases = [(now - 1200, dict(zip(pods, SKEW, strict=True)))]
        if balanced_after is not None:
            phases.append((moment + balanced_after, dict(zip(pods, BALANCED, strict=True))))
        victoria_metrics.import_prometheus(to_victoriametrics_import(
            cpu_usage(kube.namespace, "consumer", phases, now - 1200, now + 3 * AHEAD)))
        clock.at(datetime.fromtimestamp(moment, timezone.utc))
        client = make_client(victoria_metrics.url, [target("consumer", kube.namespace, approval=True, approval_ttl="15m")],
                             env_rebalancer_dry_run="false")
        return pods, client

    return build


def propose(client) -> dict:
    decision = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()["decisions"][0]
    assert decision["code"] == "proposed", decision["reason"]
    return decision


def approve(client, identifier: str):
    return client.post(f"/approve/{identifier}", headers=AUTH)


def proposals(kube) -> list[dict]:
    return json.loads((kube.annotations("configmaps", "pod-rebalancer-state") or {}).get(proposals_key("consumer"), "[]"))


def test_a_skew_is_proposed_and_approving_it_in_time_acts_on_its_pods(approving, kube, clock):
    pods, client = approving()

    decision = propose(client)
    proposal = decision["proposal"]
    assert decision["outcome"] == "skipped" and [p["pod"] for p in proposal["pods"]] == [pods[4], pods[0]]
    assert proposal["id"].startswith("consumer.") and proposal["status"] == "pending"
    assert kube.requests("create", "pods") == []  # proposed, not evicted
    (announced,) = kube.events("RebalanceProposed")
    assert proposal["id"] in announced["message"]
    assert propose(client)["proposal"]["id"] == proposal["id"]  # a later alert: the same proposal waits

    clock.advance(minutes=5)
    answer = approve(client, proposal["id"])

    body = answer.get_json()
    assert answer.status_code == 200 and body["outcome"] == "acted", body["reason"]
    assert [(a["pod"], a["result"]) for a in body["decisions"][0]["actions"]] == [(pods[4], "evicted"), (pods[0], "evicted")]
    assert [p["status"] for p in proposals(kube)] == ["approved"]
    again = approve(client, proposal["id"])
    assert again.status_code == 409 and "was approved already" in again.get_json()["reason"]
    assert len(kube.requests("create", "pods")) == 2


def test_an_expired_proposal_is_refused_and_nothing_changes(approving, kube, clock):
    _, client = approving()
    proposal = propose(client)["proposal"]
    state_before = kube.annotations("configmaps", "pod-rebalancer-state")
    writes_before = len(kube.writes())

    clock.advance(minutes=16)  # past the 15 minute approval_ttl
    answer = approve(client, proposal["id"])

    assert answer.status_code == 409 and f"expired at {proposal['expires']}" in answer.get_json()["reason"]
    assert kube.annotations("configmaps", "pod-rebalancer-state") == state_before
    assert len(kube.writes()) == writes_before and kube.requests("create", "pods") == []


def test_a_skew_gone_by_the_approval_is_refused_and_nothing_changes(approving, kube, clock):
    _, client = approving(balanced_after=120)  # balanced two minutes after the proposal
    proposal = propose(client)["proposal"]
    writes_before = len(kube.writes())

    clock.advance(minutes=10)  # the 5-minute rate window sees only balanced pods by now
    answer = approve(client, proposal["id"])

    body = answer.get_json()
    assert answer.status_code == 409 and body["outcome"] == "rejected"
    assert "was not carried out, nothing was done" in body["reason"] and body["decisions"][0]["code"] == "below_threshold"
    assert len(kube.writes()) == writes_before and kube.requests("create", "pods") == []
    assert [p["status"] for p in proposals(kube)] == ["pending"]


@pytest.mark.parametrize("identifier", ["consumer.000000000000", "nobody.123", "no-dot-here"])
def test_an_unknown_proposal_is_a_404_and_changes_nothing(approving, kube, identifier):
    _, client = approving()
    writes_before = len(kube.writes())

    answer = approve(client, identifier)

    assert answer.status_code == 404 and "no proposal" in answer.get_json()["reason"]
    assert len(kube.writes()) == writes_before
