"""Broken connections between the function and the real servers it talks to: toxiproxy
(tests/faultproxy.py) between the function and the real API server, and between it and the real
VictoriaMetrics. A reset in the middle of an answer, a black hole past the timeout, and latency.

For each: what the answer says and its status, that nothing was written (or, with latency, that
the action happened once and is on record), and that once the connection is whole again the next
delivery acts once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.acting import decision, evictions, fire, history
from tests.conftest import client_builder, target


@dataclass
class Routed:
    """The live function of the acting scene, its connections through the fault proxy."""

    pods: list[str]
    client: Any
    kube: str  # the route to the API server
    metrics: str  # the route to VictoriaMetrics


@pytest.fixture
def routed(scene, fault_proxy, control_plane, victoria_metrics, kube, tmp_path, monkeypatch):
    pods = scene()
    kube_route, metrics_route = f"kube-{kube.namespace}", f"metrics-{kube.namespace}"
    kube_at = fault_proxy.route(kube_route, urlsplit(control_plane.server).netloc)
    metrics_at = fault_proxy.route(metrics_route, urlsplit(victoria_metrics.url).netloc)
    build = client_builder(tmp_path, monkeypatch, lambda path: kube.write_kubeconfig(path, server=f"https://{kube_at}"))
    client = build(f"http://{metrics_at}", [target("ingestion-consumer", kube.namespace)], env_rebalancer_dry_run="false",
                   kube_timeout="2s", metrics_timeout="2s")
    yield Routed(pods, client, kube_route, metrics_route)
    fault_proxy.drop(kube_route)
    fault_proxy.drop(metrics_route)


def nothing_written(kube) -> bool:
    return kube.writes() == [] and kube.annotations("configmaps", "pod-rebalancer-state") is None


def acts_once_when_whole_again(routed: Routed, kube, fault_proxy) -> None:
    for route in (routed.kube, routed.metrics):
        fault_proxy.clear(route)
    retried = fire(routed.client, kube)
    body = decision(retried)
    assert retried.status_code == 200 and body["outcome"] == "acted", body
    assert evictions(kube) == [(routed.pods[4], 201), (routed.pods[0], 201)]
    (entry,) = history(kube)
    assert entry["outcome"] == "acted" and entry["invocation"] == retried.get_json()["invocation"]


FAULTS = {
    # (backend, fault): (the toxic on that backend's route, what the answer says)
    # 6,000 bytes: past the TLS handshake and the Deployment's answer, inside the pod list's.
    ("kubernetes", "reset mid-answer"): (
        lambda proxy, route: proxy.reset(route, after_bytes=6000),
        "list pods of {namespace}/ingestion-consumer: the connection broke in the middle of an answer"),
    ("kubernetes", "black hole"): (lambda proxy, route: proxy.black_hole(route), "no answer within kube_timeout"),
    # 300 bytes: past VictoriaMetrics' headers, inside the body of the first query's answer.
    ("metrics", "reset mid-answer"): (lambda proxy, route: proxy.reset(route, after_bytes=300),
                                      "metrics backend unreachable: the connection broke in the middle of an answer"),
    ("metrics", "reset inside the headers"): (
        lambda proxy, route: proxy.reset(route, after_bytes=60),
        "metrics backend answered an empty answer (the connection may have been cut)"),
    ("metrics", "black hole"): (lambda proxy, route: proxy.black_hole(route), "metrics backend did not answer within 2s"),
}


@pytest.mark.parametrize(("backend", "fault"), list(FAULTS), ids=[f"{b}: {f}" for b, f in FAULTS])
def test_a_broken_connection_gets_503_and_moves_nothing(routed, kube, fault_proxy, backend, fault):
    inject, said = FAULTS[(backend, fault)]
    inject(fault_proxy, routed.kube if backend == "kubernetes" else routed.metrics)

    response = fire(routed.client, kube)

    answer = json.dumps(response.get_json())
    assert response.status_code == 503, answer
    assert said.format(namespace=kube.namespace) in answer, answer
    if backend == "kubernetes":
        # A reset cuts answers the API server gave (its audit log has the reads); a black hole lets nothing through.
        assert bool(kube.requests()) == (fault == "reset mid-answer")
    assert nothing_written(kube) and kube.terminating(routed.pods) == []
    acts_once_when_whole_again(routed, kube, fault_proxy)


def test_latency_on_every_connection_slows_the_invocation_but_it_acts_once_and_on_record(routed, kube, fault_proxy):
    for route in (routed.kube, routed.metrics):
        fault_proxy.latency(route, ms=150)

    response = fire(routed.client, kube)

    body = decision(response)
    assert response.status_code == 200 and body["outcome"] == "acted", body
    assert evictions(kube) == [(routed.pods[4], 201), (routed.pods[0], 201)]
    timing = dict(part.split(";dur=") for part in (p.split(";desc")[0] for p in response.headers["Server-Timing"].split(", ")))
    assert float(timing["kubernetes"]) >= 150 and float(timing["metrics"]) >= 150, timing  # the latency was there
    (entry,) = history(kube)
    assert [(p["pod"], p["result"]) for p in entry["pods"]] == [(routed.pods[4], "evicted"), (routed.pods[0], "evicted")]
    again = decision(fire(routed.client, kube))
    assert again["outcome"] == "skipped" and again["code"] in ("cooldown", "rolling_out", "incomplete_data"), again
    assert len(evictions(kube)) == 2
