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
    realistic: bool = False,
    cpu_request: str | None = None,
) -> list[str]:
    """A Deployment with ``replicas`` running pods; returns the pod names in creation order.

    With ``realistic`` each pod also carries what a real cluster adds (managedFields, env,
    probes, volumes, container statuses: about 5 KB of JSON), for benchmarks and parsing tests."""
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
        pod = {
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
                "containers": [{"name": container, "image": "consumer:1",
                                **({"resources": {"requests": {"cpu": cpu_request}}} if cpu_request else {})}],
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True" if ready[index] else "False"}],
            },
        }
        if realistic:
            add_real_world_detail(pod, now - ages[index])
        api.put(pod)
        names.append(pod_name)
    return names


def add_real_world_detail(pod: dict[str, Any], started: datetime) -> None:
    """Fill a minimal pod out to the size and shape a real cluster serves (v1.3x, containerd):
    server-side-apply managedFields, a consumer's env and probes, the projected token volume,
    the full condition set and container statuses."""
    meta, spec, status = pod["metadata"], pod["spec"], pod["status"]
    name, stamp = meta["name"], timestamp(started)
    meta["generateName"] = name.rsplit("-", 1)[0] + "-"
    meta["annotations"] = {"prometheus.io/scrape": "true", "prometheus.io/port": "8001",
                           "kubectl.kubernetes.io/default-container": spec["containers"][0]["name"],
                           **meta.get("annotations", {})}
    meta["managedFields"] = [
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": stamp,
         "fieldsType": "FieldsV1", "fieldsV1": {
             "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                            "f:ownerReferences": {".": {}, f'k:{{"uid":"{meta["ownerReferences"][0]["uid"]}"}}': {}}},
             "f:spec": {"f:containers": {'k:{"name":"consumer"}': {
                 ".": {}, "f:env": {".": {}, **{f'k:{{"name":"VAR_{i}"}}': {".": {}, "f:name": {}, "f:value": {}} for i in range(8)}},
                 "f:image": {}, "f:imagePullPolicy": {}, "f:livenessProbe": {}, "f:name": {}, "f:ports": {},
                 "f:readinessProbe": {}, "f:resources": {}, "f:terminationMessagePath": {}}},
                 "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {},
                 "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}}},
        {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": stamp, "fieldsType": "FieldsV1",
         "subresource": "status", "fieldsV1": {"f:status": {
             "f:conditions": {f'k:{{"type":"{t}"}}': {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {},
                                                      "f:status": {}, "f:type": {}}
                              for t in ("ContainersReady", "Initialized", "PodReadyToStartContainers", "PodScheduled", "Ready")},
             "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {}, "f:podIPs": {},
             "f:startTime": {}}}},
    ]
    container = spec["containers"][0]
    container.setdefault("resources", {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}})
    container.update({
        "env": [{"name": f"VAR_{i}", "value": f"kafka-{i}.kafka.svc.cluster.local:9092"} for i in range(8)],
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "metrics", "containerPort": 8001, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/_health", "port": 8001, "scheme": "HTTP"}, "periodSeconds": 10,
                          "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/_ready", "port": 8001, "scheme": "HTTP"}, "periodSeconds": 5,
                           "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
        "volumeMounts": [{"name": "kube-api-access", "readOnly": True,
                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
    })
    spec.update({
        "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
        "serviceAccount": "default", "securityContext": {}, "schedulerName": "default-scheduler",
        "tolerations": [{"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 300} for t in ("not-ready", "unreachable")],
        "priority": 0, "enableServiceLinks": True, "preemptionPolicy": "PreemptLowerPriority",
    })
    ready = next(c["status"] for c in status["conditions"] if c["type"] == "Ready")
    status["conditions"] = [
        {"type": t, "status": ready if t in ("Ready", "ContainersReady") else "True", "lastProbeTime": None,
         "lastTransitionTime": stamp}
        for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    status.update({
        "hostIP": "10.128.0.17", "hostIPs": [{"ip": "10.128.0.17"}], "podIP": "10.4.3.21", "podIPs": [{"ip": "10.4.3.21"}],
        "startTime": stamp, "qosClass": "Burstable",
        "containerStatuses": [{"name": container["name"], "state": {"running": {"startedAt": stamp}}, "lastState": {},
                               "ready": ready == "True", "restartCount": 0, "image": container["image"],
                               "imageID": "docker.io/library/consumer@sha256:" + "9f" * 32,
                               "containerID": "containerd://" + "4e" * 32, "started": True}],
    })


def seed_hpa(api: KubeApiStandIn, namespace: str, deployment: str, *, cpu_utilization: int | None,
             name: str | None = None, replicas: int = 3) -> str:
    """An autoscaling/v2 HorizontalPodAutoscaler on the Deployment, steady (current = desired)."""
    metrics = ([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                              "averageUtilization": cpu_utilization}}}]
               if cpu_utilization is not None else
               [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}}])
    name = name or deployment
    api.put({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
             "metadata": {"name": name, "namespace": namespace},
             "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                      "minReplicas": 1, "maxReplicas": 100, "metrics": metrics},
             "status": {"currentReplicas": replicas, "desiredReplicas": replicas}})
    return name


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
