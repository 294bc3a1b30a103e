"""A Kafka consumer as the node simulator runs it for a pod's container: one member of a real
consumer group (confluent-kafka, the librdkafka client), exporting its per-partition lag on
/metrics the way real consumers do.

- ``client.id`` is the pod's name (POD_NAME, from the downward API), so a member is its pod.
- GROUP_PROTOCOL ``consumer`` (KIP-848, the brokers assign, with GROUP_REMOTE_ASSIGNOR's assignor
  when set: ``uniform`` or ``range``) or ``classic`` (the client assigns, ``cooperative-sticky``).
- ``kafka_consumer_fetch_manager_records_lag{client_id, topic, partition}``: the Java client's
  per-partition lag as Micrometer's KafkaClientMetrics names it, filled from librdkafka's
  statistics: the high watermark minus the offset this consumer has processed, for the
  partitions it owns (a partition it does not own has no series: the series are its assignment).
- Work per message: PROCESS_MS for every pod (what the consumer's own work costs, so that a
  partition's inflow can outrun its consumer; WORK=cpu spends it computing, so that a consumer
  with more messages burns more CPU, else it waits), plus a slow pod (a bad node): SLOW_PODS_FILE lists
  ``<pod> <milliseconds per message>`` lines; a listed pod takes that long for each message,
  re-read every second. A pod's replacement has another name, so it is not slow. A pod listed
  for longer than MAX_POLL_INTERVAL_MS is stuck: it stops polling, so the group drops it, and
  its own gauges freeze at their last values (its metrics endpoint still answers).
- SIGTERM: leave the group (close), then exit 0, as a well-behaved consumer does.

Run: python consumer.py (everything comes from the environment).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

POD = os.environ["POD_NAME"]
stopping = threading.Event()
stats_lock = threading.Lock()
latest: dict = {}
consumed = {"count": 0}


def on_stats(document: str) -> None:
    with stats_lock:
        latest.clear()
        latest.update(json.loads(document))


def owned_partitions(stats: dict) -> list[tuple[str, str, dict]]:
    """The partitions this consumer is fetching now (librdkafka lists every partition of a
    subscribed topic; those not assigned here are not ``active``)."""
    out = []
    for topic, entry in (stats.get("topics") or {}).items():
        for partition, p in (entry.get("partitions") or {}).items():
            if partition != "-1" and p.get("fetch_state") == "active":
                out.append((topic, partition, p))
    return out


def partition_lag(p: dict) -> float | None:
    """What Java's records-lag measures: the high watermark minus this consumer's position. Before
    this consumer processed anything of the partition, the position is the committed offset, or
    the log start for a partition never committed (auto.offset.reset=earliest)."""
    high = p.get("hi_offset", -1)
    if high < 0:
        return None
    if p.get("consumer_lag_stored", -1) >= 0:
        return float(p["consumer_lag_stored"])
    if p.get("committed_offset", -1) >= 0:
        return float(max(high - p["committed_offset"], 0))
    return float(max(high - max(p.get("lo_offset", 0), 0), 0))


class ConsumerCollector:
    def collect(self):
        lag = GaugeMetricFamily("kafka_consumer_fetch_manager_records_lag",
                                "The latest lag of the partition (messages)", labels=["client_id", "topic", "partition"])
        with stats_lock:
            stats = dict(latest)
        for topic, partition, p in owned_partitions(stats):
            value = partition_lag(p)
            if value is not None:
                lag.add_metric([POD, topic, partition], value)
        yield lag
        total = CounterMetricFamily("kafka_consumer_fetch_manager_records_consumed", "Messages processed",
                                    labels=["client_id"])
        total.add_metric([POD], consumed["count"])
        yield total


def slowness(path: str | None) -> float:
    """Seconds per message for this pod, from the slow-pods file (0 when not listed)."""
    if not path:
        return 0.0
    try:
        for line in Path(path).read_text().splitlines():
            name, _, millis = line.strip().partition(" ")
            if name == POD:
                return float(millis or 0) / 1000
    except FileNotFoundError:
        pass
    return 0.0


def spin(seconds: float) -> None:
    """Compute for ``seconds`` of CPU time: real work, as a deserializer or an enrichment would do."""
    began = time.process_time()
    while time.process_time() - began < seconds:
        sum(range(200))


def consumer_config() -> dict:
    config = {
        "bootstrap.servers": os.environ["BOOTSTRAP_SERVERS"],
        "group.id": os.environ["GROUP_ID"],
        "client.id": POD,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 500,
        # Offsets are stored once a message is processed, so that a slow consumer's committed
        # offset (and its lag) is what it has really done.
        "enable.auto.offset.store": False,
        "statistics.interval.ms": 1000,
        "stats_cb": on_stats,
        "max.poll.interval.ms": int(os.environ.get("MAX_POLL_INTERVAL_MS", "300000")),
    }
    if os.environ.get("GROUP_PROTOCOL", "consumer") == "consumer":
        config["group.protocol"] = "consumer"  # timings are the brokers' (group.consumer.*)
        if os.environ.get("GROUP_REMOTE_ASSIGNOR"):  # the brokers' assignor: uniform (their default) or range
            config["group.remote.assignor"] = os.environ["GROUP_REMOTE_ASSIGNOR"]
    else:
        config.update({"group.protocol": "classic", "partition.assignment.strategy": "cooperative-sticky",
                       "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    return config


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    REGISTRY.register(ConsumerCollector())
    start_http_server(int(os.environ.get("METRICS_PORT", "8001")), addr=os.environ.get("POD_IP", "127.0.0.1"))
    consumer = Consumer(consumer_config())
    consumer.subscribe(os.environ["TOPIC"].split(","))
    slow_file, delay, checked = os.environ.get("SLOW_PODS_FILE"), 0.0, 0.0
    work = float(os.environ.get("PROCESS_MS", "0")) / 1000
    burn = os.environ.get("WORK") == "cpu"
    print(f"consumer {POD}: subscribed to {os.environ['TOPIC']} in group {os.environ['GROUP_ID']}", flush=True)
    try:
        while not stopping.is_set():
            if time.monotonic() - checked > 1:
                delay, checked = slowness(slow_file), time.monotonic()
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                print(f"consumer {POD}: {message.error()}", flush=True)
                continue
            if burn:
                spin(work)
            if delay + (0 if burn else work):
                stopping.wait(delay + (0 if burn else work))
            consumer.store_offsets(message)
            consumed["count"] += 1
    except KafkaException as e:
        print(f"consumer {POD}: {e}", flush=True)
        return 1
    finally:
        consumer.close()  # leaves the group: the others take its partitions at once
    print(f"consumer {POD}: left the group after SIGTERM", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
