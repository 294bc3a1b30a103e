"""The function's only door to the Kubernetes API: its reads and its writes on one connection."""

from __future__ import annotations

from rebalancer.adapters.kube.reads import KubeReads
from rebalancer.adapters.kube.writes import KubeWrites


class KubeGateway(KubeReads, KubeWrites):
    """The function's only door to the Kubernetes API."""

