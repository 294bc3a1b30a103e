"""The decision core, rule by rule. Pure functions: no servers, no mocks, ``now`` passed in."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.core.policy import decide
from rebalancer.core.statistics import coefficient_of_variation, projected_cv
from rebalancer.core.workload import PodState, Rules

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(hours=2)


def pods(*names: str, **overrides) -> list[PodState]:
    return [PodState(name=n, ready=True, owned=True, created_at=OLD, **overrides) for n in names]


def values(**by_pod: float) -> dict[str, float]:
    return {k.replace("_", "-"): v for k, v in by_pod.items()}


RULES = Rules(threshold=0.3, min_pods=3, min_improvement=0.1)
SKEWED = {"p1": 0.2, "p2": 0.25, "p3": 0.3, "p4": 0.28, "p5": 1.9}
FIVE = pods("p1", "p2", "p3", "p4", "p5")


def test_cv_is_population_stddev_over_mean():
    stats = coefficient_of_variation([1.0, 2.0, 3.0, 4.0])
    assert stats.mean == 2.5
    assert stats.stddev == pytest.approx(math.sqrt(1.25))  # population, not sample (which is 1.29)
    assert stats.value == pytest.approx(math.sqrt(1.25) / 2.5)
    assert stats.pods == 4


def test_skew_above_threshold_selects_the_hottest_and_the_coldest_pod():
    verdict = decide("cpu", FIVE, SKEWED, RULES, NOW)
    assert verdict.act and verdict.code == "skew_verified"
    assert [(s.pod, s.role) for s in verdict.selected] == [("p5", "hot"), ("p1", "cold")]
    assert verdict.stats.value == pytest.approx(coefficient_of_variation(list(SKEWED.values())).value)
    assert (verdict.hot.pod, verdict.cold.pod) == ("p5", "p1")
    assert "p5 (hot, 1.9)" in verdict.reason and "exceeds the threshold 0.3" in verdict.reason


def test_hottest_selection_takes_the_top_pods_by_value():
    verdict = decide("cpu", FIVE, SKEWED, Rules(threshold=0.3, selection="hottest"), NOW)
    assert [(s.pod, s.role) for s in verdict.selected] == [("p5", "hot"), ("p3", "hot")]


def test_cv_at_or_below_threshold_is_skipped_as_stale():
    balanced = {"p1": 1.0, "p2": 1.1, "p3": 0.9, "p4": 1.0, "p5": 1.05}
    verdict = decide("cpu", FIVE, balanced, RULES, NOW)
    assert not verdict.act and verdict.code == "below_threshold"
    assert "not above the threshold" in verdict.reason
    assert verdict.stats.pods == 5  # the numbers are reported even when nothing happens


def test_cv_exactly_at_threshold_does_not_act():
    two_values = {"p1": 1.0, "p2": 1.0, "p3": 1.0, "p4": 3.0}  # CV = 0.8660254
    cv = coefficient_of_variation(list(two_values.values())).value
    verdict = decide("cpu", pods("p1", "p2", "p3", "p4"), two_values, Rules(threshold=cv, min_pods=2), NOW)
    assert verdict.code == "below_threshold"


def test_too_many_pods_without_data_is_skipped_as_incomplete():
    data = {"p1": 0.2, "p2": 0.3, "p5": 1.9}  # 2 of 5 missing = 40% > 20%
    verdict = decide("cpu", FIVE, data, RULES, NOW)
    assert not verdict.act and verdict.code == "incomplete_data"
    assert verdict.missing == ("p3", "p4")


def test_replacement_pods_without_data_yet_are_starting_not_missing():
    young = [PodState(name=n, ready=True, owned=True, created_at=NOW - timedelta(seconds=20)) for n in ("p6", "p7")]
    verdict = decide("cpu", FIVE + young, dict(SKEWED), RULES, NOW)  # 2 of 7 without data, both seconds old
    assert verdict.act and verdict.missing == ()
    assert [(note.pod, note.why) for note in verdict.ignored] == [
        ("p6", "starting: no value yet, younger than min_pod_age"), ("p7", "starting: no value yet, younger than min_pod_age")]
    assert {pod.pod for pod in verdict.selected}.isdisjoint({"p6", "p7"})


def test_a_pod_old_enough_to_report_counts_as_missing_even_when_just_past_min_pod_age():
    just_old = PodState(name="p6", ready=True, owned=True, created_at=NOW - RULES.min_pod_age)
    verdict = decide("cpu", [*FIVE, just_old], dict(SKEWED), Rules(threshold=0.3, min_pods=3, max_missing_fraction=0.0), NOW)
    assert verdict.code == "incomplete_data" and verdict.missing == ("p6",)


def test_missing_pods_within_the_allowance_are_listed_and_the_rest_decides():
    data = dict(SKEWED)
    del data["p3"]  # 1 of 5 = 20%: not more than the default
    verdict = decide("cpu", FIVE, data, RULES, NOW)
    assert verdict.act and verdict.missing == ("p3",)
    assert verdict.stats.pods == 4


def test_non_finite_and_negative_values_count_as_unusable():
    data = {"p1": float("nan"), "p2": float("inf"), "p3": -1.0, "p4": 0.3, "p5": 1.9}
    verdict = decide("lag", FIVE, data, RULES, NOW)
    assert verdict.code == "incomplete_data"
    assert {n.pod for n in verdict.invalid} == {"p1", "p2", "p3"}


def test_pods_that_are_not_ready_terminating_or_foreign_are_not_counted():
    counted = pods("p1", "p2", "p3", "p4", "p5")
    others = [
        PodState("unready", ready=False, owned=True, created_at=OLD),
        PodState("leaving", ready=True, owned=True, created_at=OLD, terminating=True),
        PodState("stray", ready=True, owned=False, created_at=OLD),
        PodState("pending", ready=False, owned=True, created_at=OLD, phase="Pending"),
    ]
    data = {**SKEWED, "unready": 99.0, "leaving": 99.0, "stray": 99.0, "pending": 99.0}
    verdict = decide("cpu", counted + others, data, RULES, NOW)
    assert verdict.stats.pods == 5 and verdict.hot.pod == "p5"
    assert {n.pod: n.why for n in verdict.ignored} == {
        "unready": "not Ready",
        "leaving": "terminating",
        "stray": "not owned by the Deployment (matched its selector only)",
        "pending": "phase Pending",
    }


def test_no_ready_pods_is_skipped():
    verdict = decide("cpu", [PodState("p1", ready=False, owned=True, created_at=OLD)], {}, RULES, NOW)
    assert verdict.code == "no_ready_pods"


def test_all_idle_pods_are_skipped_instead_of_dividing_by_zero():
    verdict = decide("lag", FIVE, dict.fromkeys(SKEWED, 0.0), RULES, NOW)
    assert verdict.code == "idle" and verdict.stats is None


def test_a_single_pod_with_data_cannot_have_variance():
    verdict = decide("cpu", pods("p1"), {"p1": 1.0}, Rules(threshold=0.3, min_pods=2, max_missing_fraction=0.0), NOW)
    assert verdict.code == "too_few_pods"


def test_never_below_min_pods_ready_afterwards():
    three = pods("p1", "p2", "p3")
    verdict = decide("cpu", three, {"p1": 0.1, "p2": 0.2, "p3": 2.0}, Rules(threshold=0.3, min_pods=3), NOW)
    assert verdict.code == "min_pods" and not verdict.selected


def test_min_pods_limits_how_many_are_selected():
    four = pods("p1", "p2", "p3", "p4")
    data = {"p1": 0.1, "p2": 0.5, "p3": 0.5, "p4": 2.0}
    verdict = decide("cpu", four, data, Rules(threshold=0.3, min_pods=3), NOW)
    assert [s.pod for s in verdict.selected] == ["p4"]  # only one may go: the hot one


def test_max_pods_per_action_limits_the_selection():
    verdict = decide("cpu", FIVE, SKEWED, Rules(threshold=0.3, max_pods_per_action=1), NOW)
    assert [s.pod for s in verdict.selected] == ["p5"]


def test_pod_younger_than_min_pod_age_is_never_selected():
    young = [*pods("p2", "p3", "p4", "p5"), PodState("p1", ready=True, owned=True, created_at=NOW - timedelta(minutes=3))]
    verdict = decide("cpu", young, SKEWED, RULES, NOW)
    assert "p1" not in [s.pod for s in verdict.selected]
    assert verdict.cold.pod == "p1"  # it is still the coldest, and the answer says so
    assert verdict.passed_over[0].pod == "p1" and "younger than min_pod_age" in verdict.passed_over[0].why


def test_pod_created_ahead_of_the_functions_clock_is_taken_as_starting_even_without_a_min_pod_age():
    ahead = [*pods("p2", "p3", "p4", "p5"), PodState("p1", ready=True, owned=True, created_at=NOW + timedelta(seconds=4))]
    verdict = decide("cpu", ahead, SKEWED, Rules(threshold=0.3, min_pod_age=timedelta(0)), NOW)
    assert "p1" not in [s.pod for s in verdict.selected] and verdict.cold.pod == "p1"
    assert verdict.passed_over[0].pod == "p1"
    assert verdict.passed_over[0].why == ("created 4s ahead of the function's clock (the API server's clock is ahead): "
                                          "taken as starting")


def test_pod_annotated_exclude_is_never_selected():
    excluded = [*pods("p1", "p2", "p3", "p4"), PodState("p5", ready=True, owned=True, created_at=OLD, excluded=True)]
    verdict = decide("cpu", excluded, SKEWED, RULES, NOW)
    assert "p5" not in [s.pod for s in verdict.selected]


def test_no_selectable_pod_is_skipped_with_that_reason():
    young = [PodState(f"p{i}", ready=True, owned=True, created_at=NOW) for i in range(1, 6)]
    verdict = decide("cpu", young, SKEWED, RULES, NOW)
    assert verdict.code == "no_candidates"


def test_selection_too_small_to_help_is_skipped_by_the_minimum_improvement_check():
    # Two high pods among many: moving one of them barely changes the spread.
    many = pods(*[f"p{i}" for i in range(10)])
    data = {f"p{i}": 1.0 for i in range(8)} | {"p8": 3.0, "p9": 3.0}
    verdict = decide("cpu", many, data, Rules(threshold=0.3, max_pods_per_action=1, min_improvement=0.5), NOW)
    assert verdict.code == "no_improvement"
    assert verdict.projected_cv is not None and verdict.projected_cv > verdict.stats.value * 0.5


def test_projection_spreads_the_removed_load_evenly():
    assert projected_cv({"a": 1.0, "b": 1.0, "c": 4.0}, ["c"]) == 0.0
    after = projected_cv({"a": 1.0, "b": 3.0, "c": 2.0}, ["c"])  # a=2, b=4
    assert after == pytest.approx(coefficient_of_variation([2.0, 4.0]).value)


def test_same_data_always_selects_the_same_pods():
    tied = {"p1": 1.0, "p2": 1.0, "p3": 1.0, "p4": 5.0, "p5": 5.0}
    first = decide("cpu", FIVE, tied, RULES, NOW)
    assert [s.pod for s in first.selected] == [s.pod for s in decide("cpu", list(reversed(FIVE)), tied, RULES, NOW).selected]


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=3, max_size=40))
def test_selection_never_leaves_fewer_than_min_pods(data_values):
    names = [f"p{i}" for i in range(len(data_values))]
    verdict = decide("cpu", pods(*names), dict(zip(names, data_values, strict=True)), Rules(threshold=0.01, min_pods=3), NOW)
    assert len(names) - len(verdict.selected) >= 3 or not verdict.selected
    if verdict.act:
        assert verdict.stats.value > 0.01 and verdict.projected_cv < verdict.stats.value
