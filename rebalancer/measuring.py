"""What a decision is measured on: one signal's query and its answer, per pod or per partition,
or a composite of several signals' answers. Each signal is queried once per invocation, however
many decisions (a signal, and a composite that uses it) read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rebalancer.adapters.metrics_source import PartitionValues, PodValues
from rebalancer.config import SignalName, Target
from rebalancer.core.composite import Composite, composite
from rebalancer.core.partitions import ByPartition
from rebalancer.ports import MetricsReader


@dataclass(frozen=True)
class Measured:
    query: str  # what was asked (several queries, for a composite)
    samples: Mapping[str, float] | ByPartition  # what the decision core decides on
    values: Mapping[str, float]  # per pod, as the backend answered (for the series it had for other pods)
    series_without_pod: int = 0
    composite: Composite | None = None


@dataclass
class Measurer:
    """One invocation's measurements of one target, each signal queried at most once."""

    target: Target
    metrics: MetricsReader
    now: datetime
    answers: dict[str, PodValues | PartitionValues] = field(default_factory=dict)
    inflows: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)

    def query(self, signal: SignalName) -> str:
        if signal == "composite":
            assert self.target.composite is not None
            return "; ".join(self.query(s) for s in self.target.composite.weights)
        return self.target.partitions_query(signal) or self.target.query_for(signal)

    def _answer(self, signal: SignalName) -> PodValues | PartitionValues:
        if signal not in self.answers:
            partitions_query = self.target.partitions_query(signal)
            self.answers[signal] = (self.metrics.query_partitions(partitions_query, self.now) if partitions_query
                                    else self.metrics.query_by_pod(self.target.query_for(signal), self.now))
        return self.answers[signal]

    def measure(self, signal: SignalName) -> Measured:
        """Raises MetricsQueryError (and the adapter's unavailability) as the adapter does."""
        if signal == "composite":
            return self._composite()
        answer = self._answer(signal)
        samples = ByPartition(answer.held, self._inflow(signal)) if isinstance(answer, PartitionValues) else answer.values
        return Measured(self.query(signal), samples, answer.values, answer.series_without_pod)

    def _inflow(self, signal: SignalName) -> dict[tuple[str, str], float] | None:
        """Each partition's inflow, when the signal has an inflow query: what tells a hot
        partition from a slow consumer."""
        inflow_query = self.target.inflow_query(signal)
        if inflow_query is None:
            return None
        if signal not in self.inflows:
            self.inflows[signal] = self.metrics.query_by_partition(inflow_query, self.now)
        return self.inflows[signal]

    def _composite(self) -> Measured:
        spec = self.target.composite
        assert spec is not None
        answers = {s: self._answer(s) for s in spec.weights}
        weights = {str(s): w for s, w in spec.weights.items()}
        scored = composite({s: a.values for s, a in answers.items()}, weights, {s: self.target.floor(s) for s in spec.weights})
        values = {pod: v for a in answers.values() for pod, v in a.values.items()}
        without_pod = max(a.series_without_pod for a in answers.values())
        return Measured(self.query("composite"), scored.scores, values, without_pod, scored)
