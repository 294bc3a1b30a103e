"""What a consumer group's assignor does with the partitions of evicted consumers. Pure.

Evicting a consumer is two rebalances. It leaves, and its partitions go to the members that
stay; then its replacement joins and takes its fair share back from whoever holds more. The
assignors Kafka ships balance partition *counts*; none of them looks at lag. Two of them are
sticky (a member keeps what it holds up to its quota, and only the excess moves); range is not.

- ``uniform``, the new protocol's default (KIP-848): counts balanced over all the group's
  partitions. Which members may hold one partition more than the others follows the order of
  the members, not what they hold.
- ``range``, the new protocol's other one: not sticky. It sorts the members by id and hands
  each topic's partitions out in that order, in contiguous ranges, the first members taking one
  more where the count does not divide: the same members in every topic, so an uneven
  assignment stays uneven. The order of the members that stay shows in what they hold now; the
  replacement's place in it (its id is new and random) is the unknown, and every place is tried.
- ``cooperative-sticky``, the classic protocol's: counts balanced over all partitions; a member
  already holding the upper quota keeps it while there is room.

With ``uniform`` and ``cooperative-sticky``, a member that holds more than its quota keeps its
lowest-numbered partitions (as the brokers' uniform assignor does). The function cannot know the
member order (member ids are random), so it cannot know which members get the extra partitions
and the moved ones. It projects both ends: the best assignment the assignor could make (the
moved partitions to the least loaded members first) and the worst (to the most loaded first),
found greedily, the biggest partition first.

With each partition's inflow known, what a partition carries after the move is its inflow times
its new consumer's delay (rebalancer/core/delays.py), not the lag it carries now: the ends are
chosen on inflow, and each is then taken over every delay the consumers may have after the move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean, median, quantiles
from typing import get_args

from rebalancer.core.delays import DelaysAfter, delay_ends, delays_after
from rebalancer.core.partitions import Assignment, PartitionLag
from rebalancer.core.statistics import cv_or_zero
from rebalancer.core.workload import DELAY_SPREAD, Assignor

ASSIGNORS: tuple[Assignor, ...] = get_args(Assignor)

Holdings = dict[str, list[PartitionLag]]
# Range: the replacements' places tried at most (two replacements among 100 members have 10,302).
MAX_RANGE_ORDERS = 256


@dataclass(frozen=True)
class Outcome:
    """One assignment the group could settle on: each member's partitions, replacements included
    (named ``<evicted pod>'s replacement``)."""

    held: Mapping[str, tuple[PartitionLag, ...]]

    def loads(self) -> dict[str, float]:
        """Each member's lag; members holding nothing are left out, as they are when measured."""
        return {pod: math.fsum(p.lag for p in held) for pod, held in self.held.items() if held}

    @property
    def cv(self) -> float:
        return cv_or_zero(list(self.loads().values()))

    @property
    def mean(self) -> float:
        """The lag left on average over the members holding partitions."""
        loads = list(self.loads().values())
        return fmean(loads) if loads else 0.0


@dataclass(frozen=True)
class Projection:
    assignor: Assignor
    best: Outcome
    worst: Outcome
    delays: DelaysAfter | None = None  # with the inflow known: the consumers' delays both ends allow


def project(assigned: Assignment, removed: Sequence[str], assignor: Assignor,
            draining: Sequence[str] = (), inflow: Mapping[tuple[str, str], float] | None = None,
            delay_spread: float = DELAY_SPREAD) -> Projection:
    """The assignments the group can settle on once ``removed`` have left and as many
    replacements have joined, at both ends.

    The partitions of ``draining`` pods (a consumer found slow or stuck) leave their backlog
    behind: a healthy consumer drains it. What they carry at their next owner is then what an
    ordinary partition carries, which nobody can say more closely than the partitions at the
    consumers that stay do: anywhere from their 10th to their 90th percentile (a real group's
    drained partitions came out anywhere in that band), so both ends are taken over that too.

    With ``inflow`` for every partition, each partition carries its inflow times a delay instead,
    and both ends are taken over what the consumers' delays may be: each one's own within
    ``delay_spread``, a replacement's anywhere theirs are (a drained backlog needs no band of its own)."""
    staying = {pod: list(assigned.held.get(pod, ())) for pod in (*assigned.held, *assigned.idle) if pod not in removed}
    replacements = [f"{pod}'s replacement" for pod in removed]
    delays = delays_after(staying, inflow, delay_spread) if inflow and _covers(assigned, inflow) else None
    if inflow and delays is not None:
        # What a partition will carry is its inflow times a delay: the ends are chosen on inflow.
        def by_inflow(partitions: Sequence[PartitionLag]) -> list[PartitionLag]:
            return [PartitionLag(p.topic, p.partition, inflow[(p.topic, p.partition)]) for p in partitions]

        found = _outcomes({pod: by_inflow(held) for pod, held in staying.items()},
                          by_inflow([p for pod in removed for p in assigned.held.get(pod, ())]), replacements, assignor)
        best, _ = delay_ends(found[0].held, inflow, delays)
        _, worst = delay_ends(found[-1].held, inflow, delays)
        return Projection(assignor, Outcome(best), Outcome(worst), delays)
    outcomes = []
    for level in drained_levels(assigned, staying) if draining else (math.inf,):
        orphans = [PartitionLag(p.topic, p.partition, min(p.lag, level)) if pod in draining else p
                   for pod in removed for p in assigned.held.get(pod, ())]
        outcomes += _outcomes(staying, orphans, replacements, assignor)
    found = sorted(outcomes, key=lambda outcome: outcome.cv)
    return Projection(assignor, found[0], found[-1])


def _outcomes(staying: Holdings, orphans: list[PartitionLag], replacements: list[str], assignor: Assignor) -> list[Outcome]:
    """The assignor's outcomes, lowest CV first: every place of the replacements for range, the
    greedy best and worst ends for the others (greedy choices need not keep them in order)."""
    if assignor == "range":
        outcomes = [Outcome(held) for held in _ranges(staying, orphans, replacements)]
    else:
        outcomes = [Outcome(_settle(staying, orphans, replacements, assignor, direction)) for direction in ("best", "worst")]
    return sorted(outcomes, key=lambda outcome: outcome.cv)


def _covers(assigned: Assignment, inflow: Mapping[tuple[str, str], float]) -> bool:
    """Whether the inflow query answered for every partition held (a partial one would make up the rest)."""
    return all((p.topic, p.partition) in inflow for held in assigned.held.values() for p in held)


def _ranges(staying: Holdings, orphans: list[PartitionLag], replacements: list[str]) -> list[
        dict[str, tuple[PartitionLag, ...]]]:
    """Range's outcomes: the members that stay, in the order their ranges show now, with each
    replacement at every place it can take; each topic handed out in contiguous ranges."""
    every = sorted((p for held in (*staying.values(), orphans) for p in held), key=_number)
    topics = sorted({p.topic for p in every})
    first = {pod: min((_number(p) for p in held), default=None) for pod, held in staying.items()}
    order = sorted(staying, key=lambda pod: (first[pod] is None, first[pod] or ("", 0, ""), pod))
    orders = [order]
    for replacement in replacements:
        orders = [[*o[:i], replacement, *o[i:]] for o in orders for i in range(len(o) + 1)]
    if len(orders) > MAX_RANGE_ORDERS:  # large groups, several replacements: an even sample of the places
        step = len(orders) / MAX_RANGE_ORDERS
        orders = [orders[int(i * step)] for i in range(MAX_RANGE_ORDERS)] + [orders[-1]]
    outcomes = []
    for members in orders:
        held: dict[str, list[PartitionLag]] = {pod: [] for pod in members}
        for topic in topics:
            partitions = [p for p in every if p.topic == topic]
            base, extra = divmod(len(partitions), len(members))
            start = 0
            for i, pod in enumerate(members):
                size = base + (1 if i < extra else 0)
                held[pod] += partitions[start:start + size]
                start += size
        outcomes.append({pod: tuple(p) for pod, p in held.items()})
    return outcomes


def drained_levels(assigned: Assignment, staying: Holdings) -> tuple[float, ...]:
    """What a drained partition may carry: an ordinary partition's lag at the consumers that stay
    (at its 10th percentile, its median, its 90th), or, with none, a typical partition's."""
    ordinary = sorted(p.lag for held in staying.values() for p in held)
    if len(ordinary) < 2:
        return (median(p.lag for held in assigned.held.values() for p in held),)
    deciles = quantiles(ordinary, n=10, method="inclusive")
    return deciles[0], median(ordinary), deciles[-1]


def _settle(staying: Holdings, orphans: list[PartitionLag], replacements: list[str], assignor: Assignor,
            direction: str) -> dict[str, tuple[PartitionLag, ...]]:
    """Leave, then join: the two rebalances an eviction causes."""
    if staying:
        after_leave, waiting = _rebalance(staying, orphans, assignor, direction), []
    else:  # nobody to take them: the partitions wait for the replacements
        after_leave, waiting = {}, orphans
    joined = {**after_leave, **{pod: [] for pod in replacements}}
    return {pod: tuple(held) for pod, held in _rebalance(joined, waiting, assignor, direction).items()}


def _rebalance(members: Holdings, unassigned: list[PartitionLag], assignor: Assignor, direction: str) -> Holdings:
    """One rebalance of ``uniform`` or ``cooperative-sticky``: counts balanced over all partitions,
    sticky, the unknown member order chosen for the ``best`` or ``worst`` end."""
    if not members:
        return {}
    load = {pod: math.fsum(p.lag for p in held) for pod, held in members.items()}
    # The least loaded first for the best end, the most loaded first for the worst.
    order = sorted(members, key=lambda pod: (load[pod], pod), reverse=direction == "worst")
    rank = {pod: i for i, pod in enumerate(order)}
    pick = min if direction == "best" else max
    quota = _quotas(order, members, sum(len(held) for held in members.values()) + len(unassigned), assignor)
    result: Holdings = {}
    pool = list(unassigned)
    for pod in order:
        kept = sorted(members[pod], key=_number)
        result[pod], pool = kept[:quota[pod]], pool + kept[quota[pod]:]
    room = {pod: quota[pod] - len(result[pod]) for pod in order}
    running = {pod: math.fsum(p.lag for p in held) for pod, held in result.items()}
    for partition in sorted(pool, key=lambda p: (-p.lag, _number(p))):
        # Ties go to the earlier member in the order, at either end.
        receiver = pick((pod for pod in order if room[pod] > 0),
                        key=lambda pod: (running[pod], rank[pod] if direction == "best" else -rank[pod]))
        result[receiver].append(partition)
        running[receiver] += partition.lag
        room[receiver] -= 1
    return result


def _quotas(order: list[str], holding: Mapping[str, list[PartitionLag]], partitions: int,
            assignor: Assignor) -> dict[str, int]:
    """How many partitions each member ends with: the minimum quota, and one more for as many
    members as the division leaves over."""
    base, extra = divmod(partitions, len(order))
    quota = dict.fromkeys(order, base)
    if assignor == "uniform":
        first = order[:extra]  # member order alone decides
    else:  # cooperative-sticky: who holds more than the minimum keeps one more first
        first = [pod for pod in order if len(holding[pod]) > base] + [pod for pod in order if len(holding[pod]) <= base]
    for pod in first[:extra]:
        quota[pod] += 1
    return quota


def _number(p: PartitionLag) -> tuple[str, int, str]:
    """A partition's place among its topic's: by number (Kafka's are integers, labels are strings)."""
    return (p.topic, int(p.partition), "") if p.partition.isdigit() else (p.topic, -1, p.partition)
