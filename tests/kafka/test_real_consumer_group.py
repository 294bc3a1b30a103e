"""A real consumer group under the function: a KRaft broker, each pod of a Deployment a real
consumer (the node simulator runs tests/kafka/consumer.py as the pod's container), and its
per-partition lag scraped by VictoriaMetrics through the API server's pod discovery."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.kafkabroker import consumer_pod_template
from tests.podscrape import SCRAPE_ANNOTATION, pod_scrape_config, scraper_token
from tests.servers import VictoriaMetrics, wait_for


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
