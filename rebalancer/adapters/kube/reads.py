"""The read side: the target Deployment with its pods, and the state ConfigMap. Each answer is
read by the codec of the media type the server chose (protobuf, or JSON from a server without it)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from rebalancer.adapters.kube.connection import Answer, KubeConnection
from rebalancer.adapters.kube.decoding import workload_status
from rebalancer.adapters.kube.failures import CLIENT_FAILURES, translate
from rebalancer.adapters.kube.records import ConfigMapState, DeploymentPods
from rebalancer.errors import KubeError, KubeNotFoundError


class KubeReads(KubeConnection):
    def deployment_pods(self, namespace: str, deployment: str, container: str | None = None) -> DeploymentPods:
        """The Deployment and every pod its selector matches, each marked owned or not; with
        ``container``, each pod's CPU request for it (hpa mode)."""
        doing = f"read deployment {namespace}/{deployment}"
        try:
            answer = self._read(f"/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
            found = answer.codec.deployment(answer.body, doing)
            if not found.selector:
                raise KubeError(f"deployment {namespace}/{deployment} has an empty selector", status=0)
            by_selector = [("labelSelector", found.selector)]
            # The three lists need only the selector: the ReplicaSets and the autoscalers are read
            # beside the pods, and each answer is waited for in the order the pods need it.
            replica_sets = self._beside(f"/apis/apps/v1/namespaces/{namespace}/replicasets", by_selector)
            autoscalers = self._beside(f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers", [])
            doing = f"list replicasets of {namespace}/{deployment}"
            answer = replica_sets()
            owned_replica_sets = answer.codec.owned_replica_sets(answer.body, found.uid, doing)
            doing = f"list pods of {namespace}/{deployment}"
            answer = self._read(f"/api/v1/namespaces/{namespace}/pods", by_selector, streamed=True)
            pods = answer.codec.pods(answer.pieces(), owned_replica_sets, container, doing)
            doing = f"list horizontalpodautoscalers in {namespace}"
            answer = autoscalers()
            targeting = answer.codec.autoscalers(answer.body, doing)
        except CLIENT_FAILURES as e:
            raise translate(e, doing) from e
        return DeploymentPods(
            namespace=namespace,
            deployment=deployment,
            uid=found.uid,
            selector=found.selector,
            pods=pods.states,
            workload=workload_status(found, targeting, deployment),
            pod_uids=pods.uids,
            pod_ips=pods.ips,
        )

    def _beside(self, path: str, query: list[tuple[str, str]]) -> Callable[[], Answer]:
        """A read sent now, on the background threads when there are some; the returned call
        gives its answer, or raises what it raised."""
        if self.background is None:
            return lambda: self._read(path, query)
        return self.background.submit(partial(self._read, path, query)).result

    # -- the state ConfigMap ---------------------------------------------------------------------

    def read_configmap(self, namespace: str, name: str) -> ConfigMapState:
        doing = f"read configmap {namespace}/{name}"
        try:
            answer = self._read(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
            return answer.codec.configmap(answer.body, doing)
        except CLIENT_FAILURES as e:
            error = translate(e, doing)
            if isinstance(error, KubeNotFoundError):
                return ConfigMapState({}, None)
            raise error from e
