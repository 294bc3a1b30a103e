"""The write side: the state ConfigMap's conditional write, evictions, deletions and Events."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from rebalancer.adapters.kube.connection import KubeConnection
from rebalancer.adapters.kube.failures import (
    CLIENT_FAILURES,
    from_a_disruption_budget,
    status_causes,
    status_message,
    translate,
)
from rebalancer.adapters.kube.json_codec import JSON
from rebalancer.adapters.kube.records import EVENT_SOURCE, MERGE_PATCH, EventNote, PodAction
from rebalancer.core.timestamps import stamp


class KubeWrites(KubeConnection):
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
            return JSON.resource_version(written, doing)
        except CLIENT_FAILURES as e:
            raise translate(e, doing) from e

    # -- acting on pods ---------------------------------------------------------------------------

    def evict_pod(self, namespace: str, name: str, uid: str | None) -> PodAction:
        """policy/v1 Eviction: PodDisruptionBudgets decide. Their 429 is ``blocked``; any other
        refusal (a 429 that is not a budget's included) is ``failed``. Never retried here."""
        body: dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": name, "namespace": namespace}}
        if uid:
            body["deleteOptions"] = {"preconditions": {"uid": uid}}
        try:
            self._request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", body=body)
        except ApiException as e:
            message, _ = status_message(e)
            causes = status_causes(e)
            if e.status == 429 and from_a_disruption_budget(e):
                return PodAction(name, "blocked", causes or message or "the disruption budget allows no eviction now")
            return PodAction(name, "failed", f"HTTP {e.status}: {causes or message}")
        except CLIENT_FAILURES as e:
            return PodAction(name, "failed", str(translate(e, f"evict pod {namespace}/{name}")))
        return PodAction(name, "evicted")

    def delete_pod(self, namespace: str, name: str, uid: str | None) -> PodAction:
        """A plain delete with the pod's own termination grace period (none given here on purpose)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}} if uid else None
        try:
            self._request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)
        except ApiException as e:
            message, _ = status_message(e)
            return PodAction(name, "failed", f"HTTP {e.status}: {message}")
        except CLIENT_FAILURES as e:
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
        except CLIENT_FAILURES as e:
            raise translate(e, f"create event on {kind.lower()} {namespace}/{name}") from e


