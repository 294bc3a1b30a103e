"""The function's own metrics pushed after each invocation, to a real VictoriaMetrics (its import
API) and a real Prometheus Pushgateway, so that a scale-to-zero instance still leaves them
somewhere to be queried. A push that fails changes nothing in the answer."""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AUTH, target
from tests.servers import Pushgateway, free_port, wait_for


def decide(make_client, metrics_url: str, kube, **settings):
    client = make_client(metrics_url, [target("ingestion-consumer", kube.namespace)], **settings)
    answer = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH)
    return client, answer


def test_each_invocation_pushes_the_metrics_to_victoriametrics(make_client, victoria_metrics, kube):
    kube.deployment("ingestion-consumer", replicas=3)
    client, answer = decide(make_client, victoria_metrics.url, kube, metrics_push_url=victoria_metrics.url)
    client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH)

    assert answer.status_code == 200
    query = 'max_over_time(rebalancer_decisions_total{job="pod-rebalancer", target="ingestion-consumer", outcome="skipped"}[10m])'

    def pushed():  # an import becomes searchable a moment after it was accepted
        requests.get(f"{victoria_metrics.url}/internal/force_flush", timeout=10)
        result = victoria_metrics.query(query, time.time())["data"]["result"]
        return result if result and float(result[0]["value"][1]) == 2.0 else None

    (series,) = wait_for(pushed, "the second push to be searchable in VictoriaMetrics", timeout=15)
    assert float(series["value"][1]) == 2.0 and series["metric"]["instance"]  # both invocations, one instance
    requests_total = victoria_metrics.query('max_over_time(rebalancer_requests_total{route="/rebalance", code="200"}[10m])',
                                            time.time())["data"]["result"]
    assert float(requests_total[0]["value"][1]) == 2.0  # the push comes after the request's own counters


def test_each_invocation_pushes_the_metrics_to_a_pushgateway(make_client, victoria_metrics, kube, tmp_path):
    gateway = Pushgateway(tmp_path / "pushgateway").start()
    try:
        kube.deployment("ingestion-consumer", replicas=3)
        _, answer = decide(make_client, victoria_metrics.url, kube, metrics_push_url=gateway.url,
                           metrics_push_format="pushgateway")
        text = requests.get(f"{gateway.url}/metrics", timeout=10).text
    finally:
        gateway.stop()

    assert answer.status_code == 200
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "rebalancer_decisions_total" and s.labels.get("outcome") == "skipped"]
    (sample,) = samples
    assert sample.value == 1.0 and sample.labels["job"] == "pod-rebalancer" and sample.labels["instance"]


@pytest.mark.parametrize("push_format", ["victoriametrics", "pushgateway"])
def test_a_push_that_fails_is_logged_and_counted_and_the_answer_stands(make_client, victoria_metrics, kube, capsys,
                                                                       push_format):
    nowhere = f"http://127.0.0.1:{free_port()}"
    kube.deployment("ingestion-consumer", replicas=3)
    client, answer = decide(make_client, victoria_metrics.url, kube, metrics_push_url=nowhere, metrics_push_format=push_format)

    assert answer.status_code == 200 and answer.get_json()["decisions"][0]["outcome"] == "skipped"
    assert "pushing the function's metrics to" in capsys.readouterr().out
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "rebalancer_metrics_push_errors_total 1.0" in metrics


def test_a_refused_request_pushes_nothing(make_client, victoria_metrics, kube, tmp_path):
    gateway = Pushgateway(tmp_path / "pushgateway").start()
    try:
        client = make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace)],
                             metrics_push_url=gateway.url, metrics_push_format="pushgateway")
        refused = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers={"Authorization": "Bearer no"})
        text = requests.get(f"{gateway.url}/metrics", timeout=10).text
    finally:
        gateway.stop()

    assert refused.status_code == 401
    assert "rebalancer_" not in text  # nothing was pushed
