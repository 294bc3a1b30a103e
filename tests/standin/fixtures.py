"""Builders for the objects a Deployment's controllers would have made: Deployment -> ReplicaSet
-> pods, linked by controller owner references, with names shaped as Kubernetes shapes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.standin.server import KubeApiStandIn, timestamp

TEMPLATE_HASH = "7d9f8c6b5"
# Kubernetes' random suffix alphabet (no vowels, no confusable digits).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def pod_suffix(index: int) -> str:
    chars = []
    for _ in range(5):
        index, digit = divmod(index, len(_SUFFIX_ALPHABET))
        chars.append(_SUFFIX_ALPHABET[digit])
    return "".join(reversed(chars))


def _owner(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def seed_deployment(
    api: KubeApiStandIn,
    namespace: str,
    name: str,
    *,
    replicas: int,
    now: datetime | None = None,
    ages: Sequence[timedelta] | None = None,
    ready: Sequence[bool] | None = None,
    annotations: Sequence[dict[str, str]] | None = None,
    container: str | None = None,
    grace_seconds: int = 30,
    status: dict[str, Any] | None = None,
) -> list[str]:
    """A Deployment with ``replicas`` running pods; returns the pod names in creation order."""
    now = now or datetime.now(timezone.utc)
    ages = ages or [timedelta(hours=1)] * replicas
    ready = ready or [True] * replicas
    labels = {"app": name}
    container = container or name
    deployment = api.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": container, "image": "consumer:1"}]}},
            },
            "status": status
            or {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": sum(ready),
                "availableReplicas": sum(ready),
            },
        }
    )
    pod_labels = {**labels, "pod-template-hash": TEMPLATE_HASH}
    replica_set = api.put(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{TEMPLATE_HASH}",
                "namespace": namespace,
                "labels": pod_labels,
                "ownerReferences": [_owner(deployment)],
            },
            "spec": {"replicas": replicas, "selector": {"matchLabels": pod_labels}},
            "status": {"replicas": replicas, "readyReplicas": sum(ready)},
        }
    )
    names = []
    for index in range(replicas):
        pod_name = f"{name}-{TEMPLATE_HASH}-{pod_suffix(index)}"
        api.put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": pod_labels,
                    "annotations": dict(annotations[index]) if annotations else {},
                    "ownerReferences": [_owner(replica_set)],
                    "creationTimestamp": timestamp(now - ages[index]),
                },
                "spec": {
                    "nodeName": "standin-node",
                    "terminationGracePeriodSeconds": grace_seconds,
                    "containers": [{"name": container, "image": "consumer:1"}],
                },
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True" if ready[index] else "False"}],
                },
            }
        )
        names.append(pod_name)
    return names


def seed_stray_pod(api: KubeApiStandIn, namespace: str, name: str, labels: dict[str, str]) -> str:
    """A Ready pod that matches a selector but belongs to no ReplicaSet (created by hand)."""
    api.put(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "creationTimestamp": timestamp(datetime.now(timezone.utc) - timedelta(hours=1))},
            "spec": {"nodeName": "standin-node", "containers": [{"name": "x", "image": "x"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    )
    return name
