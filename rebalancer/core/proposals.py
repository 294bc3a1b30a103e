"""Proposals, for targets that want a person in the loop (the VPSie rebalancer's
``requireApproval``). Pure.

A target in approval mode answers a verified skew with a proposal (an id, the pods, the numbers,
an expiry) instead of acting. ``POST /approve/<id>`` carries it out, only while it has not
expired and only if a fresh verification still selects the same pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

ID_SEPARATOR = "."  # target names are DNS labels: they hold no dot


@dataclass(frozen=True)
class Proposal:
    id: str
    signal: str
    at: datetime
    expires: datetime
    invocation: str
    value: float | None
    threshold: float
    pods: tuple[dict[str, Any], ...]  # {pod, role, value}
    status: str = "pending"  # pending, approved

    def expired(self, now: datetime) -> bool:
        return now >= self.expires

    def pod_names(self) -> list[str]:
        return [str(p["pod"]) for p in self.pods]


def proposal_id(target: str, token: str) -> str:
    return f"{target}{ID_SEPARATOR}{token}"


def target_of(identifier: str) -> str | None:
    target, separator, token = identifier.partition(ID_SEPARATOR)
    return target if separator and target and token else None


def pending(proposals: tuple[Proposal, ...], signal: str, now: datetime) -> Proposal | None:
    """The newest proposal for ``signal`` still waiting for a person, if any."""
    waiting = [p for p in proposals if p.signal == signal and p.status == "pending" and not p.expired(now)]
    return max(waiting, key=lambda p: p.at) if waiting else None
