"""A real consumer group under the function: a KRaft broker, each pod of a Deployment a real
consumer (the node simulator runs tests/kafka/consumer.py as the pod's container), and its
per-partition lag scraped by VictoriaMetrics through the API server's pod discovery."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.conftest import AUTH
from tests.kafkabroker import consumer_pod_template, exporter_pod_template
from tests.metricsdata import documented_partitions_queries
from tests.podscrape import SCRAPE_ANNOTATION, pod_scrape_config, scraper_token
from tests.servers import Prometheus, VictoriaMetrics, VMAgent, wait_for


@pytest.fixture
def scraping_vm(control_plane, kube, tmp_path):
    """VictoriaMetrics scraping the annotated pods of this test's namespace every second."""
    token = scraper_token(control_plane, tmp_path / "scraper-token")
    server = VictoriaMetrics(tmp_path / "vm", scrape_config=pod_scrape_config(control_plane, [kube.namespace], token)).start()
    yield server
    server.stop()


def series(vm: VictoriaMetrics, query: str) -> list[dict]:
    vm.flush()
    return vm.query(query, time.time())["data"]["result"]


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_each_pod_is_a_member_and_its_lag_reaches_victoriametrics_labelled_by_the_api_server(kafka_broker, kube, scraping_vm,
                                                                                           protocol):
    topic = kafka_broker.create_topic(f"events-{uuid.uuid4().hex[:6]}", partitions=6)
    group = f"group-{uuid.uuid4().hex[:6]}"
    pods = kube.deployment("consumer", replicas=3, pod_annotations=SCRAPE_ANNOTATION,
                           pod_spec=consumer_pod_template(kafka_broker, topic, group, protocol=protocol))

    members = kafka_broker.wait_for_group(group, members=3, partitions=6)

    assert sorted(m.client_id for m in members.members) == pods
    assert members.protocol == ("consumer" if protocol == "consumer" else "classic"), members
    if protocol == "classic":
        assert members.assignor == "cooperative-sticky", members
    found = wait_for(lambda: (got := series(scraping_vm, f'kafka_consumer_fetch_manager_records_lag{{namespace="{kube.namespace}"}}'))
                     and len(got) == 6 and got, "six partitions' lag in VictoriaMetrics", timeout=60)
    by_partition = {r["metric"]["partition"]: r["metric"] for r in found}
    for member in members.members:
        for partition in member.partitions:
            labels = by_partition[str(partition)]
            assert (labels["pod"], labels["client_id"], labels["container"], labels["topic"]) == (
                member.client_id, member.client_id, "consumer", topic)


def test_the_documented_queries_attribute_the_real_groups_partitions_as_the_brokers_do(kafka_broker, kube, scraping_vm):
    topic = kafka_broker.create_topic(f"events-{uuid.uuid4().hex[:6]}", partitions=6)
    group = f"ingestion-{uuid.uuid4().hex[:6]}"
    kube.deployment("kafka-exporter", replicas=1, pod_annotations=SCRAPE_ANNOTATION,
                    pod_spec=exporter_pod_template(kafka_broker, topic, group))
    kube.deployment("consumer", replicas=3, pod_annotations=SCRAPE_ANNOTATION,
                    pod_spec=consumer_pod_template(kafka_broker, topic, group))
    brokers = {str(p): m.client_id for m in kafka_broker.wait_for_group(group, 3, 6).members for p in m.partitions}
    producer = kafka_broker.produce(topic, {p: 10.0 * (p + 1) for p in range(6)}, seconds=30)
    micrometer, _, exporter = documented_partitions_queries()
    render = {"$namespace": kube.namespace, "$container": "consumer", 'consumergroup="ingestion"': f'consumergroup="{group}"'}
    for placeholder, value in render.items():
        micrometer, exporter = micrometer.replace(placeholder, value), exporter.replace(placeholder, value)

    try:
        for query in (micrometer, exporter):
            answer = wait_for(lambda q=query: (got := series(scraping_vm, q)) and len(got) == 6 and got,
                              f"six partitions from {query}", timeout=60)
            assert {r["metric"]["partition"]: r["metric"]["pod"] for r in answer} == brokers, query
        inflow = f'max by (topic, partition) (rate(kafka_topic_partition_current_offset{{topic="{topic}"}}[10s]))'
        rates = wait_for(lambda: (got := series(scraping_vm, inflow)) and len(got) == 6
                         and all(float(r["value"][1]) > 0 for r in got) and got, "every partition's inflow", timeout=60)
        by_partition = {int(r["metric"]["partition"]): float(r["value"][1]) for r in rates}
        assert max(by_partition, key=by_partition.get) == 5 and min(by_partition, key=by_partition.get) == 0
    finally:
        producer.kill()
        producer.wait(timeout=10)


def test_prometheus_gets_the_same_group_scraped_the_same_way_and_the_function_decides_alike_on_both(
        kafka_broker, kube, control_plane, scraping_vm, client_builder_for, tmp_path):
    # Debian's Prometheus is built without kubernetes_sd_configs: vmagent scrapes the pods with the
    # same configuration (discovery through the API server) and remote-writes to it.
    token = scraper_token(control_plane, tmp_path / "vmagent-token")
    prometheus = Prometheus(tmp_path / "prometheus", remote_write=True).start()
    agent = VMAgent(tmp_path / "vmagent", pod_scrape_config(control_plane, [kube.namespace], token),
                    f"{prometheus.url}/api/v1/write").start()
    try:
        topic = kafka_broker.create_topic(f"events-{uuid.uuid4().hex[:6]}", partitions=8)
        group = f"ingestion-{uuid.uuid4().hex[:6]}"
        slow_file = tmp_path / "slow-pods"
        slow_file.write_text("")
        kube.deployment("consumer", replicas=4, pod_annotations=SCRAPE_ANNOTATION,
                        pod_spec=consumer_pod_template(kafka_broker, topic, group, slow_file=slow_file))
        members = kafka_broker.wait_for_group(group, 4, 8).members
        slow_file.write_text(f"{members[0].client_id} 200\n")
        time.sleep(1.5)
        kafka_broker.produce(topic, dict.fromkeys(range(8), 300.0), seconds=1).wait(timeout=30)
        micrometer = documented_partitions_queries()[0]
        target = {"name": "consumer", "namespace": kube.namespace, "deployment": "consumer", "min_pods": 3, "min_pod_age": "0s",
                  "signals": {"lag": {"threshold": 0.5, "floor": 50, "partitions": micrometer}}}
        brokers = {m.client_id: [f"{topic}/{p}" for p in m.partitions] for m in members}

        answers = {}
        for engine, url in (("victoriametrics", scraping_vm.url), ("prometheus", prometheus.url)):
            client = client_builder_for(kube)(url, [target])

            def decided(client=client) -> dict | None:
                scraping_vm.flush()
                found = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()["decisions"][0]
                return found if found.get("partitions") and found["partitions"]["held"] == brokers else None

            answers[engine] = wait_for(decided, f"{engine} to hold every consumer's partitions", timeout=60)

        for engine, decision in answers.items():
            assert decision["code"] == "skew_verified" and decision["hot"]["pod"] == members[0].client_id, (engine, decision["reason"])
        # Scraped a moment apart, the slow consumer's lag differs by what it processed meanwhile.
        vm_hot, prom_hot = (answers[e]["hot"]["value"] for e in ("victoriametrics", "prometheus"))
        assert abs(vm_hot - prom_hot) < 100, (vm_hot, prom_hot)
    finally:
        agent.stop()
        prometheus.stop()
