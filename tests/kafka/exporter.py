"""Plays kafka_exporter (github.com/danielqsj/kafka_exporter, which the Go module proxy does not
serve) for the tests: the same metric names and labels, read from the real broker at each scrape.

- ``kafka_topic_partition_current_offset{topic, partition}``: the log-end offset (high watermark);
  its rate is the partition's inflow.
- ``kafka_topic_partition_oldest_offset{topic, partition}``
- ``kafka_consumergroup_current_offset{consumergroup, topic, partition}``: the committed offset.
- ``kafka_consumergroup_lag{consumergroup, topic, partition}``: log-end minus committed, for the
  partitions the group has committed (no member: the series say nothing of who holds what).

Environment: BOOTSTRAP_SERVERS, TOPIC and GROUP (comma-separated), POD_IP, METRICS_PORT.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily

TIMEOUT = 5.0
admin = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP_SERVERS"]})
# A group's committed offsets come from a Consumer with its id that never joins it: an
# AdminClient's list_consumer_group_offsets can crash the process while the group's coordinator
# moves (see rebalancer/adapters/kafka.py).
committed_of = {group: Consumer({"bootstrap.servers": os.environ["BOOTSTRAP_SERVERS"], "group.id": group,
                                 "enable.auto.commit": False})
                for group in os.environ["GROUP"].split(",")}


def partitions(topic: str) -> list[TopicPartition]:
    found = admin.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions
    return [TopicPartition(topic, p) for p in sorted(found)]


def offsets(every: list[TopicPartition], spec: OffsetSpec) -> dict[int, int]:
    futures = admin.list_offsets({tp: spec for tp in every}, request_timeout=TIMEOUT)
    return {tp.partition: future.result(timeout=TIMEOUT).offset for tp, future in futures.items()}


class KafkaExporterShape:
    def collect(self):
        current = GaugeMetricFamily("kafka_topic_partition_current_offset", "Current Offset of a Broker at Topic/Partition",
                                    labels=["topic", "partition"])
        oldest = GaugeMetricFamily("kafka_topic_partition_oldest_offset", "Oldest Offset of a Broker at Topic/Partition",
                                   labels=["topic", "partition"])
        committed = GaugeMetricFamily("kafka_consumergroup_current_offset", "Current Offset of a ConsumerGroup at Topic/Partition",
                                      labels=["consumergroup", "topic", "partition"])
        lag = GaugeMetricFamily("kafka_consumergroup_lag", "Current Approximate Lag of a ConsumerGroup at Topic/Partition",
                                labels=["consumergroup", "topic", "partition"])
        for topic in os.environ["TOPIC"].split(","):
            every = partitions(topic)
            high, low = offsets(every, OffsetSpec.latest()), offsets(every, OffsetSpec.earliest())
            for p in sorted(high):
                current.add_metric([topic, str(p)], high[p])
                oldest.add_metric([topic, str(p)], low[p])
            for group in os.environ["GROUP"].split(","):
                for tp in committed_of[group].committed(every, timeout=TIMEOUT):
                    if tp.offset >= 0:
                        committed.add_metric([group, topic, str(tp.partition)], tp.offset)
                        lag.add_metric([group, topic, str(tp.partition)], max(high[tp.partition] - tp.offset, 0))
        yield from (current, oldest, committed, lag)


def main() -> int:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    REGISTRY.register(KafkaExporterShape())
    start_http_server(int(os.environ.get("METRICS_PORT", "9308")), addr=os.environ.get("POD_IP", "127.0.0.1"))
    stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
