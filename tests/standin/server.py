"""A Kubernetes API stand-in: a TEST DOUBLE, not a Kubernetes. It never runs in production.

No machine here can run a real API server, so tests point the official ``kubernetes`` client
at this small HTTP server through a kubeconfig. It implements, faithfully to the Kubernetes
documentation, only what pod-rebalancer relies on:

* pods: get, list (``labelSelector`` equality and set-based, ``fieldSelector``), create,
  graceful delete (``deletionTimestamp`` = now + grace period, the pod's own
  ``terminationGracePeriodSeconds`` unless the request gives one; removed when it expires),
  and the ``pods/eviction`` subresource with PodDisruptionBudget arithmetic;
* configmaps: create (409 AlreadyExists), get, list, update and patch with
  ``metadata.resourceVersion`` preconditions (409 Conflict), delete;
* events, deployments, replicasets (owner references), horizontalpodautoscalers,
  poddisruptionbudgets (status computed live, as the disruption controller would);
* Kubernetes ``Status`` bodies for every error, bearer-token authentication, and for tests:
  a request log, RBAC denials (403) and injected faults (any status, or a dropped connection).

There is no watch, no admission, no scheduler. A minimal kubelet and ReplicaSet controller are
simulated: pods created through the API become Running (and Ready after ``pod_ready_after``),
and, with ``replace_deleted_pods``, a terminating ReplicaSet pod gets a replacement.
Sources: kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/,
.../workloads/pods/disruptions/, .../tasks/run-application/configure-pdb/,
.../reference/using-api/api-concepts/ (resource versions, conflicts), .../overview/working-with-objects/labels/.
"""

from __future__ import annotations

import copy
import json
import math
import random
import ssl
import string
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonpatch
import jsonpointer
import yaml

from tests.standin import selectors

# resource -> (group, version, kind, namespaced)
RESOURCES: dict[str, tuple[str, str, str, bool]] = {
    "namespaces": ("", "v1", "Namespace", False),
    "pods": ("", "v1", "Pod", True),
    "configmaps": ("", "v1", "ConfigMap", True),
    "events": ("", "v1", "Event", True),
    "deployments": ("apps", "v1", "Deployment", True),
    "replicasets": ("apps", "v1", "ReplicaSet", True),
    "horizontalpodautoscalers": ("autoscaling", "v2", "HorizontalPodAutoscaler", True),
    "poddisruptionbudgets": ("policy", "v1", "PodDisruptionBudget", True),
}
# Resources whose status is a subresource: a create or update through the main resource ignores it.
STATUS_SUBRESOURCE = {"deployments", "replicasets", "horizontalpodautoscalers", "poddisruptionbudgets"}
# Field selectors the real API supports for these resources (others answer 400).
FIELD_SELECTORS = {
    "pods": {"metadata.name", "metadata.namespace", "status.phase", "spec.nodeName"},
    "events": {"metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.name",
               "involvedObject.namespace", "involvedObject.uid", "reason", "type", "source"},
}
DEFAULT_FIELD_SELECTORS = {"metadata.name", "metadata.namespace"}
DEFAULT_GRACE_SECONDS = 30
NODE_NAME = "standin-node"


def timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


class ApiStatusError(Exception):
    """An error answer: a Kubernetes ``Status`` object with its HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        }
        if self.reason:  # the real server leaves it out where it has none (an eviction's 500)
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(resource: str, name: str) -> ApiStatusError:
    group = RESOURCES.get(resource, ("",))[0]
    qualified = f"{resource}.{group}" if group else resource
    return ApiStatusError(404, "NotFound", f'{qualified} "{name}" not found', {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource})


def conflict(resource: str, name: str, why: str) -> ApiStatusError:
    return ApiStatusError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": {why}', {"name": name, "kind": resource})


def bad_request(message: str) -> ApiStatusError:
    return ApiStatusError(400, "BadRequest", message)


def invalid(kind: str, name: str, message: str) -> ApiStatusError:
    return ApiStatusError(422, "Invalid", f'{kind} "{name}" is invalid: {message}', {"name": name, "kind": kind})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in understood it; ``verb`` uses the RBAC vocabulary."""

    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    group: str
    query: dict[str, str]
    content_type: str = ""
    body: Any = None
    at: float = field(default_factory=time.time)  # wall clock when it arrived, for latency figures


@dataclass
class Fault:
    verb: str
    resource: str
    status: int  # 0: drop the connection without an answer
    times: int
    subresource: str = ""
    name: str | None = None


@dataclass
class _Route:
    group: str
    version: str
    resource: str
    namespace: str
    name: str
    subresource: str


def _parse_path(path: str) -> _Route:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) in (1, 2) and rest[0] == "namespaces":
        return _Route(group, version, "namespaces", "", rest[1] if len(rest) == 2 else "", "")
    if not rest or len(rest) > 3:
        raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
    resource = rest[0]
    known = RESOURCES.get(resource)
    if known is None or (known[0], known[1]) != (group, version):
        raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
    return _Route(group, version, resource, namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else "")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _scaled(value: int | str, total: int) -> int:
    """intstr.GetScaledValueFromIntOrPercent with roundUp=true, as the disruption controller uses it."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        return math.ceil(int(value[:-1]) * total / 100)
    raise ValueError(f"invalid value for IntOrString: {value!r}")


def _dotted(obj: dict[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    return "" if current is None else str(current)


def pod_is_ready(pod: dict[str, Any]) -> bool:
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _set_ready(pod: dict[str, Any], ready: bool, now: datetime) -> None:
    status = pod.setdefault("status", {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "Ready"]
    conditions.append({"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": timestamp(now)})
    status["conditions"] = conditions


class KubeApiStandIn:
    """The stand-in server. ``with KubeApiStandIn() as api:`` starts it on a free loopback port."""

    def __init__(
        self,
        *,
        token: str = "standin-token",
        clock: Callable[[], datetime] | None = None,
        pod_ready_after: timedelta = timedelta(0),
        replace_deleted_pods: bool = False,
        tls: bool = False,
    ) -> None:
        self.token = token
        self.accepted_tokens = {token}
        self.tls = tls
        self.ca_pem: str | None = None  # with tls: the self-signed certificate clients must trust
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.pod_ready_after = pod_ready_after
        self.replace_deleted_pods = replace_deleted_pods
        self.requests: list[RecordedRequest] = []
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._encoded: dict[tuple[str, str, str], tuple[dict[str, Any], str | None, bytes]] = {}
        self._ready_at: dict[tuple[str, str], datetime] = {}
        self._deletion_at: dict[tuple[str, str], datetime] = {}  # terminating pods, by (namespace, name)
        self._resource_version = 1000
        self._faults: list[Fault] = []
        self._denied: set[tuple[str, str, str]] = set()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> KubeApiStandIn:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            from tests.certificates import self_signed_certificate

            self.ca_pem, key_pem = self_signed_certificate()
            with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as bundle:
                bundle.write(self.ca_pem + key_pem)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(bundle.name)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="kube-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KubeApiStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "stand-in not started"
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}"

    def accept_token(self, token: str) -> None:
        """Accept another bearer token (a refreshed one), as a cluster accepts any valid one."""
        with self._lock:
            self.accepted_tokens.add(token)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": self.token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin", "namespace": namespace}}],
            "current-context": "standin",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # -- test controls ----------------------------------------------------------------------

    def fail(self, verb: str, resource: str, status: int, *, times: int = 1, subresource: str = "", name: str | None = None) -> None:
        """Answer the next ``times`` matching requests with ``status`` (0: drop the connection)."""
        with self._lock:
            self._faults.append(Fault(verb, resource, status, times, subresource, name))

    def deny(self, verb: str, resource: str, subresource: str = "") -> None:
        """Simulate RBAC: this verb on this resource answers 403 Forbidden from now on."""
        with self._lock:
            self._denied.add((verb, resource, subresource))

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as given (status included), filling in server-set metadata. For fixtures."""
        with self._lock:
            resource = self._resource_of(obj["kind"])
            stored = copy.deepcopy(obj)
            meta = stored.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", timestamp(self.clock()))
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self._next_version()
            namespace = meta.get("namespace", "") if RESOURCES[resource][3] else ""
            self._objects[(resource, namespace, meta["name"])] = stored
            if resource == "pods" and meta.get("deletionTimestamp"):
                self._deletion_at[(namespace, meta["name"])] = parse_timestamp(meta["deletionTimestamp"])
            return copy.deepcopy(stored)

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self._advance()
            found = self._objects.get((resource, namespace, name))
            return copy.deepcopy(found) if found else None

    def objects(self, resource: str, namespace: str) -> list[dict[str, Any]]:
        with self._lock:
            self._advance()
            return [copy.deepcopy(o) for (r, ns, _), o in sorted(self._objects.items()) if r == resource and ns == namespace]

    def set_pod_ready(self, namespace: str, name: str, ready: bool) -> None:
        """What a kubelet does when a readiness probe changes."""
        with self._lock:
            pod = self._objects[("pods", namespace, name)]
            _set_ready(pod, ready, self.clock())
            pod["metadata"]["resourceVersion"] = self._next_version()

    def requests_for(self, verb: str | None = None, resource: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if (verb is None or r.verb == verb) and (resource is None or r.resource == resource)]

    # -- internals --------------------------------------------------------------------------

    def _resource_of(self, kind: str) -> str:
        return next(resource for resource, spec in RESOURCES.items() if spec[2] == kind)

    def _next_version(self) -> str:
        self._resource_version += 1
        return str(self._resource_version)

    def _advance(self) -> None:
        """The simulated kubelet: finish terminations whose grace period ran out, start pods.
        Only pods with a deadline are looked at, so a request costs the same with 10 pods or 10,000."""
        now = self.clock()
        for key, deadline in list(self._deletion_at.items()):
            if deadline <= now:
                del self._deletion_at[key]
                self._objects.pop(("pods", *key), None)
                self._ready_at.pop(key, None)
        for key, ready_at in list(self._ready_at.items()):
            pod = self._objects.get(("pods", *key))
            if pod is None:
                del self._ready_at[key]
            elif ready_at <= now and not pod["metadata"].get("deletionTimestamp"):
                _set_ready(pod, True, now)
                pod["metadata"]["resourceVersion"] = self._next_version()
                del self._ready_at[key]

    def _take_fault(self, request: RecordedRequest) -> Fault | None:
        for fault in self._faults:
            if (
                fault.verb == request.verb
                and fault.resource == request.resource
                and fault.subresource == request.subresource
                and (fault.name is None or fault.name == request.name)
            ):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes] | None:
        """Serve one request: status and JSON body; ``None`` means: drop the connection (an
        injected fault). The answer is serialized under the lock, so responses can share the
        stored objects (no copy) and still never show a half-applied write."""
        with self._lock:
            answer = self._handle(method, raw_path, headers, body)
            if answer is None:
                return None
            status, payload = answer
            return status, payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    def _handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | bytes] | None:
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        presented = headers.get("authorization", "")
        if not presented.startswith("Bearer ") or presented[len("Bearer "):] not in self.accepted_tokens:
            return 401, ApiStatusError(401, "Unauthorized", "Unauthorized").body()
        try:
            route = _parse_path(split.path)
        except ApiStatusError as e:
            return e.code, e.body()
        verb = {
            "GET": "get" if route.name else ("watch" if query.get("watch") in ("true", "1") else "list"),
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete" if route.name else "deletecollection",
        }.get(method, method.lower())
        content_type = headers.get("content-type", "").split(";")[0].strip()
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
            if method in ("POST", "PUT", "PATCH"):
                return 400, bad_request("the request body is not valid JSON").body()
        recorded = RecordedRequest(verb, route.resource, route.subresource, route.namespace, route.name, route.group, query, content_type, payload)
        with self._lock:
            self.requests.append(recorded)
            fault = self._take_fault(recorded)
            if fault is not None:
                if fault.status == 0:
                    return None
                return fault.status, ApiStatusError(fault.status, "InternalError" if fault.status >= 500 else "InjectedFault", f"injected fault: HTTP {fault.status}").body()
            if (verb, route.resource, route.subresource) in self._denied:
                what = route.resource + (f"/{route.subresource}" if route.subresource else "")
                return 403, ApiStatusError(
                    403,
                    "Forbidden",
                    f'{what} "{route.name}" is forbidden: User "system:serviceaccount:standin:pod-rebalancer" '
                    f'cannot {verb} resource "{what}" in API group "{route.group}" in the namespace "{route.namespace}"',
                    {"name": route.name, "kind": route.resource},
                ).body()
            try:
                self._advance()
                return self._dispatch(method, verb, route, query, content_type, payload)
            except ApiStatusError as e:
                return e.code, e.body()

    def _dispatch(self, method: str, verb: str, route: _Route, query: dict[str, str], content_type: str, payload: Any) -> tuple[int, dict[str, Any] | bytes]:
        if route.subresource:
            if route.resource == "pods" and route.subresource == "eviction" and verb == "create":
                return self._evict(route, payload)
            raise ApiStatusError(404, "NotFound", "the server could not find the requested resource")
        if verb == "list":
            return 200, self._list(route, query)
        if verb == "get":
            return 200, self._response(route.resource, self._find(route))
        if verb == "create":
            return 201, self._create(route, payload)
        if verb == "update":
            return 200, self._update(route, payload)
        if verb == "patch":
            return 200, self._patch(route, content_type, payload)
        if verb == "delete":
            options = dict(payload or {})
            if "gracePeriodSeconds" in query:  # DeleteOptions may come as query parameters too
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            return 200, self._delete(route, options)
        raise ApiStatusError(405, "MethodNotAllowed", f"{verb} is not supported by the stand-in")

    def _response(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        group, version, kind, _ = RESOURCES[resource]
        out = dict(obj)  # shallow: serialized under the lock before any write can change it
        out["kind"], out["apiVersion"] = kind, f"{group}/{version}" if group else version
        if resource == "poddisruptionbudgets":
            out["status"] = self._pdb_status(obj)
        return out

    def _find(self, route: _Route) -> dict[str, Any]:
        found = self._objects.get((route.resource, route.namespace, route.name))
        if found is None:
            raise not_found(route.resource, route.name)
        return found

    def _list(self, route: _Route, query: dict[str, str]) -> bytes:
        try:
            label_selector = selectors.parse(query.get("labelSelector"))
        except selectors.SelectorError as e:
            raise bad_request(f"unable to parse requirement: {e}") from e
        field_terms = []
        for term in filter(None, (query.get("fieldSelector") or "").split(",")):
            negate = "!=" in term
            key, _, value = term.partition("!=" if negate else "=")
            key, value = key.strip(), value.lstrip("=").strip()
            if key not in FIELD_SELECTORS.get(route.resource, DEFAULT_FIELD_SELECTORS):
                raise bad_request(f'field label not supported: {key}')
            field_terms.append((key, value, negate))
        matching = sorted(
            (key, obj) for key, obj in self._objects.items()
            if key[0] == route.resource and (not route.namespace or key[1] == route.namespace)
        )
        items = [
            self._encoded_item(key, obj) for key, obj in matching
            if label_selector.matches(obj["metadata"].get("labels"))
            and all((_dotted(obj, key) == value) != negate for key, value, negate in field_terms)
        ]
        group, version, kind, _ = RESOURCES[route.resource]
        envelope = json.dumps({
            "kind": f"{kind}List",
            "apiVersion": f"{group}/{version}" if group else version,
            "metadata": {"resourceVersion": str(self._resource_version)},
        }).encode()
        return envelope[:-1] + b', "items": [' + b", ".join(items) + b"]}"

    def _encoded_item(self, key: tuple[str, str, str], obj: dict[str, Any]) -> bytes:
        """One list item as JSON, cached per resourceVersion as the API server's watch cache keeps
        serialized objects: listing 10,000 pods must not cost the stand-in seconds of json.dumps.
        (Every write here bumps the resourceVersion; a PDB's status is computed, never cached.)"""
        version = obj["metadata"].get("resourceVersion")
        cached = self._encoded.get(key)
        if cached is not None and cached[0] is obj and cached[1] == version and key[0] != "poddisruptionbudgets":
            return cached[2]
        item = self._response(key[0], obj)
        del item["kind"], item["apiVersion"]
        encoded = json.dumps(item).encode()
        self._encoded[key] = (obj, version, encoded)
        return encoded

    def _create(self, route: _Route, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise bad_request("the request body must be a JSON object")
        kind = RESOURCES[route.resource][2]
        meta = payload.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = meta.get("name")
        if not name:
            raise invalid(kind, "", "metadata.name: Required value: name or generateName is required")
        if route.namespace and meta.get("namespace", route.namespace) != route.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if route.resource != "namespaces" and route.namespace and ("namespaces", "", route.namespace) not in self._objects and self._namespaces_enforced():
            raise not_found("namespaces", route.namespace)
        key = (route.resource, route.namespace, name)
        if key in self._objects:
            raise ApiStatusError(409, "AlreadyExists", f'{route.resource} "{name}" already exists', {"name": name, "kind": route.resource})
        if route.resource == "poddisruptionbudgets":
            spec = payload.get("spec") or {}
            if "minAvailable" in spec and "maxUnavailable" in spec:
                raise invalid(kind, name, "spec: Invalid value: minAvailable and maxUnavailable cannot be both set")
        now = self.clock()
        obj = copy.deepcopy(payload)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        meta = obj["metadata"]
        for server_set in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(server_set, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=timestamp(now), resourceVersion=self._next_version())
        if route.namespace:
            meta["namespace"] = route.namespace
        if route.resource in STATUS_SUBRESOURCE:
            meta["generation"] = 1
            obj.pop("status", None)
        if route.resource == "pods":
            self._start_pod(obj, now)
        self._objects[key] = obj
        if route.resource == "deployments":
            self._roll_out(obj, now)
        return self._response(route.resource, obj)

    def _roll_out(self, deployment: dict[str, Any], now: datetime) -> None:
        """The Deployment controller, at creation only: one ReplicaSet, ``replicas`` pods."""
        meta, spec = deployment["metadata"], deployment.get("spec") or {}
        template = spec.get("template") or {}
        template_hash = uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(template, sort_keys=True)).hex[:10]
        labels = {**(template.get("metadata") or {}).get("labels", {}), "pod-template-hash": template_hash}
        replicas = spec.get("replicas", 1)

        def owner(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
            return {"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"],
                    "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

        rs_name = f"{meta['name']}-{template_hash}"
        replica_set = {
            "metadata": {"name": rs_name, "namespace": meta["namespace"], "labels": labels, "uid": str(uuid.uuid4()),
                         "creationTimestamp": timestamp(now), "resourceVersion": self._next_version(), "generation": 1,
                         "ownerReferences": [owner(deployment, "apps/v1", "Deployment")]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template},
            "status": {"replicas": replicas, "observedGeneration": 1},
        }
        self._objects[("replicasets", meta["namespace"], rs_name)] = replica_set
        for _ in range(replicas):
            name = f"{rs_name}-{''.join(random.choices('bcdfghjklmnpqrstvwxz2456789', k=5))}"
            pod = {
                "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(labels), "uid": str(uuid.uuid4()),
                             "creationTimestamp": timestamp(now), "resourceVersion": self._next_version(),
                             "ownerReferences": [owner(replica_set, "apps/v1", "ReplicaSet")]},
                "spec": copy.deepcopy(template.get("spec") or {}),
            }
            self._start_pod(pod, now)
            self._objects[("pods", meta["namespace"], name)] = pod
        deployment["status"] = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
                                "readyReplicas": replicas, "availableReplicas": replicas}

    def _namespaces_enforced(self) -> bool:
        # Namespaces are implicit until a test creates one; from then on they must exist.
        return any(key[0] == "namespaces" for key in self._objects)

    def _start_pod(self, pod: dict[str, Any], now: datetime) -> None:
        """Scheduler + kubelet in one line each: bind to a node, run, become Ready (maybe later)."""
        pod.setdefault("spec", {}).setdefault("nodeName", NODE_NAME)
        pod["spec"].setdefault("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        pod["status"] = {"phase": "Running", "startTime": timestamp(now)}
        ready_now = self.pod_ready_after <= timedelta(0)
        _set_ready(pod, ready_now, now)
        if not ready_now:
            self._ready_at[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = now + self.pod_ready_after

    def _check_precondition(self, route: _Route, current: dict[str, Any], wanted_version: str | None) -> None:
        if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
            raise conflict(route.resource, route.name, "the object has been modified; please apply your changes to the latest version and try again")

    def _store_update(self, route: _Route, current: dict[str, Any], updated: dict[str, Any]) -> dict[str, Any]:
        meta = updated.setdefault("metadata", {})
        if meta.get("name", route.name) != route.name or meta.get("uid", current["metadata"]["uid"]) != current["metadata"]["uid"]:
            raise invalid(RESOURCES[route.resource][2], route.name, "metadata: the name and uid of an object cannot change")
        for server_set in ("uid", "creationTimestamp", "deletionTimestamp", "namespace", "generation"):
            if server_set in current["metadata"]:
                meta[server_set] = current["metadata"][server_set]
            else:
                meta.pop(server_set, None)
        meta["name"] = route.name
        updated.pop("kind", None)
        updated.pop("apiVersion", None)
        if route.resource in STATUS_SUBRESOURCE:
            updated["status"] = copy.deepcopy(current.get("status"))
            if updated.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
        meta["resourceVersion"] = self._next_version()
        self._objects[(route.resource, route.namespace, route.name)] = updated
        return self._response(route.resource, updated)

    def _update(self, route: _Route, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise bad_request("the request body must be a JSON object")
        current = self._find(route)
        # An update without resourceVersion is unconditional; with one, it is a precondition.
        self._check_precondition(route, current, (payload.get("metadata") or {}).get("resourceVersion"))
        return self._store_update(route, current, copy.deepcopy(payload))

    def _patch(self, route: _Route, content_type: str, payload: Any) -> dict[str, Any]:
        current = self._find(route)
        document = copy.deepcopy(self._response(route.resource, current))
        if content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            # For the maps we patch (metadata, annotations, labels, data) strategic merge behaves
            # as a JSON merge patch; the stand-in does not implement list merge keys.
            if not isinstance(payload, dict):
                raise bad_request("json: cannot unmarshal non-object into a merge patch")
            patched = _merge_patch(document, payload)
            wanted = (payload.get("metadata") or {}).get("resourceVersion")
        elif content_type == "application/json-patch+json":
            if not isinstance(payload, list):
                raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
            try:
                patched = jsonpatch.JsonPatch(payload).apply(document)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise invalid(RESOURCES[route.resource][2], route.name, f"the server rejected our request due to an error in our request: {e}") from e
            wanted = None if patched["metadata"].get("resourceVersion") == document["metadata"]["resourceVersion"] else patched["metadata"].get("resourceVersion")
        else:
            raise ApiStatusError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type!r})")
        # A resourceVersion in the patch is a precondition (api-concepts: "conflicts").
        self._check_precondition(route, current, wanted)
        return self._store_update(route, current, patched)

    def _delete(self, route: _Route, options: dict[str, Any]) -> dict[str, Any]:
        current = self._find(route)
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != current["metadata"]["uid"]:
            raise conflict(route.resource, route.name, f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {current['metadata']['uid']}")
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise conflict(route.resource, route.name, f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, ResourceVersion in object meta: {current['metadata']['resourceVersion']}")
        if route.resource != "pods":
            del self._objects[(route.resource, route.namespace, route.name)]
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": route.name, "kind": route.resource, "uid": current["metadata"]["uid"]}}
        return self._response("pods", self._terminate_pod(route, current, options.get("gracePeriodSeconds")))

    def _terminate_pod(self, route: _Route, pod: dict[str, Any], grace: int | None) -> dict[str, Any]:
        """Graceful deletion: the pod stays, marked, until its grace period ends."""
        now = self.clock()
        if grace is None:
            grace = pod.get("spec", {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
        meta = pod["metadata"]
        unbound = not pod.get("spec", {}).get("nodeName")
        if grace <= 0 or unbound:  # nothing runs the pod: it goes at once
            del self._objects[("pods", route.namespace, route.name)]
            meta.update(deletionTimestamp=timestamp(now), deletionGracePeriodSeconds=0)
            self._replace(pod, now)
            return pod
        deadline = now + timedelta(seconds=grace)
        if meta.get("deletionTimestamp") and parse_timestamp(meta["deletionTimestamp"]) <= deadline:
            return pod  # already terminating at least as soon: a repeated delete changes nothing
        first = not meta.get("deletionTimestamp")
        meta.update(deletionTimestamp=timestamp(deadline), deletionGracePeriodSeconds=grace, resourceVersion=self._next_version())
        self._deletion_at[(route.namespace, route.name)] = parse_timestamp(meta["deletionTimestamp"])
        if first:
            self._replace(pod, now)
        return pod

    def _replace(self, pod: dict[str, Any], now: datetime) -> None:
        """The ReplicaSet controller: a terminating pod of a ReplicaSet gets a successor."""
        if not self.replace_deleted_pods:
            return
        owner = next((ref for ref in pod["metadata"].get("ownerReferences") or [] if ref.get("controller")), None)
        if owner is None or owner.get("kind") != "ReplicaSet":
            return
        successor = copy.deepcopy(pod)
        meta = successor["metadata"]
        base = pod["metadata"]["name"].rsplit("-", 1)[0]
        meta["name"] = f"{base}-{''.join(random.choices('bcdfghjklmnpqrstvwxz2456789', k=5))}"
        for server_set in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(server_set, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=timestamp(now), resourceVersion=self._next_version())
        self._start_pod(successor, now)
        self._objects[("pods", meta["namespace"], meta["name"])] = successor

    # -- eviction and disruption budgets ----------------------------------------------------

    def _pdbs_for(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        namespace = pod["metadata"]["namespace"]
        return [
            pdb
            for (resource, ns, _), pdb in sorted(self._objects.items())
            if resource == "poddisruptionbudgets" and ns == namespace
            and selectors.from_label_selector((pdb.get("spec") or {}).get("selector")).matches(pod["metadata"].get("labels"))
        ]

    def _expected_pods(self, pods: list[dict[str, Any]]) -> int | None:
        """Sum of the scale of the pods' controllers (Deployment through ReplicaSet, or ReplicaSet)."""
        scales: dict[str, int] = {}
        for pod in pods:
            owner = next((r for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
            if owner is None or owner.get("kind") != "ReplicaSet":
                return None  # the disruption controller cannot find a scale for this pod
            rs = self._objects.get(("replicasets", pod["metadata"]["namespace"], owner["name"]))
            if rs is None:
                return None
            rs_owner = next((r for r in rs["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
            if rs_owner is not None and rs_owner.get("kind") == "Deployment":
                deployment = self._objects.get(("deployments", pod["metadata"]["namespace"], rs_owner["name"]))
                if deployment is None:
                    return None
                scales[deployment["metadata"]["uid"]] = (deployment.get("spec") or {}).get("replicas", 1)
            else:
                scales[rs["metadata"]["uid"]] = (rs.get("spec") or {}).get("replicas", 1)
        return sum(scales.values())

    def _pdb_status(self, pdb: dict[str, Any]) -> dict[str, Any]:
        """What the disruption controller would have written in the PDB's status right now."""
        spec = pdb.get("spec") or {}
        namespace = pdb["metadata"]["namespace"]
        selector = selectors.from_label_selector(spec.get("selector"))
        pods = [p for (r, ns, _), p in sorted(self._objects.items()) if r == "pods" and ns == namespace and selector.matches(p["metadata"].get("labels"))]
        healthy = sum(1 for p in pods if pod_is_ready(p) and not p["metadata"].get("deletionTimestamp"))
        min_available, max_unavailable = spec.get("minAvailable"), spec.get("maxUnavailable")
        if isinstance(min_available, int):
            expected, desired = len(pods), min_available
        else:
            expected = self._expected_pods(pods)
            if expected is None:
                expected, desired = len(pods), len(pods)  # no scale found: the controller allows nothing
            elif min_available is not None:
                desired = _scaled(min_available, expected)
            elif max_unavailable is not None:
                desired = max(0, expected - _scaled(max_unavailable, expected))
            else:
                desired = expected
        return {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptionsAllowed": max(0, healthy - desired),
        }

    def _evict(self, route: _Route, payload: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(payload, dict) or payload.get("kind") not in (None, "Eviction"):
            raise bad_request("not a Eviction object")
        if (payload.get("metadata") or {}).get("name") not in (None, route.name):
            raise bad_request("name in URL does not match name in Eviction object")
        pod = self._find(route)
        options = payload.get("deleteOptions") or {}
        success = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        phase = (pod.get("status") or {}).get("phase")
        # Pods that are not running, or already terminating, are deleted without a budget check.
        if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
            self._delete(route, options)
            return 201, success
        budgets = self._pdbs_for(pod)
        if len(budgets) > 1:
            # As kube-apiserver v1.37 answers it: no reason, no details (the contract suite checks).
            raise ApiStatusError(500, "", "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")
        if budgets:
            budget = budgets[0]
            status = self._pdb_status(budget)
            policy = (budget.get("spec") or {}).get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            unhealthy_allowed = not pod_is_ready(pod) and (
                policy == "AlwaysAllow" or (status["currentHealthy"] >= status["desiredHealthy"] > 0)
            )
            if not unhealthy_allowed and status["disruptionsAllowed"] <= 0:
                raise ApiStatusError(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {"causes": [{"reason": "DisruptionBudget", "message": f"The disruption budget {budget['metadata']['name']} needs {status['desiredHealthy']} healthy pods and has {status['currentHealthy']} currently"}]},
                )
        self._delete(route, options)
        return 201, success


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as Go's net/http (the real API server) sets it: without it, the separate
    # header and body writes meet the client's delayed ACK and every answer waits ~40 ms.
    disable_nagle_algorithm = True
    api: KubeApiStandIn

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.api.handle(self.command, self.path, headers, body)
        if answer is None:  # injected connection reset
            self.close_connection = True
            self.connection.shutdown(2)
            return
        status, data = answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the request log is in .requests
        pass
