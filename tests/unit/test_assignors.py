"""The projection follows the consumer group's assignor (core.assignors): an eviction is a leave
and a join, counts are balanced, sticky, whole partitions; the member order it cannot know gives
a best and a worst end. Each assignor at its edges, and the properties every outcome keeps."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rebalancer.core import assignors
from rebalancer.core.assignors import ASSIGNORS, Outcome, project
from rebalancer.core.partitions import Assignment, PartitionLag


def assignment(layout: dict[str, list[tuple[str, int, float]]], idle: tuple[str, ...] = ()) -> Assignment:
    """{pod: [(topic, partition, lag), ...]}."""
    return Assignment({pod: tuple(PartitionLag(t, str(n), lag) for t, n, lag in held) for pod, held in layout.items()
                       if held}, idle + tuple(pod for pod, held in layout.items() if not held))


def counts(outcome: Outcome) -> dict[str, int]:
    return {pod: len(held) for pod, held in outcome.held.items()}


def names(outcome: Outcome, pod: str) -> list[str]:
    return sorted(f"{p.topic}/{p.partition}" for p in outcome.held[pod])


def even(pods: int, per_pod: int, lag: float = 10.0, topic: str = "t") -> dict[str, list[tuple[str, int, float]]]:
    return {f"p{i}": [(topic, i * per_pod + j, lag) for j in range(per_pod)] for i in range(pods)}


# -- the edges, for each assignor ---------------------------------------------------------------


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_with_fewer_partitions_than_members_the_replacement_may_be_left_idle(assignor):
    # Three partitions, five members: two hold nothing. The one evicted held a partition; after
    # the leave and the join three members hold one each, whoever they are.
    layout = {"p0": [("t", 0, 100.0)], "p1": [("t", 1, 100.0)], "p2": [("t", 2, 100.0)], "p3": [], "p4": []}

    projected = project(assignment(layout), ["p0"], assignor)

    for end in (projected.best, projected.worst):
        assert sorted(counts(end).values()) == [0, 0, 1, 1, 1]
        assert end.cv == 0.0  # members holding nothing are left out, as when measured
    if assignor != "range":  # sticky: p1 and p2 keep theirs; p0's goes to someone who held nothing
        assert names(projected.worst, "p1") == ["t/1"] and names(projected.worst, "p2") == ["t/2"]


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_with_one_member_left_it_takes_everything_then_gives_the_replacement_its_share(assignor):
    layout = {"p0": [("t", 0, 500.0), ("t", 1, 500.0)], "p1": [("t", 2, 10.0), ("t", 3, 10.0)]}

    projected = project(assignment(layout), ["p0"], assignor)

    for end in (projected.best, projected.worst):
        assert counts(end) == {"p1": 2, "p0's replacement": 2}
    # p1 keeps its lowest-numbered partitions, as the brokers' assignors do: p0's two.
    assert names(projected.worst, "p1") == ["t/0", "t/1"]
    assert projected.worst.loads() == {"p1": 1000.0, "p0's replacement": 20.0}


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_all_partitions_on_one_member_are_spread_over_the_others_and_the_replacement(assignor):
    layout = {"p0": [("t", n, 100.0) for n in range(6)], "p1": [], "p2": []}

    projected = project(assignment(layout), ["p0"], assignor)

    for end in (projected.best, projected.worst):
        assert counts(end) == {"p1": 2, "p2": 2, "p0's replacement": 2}
        assert end.cv == 0.0


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_when_every_member_is_replaced_the_partitions_wait_for_the_replacements(assignor):
    layout = {"p0": [("t", 0, 100.0), ("t", 1, 100.0)], "p1": [("t", 2, 100.0)]}

    projected = project(assignment(layout), ["p0", "p1"], assignor)

    assert sorted(counts(projected.worst).values()) == [1, 2]
    assert set(projected.worst.held) == {"p0's replacement", "p1's replacement"}


@pytest.mark.parametrize("assignor", ASSIGNORS)
def test_a_slow_consumers_backlog_drains_and_the_replacement_takes_its_share(assignor):
    # Eight partitions over four members, two each; p0 is slow. Its partitions arrive with a
    # typical partition's lag, and its replacement ends with two partitions like everyone.
    layout = even(4, 2)
    layout["p0"] = [("t", 0, 900.0), ("t", 1, 800.0)]

    projected = project(assignment(layout), ["p0"], assignor, draining=["p0"])

    for end in (projected.best, projected.worst):
        assert sorted(counts(end).values()) == [2, 2, 2, 2]
        assert end.cv == 0.0


def test_a_drained_partition_may_carry_anything_an_ordinary_partition_does_at_its_next_owner():
    # p0 is slow; the partitions at the consumers that stay carry 2 to 20. p0's two go to p1 and p2
    # on the leave, and stay there on the join (their lowest-numbered); drained, each carries an
    # ordinary partition's lag, anywhere from 2 to 20: the two ends differ by that alone.
    layout = {"p0": [("t", 0, 900.0), ("t", 1, 900.0)], "p1": [("t", 2, 2.0), ("t", 3, 2.0)],
              "p2": [("t", 4, 10.0), ("t", 5, 10.0)], "p3": [("t", 6, 20.0), ("t", 7, 20.0)]}

    projected = project(assignment(layout), ["p0"], "uniform", draining=["p0"])

    assert projected.best.loads() == {"p1": 22.0, "p2": 30.0, "p3": 40.0, "p0's replacement": 12.0}
    assert projected.worst.loads() == {"p1": 4.0, "p2": 12.0, "p3": 40.0, "p0's replacement": 12.0}


# -- what sets the assignors apart ----------------------------------------------------------------


def three_topics_range_uneven() -> dict[str, list[tuple[str, int, float]]]:
    """Three topics of five partitions over four members, as the range assignor leaves them: the
    first member in its order takes every topic's extra partition (6, 3, 3, 3)."""
    layout: dict[str, list[tuple[str, int, float]]] = {f"m{i}": [] for i in range(4)}
    for topic in "abc":
        layout["m0"] += [(topic, 0, 10.0), (topic, 1, 10.0)]
        for i in range(1, 4):
            layout[f"m{i}"].append((topic, i + 1, 10.0))
    return layout


def test_range_keeps_an_uneven_assignment_uneven_whichever_member_it_lands_on():
    projected = project(assignment(three_topics_range_uneven()), ["m0"], "range")

    # Every topic's extra partition follows the same member order: someone holds six again.
    for end in (projected.best, projected.worst):
        assert sorted(counts(end).values()) == [3, 3, 3, 6]
        assert end.cv == pytest.approx(0.3464, abs=1e-4)


def test_range_is_not_sticky_the_first_member_in_id_order_takes_the_first_range_of_every_topic():
    # Kafka 4.4's range sorts the members by id and hands out contiguous ranges; seen on a real
    # group: m0 (partitions 0-1 of each topic) evicted, m2 took 0-1 and gave its 2s away.
    layout = three_topics_range_uneven()

    held = assignment(layout).held
    outcomes = assignors._ranges({m: list(held[m]) for m in ("m1", "m2", "m3")}, list(held["m0"]), ["m0's replacement"])

    assert len(outcomes) == 4  # the replacement at each place among the three that stay
    for held in outcomes:
        blocks = sorted(sorted({p.partition for p in partitions}) for partitions in held.values())
        assert blocks == [["0", "1"], ["2"], ["3"], ["4"]]  # the same ranges in every topic, whoever holds them
    firsts = {next(pod for pod, partitions in held.items() if partitions[0].partition == "0") for held in outcomes}
    assert firsts == {"m1", "m0's replacement"}  # m1 holds the lowest range now, so it comes first unless the new id sorts before


@pytest.mark.parametrize("assignor", ["uniform", "cooperative-sticky"])
def test_balancing_over_the_whole_group_evens_out_what_range_left_uneven(assignor):
    projected = project(assignment(three_topics_range_uneven()), ["m0"], assignor)

    for end in (projected.best, projected.worst):
        assert sorted(counts(end).values()) == [3, 4, 4, 4]


def test_uniform_gives_the_extra_partition_by_member_order_so_a_holder_may_lose_it():
    # Ten partitions over four members hold 3, 3, 2, 2. Evicting p3 (2): the extras of the
    # new balance (10 over 4: two members hold 3) may go to anyone under uniform; which ones
    # sets how much lag each holds.
    layout = {"p0": [("t", 0, 50.0), ("t", 1, 50.0), ("t", 2, 50.0)], "p1": [("t", 3, 5.0), ("t", 4, 5.0), ("t", 5, 5.0)],
              "p2": [("t", 6, 5.0), ("t", 7, 5.0)], "p3": [("t", 8, 5.0), ("t", 9, 5.0)]}

    projected = project(assignment(layout), ["p3"], "uniform")

    assert projected.best.cv < projected.worst.cv
    assert counts(projected.best)["p0"] == 2  # the best end takes one of p0's away
    assert counts(projected.worst)["p0"] == 3


def test_big_partitions_stay_with_whoever_took_them_on_the_leave_the_replacement_gets_the_rest():
    # p0 is evicted (not slow) holding two big partitions. On the leave each member that stays
    # has room for one of p0's three; on the join each gives one back, keeping its lowest-numbered
    # partitions, which are p0's. So the big two end on two members that stayed, whatever the
    # order: the lag does not go to the replacement, and does not spread.
    layout = {"p0": [("t", 0, 400.0), ("t", 1, 400.0), ("t", 2, 10.0)]} | {
        f"p{i}": [("t", 3 * i + j, 10.0) for j in range(3)] for i in (1, 2, 3)}

    projected = project(assignment(layout), ["p0"], "uniform")

    for end in (projected.best, projected.worst):
        assert sorted(end.loads().values()) == [30.0, 30.0, 420.0, 420.0]
        assert end.loads()["p0's replacement"] == 30.0


def test_the_worst_end_piles_moved_lag_where_the_best_end_spreads_it():
    # Eight partitions over four members, two each; p0 (two partitions of 300) is evicted, not
    # slow. On the leave the three that stay take p0's two: the best end gives them to the
    # least loaded, the worst to the most loaded (p1, which already lags).
    layout = {"p0": [("t", 0, 300.0), ("t", 1, 300.0)], "p1": [("t", 2, 200.0), ("t", 3, 200.0)],
              "p2": [("t", 4, 10.0), ("t", 5, 10.0)], "p3": [("t", 6, 10.0), ("t", 7, 10.0)]}

    projected = project(assignment(layout), ["p0"], "uniform")

    assert projected.best.cv < projected.worst.cv
    assert max(projected.worst.loads().values()) > max(projected.best.loads().values())


# -- properties of every outcome --------------------------------------------------------------------

layouts = st.dictionaries(
    st.sampled_from([f"p{i}" for i in range(7)]),
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=6),
    min_size=2,
)


def numbered(raw: dict[str, list[float]], topics: int) -> dict[str, list[tuple[str, int, float]]]:
    out, n = {}, 0
    for pod, lags in sorted(raw.items()):
        out[pod] = [(f"topic{(n + i) % topics}", n + i, lag) for i, lag in enumerate(lags)]
        n += len(lags)
    return out


@given(layouts, st.integers(min_value=1, max_value=3), st.sampled_from(ASSIGNORS), st.data())
def test_every_outcome_holds_every_partition_once_balanced_and_sticky(raw, topics, assignor, data):
    layout = numbered(raw, topics)
    removed = data.draw(st.lists(st.sampled_from(sorted(layout)), min_size=1, max_size=len(layout) - 1, unique=True))
    before = assignment(layout)

    projected = project(before, removed, assignor)

    every = Counter((p.topic, p.partition) for held in before.held.values() for p in held)
    for end in (projected.best, projected.worst):
        after = Counter((p.topic, p.partition) for held in end.held.values() for p in held)
        assert after == every  # each partition exactly once, whole
        assert len(end.held) == len(layout)  # the pods that stay, and a replacement for each one gone
        scopes = sorted({t for t, _ in every}) if assignor == "range" else [None]
        for scope in scopes:
            sizes = [sum(1 for p in held if scope is None or p.topic == scope) for held in end.held.values()]
            assert max(sizes) - min(sizes) <= 1, (scope, sizes)  # balanced by count
        assert projected.best.cv <= projected.worst.cv


# -- the gate ---------------------------------------------------------------------------------------


def test_the_gate_judges_the_worst_end_and_the_answer_names_the_assignor():
    from datetime import datetime, timedelta, timezone

    from rebalancer.core.partitions import ByPartition
    from rebalancer.core.policy import decide
    from rebalancer.core.workload import PodState, Rules, WorkloadStatus

    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    layout = three_topics_range_uneven()
    pods = [PodState(name=pod, ready=True, owned=True, created_at=now - timedelta(hours=1)) for pod in layout]
    held = ByPartition({pod: [PartitionLag(t, str(n), lag) for t, n, lag in partitions] for pod, partitions in layout.items()})

    def verdict(assignor):
        rules = Rules(threshold=0.3, floor=0, min_pods=3, assignor=assignor)
        return decide("lag", pods, held, rules, now, WorkloadStatus(replicas=4))

    under_range, under_uniform = verdict("range"), verdict("uniform")

    assert under_range.code == "no_improvement"
    assert "would only bring it to 0.3464 (the range assignor's only outcome) (0% better, min_improvement 10%)" \
        in under_range.reason, under_range.reason
    assert under_uniform.code == "skew_verified" and under_uniform.projected_cv == pytest.approx(0.1155, abs=1e-4)
    assert "(the uniform assignor's only outcome) (67% better)" in under_uniform.reason, under_uniform.reason
