"""The decision core's rules: the refusals, the two modes (CV and hpa), the choice of pods and
the projection that gates it. Pure.

No I/O, no clock: ``decide`` gets the pods as Kubernetes described them, the per-pod values the
metrics backend returned, the rules and ``now``, and returns a ``Verdict`` that names every
number it used, so the answer can always say what was measured and why it acted or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from statistics import fmean
from typing import Any

from rebalancer.core.measurement import (
    Measurement,
    PodNote,
    Projected,
    SelectedPod,
    Verdict,
    measure,
    selectable,
    split_pods,
)
from rebalancer.core.partitions import ByPartition, Culprit, assignment, culprit
from rebalancer.core.statistics import coefficient_of_variation, fmt, projected_cv
from rebalancer.core.workload import PodState, Rules, WorkloadStatus, hpa_guard, rollout_guard, unready_guard


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
                         f"usable {signal} value (more than max_missing_fraction {fmt(rules.max_missing_fraction)})")
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
    return f"{fmt(value)} {unit}" if unit else fmt(value)


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
        f"with lag {fmt(hot.lag)} (a typical partition has {fmt(hot.typical)}; hot_partition_share "
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
    slow = f"; {found.why}, and its backlog drains at their next owners" if found.why else ""
    return (f"; the assignment is uneven: {hottest} holds {over[hottest]} of {m.assigned.partitions} partitions, "
            f"more than its fair share {m.assigned.fair_share}, and the projection keeps every partition whole{slow}")


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
        why_not = selectable(by_pod[name], m.rules, now)
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
    explained = (f"{fmt(limit)} cores (the HPA's {fmt(utilization)}% of the average request {fmt(request)} "
                 f"x tolerance {fmt(rules.tolerance)})")
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
    chosen = ", ".join(f"{s.pod} ({s.role}, {fmt(s.value)})" for s in selected)
    moved = f"moving {chosen} brings the hot pods' average {fmt(hot_average)} to {fmt(hot_average * (1 - improvement))}"
    outcome = {"threshold": limit, "extra": {**extra, "improvement": improvement}, "passed_over": passed_over,
               "selected": selected, "projected_cv": (even := projected_cv(values, [s.pod for s in selected])),
               "projected": Projected(even, even, "even")}
    if improvement < rules.min_improvement:
        return m.verdict(False, "no_improvement", f"{exceeds}, but {moved} ({improvement:.1%} better, "
                         f"less than min_improvement {rules.min_improvement:.0%})", **outcome)
    return m.verdict(True, "skew_verified", f"{exceeds}; {moved} ({improvement:.1%} better); {measured}", **outcome)


def _decide_cv(m: Measurement, now: datetime, workload: WorkloadStatus | None) -> Verdict:
    """Act when the CV is above the threshold and moving the selected pods would lower it by at
    least ``min_improvement``: the load spread evenly over the pods that remain or, with
    partitions, moved as the target's assignor moves them, judged on the worst end."""
    rules, stats, measured = m.rules, m.stats, m.described()
    assert stats is not None
    if stats.value <= rules.threshold:
        return m.verdict(False, "below_threshold",
                         f"{measured} is not above the threshold {fmt(rules.threshold)}: the skew is not there now")
    exceeds = f"{measured} exceeds {fmt(rules.threshold)}"
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
    projected = m.projected([s.pod for s in selected], draining=[m.ranked[-1]] if found.why else [])
    # Judged on the worst end: the move must help whatever the assignor does.
    improvement = 1 - projected.worst / stats.value
    chosen = ", ".join(f"{s.pod} ({s.role}, {fmt(s.value)})" for s in selected)
    outcome = {"passed_over": passed_over, "selected": tuple(selected), "projected_cv": projected.worst,
               "projected": projected, "extra": {"improvement": improvement}}
    ranged = projected.best != projected.worst
    if improvement < rules.min_improvement:
        return m.verdict(False, "no_improvement", f"{exceeds}, but moving {chosen} would only bring it to "
                         f"{_projection(projected)} ({improvement:.0%} better{' at worst' if ranged else ''}, "
                         f"min_improvement {rules.min_improvement:.0%})", **outcome)
    worst_helps = f"even the worst end is {improvement:.0%} better" if ranged else f"{improvement:.0%} better"
    return m.verdict(True, "skew_verified", f"{measured} exceeds the threshold {fmt(rules.threshold)}; selected {chosen}; "
                     f"projected CV after rebalancing {_projection(projected)} ({worst_helps})"
                     f"{_assignment_note(m, m.ranked[-1], found)}", **outcome)


def _projection(projected: Projected) -> str:
    """The projected CV as the answer says it: one value, or the range and what made it."""
    if projected.model == "even":
        return fmt(projected.worst)
    if projected.left_below_floor is not None:
        return (f"{fmt(projected.worst)} (the lag left, {fmt(projected.left_below_floor)} a consumer at the "
                f"{projected.model} assignor's worst assignment, is below the floor: no skew that matters)")
    delays = "" if projected.delay_seconds is None else (
        f", each consumer that stays within {projected.delay_spread:.0%} of its delay now, a replacement "
        f"{fmt(projected.delay_seconds[0])} to {fmt(projected.delay_seconds[1])} s behind its partitions' inflow")
    if projected.best == projected.worst:
        return f"{fmt(projected.worst)} (the {projected.model} assignor's only outcome{delays})"
    return (f"{fmt(projected.best)} to {fmt(projected.worst)} (the {projected.model} assignor's best and worst "
            f"assignment{delays})")


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
        members = samples.members
        assigned = assignment([pod.name for pod in split_pods(pods)[0] if members is None or pod.name in members],
                              samples.held)
        by_partition = (assigned, samples.inflow)
        samples = assigned.lag_by_pod()
    measurement = measure(signal, pods, samples, rules, now, by_partition)
    refusal = _refusal_before_statistics(measurement)
    if refusal is not None:
        return refusal
    measurement = replace(measurement, stats=coefficient_of_variation(list(measurement.values.values())))
    refusal = _below_floor(measurement)
    if refusal is not None:
        return refusal
    decide_mode = _decide_hpa if rules.mode == "hpa" else _decide_cv
    return decide_mode(measurement, now, workload)
