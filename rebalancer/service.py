"""Orchestration: plan -> read Kubernetes -> query metrics -> decide -> answer. No policy here.

``handle`` gets its collaborators and ``now`` passed in and returns the whole decision record;
it never raises for a decision that could not be made: permanent problems become a skipped
decision with the reason, and a temporary one (a backend unreachable) makes the whole answer a
503 that still lists what was decided before it, so that Alertmanager retries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rebalancer import policy
from rebalancer.acting import Actor, TargetRun
from rebalancer.alerts import Plan, Refusal, WorkItem
from rebalancer.config import Settings, SignalName, Target
from rebalancer.errors import KubeError, MetricsQueryError, PermanentError, TemporaryError
from rebalancer.kube import DeploymentPods
from rebalancer.metrics_source import PodValues
from rebalancer.ports import MetricsReader, PodReader
from rebalancer.telemetry import Telemetry
from rebalancer.timestamps import stamp

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


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]


def _verified(verdict: policy.Verdict | None, threshold: float) -> dict[str, Any]:
    stats = verdict.stats if verdict else None
    return {
        "value": stats.value if stats else None,
        "threshold": threshold,
        "pods": stats.pods if stats else 0,
        "mean": stats.mean if stats else None,
        "stddev": stats.stddev if stats else None,
    }


def _decision(target: Target, signal: str | None, alerts: Iterable[str], **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "target": target.name,
        "namespace": target.namespace,
        "deployment": target.deployment,
        "signal": signal,
        "alerts": list(alerts),
        "outcome": "skipped",
        "reason": "",
        "verified": _verified(None, (target.signals[signal].threshold if signal in target.signals else None) or 0.0),
        "selected": [],
        "actions": [],
        "cooldown_until": None,
    }
    record.update(fields)
    return record


def _refusal_record(refusal: Refusal) -> dict[str, Any]:
    return {
        "target": refusal.target,
        "signal": refusal.signal,
        "alerts": [refusal.alert],
        "outcome": "rejected" if refusal.refused else "skipped",
        "reason": refusal.reason,
        "verified": None,
        "selected": [],
        "actions": [],
        "cooldown_until": None,
    }


def _from_verdict(
    target: Target,
    signal: SignalName,
    item: WorkItem,
    query: str,
    found: DeploymentPods,
    pod_values: PodValues,
    verdict: policy.Verdict,
    dry_run: bool,
) -> dict[str, Any]:
    """The record of what was measured and decided; acting fills in its own fields later."""
    known = {pod.name for pod in found.pods}
    details = {
        "code": verdict.code,
        "query": query,
        "dry_run": dry_run,
        "verified": _verified(verdict, verdict.threshold),
        "hot": {"pod": verdict.hot.pod, "value": verdict.hot.value} if verdict.hot else None,
        "cold": {"pod": verdict.cold.pod, "value": verdict.cold.value} if verdict.cold else None,
        "selected": [{"pod": s.pod, "value": s.value, "role": s.role} for s in verdict.selected],
        "projected_cv": verdict.projected_cv,
        "measures": dict(verdict.extra),  # improvement; in hpa mode also the HPA target and the threshold it gives
        "ready_pods": verdict.ready_pods,
        "missing_pods": list(verdict.missing),
        "invalid_pods": [{"pod": n.pod, "why": n.why} for n in verdict.invalid],
        "ignored_pods": [{"pod": n.pod, "why": n.why} for n in verdict.ignored],
        "passed_over": [{"pod": n.pod, "why": n.why} for n in verdict.passed_over],
        # Series for pods the Deployment does not have (other workloads, pods already gone).
        "series_ignored": sum(1 for pod in pod_values.values if pod not in known) + pod_values.series_without_pod,
    }
    # A verdict that wants to act is completed by the act step (cooldown, lock, actions).
    return _decision(target, signal, item.alerts, outcome="skipped", reason=verdict.reason, **details)


def _verify(item: WorkItem, deps: Dependencies, now: datetime, dry_run: bool, invocation: str) -> list[dict[str, Any]]:
    """All decisions of one target: one pod read, one query per signal, at most one action."""
    target = item.target
    # CPU requests are read only when a signal needs them (hpa mode).
    container = target.container if any(target.signals[s].mode == "hpa" for s in item.signals) else None
    try:
        found = deps.kube.deployment_pods(target.namespace, target.deployment, container)
    except KubeError as e:
        deps.telemetry.upstream_errors.labels("kubernetes", "permanent").inc()
        return [
            _decision(target, s, item.alerts, code="kubernetes_error", reason=f"cannot verify: {e}")
            for s in item.signals
        ]
    run = TargetRun(target, found)
    decisions = []
    for signal in item.signals:
        query = target.query_for(signal)
        try:
            pod_values = deps.metrics.query_by_pod(query, now)
        except MetricsQueryError as e:
            deps.telemetry.upstream_errors.labels("metrics", "permanent").inc()
            decisions.append(
                _decision(target, signal, item.alerts, code="query_error", query=query, reason=f"cannot verify: {e}")
            )
            continue
        verdict = policy.decide(signal, found.pods, pod_values.values, target.rules(signal), now, workload=found.workload)
        if verdict.stats is not None:
            deps.telemetry.verified_cv.labels(target.name, signal).set(verdict.stats.value)
        record = _from_verdict(target, signal, item, query, found, pod_values, verdict, dry_run)
        if verdict.act:
            try:
                deps.actor.act(run, signal, verdict, record, now, dry_run, invocation)
            except KubeError as e:  # a definite refusal on the state ConfigMap (RBAC, say)
                deps.telemetry.upstream_errors.labels("kubernetes", "permanent").inc()
                record.update(outcome="skipped", code="kubernetes_error", reason=f"cannot take the cooldown lock: {e}")
        decisions.append(record)
    return decisions


def _summary(decisions: list[dict[str, Any]]) -> tuple[str, str]:
    if not decisions:
        return "skipped", "the notification holds no alerts"
    outcomes = [d["outcome"] for d in decisions]
    top = next(o for o in OUTCOME_PRECEDENCE if o in outcomes)
    if len(decisions) == 1:
        return top, decisions[0]["reason"]
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in OUTCOME_PRECEDENCE if o in outcomes)
    return top, f"{len(decisions)} decisions: {counts}"


def _log(deps: Dependencies, decision: dict[str, Any], invocation: str) -> None:
    level = logging.WARNING if decision.get("code") in ("kubernetes_error", "query_error") else logging.INFO
    who = f"{decision['target']}/{decision['signal']}" if decision.get("target") else "alert"
    deps.logger.log(
        level,
        f"{who}: {decision['outcome']}: {decision['reason']}",
        extra={"json_fields": {"event": "decision", "invocation": invocation, **decision}},
    )


def handle(
    plan: Plan,
    deps: Dependencies,
    now: datetime,
    *,
    invocation: str,
    requested_dry_run: bool | None = None,
) -> Outcome:
    """Run a plan and answer with the decision record (README, "The answer")."""
    # A request may ask for a dry run when the configuration is live, never the reverse.
    dry_run = deps.settings.dry_run or requested_dry_run is True
    decisions = [_refusal_record(r) for r in plan.refusals]
    deps.telemetry.refused_alerts.inc(sum(1 for r in plan.refusals if r.refused))
    status = 200
    error: str | None = None
    try:
        for item in plan.items:
            decisions.extend(_verify(item, deps, now, dry_run, invocation))
    except TemporaryError as e:
        deps.telemetry.upstream_errors.labels(e.backend, "temporary").inc()
        status, error = 503, str(e)
    except PermanentError as e:  # a bug-shaped permanent error we did not expect: refuse, loudly
        deps.logger.error(f"unexpected permanent error: {e}", extra={"json_fields": {"invocation": invocation}})
        status, error = 500, str(e)

    for decision in decisions:
        if decision.get("target"):
            deps.telemetry.decisions.labels(decision["target"], decision["signal"] or "", decision["outcome"]).inc()
        _log(deps, decision, invocation)

    outcome, reason = _summary(decisions)
    if error is not None:
        outcome, reason = "skipped", f"could not verify the condition now, nothing was done: {error}"
    elif decisions and all(d["outcome"] == "rejected" for d in decisions):
        status = 403
    body = {
        "outcome": outcome,
        "reason": reason,
        "dry_run": dry_run,
        "invocation": invocation,
        "at": stamp(now),
        "decisions": decisions,
    }
    if requested_dry_run is False and deps.settings.dry_run:
        body["note"] = "the request asked for dry_run=false; the configuration says dry-run, which wins"
    return Outcome(status=status, body=body)
