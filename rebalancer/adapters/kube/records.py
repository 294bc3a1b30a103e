"""What the Kubernetes adapter hands the rest of the function: plain values, no client types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rebalancer.core.workload import PodState, WorkloadStatus

EXCLUDE_ANNOTATION = "pod-rebalancer/exclude"
EVENT_SOURCE = "pod-rebalancer"
MERGE_PATCH = "application/merge-patch+json"
ActionResult = Literal["evicted", "deleted", "blocked", "failed"]


@dataclass(frozen=True)
class DeploymentPods:
    namespace: str
    deployment: str
    uid: str
    selector: str
    pods: tuple[PodState, ...]
    workload: WorkloadStatus | None = None
    pod_uids: dict[str, str] | None = None
    pod_ips: dict[str, str] | None = None


@dataclass(frozen=True)
class ConfigMapState:
    """A ConfigMap's annotations and the resourceVersion they were read at (None: it does not exist)."""

    annotations: dict[str, str]
    resource_version: str | None


@dataclass(frozen=True)
class EventNote:
    """A core/v1 Event to write on one object (a pod, or the Deployment)."""

    kind: str
    api_version: str
    name: str
    uid: str | None
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class PodAction:
    pod: str
    result: ActionResult
    detail: str = ""


