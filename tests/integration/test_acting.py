"""Acting for real: evictions and deletes under the ConfigMap cooldown lock, with the audit trail.

Real VictoriaMetrics, the real control plane (tests/realcluster.py: kube-apiserver, the
Deployment, ReplicaSet and disruption controllers, a node simulator) and the real app acting as
its ServiceAccount with terraform's Role. The pods are seconds old, so the function's clock
(freezegun, through the ``clock`` fixture) runs 20 minutes ahead of real time (past min_pod_age) and the series reach 40 minutes
past it, so that "after the cooldown" has data too. The request log is the API server's audit log.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from rebalancer.core.timestamps import parse_stamp, stamp
from tests.acting import (
    HISTORY,
    INVOCATION,
    LAST,
    decision,
    fire,
    history,
    replacements_report_like_the_rest,
)
from tests.conftest import target
from tests.realcluster import READY_ANNOTATION
from tests.terraform_rbac import role_rules


def test_skewed_cpu_evicts_the_hottest_and_coldest_and_leaves_the_audit_trail(live, kube, clock):
    pods, build = live
    client = build()

    before = clock()
    response = fire(client, kube)
    after = clock()

    body = decision(response)
    assert response.status_code == 200 and response.get_json()["outcome"] == "acted"
    assert body["outcome"] == "acted" and body["lock"] == "taken_by_this_invocation"
    assert body["actions"] == [{"pod": pods[4], "result": "evicted"}, {"pod": pods[0], "result": "evicted"}]
    assert kube.terminating(pods) == sorted([pods[0], pods[4]])
    assert [(r.verb, r.subresource, r.name, r.code) for r in kube.requests("create", "pods")] == [
        ("create", "eviction", pods[4], 201), ("create", "eviction", pods[0], 201)]
    annotations = kube.annotations("configmaps", "pod-rebalancer-state")
    assert before <= parse_stamp(annotations[LAST]) <= after  # the function's clock: the test's moment
    assert annotations[INVOCATION] == response.get_json()["invocation"]
    (entry,) = json.loads(annotations[HISTORY])
    assert entry["outcome"] == "acted" and entry["signal"] == "cpu" and entry["value"] == pytest.approx(body["verified"]["value"])
    assert [(p["pod"], p["role"], p["result"]) for p in entry["pods"]] == [(pods[4], "hot", "evicted"), (pods[0], "cold", "evicted")]
    rebalanced = kube.events("Rebalanced")
    assert sorted(e["involvedObject"]["name"] for e in rebalanced) == sorted([pods[0], pods[4], "ingestion-consumer"])
    assert all(e["type"] == "Normal" and e["source"]["component"] == "pod-rebalancer" for e in rebalanced)
    assert parse_stamp(body["cooldown_until"]) == parse_stamp(annotations[LAST]) + timedelta(minutes=15)
    # The ReplicaSet replaces what was evicted, as on any cluster.
    assert len(set(kube.wait_for_ready_pods("ingestion-consumer", 6)) - set(pods)) == 2


def test_immediately_again_is_skipped_by_the_cooldown(live, kube, victoria_metrics):
    pods, build = live
    client = build()
    fire(client, kube)
    replacements_report_like_the_rest(kube, victoria_metrics, pods)
    writes_before = len(kube.writes())

    again = decision(fire(client, kube))

    assert again["outcome"] == "skipped" and again["code"] == "cooldown"
    assert "in cooldown until" in again["reason"]
    assert len(kube.writes()) == writes_before


def test_after_the_cooldown_it_acts_again_on_what_is_still_skewed(live, kube, clock, victoria_metrics):
    pods, build = live
    client = build()
    fire(client, kube)
    replacements_report_like_the_rest(kube, victoria_metrics, pods)  # pods[5] still stands out

    clock.advance(minutes=16)
    second = decision(fire(client, kube))

    assert second["outcome"] == "acted", second["reason"]
    assert second["selected"][0] == {"pod": pods[5], "value": pytest.approx(1.6), "role": "hot"}
    assert [a["result"] for a in second["actions"]] == ["evicted", "evicted"]
    assert len(history(kube)) == 2


@pytest.mark.parametrize("budget", [{"maxUnavailable": 0}, {"minAvailable": "90%"}], ids=["integer", "percentage"])
def test_budget_allowing_no_disruption_blocks_and_nothing_is_evicted(live, kube, budget):
    pods, build = live
    status = kube.pdb("consumer", {"app": "ingestion-consumer"}, **budget).status
    assert status.disruptions_allowed == 0 and status.desired_healthy == 6

    response = fire(build(), kube)

    body = decision(response)
    assert response.status_code == 200 and response.get_json()["outcome"] == "blocked"
    assert [a["result"] for a in body["actions"]] == ["blocked", "blocked"]
    assert "The disruption budget consumer needs 6 healthy pods and has 6 currently" in body["actions"][0]["detail"]
    assert [r.code for r in kube.requests("create", "pods")] == [429, 429]
    assert kube.terminating(pods) == []
    assert history(kube)[0]["outcome"] == "blocked"
    blocked = kube.events("RebalanceBlocked")
    assert len(blocked) == 3 and all(e["type"] == "Warning" for e in blocked)


def test_percentage_budget_with_room_lets_both_evictions_through(live, kube):
    pods, build = live
    assert kube.pdb("consumer", {"app": "ingestion-consumer"}, maxUnavailable="50%").status.disruptions_allowed == 3

    body = decision(fire(build(), kube))

    assert [(a["pod"], a["result"]) for a in body["actions"]] == [(pods[4], "evicted"), (pods[0], "evicted")]


def test_pod_under_two_budgets_fails_while_the_other_eviction_is_recorded(live, kube):
    pods, build = live
    kube.core.patch_namespaced_pod(pods[0], kube.namespace, {"metadata": {"labels": {"guarded": "twice"}}})
    kube.pdb("one", {"guarded": "twice"}, maxUnavailable=1)
    kube.pdb("two", {"guarded": "twice"}, maxUnavailable=1)

    body = decision(fire(build(), kube))

    assert body["outcome"] == "acted"
    assert [(a["pod"], a["result"]) for a in body["actions"]] == [(pods[4], "evicted"), (pods[0], "failed")]
    assert "more than one PodDisruptionBudget" in body["actions"][1]["detail"]
    assert [r.code for r in kube.requests("create", "pods")] == [201, 500]
    (entry,) = history(kube)
    assert [(p["pod"], p["result"]) for p in entry["pods"]] == [(pods[4], "evicted"), (pods[0], "failed")]
    assert {e["involvedObject"]["name"] for e in kube.events("RebalanceBlocked")} == {pods[0]}
    assert {e["involvedObject"]["name"] for e in kube.events("Rebalanced")} == {pods[4], "ingestion-consumer"}


def test_delete_action_keeps_the_pods_own_grace_period(scene, make_client, victoria_metrics, kube):
    pods = scene(grace_seconds=45)
    kube.grant(deleting=True)
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace, action="delete")],
                         env_rebalancer_dry_run="false")

    body = decision(fire(client, kube))

    assert [a["result"] for a in body["actions"]] == ["deleted", "deleted"]
    for pod in (pods[4], pods[0]):
        assert kube.get("pods", pod)["metadata"]["deletionGracePeriodSeconds"] == 45
    deletes = kube.requests("delete", "pods")
    assert [(r.name, r.code) for r in deletes] == [(pods[4], 200), (pods[0], 200)]
    assert all("gracePeriodSeconds" not in r.query for r in deletes)


def test_failing_to_write_events_is_reported_and_the_history_still_holds_the_actions(live, kube):
    _, build = live
    kube.grant([rule for rule in role_rules(deleting=False) if rule["resources"] != ["events"]])

    body = decision(fire(build(), kube))

    assert body["outcome"] == "acted" and len(body["audit_errors"]) == 3
    assert all("403" in error for error in body["audit_errors"])
    assert history(kube)[0]["outcome"] == "acted"


def test_dry_run_evaluates_the_lock_and_writes_nothing(scene, make_client, victoria_metrics, kube):
    scene()
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace)])

    body = decision(fire(client, kube))

    assert body["outcome"] == "dry_run" and body["lock"] == "lock_free"
    assert "a live run would take it" in body["reason"]
    assert kube.writes() == []
    assert kube.requests("get", "configmaps")  # it did look


def test_dry_run_reports_a_cooldown_in_force(live, kube, make_client, victoria_metrics):
    pods, build = live
    fire(build(), kube)  # a live action starts the cooldown
    replacements_report_like_the_rest(kube, victoria_metrics, pods)
    dry = make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace)])

    body = decision(fire(dry, kube))

    assert body["outcome"] == "skipped" and body["code"] == "cooldown"


def test_an_action_whose_run_died_is_marked_abandoned_by_the_next_one(live, kube, clock):
    pods, build = live
    died_at = clock() - timedelta(minutes=20)  # past the 15 minute cooldown, within the hour
    dead = {"at": stamp(died_at), "invocation": "deadbeef", "signal": "cpu",
            "outcome": "in_progress", "value": 0.9, "threshold": 0.3, "pods": []}
    kube.core.create_namespaced_config_map(kube.namespace, {"metadata": {"name": "pod-rebalancer-state", "annotations": {
        LAST: dead["at"], INVOCATION: "deadbeef", HISTORY: json.dumps([dead])}}})

    response = fire(build(max_actions_per_hour=2), kube)

    body = decision(response)
    assert body["outcome"] == "acted", body["reason"]
    assert body["abandoned"] == [{"invocation": "deadbeef", "at": dead["at"], "signal": "cpu"}]
    assert "the action of invocation deadbeef" in body["reason"] and "marked abandoned" in body["reason"]
    assert [(h["invocation"], h["outcome"]) for h in history(kube)] == [
        ("deadbeef", "abandoned"), (response.get_json()["invocation"], "acted")]
    assert len(kube.terminating(pods)) == 2


def test_unreadable_state_refuses_to_act(live, kube):
    pods, build = live
    kube.core.create_namespaced_config_map(kube.namespace, {
        "metadata": {"name": "pod-rebalancer-state", "annotations": {HISTORY: "{not json"}}})
    body = decision(fire(build(), kube))
    assert body["outcome"] == "skipped" and body["code"] == "state_unreadable"
    assert kube.terminating(pods) == []


def test_rolling_out_deployment_is_left_alone(live, kube):
    _pods, build = live
    # A real rolling update that cannot finish: the new template's pods never become Ready.
    kube.apps.patch_namespaced_deployment("ingestion-consumer", kube.namespace, {
        "spec": {"template": {"metadata": {"annotations": {READY_ANNOTATION: "false", "release": "2"}}}}})
    kube.wait_for(lambda: (s := kube.apps.read_namespaced_deployment("ingestion-consumer", kube.namespace).status)
                  .observed_generation == 2 and (s.updated_replicas or 0) > 0, "the rollout to start")
    kube.forget_requests()

    body = decision(fire(build(max_unready_fraction=0.9), kube))

    assert body["code"] == "rolling_out", body["reason"]
    assert re.search(r"is rolling out \(\d of 6 replicas updated\)", body["reason"]), body["reason"]
    assert kube.requests("create", "pods") == []


def test_a_scale_up_in_progress_is_left_alone(live, kube):
    pods, build = live
    kube.hold_new_pods(True)  # the new pods start slowly
    kube.apps.patch_namespaced_deployment_scale("ingestion-consumer", kube.namespace, {"spec": {"replicas": 9}})
    kube.wait_for(lambda: (s := kube.apps.read_namespaced_deployment("ingestion-consumer", kube.namespace).status)
                  .observed_generation == 2 and s.replicas == 9, "the Deployment controller to scale up")

    # Three of nine unready is over max_unready_fraction's 20 %: that guard speaks first ...
    first = decision(fire(build(), kube))
    # ... and with it relaxed, the Deployment's own status holds the action back.
    relaxed = decision(fire(build(max_unready_fraction=0.5), kube))

    assert first["code"] == "too_many_unready" and "3 of 9 pods of the Deployment are not Ready" in first["reason"]
    assert relaxed["code"] == "rolling_out"
    assert "not fully available (6 of 9 replicas available" in relaxed["reason"], relaxed["reason"]
    assert kube.requests("create", "pods") == [] and kube.terminating(pods) == []


def test_too_many_unready_pods_are_left_alone(live, kube):
    pods, build = live
    for pod in pods[1:3]:  # two of six fail their readiness probe: over the 20 % allowed
        kube.core.patch_namespaced_pod(pod, kube.namespace, {"metadata": {"annotations": {READY_ANNOTATION: "false"}}})
    kube.wait_for(lambda: len(kube.ready_pods("app=ingestion-consumer")) == 4, "two pods to turn unready")

    body = decision(fire(build(), kube))

    assert body["code"] == "too_many_unready" and "2 of 6 pods of the Deployment are not Ready" in body["reason"]
    assert kube.requests("create", "pods") == []


def test_scaling_hpa_is_left_alone(live, kube):
    pods, build = live
    kube.autoscaling.create_namespaced_horizontal_pod_autoscaler(kube.namespace, {
        "metadata": {"name": "consumer"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ingestion-consumer"},
                 "minReplicas": 2, "maxReplicas": 20,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]}})
    # What the HPA controller writes when it decides to scale up. It does not run here: without a
    # metrics API it could only record failures, so the test writes its status through the API.
    kube.autoscaling.patch_namespaced_horizontal_pod_autoscaler_status("consumer", kube.namespace, {
        "status": {"currentReplicas": 6, "desiredReplicas": 9}})

    body = decision(fire(build(), kube))

    assert body["code"] == "hpa_scaling" and "6 -> 9 replicas" in body["reason"]
    assert kube.terminating(pods) == []


def test_metrics_count_each_action_by_result(live, kube):
    _, build = live
    client = build()
    fire(client, kube)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rebalancer_actions_total{result="evicted",signal="cpu",target="ingestion-consumer"} 2.0' in text
