"""docs/lag-sources.md's queries, each against series shaped exactly as its source emits them,
on VictoriaMetrics and on Prometheus: the Java client's records-lag through Micrometer and
through the JMX exporter (a librdkafka consumer exports Micrometer's shape: tests/kafka), and
kafka_exporter's per-partition lag attributed by the consumers' own series. The queries are read
from the document, so the document cannot drift from what was tested."""

from __future__ import annotations

from statistics import fmean, pstdev

import pytest

from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import Series, documented_partitions_queries, times

# What the pods' scrape adds beside namespace, pod and container (not job: imported series carry
# none, which is how tests/servers.VictoriaMetrics tells them from what it scraped itself).
SCRAPE = {"endpoint": "metrics"}



def per_partition(name: str, namespace: str, container: str, lag: dict[int, float], owner: dict[int, str],
                  start: float, end: float) -> list[Series]:
    """One series per partition a pod holds, as a client library exports it and the scrape labels it."""
    series = []
    for partition, pod in sorted(owner.items()):
        s = Series(name, {**SCRAPE, "namespace": namespace, "pod": pod, "container": container, "instance": f"10.0.0.{partition}:8001",
                          "client_id": f"{pod}-0", "topic": "events", "partition": str(partition)})
        s.samples = [(t, lag[partition]) for t in times(start, end)]
        series.append(s)
    return series


def kafka_exporter(group: str, lag: dict[int, float], start: float, end: float) -> list[Series]:
    """kafka_exporter's own series, labelled by its own pod's scrape (another namespace, its own pod)."""
    series = []
    for partition, value in sorted(lag.items()):
        s = Series("kafka_consumergroup_lag", {**SCRAPE, "namespace": "monitoring", "pod": "kafka-exporter-7c9d-x2", "container":
                                               "kafka-exporter", "instance": "10.0.9.9:9308", "consumergroup": group,
                                               "topic": "events", "partition": str(partition)})
        s.samples = [(t, value) for t in times(start, end)]
        series.append(s)
    return series


MICROMETER = "kafka_consumer_fetch_manager_records_lag"
JMX = "kafka_consumer_consumer_fetch_manager_metrics_records_lag"


@pytest.mark.parametrize("source", ["micrometer", "jmx-exporter", "kafka-exporter"])
def test_each_documented_lag_query_attributes_every_partition_to_its_pod(source, load_metrics, make_client, kube):
    micrometer, jmx, exporter = documented_partitions_queries()
    pods = kube.deployment("consumer", replicas=4)
    now = aligned_now()
    owner = {p: pods[p % 4] for p in range(8)}  # two partitions each
    lag = {p: (4000.0 if owner[p] == pods[1] else 30.0 + p) for p in range(8)}
    if source == "micrometer":
        query, series = micrometer, per_partition(MICROMETER, kube.namespace, "consumer", lag, owner, now - 900, now)
    elif source == "jmx-exporter":
        query, series = jmx, per_partition(JMX, kube.namespace, "consumer", lag, owner, now - 900, now)
    else:
        # The consumers' series hold other values (their own view, seconds apart): only which pod
        # holds what is taken from them; the lag is kafka_exporter's.
        own = per_partition(MICROMETER, kube.namespace, "consumer", {p: 7.0 for p in lag}, owner, now - 900, now)
        query, series = exporter, kafka_exporter("ingestion", lag, now - 900, now) + own
    backend = load_metrics(series)
    client = make_client(backend.url, [target("consumer", kube.namespace, min_pod_age="0s", min_pods=3,
                                              signals={"lag": {"threshold": 0.5, "partitions": query}})])

    decision = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()["decisions"][0]

    assert decision["partitions"]["held"] == {pod: [f"events/{p}" for p in sorted(owner) if owner[p] == pod] for pod in pods}
    per_pod = [sum(v for p, v in lag.items() if owner[p] == pod) for pod in pods]
    assert decision["verified"]["value"] == pytest.approx(pstdev(per_pod) / fmean(per_pod), rel=1e-9)
    assert decision["hot"]["pod"] == pods[1] and decision["series_ignored"] == 0
