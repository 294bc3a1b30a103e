"""One decision's measurement: which pods count, which values are usable, and the verdict
that carries every number along. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from rebalancer.core.assignors import Outcome, project
from rebalancer.core.partitions import Assignment, HotPartition
from rebalancer.core.statistics import Stats, fmt, projected_cv
from rebalancer.core.workload import Mode, PodState, Role, Rules


@dataclass(frozen=True)
class PodValue:
    pod: str
    value: float


@dataclass(frozen=True)
class SelectedPod:
    pod: str
    value: float
    role: Role


@dataclass(frozen=True)
class PodNote:
    """A pod left out of the statistics or of the selection, and why."""

    pod: str
    why: str


@dataclass(frozen=True)
class Projected:
    """The CV after a move, at the best and the worst end of what can happen. ``model`` names how:
    a Kafka assignor (uniform, range, cooperative-sticky) when the partitions are known, or
    ``even`` (the load spread evenly over the pods that stay) when they are not. With each
    partition's inflow known, a partition carries its inflow times its consumer's delay: each
    consumer that stays within ``delay_spread`` of its own delay now, a replacement anywhere in
    ``delay_seconds``."""

    best: float
    worst: float
    model: str
    delay_seconds: tuple[float, float] | None = None
    delay_spread: float | None = None
    # The lag left at the worst end, on average, when it is below the floor: no skew that matters
    # (both ends then count as a CV of 0, as a measured one would).
    left_below_floor: float | None = None


@dataclass(frozen=True)
class Verdict:
    act: bool
    code: str  # stable, machine-readable: e.g. "skew_verified", "below_threshold"
    reason: str  # for people
    threshold: float
    stats: Stats | None = None
    hot: PodValue | None = None
    cold: PodValue | None = None
    selected: tuple[SelectedPod, ...] = ()
    projected_cv: float | None = None  # what min_improvement was judged on: the worst end of ``projected``
    projected: Projected | None = None
    missing: tuple[str, ...] = ()  # Ready pods the metrics backend had no value for
    invalid: tuple[PodNote, ...] = ()  # values that cannot be used (NaN, Inf, negative)
    ignored: tuple[PodNote, ...] = ()  # pods not counted at all (not Ready, terminating, not owned)
    passed_over: tuple[PodNote, ...] = ()  # counted, but never selectable (too young, excluded)
    ready_pods: int = 0
    mode: Mode = "cv"  # which test decided: the CV against a threshold, or hpa mode's line in cores
    extra: dict[str, float] = field(default_factory=dict)
    floor: float = 0.0
    assignment: Assignment | None = None  # partition-aware lag: who holds which partitions
    hot_partition: HotPartition | None = None


def split_pods(pods: Sequence[PodState]) -> tuple[list[PodState], list[PodNote]]:
    """Pods the statistics count (Ready, owned, not terminating) and the others with the cause."""
    counted, ignored = [], []
    for pod in sorted(pods, key=lambda p: p.name):
        if not pod.owned:
            ignored.append(PodNote(pod.name, "not owned by the Deployment (matched its selector only)"))
        elif pod.terminating:
            ignored.append(PodNote(pod.name, "terminating"))
        elif pod.phase != "Running":
            ignored.append(PodNote(pod.name, f"phase {pod.phase}"))
        elif not pod.ready:
            ignored.append(PodNote(pod.name, "not Ready"))
        else:
            counted.append(pod)
    return counted, ignored


def usable_value(raw: float | None) -> str | None:
    """None when the value can enter the statistics, else why not."""
    if raw is None:
        return "no value"
    if math.isnan(raw) or math.isinf(raw):
        return f"non-finite value {raw}"
    if raw < 0:
        return f"negative value {fmt(raw)}"
    return None


def starting(pod: PodState, rules: Rules, now: datetime) -> bool:
    return pod.created_at is not None and now - pod.created_at < rules.min_pod_age


def selectable(pod: PodState, rules: Rules, now: datetime) -> str | None:
    """None when the pod may be selected, else why not."""
    if pod.excluded:
        return 'annotated pod-rebalancer/exclude: "true"'
    if pod.created_at is None:
        return "creation time unknown"
    if starting(pod, rules, now):
        age = now - pod.created_at
        if age < timedelta(0):  # the API server's clock runs ahead of ours: a pod that new is still starting
            ahead = int(-age.total_seconds())
            return f"created {ahead}s ahead of the function's clock (the API server's clock is ahead): taken as starting"
        return f"younger than min_pod_age ({int(age.total_seconds())}s < {int(rules.min_pod_age.total_seconds())}s)"
    return None



@dataclass(frozen=True)
class Measurement:
    """What the pods and the metrics say now, before any mode's rule; both modes read it, none
    changes it. ``verdict`` builds every answer from it, so the numbers always come along."""

    signal: str
    rules: Rules
    pods: tuple[PodState, ...]  # every pod the Deployment's selector matched
    counted: tuple[PodState, ...]  # Ready, owned, not terminating
    values: Mapping[str, float]  # the usable value of each counted pod that has one
    ignored: tuple[PodNote, ...] = ()
    missing: tuple[str, ...] = ()
    invalid: tuple[PodNote, ...] = ()
    stats: Stats | None = None
    assigned: Assignment | None = None  # partition-aware lag only
    inflow: Mapping[tuple[str, str], float] | None = None  # partition-aware lag with an inflow query

    @cached_property
    def ranked(self) -> list[str]:
        """Pods with a value, coldest first; ties broken by name, so the same data ranks alike.
        Sorted once: a verdict and its selection read it several times (10,000 pods each)."""
        return sorted(self.values, key=lambda pod: (self.values[pod], pod))

    def described(self) -> str:
        stats = self.stats
        assert stats is not None
        return (f"{self.signal} CV {fmt(stats.value)} over {stats.pods} pods "
                f"(mean {fmt(stats.mean)}, stddev {fmt(stats.stddev)})")

    def verdict(self, act: bool, code: str, reason: str, **more: Any) -> Verdict:
        ranked = self.ranked if self.stats is not None else []
        return Verdict(
            act, code, reason, threshold=more.pop("threshold", self.rules.threshold), stats=self.stats,
            hot=PodValue(ranked[-1], self.values[ranked[-1]]) if ranked else None,
            cold=PodValue(ranked[0], self.values[ranked[0]]) if ranked else None,
            missing=self.missing, invalid=self.invalid, ignored=self.ignored, ready_pods=len(self.counted),
            mode=self.rules.mode, floor=self.rules.floor, assignment=self.assigned, **more,
        )

    def projected(self, removed: Sequence[str], draining: Sequence[str] = ()) -> Projected:
        """The CV after the removed pods' load moves. With partitions, as the target's assignor
        moves them, whole, by count, replacements included, at its best and worst end (a slow
        consumer's backlog drains; with the inflow, each partition at its inflow times a delay);
        without, spread evenly over the pods that stay."""
        if self.assigned is None:
            even = projected_cv(self.values, removed)
            return Projected(even, even, "even")
        ends = project(self.assigned, removed, self.rules.assignor, draining, self.inflow, self.rules.delay_spread)
        newcomer = None if ends.delays is None else (ends.delays.newcomer.low, ends.delays.newcomer.high)
        # A stuck consumer's backlog drains, and the consumers that stay may read almost nothing:
        # a skew of nothing is not a skew, after the move as before it.
        def judged(end: Outcome) -> float:
            return 0.0 if end.mean < self.rules.floor else end.cv

        left = ends.worst.mean
        return Projected(judged(ends.best), judged(ends.worst), ends.assignor, newcomer,
                         None if newcomer is None else self.rules.delay_spread,
                         left_below_floor=left if left < self.rules.floor else None)


def measure(signal: str, pods: Sequence[PodState], samples: Mapping[str, float], rules: Rules, now: datetime,
             by_partition: tuple[Assignment, Mapping[tuple[str, str], float] | None] | None = None) -> Measurement:
    assigned, inflow = by_partition or (None, None)
    counted, ignored = split_pods(pods)
    values: dict[str, float] = {}
    missing: list[str] = []
    invalid: list[PodNote] = []
    for pod in counted:
        if assigned is not None and pod.name in assigned.idle:
            # No partition, so no work: its zero lag says nothing about the skew, and it is not missing data.
            ignored.append(PodNote(pod.name, "holds no partition: idle by assignment"))
            continue
        problem = usable_value(samples.get(pod.name))
        if problem is None:
            values[pod.name] = samples[pod.name]
        elif problem == "no value" and starting(pod, rules, now):
            # Every eviction's replacement is Ready before its first scrape: no data is expected
            # yet, so it is not missing data (it cannot be selected either, having no value).
            ignored.append(PodNote(pod.name, "starting: no value yet, younger than min_pod_age"))
        elif problem == "no value":
            missing.append(pod.name)
        else:
            invalid.append(PodNote(pod.name, problem))
    return Measurement(signal, rules, tuple(pods), tuple(counted), values, tuple(ignored), tuple(missing), tuple(invalid),
                       assigned=assigned, inflow=inflow)

