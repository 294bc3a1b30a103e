"""A real consumer group for the Kafka tests: a topic, a Deployment whose pods are its consumers,
load from a producer, and what the tests read back (the function's decisions, evictions, the
history, lag at the brokers and in VictoriaMetrics). The fixtures are in tests/kafka/conftest.py."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import requests
import yaml
from kubernetes.client import ApiException

from rebalancer.cooldown import annotation_keys
from tests.chain import REPO, Chain
from tests.kafkabroker import KafkaBroker, consumer_pod_template, exporter_pod_template
from tests.podscrape import SCRAPE_ANNOTATION

TOKEN = "kafka-e2e-token-5b2e"
ALERT = "ConsumerLagSkew"


def example_lag_signal() -> dict:
    """The shipped example's lag signal, as a user would copy it."""
    config = yaml.safe_load((REPO / "examples" / "rebalancer.yaml").read_text())
    return next(t for t in config["targets"] if t["name"] == "ingestion-consumer")["signals"]["lag"]


def lag_target(namespace: str, *, topic_inflow: str | None = None, **overrides) -> dict:
    """The consumers' target: the example's lag signal, timers short enough for a test (the pods
    are seconds old, so min_pod_age is 0), and a floor for a few hundred messages; with
    ``topic_inflow``, the example's (commented) inflow query for that topic."""
    lag = {**example_lag_signal(), "floor": 50}
    if topic_inflow is not None:
        lag["inflow"] = inflow(topic_inflow)
    return {"name": "consumer", "namespace": namespace, "deployment": "consumer", "container": "consumer",
            "min_pods": 3, "min_pod_age": "0s", "cooldown": "30s", "settle": "10s", "window": "10s",
            "signals": {"lag": lag}, **overrides}


def inflow(topic: str) -> str:
    """The partitions' inflow from kafka_exporter's log-end offsets (README: "Lag, as real
    consumers export it")."""
    return f'max by (topic, partition) (rate(kafka_topic_partition_current_offset{{topic="{topic}"}}[$window]))'


class Scene:
    """One test's group: a topic, a Deployment of consumers, a slow-pods file, and (``exporter``)
    kafka_exporter's series for the topic, from a pod of their own."""

    def __init__(self, broker: KafkaBroker, kube, tmp_path: Path, partitions: int, replicas: int,
                 exporter: bool = False, **consumer: object):
        self.broker, self.kube, self.partitions = broker, kube, partitions
        self.topic = broker.create_topic(f"events-{uuid.uuid4().hex[:6]}", partitions)
        self.group = f"ingestion-{uuid.uuid4().hex[:6]}"
        self.slow_file = tmp_path / "slow-pods"
        self.slow_file.write_text("")
        if exporter:
            kube.deployment("kafka-exporter", replicas=1, pod_annotations=SCRAPE_ANNOTATION,
                            pod_spec=exporter_pod_template(broker, self.topic, self.group))
        self.pods = kube.deployment("consumer", replicas=replicas, pod_annotations=SCRAPE_ANNOTATION,
                                    pod_spec=consumer_pod_template(broker, self.topic, self.group, slow_file=self.slow_file,
                                                                   **consumer))
        self.settled = broker.wait_for_group(self.group, replicas, partitions)
        self.producers: list = []

    def slow(self, pod: str, millis_per_message: int) -> None:
        self.slow_file.write_text(f"{pod} {millis_per_message}\n")

    def produce(self, rates: dict[int, float], seconds: float) -> None:
        self.producers.append(self.broker.produce(self.topic, rates, seconds))

    def stop(self) -> None:
        """The load stops, and the consumers leave their group while the broker is there (their
        processes end with their pods): nothing of this test's group outlives it."""
        for producer in self.producers:
            producer.kill()
            producer.wait(timeout=10)
        for deployment in ("consumer", "kafka-exporter"):
            try:
                self.kube.apps.delete_namespaced_deployment(deployment, self.kube.namespace, propagation_policy="Foreground")
            except ApiException as e:
                if e.status != 404:
                    raise
        self.kube.wait_for(lambda: not self.kube.core.list_namespaced_pod(self.kube.namespace).items,
                           "this test's consumers to stop", timeout=60)

    def lag_at_brokers(self) -> dict[int, int]:
        return self.broker.lag(self.group, self.topic)


def decisions(chain: Chain, code: str | None = None) -> list[dict]:
    return [line for line in chain.function_log()
            if line.get("event") == "decision" and (code is None or line.get("code") == code)]


def pod_lag(chain: Chain, namespace: str) -> dict[str, float]:
    """Each pod's lag as VictoriaMetrics has it now (the consumers' own series)."""
    chain.vm.flush()
    query = f'sum by (pod) (kafka_consumer_fetch_manager_records_lag{{namespace="{namespace}"}})'
    return {r["metric"]["pod"]: float(r["value"][1]) for r in chain.vm.query(query, time.time())["data"]["result"]}


def evictions(kube) -> list[str]:
    return [r.name for r in kube.requests("create", "pods") if r.subresource == "eviction"]


def history(kube, target: str = "consumer") -> list[dict]:
    _, _, key = annotation_keys(target)
    state = kube.annotations("configmaps", "pod-rebalancer-state")
    return json.loads(state[key]) if state and key in state else []


def function_metric(chain: Chain, name: str, **labels: str) -> float:
    text = requests.get(f"{chain.function.url}/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{wanted}}} in the function's /metrics")
