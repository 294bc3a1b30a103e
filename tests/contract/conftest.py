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
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client import CoreV1Api

from tests.realcluster import AdminNamespace, drop_namespace, new_namespace
from tests.standin import KubeApiStandIn


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
            yield AdminNamespace(client, namespace)
        finally:
            CoreV1Api(client).delete_namespace(namespace)
        return
    # The stand-in (a test double): kept to the real server's contract because the fault tests use it.
    with KubeApiStandIn() as api:
        client = kubernetes.config.new_client_from_config(config_file=str(api.write_kubeconfig(tmp_path / "kubeconfig")))
        CoreV1Api(client).create_namespace(body)
        yield AdminNamespace(client, namespace)
