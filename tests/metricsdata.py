"""Consumer metrics as the exporters would have scraped them, in the formats the engines load.

One set of ``Series`` can be written as VictoriaMetrics' import text, as OpenMetrics for a
promtool backfill into Prometheus, and as promtool ``input_series``, so that the same data
reaches every engine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

STEP_SECONDS = 15


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    samples: list[tuple[float, float]] = field(default_factory=list)  # (unix seconds, value)

    def selector(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}"


def to_victoriametrics_import(series: Iterable[Series]) -> str:
    """Prometheus text exposition with millisecond timestamps (/api/v1/import/prometheus)."""
    lines = [f"{s.selector()} {value!r} {round(t * 1000)}" for s in series for t, value in s.samples]
    return "\n".join(lines) + "\n"


def to_openmetrics(series: Iterable[Series]) -> str:
    """OpenMetrics with second timestamps, grouped per metric family, for `promtool tsdb create-blocks-from`."""
    by_name: dict[str, list[Series]] = {}
    for s in series:
        by_name.setdefault(s.name, []).append(s)
    lines = []
    for name, members in by_name.items():
        lines.append(f"# TYPE {name} {'counter' if name.endswith('_total') else 'gauge'}")
        for s in members:
            lines.extend(f"{s.selector()} {value!r} {t:.3f}" for t, value in s.samples)
    return "\n".join(lines) + "\n# EOF\n"


def to_promtool_input_series(series: Iterable[Series], start: float) -> list[dict[str, str]]:
    """promtool ``input_series``: one value per interval from time 0 (= ``start``)."""
    out = []
    for s in series:
        offsets = [round((t - start) / STEP_SECONDS) for t, _ in s.samples]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "samples must be evenly spaced"
        values = ["_"] * offsets[0] + [repr(v) for _, v in s.samples]
        out.append({"series": s.selector(), "values": " ".join(values)})
    return out


def times(start: float, end: float) -> list[float]:
    count = int((end - start) // STEP_SECONDS) + 1
    return [start + i * STEP_SECONDS for i in range(count)]


def cpu_usage(
    namespace: str,
    container: str,
    rates: Mapping[str, float] | list[tuple[float, Mapping[str, float]]],
    start: float,
    end: float,
    *,
    noise: float = 0.0,
    seed: int = 1,
    with_neighbours: bool = True,
) -> list[Series]:
    """cAdvisor's ``container_cpu_usage_seconds_total`` for each pod, growing at ``rates`` (cores).

    ``rates`` may be a list of (from_time, rates) phases, so the skew can change over time. With
    ``with_neighbours`` every pod also has the series cAdvisor exports beside the container's own
    (the pod-level cgroup with ``container=""`` and a sidecar), which the query must ignore.
    """
    phases = rates if isinstance(rates, list) else [(start, rates)]
    rng = random.Random(seed)
    pods = sorted(phases[0][1])
    series = []
    for pod in pods:
        own = Series("container_cpu_usage_seconds_total", {"namespace": namespace, "pod": pod, "container": container})
        neighbours = [
            Series("container_cpu_usage_seconds_total", {"namespace": namespace, "pod": pod, "container": ""}),
            Series("container_cpu_usage_seconds_total", {"namespace": namespace, "pod": pod, "container": "istio-proxy"}),
        ]
        total = 1000.0 + rng.random() * 100  # a counter that has been running for a while
        previous = None
        for t in times(start, end):
            if previous is not None:
                rate = next(r for since, r in reversed(phases) if t > since)[pod]
                total += rate * (t - previous) * (1 + rng.uniform(-noise, noise))
            previous = t
            # cAdvisor prints CPU seconds with nanosecond resolution; keep as many digits as it does.
            own.samples.append((t, round(total, 9)))
            neighbours[0].samples.append((t, round(total * 1.02, 9)))
            neighbours[1].samples.append((t, round(t * 0.01, 9)))
        series.append(own)
        if with_neighbours:
            series.extend(neighbours)
    return series


def memory_working_set(namespace: str, container: str, bytes_by_pod: Mapping[str, float], start: float,
                       end: float) -> list[Series]:
    """cAdvisor's ``container_memory_working_set_bytes`` for each pod (a gauge), with the pod-level
    cgroup (``container=""``) beside the container's own, which the query must ignore."""
    series = []
    for pod, value in sorted(bytes_by_pod.items()):
        own = Series("container_memory_working_set_bytes", {"namespace": namespace, "pod": pod, "container": container})
        pod_level = Series("container_memory_working_set_bytes", {"namespace": namespace, "pod": pod, "container": ""})
        own.samples = [(t, float(value)) for t in times(start, end)]
        pod_level.samples = [(t, float(value) * 1.1) for t in times(start, end)]
        series += [own, pod_level]
    return series


def partition_lag_with_assignment(
    namespace: str,
    group: str,
    lag_by_partition: Mapping[int, float],
    assignment: Mapping[int, str],
    start: float,
    end: float,
    topic: str = "events",
    container: str = "ingestion-consumer",
) -> list[Series]:
    """Per-partition lag as two real sources export it, for the same partitions: kafka_exporter's
    ``kafka_consumergroup_lag{consumergroup, topic, partition}`` (no member), and the consumers'
    own ``kafka_consumer_fetch_manager_records_lag`` (Micrometer's name for the Java client's
    records-lag), one series per partition a pod holds, labelled as a Kubernetes scrape labels
    it (namespace, pod, container) with the client's ``client_id``. The latter is also the
    assignment that attributes kafka_exporter's lag to pods."""
    series = []
    for partition, lag in sorted(lag_by_partition.items()):
        s = Series("kafka_consumergroup_lag", {"consumergroup": group, "topic": topic, "partition": str(partition)})
        s.samples = [(t, float(lag)) for t in times(start, end)]
        series.append(s)
    for partition, pod in sorted(assignment.items()):
        s = Series("kafka_consumer_fetch_manager_records_lag", {
            "namespace": namespace, "pod": pod, "container": container, "client_id": pod,
            "topic": topic, "partition": str(partition)})
        s.samples = [(t, float(lag_by_partition.get(partition, 0.0))) for t in times(start, end)]
        series.append(s)
    return series


def consumer_records_lag(
    namespace: str, container: str, lag_by_pod: Mapping[str, float], start: float, end: float, topic: str = "events"
) -> list[Series]:
    """The Java consumer's own ``records-lag`` per assigned partition, as Micrometer exports it."""
    series = []
    for pod, lag in sorted(lag_by_pod.items()):
        for partition in range(2):  # each pod holds two partitions; the query sums them
            s = Series("kafka_consumer_fetch_manager_records_lag",
                       {"namespace": namespace, "container": container, "pod": pod, "topic": topic,
                        "partition": f"{pod[-1]}{partition}", "client_id": f"{pod}-consumer"})
            s.samples = [(t, float(lag) / 2) for t in times(start, end)]
            series.append(s)
    return series


# The partitions templates the README gives (docs: "Lag, as real consumers export it"). The Java
# client's records-lag through Micrometer, per partition, as the pods' scrape labels it:
MICROMETER_PARTITIONS = ('sum by (pod, topic, partition) (kafka_consumer_fetch_manager_records_lag'
                         '{namespace="$namespace", container="$container"})')
# kafka_exporter's per-partition lag, attributed to pods by the consumers' own per-partition series
# (1 for each partition a pod holds):
KAFKA_EXPORTER_PARTITIONS = (
    'kafka_consumergroup_lag{consumergroup="ingestion"} * on (topic, partition) group_left (pod) '
    '(max by (pod, topic, partition) (kafka_consumer_fetch_manager_records_lag{namespace="$namespace", '
    'container="$container"}) >= bool 0)'
)
# The same, summed per pod: a plain per-pod lag query.
KAFKA_EXPORTER_LAG_JOIN = f"sum by (pod) ({KAFKA_EXPORTER_PARTITIONS})"


LAG_SOURCES = Path(__file__).resolve().parents[1] / "docs" / "lag-sources.md"


def documented_partitions_queries() -> list[str]:
    """Every ``partitions:`` template in docs/lag-sources.md, in order: Micrometer, the JMX
    exporter, kafka_exporter. The tests read them from the document so that it cannot drift."""
    return re.findall(r"^\s*partitions: '(.+)'$", LAG_SOURCES.read_text(), flags=re.MULTILINE)
