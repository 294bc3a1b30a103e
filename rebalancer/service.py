"""Orchestration: plan -> read Kubernetes -> query metrics -> decide -> answer. No policy here.

``handle`` gets its collaborators and ``now`` passed in and returns the whole decision record;
it never raises for a decision that could not be made: permanent problems become a skipped
decision with the reason, and a temporary one (a backend unreachable) makes the whole answer a
503 that still lists what was decided before it, so that Alertmanager retries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, cast, get_args

from rebalancer.acting import Actor, Observed
from rebalancer.alerts import Plan, Refusal, WorkItem
from rebalancer.background import BackgroundReads
from rebalancer.config import Settings, SignalName, Target
from rebalancer.cooldown import decode_proposals
from rebalancer.core.decision import Decision, VerdictDetails, Verified
from rebalancer.core.measurement import Verdict
from rebalancer.core.policy import decide
from rebalancer.core.proposals import Proposal, target_of
from rebalancer.core.timestamps import stamp
from rebalancer.core.workload import Assignor, Rules
from rebalancer.errors import KafkaAccessError, KubeError, MetricsQueryError, PermanentError, StateError, TemporaryError
from rebalancer.invocation import Attempt, TargetRun
from rebalancer.measuring import Measured, Measurer
from rebalancer.ports import GroupReader, MetricsReader, PodReader
from rebalancer.telemetry import Telemetry

# Top-level outcome, from the strongest: the first one any decision has wins.
OUTCOME_PRECEDENCE = ("acted", "blocked", "dry_run", "skipped", "rejected")


@dataclass
class Dependencies:
    settings: Settings
    kube: PodReader
    metrics: MetricsReader
    telemetry: Telemetry
    logger: logging.Logger
    actor: Actor
    groups: Mapping[str, GroupReader] = field(default_factory=dict)  # target name -> its group at the brokers
    background: BackgroundReads = field(default_factory=BackgroundReads)  # the reads beside the Kubernetes read


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]


def _decision(target: Target, signal: SignalName, alerts: Iterable[str], **fields: Any) -> Decision:
    threshold = target.threshold(signal) if signal in target.decision_signals() else 0.0
    fields.setdefault("verified", Verified.of(None, threshold))  # nothing measured (yet)
    return Decision(target.name, signal, tuple(alerts), namespace=target.namespace, deployment=target.deployment, **fields)


def _refusal(refusal: Refusal) -> Decision:
    return Decision(refusal.target, refusal.signal, (refusal.alert,), outcome="rejected" if refusal.refused else "skipped",
                    reason=refusal.reason)


def _from_verdict(target: Target, signal: SignalName, alerts: Iterable[str], verdict: Verdict,
                  details: VerdictDetails) -> Decision:
    """What was measured and decided; a verdict that wants to act is completed by the act step."""
    return _decision(target, signal, alerts, reason=verdict.reason, code=verdict.code,
                     verified=Verified.of(verdict, verdict.threshold), selected=verdict.selected, details=details)


@dataclass(frozen=True)
class _Call:
    """The invocation's facts every signal's verification shares."""

    now: datetime
    dry_run: bool
    invocation: str
    measurer: Measurer
    approving: Proposal | None = None


def _verify_signal(run: TargetRun, signal: SignalName, item: WorkItem, deps: Dependencies, call: _Call) -> Decision:
    """One signal: query, decide, measure earlier actions' effects, act when the verdict says so."""
    target, found, now = run.target, run.found, call.now
    source = "kafka" if target.kafka_source(signal) is not None else None
    try:
        measured = call.measurer.measure(signal, found)
    except MetricsQueryError as e:
        deps.telemetry.upstream_errors.labels("metrics", "permanent").inc()
        return _decision(target, signal, item.alerts, code="query_error", query=call.measurer.query(signal),
                         reason=f"cannot verify: {e}", source=source)
    except KafkaAccessError as e:
        deps.telemetry.upstream_errors.labels("kafka", "permanent").inc()
        return _decision(target, signal, item.alerts, code="kafka_error", query=call.measurer.query(signal),
                         reason=f"cannot verify at the brokers, nothing was done: {e}", source=source)
    if measured.refusal is not None:
        return _decision(target, signal, item.alerts, code=measured.refusal.code, query=measured.query,
                         reason=measured.refusal.reason, source=source, group=measured.group)
    verdict = decide(signal, found.pods, measured.samples, _rules(target, signal, measured), now, workload=found.workload)
    if verdict.stats is not None:
        deps.telemetry.verified_cv.labels(target.name, signal).set(verdict.stats.value)
        deps.telemetry.verified_pods.labels(target.name, signal).set(verdict.stats.pods)
        deps.telemetry.verifications.labels(target.name, signal).inc()
    known = {pod.name for pod in found.pods}
    ignored_series = sum(1 for pod in measured.values if pod not in known) + measured.series_without_pod
    details = VerdictDetails(measured.query, call.dry_run, verdict, ignored_series, measured.composite)
    decision = replace(_from_verdict(target, signal, item.alerts, verdict, details), source=source, group=measured.group)
    attempt = Attempt(signal, verdict, now, call.dry_run, call.invocation, call.approving)
    observed = deps.actor.observe(run, attempt)
    if verdict.act:
        decision = _act(run, decision, deps, attempt)
    if not observed.effects:
        return decision
    return replace(decision, effects=observed.effects, reason=f"{decision.reason}. {_effects_said(observed)}")


def _rules(target: Target, signal: SignalName, measured: Measured) -> Rules:
    """The target's rules; at the brokers, the projection follows the assignor the group reports
    when it is one the projection models (else the configured one)."""
    rules = target.rules(signal)
    reported = measured.group.assignor if measured.group is not None else ""
    return replace(rules, assignor=cast("Assignor", reported)) if reported in get_args(Assignor) else rules


def _act(run: TargetRun, decision: Decision, deps: Dependencies, attempt: Attempt) -> Decision:
    try:
        return decision.acted_on(deps.actor.act(run, attempt))
    except KubeError as e:  # a definite refusal on the state ConfigMap (RBAC, say)
        deps.telemetry.upstream_errors.labels("kubernetes", "permanent").inc()
        return replace(decision, outcome="skipped", code="kubernetes_error", reason=f"cannot take the cooldown lock: {e}")


def _effects_said(observed: Observed) -> str:
    said = "; ".join(f"the action at {e['at']} ({e['signal']} CV {e['before']:.3g}) measures {e['after']:.3g} once "
                     f"settled: {e['effect']}" for e in observed.effects)
    recorded = "recorded" if all(e["recorded"] for e in observed.effects) else "not recorded (a dry run, or another writer)"
    return f"Closed loop, {recorded}: {said}; {observed.ineffective_in_a_row} ineffective action(s) in a row"


def _verify(item: WorkItem, deps: Dependencies, call: _Call) -> list[Decision]:
    """All decisions of one target: one pod read, one query per signal, at most one action. The
    queries go out first and are answered while the pods are read; each is waited for where its
    signal is measured, so an error answers exactly as it would have one after the other."""
    target, now = item.target, call.now
    closed = target.schedule().why_closed(now)
    if closed is not None:  # nothing can be done now, so nothing is asked of Kubernetes or the backend
        return [_decision(target, s, item.alerts, code="outside_window", reason=f"{target.name} is {closed}")
                for s in item.signals]
    # CPU requests are read only when a signal asked about needs them (hpa mode; a composite uses values only).
    hpa = any(s != "composite" and target.signals[s].mode == "hpa" for s in item.signals)
    container = target.container if hpa else None
    call.measurer.start(item.signals, deps.background)
    # The cooldown state too: almost every verification reads it, to judge earlier actions' effects.
    reading = deps.background.submit(partial(deps.actor.state.read, target.namespace))
    try:
        found = deps.kube.deployment_pods(target.namespace, target.deployment, container)
    except KubeError as e:
        deps.telemetry.upstream_errors.labels("kubernetes", "permanent").inc()
        return [_decision(target, s, item.alerts, code="kubernetes_error", reason=f"cannot verify: {e}") for s in item.signals]
    run = TargetRun(target, found, reading=reading)
    return [_verify_signal(run, signal, item, deps, call) for signal in item.signals]


def _summary(decisions: list[Decision]) -> tuple[str, str]:
    if not decisions:
        return "skipped", "the notification holds no alerts"
    outcomes = [d.outcome for d in decisions]
    top = next(o for o in OUTCOME_PRECEDENCE if o in outcomes)
    if len(decisions) == 1:
        return top, decisions[0].reason
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in OUTCOME_PRECEDENCE if o in outcomes)
    return top, f"{len(decisions)} decisions: {counts}"


def _log(deps: Dependencies, decision: Decision, record: dict[str, Any], invocation: str) -> None:
    level = logging.WARNING if decision.code in ("kubernetes_error", "query_error", "kafka_error") else logging.INFO
    who = f"{decision.target}/{decision.signal}" if decision.target else "alert"
    deps.logger.log(
        level,
        f"{who}: {decision.outcome}: {decision.reason}",
        extra={"json_fields": {"event": "decision", "invocation": invocation, **record}},
    )


def handle(
    plan: Plan,
    deps: Dependencies,
    now: datetime,
    *,
    invocation: str,
    requested_dry_run: bool | None = None,
    approving: Proposal | None = None,
) -> Outcome:
    """Run a plan and answer with the decision record (README, "The answer")."""
    # A request may ask for a dry run when the configuration is live, never the reverse.
    dry_run = deps.settings.dry_run or requested_dry_run is True
    decisions = [_refusal(r) for r in plan.refusals]
    deps.telemetry.refused_alerts.inc(sum(1 for r in plan.refusals if r.refused))
    status = 200
    error: str | None = None
    try:
        for item in plan.items:
            decisions.extend(_verify(item, deps, _Call(now, dry_run, invocation, Measurer(item.target, deps.metrics, now,
                                                                         deps.groups.get(item.target.name)),
                                                       approving)))
    except TemporaryError as e:
        deps.telemetry.upstream_errors.labels(e.backend, "temporary").inc()
        status, error = 503, str(e)
    except PermanentError as e:  # a bug-shaped permanent error we did not expect: refuse, loudly
        deps.logger.error(f"unexpected permanent error: {e}", extra={"json_fields": {"invocation": invocation}})
        status, error = 500, str(e)

    records = [d.to_json() for d in decisions]  # the one serializer: the answer and the log line
    for decision, record in zip(decisions, records, strict=True):
        if decision.target:
            deps.telemetry.decisions.labels(decision.target, decision.signal or "", decision.outcome).inc()
            if decision.code is not None:
                deps.telemetry.decision_codes.labels(decision.target, decision.signal or "", decision.code).inc()
        _log(deps, decision, record, invocation)

    outcome, reason = _summary(decisions)
    if error is not None:
        outcome, reason = "skipped", f"could not verify the condition now, nothing was done: {error}"
    elif decisions and all(d.outcome == "rejected" for d in decisions):
        status = 403
    body = {
        "outcome": outcome,
        "reason": reason,
        "dry_run": dry_run,
        "invocation": invocation,
        "at": stamp(now),
        "decisions": records,
    }
    if requested_dry_run is False and deps.settings.dry_run:
        body["note"] = "the request asked for dry_run=false; the configuration says dry-run, which wins"
    return Outcome(status=status, body=body)


def approve(identifier: str, deps: Dependencies, now: datetime, *, invocation: str) -> Outcome:
    """POST /approve/<id>: carry a proposal out if it is known, still pending, not expired, and a
    fresh verification selects the same pods. Anything else answers why and changes nothing."""
    target_name = target_of(identifier)
    target = deps.settings.target(target_name) if target_name else None
    if target is None or not target.approval:
        return _refused(404, f"no proposal {identifier}: no target in approval mode is named so")
    try:
        found = decode_proposals(deps.actor.state.read(target.namespace).annotations, target.name)
    except StateError as e:
        return _refused(409, f"{e}; nothing was done")
    proposal = next((p for p in found if p.id == identifier), None)
    if proposal is None:
        return _refused(404, f"no proposal {identifier} in the state of target {target.name}")
    if proposal.status != "pending":
        return _refused(409, f"proposal {identifier} was {proposal.status} already; nothing was done")
    if proposal.expired(now):
        return _refused(409, f"proposal {identifier} expired at {stamp(proposal.expires)}; nothing was done")
    plan = Plan(items=[WorkItem(target, (cast("SignalName", proposal.signal),), (f"approve:{identifier}",))])
    outcome = handle(plan, deps, now, invocation=invocation, approving=proposal)
    if outcome.status == 200 and outcome.body["outcome"] not in ("acted", "blocked", "dry_run"):
        reason = f"proposal {identifier} was not carried out, nothing was done: {outcome.body['reason']}"
        return Outcome(409, {**outcome.body, "outcome": "rejected", "reason": reason})
    return outcome


def _refused(status: int, reason: str) -> Outcome:
    return Outcome(status, {"outcome": "rejected", "reason": reason, "decisions": []})
