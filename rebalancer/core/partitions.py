"""Kafka lag at partition granularity. Pure.

A consumer group's lag lives in partitions, and a partition moves whole: a rebalance hands each
of an evicted consumer's partitions to one other consumer. So an excess that is mostly one
partition cannot be split by moving pods (the next owner is just as hot), an uneven assignment
can be evened out, and a projection is only honest if it keeps every partition whole. Pods that
hold no partition (more consumers than partitions) have no lag because they have no work, which
says nothing about the skew.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: str
    lag: float


@dataclass(frozen=True)
class ByPartition:
    """What a partitions query answered: each pod's partitions, with their lag, and, when an
    inflow query is configured, each partition's inflow (messages/s into it, by (topic, partition)).
    ``members``, when the group itself was asked: the pods that are members of it. A pod outside
    it holds nothing because it consumes nothing (starting, or broken), which is not idleness."""

    held: Mapping[str, Sequence[PartitionLag]]
    inflow: Mapping[tuple[str, str], float] | None = None
    members: frozenset[str] | None = None


@dataclass(frozen=True)
class HotPartition:
    """One partition that explains most of the hottest pod's excess over the mean."""

    pod: str
    topic: str
    partition: str
    lag: float
    share: float  # of the pod's excess over the mean that this partition explains (capped at 1)
    typical: float  # the median partition's lag, what an ordinary partition carries
    evidence: str = ""  # what says it is the partition and not its consumer


@dataclass(frozen=True)
class Culprit:
    """Whether the hottest pod's excess is a partition no move can split (``hot``) or its
    consumer, and what says so; ``why`` is empty when the excess is spread over partitions."""

    hot: HotPartition | None = None
    why: str = ""


@dataclass(frozen=True)
class Assignment:
    """Who holds which partitions: ``held`` for the pods holding any, ``idle`` for the others."""

    held: Mapping[str, tuple[PartitionLag, ...]]
    idle: tuple[str, ...]

    @property
    def partitions(self) -> int:
        return sum(len(p) for p in self.held.values())

    @property
    def fair_share(self) -> int:
        """The most partitions a consumer holds when they are spread evenly over every consumer."""
        consumers = len(self.held) + len(self.idle)
        return math.ceil(self.partitions / consumers) if consumers else 0

    def lag_by_pod(self) -> dict[str, float]:
        return {pod: math.fsum(p.lag for p in held) for pod, held in self.held.items()}

    def over_fair_share(self) -> dict[str, int]:
        """The pods holding more partitions than their fair share, with how many they hold."""
        share = self.fair_share
        return {pod: len(held) for pod, held in sorted(self.held.items()) if len(held) > share}


def assignment(pods: Sequence[str], by_pod: Mapping[str, Sequence[PartitionLag]]) -> Assignment:
    """The assignment among ``pods`` (the counted ones); partitions held by other pods are left out."""
    held = {pod: tuple(by_pod[pod]) for pod in pods if by_pod.get(pod)}
    return Assignment(held, tuple(pod for pod in pods if pod not in held))


def culprit(assigned: Assignment, hottest: str, mean: float, share_limit: float,
            inflow: Mapping[tuple[str, str], float] | None = None, inflow_ratio: float = 3.0) -> Culprit:
    """Is the hottest pod's excess over the mean one partition that no move can split, or its consumer?

    Lag alone cannot tell a hot partition from a slow consumer: a consumer that stops lets each of
    its partitions fall behind, and with one partition per pod that partition "explains" all of
    the excess. So, when one partition explains at least ``share_limit`` of the excess (how much
    more than a typical, median, partition it carries):
    - the partition's inflow decides where it is known: far above the median partition's (at least
      ``inflow_ratio`` times) it is a hot partition, else the consumer is slow or stuck;
    - else the pod's other partitions do: keeping up (their median no further above the typical
      partition than ``1 - share_limit`` of the way to the biggest) it is the partition, falling
      behind too it is the consumer;
    - a pod holding one partition, with no inflow known, is never called a hot partition: moving
      it is one action, and the closed loop judges its effect.
    When no partition explains that much, the excess is spread over the pod's partitions: every
    one of them at least twice a typical partition's lag says the consumer is slow (a real group's
    slow consumer held three partitions, none over half its excess).
    """
    held = assigned.held.get(hottest, ())
    lag = assigned.lag_by_pod().get(hottest, 0.0)
    excess = lag - mean
    if not held or excess <= 0:
        return Culprit()
    biggest = max(held, key=lambda p: (p.lag, p.topic, p.partition))
    typical = median(p.lag for partitions in assigned.held.values() for p in partitions)
    share = min(1.0, max(0.0, (biggest.lag - typical) / excess))
    if share < share_limit:
        return _spread(held, hottest, typical)
    name = f"{biggest.topic}/{biggest.partition}"

    def hot(evidence: str) -> Culprit:
        return Culprit(HotPartition(hottest, biggest.topic, biggest.partition, biggest.lag, share, typical, evidence))

    rate = inflow.get((biggest.topic, biggest.partition)) if inflow else None
    if inflow and rate is not None:
        usual = median(inflow.values())
        if rate >= inflow_ratio * usual and rate > 0:
            return hot(f"its inflow {_rate(rate)} is {_times(rate, usual)} the median partition's {_rate(usual)}")
        return Culprit(why=f"{name} carries most of {hottest}'s excess, but its inflow {_rate(rate)} is ordinary (the "
                           f"median partition's is {_rate(usual)}, hot from {inflow_ratio:g} times that): the consumer is "
                           "slow or stuck, so moving it can help")
    others = sorted(p.lag for p in held if p is not biggest)
    if others:
        keeping_up = typical + (biggest.lag - typical) * (1 - share_limit)
        if median(others) <= keeping_up:
            return hot(f"{hottest}'s other {len(others)} partition(s) keep up (median lag {_fmt(median(others))})")
        return Culprit(why=f"all {len(held)} of {hottest}'s partitions fall behind (the others' median lag "
                           f"{_fmt(median(others))}, a typical partition's {_fmt(typical)}): the consumer is slow or "
                           "stuck, not one partition")
    return Culprit(why=f"{hottest} holds one partition, {name}, and no inflow query says whether the partition or "
                       "its consumer is at fault: one move, whose effect the closed loop judges")


def _spread(held: Sequence[PartitionLag], hottest: str, typical: float) -> Culprit:
    """An excess spread over the pod's partitions: a consumer that falls behind on every one of
    them (each at least twice a typical partition) is slow, and its backlog drains at the next
    owners; else the pod holds more, or busier, partitions than the others."""
    least = min(p.lag for p in held)
    if len(held) > 1 and least > 0 and least >= 2 * typical:
        return Culprit(why=f"all {len(held)} of {hottest}'s partitions fall behind (the least {_fmt(least)}, a "
                           f"typical partition's {_fmt(typical)}): the consumer is slow or stuck")
    return Culprit()


def _rate(per_second: float) -> str:
    return f"{per_second:,.3g}/s"


def _times(value: float, base: float) -> str:
    return f"{value / base:,.3g} times" if base > 0 else "far above"


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"
