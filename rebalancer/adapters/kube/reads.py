"""The read side: the target Deployment with its pods, and the state ConfigMap."""

from __future__ import annotations

from rebalancer.adapters.kube.connection import KubeConnection
from rebalancer.adapters.kube.decoding import (
    DEPLOYMENT,
    HPAS,
    OBJECT,
    OBJECTS,
    PODS,
    PODS_WITH_REQUESTS,
    LabelSelector,
    controller_of,
    decode,
    pod_states,
    selector_string,
    workload_status,
)
from rebalancer.adapters.kube.failures import CLIENT_FAILURES, translate
from rebalancer.adapters.kube.records import ConfigMapState, DeploymentPods
from rebalancer.errors import (
    KubeError,
    KubeNotFoundError,
)


class KubeReads(KubeConnection):
    def deployment_pods(self, namespace: str, deployment: str, container: str | None = None) -> DeploymentPods:
        """The Deployment and every pod its selector matches, each marked owned or not; with
        ``container``, each pod's CPU request for it (hpa mode)."""
        doing = f"read deployment {namespace}/{deployment}"
        try:
            found = decode(self._request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}"),
                            DEPLOYMENT, doing)
            selector = selector_string(found.spec.selector if found.spec and found.spec.selector else LabelSelector())
            if not selector:
                raise KubeError(f"deployment {namespace}/{deployment} has an empty selector", status=0)
            by_selector = [("labelSelector", selector)]
            doing = f"list replicasets of {namespace}/{deployment}"
            replica_sets = decode(self._request("GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets",
                                                 query=by_selector), OBJECTS, doing).items or []
            doing = f"list pods of {namespace}/{deployment}"
            pods = decode(self._request("GET", f"/api/v1/namespaces/{namespace}/pods", query=by_selector),
                           PODS_WITH_REQUESTS if container else PODS, doing).items or []
            doing = f"list horizontalpodautoscalers in {namespace}"
            autoscalers = decode(self._request("GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers"),
                                  HPAS, doing).items or []
        except CLIENT_FAILURES as e:
            raise translate(e, doing) from e
        targeting = [h for h in autoscalers
                     if h.spec and h.spec.scaleTargetRef and h.spec.scaleTargetRef.kind == "Deployment"
                     and h.spec.scaleTargetRef.name == deployment]

        uid = found.metadata.uid
        owned_replica_sets = {rs.metadata.uid for rs in replica_sets
                              if (ref := controller_of(rs.metadata)) is not None and ref.kind == "Deployment" and ref.uid == uid}
        return DeploymentPods(
            namespace=namespace,
            deployment=deployment,
            uid=uid,
            selector=selector,
            pods=tuple(pod_states(pods, owned_replica_sets, container)),
            workload=workload_status(found, targeting),
            pod_uids={pod.metadata.name: pod.metadata.uid for pod in pods},
            pod_ips={pod.metadata.name: pod.status.podIP for pod in pods if pod.status and pod.status.podIP},
        )

    # -- the state ConfigMap ---------------------------------------------------------------------

    def read_configmap(self, namespace: str, name: str) -> ConfigMapState:
        doing = f"read configmap {namespace}/{name}"
        try:
            found = decode(self._request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}"), OBJECT, doing)
        except CLIENT_FAILURES as e:
            error = translate(e, doing)
            if isinstance(error, KubeNotFoundError):
                return ConfigMapState({}, None)
            raise error from e
        return ConfigMapState(dict(found.metadata.annotations or {}), found.metadata.resourceVersion)

