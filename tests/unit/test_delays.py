"""With each partition's inflow known, the projection follows Little's law (core.delays): a moved
partition carries its inflow times its new consumer's delay, and every consumer's delay after the
move is anywhere in the band of those that stay. The band's two ends, checked against every
corner and against points inside it."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.core.assignors import Outcome, project
from rebalancer.core.delays import DelayBand, at_delays, consumer_delays, delay_band, delay_ends
from rebalancer.core.partitions import ByPartition, PartitionLag, assignment
from rebalancer.core.policy import decide
from rebalancer.core.workload import PodState, Rules, WorkloadStatus

NOW = datetime(2026, 12, 3, tzinfo=timezone.utc)


def held(layout: dict[str, list[tuple[int, float]]]) -> dict[str, list[PartitionLag]]:
    """{pod: [(partition, lag), ...]}, one topic."""
    return {pod: [PartitionLag("t", str(n), lag) for n, lag in partitions] for pod, partitions in layout.items()}


def slow_consumer() -> tuple[dict[str, list[PartitionLag]], dict[tuple[str, str], float]]:
    """Ten partitions at 20 messages/s but partition 9 at 40; p3 takes 20 s to get to a message, the
    others 0.2 to 0.3 s."""
    inflow = {("t", str(n)): 40.0 if n == 9 else 20.0 for n in range(10)}
    delay = {"p0": 0.2, "p1": 0.25, "p2": 0.3, "p3": 20.0}
    layout = {"p0": [0, 1, 2], "p1": [3, 4, 5], "p2": [6, 7], "p3": [8, 9]}
    return held({pod: [(n, inflow[("t", str(n))] * delay[pod]) for n in ns] for pod, ns in layout.items()}), inflow


def test_a_consumers_delay_is_its_lag_over_its_inflow():
    partitions, inflow = slow_consumer()

    assert consumer_delays(partitions, inflow) == pytest.approx({"p0": 0.2, "p1": 0.25, "p2": 0.3, "p3": 20.0})
    staying = {pod: held for pod, held in partitions.items() if pod != "p3"}
    assert delay_band(staying, inflow, 0.0) == DelayBand(pytest.approx(0.2), pytest.approx(0.3))


def test_a_consumer_taking_in_nothing_has_no_delay_and_no_band_comes_from_none():
    partitions = held({"p0": [(0, 5.0)], "p1": [(1, 0.0)]})
    inflow = {("t", "0"): 10.0, ("t", "1"): 0.0}

    assert consumer_delays(partitions, inflow) == {"p0": 0.5}
    assert delay_band({"p1": partitions["p1"]}, inflow, 0.2) is None


def test_a_moved_partition_carries_its_inflow_times_a_delay_not_the_backlog_it_left():
    partitions, inflow = slow_consumer()

    projected = project(assignment(list(partitions), partitions), ["p3"], "uniform", draining=["p3"], inflow=inflow)

    assert projected.delays == DelayBand(pytest.approx(0.2), pytest.approx(0.3))
    for end in (projected.best, projected.worst):
        for pod, partitions_after in end.held.items():
            rates = {inflow[(p.topic, p.partition)] for p in partitions_after}
            delays = {p.lag / inflow[(p.topic, p.partition)] for p in partitions_after}
            assert len(delays) <= 1, (pod, delays)  # one delay a consumer
            assert all(0.2 - 1e-9 <= d <= 0.3 + 1e-9 for d in delays), (pod, delays)
            assert rates <= {20.0, 40.0}
    # The backlog (400 and 800 messages) is gone: no consumer carries more than 3 partitions' worth at 0.3 s.
    assert max(projected.worst.loads().values()) <= (40 + 2 * 20) * 0.3 + 1e-9
    assert projected.best.cv < projected.worst.cv


def test_without_an_inflow_for_every_partition_the_projection_keeps_the_lag_each_carries():
    partitions, inflow = slow_consumer()
    partial = {key: rate for key, rate in inflow.items() if key != ("t", "4")}

    with_partial = project(assignment(list(partitions), partitions), ["p3"], "uniform", draining=["p3"], inflow=partial)
    without = project(assignment(list(partitions), partitions), ["p3"], "uniform", draining=["p3"])

    assert with_partial.delays is None
    assert with_partial == without


def test_the_answer_names_the_band_of_delays_it_projected_over():
    partitions, inflow = slow_consumer()
    pods = [PodState(name=pod, ready=True, owned=True, created_at=NOW - timedelta(hours=1)) for pod in partitions]
    rules = Rules(threshold=0.3, floor=0, min_pods=3, assignor="uniform")

    verdict = decide("lag", pods, ByPartition(partitions, inflow), rules, NOW, WorkloadStatus(replicas=4))

    assert verdict.code == "skew_verified", verdict.reason
    assert verdict.selected[0].pod == "p3"
    assert verdict.projected is not None and verdict.projected.delay_seconds == pytest.approx((0.2, 0.3))
    assert verdict.projected_cv == verdict.projected.worst
    assert "each consumer 0.2 to 0.3 s behind its partitions' inflow, as those that stay are now" in verdict.reason


# -- the band's ends ------------------------------------------------------------------------------

layouts = st.lists(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=3),
                   min_size=2, max_size=6)


def cv(outcome: dict[str, tuple[PartitionLag, ...]]) -> float:
    return Outcome(outcome).cv


@given(layouts, st.floats(min_value=0.01, max_value=5), st.floats(min_value=1, max_value=4), st.integers(0, 2**32))
def test_the_ends_bound_every_delay_in_the_band_and_the_highest_is_the_worst_corner(rates, low, width, seed):
    inflow = {("t", f"{i}-{j}"): rate for i, pod in enumerate(rates) for j, rate in enumerate(pod)}
    partitions = {f"p{i}": [PartitionLag("t", f"{i}-{j}", 0.0) for j in range(len(pod))] for i, pod in enumerate(rates)}
    band = DelayBand(low, low * width)

    lowest, highest = delay_ends(partitions, inflow, band)

    corners = [dict(zip(partitions, corner, strict=True))
               for corner in itertools.product((band.low, band.high), repeat=len(partitions))]
    assert cv(highest) == pytest.approx(max(cv(at_delays(partitions, inflow, c)) for c in corners), abs=1e-9)
    pick = random.Random(seed)
    for _ in range(50):
        inside = {pod: pick.uniform(band.low, band.high) for pod in partitions}
        assert cv(lowest) - 1e-9 <= cv(at_delays(partitions, inflow, inside)) <= cv(highest) + 1e-9


def test_consumers_that_read_alike_by_chance_still_get_the_spread_either_way_of_their_middle():
    partitions = held({"p0": [(0, 2.5)], "p1": [(1, 2.5)], "p2": [(2, 2.6)]})
    inflow = {("t", "0"): 10.0, ("t", "1"): 10.0, ("t", "2"): 10.0}

    band = delay_band(partitions, inflow, 0.2)

    assert band == DelayBand(pytest.approx(0.255 * 0.8), pytest.approx(0.255 * 1.2))
    # A band already wider than the spread is kept as it is.
    assert delay_band(partitions, inflow, 0.01) == DelayBand(pytest.approx(0.25), pytest.approx(0.26))
