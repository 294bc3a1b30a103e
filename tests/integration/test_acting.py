"""Acting for real: evictions and deletes under the ConfigMap cooldown lock, with the audit trail.

Real VictoriaMetrics, the API stand-in and the real app. Time is an injected clock shared by
the function and the stand-in, so 'after the cooldown' is 16 minutes later for both.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from rebalancer.cooldown import annotation_keys
from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import consumer_records_lag, cpu_usage, to_victoriametrics_import
from tests.samples import sample
from tests.standin.fixtures import seed_deployment

NS = "posthog"
FIRING = sample("alertmanager-0.25-firing-cpu-two-deployments.json")
LAST, INVOCATION, HISTORY = annotation_keys("ingestion-consumer")
RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]  # after the hot and cold pods go, 1.6 stands out among 0.5s


@pytest.fixture
def live(make_client, victoria_metrics, standin, clock):
    """Six skewed pods, 40 minutes of data ending now, the clock 20 minutes back, a live function."""
    now = aligned_now()
    clock.at(datetime.fromtimestamp(now - 1200, timezone.utc))
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6, now=clock())
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 2400, now)))

    def build(**overrides):
        return make_client(victoria_metrics.url, [target("ingestion-consumer", NS, **overrides)], env_rebalancer_dry_run="false")

    return pods, build


def decision(response):
    return next(d for d in response.get_json()["decisions"] if d["target"] == "ingestion-consumer")


def terminating(standin, pods):
    return sorted(p for p in pods if (standin.get("pods", NS, p) or {}).get("metadata", {}).get("deletionTimestamp"))


def state(standin):
    configmap = standin.get("configmaps", NS, "pod-rebalancer-state")
    return configmap["metadata"]["annotations"] if configmap else None


def events(standin, reason=None):
    return [e for e in standin.objects("events", NS) if reason is None or e["reason"] == reason]


def test_skewed_cpu_evicts_the_hottest_and_coldest_and_leaves_the_audit_trail(live, standin, clock):
    pods, build = live
    client = build()

    response = client.post("/", json=FIRING, headers=AUTH)

    body = decision(response)
    assert response.status_code == 200 and response.get_json()["outcome"] == "acted"
    assert body["outcome"] == "acted" and body["lock"] == "taken_by_this_invocation"
    assert body["actions"] == [{"pod": pods[4], "result": "evicted"}, {"pod": pods[0], "result": "evicted"}]
    assert terminating(standin, pods) == sorted([pods[0], pods[4]])
    assert [(r.verb, r.subresource, r.name) for r in standin.requests_for("create", "pods")] == [
        ("create", "eviction", pods[4]), ("create", "eviction", pods[0])]
    annotations = state(standin)
    assert annotations[LAST] == clock().isoformat().replace("+00:00", "Z")
    assert annotations[INVOCATION] == response.get_json()["invocation"]
    (entry,) = json.loads(annotations[HISTORY])
    assert entry["outcome"] == "acted" and entry["signal"] == "cpu" and entry["value"] == pytest.approx(body["verified"]["value"])
    assert [(p["pod"], p["role"], p["result"]) for p in entry["pods"]] == [(pods[4], "hot", "evicted"), (pods[0], "cold", "evicted")]
    rebalanced = events(standin, "Rebalanced")
    assert sorted(e["involvedObject"]["name"] for e in rebalanced) == sorted([pods[0], pods[4], "ingestion-consumer"])
    assert all(e["type"] == "Normal" and e["source"]["component"] == "pod-rebalancer" for e in rebalanced)
    assert body["cooldown_until"] == (clock() + timedelta(minutes=15)).isoformat().replace("+00:00", "Z")


def test_immediately_again_is_skipped_by_the_cooldown(live, standin):
    _, build = live
    client = build()
    client.post("/", json=FIRING, headers=AUTH)
    writes_before = len([r for r in standin.requests if r.verb in ("create", "patch", "update", "delete")])

    again = decision(client.post("/", json=FIRING, headers=AUTH))

    assert again["outcome"] == "skipped" and again["code"] == "cooldown"
    assert "in cooldown until" in again["reason"]
    assert len([r for r in standin.requests if r.verb in ("create", "patch", "update", "delete")]) == writes_before


def test_after_the_cooldown_it_acts_again(live, standin, clock):
    pods, build = live
    client = build()
    client.post("/", json=FIRING, headers=AUTH)

    clock.advance(minutes=16)  # the evicted pods' grace periods end; the cooldown is over
    second = decision(client.post("/", json=FIRING, headers=AUTH))

    assert second["outcome"] == "acted"
    # Four pods are left and min_pods is 3: only the next hot pod may go.
    assert [a["pod"] for a in second["actions"]] == [pods[5]]
    assert len(json.loads(state(standin)[HISTORY])) == 2


def test_budget_allowing_no_disruption_blocks_and_nothing_is_deleted(live, standin):
    pods, build = live
    standin.put({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                 "metadata": {"name": "consumer", "namespace": NS},
                 "spec": {"selector": {"matchLabels": {"app": "ingestion-consumer"}}, "maxUnavailable": 0}})
    client = build()

    response = client.post("/", json=FIRING, headers=AUTH)

    body = decision(response)
    assert response.status_code == 200 and response.get_json()["outcome"] == "blocked"
    assert [a["result"] for a in body["actions"]] == ["blocked", "blocked"]
    assert "The disruption budget consumer needs 6 healthy pods and has 6 currently" in body["actions"][0]["detail"]
    assert terminating(standin, pods) == []
    assert json.loads(state(standin)[HISTORY])[0]["outcome"] == "blocked"
    blocked = events(standin, "RebalanceBlocked")
    assert len(blocked) == 3 and all(e["type"] == "Warning" for e in blocked)


def test_delete_action_keeps_the_pods_own_grace_period(make_client, victoria_metrics, standin, clock):
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6, grace_seconds=45)
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)))
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", NS, action="delete")], env_rebalancer_dry_run="false")

    body = decision(client.post("/", json=FIRING, headers=AUTH))

    assert [a["result"] for a in body["actions"]] == ["deleted", "deleted"]
    for pod in (pods[4], pods[0]):
        assert standin.get("pods", NS, pod)["metadata"]["deletionGracePeriodSeconds"] == 45
    deletes = standin.requests_for("delete", "pods")
    assert len(deletes) == 2 and all("gracePeriodSeconds" not in r.query for r in deletes)


def test_one_eviction_failing_after_another_succeeded_is_all_recorded(live, standin):
    pods, build = live
    standin.fail("create", "pods", 500, subresource="eviction", name=pods[0])
    client = build()

    body = decision(client.post("/", json=FIRING, headers=AUTH))

    assert body["outcome"] == "acted"
    assert [(a["pod"], a["result"]) for a in body["actions"]] == [(pods[4], "evicted"), (pods[0], "failed")]
    (entry,) = json.loads(state(standin)[HISTORY])
    assert [(p["pod"], p["result"]) for p in entry["pods"]] == [(pods[4], "evicted"), (pods[0], "failed")]
    assert {e["involvedObject"]["name"] for e in events(standin, "RebalanceBlocked")} == {pods[0]}
    assert {e["involvedObject"]["name"] for e in events(standin, "Rebalanced")} == {pods[4], "ingestion-consumer"}


def test_failing_to_write_events_is_reported_and_the_history_still_holds_the_actions(live, standin):
    _, build = live
    standin.fail("create", "events", 503, times=10)
    client = build()

    body = decision(client.post("/", json=FIRING, headers=AUTH))

    assert body["outcome"] == "acted" and len(body["audit_errors"]) == 3
    assert json.loads(state(standin)[HISTORY])[0]["outcome"] == "acted"


def test_dry_run_evaluates_the_lock_and_writes_nothing(make_client, victoria_metrics, standin, clock):
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6)
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)))
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", NS)])

    body = decision(client.post("/", json=FIRING, headers=AUTH))

    assert body["outcome"] == "dry_run" and body["lock"] == "lock_free"
    assert "a live run would take it" in body["reason"]
    assert [r for r in standin.requests if r.verb in ("create", "update", "patch", "delete")] == []
    assert standin.requests_for("get", "configmaps")  # it did look


def test_dry_run_reports_a_cooldown_in_force(live, standin, make_client, victoria_metrics):
    _, build = live
    build().post("/", json=FIRING, headers=AUTH)  # a live action starts the cooldown
    dry = make_client(victoria_metrics.url, [target("ingestion-consumer", NS)])

    body = decision(dry.post("/", json=FIRING, headers=AUTH))

    assert body["outcome"] == "skipped" and body["code"] == "cooldown"


def test_unreadable_state_refuses_to_act(live, standin):
    pods, build = live
    standin.put({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "pod-rebalancer-state", "namespace": NS, "annotations": {HISTORY: "{not json"}}})
    body = decision(build().post("/", json=FIRING, headers=AUTH))
    assert body["outcome"] == "skipped" and body["code"] == "state_unreadable"
    assert terminating(standin, pods) == []


def test_rolling_out_deployment_is_left_alone(make_client, victoria_metrics, standin):
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6, status={
        "observedGeneration": 2, "replicas": 7, "updatedReplicas": 3, "readyReplicas": 6, "availableReplicas": 6})
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)))
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", NS)], env_rebalancer_dry_run="false")

    body = decision(client.post("/", json=FIRING, headers=AUTH))

    assert body["code"] == "rolling_out" and "3 of 6 replicas updated" in body["reason"]
    assert terminating(standin, pods) == []


def test_scaling_hpa_is_left_alone(live, standin):
    pods, build = live
    standin.put({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                 "metadata": {"name": "consumer", "namespace": NS},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ingestion-consumer"},
                          "minReplicas": 2, "maxReplicas": 20},
                 "status": {"currentReplicas": 6, "desiredReplicas": 9}})

    body = decision(build().post("/", json=FIRING, headers=AUTH))

    assert body["code"] == "hpa_scaling" and "6 -> 9 replicas" in body["reason"]
    assert terminating(standin, pods) == []


def test_metrics_count_each_action_by_result(live, standin):
    _, build = live
    client = build()
    client.post("/", json=FIRING, headers=AUTH)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'rebalancer_actions_total{result="evicted",signal="cpu",target="ingestion-consumer"} 2.0' in text


def test_losing_the_lock_stands_down_every_signal_of_the_target(make_client, victoria_metrics, standin):
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6)
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)
        + consumer_records_lag(NS, "ingestion-consumer", dict(zip(pods, [10, 20, 30, 40, 9000, 50], strict=True)), now - 1200, now)))
    both = target("ingestion-consumer", NS, signals={"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}})
    client = make_client(victoria_metrics.url, [both], env_rebalancer_dry_run="false")
    standin.fail("create", "configmaps", 409)  # another invocation created the state first

    body = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH).get_json()

    assert [(d["signal"], d["outcome"], d["code"]) for d in body["decisions"]] == [
        ("cpu", "skipped", "lock_taken"), ("lag", "skipped", "lock_taken")]
    assert terminating(standin, pods) == []
