"""A real Kubernetes control plane for the tests, and one namespace of it per test.

The binary is built from tests/controlplane (k8s.io/kubernetes as a Go module: embedded etcd,
kube-apiserver with RBAC, kube-controller-manager with the Deployment, ReplicaSet, disruption,
garbage-collector, namespace and ServiceAccount controllers, and a node simulator that binds
pods, reports them Running and Ready, and ends graceful deletions after their grace period).
`make test` builds it with scripts/build-controlplane; a session starts it once.

Two identities, as in a real cluster: the admin (system:masters) sets the scene, and the function
runs as the ServiceAccount pod-rebalancer/pod-rebalancer with a token from the TokenRequest API,
bound in each test namespace to exactly the Role that terraform/ deploys. The API server's audit
log, filtered to that ServiceAccount, is the record of what the function asked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import requests
import yaml
from kubernetes.client import (
    ApiClient,
    ApiException,
    AppsV1Api,
    AuthorizationV1Api,
    AutoscalingV2Api,
    CoreV1Api,
    PolicyV1Api,
    RbacAuthorizationV1Api,
)

from tests.servers import ServerProcess, wait_for
from tests.terraform_rbac import granted, role_rules

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / ".build" / "controlplane"
# The node simulator keeps a pod annotated "false" Running but not Ready (a failing readiness probe).
READY_ANNOTATION = "podsim.pod-rebalancer.test/ready"
# On a namespace, "true": pods there that were never Ready stay unready (slow-starting containers).
HOLD_NEW_PODS_ANNOTATION = "podsim.pod-rebalancer.test/hold-new-pods"
IDENTITY_NAMESPACE = "pod-rebalancer"
IDENTITY = "pod-rebalancer"
FUNCTION_USER = f"system:serviceaccount:{IDENTITY_NAMESPACE}:{IDENTITY}"
# Nothing pulls it on the simulated node; a cluster with real kubelets runs it.
IMAGE = "registry.k8s.io/pause:3.9"


class ControlPlane(ServerProcess):
    """`controlplane up`: ready once it has written ready.json (every part answered)."""

    def __init__(self, workdir: Path, *flags: str) -> None:
        """``flags``: more of `controlplane up`'s (``--etcd-port``, ``--etcd-via``)."""
        self.state_dir = workdir / "state"
        super().__init__("controlplane", [str(BINARY), "up", "--dir", str(self.state_dir), *flags], "", workdir)

    def start(self, timeout: float = 120.0) -> ControlPlane:
        if not BINARY.exists():
            pytest.fail(f"{BINARY} is missing: `make test` builds it (scripts/build-controlplane)", pytrace=False)
        began = time.monotonic()
        self.launch()
        ready = self.state_dir / "ready.json"
        while not ready.exists():
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode} before it was ready{self._component_logs()}")
            if time.monotonic() - began > timeout:
                self.stop()
                self._fail(f"was not ready within {timeout:.0f}s{self._component_logs()}")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        # Readiness as the other servers' fixtures judge it: the API server's own /readyz
        # (open to anyone, as on any cluster), over TLS checked against the cluster's CA.
        answer = requests.get(f"{self.info['server']}/readyz", verify=self.info["ca_file"], timeout=10)
        if answer.status_code != 200 or answer.text != "ok":
            self.stop()
            self._fail(f"wrote ready.json but /readyz answered {answer.status_code} {answer.text[:200]!r}")
        self.start_to_ready = time.monotonic() - began
        self.admin = kubernetes.config.new_client_from_config(config_file=self.info["admin_kubeconfig"])
        self.function_token = self._function_identity()
        return self

    def apiserver_pid(self) -> int:
        """The running kube-apiserver: a child process of the control plane (tests/controlplane/up.go)."""
        assert self.process is not None
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if len(argv) > 1 and argv[1] == b"kube-apiserver":
                    return int(child)
        raise AssertionError("the control plane has no kube-apiserver running")

    def kill_apiserver(self) -> int:
        """SIGKILL kube-apiserver, as an OOM kill or a node failure would; the control plane's
        supervisor starts it again a second later (``wait_ready``). Returns the killed PID."""
        pid = self.apiserver_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the API server answers /readyz again (after ``kill_apiserver``)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            try:
                if requests.get(f"{self.server}/readyz", verify=self.info["ca_file"], timeout=2).text == "ok":
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self._fail(f"kube-apiserver was not ready again within {timeout:.0f}s{self._component_logs()}")

    def _component_logs(self) -> str:
        tails = []
        for name in ("kube-apiserver", "kube-controller-manager"):
            log = self.state_dir / f"{name}.log"
            if log.exists():
                tails.append(f"\n--- {name}.log (tail) ---\n" + log.read_text(errors="replace")[-2000:])
        return "".join(tails)

    def _function_identity(self) -> str:
        core = CoreV1Api(self.admin)
        core.create_namespace({"metadata": {"name": IDENTITY_NAMESPACE}})
        core.create_namespaced_service_account(IDENTITY_NAMESPACE, {"metadata": {"name": IDENTITY}})
        request = core.create_namespaced_service_account_token(
            IDENTITY, IDENTITY_NAMESPACE, {"spec": {"expirationSeconds": 24 * 3600}})
        return request.status.token

    @property
    def server(self) -> str:
        return self.info["server"]

    def write_function_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        """A kubeconfig as an operator would hand the function: the server (``server``: another
        address of it, such as a fault proxy's), its CA, the token."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "function",
            "clusters": [{"name": "controlplane", "cluster": {"server": server or self.server,
                                                               "certificate-authority": self.info["ca_file"]}}],
            "users": [{"name": IDENTITY, "user": {"token": self.function_token}}],
            "contexts": [{"name": "function", "context": {"cluster": "controlplane", "user": IDENTITY}}],
        }))
        return path

    def backdate(self, namespace: str, pods: list[str], created: datetime) -> None:
        """Give ``pods`` a creationTimestamp of ``created``, written in etcd (`controlplane backdate`):
        the API server sets it to now on create and keeps it on update, so no API request can."""
        keys = [f"/registry/pods/{namespace}/{pod}" for pod in pods]
        done = subprocess.run([str(BINARY), "backdate", "--etcd", self.info["etcd"],
                               "--created", created.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), *keys],
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise AssertionError(f"controlplane backdate exited with {done.returncode}: {done.stderr.strip()}")

    def audit(self) -> list[dict[str, Any]]:
        log = Path(self.info["audit_log"])
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class AuditedRequest:
    """One request the API server answered, from its audit log; ``verb`` is RBAC's."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    query: dict[str, str]
    at: float  # when the API server received it (epoch seconds)
    server_seconds: float  # received to response complete: the API server's own time
    user: str

    @classmethod
    def from_audit(cls, event: dict[str, Any]) -> AuditedRequest:
        ref = event.get("objectRef") or {}
        uri = urllib.parse.urlsplit(event.get("requestURI", ""))
        received, completed = (datetime.fromisoformat(event[key].replace("Z", "+00:00")).timestamp()
                               for key in ("requestReceivedTimestamp", "stageTimestamp"))
        return cls(
            verb=event["verb"], group=ref.get("apiGroup", ""), resource=ref.get("resource", ""),
            subresource=ref.get("subresource", ""), namespace=ref.get("namespace", ""), name=ref.get("name", ""),
            code=(event.get("responseStatus") or {}).get("code", 0),
            query=dict(urllib.parse.parse_qsl(uri.query)),
            at=received, server_seconds=completed - received, user=event["user"]["username"],
        )


# resource -> (API class, namespaced read method, namespaced list method)
_ACCESS = {
    "pods": (CoreV1Api, "read_namespaced_pod", "list_namespaced_pod"),
    "configmaps": (CoreV1Api, "read_namespaced_config_map", "list_namespaced_config_map"),
    "events": (CoreV1Api, "read_namespaced_event", "list_namespaced_event"),
    "deployments": (AppsV1Api, "read_namespaced_deployment", "list_namespaced_deployment"),
    "replicasets": (AppsV1Api, "read_namespaced_replica_set", "list_namespaced_replica_set"),
    "poddisruptionbudgets": (PolicyV1Api, "read_namespaced_pod_disruption_budget", "list_namespaced_pod_disruption_budget"),
    "horizontalpodautoscalers": (AutoscalingV2Api, "read_namespaced_horizontal_pod_autoscaler",
                                 "list_namespaced_horizontal_pod_autoscaler"),
}


class Namespace:
    """A namespace of a cluster, seen through an admin client: setting the scene and reading it back.
    The contract suite uses it as it is, on the stand-in or on any cluster through a kubeconfig."""

    api_client: ApiClient
    namespace: str

    @property
    def core(self) -> CoreV1Api:
        return CoreV1Api(self.api_client)

    @property
    def apps(self) -> AppsV1Api:
        return AppsV1Api(self.api_client)

    @property
    def policy(self) -> PolicyV1Api:
        return PolicyV1Api(self.api_client)

    @property
    def autoscaling(self) -> AutoscalingV2Api:
        return AutoscalingV2Api(self.api_client)

    # -- reading, as dicts in the API's own field names ------------------------------------

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        api, read, _ = _ACCESS[resource]
        try:
            found = getattr(api(self.api_client), read)(name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return self.api_client.sanitize_for_serialization(found)

    def objects(self, resource: str) -> list[dict[str, Any]]:
        api, _, list_ = _ACCESS[resource]
        found = getattr(api(self.api_client), list_)(self.namespace)
        return self.api_client.sanitize_for_serialization(found)["items"]

    def annotations(self, resource: str, name: str) -> dict[str, str] | None:
        found = self.get(resource, name)
        return (found["metadata"].get("annotations") or {}) if found else None

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.objects("events") if reason is None or e.get("reason") == reason]

    def terminating(self, pods: list[str]) -> list[str]:
        """Those of ``pods`` that have a deletionTimestamp, or are gone already."""
        out = []
        for pod in pods:
            found = self.get("pods", pod)
            if found is None or found["metadata"].get("deletionTimestamp"):
                out.append(pod)
        return sorted(out)

    # -- setting the scene ----------------------------------------------------------------------

    def deployment(self, name: str, replicas: int, *, container: str | None = None, grace_seconds: int = 30,
                   cpu_request: str | None = None, labels: dict[str, str] | None = None,
                   pod_annotations: dict[str, str] | None = None, wait: bool = True,
                   realistic: bool = False, pod_spec: dict[str, Any] | None = None) -> list[str]:
        """A Deployment the real controllers turn into pods; waits until ``replicas`` are Ready
        and returns their names, sorted. ``pod_spec`` replaces the pod spec (containers with a
        command run as processes on the simulated node)."""
        labels = labels or {"app": name}
        spec: dict[str, Any] = {"name": container or name, "image": IMAGE}
        if cpu_request:
            spec["resources"] = {"requests": {"cpu": cpu_request}}
        if realistic:
            spec.update(realistic_container(spec["name"]))
        self.apps.create_namespaced_deployment(self.namespace, {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": pod_annotations or {}},
                                  "spec": pod_spec or {"terminationGracePeriodSeconds": grace_seconds, "containers": [spec]}}},
        })
        if not wait:
            return []
        return self.wait_for_ready_pods(name, replicas)

    def hold_new_pods(self, hold: bool) -> None:
        """Make new pods here start slowly (they run, unready) until told otherwise."""
        self.core.patch_namespace(self.namespace, {"metadata": {"annotations": {HOLD_NEW_PODS_ANNOTATION: "true" if hold else None}}})

    def selector(self, deployment: str) -> str:
        found = self.apps.read_namespaced_deployment(deployment, self.namespace)
        return ",".join(f"{k}={v}" for k, v in sorted(found.spec.selector.match_labels.items()))

    def ready_pods(self, selector: str) -> list[Any]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [p for p in pods if p.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]

    def wait_for_ready_pods(self, deployment: str, count: int, timeout: float = 120.0) -> list[str]:
        selector = self.selector(deployment)
        pods = self.wait_for(lambda: (found := self.ready_pods(selector)) and len(found) == count and found,
                             f"{count} Ready pods of {deployment}", timeout)
        return sorted(p.metadata.name for p in pods)

    def wait_for_settled(self, deployment: str, timeout: float = 120.0) -> None:
        """Until the Deployment controller reports every replica updated and available."""
        def settled() -> bool:
            found = self.apps.read_namespaced_deployment(deployment, self.namespace)
            status = found.status
            return (status.observed_generation == found.metadata.generation
                    and (status.updated_replicas or 0) == found.spec.replicas
                    and (status.available_replicas or 0) == found.spec.replicas
                    and (status.replicas or 0) == found.spec.replicas)
        self.wait_for(settled, f"deployment {deployment} to settle", timeout)

    def pdb(self, name: str, selector: dict[str, str], **spec: Any) -> Any:
        """A PodDisruptionBudget, returned once the disruption controller has computed it: until
        then every eviction it covers answers 429."""
        self.policy.create_namespaced_pod_disruption_budget(self.namespace, {
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": selector}, **spec}})
        return self.wait_for(
            lambda: (found := self.policy.read_namespaced_pod_disruption_budget(name, self.namespace))
            and found.status and found.status.observed_generation == found.metadata.generation and found,
            f"the disruption controller to observe PDB {name}")

    def hpa(self, deployment: str, *, cpu_utilization: int, name: str | None = None) -> str:
        """An autoscaling/v2 HorizontalPodAutoscaler on the Deployment with a CPU Utilization target."""
        name = name or deployment
        self.autoscaling.create_namespaced_horizontal_pod_autoscaler(self.namespace, {
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                     "minReplicas": 1, "maxReplicas": 100,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": cpu_utilization}}}]}})
        return name

    def bare_pod(self, name: str, labels: dict[str, str]) -> Any:
        return self.core.create_namespaced_pod(self.namespace, {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
            "spec": {"terminationGracePeriodSeconds": 30, "containers": [{"name": "main", "image": IMAGE}]}})

    @staticmethod
    def wait_for(condition: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
        return wait_for(condition, what, timeout)


@dataclass
class AdminNamespace(Namespace):
    api_client: ApiClient
    namespace: str


@dataclass
class Cluster(Namespace):
    """One test's namespace on the real control plane. Reads and writes here are the admin's;
    the function acts through ``write_kubeconfig``'s identity, which ``grant`` binds to the Role."""

    plane: ControlPlane
    namespace: str
    _audit_from: int = field(default=0, repr=False)

    @property
    def api_client(self) -> ApiClient:  # type: ignore[override]
        return self.plane.admin

    # -- the function's identity ------------------------------------------------------------

    def grant(self, rules: list[dict[str, Any]] | None = None, *, deleting: bool = False) -> None:
        """Bind the function's ServiceAccount here to ``rules`` (by default terraform's Role), and
        return once the API server's authorizer agrees: RBAC changes reach it through a cache."""
        rbac = RbacAuthorizationV1Api(self.plane.admin)
        rules = rules if rules is not None else role_rules(deleting=deleting)
        role = {"metadata": {"name": IDENTITY}, "rules": rules}
        rbac.replace_namespaced_role(IDENTITY, self.namespace, role)  # RBAC creates on update
        try:
            rbac.create_namespaced_role_binding(self.namespace, {
                "metadata": {"name": IDENTITY},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": IDENTITY},
                "subjects": [{"kind": "ServiceAccount", "name": IDENTITY, "namespace": IDENTITY_NAMESPACE}],
            })
        except ApiException as e:
            if e.status != 409:  # bound already
                raise
        allowed = granted(rules)
        every = granted(role_rules(deleting=True)) | allowed
        self.wait_for(lambda: all(self.function_may(*call) == (call in allowed) for call in every),
                      "the API server's authorizer to apply the Role", timeout=30)

    def function_may(self, group: str, resource: str, verb: str) -> bool:
        """The authorizer's answer for the function's identity (a SubjectAccessReview)."""
        name, _, subresource = resource.partition("/")
        review = AuthorizationV1Api(self.plane.admin).create_subject_access_review({
            "spec": {"user": FUNCTION_USER, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{IDENTITY_NAMESPACE}"],
                     "resourceAttributes": {"namespace": self.namespace, "group": group, "resource": name,
                                            "subresource": subresource, "verb": verb}}})
        return bool(review.status.allowed)

    def write_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        return self.plane.write_function_kubeconfig(path, server)

    # -- what no API request can set ------------------------------------------------------------

    def backdate(self, pods: list[str], created: datetime) -> None:
        """``pods`` created at ``created`` (a UTC datetime), as the API server serves them once its
        watch cache has seen the write in etcd (ControlPlane.backdate)."""
        created = created.replace(microsecond=0)  # the API's times are whole seconds
        self.plane.backdate(self.namespace, pods, created)

        def served() -> bool:
            return all(self.core.read_namespaced_pod(pod, self.namespace).metadata.creation_timestamp == created for pod in pods)

        self.wait_for(served, f"the API server to serve {len(pods)} pods created at {created.isoformat()}", timeout=30)

    # -- what the function asked, from the API server's audit log ---------------------------

    def requests(self, verb: str | None = None, resource: str | None = None) -> list[AuditedRequest]:
        """The function's requests in this namespace (since ``forget_requests``), oldest first."""
        seen = [AuditedRequest.from_audit(e) for e in self.plane.audit()[self._audit_from:]
                if e["user"]["username"] == FUNCTION_USER]
        return sorted((r for r in seen if r.namespace == self.namespace
                       and (verb is None or r.verb == verb) and (resource is None or r.resource == resource)),
                      key=lambda r: r.at)

    def writes(self) -> list[AuditedRequest]:
        return [r for r in self.requests() if r.verb in ("create", "update", "patch", "delete")]

    def forget_requests(self) -> None:
        self._audit_from = len(self.plane.audit())


def new_namespace(plane: ControlPlane, prefix: str = "t") -> Cluster:
    namespace = f"{prefix}-{uuid.uuid4().hex[:8]}"
    CoreV1Api(plane.admin).create_namespace({"metadata": {"name": namespace}})
    return Cluster(plane, namespace)


def drop_namespace(cluster: Cluster) -> None:
    """Delete without waiting: the namespace controller and the node simulator finish it."""
    try:
        cluster.core.delete_namespace(cluster.namespace)
    except ApiException as e:
        if e.status != 404:
            raise


def realistic_container(name: str) -> dict[str, Any]:
    """What a real consumer's container spec carries (env, probes, ports, resources): the pods the
    API server then serves are about the size of real ones, managedFields and all."""
    return {
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        "env": [{"name": f"VAR_{i}", "value": f"kafka-{i}.kafka.svc.cluster.local:9092"} for i in range(8)],
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "metrics", "containerPort": 8001, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/_health", "port": 8001}, "periodSeconds": 10},
        "readinessProbe": {"httpGet": {"path": "/_ready", "port": 8001}, "periodSeconds": 5},
    }
