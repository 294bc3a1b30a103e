"""The decision core: statistics, outlier selection and the rules that say no. Pure.

No I/O, no clock: ``decide`` gets the pods as Kubernetes described them, the per-pod values the
metrics backend returned, the rules and ``now``, and returns a ``Verdict`` that names every
number it used, so the answer can always say what was measured and why it acted or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from statistics import fmean
from typing import Any, Literal

from rebalancer.partitions import Assignment, ByPartition, Culprit, HotPartition, assignment, culprit, redistribute

Selection = Literal["rotate_outliers", "hottest"]
Mode = Literal["cv", "hpa"]
Role = Literal["hot", "cold"]


@dataclass(frozen=True)
class PodState:
    """What the decision needs to know about one pod matched by the Deployment's selector."""

    name: str
    ready: bool
    owned: bool  # controlled, through its ReplicaSet, by the target Deployment
    created_at: datetime | None = None
    terminating: bool = False  # deletionTimestamp is set
    phase: str = "Running"
    excluded: bool = False  # annotated pod-rebalancer/exclude: "true"
    cpu_request: float | None = None  # cores requested by the target container (hpa mode)


@dataclass(frozen=True)
class Rules:
    """The knobs of one (target, signal) decision; built from the configuration."""

    threshold: float
    min_pods: int = 3
    min_pod_age: timedelta = timedelta(minutes=10)
    selection: Selection = "rotate_outliers"
    max_pods_per_action: int = 2
    max_missing_fraction: float = 0.2
    min_improvement: float = 0.1
    max_unready_fraction: float = 0.2
    mode: Mode = "cv"
    tolerance: float = 1.5  # hpa mode
    top_k: int = 2  # hpa mode
    floor: float = 0.0  # the pods' mean below which a skew does not matter
    unit: str = ""  # of the signal's values, for the reasons
    hot_partition_share: float = 0.5  # partitions: share of the hot pod's excess one partition may explain
    hot_inflow_ratio: float = 3.0  # partitions with inflow: a partition this many times the median inflow is hot


@dataclass(frozen=True)
class WorkloadStatus:
    """The Deployment's rollout state and its HorizontalPodAutoscaler's, for the safety guards."""

    replicas: int
    generation: int = 1
    observed_generation: int = 1
    updated_replicas: int | None = None  # None: take as equal to replicas
    available_replicas: int | None = None
    hpa_name: str | None = None
    hpa_current_replicas: int | None = None
    hpa_desired_replicas: int | None = None
    hpa_count: int = 0  # HorizontalPodAutoscalers whose scaleTargetRef is the Deployment
    hpa_cpu_target_utilization: float | None = None  # percent, from the HPA's Resource cpu Utilization target


def rollout_guard(workload: WorkloadStatus) -> str | None:
    """Evicting during a rollout fights the Deployment controller and can stall it."""
    if workload.observed_generation < workload.generation:
        return (f"the Deployment is rolling out (observedGeneration {workload.observed_generation} "
                f"< generation {workload.generation})")
    if workload.updated_replicas is not None and workload.updated_replicas < workload.replicas:
        return f"the Deployment is rolling out ({workload.updated_replicas} of {workload.replicas} replicas updated)"
    if workload.available_replicas is not None and workload.available_replicas < workload.replicas:
        # Also right after an eviction, until the replacement is available: moving more now would
        # take capacity the Deployment does not have yet.
        return (f"the Deployment is not fully available ({workload.available_replicas} of {workload.replicas} "
                "replicas available: a rollout, or pods being replaced)")
    return None


def hpa_guard(workload: WorkloadStatus) -> str | None:
    """While the autoscaler changes the replica count, the load per pod is about to change anyway."""
    current, desired = workload.hpa_current_replicas, workload.hpa_desired_replicas
    if workload.hpa_name and current is not None and desired is not None and current != desired:
        return f"HorizontalPodAutoscaler {workload.hpa_name} is scaling ({current} -> {desired} replicas)"
    return None


def unready_guard(pods: Sequence[PodState], max_unready_fraction: float) -> str | None:
    """Many unready pods mean something else is wrong; moving load around would add to it."""
    own = [p for p in pods if p.owned and not p.terminating]
    unready = [p for p in own if not p.ready or p.phase != "Running"]
    if own and len(unready) / len(own) > max_unready_fraction:
        return (f"{len(unready)} of {len(own)} pods of the Deployment are not Ready "
                f"(more than max_unready_fraction {max_unready_fraction:.0%})")
    return None


@dataclass(frozen=True)
class Stats:
    value: float  # coefficient of variation: population stddev / mean
    mean: float
    stddev: float
    pods: int  # number of pods the statistics were computed over


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
class Verdict:
    act: bool
    code: str  # stable, machine-readable: e.g. "skew_verified", "below_threshold"
    reason: str  # for people
    threshold: float
    stats: Stats | None = None
    hot: PodValue | None = None
    cold: PodValue | None = None
    selected: tuple[SelectedPod, ...] = ()
    projected_cv: float | None = None
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


def coefficient_of_variation(values: Sequence[float]) -> Stats:
    """Population stddev over mean. The caller guarantees at least one value and a mean > 0.

    Two passes with ``math.fsum`` (correctly rounded sums), not ``statistics.pstdev``: that one
    computes in exact fractions and took half of a 10,000-pod decision; this agrees with it to
    within a few units in the last place."""
    count = len(values)
    mean = math.fsum(values) / count
    stddev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / count)
    return Stats(value=stddev / mean, mean=mean, stddev=stddev, pods=count)


def projected_cv(values: Mapping[str, float], removed: Sequence[str]) -> float:
    """CV after the removed pods' load is spread evenly over the pods that stay.

    This is what a consumer-group rebalance does to a first approximation: the partitions (or
    requests) an evicted pod was serving move to the others.
    """
    staying = [v for pod, v in values.items() if pod not in removed]
    if not staying:
        raise ValueError("projection needs at least one pod that stays")
    moved = sum(values[pod] for pod in removed) / len(staying)
    after = [v + moved for v in staying]
    if fmean(after) == 0:
        return 0.0
    return coefficient_of_variation(after).value


def _fmt(x: float) -> str:
    # Lag runs to millions of messages: 50,000 reads better than 5e+04.
    return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"


def _split_pods(pods: Sequence[PodState]) -> tuple[list[PodState], list[PodNote]]:
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


def _usable_value(raw: float | None) -> str | None:
    """None when the value can enter the statistics, else why not."""
    if raw is None:
        return "no value"
    if math.isnan(raw) or math.isinf(raw):
        return f"non-finite value {raw}"
    if raw < 0:
        return f"negative value {_fmt(raw)}"
    return None


def _starting(pod: PodState, rules: Rules, now: datetime) -> bool:
    return pod.created_at is not None and now - pod.created_at < rules.min_pod_age


def _selectable(pod: PodState, rules: Rules, now: datetime) -> str | None:
    """None when the pod may be selected, else why not."""
    if pod.excluded:
        return 'annotated pod-rebalancer/exclude: "true"'
    if pod.created_at is None:
        return "creation time unknown"
    if _starting(pod, rules, now):
        age = now - pod.created_at
        return f"younger than min_pod_age ({int(age.total_seconds())}s < {int(rules.min_pod_age.total_seconds())}s)"
    return None


def _select(values: Mapping[str, float], candidates: Sequence[str], rules: Rules, count: int) -> list[SelectedPod]:
    # Ties are broken by name so the same data always selects the same pods.
    by_value = sorted(candidates, key=lambda pod: (values[pod], pod))
    if rules.selection == "hottest":
        return [SelectedPod(pod, values[pod], "hot") for pod in reversed(by_value[-count:])]
    hottest = by_value[-1]
    chosen = [SelectedPod(hottest, values[hottest], "hot")]
    if count >= 2 and len(by_value) >= 2:
        coldest = by_value[0]
        chosen.append(SelectedPod(coldest, values[coldest], "cold"))
    return chosen


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

    @property
    def ranked(self) -> list[str]:
        """Pods with a value, coldest first; ties broken by name, so the same data ranks alike."""
        return sorted(self.values, key=lambda pod: (self.values[pod], pod))

    def described(self) -> str:
        stats = self.stats
        assert stats is not None
        return (f"{self.signal} CV {_fmt(stats.value)} over {stats.pods} pods "
                f"(mean {_fmt(stats.mean)}, stddev {_fmt(stats.stddev)})")

    def verdict(self, act: bool, code: str, reason: str, **more: Any) -> Verdict:
        ranked = self.ranked if self.stats is not None else []
        return Verdict(
            act, code, reason, threshold=more.pop("threshold", self.rules.threshold), stats=self.stats,
            hot=PodValue(ranked[-1], self.values[ranked[-1]]) if ranked else None,
            cold=PodValue(ranked[0], self.values[ranked[0]]) if ranked else None,
            missing=self.missing, invalid=self.invalid, ignored=self.ignored, ready_pods=len(self.counted),
            mode=self.rules.mode, floor=self.rules.floor, assignment=self.assigned, **more,
        )

    def projected(self, removed: Sequence[str], draining: Sequence[str] = ()) -> float:
        """The CV after the removed pods' load moves to the others: spread evenly, or with
        partitions, partition by partition, each one whole (a slow consumer's backlog drains)."""
        if self.assigned is None:
            return projected_cv(self.values, removed)
        after = list(redistribute(self.assigned, removed, draining).values())
        return coefficient_of_variation(after).value if after and fmean(after) > 0 else 0.0


def _measure(signal: str, pods: Sequence[PodState], samples: Mapping[str, float], rules: Rules, now: datetime,
             by_partition: tuple[Assignment, Mapping[tuple[str, str], float] | None] | None = None) -> Measurement:
    assigned, inflow = by_partition or (None, None)
    counted, ignored = _split_pods(pods)
    values: dict[str, float] = {}
    missing: list[str] = []
    invalid: list[PodNote] = []
    for pod in counted:
        if assigned is not None and pod.name in assigned.idle:
            # No partition, so no work: its zero lag says nothing about the skew, and it is not missing data.
            ignored.append(PodNote(pod.name, "holds no partition: idle by assignment"))
            continue
        problem = _usable_value(samples.get(pod.name))
        if problem is None:
            values[pod.name] = samples[pod.name]
        elif problem == "no value" and _starting(pod, rules, now):
            # Every eviction's replacement is Ready before its first scrape: no data is expected
            # yet, so it is not missing data (it cannot be selected either, having no value).
            ignored.append(PodNote(pod.name, "starting: no value yet, younger than min_pod_age"))
        elif problem == "no value":
            missing.append(pod.name)
        else:
            invalid.append(PodNote(pod.name, problem))
    return Measurement(signal, rules, tuple(pods), tuple(counted), values, tuple(ignored), tuple(missing), tuple(invalid),
                       assigned=assigned, inflow=inflow)


def _refusal_before_statistics(m: Measurement) -> Verdict | None:
    """No statistics can be taken: no pods, too much data missing, too few values, all idle."""
    rules, signal = m.rules, m.signal
    if not m.counted:
        return m.verdict(False, "no_ready_pods", "the Deployment has no Ready pods to measure")
    if m.assigned is not None and not m.assigned.held:
        return m.verdict(False, "incomplete_data", f"no Ready pod of the Deployment holds a partition in the answer "
                         f"of the {signal} partitions query: nothing to measure")
    unusable = len(m.missing) + len(m.invalid)
    if unusable / len(m.counted) > rules.max_missing_fraction:
        return m.verdict(False, "incomplete_data", f"incomplete data: {unusable} of {len(m.counted)} Ready pods have no "
                         f"usable {signal} value (more than max_missing_fraction {_fmt(rules.max_missing_fraction)})")
    if len(m.values) < 2:
        return m.verdict(False, "too_few_pods", f"{len(m.values)} pod(s) with data: variance needs at least 2")
    if fmean(m.values.values()) == 0:
        return m.verdict(False, "idle", f"every pod reads 0 for {signal}: nothing to balance")
    return None


def _below_floor(m: Measurement) -> Verdict | None:
    """A skew of nothing is not a skew: near-idle pods are never churned."""
    stats, rules = m.stats, m.rules
    assert stats is not None
    if stats.mean >= rules.floor:
        return None
    return m.verdict(False, "below_floor", f"{m.described()}, but the mean {m.signal} {_amount(stats.mean, rules.unit)} is "
                     f"below the floor {_amount(rules.floor, rules.unit)}: a skew at this level does not matter, so nothing "
                     "is moved")


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":  # working sets read as MiB
        return f"{value / 2**20:,.4g} MiB"
    return f"{_fmt(value)} {unit}" if unit else _fmt(value)


def _culprit(m: Measurement) -> Culprit:
    """With partitions: whether the hottest pod's excess is a partition or its consumer."""
    if m.assigned is None or m.stats is None:
        return Culprit()
    return culprit(m.assigned, m.ranked[-1], m.stats.mean, m.rules.hot_partition_share, m.inflow, m.rules.hot_inflow_ratio)


def _hot_partition(m: Measurement, exceeds: str, found: Culprit) -> Verdict | None:
    """An excess that is mostly one partition: a partition moves whole, so no move can split it."""
    hot = found.hot
    if hot is None:
        return None
    return m.verdict(False, "hot_partition", (
        f"{exceeds}, but {hot.share:.0%} of {hot.pod}'s excess over the mean is one partition: {hot.topic}/{hot.partition} "
        f"with lag {_fmt(hot.lag)} (a typical partition has {_fmt(hot.typical)}; hot_partition_share "
        f"{m.rules.hot_partition_share:.0%}), and {hot.evidence}. A partition moves whole, so moving pods cannot split it: "
        "its next owner would be as hot. Look at the partition's keys or its producer instead"), hot_partition=hot)


def _assignment_note(m: Measurement, hottest: str, found: Culprit) -> str:
    """Why a partition-aware move helps: the assignment, or a consumer that falls behind."""
    if m.assigned is None:
        return ""
    over = m.assigned.over_fair_share()
    if hottest not in over:
        whole = f"partitions stay whole in the projection ({m.assigned.partitions} partitions over {len(m.counted)} pods)"
        return f"; {found.why}; {whole}, and its backlog drains at their next owners" if found.why else f"; {whole}"
    return (f"; the assignment is uneven: {hottest} holds {over[hottest]} of {m.assigned.partitions} partitions, "
            f"more than its fair share {m.assigned.fair_share}, and the projection keeps every partition whole")


def _safety(m: Measurement, workload: WorkloadStatus | None, exceeds: str, **more: Any) -> Verdict | None:
    """The guards every mode applies once the skew is there, in order; None when all pass."""
    rules = m.rules
    guards = [unready_guard(m.pods, rules.max_unready_fraction)]
    if workload is not None:
        guards += [rollout_guard(workload), hpa_guard(workload)]
    for code, why in zip(("too_many_unready", "rolling_out", "hpa_scaling"), guards, strict=False):
        if why is not None:
            return m.verdict(False, code, f"{exceeds}, but {why}", **more)
    if len(m.counted) - rules.min_pods <= 0:
        return m.verdict(False, "min_pods", f"{exceeds}, but the Deployment has {len(m.counted)} Ready pods "
                         f"and min_pods is {rules.min_pods}: none may be taken away", **more)
    return None


def _candidates(m: Measurement, now: datetime) -> tuple[list[str], tuple[PodNote, ...]]:
    """The selectable pods, coldest first, and the others with the cause."""
    by_pod = {pod.name: pod for pod in m.counted}
    candidates, passed_over = [], []
    for name in m.ranked:
        why_not = _selectable(by_pod[name], m.rules, now)
        if why_not is None:
            candidates.append(name)
        else:
            passed_over.append(PodNote(name, why_not))
    return candidates, tuple(passed_over)


def _hpa_facts(counted: Sequence[PodState], workload: WorkloadStatus | None) -> tuple[float, float] | str:
    """(the HPA's CPU target utilisation in percent, the pods' average CPU request in cores), or
    why they cannot be known."""
    if workload is None or workload.hpa_count == 0:
        return "no HorizontalPodAutoscaler targets the Deployment"
    if workload.hpa_count > 1:
        return f"{workload.hpa_count} HorizontalPodAutoscalers target the Deployment, so its target is ambiguous"
    if workload.hpa_cpu_target_utilization is None:
        return f"HorizontalPodAutoscaler {workload.hpa_name} has no CPU utilization target"
    requests = [p.cpu_request for p in counted if p.cpu_request]
    if not requests:
        return "no counted pod requests CPU for the container"
    return workload.hpa_cpu_target_utilization, math.fsum(requests) / len(requests)


def _decide_hpa(m: Measurement, now: datetime, workload: WorkloadStatus | None) -> Verdict:
    """PostHog's pod-rebalancer algorithm: the ``top_k`` busiest pods above the HPA's target usage
    x ``tolerance`` are hot; with the ``top_k`` idlest they are moved when that improves the hot
    pods' average by at least ``min_improvement`` (improvement = 1 - avg(hot + cold) / avg(hot)),
    the same rule as cv mode's (PostHog's own asks for strictly more).
    Unlike theirs, every safety guard, ``min_pods`` and ``min_pod_age`` still apply."""
    rules, values, measured = m.rules, m.values, m.described()
    facts = _hpa_facts(m.counted, workload)
    if isinstance(facts, str):
        return m.verdict(False, "no_hpa_target", f"{measured}; hpa mode cannot judge it: {facts}")
    utilization, request = facts
    target_usage = utilization / 100 * request
    limit = target_usage * rules.tolerance
    extra = {"hpa_target_utilization": utilization, "avg_cpu_request": request,
             "target_usage": target_usage, "tolerance": rules.tolerance, "tolerance_threshold": limit}
    explained = (f"{_fmt(limit)} cores (the HPA's {_fmt(utilization)}% of the average request {_fmt(request)} "
                 f"x tolerance {_fmt(rules.tolerance)})")
    top = [name for name in reversed(m.ranked[-rules.top_k:]) if values[name] > limit]
    if not top:
        return m.verdict(False, "below_threshold", f"{measured}; no pod uses more than {explained}: the skew is not there now",
                         threshold=limit, extra=extra)
    exceeds = f"{len(top)} of the {rules.top_k} busiest pods use more than {explained}"
    refusal = _safety(m, workload, exceeds, threshold=limit, extra=extra)
    if refusal is not None:
        return refusal
    candidates, passed_over = _candidates(m, now)
    allowed = len(m.counted) - rules.min_pods
    hot = [name for name in reversed(candidates) if values[name] > limit][: min(rules.top_k, allowed)]
    if not hot:
        return m.verdict(False, "no_candidates", f"{exceeds}, but none of them may be selected "
                         f"({len(passed_over)} passed over: too young or excluded)",
                         threshold=limit, extra=extra, passed_over=passed_over)
    cold = [name for name in candidates if name not in hot][: min(rules.top_k, allowed - len(hot))]
    selected = tuple([SelectedPod(n, values[n], "hot") for n in hot] + [SelectedPod(n, values[n], "cold") for n in cold])
    hot_average = fmean(values[n] for n in hot)
    improvement = 1 - fmean(s.value for s in selected) / hot_average
    chosen = ", ".join(f"{s.pod} ({s.role}, {_fmt(s.value)})" for s in selected)
    moved = f"moving {chosen} brings the hot pods' average {_fmt(hot_average)} to {_fmt(hot_average * (1 - improvement))}"
    outcome = {"threshold": limit, "extra": {**extra, "improvement": improvement}, "passed_over": passed_over,
               "selected": selected, "projected_cv": projected_cv(values, [s.pod for s in selected])}
    if improvement < rules.min_improvement:
        return m.verdict(False, "no_improvement", f"{exceeds}, but {moved} ({improvement:.1%} better, "
                         f"less than min_improvement {rules.min_improvement:.0%})", **outcome)
    return m.verdict(True, "skew_verified", f"{exceeds}; {moved} ({improvement:.1%} better); {measured}", **outcome)


def _decide_cv(m: Measurement, now: datetime, workload: WorkloadStatus | None) -> Verdict:
    """Act when the CV is above the threshold and moving the selected pods would lower it by at
    least ``min_improvement`` (the load spread evenly over the pods that remain)."""
    rules, stats, measured = m.rules, m.stats, m.described()
    assert stats is not None
    if stats.value <= rules.threshold:
        return m.verdict(False, "below_threshold",
                         f"{measured} is not above the threshold {_fmt(rules.threshold)}: the skew is not there now")
    exceeds = f"{measured} exceeds {_fmt(rules.threshold)}"
    found = _culprit(m)
    refusal = _hot_partition(m, exceeds, found) or _safety(m, workload, exceeds)
    if refusal is not None:
        return refusal
    candidates, passed_over = _candidates(m, now)
    if not candidates:
        return m.verdict(False, "no_candidates", f"{exceeds}, but no pod may be selected "
                         f"({len(passed_over)} passed over: too young or excluded)", passed_over=passed_over)
    count = min(rules.max_pods_per_action, len(m.counted) - rules.min_pods)
    selected = _select(m.values, candidates, rules, count)
    # A consumer found slow or stuck leaves its backlog behind: a healthy consumer drains it.
    after = m.projected([s.pod for s in selected], draining=[m.ranked[-1]] if found.why else [])
    improvement = 1 - after / stats.value
    chosen = ", ".join(f"{s.pod} ({s.role}, {_fmt(s.value)})" for s in selected)
    outcome = {"passed_over": passed_over, "selected": tuple(selected), "projected_cv": after,
               "extra": {"improvement": improvement}}
    if improvement < rules.min_improvement:
        return m.verdict(False, "no_improvement", f"{exceeds}, but moving {chosen} would only bring it to "
                         f"{_fmt(after)} ({improvement:.0%} better, min_improvement {rules.min_improvement:.0%})", **outcome)
    return m.verdict(True, "skew_verified", f"{measured} exceeds the threshold {_fmt(rules.threshold)}; selected {chosen}; "
                     f"projected CV after rebalancing {_fmt(after)} ({improvement:.0%} better)"
                     f"{_assignment_note(m, m.ranked[-1], found)}", **outcome)


def measured_skew(verdict: Verdict) -> tuple[float, bool] | None:
    """What the closed loop judges an earlier action by: the CV now, and whether the skew is gone
    altogether (every pod idle, or the level below the floor, where a skew does not matter).
    None when nothing could be measured."""
    if verdict.code == "idle":
        return 0.0, True
    if verdict.stats is None:
        return None
    return verdict.stats.value, verdict.code == "below_floor"


def decide(
    signal: str,
    pods: Sequence[PodState],
    samples: Mapping[str, float] | ByPartition,
    rules: Rules,
    now: datetime,
    workload: WorkloadStatus | None = None,
) -> Verdict:
    """Decide whether to act on one (target, signal), and on which pods.

    ``samples`` maps pod name to the value the metrics backend returned for it now; pods in
    ``samples`` that the Deployment does not have are ignored (the caller counts them). For
    partition-aware lag it is ``ByPartition`` (each pod's partitions and their lag): a pod's
    value is then the sum of its partitions, and the decision works at partition granularity.
    """
    by_partition = None
    if isinstance(samples, ByPartition):
        assigned = assignment([pod.name for pod in _split_pods(pods)[0]], samples.held)
        by_partition = (assigned, samples.inflow)
        samples = assigned.lag_by_pod()
    measurement = _measure(signal, pods, samples, rules, now, by_partition)
    refusal = _refusal_before_statistics(measurement)
    if refusal is not None:
        return refusal
    measurement = replace(measurement, stats=coefficient_of_variation(list(measurement.values.values())))
    refusal = _below_floor(measurement)
    if refusal is not None:
        return refusal
    decide_mode = _decide_hpa if rules.mode == "hpa" else _decide_cv
    return decide_mode(measurement, now, workload)
