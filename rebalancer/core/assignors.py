"""What a consumer group's assignor does with the partitions of evicted consumers. Pure.

Evicting a consumer is two rebalances. It leaves, and its partitions go to the members that
stay; then its replacement joins and takes its fair share back from whoever holds more. The
assignors Kafka ships balance partition *counts* and are sticky: a member keeps what it holds up
to its quota, and only the excess moves. None of them looks at lag.

- ``uniform``, the new protocol's default (KIP-848): counts balanced over all the group's
  partitions. Which members may hold one partition more than the others follows the order of
  the members, not what they hold.
- ``range``, the new protocol's other one: counts balanced topic by topic. The extra partitions
  of every topic follow one member order, so they pile up on the same members.
- ``cooperative-sticky``, the classic protocol's: counts balanced over all partitions; a member
  already holding the upper quota keeps it while there is room.

A member that holds more than its quota keeps its lowest-numbered partitions (as the brokers'
assignors do). The function cannot know the member order (member ids are random), so it cannot
know which members get the extra partitions and the moved ones. It projects both ends: the best
assignment the assignor could make (the moved partitions to the least loaded members first)
and the worst (to the most loaded first). Both are found greedily, the biggest partition first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean, median, quantiles
from typing import get_args

from rebalancer.core.partitions import Assignment, PartitionLag
from rebalancer.core.statistics import coefficient_of_variation
from rebalancer.core.workload import Assignor

ASSIGNORS: tuple[Assignor, ...] = get_args(Assignor)

Holdings = dict[str, list[PartitionLag]]


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
        loads = list(self.loads().values())
        return coefficient_of_variation(loads).value if loads and fmean(loads) > 0 else 0.0


@dataclass(frozen=True)
class Projection:
    assignor: Assignor
    best: Outcome
    worst: Outcome


def project(assigned: Assignment, removed: Sequence[str], assignor: Assignor,
            draining: Sequence[str] = ()) -> Projection:
    """The assignments the group can settle on once ``removed`` have left and as many
    replacements have joined, at both ends.

    The partitions of ``draining`` pods (a consumer found slow or stuck) leave their backlog
    behind: a healthy consumer drains it. What they carry at their next owner is then what an
    ordinary partition carries, which nobody can say more closely than the partitions at the
    consumers that stay do: anywhere from their 10th to their 90th percentile (a real group's
    drained partitions came out anywhere in that band), so both ends are taken over that too."""
    staying: Holdings = {pod: list(assigned.held.get(pod, ())) for pod in (*assigned.held, *assigned.idle)
                         if pod not in removed}
    replacements = [f"{pod}'s replacement" for pod in removed]
    outcomes = []
    for level in _drained_levels(assigned, staying) if draining else (math.inf,):
        orphans = [PartitionLag(p.topic, p.partition, min(p.lag, level)) if pod in draining else p
                   for pod in removed for p in assigned.held.get(pod, ())]
        outcomes += [Outcome(_settle(staying, orphans, replacements, assignor, direction)) for direction in ("best", "worst")]
    # Every one is an assignment the assignor could make; greedy choices need not keep them in order.
    found = sorted(outcomes, key=lambda outcome: outcome.cv)
    return Projection(assignor, found[0], found[-1])


def _drained_levels(assigned: Assignment, staying: Holdings) -> tuple[float, ...]:
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
    """One rebalance: counts balanced per scope (every topic for ``range``, the whole group
    otherwise), sticky, the unknown member order chosen for the ``best`` or ``worst`` end."""
    if not members:
        return {}
    load = {pod: math.fsum(p.lag for p in held) for pod, held in members.items()}
    # One member order for every scope, as the brokers iterate one member set for every topic:
    # the least loaded first for the best end, the most loaded first for the worst.
    order = sorted(members, key=lambda pod: (load[pod], pod), reverse=direction == "worst")
    rank = {pod: i for i, pod in enumerate(order)}
    pick = min if direction == "best" else max
    result: Holdings = {pod: [] for pod in members}
    for scope in _scopes(members, unassigned, assignor):
        quota = _quotas(order, {pod: _in(scope, held) for pod, held in members.items()},
                        sum(len(_in(scope, held)) for held in members.values()) + len(_in(scope, unassigned)), assignor)
        pool = list(_in(scope, unassigned))
        for pod in order:
            kept = sorted(_in(scope, members[pod]), key=_number)
            result[pod] += kept[:quota[pod]]
            pool += kept[quota[pod]:]
        room = {pod: quota[pod] - len(_in(scope, result[pod])) for pod in order}
        running = {pod: math.fsum(p.lag for p in held) for pod, held in result.items()}
        for partition in sorted(pool, key=lambda p: (-p.lag, p.topic, _number(p))):
            # Ties go to the earlier member in the order, at either end.
            receiver = pick((pod for pod in order if room[pod] > 0),
                            key=lambda pod: (running[pod], rank[pod] if direction == "best" else -rank[pod]))
            result[receiver].append(partition)
            running[receiver] += partition.lag
            room[receiver] -= 1
    return result


def _quotas(order: list[str], holding: Mapping[str, list[PartitionLag]], partitions: int,
            assignor: Assignor) -> dict[str, int]:
    """How many partitions of the scope each member ends with: the minimum quota, and one more
    for as many members as the division leaves over."""
    base, extra = divmod(partitions, len(order))
    quota = dict.fromkeys(order, base)
    if assignor == "uniform":
        first = order[:extra]  # member order alone decides
    else:  # range and cooperative-sticky: who holds more than the minimum keeps one more first
        first = [pod for pod in order if len(holding[pod]) > base] + [pod for pod in order if len(holding[pod]) <= base]
    for pod in first[:extra]:
        quota[pod] += 1
    return quota


def _scopes(members: Holdings, unassigned: Iterable[PartitionLag], assignor: Assignor) -> Sequence[str | None]:
    """What the counts are balanced over: each topic for ``range``, all partitions otherwise (None)."""
    if assignor != "range":
        return [None]
    topics = {p.topic for held in members.values() for p in held} | {p.topic for p in unassigned}
    return sorted(topics)


def _in(scope: str | None, partitions: Iterable[PartitionLag]) -> list[PartitionLag]:
    return [p for p in partitions if scope is None or p.topic == scope]


def _number(p: PartitionLag) -> tuple[str, int, str]:
    """A partition's place among its topic's: by number (Kafka's are integers, labels are strings)."""
    return (p.topic, int(p.partition), "") if p.partition.isdigit() else (p.topic, -1, p.partition)
