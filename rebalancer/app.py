"""The composition root: one function instance's state, built once from its settings.

Everything that is wired together is wired here (the Kubernetes and metrics adapters, timed for
Server-Timing, the cooldown store, the actor, telemetry); ``routes`` keeps only HTTP concerns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from rebalancer import service
from rebalancer.acting import Actor
from rebalancer.adapters.kube import KubeGateway, api_client
from rebalancer.adapters.metrics_auth import metrics_session
from rebalancer.adapters.metrics_source import MetricsSource
from rebalancer.adapters.pushing import MetricsPusher
from rebalancer.background import BackgroundReads
from rebalancer.config import Settings
from rebalancer.config.kafka import KafkaSource
from rebalancer.cooldown import StateStore
from rebalancer.telemetry import Telemetry, configure_logging
from rebalancer.timing import timed

if TYPE_CHECKING:
    from rebalancer.adapters.kafka import GroupReader


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class AppState:
    """Built once per function instance and shared by its requests."""

    settings: Settings
    deps: service.Dependencies
    registry: CollectorRegistry
    clock: Callable[[], datetime] = utc_now
    pusher: MetricsPusher | None = None


def group_reader(kafka: KafkaSource) -> GroupReader:
    """The brokers' side of ``signals.lag.kafka``; the password is read when a client is made.
    Imported here: a configuration without a target measured at the brokers never loads it."""
    from rebalancer.adapters.kafka import Connection, GroupReader

    tls, sasl = kafka.tls, kafka.sasl
    connection = Connection(
        kafka.bootstrap_servers, kafka.timeout.total_seconds(), kafka.security_protocol,
        ca_file=str(tls.ca_file) if tls and tls.ca_file else None,
        cert_file=str(tls.cert_file) if tls and tls.cert_file else None,
        key_file=str(tls.key_file) if tls and tls.key_file else None,
        sasl_mechanism=sasl.mechanism if sasl else None, username=sasl.username if sasl else None,
        password=sasl.password if sasl else None)
    return GroupReader(connection, kafka.group, kafka.topics)


def build(settings: Settings, clock: Callable[[], datetime] = utc_now, registry: CollectorRegistry | None = None) -> AppState:
    """Build the adapters, the service's dependencies and the metrics registry for one instance.
    Tests pass their own clock and a fresh registry; nothing here talks to the network."""
    logger = configure_logging(settings.log_format, project=settings.gcp_project)
    registry = registry if registry is not None else CollectorRegistry()
    # The reads that need not wait for each other run on these threads, the Kubernetes adapter's own
    # lists and the service's queries alike.
    background = BackgroundReads()
    # Both adapters are timed, for the Server-Timing header of every answer.
    kube = timed(KubeGateway(
        api_client(kubeconfig=settings.kubeconfig, in_cluster=bool(settings.kubernetes_service_host),
                   gke_endpoint=settings.gke_endpoint, gke_ca_cert=settings.gke_ca_cert),
        timeout_seconds=settings.kube_timeout.total_seconds(), background=background,
    ), "kubernetes")
    session = metrics_session(settings)
    metrics = timed(
        MetricsSource(str(settings.metrics_url), timeout_seconds=settings.metrics_timeout.total_seconds(), session=session),
        "metrics"
    )
    pusher = None
    if settings.metrics_push_url is not None:
        pusher = MetricsPusher(str(settings.metrics_push_url), settings.metrics_push_format, session,
                               settings.metrics_timeout.total_seconds())
    telemetry = Telemetry(registry)
    telemetry.initialise({t.name: {s: spec.threshold for s, spec in t.signals.items()} for t in settings.targets})
    actor = Actor(kube, StateStore(kube, settings.state_configmap, settings.history_limit), telemetry, logger)
    # A reader (and, on first use, a Kafka client) only for targets whose lag is measured at the brokers.
    groups = {t.name: timed(group_reader(kafka), "kafka") for t in settings.targets
              if (kafka := t.kafka_source("lag")) is not None}
    deps = service.Dependencies(settings, kube, metrics, telemetry, logger, actor, groups, background)
    if settings.auth_token is None and not settings.allow_unauthenticated:
        logger.error(
            "REBALANCER_AUTH_TOKEN is not set: every POST will be refused with 401 "
            "(set a token, or REBALANCER_ALLOW_UNAUTHENTICATED=true for a private test setup)"
        )
    mode = "dry-run" if settings.dry_run else "LIVE"
    logger.info(
        f"pod-rebalancer ready ({mode}) for {len(settings.targets)} target(s)",
        extra={"json_fields": {"event": "start", "targets": [t.name for t in settings.targets], "dry_run": settings.dry_run}},
    )
    return AppState(settings=settings, deps=deps, registry=registry, clock=clock, pusher=pusher)
