"""The Kubernetes API contract suite: what the function relies on from the API, asserted with the
official client only, so that every target is held to the same assertions.

In ``make test`` it runs twice: against the real control plane (tests/realcluster.py), which is
the proof, and against the stand-in, which the fault tests still use: where the two disagree,
the stand-in is wrong and is fixed. With ``KUBE_CONTRACT_TARGET=real`` (``make
test-real-cluster``) it runs against the cluster ``KUBECONFIG`` points at instead, in a
throw-away namespace that it creates and deletes."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api, PolicyV1Api

from tests.realcluster import drop_namespace, new_namespace
from tests.servers import wait_for
from tests.standin import KubeApiStandIn

PAUSE_IMAGE = "registry.k8s.io/pause:3.9"


@dataclass
class Cluster:
    api_client: ApiClient
    namespace: str
    real: bool

    @property
    def core(self) -> CoreV1Api:
        return CoreV1Api(self.api_client)

    @property
    def apps(self) -> AppsV1Api:
        return AppsV1Api(self.api_client)

    @property
    def policy(self) -> PolicyV1Api:
        return PolicyV1Api(self.api_client)

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
        return wait_for(condition, what, timeout, interval=0.5)

    def ready_pods(self, selector: str) -> list[Any]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [
            p for p in pods
            if p.metadata.deletion_timestamp is None
            and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
        ]

    def deployment(self, name: str, replicas: int, labels: dict[str, str] | None = None) -> list[str]:
        """A Deployment of pause containers; waits until all its pods are Ready."""
        labels = labels or {"app": name}
        self.apps.create_namespaced_deployment(
            self.namespace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "terminationGracePeriodSeconds": 30,
                            "containers": [{"name": "pause", "image": PAUSE_IMAGE}],
                        },
                    },
                },
            },
        )
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        pods = self.wait_for(lambda: len(self.ready_pods(selector)) == replicas and self.ready_pods(selector), f"{replicas} Ready pods of {name}")
        return sorted(p.metadata.name for p in pods)

    def bare_pod(self, name: str, labels: dict[str, str]) -> Any:
        return self.core.create_namespaced_pod(
            self.namespace,
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
             "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "pause", "image": PAUSE_IMAGE}]}},
        )


def _targets() -> list[str]:
    return ["kubeconfig"] if os.environ.get("KUBE_CONTRACT_TARGET") == "real" else ["control-plane", "standin"]


@pytest.fixture(params=_targets())
def cluster(request, tmp_path) -> Iterator[Any]:
    if request.param == "control-plane":
        real = new_namespace(request.getfixturevalue("control_plane"), prefix="contract")
        yield real
        drop_namespace(real)
        return
    namespace = f"rebalancer-contract-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    if request.param == "kubeconfig":
        if not os.environ.get("KUBECONFIG"):
            pytest.fail("KUBE_CONTRACT_TARGET=real needs KUBECONFIG pointing at a test cluster")
        client = kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
        CoreV1Api(client).create_namespace(body)
        try:
            yield Cluster(client, namespace, real=True)
        finally:
            CoreV1Api(client).delete_namespace(namespace)
        return
    # The stand-in (a test double): kept to the real server's contract because the fault tests use it.
    with KubeApiStandIn() as api:
        client = kubernetes.config.new_client_from_config(config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        CoreV1Api(client).create_namespace(body)
        yield Cluster(client, namespace, real=False)
