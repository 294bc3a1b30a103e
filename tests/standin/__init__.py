"""The Kubernetes API stand-in: a test double the official client talks to (see server.py)."""

from tests.standin.server import KubeApiStandIn, RecordedRequest

__all__ = ["KubeApiStandIn", "RecordedRequest"]
