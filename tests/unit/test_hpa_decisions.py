"""hpa mode, on PostHog's pod-rebalancer's own test cases (pkg/decision/engine_test.go).

Their tests hand the engine only the top and bottom pods; a real Deployment has others in
between, and here it has them, so that ``min_pods`` leaves room for all K on each side."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rebalancer.core.policy import decide
from rebalancer.core.workload import PodState, Rules, WorkloadStatus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def deployment(values: dict[str, float], request: float = 1.0, **pod_overrides) -> list[PodState]:
    return [PodState(name=n, ready=True, owned=True, created_at=NOW - timedelta(hours=2), cpu_request=request,
                     **pod_overrides) for n in values]


def hpa(utilization: float | None = 70, count: int = 1) -> WorkloadStatus:
    return WorkloadStatus(replicas=0, hpa_name="consumer", hpa_count=count, hpa_cpu_target_utilization=utilization)


def hpa_rules(**overrides) -> Rules:
    return Rules(threshold=0.0, mode="hpa", **{"tolerance": 1.5, "top_k": 2, "min_improvement": 0.10, "min_pods": 3, **overrides})


def roles(verdict) -> dict[str, list[str]]:
    return {role: sorted(s.pod for s in verdict.selected if s.role == role) for role in ("hot", "cold")}


# Their first case: HPA target 70 % of a 1-core request, tolerance 1.5 -> hot above 1.05 cores.
FIRST = {"high-1": 1.2, "high-2": 1.1, "mid-1": 0.8, "mid-2": 0.6, "mid-3": 0.6, "low-1": 0.3, "low-2": 0.4}


def test_pods_above_target_times_tolerance_are_moved_with_the_idlest_when_it_improves_enough():
    verdict = decide("cpu", deployment(FIRST), FIRST, hpa_rules(), NOW, hpa())

    assert verdict.act and verdict.code == "skew_verified"
    assert roles(verdict) == {"hot": ["high-1", "high-2"], "cold": ["low-1", "low-2"]}
    assert verdict.threshold == pytest.approx(1.05)  # 70 % x 1.0 core x 1.5
    assert verdict.extra["improvement"] == pytest.approx(0.348, abs=0.001)  # (1.15 - 0.75) / 1.15, their 34.8 %


def test_a_small_improvement_is_not_enough_at_ten_percent():
    # Their second case: top {0.9, 0.85}, bottom {0.8, 0.75}: 5.7 %. The HPA target here (50 %)
    # puts the hot line at 0.75, so both top pods are above it, as in their test.
    close = {"p-1": 0.9, "p-2": 0.85, "mid-1": 0.82, "mid-2": 0.81, "mid-3": 0.81, "p-3": 0.8, "p-4": 0.75}
    verdict = decide("cpu", deployment(close), close, hpa_rules(), NOW, hpa(utilization=50))

    assert not verdict.act and verdict.code == "no_improvement"
    assert verdict.extra["improvement"] == pytest.approx(0.057, abs=0.001)
    assert "5.7% better" in verdict.reason


def test_three_a_side_with_tolerance_two_and_a_twenty_percent_minimum():
    wide = {"pod-1": 2.5, "pod-2": 2.4, "pod-3": 2.3, "mid-1": 1.2, "mid-2": 1.0, "mid-3": 0.9, "pod-4": 0.5,
            "pod-5": 0.6, "pod-6": 0.7}
    verdict = decide("cpu", deployment(wide), wide, hpa_rules(tolerance=2.0, top_k=3, min_improvement=0.20), NOW, hpa())

    assert verdict.act
    assert roles(verdict) == {"hot": ["pod-1", "pod-2", "pod-3"], "cold": ["pod-4", "pod-5", "pod-6"]}
    assert verdict.extra["improvement"] == pytest.approx(0.375)  # (2.4 - 1.5) / 2.4, their 37.5 %


def test_no_pod_above_the_line_means_no_skew():
    calm = {"a": 1.0, "b": 0.9, "c": 0.8, "d": 0.7}
    verdict = decide("cpu", deployment(calm), calm, hpa_rules(), NOW, hpa())
    assert not verdict.act and verdict.code == "below_threshold"
    assert "1.05 cores" in verdict.reason


@pytest.mark.parametrize(("workload", "pods_request", "why"), [
    (None, 1.0, "no HorizontalPodAutoscaler"),
    (hpa(count=0), 1.0, "no HorizontalPodAutoscaler"),
    (hpa(count=2), 1.0, "2 HorizontalPodAutoscalers target the Deployment"),
    (hpa(utilization=None), 1.0, "no CPU utilization target"),
    (hpa(), None, "requests CPU"),
])
def test_without_one_unambiguous_hpa_target_and_requests_hpa_mode_does_not_guess(workload, pods_request, why):
    verdict = decide("cpu", deployment(FIRST, request=pods_request), FIRST, hpa_rules(), NOW, workload)
    assert not verdict.act and verdict.code == "no_hpa_target"
    assert why in verdict.reason


def test_min_pods_still_bounds_how_many_pods_hpa_mode_moves():
    verdict = decide("cpu", deployment(FIRST), FIRST, hpa_rules(min_pods=5), NOW, hpa())
    assert len(verdict.selected) == 2  # 7 Ready pods, at least 5 stay
    assert roles(verdict) == {"hot": ["high-1", "high-2"], "cold": []}


def test_a_hot_pod_younger_than_min_pod_age_is_never_selected_in_hpa_mode():
    pods = deployment(FIRST)
    pods[0] = PodState(name="high-1", ready=True, owned=True, created_at=NOW - timedelta(minutes=1), cpu_request=1.0)
    verdict = decide("cpu", pods, FIRST, hpa_rules(), NOW, hpa())
    assert "high-1" not in [s.pod for s in verdict.selected]
    assert [n.pod for n in verdict.passed_over] == ["high-1"]


@pytest.mark.parametrize("mode", ["cv", "hpa"])
def test_an_improvement_exactly_at_min_improvement_acts_and_a_hair_above_it_does_not(mode):
    """One rule in both modes: the projected improvement must be at least min_improvement."""
    import math

    values = dict(FIRST)
    rules = hpa_rules if mode == "hpa" else (lambda **o: Rules(**{"threshold": 0.3, "min_pods": 3, **o}))
    workload = hpa() if mode == "hpa" else None
    measured = decide("cpu", deployment(values), values, rules(min_improvement=0.0), NOW, workload).extra["improvement"]

    at = decide("cpu", deployment(values), values, rules(min_improvement=measured), NOW, workload)
    above = decide("cpu", deployment(values), values, rules(min_improvement=math.nextafter(measured, 1.0)), NOW, workload)

    assert at.act and at.code == "skew_verified"
    assert not above.act and above.code == "no_improvement"


def test_every_verdict_says_which_mode_decided_it_early_refusals_too():
    acting = decide("cpu", deployment(FIRST), FIRST, hpa_rules(), NOW, hpa())
    no_data = decide("cpu", deployment(FIRST), {}, hpa_rules(), NOW, hpa())
    cv = decide("cpu", deployment(FIRST), FIRST, Rules(threshold=0.3, min_pods=3), NOW)
    assert (acting.mode, acting.code) == ("hpa", "skew_verified")
    assert (no_data.mode, no_data.code) == ("hpa", "incomplete_data")
    assert cv.mode == "cv"
