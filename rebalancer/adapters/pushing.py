"""Pushing the function's own metrics after each invocation.

A scale-to-zero function has no instance for Prometheus to scrape between alerts, and each new
instance starts its counters at zero. With ``metrics_push_url`` set, every POST ends by pushing
the instance's registry: to VictoriaMetrics' import API (``/api/v1/import/prometheus``, each
push a sample at push time, labelled ``job`` and ``instance``) or to a Prometheus Pushgateway
(``PUT /metrics/job/<job>/instance/<instance>``, through prometheus-client's own
``push_to_gateway``). Sum the counters over ``instance`` in queries. A failed push is logged
and counted, and never changes the answer.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import push_to_gateway

PushFormat = Literal["victoriametrics", "pushgateway"]


def instance_name() -> str:
    """One name per process: an instance's counters are a series of their own."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class MetricsPusher:
    url: str
    format: PushFormat
    session: requests.Session
    timeout_seconds: float
    job: str = "pod-rebalancer"
    instance: str = field(default_factory=instance_name)

    def push(self, registry: CollectorRegistry) -> str | None:
        """Push the registry; None when it went through, else why not (for the log)."""
        try:
            if self.format == "pushgateway":
                push_to_gateway(self.url, job=self.job, registry=registry, grouping_key={"instance": self.instance},
                                timeout=self.timeout_seconds, handler=self._through_session)
                return None
            response = self.session.post(
                self.url.rstrip("/") + "/api/v1/import/prometheus", data=generate_latest(registry),
                params=[("extra_label", f"job={self.job}"), ("extra_label", f"instance={self.instance}")],
                timeout=self.timeout_seconds)
        except (requests.RequestException, OSError) as e:
            return f"{type(e).__name__}"
        if response.status_code >= 300:
            return f"HTTP {response.status_code}"
        return None

    def _through_session(self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                         data: bytes) -> Callable[[], None]:
        """prometheus-client's handler contract, sent through our session (its credentials)."""

        def send() -> None:
            response = self.session.request(method, url, data=data, headers=dict(headers), timeout=timeout)
            if response.status_code >= 300:
                raise OSError(f"HTTP {response.status_code}")

        return send


def push_after(pusher: MetricsPusher | None, registry: CollectorRegistry, failures: Callable[[], None]) -> None:
    if pusher is None:
        return
    problem = pusher.push(registry)
    if problem is not None:
        failures()
        logging.getLogger("rebalancer").warning(
            f"pushing the function's metrics to {pusher.url} failed: {problem}",
            extra={"json_fields": {"event": "metrics_push_failed", "cause": problem}})
