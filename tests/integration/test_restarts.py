"""A server restarted or stalled in the middle of a run, each on a control plane of the test's
own, so that no other test meets it. The moment is exact: the tests' admission webhook does it
while it reviews the function's request.

- kube-apiserver SIGKILLed while it reviews the function's first eviction; the control plane's
  supervisor starts it again a second later, and etcd, which it does not touch, keeps
  everything written before.
- etcd stalled (a black hole in toxiproxy between kube-apiserver and etcd) while the API server
  stores the lock's create."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.acting import AHEAD, INVOCATION, decision, evictions, fire, history, skewed_pods
from tests.admission import AdmissionFaults
from tests.conftest import client_builder, target
from tests.realcluster import Cluster, ControlPlane, drop_namespace, new_namespace
from tests.servers import free_port


@pytest.fixture
def own_plane(tmp_path_factory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("restarted-plane")).start()
    yield plane
    plane.stop()


@pytest.fixture
def etcd_behind_proxy(tmp_path_factory, fault_proxy) -> Iterator[tuple[ControlPlane, str]]:
    """A control plane whose kube-apiserver reaches etcd through a fault proxy route (its name)."""
    etcd_port, route = free_port(), "etcd-" + tmp_path_factory.getbasetemp().name
    via = fault_proxy.route(route, f"127.0.0.1:{etcd_port}")
    plane = ControlPlane(tmp_path_factory.mktemp("etcd-stalled-plane"), "--etcd-port", str(etcd_port), "--etcd-via", via)
    plane.start()
    yield plane, route
    plane.stop()
    fault_proxy.drop(route)


def acting_scene(plane: ControlPlane, victoria_metrics, clock, tmp_path, monkeypatch) -> tuple[Cluster, list[str], Any]:
    """The acting scene (tests/acting.py) on ``plane``: its namespace, the pods, the live function."""
    cluster = new_namespace(plane)
    cluster.grant()
    pods = skewed_pods(cluster, victoria_metrics, clock, series_until=3 * AHEAD)
    client = client_builder(tmp_path, monkeypatch, cluster.write_kubeconfig)(
        victoria_metrics.url, [target("ingestion-consumer", cluster.namespace)], env_rebalancer_dry_run="false",
        kube_timeout="3s")
    return cluster, pods, client


def test_kube_apiserver_killed_during_an_eviction_leaves_a_held_lock_and_the_run_is_finished_once(
        own_plane, victoria_metrics, clock, tmp_path, monkeypatch):
    cluster, pods, client = acting_scene(own_plane, victoria_metrics, clock, tmp_path, monkeypatch)
    killed: list[int] = []

    with AdmissionFaults(own_plane, cluster.namespace, tmp_path / "webhook") as webhook:
        webhook.when("pods", subresource="eviction", name=pods[4], do=lambda: killed.append(own_plane.kill_apiserver()))
        response = fire(client, cluster)
        own_plane.wait_ready()

    body = decision(response)
    assert killed and own_plane.apiserver_pid() != killed[0]  # the supervisor started a new one
    assert response.status_code == 200, body
    assert [a["pod"] for a in body["actions"]] == [pods[4], pods[0]]
    assert {a["result"] for a in body["actions"]} == {"failed"}, body["actions"]
    assert "the connection broke in the middle of an answer" in body["actions"][0]["detail"], body["actions"]
    assert cluster.terminating(pods) == []  # the first eviction died in admission, before anything was stored
    (entry,) = history(cluster)  # the lock, taken before the kill: etcd kept it
    assert entry["outcome"] == "in_progress" and entry["invocation"] == response.get_json()["invocation"]
    assert cluster.annotations("configmaps", "pod-rebalancer-state")[INVOCATION] == entry["invocation"]

    again = decision(fire(client, cluster))  # the API server is back: the lock still holds
    assert again["outcome"] == "skipped" and again["code"] == "cooldown", again

    clock.advance(minutes=16)  # past the cooldown: the dead run is marked abandoned, and the work done once
    later = decision(fire(client, cluster))
    assert later["outcome"] == "acted", later
    assert "marked abandoned" in later["reason"]
    assert [(a["pod"], a["result"]) for a in later["actions"]] == [(pods[4], "evicted"), (pods[0], "evicted")]
    succeeded = [pod for pod, code in evictions(cluster) if code == 201]
    assert sorted(succeeded) == sorted([pods[4], pods[0]])  # each pod evicted once, in all
    assert [e["outcome"] for e in history(cluster)] == ["abandoned", "acted"]
    drop_namespace(cluster)


def test_etcd_stalled_during_the_lock_write_gets_503_and_the_next_delivery_acts_once(
        etcd_behind_proxy, fault_proxy, victoria_metrics, clock, tmp_path, monkeypatch):
    plane, route = etcd_behind_proxy
    cluster, pods, client = acting_scene(plane, victoria_metrics, clock, tmp_path, monkeypatch)

    with AdmissionFaults(plane, cluster.namespace, tmp_path / "webhook") as webhook:
        webhook.when("configmaps", name="pod-rebalancer-state", do=lambda: fault_proxy.black_hole(route))
        response = fire(client, cluster)
        fault_proxy.clear(route)  # etcd reachable again: the stalled connections are closed
        plane.wait_ready()

    said = json.dumps(response.get_json())
    assert response.status_code == 503, said
    assert "no answer within kube_timeout" in said and "write configmap" in said, said
    assert cluster.terminating(pods) == []
    # The stalled create never reached etcd: the black hole dropped it, and closing the
    # connection failed it inside the API server. No lock was left to wedge the target.
    assert cluster.annotations("configmaps", "pod-rebalancer-state") is None

    retried = fire(client, cluster)  # Alertmanager's retry
    body = decision(retried)
    assert retried.status_code == 200 and body["outcome"] == "acted", body
    succeeded = [pod for pod, code in evictions(cluster) if code == 201]
    assert succeeded == [pods[4], pods[0]]  # each pod once
    (entry,) = history(cluster)
    assert entry["outcome"] == "acted" and entry["invocation"] == retried.get_json()["invocation"]
    drop_namespace(cluster)
