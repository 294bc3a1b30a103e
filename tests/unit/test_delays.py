"""With each partition's inflow known, the projection follows Little's law (core.delays): a moved
partition carries its inflow times its new consumer's delay; each consumer that stays keeps its
own delay within the spread, a replacement's is anywhere theirs are. The two ends over those
bands, checked against every corner and against points inside them."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.core.assignors import Outcome, project
from rebalancer.core.delays import DelayBand, DelaysAfter, at_delays, consumer_delays, delay_ends, delays_after
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


def test_each_consumer_keeps_its_own_delay_within_the_spread_and_a_newcomer_may_have_any_of_theirs():
    partitions, inflow = slow_consumer()
    staying = {pod: held for pod, held in partitions.items() if pod != "p3"}

    delays = delays_after(staying, inflow, 0.2)

    assert delays is not None
    assert delays.of("p0") == DelayBand(pytest.approx(0.16), pytest.approx(0.24))
    assert delays.of("p2") == DelayBand(pytest.approx(0.24), pytest.approx(0.36))
    assert delays.of("p3's replacement") == delays.newcomer == DelayBand(pytest.approx(0.16), pytest.approx(0.36))


def test_a_consumer_taking_in_nothing_has_no_delay_and_none_come_from_it():
    partitions = held({"p0": [(0, 5.0)], "p1": [(1, 0.0)]})
    inflow = {("t", "0"): 10.0, ("t", "1"): 0.0}

    assert consumer_delays(partitions, inflow) == {"p0": 0.5}
    assert delays_after({"p1": partitions["p1"]}, inflow, 0.2) is None


def test_a_moved_partition_carries_its_inflow_times_a_delay_not_the_backlog_it_left():
    partitions, inflow = slow_consumer()

    projected = project(assignment(list(partitions), partitions), ["p3"], "uniform", draining=["p3"], inflow=inflow)

    assert projected.delays is not None
    for end in (projected.best, projected.worst):
        for pod, partitions_after in end.held.items():
            delays = {p.lag / inflow[(p.topic, p.partition)] for p in partitions_after}
            assert len(delays) == 1, (pod, delays)  # one delay a consumer, whatever it was handed
            band = projected.delays.of(pod)
            assert band.low - 1e-9 <= delays.pop() <= band.high + 1e-9, pod
    # The backlog (400 and 800 messages) is gone: no consumer carries more than 3 partitions' worth at 0.36 s.
    assert max(projected.worst.loads().values()) <= (40 + 2 * 20) * 0.36 + 1e-9
    assert projected.best.cv < projected.worst.cv


def test_a_slow_consumer_that_stays_stays_slow_with_what_it_is_handed():
    partitions, inflow = slow_consumer()

    projected = project(assignment(list(partitions), partitions), ["p0"], "uniform", inflow=inflow)

    assert projected.delays is not None and projected.delays.of("p3") == DelayBand(pytest.approx(16), pytest.approx(24))
    for end in (projected.best, projected.worst):
        taken_in = sum(inflow[(p.topic, p.partition)] for p in end.held["p3"])
        assert end.loads()["p3"] >= 16 * taken_in - 1e-9  # still 16 s behind at best, on what it holds then
        assert max(end.loads(), key=end.loads().get) == "p3"


def test_without_an_inflow_for_every_partition_the_projection_keeps_the_lag_each_carries():
    partitions, inflow = slow_consumer()
    partial = {key: rate for key, rate in inflow.items() if key != ("t", "4")}

    with_partial = project(assignment(list(partitions), partitions), ["p3"], "uniform", draining=["p3"], inflow=partial)
    without = project(assignment(list(partitions), partitions), ["p3"], "uniform", draining=["p3"])

    assert with_partial.delays is None
    assert with_partial == without


def test_the_answer_names_the_spread_and_the_replacements_band():
    partitions, inflow = slow_consumer()
    pods = [PodState(name=pod, ready=True, owned=True, created_at=NOW - timedelta(hours=1)) for pod in partitions]
    rules = Rules(threshold=0.3, floor=0, min_pods=3, assignor="uniform")

    verdict = decide("lag", pods, ByPartition(partitions, inflow), rules, NOW, WorkloadStatus(replicas=4))

    assert verdict.code == "skew_verified", verdict.reason
    assert verdict.selected[0].pod == "p3"
    projected = verdict.projected
    assert projected is not None and projected.delay_seconds == pytest.approx((0.16, 0.36))
    assert projected.delay_spread == 0.2 and verdict.projected_cv == projected.worst
    assert ("each consumer that stays within 20% of its delay now, a replacement 0.16 to 0.36 s behind its "
            "partitions' inflow") in verdict.reason, verdict.reason


# -- the ends over the bands ----------------------------------------------------------------------

layouts = st.lists(st.tuples(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=3),
                             st.floats(min_value=0, max_value=2)), min_size=2, max_size=6)


def cv(outcome: dict[str, tuple[PartitionLag, ...]]) -> float:
    return Outcome(outcome).cv


@given(layouts, st.floats(min_value=0, max_value=0.9), st.booleans(), st.integers(0, 2**32))
def test_the_ends_bound_every_delay_in_the_bands_and_the_highest_is_the_worst_corner(pods, spread, newcomer, seed):
    inflow = {("t", f"{i}-{j}"): rate for i, (rates, _) in enumerate(pods) for j, rate in enumerate(rates)}
    partitions = {f"p{i}": [PartitionLag("t", f"{i}-{j}", 0.0) for j in range(len(rates))] for i, (rates, _) in enumerate(pods)}
    own = {f"p{i}": DelayBand(d * (1 - spread), d * (1 + spread)) for i, (_, d) in enumerate(pods)}
    if newcomer:  # the last one is a replacement, anywhere from the shortest to the longest
        own.pop(f"p{len(pods) - 1}")
    delays = DelaysAfter(own, DelayBand(min(b.low for b in own.values()), max(b.high for b in own.values())))

    lowest, highest = delay_ends(partitions, inflow, delays)

    corners = [dict(zip(partitions, corner, strict=True))
               for corner in itertools.product(*[(delays.of(pod).low, delays.of(pod).high) for pod in partitions])]
    assert cv(highest) == pytest.approx(max(cv(at_delays(partitions, inflow, c)) for c in corners), abs=1e-9)
    pick = random.Random(seed)
    for _ in range(50):
        inside = {pod: pick.uniform(delays.of(pod).low, delays.of(pod).high) for pod in partitions}
        assert cv(lowest) - 1e-9 <= cv(at_delays(partitions, inflow, inside)) <= cv(highest) + 1e-9
