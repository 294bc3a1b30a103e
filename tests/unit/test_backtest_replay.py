"""The backtest's replay and the hpa-mode configuration, without any server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from rebalancer.config import Target
from rebalancer.core.history import Backoff, EffectRules, Limits
from rebalancer.core.workload import Rules
from rebalancer.tools.backtest import Assumed, Judging, PartitionHistory, replay, step_times

START = datetime(2026, 11, 24, tzinfo=timezone.utc)
SKEWED = {"a": 0.1, "b": 0.5, "c": 0.5, "d": 0.5, "e": 1.9}
BALANCED = dict.fromkeys(SKEWED, 0.5)


def history(skewed_minutes: set[int], minutes: int = 180) -> dict[str, dict[float, float]]:
    by_pod: dict[str, dict[float, float]] = {pod: {} for pod in SKEWED}
    for minute in range(minutes):
        values = SKEWED if minute in skewed_minutes else BALANCED
        for pod, value in values.items():
            by_pod[pod][(START + timedelta(minutes=minute)).timestamp()] = value
    return by_pod


NO_BACKOFF = Backoff(after=1000)


def judging(rules: Rules, cooldown: timedelta, per_hour: int = 4, backoff: Backoff = NO_BACKOFF) -> Judging:
    return Judging(rules, Limits(cooldown, per_hour, backoff), EffectRules(cooldown, rules.threshold, 0.1))


def test_one_long_skew_is_acted_on_once_per_cooldown_and_held_in_between():
    times = step_times(START, START + timedelta(minutes=179), timedelta(minutes=1))
    steps = replay(history(set(range(10, 100))), times, "cpu", judging(Rules(threshold=0.3), timedelta(minutes=30)))

    assert [s.at - START for s in steps if s.acted] == [timedelta(minutes=m) for m in (10, 40, 70)]
    held = [s for s in steps if s.held_by == "cooldown"]
    assert len(held) == 90 - 3 and all(not s.acted for s in held)


def test_the_hourly_budget_is_simulated_like_the_live_lock():
    times = step_times(START, START + timedelta(minutes=179), timedelta(minutes=1))
    steps = replay(history(set(range(0, 180))), times, "cpu", judging(Rules(threshold=0.3), timedelta(minutes=5), 2))

    acted = [int((s.at - START).total_seconds() // 60) for s in steps if s.acted]
    assert acted == [0, 5, 60, 65, 120, 125]  # two per hour, then the budget holds until the hour is over
    assert {s.held_by for s in steps if not s.acted} == {"cooldown", "hourly_budget"}


def test_hpa_mode_replays_with_the_assumed_target_and_request():
    times = step_times(START, START + timedelta(minutes=20), timedelta(minutes=1))
    rules = Rules(threshold=0.0, mode="hpa", tolerance=1.5, top_k=1, min_pods=2)
    steps = replay(history(set(range(5, 10)), minutes=21), times, "cpu", judging(rules, timedelta(hours=1)),
                   Assumed(hpa_target_utilization=70, cpu_request=1.0))

    assert [s.at - START for s in steps if s.acted] == [timedelta(minutes=5)]  # 1.9 > 0.7 x 1.0 x 1.5
    assert steps[0].verdict.code == "below_threshold" and steps[0].verdict.threshold == pytest.approx(1.05)


def test_a_skew_that_outlasts_its_actions_backs_off_as_the_live_function_would():
    # Skewed for three hours; cooldown 15m: act, judged no_effect 15m later (the history cannot
    # see the action), act again, no_effect again: back off one hour from then, then two.
    times = step_times(START, START + timedelta(minutes=299), timedelta(minutes=1))
    rules = judging(Rules(threshold=0.3), timedelta(minutes=15), per_hour=10, backoff=Backoff(2, timedelta(hours=1)))

    steps = replay(history(set(range(0, 300)), minutes=300), times, "cpu", rules)

    acted = [int((s.at - START).total_seconds() // 60) for s in steps if s.acted]
    assert acted == [0, 15, 90, 225]  # 30 + 60; then judged at 105, two more: 105 + 120
    assert [e for s in steps for e in s.effects] == ["no_effect"] * 4
    assert steps[30].held_by == "ineffective" and steps[89].held_by == "ineffective"


def test_partition_lag_replays_at_partition_granularity():
    times = step_times(START, START + timedelta(minutes=2), timedelta(minutes=1))
    hot = {("p0", "events", "0"): 50_000.0, ("p0", "events", "1"): 100.0}
    others = {(f"p{i}", "events", str(2 * i + n)): 100.0 for i in range(1, 6) for n in range(2)}
    recorded = {key: {t.timestamp(): lag for t in times} for key, lag in {**hot, **others}.items()}

    steps = replay(recorded, times, "lag", judging(Rules(threshold=0.5, floor=500), timedelta(minutes=15)), by_partition=True)

    assert {s.verdict.code for s in steps} == {"hot_partition"} and {s.held_by for s in steps} == {"hot_partition"}


@pytest.mark.parametrize(("inflow", "code"), [(None, "skew_verified"), (700.0, "hot_partition"), (120.0, "skew_verified")])
def test_partition_inflow_is_replayed_so_a_hot_partition_is_told_from_a_slow_consumer(inflow, code):
    # One partition per pod, one far behind: without inflow it is moved; with its inflow far
    # above the others' it is a hot partition; with an ordinary inflow, a slow consumer.
    times = step_times(START, START + timedelta(minutes=2), timedelta(minutes=1))
    lag = {(f"p{i}", "events", str(i)): (3000.0 if i == 4 else 25.0) for i in range(6)}
    lag_history = {key: {t.timestamp(): value for t in times} for key, value in lag.items()}
    rates = None if inflow is None else {("events", str(i)): {t.timestamp(): (inflow if i == 4 else 100.0) for t in times}
                                         for i in range(6)}

    steps = replay(PartitionHistory(lag_history, rates), times, "lag", judging(Rules(threshold=0.5, floor=50), timedelta(minutes=15)))

    assert steps[0].verdict.code == code, steps[0].verdict.reason


def test_steps_fall_on_whole_multiples_of_the_step():
    times = step_times(START + timedelta(seconds=20), START + timedelta(minutes=3), timedelta(minutes=1))
    assert [t - START for t in times] == [timedelta(minutes=m) for m in (1, 2, 3)]


@pytest.mark.parametrize(("signals", "message"), [
    ({"cpu": {}}, "threshold: required in cv mode"),
    ({"cpu": {"mode": "hpa", "threshold": 0.3}}, "not used in hpa mode"),
    ({"lag": {"mode": "hpa"}}, "cpu only"),
    ({"cpu": {"mode": "hpa", "top_k": 0}}, "top_k"),
])
def test_hpa_mode_settings_are_checked(signals, message):
    with pytest.raises(ValidationError, match=message):
        Target(name="c", namespace="ns", deployment="c", signals=signals)


def test_the_replay_acts_only_inside_the_maintenance_windows():
    # Skewed all afternoon; the window opens at 14:00 UTC.
    from rebalancer.config import WindowSpec
    from rebalancer.core.windows import Schedule

    times = step_times(START + timedelta(hours=12), START + timedelta(hours=15), timedelta(minutes=1))
    window = WindowSpec(days=["tue"], start="14:00", end="24:00", timezone="UTC").window()  # START is a Tuesday
    skewed = {pod: {t.timestamp(): value for t in times} for pod, value in SKEWED.items()}
    base = judging(Rules(threshold=0.3), timedelta(minutes=30))
    steps = replay(skewed, times, "cpu", Judging(base.rules, base.limits, base.effects, Schedule((window,))))

    assert [s.at - START for s in steps if s.acted] == [timedelta(hours=14), timedelta(hours=14, minutes=30), timedelta(hours=15)]
    assert {s.held_by for s in steps if s.at - START < timedelta(hours=14)} == {"outside_window"}


def test_the_replay_applies_the_hysteresis_after_an_action():
    # A CV just above the threshold: acted on once, then held by the raised bar, not by the cooldown.
    times = step_times(START, START + timedelta(minutes=90), timedelta(minutes=1))
    near = {"a": 0.4, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.62}  # CV about 0.14
    recorded = {pod: {t.timestamp(): value for t in times} for pod, value in near.items()}
    rules = Rules(threshold=0.13, min_improvement=0.0)
    steps = replay(recorded, times, "cpu", judging(rules, timedelta(minutes=15)))

    assert sum(s.acted for s in steps) == 1
    assert {s.held_by for s in steps[16:]} == {"hysteresis"}


@pytest.mark.parametrize(("assignor", "code"), [("range", "no_improvement"), ("uniform", "skew_verified")])
def test_the_replay_projects_as_the_targets_assignor_does(assignor, code):
    # Three topics of five partitions over four consumers, as range leaves them: m0 holds six.
    # Evicting m0 cannot help under range (every topic's extra lands on one member again); under
    # uniform the replacement and the others end at 3, 4, 4, 4.
    times = step_times(START, START + timedelta(minutes=2), timedelta(minutes=1))
    held = {"m0": [(t, n) for t in "abc" for n in (0, 1)]} | {f"m{i}": [(t, i + 1) for t in "abc"] for i in (1, 2, 3)}
    recorded = {(pod, topic, str(n)): {t.timestamp(): 1000.0 for t in times} for pod, keys in held.items() for topic, n in keys}
    rules = Rules(threshold=0.3, floor=500, min_pods=3, assignor=assignor)

    steps = replay(recorded, times, "lag", judging(rules, timedelta(minutes=15)), by_partition=True)

    verdict = steps[0].verdict
    assert verdict.code == code, verdict.reason
    assert verdict.projected is not None and verdict.projected.model == assignor
    if assignor == "range":
        assert verdict.projected.worst == pytest.approx(verdict.stats.value)  # someone holds six again
        assert steps[0].held_by == "no_improvement"
    else:
        assert verdict.projected.worst == pytest.approx(0.1155, abs=1e-4)
