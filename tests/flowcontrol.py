"""The real API server throttling the function: API Priority and Fairness, as a cluster admin sets
it up. A FlowSchema puts the function's ServiceAccount on a PriorityLevelConfiguration of its own
with ``nominalConcurrencyShares`` seats' worth of shares, nothing lent or borrowed, and
``limitResponse: Reject``: whatever finds no free seat is answered 429 at once, in plain text
with a Retry-After, before any handler sees it. With 0 shares every request of the function is
rejected; with 1 it gets about three seats (the server's 600 spread over every level's shares).

``with Throttled(plane, shares):`` waits until the API server classifies the function's requests
under it (the response headers name the priority level's UID), and, on the way out, until it no
longer does."""

from __future__ import annotations

import time
from collections.abc import Callable

import kubernetes
from kubernetes.client import CoreV1Api, FlowcontrolApiserverV1Api
from kubernetes.client.exceptions import ApiException

from tests.realcluster import IDENTITY, IDENTITY_NAMESPACE, ControlPlane

NAME = "pod-rebalancer-throttled"
PRIORITY_LEVEL_HEADER = "X-Kubernetes-PF-PriorityLevel-UID"


class Throttled:
    def __init__(self, plane: ControlPlane, shares: int, kubeconfig: str) -> None:
        self.shares = shares
        self.flowcontrol = FlowcontrolApiserverV1Api(plane.admin)
        self.function = CoreV1Api(kubernetes.config.new_client_from_config(config_file=kubeconfig))
        self.uid = ""

    def __enter__(self) -> Throttled:
        level = self.flowcontrol.create_priority_level_configuration({
            "metadata": {"name": NAME},
            "spec": {"type": "Limited", "limited": {
                "nominalConcurrencyShares": self.shares, "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"}}},
        })
        self.uid = level.metadata.uid
        self.flowcontrol.create_flow_schema({
            "metadata": {"name": NAME},
            "spec": {
                "priorityLevelConfiguration": {"name": NAME},
                "matchingPrecedence": 100,  # before every suggested schema (exempt is 1)
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{
                    "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": IDENTITY, "namespace": IDENTITY_NAMESPACE}}],
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"],
                                       "clusterScope": True}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }],
            },
        })
        self._wait(lambda level: level == self.uid, "classified under the throttling priority level")
        return self

    def _classified_under(self) -> str:
        """The priority level the API server put one request of the function's under."""
        try:
            _, _, headers = self.function.get_api_resources_with_http_info()
        except ApiException as e:
            headers = e.headers or {}
        return str(headers.get(PRIORITY_LEVEL_HEADER, ""))

    def _wait(self, until: Callable[[str], bool], what: str, timeout: float = 30.0) -> None:
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if until(self._classified_under()):
                return
            time.sleep(0.2)
        raise AssertionError(f"the function's requests were not {what} within {timeout:.0f} s")

    def __exit__(self, *exc: object) -> None:
        for delete in (self.flowcontrol.delete_flow_schema, self.flowcontrol.delete_priority_level_configuration):
            try:
                delete(NAME)
            except ApiException as e:
                if e.status != 404:
                    raise
        self._wait(lambda level: level not in ("", self.uid), "back under the suggested priority levels")
