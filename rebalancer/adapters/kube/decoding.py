"""API objects decoded into the decision core's values, reading only the fields it needs.

A pod counts as the Deployment's only when its controller is a ReplicaSet whose controller is
that Deployment (by UID): matching the selector is not enough, selectors of different workloads
can overlap.

Requests go through the official client's ``ApiClient`` (its kubeconfig, in-cluster and GKE
authentication, token refresh, TLS and retries), but not through its generated API classes and
models: importing ``CoreV1Api`` costs about 1.3 s at cold start, and turning a list of 10,000
real pods into its models took 12 s and 900 MiB (see docs/benchmarks.md). Responses are
decoded by msgspec into the few fields read here instead, skipping the rest of each object
without building it: 0.17 s and 22 MiB for the same list.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from kubernetes.utils.quantity import parse_quantity

from rebalancer.adapters.kube.records import EXCLUDE_ANNOTATION
from rebalancer.core.workload import PodState, WorkloadStatus
from rebalancer.errors import (
    KubeError,
    KubeUnavailableError,
)

# -- the fields read from the API, nothing more (msgspec skips every other field) ------------------

# Field names are the API's own (camelCase), so that msgspec maps them without renaming.
class _OwnerReference(msgspec.Struct):
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class _ObjectMeta(msgspec.Struct):
    name: str = ""
    uid: str = ""
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: datetime | None = None
    deletionTimestamp: datetime | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[_OwnerReference] | None = None


class _Resources(msgspec.Struct):
    requests: dict[str, str | int | float] | None = None  # quantities: "500m", "1", 2


class _Container(msgspec.Struct):
    name: str = ""
    resources: _Resources | None = None


class _PodSpec(msgspec.Struct):
    containers: list[_Container] | None = None


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""


class _PodStatus(msgspec.Struct):
    phase: str | None = None
    podIP: str | None = None  # a Kafka group member's host, where members map to pods by address
    conditions: list[_Condition] | None = None


class _Pod(msgspec.Struct):
    metadata: _ObjectMeta
    status: _PodStatus | None = None


class _PodWithRequests(_Pod):
    """Decoded only when a signal needs the CPU requests (hpa mode): the containers cost time."""

    spec: _PodSpec | None = None


class _LabelSelectorRequirement(msgspec.Struct):
    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(msgspec.Struct):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[_LabelSelectorRequirement] | None = None


class _DeploymentSpec(msgspec.Struct):
    replicas: int | None = None
    selector: LabelSelector | None = None


class _DeploymentStatus(msgspec.Struct):
    observedGeneration: int | None = None
    updatedReplicas: int | None = None
    availableReplicas: int | None = None


class _Deployment(msgspec.Struct):
    metadata: _ObjectMeta
    spec: _DeploymentSpec | None = None
    status: _DeploymentStatus | None = None


class _ScaleTargetRef(msgspec.Struct):
    kind: str = ""
    name: str = ""


class _MetricTarget(msgspec.Struct):
    type: str = ""
    averageUtilization: int | None = None


class _ResourceMetric(msgspec.Struct):
    name: str = ""
    target: _MetricTarget | None = None


class _MetricSpec(msgspec.Struct):
    type: str = ""
    resource: _ResourceMetric | None = None


class _HpaSpec(msgspec.Struct):
    scaleTargetRef: _ScaleTargetRef | None = None
    metrics: list[_MetricSpec] | None = None


class _HpaStatus(msgspec.Struct):
    currentReplicas: int | None = None
    desiredReplicas: int | None = None


class _Hpa(msgspec.Struct):
    metadata: _ObjectMeta
    spec: _HpaSpec | None = None
    status: _HpaStatus | None = None


class _Object(msgspec.Struct):
    """Any object, when only its metadata is read (ReplicaSets, ConfigMaps, write answers)."""

    metadata: _ObjectMeta


class _PodList(msgspec.Struct):
    items: list[_Pod] | None = None


class _PodWithRequestsList(msgspec.Struct):
    items: list[_PodWithRequests] | None = None


class _ObjectList(msgspec.Struct):
    items: list[_Object] | None = None


class _HpaList(msgspec.Struct):
    items: list[_Hpa] | None = None


# Built here, once, at import: msgspec prepares a type's decoding plan when a Decoder is made,
# and doing that lazily from several request threads at once crashed a worker (SIGSEGV).
DEPLOYMENT = msgspec.json.Decoder(_Deployment)
OBJECT = msgspec.json.Decoder(_Object)
OBJECTS = msgspec.json.Decoder(_ObjectList)
PODS = msgspec.json.Decoder(_PodList)
PODS_WITH_REQUESTS = msgspec.json.Decoder(_PodWithRequestsList)
HPAS = msgspec.json.Decoder(_HpaList)


def decode(data: bytes, decoder: msgspec.json.Decoder[Any], doing: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as e:  # ValidationError is a DecodeError
        raise KubeUnavailableError(f"Kubernetes API answered a malformed object while trying to {doing}: {e}") from e


def selector_string(selector: LabelSelector) -> str:
    """A label selector as the ``labelSelector`` query string (equality and set-based terms)."""
    terms = [f"{key}={value}" for key, value in sorted((selector.matchLabels or {}).items())]
    for expression in selector.matchExpressions or []:
        values = ",".join(sorted(expression.values or []))
        operator = expression.operator
        if operator == "In":
            terms.append(f"{expression.key} in ({values})")
        elif operator == "NotIn":
            terms.append(f"{expression.key} notin ({values})")
        elif operator == "Exists":
            terms.append(expression.key)
        elif operator == "DoesNotExist":
            terms.append(f"!{expression.key}")
        else:
            raise KubeError(f"unknown label selector operator {operator!r}", status=0)
    return ",".join(terms)


def controller_of(meta: _ObjectMeta) -> _OwnerReference | None:
    for ref in meta.ownerReferences or ():
        if ref.controller:
            return ref
    return None


def _is_ready(pod: _Pod) -> bool:
    for condition in (pod.status.conditions if pod.status else None) or ():
        if condition.type == "Ready":
            return condition.status == "True"
    return False


def _cpu_request(pod: _PodWithRequests, container: str | None) -> float | None:
    """Cores the named container requests (Kubernetes quantity: "500m", "2"), None if it sets none."""
    for candidate in (pod.spec.containers if pod.spec else None) or ():
        if candidate.name == container:
            quantity = (candidate.resources.requests if candidate.resources else None) or {}
            if "cpu" not in quantity:
                return None
            try:
                return float(parse_quantity(quantity["cpu"]))
            except ValueError:
                return None
    return None


def _cpu_target_utilization(hpa: _Hpa) -> float | None:
    """The averageUtilization of the HPA's Resource cpu metric (autoscaling/v2), if it has one."""
    for metric in (hpa.spec.metrics if hpa.spec else None) or ():
        resource = metric.resource
        if metric.type == "Resource" and resource and resource.name == "cpu" and resource.target \
                and resource.target.type == "Utilization" and resource.target.averageUtilization is not None:
            return float(resource.target.averageUtilization)
    return None


def pod_states(pods: Sequence[_Pod], owned_replica_sets: set[str], container: str | None) -> list[PodState]:
    """The decision core's view of each pod; owned means its controller is one of the
    Deployment's ReplicaSets (by UID)."""
    states = []
    for pod in pods:  # a plain loop: this runs once per pod, 10,000 times for a large Deployment
        meta, status = pod.metadata, pod.status
        ref = controller_of(meta)
        annotations = meta.annotations
        states.append(
            PodState(
                name=meta.name,
                ready=_is_ready(pod),
                owned=ref is not None and ref.kind == "ReplicaSet" and ref.uid in owned_replica_sets,
                created_at=meta.creationTimestamp,
                terminating=meta.deletionTimestamp is not None,
                phase=(status.phase if status else None) or "Unknown",
                excluded=annotations is not None and annotations.get(EXCLUDE_ANNOTATION, "").lower() == "true",
                cpu_request=_cpu_request(pod, container) if container and isinstance(pod, _PodWithRequests) else None,
            )
        )
    return states


def workload_status(found: _Deployment, targeting: Sequence[_Hpa]) -> WorkloadStatus:
    """The Deployment's rollout status and the HPA (if exactly one targets it) for the guards."""
    spec, status = found.spec or _DeploymentSpec(), found.status or _DeploymentStatus()
    hpa = targeting[0] if targeting else None
    return WorkloadStatus(
        replicas=spec.replicas if spec.replicas is not None else 1,
        generation=found.metadata.generation or 0,
        observed_generation=status.observedGeneration or 0,
        # The API omits these counts when they are zero.
        updated_replicas=status.updatedReplicas or 0,
        available_replicas=status.availableReplicas or 0,
        hpa_name=hpa.metadata.name if hpa else None,
        hpa_current_replicas=hpa.status.currentReplicas if hpa and hpa.status else None,
        hpa_desired_replicas=hpa.status.desiredReplicas if hpa and hpa.status else None,
        hpa_count=len(targeting),
        hpa_cpu_target_utilization=_cpu_target_utilization(hpa) if hpa else None,
    )


