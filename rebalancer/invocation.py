"""One invocation's units of work, shared by the actor and the approval gate below it: a target
read once and acted on at most once, and one signal's verdict that wants to act."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from rebalancer.adapters.kube.records import ConfigMapState, DeploymentPods
from rebalancer.config import SignalName, Target
from rebalancer.core import history
from rebalancer.core.measurement import Verdict
from rebalancer.core.proposals import Proposal


@dataclass
class TargetRun:
    """One target within one invocation: read once, acted on at most once."""

    target: Target
    found: DeploymentPods
    snapshot: ConfigMapState | None = None
    # The state ConfigMap's read, sent beside the pods' (the snapshot, once it is needed).
    reading: Future[ConfigMapState] | None = None
    acted_by: str | None = None  # the signal whose action took the lock in this invocation
    lock_lost: bool = False  # another invocation's write won: every signal of the target stands down
    # A dry run's measured effects, which it does not write but its cooldown check must see.
    unwritten: history.TargetState | None = None


@dataclass(frozen=True)
class Attempt:
    """One signal's verdict that wants to act, within one invocation."""

    signal: SignalName
    verdict: Verdict
    now: datetime
    dry_run: bool
    invocation: str
    approving: Proposal | None = None  # the proposal a person approved (POST /approve/<id>)
