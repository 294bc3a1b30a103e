"""The pods and the Deployment as the decision sees them, the rules of one decision, and the
guards that refuse to act while the workload is changing anyway. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

Selection = Literal["rotate_outliers", "hottest"]
Mode = Literal["cv", "hpa"]
# How a consumer group hands partitions out (core.assignors): the new protocol's two, the classic one.
Assignor = Literal["uniform", "range", "cooperative-sticky"]
# How far a consumer's delay (its lag over its inflow) may move either way across a rebalance, as a
# share of its delay now (core.delays). Chosen on a real group (docs/benchmarks.md): the CV it settled
# at fell inside the projected range in 30 of 30 runs at 0.2, 28 at 0.15, 6 without any spread.
DELAY_SPREAD = 0.2
Role = Literal["hot", "cold"]


@dataclass(frozen=True)
class PodState:
    """What the decision needs to know about one pod matched by the Deployment's selector."""

    name: str
    ready: bool
    owned: bool  # controlled, through its ReplicaSet, by the target Deployment
    created_at: datetime | None = None
    terminating: bool = False  # deletionTimestamp is set
    phase: str = "Running"
    excluded: bool = False  # annotated pod-rebalancer/exclude: "true"
    cpu_request: float | None = None  # cores requested by the target container (hpa mode)


@dataclass(frozen=True)
class Rules:
    """The knobs of one (target, signal) decision; built from the configuration."""

    threshold: float
    min_pods: int = 3
    min_pod_age: timedelta = timedelta(minutes=10)
    selection: Selection = "rotate_outliers"
    max_pods_per_action: int = 2
    max_missing_fraction: float = 0.2
    min_improvement: float = 0.1
    max_unready_fraction: float = 0.2
    mode: Mode = "cv"
    tolerance: float = 1.5  # hpa mode
    top_k: int = 2  # hpa mode
    floor: float = 0.0  # the pods' mean below which a skew does not matter
    unit: str = ""  # of the signal's values, for the reasons
    hot_partition_share: float = 0.5  # partitions: share of the hot pod's excess one partition may explain
    hot_inflow_ratio: float = 3.0  # partitions with inflow: a partition this many times the median inflow is hot
    assignor: Assignor = "uniform"  # partitions: how the consumer group hands partitions out (core.assignors)
    delay_spread: float = DELAY_SPREAD  # inflow: how far a consumer's delay may move across a rebalance (core.delays)


@dataclass(frozen=True)
class WorkloadStatus:
    """The Deployment's rollout state and its HorizontalPodAutoscaler's, for the safety guards."""

    replicas: int
    generation: int = 1
    observed_generation: int = 1
    updated_replicas: int | None = None  # None: take as equal to replicas
    available_replicas: int | None = None
    hpa_name: str | None = None
    hpa_current_replicas: int | None = None
    hpa_desired_replicas: int | None = None
    hpa_count: int = 0  # HorizontalPodAutoscalers whose scaleTargetRef is the Deployment
    hpa_cpu_target_utilization: float | None = None  # percent, from the HPA's Resource cpu Utilization target


def rollout_guard(workload: WorkloadStatus) -> str | None:
    """Evicting during a rollout fights the Deployment controller and can stall it."""
    if workload.observed_generation < workload.generation:
        return (f"the Deployment is rolling out (observedGeneration {workload.observed_generation} "
                f"< generation {workload.generation})")
    if workload.updated_replicas is not None and workload.updated_replicas < workload.replicas:
        return f"the Deployment is rolling out ({workload.updated_replicas} of {workload.replicas} replicas updated)"
    if workload.available_replicas is not None and workload.available_replicas < workload.replicas:
        # Also right after an eviction, until the replacement is available: moving more now would
        # take capacity the Deployment does not have yet.
        return (f"the Deployment is not fully available ({workload.available_replicas} of {workload.replicas} "
                "replicas available: a rollout, or pods being replaced)")
    return None


def hpa_guard(workload: WorkloadStatus) -> str | None:
    """While the autoscaler changes the replica count, the load per pod is about to change anyway."""
    current, desired = workload.hpa_current_replicas, workload.hpa_desired_replicas
    if workload.hpa_name and current is not None and desired is not None and current != desired:
        return f"HorizontalPodAutoscaler {workload.hpa_name} is scaling ({current} -> {desired} replicas)"
    return None


def unready_guard(pods: Sequence[PodState], max_unready_fraction: float) -> str | None:
    """Many unready pods mean something else is wrong; moving load around would add to it."""
    own = [p for p in pods if p.owned and not p.terminating]
    unready = [p for p in own if not p.ready or p.phase != "Running"]
    if own and len(unready) / len(own) > max_unready_fraction:
        return (f"{len(unready)} of {len(own)} pods of the Deployment are not Ready "
                f"(more than max_unready_fraction {max_unready_fraction:.0%})")
    return None

