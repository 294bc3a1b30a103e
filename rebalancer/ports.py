"""The ports: what the orchestration, the cooldown store and the actor need from Kubernetes and
the metrics backend and the Kafka brokers, as Protocols. The adapters (``kube.KubeGateway``,
``metrics_source.MetricsSource``, ``kafka.GroupReader``) satisfy them structurally, and so can a test's in-memory fake;
mypy (``make lint``) checks both."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from rebalancer.adapters.kube import ConfigMapState, DeploymentPods, EventNote, PodAction
from rebalancer.adapters.metrics_source import PartitionValues, PodValues

if TYPE_CHECKING:  # only a target measured at the brokers imports it (the cold start)
    from rebalancer.core.groups import GroupSnapshot


class PodReader(Protocol):
    def deployment_pods(self, namespace: str, deployment: str, container: str | None = None) -> DeploymentPods: ...


class MetricsReader(Protocol):
    def query_by_pod(self, query: str, at: datetime) -> PodValues: ...

    def query_partitions(self, query: str, at: datetime) -> PartitionValues: ...

    def query_by_partition(self, query: str, at: datetime) -> dict[tuple[str, str], float]: ...


class GroupReader(Protocol):
    """One target's consumer group, read at its brokers (``adapters.kafka.GroupReader``)."""

    def read_group(self) -> GroupSnapshot: ...


class StateConfigMaps(Protocol):
    def read_configmap(self, namespace: str, name: str) -> ConfigMapState: ...

    def write_configmap_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None],
                                    resource_version: str | None) -> str: ...


class PodActions(Protocol):
    def evict_pod(self, namespace: str, name: str, uid: str | None) -> PodAction: ...

    def delete_pod(self, namespace: str, name: str, uid: str | None) -> PodAction: ...

    def create_event(self, namespace: str, note: EventNote, now: datetime) -> None: ...
