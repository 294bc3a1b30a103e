"""The approval gate: for a target in approval mode, a verdict that would act becomes a proposal
(recorded in the state ConfigMap, announced by an Event), and only a person's approval of it,
while it is fresh and a new verification still selects the same pods, lets the action through."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from rebalancer.adapters.kube import ConfigMapState, EventNote
from rebalancer.config import Target
from rebalancer.cooldown import StateStore, decode_proposals
from rebalancer.core.decision import ActResult
from rebalancer.core.proposals import Proposal, pending, proposal_id
from rebalancer.core.timestamps import stamp
from rebalancer.errors import RebalancerError, StateError
from rebalancer.invocation import Attempt, TargetRun


def proposal_json(proposal: Proposal) -> dict[str, object]:
    return {"id": proposal.id, "signal": proposal.signal, "at": stamp(proposal.at), "expires": stamp(proposal.expires),
            "value": proposal.value, "threshold": proposal.threshold, "pods": [dict(p) for p in proposal.pods],
            "status": proposal.status}


@dataclass
class ApprovalGate:
    state: StateStore
    event: Callable[[Target, EventNote, datetime], list[str]]

    def check(self, run: TargetRun, snapshot: ConfigMapState, attempt: Attempt) -> ActResult | None:
        """None lets an approved attempt through; otherwise the proposal (or why not)."""
        verdict, approving = attempt.verdict, attempt.approving
        selected = [s.pod for s in verdict.selected]
        if approving is not None:
            if sorted(selected) == sorted(approving.pod_names()):
                return None
            return ActResult("skipped", "approval_stale", (
                f"proposal {approving.id} was to move {', '.join(approving.pod_names())}; a fresh verification would "
                f"now move {', '.join(selected)}: the skew changed, so nothing was done (a new proposal follows "
                f"the next alert). {verdict.reason}"), proposal=proposal_json(approving))
        return self._propose(run, snapshot, attempt)

    def _propose(self, run: TargetRun, snapshot: ConfigMapState, attempt: Attempt) -> ActResult:
        target, verdict, now = run.target, attempt.verdict, attempt.now
        try:
            existing = decode_proposals(snapshot.annotations, target.name)
        except StateError as e:  # guessing could propose twice, or lose a person's pending decision
            return ActResult("skipped", "state_unreadable", f"{e}. {verdict.reason}")
        waiting = pending(existing, attempt.signal, now)
        if waiting is not None:
            return ActResult("skipped", "proposed", f"proposal {waiting.id} is waiting for approval until "
                             f"{stamp(waiting.expires)} (POST /approve/{waiting.id}). {verdict.reason}",
                             proposal=proposal_json(waiting))
        proposal = Proposal(proposal_id(target.name, uuid.uuid4().hex[:12]), attempt.signal, now, now + target.approval_ttl,
                            attempt.invocation, verdict.stats.value if verdict.stats else None, verdict.threshold,
                            tuple({"pod": s.pod, "role": s.role, "value": s.value} for s in verdict.selected))
        said = (f"approval required: proposal {proposal.id} would {target.action} "
                f"{', '.join(f'{s.pod} ({s.role})' for s in verdict.selected)}; POST /approve/{proposal.id} before "
                f"{stamp(proposal.expires)} carries it out if a fresh verification still agrees")
        if attempt.dry_run:
            return ActResult("dry_run", "proposed", f"dry run: {said} (a dry run records no proposal). {verdict.reason}",
                             proposal=proposal_json(proposal))
        written = self.state.write_proposals(target.namespace, target.name, snapshot, (*existing, proposal))
        if written is None:
            run.snapshot = None
            return ActResult("skipped", "lock_taken", f"another invocation wrote the state ConfigMap first; this one "
                             f"proposes nothing. {verdict.reason}")
        run.snapshot = written
        errors = self.event(target, EventNote("Deployment", "apps/v1", target.deployment, run.found.uid, "RebalanceProposed",
                                              f"{said}; {verdict.reason}"[:1000], warning=False), now)
        return ActResult("skipped", "proposed", f"{said}. {verdict.reason}", proposal=proposal_json(proposal),
                         audit_errors=tuple(errors))

    def approved(self, run: TargetRun, proposal: Proposal) -> list[str]:
        """Record that ``proposal`` was carried out; a failure is reported, never raised."""
        try:
            self.state.mark_approved(run.target.namespace, run.target.name, proposal.id)
        except RebalancerError as e:
            return [f"proposal {proposal.id} not marked approved: {e}"]
        return []

