"""Kubernetes adapter over the official client. Library errors become ours at this edge.

Read side: the target Deployment, its ReplicaSets and its pods (one list call each), turned
into the ``PodState`` values the decision core understands. A pod counts as the Deployment's
only when its controller is a ReplicaSet whose controller is that Deployment (by UID):
matching the selector is not enough, selectors of different workloads can overlap.

Requests go through the official client's ``ApiClient`` (its kubeconfig, in-cluster and GKE
authentication, token refresh, TLS and retries), but not through its generated API classes and
models: importing ``CoreV1Api`` costs about 1.3 s at cold start, and turning a list of 10,000
real pods into its models took 12 s and 900 MiB (see the README's benchmarks). Responses are
decoded by msgspec into the few fields read here instead, skipping the rest of each object
without building it: 0.17 s and 22 MiB for the same list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import google.auth.exceptions
import kubernetes.config
import msgspec
import urllib3
from kubernetes.client.api_client import ApiClient
from kubernetes.client.configuration import Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from rebalancer.errors import (
    ConfigError,
    KubeConflictError,
    KubeError,
    KubeForbiddenError,
    KubeNotFoundError,
    KubeUnavailableError,
)
from rebalancer.policy import PodState, WorkloadStatus
from rebalancer.timestamps import stamp

EXCLUDE_ANNOTATION = "pod-rebalancer/exclude"
EVENT_SOURCE = "pod-rebalancer"
MERGE_PATCH = "application/merge-patch+json"
ActionResult = Literal["evicted", "deleted", "blocked", "failed"]


# -- the fields read from the API, nothing more (msgspec skips every other field) ------------------

# Field names are the API's own (camelCase), so that msgspec maps them without renaming.
class _OwnerReference(msgspec.Struct):
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool | None = None


class _ObjectMeta(msgspec.Struct):
    name: str = ""
    uid: str = ""
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: datetime | None = None
    deletionTimestamp: datetime | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[_OwnerReference] | None = None


class _Resources(msgspec.Struct):
    requests: dict[str, str | int | float] | None = None  # quantities: "500m", "1", 2


class _Container(msgspec.Struct):
    name: str = ""
    resources: _Resources | None = None


class _PodSpec(msgspec.Struct):
    containers: list[_Container] | None = None


class _Condition(msgspec.Struct):
    type: str = ""
    status: str = ""


class _PodStatus(msgspec.Struct):
    phase: str | None = None
    conditions: list[_Condition] | None = None


class _Pod(msgspec.Struct):
    metadata: _ObjectMeta
    status: _PodStatus | None = None


class _PodWithRequests(_Pod):
    """Decoded only when a signal needs the CPU requests (hpa mode): the containers cost time."""

    spec: _PodSpec | None = None


class _LabelSelectorRequirement(msgspec.Struct):
    key: str
    operator: str
    values: list[str] | None = None


class _LabelSelector(msgspec.Struct):
    matchLabels: dict[str, str] | None = None
    matchExpressions: list[_LabelSelectorRequirement] | None = None


class _DeploymentSpec(msgspec.Struct):
    replicas: int | None = None
    selector: _LabelSelector | None = None


class _DeploymentStatus(msgspec.Struct):
    observedGeneration: int | None = None
    updatedReplicas: int | None = None
    availableReplicas: int | None = None


class _Deployment(msgspec.Struct):
    metadata: _ObjectMeta
    spec: _DeploymentSpec | None = None
    status: _DeploymentStatus | None = None


class _ScaleTargetRef(msgspec.Struct):
    kind: str = ""
    name: str = ""


class _MetricTarget(msgspec.Struct):
    type: str = ""
    averageUtilization: int | None = None


class _ResourceMetric(msgspec.Struct):
    name: str = ""
    target: _MetricTarget | None = None


class _MetricSpec(msgspec.Struct):
    type: str = ""
    resource: _ResourceMetric | None = None


class _HpaSpec(msgspec.Struct):
    scaleTargetRef: _ScaleTargetRef | None = None
    metrics: list[_MetricSpec] | None = None


class _HpaStatus(msgspec.Struct):
    currentReplicas: int | None = None
    desiredReplicas: int | None = None


class _Hpa(msgspec.Struct):
    metadata: _ObjectMeta
    spec: _HpaSpec | None = None
    status: _HpaStatus | None = None


class _Object(msgspec.Struct):
    """Any object, when only its metadata is read (ReplicaSets, ConfigMaps, write answers)."""

    metadata: _ObjectMeta


class _PodList(msgspec.Struct):
    items: list[_Pod] | None = None


class _PodWithRequestsList(msgspec.Struct):
    items: list[_PodWithRequests] | None = None


class _ObjectList(msgspec.Struct):
    items: list[_Object] | None = None


class _HpaList(msgspec.Struct):
    items: list[_Hpa] | None = None


# Built here, once, at import: msgspec prepares a type's decoding plan when a Decoder is made,
# and doing that lazily from several request threads at once crashed a worker (SIGSEGV).
_DEPLOYMENT = msgspec.json.Decoder(_Deployment)
_OBJECT = msgspec.json.Decoder(_Object)
_OBJECTS = msgspec.json.Decoder(_ObjectList)
_PODS = msgspec.json.Decoder(_PodList)
_PODS_WITH_REQUESTS = msgspec.json.Decoder(_PodWithRequestsList)
_HPAS = msgspec.json.Decoder(_HpaList)


def _decode(data: bytes, decoder: msgspec.json.Decoder[Any], doing: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as e:  # ValidationError is a DecodeError
        raise KubeUnavailableError(f"Kubernetes API answered a malformed object while trying to {doing}: {e}") from e


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
class EventNote:
    """A core/v1 Event to write on one object (a pod, or the Deployment)."""

    kind: str
    api_version: str
    name: str
    uid: str | None
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class PodAction:
    pod: str
    result: ActionResult
    detail: str = ""


def selector_string(selector: _LabelSelector) -> str:
    """A label selector as the ``labelSelector`` query string (equality and set-based terms)."""
    terms = [f"{key}={value}" for key, value in sorted((selector.matchLabels or {}).items())]
    for expression in selector.matchExpressions or []:
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


def _controller(meta: _ObjectMeta) -> _OwnerReference | None:
    for ref in meta.ownerReferences or ():
        if ref.controller:
            return ref
    return None


def _is_ready(pod: _Pod) -> bool:
    for condition in (pod.status.conditions if pod.status else None) or ():
        if condition.type == "Ready":
            return condition.status == "True"
    return False


def _cpu_request(pod: _PodWithRequests, container: str | None) -> float | None:
    """Cores the named container requests (Kubernetes quantity: "500m", "2"), None if it sets none."""
    for candidate in (pod.spec.containers if pod.spec else None) or ():
        if candidate.name == container:
            quantity = (candidate.resources.requests if candidate.resources else None) or {}
            if "cpu" not in quantity:
                return None
            try:
                return float(parse_quantity(quantity["cpu"]))
            except ValueError:
                return None
    return None


def _cpu_target_utilization(hpa: _Hpa) -> float | None:
    """The averageUtilization of the HPA's Resource cpu metric (autoscaling/v2), if it has one."""
    for metric in (hpa.spec.metrics if hpa.spec else None) or ():
        resource = metric.resource
        if metric.type == "Resource" and resource and resource.name == "cpu" and resource.target \
                and resource.target.type == "Utilization" and resource.target.averageUtilization is not None:
            return float(resource.target.averageUtilization)
    return None


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
    if isinstance(error, google.auth.exceptions.GoogleAuthError):
        return KubeUnavailableError(f"cannot obtain a Google access token to {doing}: {type(error).__name__}")
    return KubeUnavailableError(f"Kubernetes API unreachable while trying to {doing}: {type(error).__name__}")


_CLIENT_FAILURES = (ApiException, urllib3.exceptions.HTTPError, OSError, google.auth.exceptions.GoogleAuthError)


def _pod_states(pods: Sequence[_Pod], owned_replica_sets: set[str], container: str | None) -> list[PodState]:
    """The decision core's view of each pod; owned means its controller is one of the
    Deployment's ReplicaSets (by UID)."""
    states = []
    for pod in pods:  # a plain loop: this runs once per pod, 10,000 times for a large Deployment
        meta, status = pod.metadata, pod.status
        ref = _controller(meta)
        annotations = meta.annotations
        states.append(
            PodState(
                name=meta.name,
                ready=_is_ready(pod),
                owned=ref is not None and ref.kind == "ReplicaSet" and ref.uid in owned_replica_sets,
                created_at=meta.creationTimestamp,
                terminating=meta.deletionTimestamp is not None,
                phase=(status.phase if status else None) or "Unknown",
                excluded=annotations is not None and annotations.get(EXCLUDE_ANNOTATION, "").lower() == "true",
                cpu_request=_cpu_request(pod, container) if container and isinstance(pod, _PodWithRequests) else None,
            )
        )
    return states


def _workload(found: _Deployment, targeting: Sequence[_Hpa]) -> WorkloadStatus:
    """The Deployment's rollout status and the HPA (if exactly one targets it) for the guards."""
    spec, status = found.spec or _DeploymentSpec(), found.status or _DeploymentStatus()
    hpa = targeting[0] if targeting else None
    return WorkloadStatus(
        replicas=spec.replicas if spec.replicas is not None else 1,
        generation=found.metadata.generation or 0,
        observed_generation=status.observedGeneration or 0,
        # The API omits these counts when they are zero.
        updated_replicas=status.updatedReplicas or 0,
        available_replicas=status.availableReplicas or 0,
        hpa_name=hpa.metadata.name if hpa else None,
        hpa_current_replicas=hpa.status.currentReplicas if hpa and hpa.status else None,
        hpa_desired_replicas=hpa.status.desiredReplicas if hpa and hpa.status else None,
        hpa_count=len(targeting),
        hpa_cpu_target_utilization=_cpu_target_utilization(hpa) if hpa else None,
    )


class KubeGateway:
    """The function's only door to the Kubernetes API."""

    def __init__(self, api_client: ApiClient, timeout_seconds: float) -> None:
        self.client = api_client
        self.timeout = timeout_seconds

    def _request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
                 body: Any = None, content_type: str = "application/json") -> bytes:
        """One API request with the client's authentication; the raw body of a 2xx answer, else
        the client's own ApiException (with the Status body), as its generated methods raise."""
        # gzip: the API server compresses large answers when asked. A list of 10,000 real pods is
        # 57 MB of JSON; compressed, the function's CPU to read it fell from ~190 to ~130 ms
        # (urllib3 inflates it in C), and across a network far fewer bytes travel.
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.client.param_serialize(
            method=method, resource_path=path, query_params=list(query), header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*request, _request_timeout=self.timeout)
        data: bytes = response.read()
        if not 200 <= response.status <= 299:
            ApiException.from_response(http_resp=response, body=data.decode("utf-8", "replace"), data=None)
        return data

    def deployment_pods(self, namespace: str, deployment: str, container: str | None = None) -> DeploymentPods:
        """The Deployment and every pod its selector matches, each marked owned or not; with
        ``container``, each pod's CPU request for it (hpa mode)."""
        doing = f"read deployment {namespace}/{deployment}"
        try:
            found = _decode(self._request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}"),
                            _DEPLOYMENT, doing)
            selector = selector_string(found.spec.selector if found.spec and found.spec.selector else _LabelSelector())
            if not selector:
                raise KubeError(f"deployment {namespace}/{deployment} has an empty selector", status=0)
            by_selector = [("labelSelector", selector)]
            doing = f"list replicasets of {namespace}/{deployment}"
            replica_sets = _decode(self._request("GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets",
                                                 query=by_selector), _OBJECTS, doing).items or []
            doing = f"list pods of {namespace}/{deployment}"
            pods = _decode(self._request("GET", f"/api/v1/namespaces/{namespace}/pods", query=by_selector),
                           _PODS_WITH_REQUESTS if container else _PODS, doing).items or []
            doing = f"list horizontalpodautoscalers in {namespace}"
            autoscalers = _decode(self._request("GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"),
                                  _HPAS, doing).items or []
        except _CLIENT_FAILURES as e:
            raise translate(e, doing) from e
        targeting = [h for h in autoscalers
                     if h.spec and h.spec.scaleTargetRef and h.spec.scaleTargetRef.kind == "Deployment"
                     and h.spec.scaleTargetRef.name == deployment]

        uid = found.metadata.uid
        owned_replica_sets = {rs.metadata.uid for rs in replica_sets
                              if (ref := _controller(rs.metadata)) is not None and ref.kind == "Deployment" and ref.uid == uid}
        return DeploymentPods(
            namespace=namespace,
            deployment=deployment,
            uid=uid,
            selector=selector,
            pods=tuple(_pod_states(pods, owned_replica_sets, container)),
            workload=_workload(found, targeting),
            pod_uids={pod.metadata.name: pod.metadata.uid for pod in pods},
        )

    # -- the state ConfigMap ---------------------------------------------------------------------

    def read_configmap(self, namespace: str, name: str) -> ConfigMapState:
        doing = f"read configmap {namespace}/{name}"
        try:
            found = _decode(self._request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}"), _OBJECT, doing)
        except _CLIENT_FAILURES as e:
            error = translate(e, doing)
            if isinstance(error, KubeNotFoundError):
                return ConfigMapState({}, None)
            raise error from e
        return ConfigMapState(dict(found.metadata.annotations or {}), found.metadata.resourceVersion)

    def write_configmap_annotations(self, namespace: str, name: str, annotations: Mapping[str, str | None],
                                    resource_version: str | None) -> str:
        """Create the ConfigMap (``resource_version`` None) or merge-patch its annotations on the
        condition that it is still at ``resource_version``. Raises KubeConflictError when another
        writer got there first (409 AlreadyExists or Conflict). Returns the new resourceVersion."""
        doing = f"write configmap {namespace}/{name}"
        try:
            if resource_version is None:
                body = {"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": EVENT_SOURCE},
                                     "annotations": {k: v for k, v in annotations.items() if v is not None}}}
                written = self._request("POST", f"/api/v1/namespaces/{namespace}/configmaps", body=body)
            else:
                patch = {"metadata": {"resourceVersion": resource_version, "annotations": annotations}}
                written = self._request("PATCH", f"/api/v1/namespaces/{namespace}/configmaps/{name}", body=patch,
                                        content_type=MERGE_PATCH)
            return _decode(written, _OBJECT, doing).metadata.resourceVersion or ""
        except _CLIENT_FAILURES as e:
            raise translate(e, doing) from e

    # -- acting on pods ---------------------------------------------------------------------------

    def evict_pod(self, namespace: str, name: str, uid: str | None) -> PodAction:
        """policy/v1 Eviction: PodDisruptionBudgets decide. 429 is ``blocked``, never retried here."""
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": name, "namespace": namespace}}
        if uid:
            body["deleteOptions"] = {"preconditions": {"uid": uid}}
        try:
            self._request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", body=body)
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
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        try:
            self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)
        except ApiException as e:
            message, _ = _status_message(e)
            return PodAction(name, "failed", f"HTTP {e.status}: {message}")
        except _CLIENT_FAILURES as e:
            return PodAction(name, "failed", str(translate(e, f"delete pod {namespace}/{name}")))
        return PodAction(name, "deleted")

    def create_event(self, namespace: str, note: EventNote, now: datetime) -> None:
        """A core/v1 Event on an object, for `kubectl describe` and `kubectl get events`."""
        at, kind, name = stamp(now), note.kind, note.name
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": note.api_version, "kind": kind, "name": name, "namespace": namespace,
                               "uid": note.uid},
            "reason": note.reason, "message": note.message[:1024], "type": "Warning" if note.warning else "Normal",
            "source": {"component": EVENT_SOURCE}, "reportingComponent": EVENT_SOURCE,
            "firstTimestamp": at, "lastTimestamp": at, "count": 1,
        }
        try:
            self._request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
        except _CLIENT_FAILURES as e:
            raise translate(e, f"create event on {kind.lower()} {namespace}/{name}") from e


def api_client(*, kubeconfig: Path | None, in_cluster: bool, gke_endpoint: str | None = None,
               gke_ca_cert: str | None = None, retries: int = 1) -> ApiClient:
    """Build the client once per instance: in-cluster, else KUBECONFIG, else GKE (endpoint, CA and
    Google credentials), else ~/.kube/config. No network traffic happens here."""
    configuration = Configuration()
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
