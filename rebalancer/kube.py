"""Kubernetes adapter over the official client. Library errors become ours at this edge.

Read side: the target Deployment, its ReplicaSets and its pods (one list call each), turned
into the ``PodState`` values the decision core understands. A pod counts as the Deployment's
only when its controller is a ReplicaSet whose controller is that Deployment (by UID):
matching the selector is not enough, selectors of different workloads can overlap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import google.auth.exceptions
import kubernetes
import pydantic
import urllib3
from kubernetes.client import (
    ApiClient,
    AppsV1Api,
    AutoscalingV2Api,
    CoreV1Api,
    V1DeleteOptions,
    V1Eviction,
    V1ObjectMeta,
    V1Preconditions,
)
from kubernetes.client.exceptions import ApiException

from rebalancer.errors import (
    ConfigError,
    KubeConflictError,
    KubeError,
    KubeForbiddenError,
    KubeNotFoundError,
    KubeUnavailableError,
)
from rebalancer.policy import PodState, WorkloadStatus

EXCLUDE_ANNOTATION = "pod-rebalancer/exclude"
EVENT_SOURCE = "pod-rebalancer"
MERGE_PATCH = "application/merge-patch+json"
ActionResult = Literal["evicted", "deleted", "blocked", "failed"]


@dataclass(frozen=True)
class DeploymentPods:
    namespace: str
    deployment: str
    uid: str
    selector: str
    pods: tuple[PodState, ...]
    workload: WorkloadStatus | None = None
    pod_uids: dict[str, str] | None = None


@dataclass(frozen=True)
class ConfigMapState:
    """A ConfigMap's annotations and the resourceVersion they were read at (None: it does not exist)."""

    annotations: dict[str, str]
    resource_version: str | None


@dataclass(frozen=True)
class PodAction:
    pod: str
    result: ActionResult
    detail: str = ""


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


def _status_causes(error: ApiException) -> str:
    """The ``details.causes`` messages of a Status body (the PDB's own words on a 429)."""
    try:
        causes = (json.loads(error.body or "").get("details") or {}).get("causes") or []
        return "; ".join(str(c.get("message", "")) for c in causes if c.get("message"))
    except (ValueError, AttributeError):
        return ""


def translate(error: Exception, doing: str) -> Exception:
    """Turn a client-library failure into one of our errors; ``doing`` says what was tried."""
    if isinstance(error, ApiException):
        message, reason = _status_message(error)
        status = error.status or 0
        text = f"Kubernetes API refused to {doing}: HTTP {status} {reason}: {message}".rstrip(": ")
        if status == 404:
            return KubeNotFoundError(text, status=status, reason=reason)
        if status == 409:
            return KubeConflictError(text, status=status, reason=reason)
        if status in (401, 403):
            return KubeForbiddenError(text, status=status, reason=reason)
        if status == 429 or status >= 500 or status == 0:
            return KubeUnavailableError(text)
        return KubeError(text, status=status, reason=reason)
    if isinstance(error, pydantic.ValidationError):
        return KubeUnavailableError(f"Kubernetes API answered a malformed object while trying to {doing}")
    if isinstance(error, google.auth.exceptions.GoogleAuthError):
        return KubeUnavailableError(f"cannot obtain a Google access token to {doing}: {type(error).__name__}")
    return KubeUnavailableError(f"Kubernetes API unreachable while trying to {doing}: {type(error).__name__}")


_CLIENT_FAILURES = (ApiException, urllib3.exceptions.HTTPError, OSError, pydantic.ValidationError,
                    google.auth.exceptions.GoogleAuthError)


class KubeGateway:
    """The function's only door to the Kubernetes API."""

    def __init__(self, api_client: ApiClient, timeout_seconds: float) -> None:
        self.core = CoreV1Api(api_client)
        self.apps = AppsV1Api(api_client)
        self.autoscaling = AutoscalingV2Api(api_client)
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
            doing = f"list horizontalpodautoscalers in {namespace}"
            autoscalers = self.autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace, _request_timeout=self.timeout)
        except _CLIENT_FAILURES as e:
            raise translate(e, doing) from e
        hpa = next(
            (h for h in autoscalers.items
             if h.spec.scale_target_ref.kind == "Deployment" and h.spec.scale_target_ref.name == deployment),
            None,
        )

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
        replicas = found.spec.replicas if found.spec.replicas is not None else 1
        status = found.status
        workload = WorkloadStatus(
            replicas=replicas,
            generation=found.metadata.generation or 0,
            observed_generation=(status.observed_generation if status else None) or 0,
            # The API omits these counts when they are zero.
            updated_replicas=(status.updated_replicas if status else None) or 0,
            available_replicas=(status.available_replicas if status else None) or 0,
            hpa_name=hpa.metadata.name if hpa else None,
            hpa_current_replicas=hpa.status.current_replicas if hpa and hpa.status else None,
            hpa_desired_replicas=hpa.status.desired_replicas if hpa and hpa.status else None,
        )
        return DeploymentPods(
            namespace=namespace,
            deployment=deployment,
            uid=uid,
            selector=selector,
            pods=tuple(states),
            workload=workload,
            pod_uids={pod.metadata.name: pod.metadata.uid for pod in pods.items},
        )

    # -- the state ConfigMap ---------------------------------------------------------------------

    def read_configmap(self, namespace: str, name: str) -> ConfigMapState:
        try:
            found = self.core.read_namespaced_config_map(name, namespace, _request_timeout=self.timeout)
        except _CLIENT_FAILURES as e:
            error = translate(e, f"read configmap {namespace}/{name}")
            if isinstance(error, KubeNotFoundError):
                return ConfigMapState({}, None)
            raise error from e
        return ConfigMapState(dict(found.metadata.annotations or {}), found.metadata.resource_version)

    def write_configmap_annotations(self, namespace: str, name: str, annotations: dict[str, str | None], resource_version: str | None) -> str:
        """Create the ConfigMap (``resource_version`` None) or merge-patch its annotations on the
        condition that it is still at ``resource_version``. Raises KubeConflictError when another
        writer got there first (409 AlreadyExists or Conflict). Returns the new resourceVersion."""
        try:
            if resource_version is None:
                body = {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": EVENT_SOURCE},
                                     "annotations": {k: v for k, v in annotations.items() if v is not None}}}
                written = self.core.create_namespaced_config_map(namespace, body, _request_timeout=self.timeout)
            else:
                patch = {"metadata": {"resourceVersion": resource_version, "annotations": annotations}}
                written = self.core.patch_namespaced_config_map(
                    name, namespace, patch, _content_type=MERGE_PATCH, _request_timeout=self.timeout
                )
        except _CLIENT_FAILURES as e:
            raise translate(e, f"write configmap {namespace}/{name}") from e
        return written.metadata.resource_version

    # -- acting on pods ---------------------------------------------------------------------------

    def evict_pod(self, namespace: str, name: str, uid: str | None) -> PodAction:
        """policy/v1 Eviction: PodDisruptionBudgets decide. 429 is ``blocked``, never retried here."""
        body = V1Eviction(
            metadata=V1ObjectMeta(name=name, namespace=namespace),
            delete_options=V1DeleteOptions(preconditions=V1Preconditions(uid=uid)) if uid else None,
        )
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body, _request_timeout=self.timeout)
        except ApiException as e:
            message, _ = _status_message(e)
            causes = _status_causes(e)
            if e.status == 429:
                return PodAction(name, "blocked", causes or message or "the disruption budget allows no eviction now")
            return PodAction(name, "failed", f"HTTP {e.status}: {causes or message}")
        except _CLIENT_FAILURES as e:
            return PodAction(name, "failed", str(translate(e, f"evict pod {namespace}/{name}")))
        return PodAction(name, "evicted")

    def delete_pod(self, namespace: str, name: str, uid: str | None) -> PodAction:
        """A plain delete with the pod's own termination grace period (none given here on purpose)."""
        body = V1DeleteOptions(preconditions=V1Preconditions(uid=uid)) if uid else None
        try:
            self.core.delete_namespaced_pod(name, namespace, body=body, _request_timeout=self.timeout)
        except ApiException as e:
            message, _ = _status_message(e)
            return PodAction(name, "failed", f"HTTP {e.status}: {message}")
        except _CLIENT_FAILURES as e:
            return PodAction(name, "failed", str(translate(e, f"delete pod {namespace}/{name}")))
        return PodAction(name, "deleted")

    def create_event(
        self, namespace: str, *, kind: str, api_version: str, name: str, uid: str | None,
        reason: str, message: str, event_type: str, now: datetime,
    ) -> None:
        """A core/v1 Event on an object, for `kubectl describe` and `kubectl get events`."""
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": api_version, "kind": kind, "name": name, "namespace": namespace, "uid": uid},
            "reason": reason, "message": message[:1024], "type": event_type,
            "source": {"component": EVENT_SOURCE}, "reportingComponent": EVENT_SOURCE,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        try:
            self.core.create_namespaced_event(namespace, body, _request_timeout=self.timeout)
        except _CLIENT_FAILURES as e:
            raise translate(e, f"create event on {kind.lower()} {namespace}/{name}") from e


def api_client(*, kubeconfig: Path | None, in_cluster: bool, gke_endpoint: str | None = None,
               gke_ca_cert: str | None = None, retries: int = 1) -> ApiClient:
    """Build the client once per instance: in-cluster, else KUBECONFIG, else GKE (endpoint, CA and
    Google credentials), else ~/.kube/config. No network traffic happens here."""
    configuration = kubernetes.client.Configuration()
    default_kubeconfig = Path("~/.kube/config").expanduser()
    try:
        if in_cluster:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        elif kubeconfig is not None or (not gke_endpoint and default_kubeconfig.exists()):
            path = kubeconfig or default_kubeconfig
            if not path.exists():
                raise ConfigError(f"KUBECONFIG names {path}, which does not exist")
            kubernetes.config.load_kube_config(config_file=str(path), client_configuration=configuration)
        elif gke_endpoint and gke_ca_cert:
            from rebalancer.gke import gke_configuration

            configuration = gke_configuration(gke_endpoint, gke_ca_cert)
        else:
            raise ConfigError(
                "no Kubernetes access configured: not running in a cluster, no KUBECONFIG, "
                "no REBALANCER_GKE_ENDPOINT/REBALANCER_GKE_CA_CERT, and no ~/.kube/config"
            )
    except kubernetes.config.ConfigException as e:
        raise ConfigError(f"cannot load Kubernetes configuration: {e}") from e
    # One quick retry on a refused connection; anything longer is Alertmanager's retry to make.
    configuration.retries = retries
    return ApiClient(configuration)
