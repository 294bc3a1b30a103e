"""The closed loop in the pure core: an action's effect once it settled, and the back-off after
actions that did not lower the skew, each rule at its boundary."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from rebalancer.cooldown import decode_state, encode_history
from rebalancer.core.history import (
    ActionRecord,
    Backoff,
    EffectRules,
    Hysteresis,
    Limits,
    TargetState,
    backoff_until,
    check_cooldown,
    check_hysteresis,
    ineffective_streak,
    judge_effect,
    record_effects,
)
from rebalancer.core.policy import decide, measured_skew
from rebalancer.core.workload import PodState, Rules

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
RULES = EffectRules(settle=timedelta(minutes=15), threshold=0.3, margin=0.1)
LIMITS = Limits(timedelta(minutes=15), max_actions_per_hour=10, backoff=Backoff(2, timedelta(hours=1), timedelta(hours=5)))


def acted(at: datetime, value: float = 0.8, signal: str = "cpu", **more) -> ActionRecord:
    return ActionRecord(at=at, invocation=f"inv-{at:%H%M}", signal=signal, outcome=more.pop("outcome", "acted"),
                        value=value, threshold=0.3, **more)


def judged(at: datetime, effect: str, value_after: float = 0.8) -> ActionRecord:
    return acted(at, effect=effect, value_after=value_after, effect_at=at + timedelta(minutes=16))


@pytest.mark.parametrize(("after", "effect"), [
    (0.375, "improved"),  # exactly min_improvement (here 25 %) better (numbers exact in binary)
    (0.3751, "no_effect"),
    (0.6249, "no_effect"),
    (0.625, "worse"),  # exactly as much worse
    (0.2, "improved"),  # back at the threshold: the skew is gone
])
def test_an_effect_is_judged_against_min_improvement(after, effect):
    rules = EffectRules(settle=timedelta(minutes=15), threshold=0.2, margin=0.25)
    assert judge_effect(0.5, after, rules) == effect


def test_a_skew_that_is_gone_altogether_is_an_improvement_whatever_the_cv_of_what_is_left():
    # On a real group the lag drains to a few messages: their CV is noise, the action worked.
    rules = EffectRules(settle=timedelta(minutes=15), threshold=0.2, margin=0.25)
    assert judge_effect(0.5, 1.4, rules, gone=True) == "improved"
    assert judge_effect(0.5, 1.4, rules) == "worse"


@pytest.mark.parametrize(("samples", "expected"), [
    ({"p1": 0.0, "p2": 0.0, "p3": 0.0, "p4": 0.0}, (0.0, True)),  # idle: every pod reads 0
    ({"p1": 3.0, "p2": 0.0, "p3": 0.0, "p4": 1.0}, (pytest.approx(1.2247, abs=1e-4), True)),  # below the floor
    ({"p1": 3000.0, "p2": 0.0, "p3": 0.0, "p4": 1000.0}, (pytest.approx(1.2247, abs=1e-4), False)),
])
def test_the_closed_loop_reads_the_skew_as_gone_when_idle_or_below_the_floor(samples, expected):
    pods = [PodState(name=n, ready=True, owned=True, created_at=NOW - timedelta(hours=1)) for n in samples]
    verdict = decide("lag", pods, samples, Rules(threshold=0.5, floor=500, min_pods=2), NOW)
    assert measured_skew(verdict) == expected


def test_nothing_is_judged_when_nothing_could_be_measured():
    pods = [PodState(name=n, ready=False, owned=True) for n in ("p1", "p2")]
    assert measured_skew(decide("lag", pods, {}, Rules(threshold=0.5), NOW)) is None


def test_an_action_is_judged_only_once_its_settle_time_has_passed():
    state = TargetState(history=(acted(NOW - timedelta(minutes=15)),))

    _, early = record_effects(state, "cpu", NOW - timedelta(seconds=1), 0.79, RULES)
    new_state, judged_now = record_effects(state, "cpu", NOW, 0.79, RULES)

    assert early == ()
    (record,) = judged_now
    assert (record.effect, record.value_after, record.effect_at) == ("no_effect", 0.79, NOW)
    assert new_state.history == (record,)
    assert record_effects(new_state, "cpu", NOW + timedelta(hours=1), 0.1, RULES)[1] == ()  # judged once


def test_only_acted_entries_of_the_same_signal_are_judged():
    state = TargetState(history=(acted(NOW - timedelta(hours=1), outcome="blocked"),
                                 acted(NOW - timedelta(minutes=50), signal="lag"),
                                 acted(NOW - timedelta(minutes=40), outcome="abandoned")))
    assert record_effects(state, "cpu", NOW, 0.8, RULES)[1] == ()


def test_one_ineffective_action_does_not_back_off():
    state = TargetState(last_action=NOW - timedelta(hours=1), history=(judged(NOW - timedelta(hours=1), "no_effect"),))
    assert check_cooldown(state, NOW, LIMITS).allowed


def test_two_ineffective_actions_in_a_row_back_off_for_the_base_wait():
    first, second = NOW - timedelta(minutes=40), NOW - timedelta(minutes=20)
    state = TargetState(last_action=second, history=(judged(first, "no_effect", 0.79), judged(second, "worse", 0.9)))

    check = check_cooldown(state, NOW, LIMITS)

    assert not check.allowed and check.code == "ineffective"
    assert check.cooldown_until == second + timedelta(minutes=16) + timedelta(hours=1)  # from when it was judged
    assert "the last 2 actions did not lower the skew" in check.reason
    assert "cpu CV 0.8 -> 0.79 (no_effect)" in check.reason and "cpu CV 0.8 -> 0.9 (worse)" in check.reason
    assert "a wait of 1h" in check.reason
    assert check_cooldown(state, check.cooldown_until, LIMITS).allowed  # and not a second longer


@pytest.mark.parametrize(("streak", "wait"), [(2, 1), (3, 2), (4, 4), (5, 5), (9, 5)])  # hours; the cap is 5h
def test_the_wait_doubles_with_each_further_ineffective_action_up_to_the_cap(streak, wait):
    times = [NOW - timedelta(hours=10) + timedelta(minutes=30 * i) for i in range(streak)]
    state = TargetState(history=tuple(judged(t, "no_effect") for t in times))
    assert backoff_until(state, LIMITS.backoff) == times[-1] + timedelta(minutes=16) + timedelta(hours=wait)


def test_one_effective_action_resets_the_back_off():
    times = [NOW - timedelta(hours=3) + timedelta(minutes=30 * i) for i in range(4)]
    state = TargetState(history=(judged(times[0], "no_effect"), judged(times[1], "no_effect"),
                                 judged(times[2], "no_effect"), judged(times[3], "improved", 0.2)))
    assert ineffective_streak(state) == ()
    assert backoff_until(state, LIMITS.backoff) is None


def test_an_action_not_yet_judged_neither_counts_nor_resets():
    first, second, third = (NOW - timedelta(minutes=m) for m in (50, 30, 10))
    state = TargetState(history=(judged(first, "no_effect"), judged(second, "no_effect"), acted(third)))
    assert len(ineffective_streak(state)) == 2


def test_the_cooldown_is_reported_before_the_back_off():
    last = NOW - timedelta(minutes=5)
    state = TargetState(last_action=last, history=(judged(NOW - timedelta(minutes=40), "no_effect"), judged(last, "no_effect")))
    assert check_cooldown(state, NOW, LIMITS).code == "cooldown"


def test_effects_survive_the_state_annotation():
    record = judged(NOW - timedelta(minutes=20), "worse", 0.91)
    state = TargetState(history=(acted(NOW - timedelta(hours=1)), record))

    decoded = decode_state(encode_history("consumer", state, history_limit=20), "consumer")

    assert decoded.history == state.history
    assert replace(decoded.history[1], effect=None) != record


def test_an_unknown_effect_in_the_annotation_is_unreadable_state():
    from rebalancer.cooldown import annotation_keys
    from rebalancer.errors import StateError

    _, _, history_key = annotation_keys("consumer")
    raw = '[{"at": "2026-11-25T11:00:00Z", "invocation": "x", "signal": "cpu", "outcome": "acted", "effect": "great"}]'
    with pytest.raises(StateError):
        decode_state({history_key: raw}, "consumer")


HYSTERESIS = Hysteresis(margin=0.25, period=timedelta(hours=6))  # a bar of 0.375 over a threshold of 0.3 (exact in binary)


@pytest.mark.parametrize(("cv", "allowed"), [(0.375, False), (0.3751, True)])
def test_after_an_action_the_cv_must_clear_the_threshold_by_the_hysteresis_margin(cv, allowed):
    state = TargetState(last_action=NOW - timedelta(hours=1), history=(acted(NOW - timedelta(hours=1)),))

    check = check_hysteresis(state, NOW, cv, 0.3, HYSTERESIS)

    assert (check is None) == allowed
    if check is not None:
        assert check.code == "hysteresis" and "needs the CV above 0.375" in check.reason and "it is 0.375" in check.reason
        assert check.cooldown_until == NOW + timedelta(hours=5)


@pytest.mark.parametrize(("since", "applies"), [(timedelta(hours=6) - timedelta(seconds=1), True), (timedelta(hours=6), False)])
def test_the_raised_bar_lasts_the_hysteresis_period(since, applies):
    state = TargetState(last_action=NOW - since, history=(acted(NOW - since),))
    assert (check_hysteresis(state, NOW, 0.35, 0.3, HYSTERESIS) is not None) == applies


def test_a_target_that_never_acted_needs_only_the_threshold():
    assert check_hysteresis(TargetState(), NOW, 0.31, 0.3, HYSTERESIS) is None
    assert check_hysteresis(TargetState(last_action=NOW), NOW, 0.31, 0.3, Hysteresis(margin=0.0)) is None
