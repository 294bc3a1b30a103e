"""What the reads take from the API's answers, whatever the wire: the facts of each object the
function reads, and the rules that are the same for both codecs (``json_codec``, ``protobuf_codec``).

Requests go through the official client's ``ApiClient`` (its kubeconfig, in-cluster and GKE
authentication, token refresh, TLS and retries), but not through its generated API classes and
models: importing ``CoreV1Api`` costs about 1.3 s at cold start, and turning a list of 10,000
real pods into its models took 12 s and 900 MiB (see docs/benchmarks.md). Each codec decodes
only the fields read here and skips the rest of each object without building it.

A pod counts as the Deployment's only when its controller is a ReplicaSet whose controller is
that Deployment (by UID): matching the selector is not enough, selectors of different workloads
can overlap.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubernetes.utils.quantity import parse_quantity

from rebalancer.core.workload import PodState, WorkloadStatus
from rebalancer.errors import KubeError


@dataclass(frozen=True)
class DeploymentFacts:
    uid: str
    selector: str  # as the labelSelector query string
    replicas: int
    generation: int
    observed_generation: int
    updated_replicas: int
    available_replicas: int


@dataclass(frozen=True)
class AutoscalerFacts:
    name: str
    target_kind: str
    target_name: str
    current_replicas: int | None
    desired_replicas: int | None
    cpu_target_utilization: float | None  # a Resource cpu metric's averageUtilization


@dataclass(frozen=True)
class PodFacts:
    states: tuple[PodState, ...]
    uids: dict[str, str]
    ips: dict[str, str]


@dataclass(frozen=True)
class StatusFacts:
    """A Status answer (an error): its message, reason and the ``details.causes`` messages."""

    message: str
    reason: str
    causes: tuple[str, ...]


class OwnerReference(Protocol):
    """An ownerReference as either codec decodes it."""

    @property
    def kind(self) -> str: ...
    @property
    def uid(self) -> str: ...
    @property
    def controller(self) -> bool | None: ...


class Condition(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...


def controlled_by(references: Iterable[OwnerReference], kind: str, uids: Collection[str]) -> bool:
    """Whether the object's controller (the one reference marked so) is a ``kind`` among ``uids``:
    a pod is the Deployment's when its controller is one of the Deployment's ReplicaSets."""
    for reference in references:
        if reference.controller:
            return reference.kind == kind and reference.uid in uids
    return False


def is_ready(conditions: Iterable[Condition]) -> bool:
    for condition in conditions:
        if condition.type == "Ready":
            return condition.status == "True"
    return False


def selector_string(match_labels: Mapping[str, str], expressions: Iterable[tuple[str, str, Sequence[str]]]) -> str:
    """A label selector as the ``labelSelector`` query string (equality and set-based terms);
    ``expressions`` are (key, operator, values)."""
    terms = [f"{key}={value}" for key, value in sorted(match_labels.items())]
    for key, operator, listed in expressions:
        values = ",".join(sorted(listed))
        if operator == "In":
            terms.append(f"{key} in ({values})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif operator == "Exists":
            terms.append(key)
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            raise KubeError(f"unknown label selector operator {operator!r}", status=0)
    return ",".join(terms)


def cpu_cores(quantity: str | int | float | None) -> float | None:
    """A Kubernetes quantity ("500m", "2", 2) in cores; None when absent or not a quantity."""
    if quantity is None:
        return None
    try:
        return float(parse_quantity(quantity))
    except ValueError:
        return None


def workload_status(deployment: DeploymentFacts, autoscalers: Sequence[AutoscalerFacts], name: str) -> WorkloadStatus:
    """The Deployment's rollout status and the HPA (if exactly one targets it) for the guards."""
    targeting = [a for a in autoscalers if a.target_kind == "Deployment" and a.target_name == name]
    hpa = targeting[0] if targeting else None
    return WorkloadStatus(
        replicas=deployment.replicas,
        generation=deployment.generation,
        observed_generation=deployment.observed_generation,
        updated_replicas=deployment.updated_replicas,
        available_replicas=deployment.available_replicas,
        hpa_name=hpa.name if hpa else None,
        hpa_current_replicas=hpa.current_replicas if hpa else None,
        hpa_desired_replicas=hpa.desired_replicas if hpa else None,
        hpa_count=len(targeting),
        hpa_cpu_target_utilization=hpa.cpu_target_utilization if hpa else None,
    )
