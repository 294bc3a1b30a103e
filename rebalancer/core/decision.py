"""The answer's types: one ``Decision`` per (target, signal) or refused alert, and what acting
adds to it (``ActResult``). ``Decision.to_json`` is the one serializer: the HTTP answer and the
decision log line are both made from it (docs/http-api.md, "The answer")."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from rebalancer.core.composite import Composite
from rebalancer.core.measurement import PodNote, SelectedPod, Verdict

if TYPE_CHECKING:  # imported where a group is read (measuring): the cold start of the rest does not pay for it
    from rebalancer.core.groups import GroupReport

# Every decision code, the stable word that says why (docs/http-api.md, "The answer"). A test keeps the
# table in docs/http-api.md and this list the same.
CODES = (
    "skew_verified", "acted", "all_actions_blocked", "lock_taken", "cooldown", "hourly_budget", "ineffective",
    "hysteresis", "outside_window", "proposed", "approval_stale", "already_acted", "below_threshold", "idle",
    "incomplete_data", "too_few_pods", "no_ready_pods", "below_floor", "hot_partition", "min_pods", "no_candidates",
    "no_improvement", "no_hpa_target", "rolling_out", "hpa_scaling", "too_many_unready", "state_unreadable",
    "kubernetes_error", "query_error", "unknown_group", "group_empty", "group_rebalancing", "kafka_error",
)


@dataclass(frozen=True)
class Verified:
    """What was measured now: the CV (or, in hpa mode, the line in cores) against the threshold."""

    value: float | None
    threshold: float
    pods: int
    mean: float | None
    stddev: float | None
    floor: float | None = None  # the mean below which a skew does not matter

    @classmethod
    def of(cls, verdict: Verdict | None, threshold: float) -> Verified:
        stats = verdict.stats if verdict else None
        if verdict is None or stats is None:
            return cls(None, threshold, 0, None, None, verdict.floor if verdict else None)
        return cls(stats.value, threshold, stats.pods, stats.mean, stats.stddev, verdict.floor)


def _notes(notes: tuple[PodNote, ...]) -> list[dict[str, str]]:
    return [{"pod": n.pod, "why": n.why} for n in notes]


@dataclass(frozen=True)
class VerdictDetails:
    """For a decision that reached the decision core: the query, and everything it measured."""

    query: str
    dry_run: bool
    verdict: Verdict
    series_ignored: int  # series for pods the Deployment does not have (other workloads, pods gone)
    composite: Composite | None = None  # a composite decision's components

    def to_json(self) -> dict[str, Any]:
        v = self.verdict
        return {
            "query": self.query,
            "dry_run": self.dry_run,
            "hot": {"pod": v.hot.pod, "value": v.hot.value} if v.hot else None,
            "cold": {"pod": v.cold.pod, "value": v.cold.value} if v.cold else None,
            "projected_cv": v.projected_cv,  # what min_improvement was judged on: the worst end
            "projected": None if v.projected is None else asdict(v.projected),
            "measures": dict(v.extra),  # improvement; in hpa mode also the HPA target and the threshold it gives
            "ready_pods": v.ready_pods,
            "missing_pods": list(v.missing),
            "invalid_pods": _notes(v.invalid),
            "ignored_pods": _notes(v.ignored),
            "passed_over": _notes(v.passed_over),
            "series_ignored": self.series_ignored,
            **({"partitions": _partitions(v)} if v.assignment is not None else {}),
            **({"composite": _composite(self.composite, v)} if self.composite is not None else {}),
        }


def _composite(scored: Composite, verdict: Verdict) -> dict[str, Any]:
    """The weights, each component's mean, and every component of every selected pod (and of the
    hottest and coldest), so the answer shows why a pod scored what it did."""
    shown = {s.pod for s in verdict.selected} | {p.pod for p in (verdict.hot, verdict.cold) if p is not None}
    return {
        "weights": scored.weights,
        "means": scored.means,
        "left_out": scored.left_out,
        "pods": {pod: {**scored.components[pod], "score": scored.scores.get(pod)} for pod in sorted(shown)
                 if pod in scored.components},
    }


def _partitions(verdict: Verdict) -> dict[str, Any]:
    """Partition-aware lag: who holds what, and the partition that explains the skew, if one does."""
    assigned, hot = verdict.assignment, verdict.hot_partition
    assert assigned is not None
    return {
        "count": assigned.partitions,
        "fair_share": assigned.fair_share,
        "held": {pod: [f"{p.topic}/{p.partition}" for p in held] for pod, held in sorted(assigned.held.items())},
        "over_fair_share": assigned.over_fair_share(),
        "idle_by_assignment": list(assigned.idle),
        "hot_partition": None if hot is None else {"pod": hot.pod, "topic": hot.topic, "partition": hot.partition,
                                                   "lag": hot.lag, "share": hot.share, "typical": hot.typical,
                                                   "evidence": hot.evidence},
    }


def _group(report: GroupReport) -> dict[str, Any]:
    """The group as read at the brokers, in the answer's JSON shapes (lists, not tuples)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(report).items()}


@dataclass(frozen=True)
class ActResult:
    """What the act step made of a verdict that wanted to act (acting.Actor.act)."""

    outcome: str  # acted, blocked, dry_run, skipped
    code: str | None  # None: the verdict's own code stands (a dry run's skew_verified)
    reason: str
    lock: str | None = None  # lock_free, cooldown, hourly_budget, taken, taken_by_this_invocation
    cooldown_until: str | None = None
    actions: tuple[dict[str, Any], ...] = ()
    audit_errors: tuple[str, ...] = ()
    abandoned: tuple[dict[str, str], ...] = ()
    backoff: dict[str, Any] | None = None  # why an ineffective target backs off, and until when
    proposal: dict[str, Any] | None = None  # approval mode: the proposal made, waiting, or approved


@dataclass(frozen=True)
class Decision:
    target: str | None
    signal: str | None
    alerts: tuple[str, ...]
    outcome: str = "skipped"
    reason: str = ""
    verified: Verified | None = None
    selected: tuple[SelectedPod, ...] = ()
    namespace: str | None = None  # absent for a refused alert, which names no target
    deployment: str | None = None
    code: str | None = None
    query: str | None = None  # a query the backend refused (no details then)
    details: VerdictDetails | None = None
    act: ActResult | None = None
    cooldown_until: str | None = None
    effects: tuple[dict[str, Any], ...] = ()  # the closed loop: earlier actions' effects measured now
    source: str | None = None  # where the signal was measured: "metrics", or "kafka" (the brokers)
    group: GroupReport | None = None  # source kafka: the consumer group as read, and what mapped to no pod

    def acted_on(self, result: ActResult) -> Decision:
        return replace(self, outcome=result.outcome, code=result.code or self.code, reason=result.reason,
                       cooldown_until=result.cooldown_until, act=result)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target}
        if self.namespace is not None:
            out.update(namespace=self.namespace, deployment=self.deployment)
        out.update(
            signal=self.signal, alerts=list(self.alerts), outcome=self.outcome, reason=self.reason,
            verified=asdict(self.verified) if self.verified else None,
            selected=[{"pod": s.pod, "value": s.value, "role": s.role} for s in self.selected],
            actions=list(self.act.actions) if self.act else [],
            cooldown_until=self.cooldown_until,
        )
        if self.code is not None:
            out["code"] = self.code
        if self.source is not None:
            out["source"] = self.source
        if self.group is not None:
            out["group"] = _group(self.group)
        if self.details is not None:
            out.update(self.details.to_json())
        elif self.query is not None:
            out["query"] = self.query
        if self.act is not None:
            if self.act.lock is not None:
                out["lock"] = self.act.lock
            if self.act.audit_errors:
                out["audit_errors"] = list(self.act.audit_errors)
            if self.act.abandoned:
                out["abandoned"] = list(self.act.abandoned)
            if self.act.backoff is not None:
                out["backoff"] = self.act.backoff
            if self.act.proposal is not None:
                out["proposal"] = self.act.proposal
        if self.effects:
            out["effects"] = list(self.effects)
        return out
