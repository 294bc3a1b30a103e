"""Safety guards and the cooldown, each the only reason nothing happens. Pure: ``now`` passed in."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from rebalancer.cooldown import annotation_keys, decode_state, encode_finished, encode_lock
from rebalancer.core.history import ActionRecord, Limits, TargetState, check_cooldown, mark_abandoned
from rebalancer.core.policy import decide
from rebalancer.core.workload import PodState, Rules, WorkloadStatus
from rebalancer.errors import StateError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(hours=2)
SKEWED = {"p1": 0.1, "p2": 0.5, "p3": 0.5, "p4": 0.5, "p5": 1.9, "p6": 1.6}
RULES = Rules(threshold=0.3)
STEADY = WorkloadStatus(replicas=6, generation=3, observed_generation=3, updated_replicas=6, available_replicas=6)


def pods(**overrides_by_pod) -> list[PodState]:
    return [PodState(**{"name": name, "ready": True, "owned": True, "created_at": OLD, **overrides_by_pod.get(name, {})})
            for name in SKEWED]


def test_the_baseline_acts():
    assert decide("cpu", pods(), SKEWED, RULES, NOW, workload=STEADY).act


@pytest.mark.parametrize(
    ("workload", "fragment"),
    [
        (WorkloadStatus(replicas=6, generation=4, observed_generation=3, updated_replicas=6, available_replicas=6), "observedGeneration 3 < generation 4"),
        (WorkloadStatus(replicas=6, generation=3, observed_generation=3, updated_replicas=2, available_replicas=6), "2 of 6 replicas updated"),
        (WorkloadStatus(replicas=6, generation=3, observed_generation=3, updated_replicas=6, available_replicas=5), "5 of 6 replicas available"),
    ],
)
def test_rolling_out_deployment_is_the_only_reason_nothing_happens(workload, fragment):
    verdict = decide("cpu", pods(), SKEWED, RULES, NOW, workload=workload)
    assert not verdict.act and verdict.code == "rolling_out" and fragment in verdict.reason


def test_scaling_hpa_is_the_only_reason_nothing_happens():
    scaling = WorkloadStatus(**{**STEADY.__dict__, "hpa_name": "consumer", "hpa_current_replicas": 6, "hpa_desired_replicas": 8})
    verdict = decide("cpu", pods(), SKEWED, RULES, NOW, workload=scaling)
    assert verdict.code == "hpa_scaling" and "6 -> 8" in verdict.reason


def test_settled_hpa_does_not_block():
    settled = WorkloadStatus(**{**STEADY.__dict__, "hpa_name": "consumer", "hpa_current_replicas": 6, "hpa_desired_replicas": 6})
    assert decide("cpu", pods(), SKEWED, RULES, NOW, workload=settled).act


def test_too_many_unready_pods_is_the_only_reason_nothing_happens():
    many_unready = [*pods(), *(PodState(f"u{i}", ready=False, owned=True, created_at=OLD) for i in range(2))]
    verdict = decide("cpu", many_unready, SKEWED, RULES, NOW, workload=STEADY)  # 2 of 8 = 25% > 20%
    assert verdict.code == "too_many_unready" and "2 of 8 pods" in verdict.reason


def test_an_unready_outlier_is_never_touched():
    # The hottest pods are not Ready: they are left out, and among the rest there is no skew.
    verdict = decide("cpu", pods(p5={"ready": False}, p6={"ready": False}, p1={"ready": True}),
                     {**SKEWED, "p1": 0.5}, Rules(threshold=0.3, max_unready_fraction=0.5), NOW, workload=STEADY)
    assert verdict.code == "below_threshold" and {n.pod for n in verdict.ignored} == {"p5", "p6"}


def test_a_terminating_or_pending_pod_is_never_touched():
    verdict = decide("cpu", pods(p5={"terminating": True}, p1={"phase": "Pending", "ready": False}), SKEWED,
                     Rules(threshold=0.3, max_unready_fraction=0.5), NOW, workload=STEADY)
    assert all(s.pod not in ("p5", "p1") for s in verdict.selected)


# -- the cooldown and the hourly budget ---------------------------------------------------------------

def record(minutes_ago: float, outcome: str = "acted") -> ActionRecord:
    return ActionRecord(at=NOW - timedelta(minutes=minutes_ago), invocation=f"inv{minutes_ago}", signal="cpu", outcome=outcome)


def test_no_state_means_the_lock_is_free_and_the_cooldown_would_start_now():
    check = check_cooldown(TargetState(), NOW, Limits(timedelta(minutes=15), 4))
    assert check.allowed and check.cooldown_until == NOW + timedelta(minutes=15)


def test_pod_in_cooldown_is_not_acted_on():
    check = check_cooldown(TargetState(last_action=NOW - timedelta(minutes=14), invocation="a"), NOW, Limits(timedelta(minutes=15), 4))
    assert not check.allowed and check.code == "cooldown" and check.cooldown_until == NOW + timedelta(minutes=1)


def test_cooldown_ends_exactly_at_its_end():
    check = check_cooldown(TargetState(last_action=NOW - timedelta(minutes=15)), NOW, Limits(timedelta(minutes=15), 4))
    assert check.allowed


def test_hourly_budget_counts_every_attempt_in_the_last_hour():
    history = (record(61), record(50), record(40, "blocked"), record(30), record(20))
    check = check_cooldown(TargetState(last_action=NOW - timedelta(minutes=20), history=history), NOW, Limits(timedelta(minutes=5), 4))
    assert not check.allowed and check.code == "hourly_budget"
    assert check.cooldown_until == NOW - timedelta(minutes=50) + timedelta(hours=1)


# -- the annotations ----------------------------------------------------------------------------------

def test_lock_annotations_round_trip_and_history_is_bounded():
    state = TargetState(history=tuple(record(m) for m in (90, 80, 70)))
    entry = ActionRecord(at=NOW, invocation="now", signal="lag", outcome="in_progress", value=1.5, threshold=0.5,
                         pods=({"pod": "p5", "role": "hot", "value": 1.9},))
    annotations = encode_lock("consumer", state, entry, history_limit=3)
    decoded = decode_state(annotations, "consumer")
    assert decoded.last_action == NOW and decoded.invocation == "now"
    assert [r.invocation for r in decoded.history] == ["inv80", "inv70", "now"]
    done = ActionRecord(**{**entry.__dict__, "outcome": "acted", "pods": ({"pod": "p5", "role": "hot", "value": 1.9, "result": "evicted"},)})
    finished = decode_state({**annotations, **encode_finished("consumer", decoded, done, history_limit=3)}, "consumer")
    assert finished.history[-1].outcome == "acted" and len(finished.history) == 3


def test_keys_are_valid_annotation_keys_per_target():
    last, invocation, history = annotation_keys("ingestion-consumer")
    assert last == "ingestion-consumer.pod-rebalancer.io/last-action"
    assert invocation.endswith("/invocation") and history.endswith("/history")


@pytest.mark.parametrize("broken", [{"consumer.pod-rebalancer.io/history": "{"},
                                    {"consumer.pod-rebalancer.io/last-action": "yesterday"},
                                    {"consumer.pod-rebalancer.io/history": json.dumps([{"no": "at"}])}])
def test_unreadable_state_is_refused_not_guessed(broken):
    with pytest.raises(StateError, match="cannot be read"):
        decode_state(broken, "consumer")


def test_other_targets_annotations_are_not_this_targets_state():
    annotations = encode_lock("other", TargetState(), record(1), history_limit=5)
    assert decode_state(annotations, "consumer") == TargetState()


def test_an_action_still_in_progress_a_cooldown_later_is_abandoned_and_not_before():
    started = NOW - timedelta(minutes=15)
    dead = ActionRecord(at=started, invocation="dead", signal="cpu", outcome="in_progress")
    done = ActionRecord(at=started - timedelta(hours=1), invocation="old", signal="cpu", outcome="acted")
    state = TargetState(last_action=started, invocation="dead", history=(done, dead))

    unchanged, none = mark_abandoned(state, NOW - timedelta(microseconds=1), timedelta(minutes=15))
    marked, found = mark_abandoned(state, NOW, timedelta(minutes=15))

    assert none == () and unchanged == state
    assert [r.invocation for r in found] == ["dead"]
    assert [(r.invocation, r.outcome) for r in marked.history] == [("old", "acted"), ("dead", "abandoned")]
    # It may have moved pods: within its hour it still counts toward max_actions_per_hour.
    assert check_cooldown(marked, NOW, Limits(timedelta(minutes=15), 1)).code == "hourly_budget"
