"""Kubernetes adapter over the official client. Library errors become ours at this edge.

Read side: the target Deployment, its ReplicaSets and its pods (one list call each), turned
into the ``PodState`` values the decision core understands. A pod counts as the Deployment's
only when its controller is a ReplicaSet whose controller is that Deployment (by UID):
matching the selector is not enough, selectors of different workloads can overlap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pydantic
import urllib3
from kubernetes.client import ApiClient, AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from rebalancer.errors import (
    ConfigError,
    KubeError,
    KubeForbiddenError,
    KubeNotFoundError,
    KubeUnavailableError,
)
from rebalancer.policy import PodState

EXCLUDE_ANNOTATION = "pod-rebalancer/exclude"


@dataclass(frozen=True)
class DeploymentPods:
    namespace: str
    deployment: str
    uid: str
    selector: str
    replicas: int
    pods: tuple[PodState, ...]


def selector_string(selector: Any) -> str:
    """A V1LabelSelector as the ``labelSelector`` query string (equality and set-based terms)."""
    terms = [f"{key}={value}" for key, value in sorted((selector.match_labels or {}).items())]
    for expression in selector.match_expressions or []:
        values = ",".join(sorted(expression.values or []))
        operator = expression.operator
        if operator == "In":
            terms.append(f"{expression.key} in ({values})")
        elif operator == "NotIn":
            terms.append(f"{expression.key} notin ({values})")
        elif operator == "Exists":
            terms.append(expression.key)
        elif operator == "DoesNotExist":
            terms.append(f"!{expression.key}")
        else:
            raise KubeError(f"unknown label selector operator {operator!r}", status=0)
    return ",".join(terms)


def _controller(meta: Any) -> Any | None:
    return next((ref for ref in meta.owner_references or [] if ref.controller), None)


def _is_ready(pod: Any) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _status_message(error: ApiException) -> tuple[str, str]:
    """The ``message`` and ``reason`` of a Kubernetes Status body, when there is one."""
    try:
        body = json.loads(error.body or "")
        return str(body.get("message") or error.reason or ""), str(body.get("reason") or "")
    except (ValueError, AttributeError):
        return str(error.reason or ""), ""


def translate(error: Exception, doing: str) -> Exception:
    """Turn a client-library failure into one of our errors; ``doing`` says what was tried."""
    if isinstance(error, ApiException):
        message, reason = _status_message(error)
        status = error.status or 0
        text = f"Kubernetes API refused to {doing}: HTTP {status} {reason}: {message}".rstrip(": ")
        if status == 404:
            return KubeNotFoundError(text, status=status, reason=reason)
        if status in (401, 403):
            return KubeForbiddenError(text, status=status, reason=reason)
        if status == 429 or status >= 500 or status == 0:
            return KubeUnavailableError(text)
        return KubeError(text, status=status, reason=reason)
    if isinstance(error, pydantic.ValidationError):
        return KubeUnavailableError(f"Kubernetes API answered a malformed object while trying to {doing}")
    return KubeUnavailableError(f"Kubernetes API unreachable while trying to {doing}: {type(error).__name__}")


_CLIENT_FAILURES = (ApiException, urllib3.exceptions.HTTPError, OSError, pydantic.ValidationError)


class KubeGateway:
    """The function's only door to the Kubernetes API."""

    def __init__(self, api_client: ApiClient, timeout_seconds: float) -> None:
        self.core = CoreV1Api(api_client)
        self.apps = AppsV1Api(api_client)
        self.timeout = timeout_seconds

    def deployment_pods(self, namespace: str, deployment: str) -> DeploymentPods:
        """The Deployment and every pod its selector matches, each marked owned or not."""
        doing = f"read deployment {namespace}/{deployment}"
        try:
            found = self.apps.read_namespaced_deployment(deployment, namespace, _request_timeout=self.timeout)
            selector = selector_string(found.spec.selector)
            if not selector:
                raise KubeError(f"deployment {namespace}/{deployment} has an empty selector", status=0)
            doing = f"list replicasets of {namespace}/{deployment}"
            replica_sets = self.apps.list_namespaced_replica_set(
                namespace, label_selector=selector, _request_timeout=self.timeout
            )
            doing = f"list pods of {namespace}/{deployment}"
            pods = self.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=self.timeout)
        except _CLIENT_FAILURES as e:
            raise translate(e, doing) from e

        uid = found.metadata.uid
        owned_replica_sets = set()
        for rs in replica_sets.items:
            ref = _controller(rs.metadata)
            if ref is not None and ref.kind == "Deployment" and ref.uid == uid:
                owned_replica_sets.add(rs.metadata.uid)
        states = []
        for pod in pods.items:
            ref = _controller(pod.metadata)
            annotations = pod.metadata.annotations or {}
            states.append(
                PodState(
                    name=pod.metadata.name,
                    ready=_is_ready(pod),
                    owned=ref is not None and ref.kind == "ReplicaSet" and ref.uid in owned_replica_sets,
                    created_at=pod.metadata.creation_timestamp,
                    terminating=pod.metadata.deletion_timestamp is not None,
                    phase=(pod.status.phase if pod.status else None) or "Unknown",
                    excluded=annotations.get(EXCLUDE_ANNOTATION, "").lower() == "true",
                )
            )
        return DeploymentPods(
            namespace=namespace,
            deployment=deployment,
            uid=uid,
            selector=selector,
            replicas=found.spec.replicas if found.spec.replicas is not None else 1,
            pods=tuple(states),
        )


def api_client(*, kubeconfig: Path | None, in_cluster: bool, retries: int = 1) -> ApiClient:
    """Build the client once per instance: in-cluster, else a kubeconfig file.

    No network traffic happens here; the first API call is the first request.
    """
    configuration = kubernetes.client.Configuration()
    try:
        if in_cluster:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            path = kubeconfig or Path("~/.kube/config").expanduser()
            if not path.exists():
                raise ConfigError(
                    "no Kubernetes access configured: not running in a cluster, and no kubeconfig "
                    f"at {path} (set KUBECONFIG)"
                )
            kubernetes.config.load_kube_config(config_file=str(path), client_configuration=configuration)
    except kubernetes.config.ConfigException as e:
        raise ConfigError(f"cannot load Kubernetes configuration: {e}") from e
    # One quick retry on a refused connection; anything longer is Alertmanager's retry to make.
    configuration.retries = retries
    return ApiClient(configuration)
