"""The Kubernetes adapter over the official client: the only door to the API server.

``records`` is what it hands out (plain values); ``decoding`` holds what both wires share, and
``protobuf_codec`` (the reads, as client-go makes them; ``wire.proto`` is its schema) and
``json_codec`` (writes, and a server that answers only JSON) turn API objects into them;
``failures`` turns the client's errors into ours, ``connection`` holds the client and the raw
request, and ``reads`` and ``writes`` are the two sides that ``KubeGateway`` puts together.
"""

from rebalancer.adapters.kube.connection import api_client
from rebalancer.adapters.kube.gateway import KubeGateway
from rebalancer.adapters.kube.records import (
    EXCLUDE_ANNOTATION,
    ActionResult,
    ConfigMapState,
    DeploymentPods,
    EventNote,
    PodAction,
)

__all__ = ["EXCLUDE_ANNOTATION", "ActionResult", "ConfigMapState", "DeploymentPods", "EventNote", "KubeGateway",
           "PodAction", "api_client"]
