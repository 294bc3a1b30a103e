"""Metrics (prometheus-client, on a registry passed in) and structured logging.

Logs are one JSON object per line in Cloud Logging's structured format (``logformat``: the
fields of google-cloud-logging's StructuredLogHandler, plus the time), which Cloud Logging parses
(severity, fields, trace); ``log_format: text`` prints the same content as a readable line for
local runs. Metric labels only ever carry configured target and
signal names, never values taken from a request, so no caller can grow their cardinality.
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Mapping
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from rebalancer import __version__
from rebalancer.core.decision import CODES
from rebalancer.logformat import CloudLoggingFormatter

LOGGER_NAME = "rebalancer"


class TextFormatter(logging.Formatter):
    """``<time> <SEVERITY> <message> key=value ...`` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "json_fields", {}) or {}
        flat = " ".join(
            f"{key}={value}" for key, value in fields.items() if not isinstance(value, (dict, list))
        )
        line = f"{self.formatTime(record)} {record.levelname} {record.getMessage()}"
        return f"{line} | {flat}" if flat else line


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of writing: functions-framework (and
    test capture) may replace it after the handler was built."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(log_format: str, stream: IO[str] | None = None, project: str | None = None) -> logging.Logger:
    """The package logger, with exactly one handler (idempotent across app rebuilds). ``project``
    (the Google Cloud project) makes each line's trace the full name Cloud Trace links from."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(stream or _CurrentStdout())
    handler.setFormatter(CloudLoggingFormatter(project) if log_format == "json" else TextFormatter())
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


OUTCOMES = ("acted", "blocked", "dry_run", "skipped", "rejected")
RESULTS = ("evicted", "deleted", "blocked", "failed")
EFFECTS = ("improved", "no_effect", "worse")


class Telemetry:
    """Every metric the function exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "rebalancer_requests", "HTTP requests by route and status code.", ["route", "code"], registry=registry
        )
        self.request_seconds = Histogram(
            "rebalancer_request_duration_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.decisions = Counter(
            "rebalancer_decisions",
            "Decisions by target, signal and outcome (acted, blocked, dry_run, skipped, rejected).",
            ["target", "signal", "outcome"],
            registry=registry,
        )
        self.actions = Counter(
            "rebalancer_actions",
            "Pods acted on, by target, signal and result (evicted, deleted, blocked, failed).",
            ["target", "signal", "result"],
            registry=registry,
        )
        self.refused_alerts = Counter(
            "rebalancer_refused_alerts", "Alerts refused because they name no configured target or signal.", registry=registry
        )
        self.decision_codes = Counter(
            "rebalancer_decision_codes", "Decisions by target, signal and code (the stable word that says why).",
            ["target", "signal", "code"], registry=registry,
        )
        self.verifications = Counter(
            "rebalancer_verifications", "Verifications that measured the skew (statistics taken), by target and signal.",
            ["target", "signal"], registry=registry,
        )
        self.verified_pods = Gauge(
            "rebalancer_verified_pods", "Pods the last verification's statistics were taken over, by target and signal.",
            ["target", "signal"], registry=registry,
        )
        self.thresholds = Gauge(
            "rebalancer_signal_threshold", "The configured CV threshold, by target and signal (cv mode).",
            ["target", "signal"], registry=registry,
        )
        self.verified_cv = Gauge(
            "rebalancer_verified_cv",
            "Coefficient of variation measured by the last verification, by target and signal.",
            ["target", "signal"],
            registry=registry,
        )
        self._define_closed_loop(registry)
        self.push_errors = Counter(
            "rebalancer_metrics_push_errors", "Pushes of these metrics (metrics_push_url) that failed.", registry=registry
        )
        self.upstream_errors = Counter(
            "rebalancer_upstream_errors",
            "Failures talking to a backend, by backend (metrics, kubernetes) and kind (temporary, permanent).",
            ["backend", "kind"],
            registry=registry,
        )

    def _define_closed_loop(self, registry: CollectorRegistry) -> None:
        """The targets' state: effects of their actions, back-off, last action, cooldown."""
        self.effects = Counter(
            "rebalancer_action_effects",
            "Actions whose effect was measured once they settled, by target, signal and effect (improved, no_effect, worse).",
            ["target", "signal", "effect"],
            registry=registry,
        )
        self.ineffective_streak = Gauge(
            "rebalancer_ineffective_actions_in_a_row",
            "Measured actions since the last one that improved the skew, by target: at backoff_after_ineffective it backs off.",
            ["target"],
            registry=registry,
        )
        self.last_action = Gauge(
            "rebalancer_last_action_timestamp_seconds",
            "When the target's last action took the cooldown lock (Unix time), as this instance last read or wrote it.",
            ["target"],
            registry=registry,
        )
        self.blocked_until = Gauge(
            "rebalancer_cooldown_until_timestamp_seconds",
            "Until when the target may not act (Unix time): the end of its cooldown, or of its back-off after "
            "ineffective actions, as this instance last read or wrote it.",
            ["target"],
            registry=registry,
        )

    def initialise(self, targets: Mapping[str, Mapping[str, float | None]]) -> None:
        """Every labelled series of the configured targets, at 0 from the start: a counter that
        appears only with its first event cannot be rated, and alerts on it fire late or never."""
        build = Gauge("rebalancer_build_info", "The running version, as labels; always 1.", ["version", "python"],
                      registry=self.registry)
        build.labels(__version__, platform.python_version()).set(1)
        for target, signals in targets.items():
            self.ineffective_streak.labels(target).set(0)
            for signal, threshold in signals.items():
                if threshold is not None:
                    self.thresholds.labels(target, signal).set(threshold)
                self.verifications.labels(target, signal)
                for code in CODES:
                    self.decision_codes.labels(target, signal, code)
                for outcome in OUTCOMES:
                    self.decisions.labels(target, signal, outcome)
                for result in RESULTS:
                    self.actions.labels(target, signal, result)
                for effect in EFFECTS:
                    self.effects.labels(target, signal, effect)
        for backend in ("metrics", "kubernetes"):
            for kind in ("temporary", "permanent"):
                self.upstream_errors.labels(backend, kind)
