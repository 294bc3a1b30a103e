"""What a decision is measured on: one signal's query and its answer, per pod or per partition,
or a composite of several signals' answers. Each signal is queried once per invocation, however
many decisions (a signal, and a composite that uses it) read it.

The lag signal may be measured at the brokers instead (``source: kafka``): the group's members,
their partitions and the offsets, read now, attributed to the target's pods (``core.groups``).
A group that cannot be judged (unknown, empty, rebalancing) is a refusal with its own code.

None of these reads needs the pods: ``start`` sends them all before the Kubernetes read, and
``measure`` waits for each where it is used, raising there what the read raised."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from rebalancer.adapters.kube import DeploymentPods
from rebalancer.adapters.metrics_source import PartitionValues, PodValues
from rebalancer.config import SignalName, Target
from rebalancer.core.composite import Composite, composite
from rebalancer.core.partitions import ByPartition
from rebalancer.ports import GroupReader, MetricsReader

if TYPE_CHECKING:  # imported when a group is read: configurations without one start without it
    from rebalancer.background import BackgroundReads
    from rebalancer.core import groups

T = TypeVar("T")


@dataclass(frozen=True)
class Measured:
    query: str  # what was asked (several queries, for a composite)
    samples: Mapping[str, float] | ByPartition  # what the decision core decides on
    values: Mapping[str, float]  # per pod, as the backend answered (for the series it had for other pods)
    series_without_pod: int = 0
    composite: Composite | None = None
    group: groups.GroupReport | None = None  # source kafka: the group as read, and what mapped to no pod
    refusal: groups.Refusal | None = None  # source kafka: a group that cannot be judged now


@dataclass(frozen=True)
class _AtBrokers:
    """One read of a group at its brokers, attributed to the target's pods (or refused)."""

    report: groups.GroupReport
    attributed: groups.Attributed | None
    refusal: groups.Refusal | None

    @property
    def values(self) -> dict[str, float]:
        return self.attributed.values if self.attributed else {}


_Answer = PodValues | PartitionValues | _AtBrokers


@dataclass
class Measurer:
    """One invocation's measurements of one target, each signal queried at most once."""

    target: Target
    metrics: MetricsReader
    now: datetime
    group: GroupReader | None = None  # the target's consumer group, when its lag is measured at the brokers
    answers: dict[str, _Answer] = field(default_factory=dict)
    inflows: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    started: dict[tuple[str, str], Future[Any]] = field(default_factory=dict)  # (what, signal) -> its read

    def start(self, signals: Iterable[SignalName], background: BackgroundReads) -> None:
        """Send every read these signals need (a composite's components too), to be answered
        while Kubernetes is read."""
        for signal in signals:
            components = list(self.target.composite.weights) if signal == "composite" and self.target.composite else [signal]
            for component in components:
                self._start(("answer", component), partial(self._fetch, component), background)
                if self.target.inflow_query(component) is not None:
                    self._start(("inflow", component), partial(self._fetch_inflow, component), background)

    def _start(self, key: tuple[str, str], read: Callable[[], Any], background: BackgroundReads) -> None:
        if key not in self.started:
            self.started[key] = background.submit(read)

    def _waited(self, key: tuple[str, str], read: Callable[[], T]) -> T:
        """The read started for ``key``, waited for; else made now."""
        future = self.started.pop(key, None)
        return future.result() if future is not None else read()

    def _fetch(self, signal: SignalName) -> PodValues | PartitionValues | groups.GroupSnapshot:
        """One signal's read, which needs no pods: the query, or the group at its brokers."""
        if self.target.kafka_source(signal) is not None:
            assert self.group is not None, "app.build gives every kafka-source target its reader"
            return self.group.read_group()
        partitions_query = self.target.partitions_query(signal)
        if partitions_query:
            return self.metrics.query_partitions(partitions_query, self.now)
        return self.metrics.query_by_pod(self.target.query_for(signal), self.now)

    def _fetch_inflow(self, signal: SignalName) -> dict[tuple[str, str], float]:
        inflow_query = self.target.inflow_query(signal)
        assert inflow_query is not None
        return self.metrics.query_by_partition(inflow_query, self.now)

    def query(self, signal: SignalName) -> str:
        if signal == "composite":
            assert self.target.composite is not None
            return "; ".join(self.query(s) for s in self.target.composite.weights)
        kafka = self.target.kafka_source(signal)
        if kafka is not None:
            topics = f", topics {', '.join(kafka.topics)}" if kafka.topics else ""
            return f"kafka: consumer group {kafka.group} at {kafka.bootstrap_servers}{topics}"
        return self.target.partitions_query(signal) or self.target.query_for(signal)

    def _answer(self, signal: SignalName, found: DeploymentPods) -> _Answer:
        if signal not in self.answers:
            fetched = self._waited(("answer", signal), lambda: self._fetch(signal))
            if isinstance(fetched, PodValues | PartitionValues):
                self.answers[signal] = fetched
            else:  # the group as read at the brokers, attributed to the pods now that they are known
                self.answers[signal] = self._at_brokers(signal, fetched, found)
        return self.answers[signal]

    def _at_brokers(self, signal: SignalName, snapshot: groups.GroupSnapshot, found: DeploymentPods) -> _AtBrokers:
        from rebalancer.core import groups

        kafka = self.target.kafka_source(signal)
        assert kafka is not None
        refused = groups.refusal(snapshot)
        if refused is not None:
            return _AtBrokers(groups.report_of(snapshot, kafka.pod_from), None, refused)
        pods = [pod.name for pod in found.pods]
        attributed = groups.attribute(snapshot, pods, found.pod_ips or {}, kafka.pod_from, self._inflow(signal))
        return _AtBrokers(attributed.report, attributed, None)

    def measure(self, signal: SignalName, found: DeploymentPods) -> Measured:
        """Raises MetricsQueryError (and the adapters' unavailability) as the adapters do."""
        if signal == "composite":
            return self._composite(found)
        answer = self._answer(signal, found)
        if isinstance(answer, _AtBrokers):
            samples: Mapping[str, float] | ByPartition = answer.attributed.samples if answer.attributed else {}
            return Measured(self.query(signal), samples, answer.values, group=answer.report,
                            refusal=answer.refusal)
        samples = ByPartition(answer.held, self._inflow(signal)) if isinstance(answer, PartitionValues) else answer.values
        return Measured(self.query(signal), samples, answer.values, answer.series_without_pod)

    def _inflow(self, signal: SignalName) -> dict[tuple[str, str], float] | None:
        """Each partition's inflow, when the signal has an inflow query: what tells a hot
        partition from a slow consumer."""
        if self.target.inflow_query(signal) is None:
            return None
        if signal not in self.inflows:
            self.inflows[signal] = self._waited(("inflow", signal), lambda: self._fetch_inflow(signal))
        return self.inflows[signal]

    def _composite(self, found: DeploymentPods) -> Measured:
        spec = self.target.composite
        assert spec is not None
        answers = {s: self._answer(s, found) for s in spec.weights}
        refused = next((a for a in answers.values() if isinstance(a, _AtBrokers) and a.refusal is not None), None)
        if refused is not None:  # a component that cannot be judged now: neither can the composite
            return Measured(self.query("composite"), {}, {}, group=refused.report, refusal=refused.refusal)
        weights = {str(s): w for s, w in spec.weights.items()}
        scored = composite({s: a.values for s, a in answers.items()}, weights, {s: self.target.floor(s) for s in spec.weights})
        values = {pod: v for a in answers.values() for pod, v in a.values.items()}
        without_pod = max(a.series_without_pod if not isinstance(a, _AtBrokers) else 0 for a in answers.values())
        return Measured(self.query("composite"), scored.scores, values, without_pod, scored)
