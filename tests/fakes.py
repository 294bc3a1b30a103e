"""In-memory fakes of the ports (rebalancer/ports.py), for the fast orchestration tests. They keep
the contract the real adapters keep (the contract suite and the real control plane prove that
one): a conditional ConfigMap write fails with KubeConflictError when the resourceVersion moved,
an unknown Deployment is KubeNotFoundError. Every call is recorded, in order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rebalancer.adapters.kube import ActionResult, ConfigMapState, DeploymentPods, EventNote, PodAction
from rebalancer.adapters.metrics_source import PartitionValues, PodValues
from rebalancer.core.groups import GroupSnapshot
from rebalancer.core.partitions import PartitionLag
from rebalancer.core.workload import PodState, WorkloadStatus
from rebalancer.errors import KubeConflictError, KubeNotFoundError


@dataclass
class FakeKube:
    """PodReader, StateConfigMaps and PodActions at once, as KubeGateway is."""

    deployments: dict[tuple[str, str], DeploymentPods] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], ConfigMapState] = field(default_factory=dict)
    eviction_results: dict[str, ActionResult] = field(default_factory=dict)  # pod -> "blocked" | "failed"
    before_write: Callable[[], None] | None = None  # runs between a read and the next write: a rival
    calls: list[tuple[str, ...]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add_deployment(self, namespace: str, name: str, pods: list[str], now: datetime) -> None:
        states = tuple(PodState(name=p, ready=True, owned=True, created_at=now - timedelta(hours=1)) for p in pods)
        workload = WorkloadStatus(replicas=len(pods), updated_replicas=len(pods), available_replicas=len(pods))
        self.deployments[(namespace, name)] = DeploymentPods(namespace, name, f"uid-{name}", f"app={name}", states,
                                                             workload, {p: f"uid-{p}" for p in pods})

    def deployment_pods(self, namespace: str, deployment: str, container: str | None = None) -> DeploymentPods:
        self.calls.append(("deployment_pods", namespace, deployment))
        if (namespace, deployment) not in self.deployments:
            raise KubeNotFoundError(f'deployments.apps "{deployment}" not found', status=404, reason="NotFound")
        return self.deployments[(namespace, deployment)]

    def read_configmap(self, namespace: str, name: str) -> ConfigMapState:
        self.calls.append(("read_configmap", namespace, name))
        return self.configmaps.get((namespace, name), ConfigMapState({}, None))

    def write_configmap_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None],
                                    resource_version: str | None) -> str:
        if self.before_write is not None:
            rival, self.before_write = self.before_write, None
            rival()
        self.calls.append(("write_configmap", namespace, name))
        current = self.configmaps.get((namespace, name))
        if (current.resource_version if current else None) != resource_version:
            raise KubeConflictError("the object has been modified", status=409, reason="Conflict")
        merged = {**(current.annotations if current else {}), **annotations}
        version = str(int(resource_version or 0) + 1)
        self.configmaps[(namespace, name)] = ConfigMapState({k: v for k, v in merged.items() if v is not None}, version)
        return version

    def evict_pod(self, namespace: str, name: str, uid: str | None) -> PodAction:
        self.calls.append(("evict", namespace, name))
        result: ActionResult = self.eviction_results.get(name, "evicted")
        return PodAction(name, result, "" if result == "evicted" else "the disruption budget allows no eviction now")

    def delete_pod(self, namespace: str, name: str, uid: str | None) -> PodAction:
        self.calls.append(("delete", namespace, name))
        return PodAction(name, "deleted")

    def create_event(self, namespace: str, note: EventNote, now: datetime) -> None:
        self.calls.append(("event", namespace, note.name))
        self.events.append({"kind": note.kind, "name": note.name, "reason": note.reason, "warning": note.warning})

    def writes(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] in ("write_configmap", "evict", "delete", "event")]


@dataclass
class FakeMetrics:
    """MetricsReader: the same per-pod values for any query, or an error to raise."""

    values: dict[str, float] = field(default_factory=dict)
    error: Exception | None = None
    queries: list[str] = field(default_factory=list)
    partitions: dict[str, list[PartitionLag]] = field(default_factory=dict)  # for a partitions query
    inflow: dict[tuple[str, str], float] = field(default_factory=dict)  # for an inflow query

    def query_by_pod(self, query: str, at: datetime) -> PodValues:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return PodValues(dict(self.values))

    def query_partitions(self, query: str, at: datetime) -> PartitionValues:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return PartitionValues({pod: list(held) for pod, held in self.partitions.items()})

    def query_by_partition(self, query: str, at: datetime) -> dict[tuple[str, str], float]:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return dict(self.inflow)


@dataclass
class FakeGroup:
    """GroupReader: one consumer group as its brokers would describe it, or an error to raise."""

    snapshot: GroupSnapshot | Exception
    reads: int = 0

    def read_group(self) -> GroupSnapshot:
        self.reads += 1
        if isinstance(self.snapshot, Exception):
            raise self.snapshot
        return self.snapshot


if TYPE_CHECKING:  # mypy (make lint) proves the fakes fit the ports the code is typed with
    from rebalancer.ports import GroupReader, MetricsReader, PodActions, PodReader, StateConfigMaps

    _pods: PodReader = FakeKube()
    _state: StateConfigMaps = FakeKube()
    _actions: PodActions = FakeKube()
    _metrics: MetricsReader = FakeMetrics()
    _group: GroupReader = FakeGroup(GroupSnapshot("g", "STABLE", "consumer", "uniform", (), {}))
