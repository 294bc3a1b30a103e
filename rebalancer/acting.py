"""The act step of a decision: cooldown check, lock, evict or delete, and the audit trail.

Runs only for a verdict that wants to act. Nothing that was done goes unrecorded: once the
lock is taken, every pod's result goes into the answer, a log line, a counter, the history
annotation and a Kubernetes Event, and a failure to write one of those is itself reported
without hiding the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from rebalancer.adapters.kube import ConfigMapState, DeploymentPods, EventNote, PodAction
from rebalancer.approval import ApprovalGate
from rebalancer.config import Target
from rebalancer.cooldown import StateStore, decode_state, finished
from rebalancer.core import history
from rebalancer.core.decision import ActResult
from rebalancer.core.durations import format_duration
from rebalancer.core.policy import measured_skew
from rebalancer.core.timestamps import stamp
from rebalancer.errors import KubeError, RebalancerError, StateError
from rebalancer.invocation import Attempt, TargetRun
from rebalancer.ports import PodActions
from rebalancer.telemetry import Telemetry

SUCCESS = ("evicted", "deleted")


@dataclass(frozen=True)
class Observed:
    """What the closed loop noticed at one verification: the effects it measured, and the
    target's ineffective actions in a row after them."""

    effects: tuple[dict[str, Any], ...] = ()
    ineffective_in_a_row: int = 0


def _effect_json(record: history.ActionRecord, recorded: bool) -> dict[str, Any]:
    return {"invocation": record.invocation, "at": stamp(record.at), "signal": record.signal, "before": record.value,
            "after": record.value_after, "effect": record.effect, "recorded": recorded}


def _backoff_json(state: history.TargetState, backoff: history.Backoff, until: str | None) -> dict[str, Any]:
    streak = history.ineffective_streak(state)
    return {"ineffective_in_a_row": len(streak), "until": until, "wait": format_duration(backoff.wait_for(len(streak))),
            "actions": [_effect_json(r, True) for r in streak]}


@dataclass
class Actor:
    kube: PodActions
    state: StateStore
    telemetry: Telemetry
    logger: logging.Logger

    @property
    def gate(self) -> ApprovalGate:
        return ApprovalGate(self.state, self._event)

    def _state(self, run: TargetRun) -> tuple[ConfigMapState, history.TargetState]:
        """The target's state ConfigMap, read once per invocation, and its decoded state."""
        if run.snapshot is None:
            run.snapshot = run.reading.result() if run.reading is not None else self.state.read(run.target.namespace)
        return run.snapshot, run.unwritten or decode_state(run.snapshot.annotations, run.target.name)

    def observe(self, run: TargetRun, attempt: Attempt) -> Observed:
        """The closed loop: with the CV measured now, judge the target's actions on this signal
        whose settle time has passed, and record each effect (live runs only) in the history, an
        Event and a counter. An unreadable state is left to the act step to report."""
        measured, target = measured_skew(attempt.verdict), run.target
        if measured is None:
            return Observed()
        try:
            snapshot, state = self._state(run)
        except (StateError, KubeError):
            return Observed()
        state, judged = history.record_effects(state, attempt.signal, attempt.now, measured[0],
                                               target.effect_rules(attempt.signal), gone=measured[1])
        self._publish(target, state)
        if not judged:
            return Observed()
        written = None if attempt.dry_run else self.state.write_history(target.namespace, target.name, snapshot, state)
        if attempt.dry_run:
            run.unwritten = state
        else:
            run.snapshot = written  # None after a conflict: read again before any lock is taken
        streak = len(history.ineffective_streak(state))
        if written is not None:
            for record in judged:
                self._record_effect(run, record, streak, attempt.now)
        return Observed(tuple(_effect_json(r, written is not None) for r in judged), streak)

    def _publish(self, target: Target, state: history.TargetState) -> None:
        """The target's state as gauges, so that a dashboard sees the cooldown and the back-off."""
        self.telemetry.ineffective_streak.labels(target.name).set(len(history.ineffective_streak(state)))
        if state.last_action is None:
            return
        self.telemetry.last_action.labels(target.name).set(state.last_action.timestamp())
        ends = [state.last_action + target.cooldown, history.backoff_until(state, target.limits().backoff)]
        self.telemetry.blocked_until.labels(target.name).set(max(end for end in ends if end is not None).timestamp())

    def _record_effect(self, run: TargetRun, record: history.ActionRecord, streak: int, now: datetime) -> None:
        target = run.target
        self.telemetry.effects.labels(target.name, record.signal, record.effect or "").inc()
        message = (f"the action of invocation {record.invocation} at {stamp(record.at)} measured {record.signal} CV "
                   f"{record.value or 0:.3g} then and {record.value_after or 0:.3g} once settled: {record.effect}")
        ineffective = record.effect in history.INEFFECTIVE
        backoff = target.limits().backoff
        if ineffective and streak >= backoff.after:
            message += (f"; {streak} ineffective actions in a row, so pod-rebalancer backs off for "
                        f"{format_duration(backoff.wait_for(streak))}")
        self._event(target, EventNote("Deployment", "apps/v1", target.deployment, run.found.uid,
                                      "RebalanceIneffective" if ineffective else "RebalanceEffective", message,
                                      warning=ineffective), now)
        self.logger.log(logging.WARNING if ineffective else logging.INFO, f"{target.name}/{record.signal}: {message}",
                        extra={"json_fields": {"event": "effect", "target": target.name, "signal": record.signal,
                                               **_effect_json(record, True)}})

    def act(self, run: TargetRun, attempt: Attempt) -> ActResult:
        """Carry a verdict that wants to act through the cooldown and the lock."""
        target, verdict = run.target, attempt.verdict
        if run.lock_lost:
            return ActResult("skipped", "lock_taken", f"another invocation holds the cooldown lock of {target.name}. "
                             f"{verdict.reason}", lock="taken")
        if run.acted_by is not None:
            return ActResult("skipped", "already_acted", f"{target.name} was already acted on in this invocation (signal "
                             f"{run.acted_by}); one action per target per cooldown. {verdict.reason}")
        try:
            snapshot, state = self._state(run)
        except StateError as e:
            return ActResult("skipped", "state_unreadable", f"{e}. {verdict.reason}")
        state, abandoned = history.mark_abandoned(state, attempt.now, target.cooldown)
        result = self._through_lock(run, snapshot, attempt, state)
        if not abandoned:
            return result
        # Written with the lock when a live run takes it; said in the answer either way.
        noticed = "; ".join(f"the action of invocation {r.invocation} at {stamp(r.at)} never recorded its outcome "
                            "(the run died; it may have moved pods)" for r in abandoned)
        return replace(result, reason=f"{result.reason} Noticed: {noticed}, so it is marked abandoned.",
                       abandoned=tuple({"invocation": r.invocation, "at": stamp(r.at), "signal": r.signal} for r in abandoned))

    def _through_lock(self, run: TargetRun, snapshot: ConfigMapState, attempt: Attempt, state: history.TargetState) -> ActResult:
        """Cooldown check, then (live) the lock and the actions."""
        target, verdict = run.target, attempt.verdict
        check = history.check_cooldown(state, attempt.now, target.limits())
        if check.allowed and verdict.mode == "cv" and verdict.stats is not None:
            check = history.check_hysteresis(state, attempt.now, verdict.stats.value, verdict.threshold,
                                             target.limits().hysteresis) or check
        until = stamp(check.cooldown_until) if check.cooldown_until else None
        if not check.allowed:
            backoff = _backoff_json(state, target.limits().backoff, until) if check.code == "ineffective" else None
            return ActResult("skipped", check.code, f"{check.reason}. {verdict.reason}", lock=check.code, cooldown_until=until,
                             backoff=backoff)
        if target.approval:
            gated = self.gate.check(run, snapshot, attempt)
            if gated is not None:
                return gated
        if attempt.dry_run:
            pods = ", ".join(f"{s.pod} ({s.role})" for s in verdict.selected)
            return ActResult("dry_run", None, f"dry run: would {target.action} {pods}; the cooldown lock is free, so a live run "
                             f"would take it (cooldown until {until}). {verdict.reason}", lock=check.code, cooldown_until=until,
                             actions=tuple({"pod": s.pod, "result": "dry_run"} for s in verdict.selected))
        entry = history.ActionRecord(
            at=attempt.now, invocation=attempt.invocation, signal=attempt.signal, outcome="in_progress",
            value=verdict.stats.value if verdict.stats else None, threshold=verdict.threshold,
            pods=tuple({"pod": s.pod, "role": s.role, "value": s.value} for s in verdict.selected),
        )
        if not self.state.take(target.namespace, target.name, snapshot, state, entry):
            run.lock_lost = True
            return ActResult("skipped", "lock_taken", "another invocation took the cooldown lock first (409 on the state "
                             f"ConfigMap); it acts, this one stands down. {verdict.reason}", lock="taken", cooldown_until=until)
        run.acted_by = attempt.signal
        self._publish(target, replace(state, last_action=entry.at, history=(*state.history, entry)))
        results = [self._act_on_pod(target, run.found, s.pod, attempt) for s in verdict.selected]
        outcome = "acted" if any(r.result in SUCCESS for r in results) else "blocked"
        audit_errors = self._record(run, attempt, entry, outcome, results)
        if attempt.approving is not None:
            audit_errors += self.gate.approved(run, attempt.approving)
        return ActResult(
            outcome, "acted" if outcome == "acted" else "all_actions_blocked",
            f"{', '.join(f'{r.pod}: {r.result}' for r in results)}. {verdict.reason}",
            lock="taken_by_this_invocation", cooldown_until=until, audit_errors=tuple(audit_errors),
            actions=tuple({"pod": r.pod, "result": r.result, **({"detail": r.detail} if r.detail else {})} for r in results),
        )

    def _act_on_pod(self, target: Target, found: DeploymentPods, pod: str, attempt: Attempt) -> PodAction:
        signal, invocation = attempt.signal, attempt.invocation
        uid = (found.pod_uids or {}).get(pod)  # a precondition: never touch a same-named successor
        if target.action == "delete":
            result = self.kube.delete_pod(target.namespace, pod, uid)
        else:
            result = self.kube.evict_pod(target.namespace, pod, uid)
        self.telemetry.actions.labels(target.name, signal, result.result).inc()
        level = logging.INFO if result.result in SUCCESS else logging.WARNING
        detail = f": {result.detail}" if result.detail else ""
        self.logger.log(level, f"{target.name}/{signal}: {result.result} pod {pod}{detail}",
                        extra={"json_fields": {"event": "action", "invocation": invocation, "target": target.name,
                                               "namespace": target.namespace, "signal": signal, "pod": pod,
                                               "action": target.action, "result": result.result, "detail": result.detail}})
        return result

    def _record(self, run: TargetRun, attempt: Attempt, entry: history.ActionRecord, outcome: str,
                results: list[PodAction]) -> list[str]:
        """History, then events; each failure is collected, none stops the others."""
        target = run.target
        errors: list[str] = []
        signal, verdict, now, invocation = attempt.signal, attempt.verdict, attempt.now, attempt.invocation
        by_pod = {s.pod: s for s in verdict.selected}
        pods_json = [{"pod": r.pod, "role": by_pod[r.pod].role, "value": by_pod[r.pod].value, "result": r.result,
                      **({"detail": r.detail} if r.detail else {})} for r in results]
        try:
            self.state.finish(target.namespace, target.name, finished(entry, outcome, pods_json))
        except RebalancerError as e:
            errors.append(f"history not written: {e}")
        if verdict.mode == "hpa":  # the line is in cores, not a CV
            measured = f"{signal} above {verdict.threshold:.3g} cores (HPA target x tolerance)"
        else:
            measured = f"{signal} CV {verdict.stats.value:.3g} > {verdict.threshold:.3g}" if verdict.stats else signal
        for r in results:
            ok = r.result in SUCCESS
            message = (f"{r.result} by pod-rebalancer ({by_pod[r.pod].role} pod, {signal} {by_pod[r.pod].value:.4g}; "
                       f"{measured}; invocation {invocation})" if ok else
                       f"pod-rebalancer could not {target.action} this pod ({r.result}: {r.detail}); invocation {invocation}")
            errors += self._event(target, EventNote("Pod", "v1", r.pod, (run.found.pod_uids or {}).get(r.pod),
                                                    "Rebalanced" if ok else "RebalanceBlocked", message, warning=not ok), now)
        summary = ", ".join(f"{r.pod} {r.result}" for r in results)
        acted = outcome == "acted"
        errors += self._event(target, EventNote("Deployment", "apps/v1", target.deployment, run.found.uid,
                                                "Rebalanced" if acted else "RebalanceBlocked",
                                                f"{summary}; {measured}; invocation {invocation}", warning=not acted), now)
        if errors:
            self.logger.error(f"{target.name}/{signal}: audit trail incomplete: {'; '.join(errors)}",
                              extra={"json_fields": {"event": "audit_error", "invocation": invocation,
                                                     "target": target.name, "actions": pods_json, "errors": errors}})
        return errors

    def _event(self, target: Target, note: EventNote, now: datetime) -> list[str]:
        try:
            self.kube.create_event(target.namespace, note, now)
        except RebalancerError as e:
            return [f"event on {note.kind.lower()} {note.name} not written: {e}"]
        return []
