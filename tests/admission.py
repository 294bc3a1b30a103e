"""A validating admission webhook for the tests: the real API server's own way to fail a chosen
request. Registered on the real control plane with a ValidatingWebhookConfiguration (evictions,
the ConfigMaps of one namespace), it answers every request it is sent with "allowed", but for the
function's requests that a test asked it to fail:

- ``deny(code, message)``: the API server answers the function with that code and a Status
  "admission webhook ... denied the request: <message>" (a webhook may give any code from 400 up);
- ``stall()``: the webhook answers only after its timeout; under ``failurePolicy: Fail`` the API
  server gives up and answers 500 "failed calling webhook ... context deadline exceeded";
- ``unreachable()``: the webhook's port is closed; the API server answers 500 "failed calling
  webhook ... connection refused";
- ``when(resource, do=...)``: the test's own ``do()`` runs while the request is under review
  (say, killing the API server in the middle of an eviction); then it is allowed;
- ``race(configmap, annotations)``: while the function's create of that ConfigMap is reviewed,
  another writer creates it first; the webhook then allows the function's, and the API server
  answers it 409 AlreadyExists: the losing side of a race, on demand.

A denied, stalled or unreachable request was not carried out: admission runs before anything is
stored. Every review the webhook saw is kept (``seen``), so a test can tell what the function
asked for."""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes.client import AdmissionregistrationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.certificates import certificate_authority_and_leaf
from tests.realcluster import FUNCTION_USER, ControlPlane

WEBHOOK_TIMEOUT_SECONDS = 2  # how long the API server waits for the webhook by default (1 to 30)
PROBE = "admission-probe"  # a dry-run ConfigMap of this name is always denied: how the fixture knows it is in force


@dataclass(frozen=True)
class Review:
    """One request the API server sent the webhook to review."""

    operation: str  # CREATE, UPDATE, DELETE
    resource: str  # pods, configmaps
    subresource: str  # eviction, or ""
    name: str
    user: str


@dataclass
class Fault:
    resource: str
    subresource: str
    name: str | None  # None: any name
    operation: str
    code: int  # the denial's; 0: stall past the timeout; 409: another writer first, then allowed; 200: allowed after do
    message: str
    times: int
    annotations: dict[str, str] | None = None  # what the other writer's object carries (409)
    do: Callable[[], object] | None = None  # run while the request is under review, then allowed

    def matches(self, review: Review) -> bool:
        return (review.user == FUNCTION_USER and review.resource == self.resource and review.subresource == self.subresource
                and review.operation == self.operation and self.name in (None, review.name))


class AdmissionFaults:
    """The webhook for one namespace (``with AdmissionFaults(plane, namespace) as faults``)."""

    def __init__(self, plane: ControlPlane, namespace: str, workdir: Path,
                 timeout_seconds: int = WEBHOOK_TIMEOUT_SECONDS) -> None:
        self.namespace, self.workdir, self.timeout_seconds = namespace, workdir, timeout_seconds
        self.admission = AdmissionregistrationV1Api(plane.admin)
        self.core = CoreV1Api(plane.admin)
        self.name = f"faults.{namespace}.pod-rebalancer.test"
        self.faults: list[Fault] = []
        self.seen: list[Review] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # -- what the tests ask for -------------------------------------------------------------------

    def deny(self, resource: str, *, code: int, message: str, subresource: str = "", name: str | None = None,
             operation: str = "CREATE", times: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(resource, subresource, name, operation, code, message, times))

    def stall(self, resource: str, *, subresource: str = "", name: str | None = None, operation: str = "CREATE",
              times: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(resource, subresource, name, operation, 0, "", times))

    def when(self, resource: str, *, do: Callable[[], object], subresource: str = "", name: str | None = None,
             operation: str = "CREATE") -> None:
        with self.lock:
            self.faults.append(Fault(resource, subresource, name, operation, 200, "", 1, do=do))

    def race(self, configmap: str, annotations: dict[str, str]) -> None:
        with self.lock:
            self.faults.append(Fault("configmaps", "", configmap, "CREATE", 409, "", 1, annotations))

    def unreachable(self) -> None:
        """Close the webhook's port; the configuration stays, so every matching request fails."""
        self._close()

    def reviewed(self, resource: str, subresource: str = "") -> list[Review]:
        with self.lock:
            return [r for r in self.seen if r.resource == resource and r.subresource == subresource and r.user == FUNCTION_USER]

    # -- serving ----------------------------------------------------------------------------------

    def _answer(self, review: dict[str, Any]) -> dict[str, Any]:
        request = review["request"]
        seen = Review(request["operation"], request["resource"]["resource"], request.get("subResource") or "",
                      request.get("name") or (request.get("object") or {}).get("metadata", {}).get("name", ""),
                      request["userInfo"]["username"])
        with self.lock:
            self.seen.append(seen)
            fault = next((f for f in self.faults if f.times > 0 and f.matches(seen)), None)
            if fault is not None:
                fault.times -= 1
        result: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if seen.name == PROBE:
            result = {"uid": request["uid"], "allowed": False, "status": {"code": 403, "message": "in force"}}
        elif fault is not None and fault.do is not None:
            fault.do()
        elif fault is not None and fault.code == 0:
            time.sleep(self.timeout_seconds + 2)  # past the API server's patience
        elif fault is not None and fault.code == 409:  # the other writer's create is reviewed too, on another thread
            self.core.create_namespaced_config_map(self.namespace, {"metadata": {"name": seen.name,
                                                                                 "annotations": fault.annotations}})
        elif fault is not None:
            result = {"uid": request["uid"], "allowed": False, "status": {"code": fault.code, "message": fault.message}}
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": result}

    def _serve(self) -> tuple[int, str]:
        ca, leaf, key = certificate_authority_and_leaf("admission-webhook")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "leaf.pem").write_text(leaf)
        (self.workdir / "leaf.key").write_text(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.workdir / "leaf.pem", self.workdir / "leaf.key")
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = json.dumps(webhook._answer(json.loads(body))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the API server gave up on a stalled review
                    self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server
        return server.server_address[1], ca

    def __enter__(self) -> AdmissionFaults:
        port, ca = self._serve()
        rules = [
            {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/eviction"]},
            {"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]},
        ]
        self.admission.create_validating_webhook_configuration({
            "metadata": {"name": self.name},
            "webhooks": [{
                "name": self.name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": self.timeout_seconds, "rules": rules,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate", "caBundle": base64.b64encode(ca.encode()).decode()},
            }],
        })
        self._wait_in_force()
        return self

    def _wait_in_force(self, timeout: float = 30.0) -> None:
        """The API server loads webhook configurations from an informer: until this one is in its
        cache, nothing is reviewed. A dry-run create of the probe ConfigMap is denied once it is."""
        probe = {"metadata": {"name": PROBE}}
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            try:
                self.core.create_namespaced_config_map(self.namespace, probe, dry_run="All")
            except ApiException as e:
                if e.status == 403 and "in force" in (e.body or ""):
                    return
                raise
            time.sleep(0.1)
        raise AssertionError(f"the admission webhook {self.name} was not in force within {timeout:.0f} s")

    def _close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def remove(self, timeout: float = 30.0) -> None:
        """Close the webhook and delete its configuration, and wait until the API server no longer
        calls it (its informer lags): the probe is then allowed, where it was denied or failed."""
        self._close()
        try:
            self.admission.delete_validating_webhook_configuration(self.name)
        except ApiException as e:
            if e.status != 404:
                raise
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            try:
                self.core.create_namespaced_config_map(self.namespace, {"metadata": {"name": PROBE}}, dry_run="All")
                return
            except ApiException as e:
                if e.status not in (403, 500):
                    raise
            time.sleep(0.1)
        raise AssertionError(f"the API server still called the admission webhook {self.name} {timeout:.0f} s after its removal")

    def __exit__(self, *exc: object) -> None:
        self.remove()
