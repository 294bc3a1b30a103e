"""Consumer metrics as the exporters would have scraped them, in the formats the engines load.

One set of ``Series`` can be written as VictoriaMetrics' import text, as OpenMetrics for a
promtool backfill into Prometheus, and as promtool ``input_series``, so that the same data
reaches every engine.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

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
) -> list[Series]:
    """kafka-exporter's per-partition ``kafka_consumergroup_lag`` plus a partition -> pod
    ``kafka_consumer_assignment`` gauge exported by the consumers themselves."""
    series = []
    for partition, lag in sorted(lag_by_partition.items()):
        s = Series("kafka_consumergroup_lag", {"consumergroup": group, "topic": topic, "partition": str(partition)})
        s.samples = [(t, float(lag)) for t in times(start, end)]
        series.append(s)
    for partition, pod in sorted(assignment.items()):
        s = Series("kafka_consumer_assignment", {"namespace": namespace, "group_id": group, "topic": topic,
                                                 "partition": str(partition), "pod": pod})
        s.samples = [(t, 1.0) for t in times(start, end)]
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


# The lag template the README gives for kafka-exporter's per-partition lag: joined
# to the consumers' own partition -> pod assignment metric.
KAFKA_EXPORTER_LAG_JOIN = (
    'sum by (pod) (kafka_consumergroup_lag{consumergroup="ingestion"} * on (topic, partition) '
    'group_left (pod) kafka_consumer_assignment{namespace="$namespace", group_id="ingestion"})'
)
