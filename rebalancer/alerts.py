"""Alertmanager webhook payloads (version 4) and manual runs, mapped to configured work.

An alert can only *choose among* the configured targets: its labels are compared with the
configuration and never used to build a query or an API call. Whatever does not map cleanly
is refused for that alert, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from rebalancer.config import Settings, SignalName, Target

TARGET_LABEL = "rebalancer_target"
SIGNAL_LABEL = "rebalancer_signal"


class Alert(BaseModel):
    # Alertmanager adds fields over time; unknown ones are ignored, known ones are typed.
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None
    endsAt: datetime | None = None
    generatorURL: str = ""
    fingerprint: str = ""


class WebhookMessage(BaseModel):
    """The body Alertmanager's webhook receiver POSTs (payload version "4")."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = ""
    groupKey: str = ""
    truncatedAlerts: int = 0
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[Alert]


class ManualRun(BaseModel):
    """``POST /rebalance``: a run by hand. ``dry_run`` can only make the run safer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(min_length=1, max_length=253)
    signal: SignalName | None = None
    dry_run: StrictBool | None = None


@dataclass(frozen=True)
class WorkItem:
    """One (target, signals) to verify, with the alerts that asked for it."""

    target: Target
    signals: tuple[SignalName, ...]
    alerts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """An alert that leads to nothing, and why. ``refused`` ones count toward a 403."""

    alert: str  # fingerprint, or the alertname when there is none
    reason: str
    refused: bool = True
    target: str | None = None
    signal: str | None = None


@dataclass
class Plan:
    items: list[WorkItem] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def _alert_id(alert: Alert) -> str:
    return alert.fingerprint or alert.labels.get("alertname", "(unnamed alert)")


def _resolve_target(alert: Alert, settings: Settings) -> Target | str:
    """The configured target an alert names, or the reason it names none."""
    labels = alert.labels
    namespace, deployment = labels.get("namespace"), labels.get("deployment")
    if TARGET_LABEL in labels:
        target = settings.target(labels[TARGET_LABEL])
        if target is None:
            return f"label {TARGET_LABEL} names no configured target"
        if namespace is not None and namespace != target.namespace:
            return f"label namespace disagrees with target {target.name}'s namespace {target.namespace}"
        if deployment is not None and deployment != target.deployment:
            return f"label deployment disagrees with target {target.name}'s deployment {target.deployment}"
        return target
    if namespace is None or deployment is None:
        return f"alert has neither {TARGET_LABEL} nor both namespace and deployment labels"
    target = settings.target_for_deployment(namespace, deployment)
    if target is None:
        return "namespace/deployment labels match no configured target"
    return target


def plan_alerts(message: WebhookMessage, settings: Settings) -> Plan:
    """Map every alert of a notification to work, merging alerts that ask for the same thing."""
    plan = Plan()
    wanted: dict[str, tuple[Target, list[SignalName], list[str]]] = {}
    for alert in message.alerts:
        alert_id = _alert_id(alert)
        if alert.status != "firing":
            plan.refusals.append(Refusal(alert_id, "alert is resolved: resolved alerts never lead to action", refused=False))
            continue
        target = _resolve_target(alert, settings)
        if isinstance(target, str):
            plan.refusals.append(Refusal(alert_id, target))
            continue
        signal = alert.labels.get(SIGNAL_LABEL)
        if signal is None:
            plan.refusals.append(Refusal(alert_id, f"alert has no {SIGNAL_LABEL} label", target=target.name))
            continue
        if signal not in target.decision_signals():
            configured = ", ".join(target.decision_signals())
            plan.refusals.append(
                Refusal(alert_id, f"target {target.name} has no such signal (configured: {configured})", target=target.name)
            )
            continue
        _, signals, alert_ids = wanted.setdefault(target.name, (target, [], []))
        if signal not in signals:
            signals.append(signal)
        alert_ids.append(alert_id)
    plan.items = [WorkItem(target, tuple(signals), tuple(ids)) for target, signals, ids in wanted.values()]
    return plan


def plan_manual(run: ManualRun, settings: Settings) -> Plan:
    """The work of a manual run: one target, one signal or all of its signals."""
    target = settings.target(run.target)
    if target is None:
        return Plan(refusals=[Refusal("manual", "target names no configured target")])
    if run.signal is not None and run.signal not in target.decision_signals():
        configured = ", ".join(target.decision_signals())
        why = f"target {target.name} has no such signal (configured: {configured})"
        return Plan(refusals=[Refusal("manual", why, target=target.name)])
    signals = (run.signal,) if run.signal else target.decision_signals()
    return Plan(items=[WorkItem(target, signals, ("manual",))])
