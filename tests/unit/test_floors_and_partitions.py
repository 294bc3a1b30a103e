"""When moving pods cannot help, in the pure core: the floor under which a skew does not matter,
and lag at partition granularity (a hot partition, an uneven assignment, partitions moving
whole, pods that hold none). Each rule at its boundary."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rebalancer.core.partitions import ByPartition, PartitionLag
from rebalancer.core.policy import decide
from rebalancer.core.workload import PodState, Rules, WorkloadStatus

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(hours=2)
STEADY = WorkloadStatus(replicas=6)


def pods(names: list[str]) -> list[PodState]:
    return [PodState(name=n, ready=True, owned=True, created_at=OLD) for n in names]


def held(layout: dict[str, list[float]], topic: str = "events", inflow: list[float] | None = None) -> ByPartition:
    """{pod: [lag of each of its partitions]}, the partitions numbered in order; ``inflow``, when
    given, is each partition's messages/s in the same order."""
    numbered, n = {}, 0
    for pod, lags in layout.items():
        numbered[pod] = [PartitionLag(topic, str(n + i), lag) for i, lag in enumerate(lags)]
        n += len(lags)
    rates = None if inflow is None else {(topic, str(i)): rate for i, rate in enumerate(inflow)}
    return ByPartition(numbered, rates)


LAG = Rules(threshold=0.5, floor=500, unit="messages", min_pods=2)


# -- floors -------------------------------------------------------------------------------------


def test_three_messages_of_lag_on_one_pod_out_of_six_is_below_the_floor():
    samples = {"p1": 3.0, "p2": 0.0, "p3": 0.0, "p4": 0.0, "p5": 0.0, "p6": 0.0}

    verdict = decide("lag", pods(list(samples)), samples, LAG, NOW, STEADY)

    assert verdict.stats is not None and verdict.stats.value == pytest.approx(2.236, abs=1e-3)  # a CV of 2.2...
    assert not verdict.act and verdict.code == "below_floor"  # ...of nothing
    assert "the mean lag 0.5 messages is below the floor 500 messages" in verdict.reason
    assert verdict.floor == 500


def test_six_pods_idling_at_two_millicores_and_one_at_twenty_is_below_the_cpu_floor():
    samples = {f"p{i}": 0.002 for i in range(6)} | {"p6": 0.020}
    rules = Rules(threshold=0.3, floor=0.1, unit="cores")

    verdict = decide("cpu", pods(list(samples)), samples, rules, NOW, WorkloadStatus(replicas=7))

    assert verdict.stats is not None and verdict.stats.value > 1.2
    assert verdict.code == "below_floor" and "below the floor 0.1 cores" in verdict.reason


@pytest.mark.parametrize(("mean", "code"), [(500.0, "skew_verified"), (499.99, "below_floor")])
def test_the_floor_is_the_lowest_mean_that_may_act(mean, code):
    shape = [0.125, 0.5, 0.5, 0.5, 1.875, 2.5]  # mean 1 (exactly, in binary too), a CV of 0.87
    samples = {f"p{i}": v * mean for i, v in enumerate(shape)}

    verdict = decide("lag", pods(list(samples)), samples, LAG, NOW, STEADY)

    assert verdict.code == code
    assert verdict.stats is not None and verdict.stats.mean == pytest.approx(mean)


def test_a_floor_of_zero_lets_any_level_act():
    samples = {"p1": 3.0, "p2": 0.0, "p3": 0.0, "p4": 0.0, "p5": 0.0, "p6": 0.0}
    verdict = decide("lag", pods(list(samples)), samples, Rules(threshold=0.5, floor=0.0, min_pods=2), NOW, STEADY)
    assert verdict.code == "skew_verified"


def test_hpa_mode_has_the_floor_too():
    samples = {f"p{i}": 0.002 for i in range(6)} | {"p6": 0.020}
    rules = Rules(threshold=0.0, mode="hpa", floor=0.1, unit="cores")
    verdict = decide("cpu", pods(list(samples)), samples, rules, NOW,
                     WorkloadStatus(replicas=7, hpa_name="h", hpa_count=1, hpa_cpu_target_utilization=50))
    assert verdict.code == "below_floor"


# -- partitions ---------------------------------------------------------------------------------


def test_one_hot_partition_is_not_chased():
    # Twelve partitions, two per pod; one of them 50,000 behind.
    layout = {f"p{i}": [100.0, 100.0] for i in range(6)} | {"p3": [50_000.0, 100.0]}

    verdict = decide("lag", pods(list(layout)), held(layout), LAG, NOW, STEADY)

    assert not verdict.act and verdict.code == "hot_partition"
    hot = verdict.hot_partition
    assert hot is not None and (hot.pod, hot.topic, hot.partition, hot.lag) == ("p3", "events", "6", 50_000.0)
    assert hot.share == 1.0 and hot.typical == 100.0
    assert "events/6 with lag 50,000" in verdict.reason and "100% of p3's excess" in verdict.reason
    assert verdict.selected == ()  # nothing is projected "100 % better"


@pytest.mark.parametrize(("share_limit", "code"), [(0.66, "hot_partition"), (0.67, "skew_verified")])
def test_the_hot_partition_share_is_a_boundary(share_limit, code):
    # p0's two partitions carry 1,000 each, every other partition 100: the biggest one is 900
    # above a typical partition, out of p0's excess of 1,350 over the mean: a share of 2/3. Its
    # inflow (ten times the others') says it is the partition, not the consumer.
    # Below the share the move goes ahead to the projection, which the boundary is not about
    # (min_improvement 0: the two big partitions may well stay together, see test_assignors).
    layout = {"p0": [1000.0, 1000.0], "p1": [100.0, 100.0], "p2": [100.0, 100.0], "p3": [100.0, 100.0]}
    rules = Rules(threshold=0.5, floor=0, min_pods=2, hot_partition_share=share_limit, min_improvement=0.0)

    verdict = decide("lag", pods(list(layout)), held(layout, inflow=[10.0, 100.0] + [10.0] * 6), rules, NOW,
                     WorkloadStatus(replicas=4))

    assert verdict.code == code


# -- a hot partition, or a slow consumer ----------------------------------------------------------

SIX = [f"p{i}" for i in range(6)]


def test_a_stuck_consumer_holding_two_partitions_is_moved():
    # Found on a real broker: one consumer of six stopped, both of its partitions fell 3,000
    # behind while the rest caught up. One of two equal partitions "explains" over half the
    # excess, but the pod's other partition is just as far behind: it is the consumer.
    layout = {pod: [20.0, 30.0] for pod in SIX} | {"p2": [3000.0, 3000.0]}

    verdict = decide("lag", pods(SIX), held(layout), LAG, NOW, STEADY)

    assert verdict.act and verdict.code == "skew_verified", verdict.reason
    assert verdict.selected[0].pod == "p2" and verdict.hot_partition is None
    assert "all 2 of p2's partitions fall behind" in verdict.reason and "the consumer is slow or stuck" in verdict.reason


@pytest.mark.parametrize(("other", "code"), [(1600.0, "hot_partition"), (1601.0, "skew_verified")])
def test_the_other_partitions_keep_up_up_to_the_share_of_the_way_to_the_biggest(other, code):
    # A typical partition has 100, p0's biggest 3,100: with hot_partition_share 50 %, its other
    # partition keeps up while no further above 100 than half the way to 3,100 (1,600).
    layout = {pod: [100.0, 100.0] for pod in SIX} | {"p0": [3100.0, other]}

    verdict = decide("lag", pods(SIX), held(layout), LAG, NOW, STEADY)

    assert verdict.code == code, verdict.reason


def test_a_stuck_consumer_holding_one_partition_is_moved_when_no_inflow_is_known():
    # One partition per consumer, the most common shape: lag alone can never say.
    layout = {pod: [25.0] for pod in SIX} | {"p4": [3000.0]}

    verdict = decide("lag", pods(SIX), held(layout), LAG, NOW, STEADY)

    assert verdict.act and verdict.code == "skew_verified", verdict.reason
    assert "p4 holds one partition, events/4, and no inflow query says" in verdict.reason


def test_a_stuck_consumers_backlog_drains_in_the_projection_instead_of_moving_with_its_partition():
    # Found on a real group: four partitions over six consumers (two idle), one consumer stuck.
    # Moved whole with its backlog, its partition would look as hot at an idle pod, the move 0 %
    # better; a healthy consumer drains it.
    layout = {"p0": [259.0], "p1": [0.0], "p2": [0.0], "p3": [0.0], "p4": [], "p5": []}

    verdict = decide("lag", pods(list(layout)), held(layout), Rules(threshold=0.5, floor=50, min_pods=3), NOW, STEADY)

    assert verdict.act and verdict.code == "skew_verified", verdict.reason
    assert verdict.projected_cv == 0.0
    assert "its backlog drains at their next owners" in verdict.reason


@pytest.mark.parametrize(("floor", "code"), [(50, "skew_verified"), (0, "no_improvement")])
@pytest.mark.parametrize("with_inflow", [False, True])
def test_when_the_consumers_that_stay_read_almost_nothing_the_lag_left_is_below_the_floor(floor, code, with_inflow):
    # Found on a real group, twice in ten runs: the slow consumer 366 behind, the three others just
    # after their commit. Whatever the assignor does with the one message left, it is one consumer's:
    # a CV of 1.7, "0 % better". But a skew of nothing is not a skew, after the move as before it.
    layout = {"p0": [183.0, 183.0], "p1": [0.0, 1.0], "p2": [0.0, 0.0], "p3": [0.0, 0.0]}
    rules = Rules(threshold=0.5, floor=floor, min_pods=3, assignor="uniform")

    verdict = decide("lag", pods(list(layout)), held(layout, inflow=[20.0] * 8 if with_inflow else None), rules, NOW,
                     STEADY)

    assert verdict.code == code, verdict.reason
    assert verdict.projected is not None
    if floor:
        assert verdict.projected_cv == verdict.projected.worst == verdict.projected.best == 0.0
        assert verdict.projected.left_below_floor is not None and verdict.projected.left_below_floor < 1
        assert "at the uniform assignor's worst assignment, is below the floor: no skew that matters" in verdict.reason
    else:
        assert verdict.projected.worst > 1 and verdict.projected.left_below_floor is None


@pytest.mark.parametrize(("least", "drains"), [(20.0, True), (19.0, False)])
def test_a_consumer_behind_on_every_partition_is_slow_and_its_backlog_drains_in_the_projection(least, drains):
    # Found on a real group: a slow consumer holding three of ten partitions. No partition explains
    # half its excess, so the partition test says nothing; behind on all of them (each at least
    # twice a typical partition's 10), it is the consumer, and its replacement keeps up.
    layout = {"p0": [300.0, 300.0, 300.0, least], "p1": [10.0, 10.0, 10.0], "p2": [10.0, 10.0], "p3": [10.0, 10.0]}
    rules = Rules(threshold=0.5, floor=50, min_pods=2, max_pods_per_action=1, selection="hottest")

    verdict = decide("lag", pods(list(layout)), held(layout), rules, NOW, STEADY)

    assert verdict.act, verdict.reason
    assert ("all 4 of p0's partitions fall behind" in verdict.reason) is drains, verdict.reason
    assert verdict.projected is not None
    assert (verdict.projected.worst < 0.3) is drains  # carried whole, the backlog would land on one member


def test_one_partition_per_pod_with_ordinary_inflow_is_a_slow_consumer():
    layout = {pod: [25.0] for pod in SIX} | {"p4": [3000.0]}

    verdict = decide("lag", pods(SIX), held(layout, inflow=[100.0, 90.0, 110.0, 100.0, 120.0, 100.0]), LAG, NOW, STEADY)

    assert verdict.act and verdict.code == "skew_verified", verdict.reason
    assert "its inflow 120/s is ordinary (the median partition's is 100/s" in verdict.reason


def test_one_partition_per_pod_with_far_more_inflow_is_a_hot_partition():
    layout = {pod: [25.0] for pod in SIX} | {"p4": [3000.0]}

    verdict = decide("lag", pods(SIX), held(layout, inflow=[100.0, 90.0, 110.0, 100.0, 700.0, 100.0]), LAG, NOW, STEADY)

    assert not verdict.act and verdict.code == "hot_partition"
    assert verdict.hot_partition is not None and verdict.hot_partition.partition == "4"
    assert "its inflow 700/s is 7 times the median partition's 100/s" in verdict.reason


@pytest.mark.parametrize(("ratio", "code"), [(3.0, "hot_partition"), (3.01, "skew_verified")])
def test_the_hot_inflow_ratio_is_a_boundary(ratio, code):
    layout = {pod: [25.0] for pod in SIX} | {"p4": [3000.0]}
    rules = Rules(threshold=0.5, floor=500, min_pods=2, hot_inflow_ratio=ratio)

    verdict = decide("lag", pods(SIX), held(layout, inflow=[100.0] * 4 + [300.0, 100.0]), rules, NOW, STEADY)

    assert verdict.code == code


def test_inflow_outweighs_the_other_partitions():
    # The pod's other partition keeps up, which alone would say "hot partition"; the inflow says
    # the big one receives no more than any other, so the consumer is at fault on it.
    layout = {pod: [20.0, 30.0] for pod in SIX} | {"p2": [3000.0, 30.0]}

    verdict = decide("lag", pods(SIX), held(layout, inflow=[50.0] * 12), LAG, NOW, STEADY)

    assert verdict.act and "its inflow 50/s is ordinary" in verdict.reason


def test_an_uneven_assignment_is_acted_on_and_named():
    # Twelve partitions with equal lag; p0 holds five of them, p3, p4 and p5 one each.
    layout = {"p0": [1000.0] * 5, "p1": [1000.0] * 2, "p2": [1000.0] * 2, "p3": [1000.0], "p4": [1000.0], "p5": [1000.0]}

    verdict = decide("lag", pods(list(layout)), held(layout), LAG, NOW, STEADY)

    assert verdict.act and verdict.code == "skew_verified"
    assert [(s.pod, s.role) for s in verdict.selected] == [("p0", "hot"), ("p3", "cold")]
    assert "the assignment is uneven: p0 holds 5 of 12 partitions, more than its fair share 2" in verdict.reason
    assert verdict.assignment is not None and verdict.assignment.over_fair_share() == {"p0": 5}
    # Six whole partitions go to p1, p2 (2,000 each), p4 and p5 (1,000 each): all end at 3,000.
    assert verdict.projected_cv == 0.0


def test_pods_holding_no_partition_are_idle_by_assignment_not_missing_and_not_cold():
    # Eight consumers, six partitions: two consumers hold none.
    layout = {f"p{i}": [1000.0] for i in range(6)}
    names = [*layout, "p6", "p7"]

    verdict = decide("lag", pods(names), held(layout), LAG, NOW, WorkloadStatus(replicas=8))

    assert verdict.code == "below_threshold" and verdict.missing == ()
    assert verdict.stats is not None and verdict.stats.pods == 6 and verdict.stats.value == 0.0
    assert {(n.pod, n.why) for n in verdict.ignored} == {("p6", "holds no partition: idle by assignment"),
                                                        ("p7", "holds no partition: idle by assignment")}
    assert verdict.assignment is not None and verdict.assignment.idle == ("p6", "p7")


def test_an_idle_consumer_is_never_picked_as_the_cold_pod():
    layout = {"p0": [3000.0, 3000.0, 3000.0], "p1": [1000.0], "p2": [1000.0], "p3": [900.0], "p4": [1000.0]}
    names = [*layout, "p5"]  # p5 holds nothing

    verdict = decide("lag", pods(names), held(layout), LAG, NOW, WorkloadStatus(replicas=6))

    assert verdict.act
    assert [(s.pod, s.role) for s in verdict.selected] == [("p0", "hot"), ("p3", "cold")]


def test_no_partition_held_by_any_ready_pod_is_incomplete_data():
    verdict = decide("lag", pods(["p0", "p1", "p2"]), held({"gone-pod": [10_000.0]}), LAG, NOW, WorkloadStatus(replicas=3))
    assert verdict.code == "incomplete_data" and "holds a partition" in verdict.reason
