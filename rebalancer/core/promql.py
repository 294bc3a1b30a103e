"""PromQL query templates and safe rendering. Pure: no I/O.

A template is PromQL with placeholders ``$namespace``, ``$deployment``, ``$container``, ``$group``
(the lag signal's consumer group, where it is measured at the brokers) (each
replaced by the target's value escaped for a double-quoted PromQL string) and ``$window``
(replaced by the target's rate window as a PromQL duration, for range selectors). Every
template must return one series per pod, labelled ``pod``. The templates only ever receive
values from the configuration, never from an alert; the escaping is a second line of defence.
"""

from __future__ import annotations

from datetime import timedelta
from string import Template

from rebalancer.core.durations import format_duration

PLACEHOLDERS = frozenset({"namespace", "deployment", "container", "group", "window"})

# cAdvisor's per-container CPU counter, as a per-pod rate over the target's window.
DEFAULT_CPU_TEMPLATE = (
    "sum by (pod) (rate(container_cpu_usage_seconds_total"
    '{namespace="$namespace", container="$container"}[$window]))'
)
# The Kafka Java consumer's own per-partition lag (fetch-manager ``records-lag``), as Micrometer
# and Spring Kafka export it from every consumer pod; averaged over the window so that one
# scrape's jitter does not decide. Exporters that see lag only per partition (kafka-exporter,
# kminion) need a join with a partition->pod assignment metric: see docs/lag-sources.md.
DEFAULT_LAG_TEMPLATE = (
    "sum by (pod) (avg_over_time(kafka_consumer_fetch_manager_records_lag"
    '{namespace="$namespace", container="$container"}[$window]))'
)
# cAdvisor's working set per container (what the kubelet's memory eviction and the OOM killer
# look at), summed per pod; a gauge, so no rate and no window.
DEFAULT_MEMORY_TEMPLATE = (
    "sum by (pod) (container_memory_working_set_bytes"
    '{namespace="$namespace", container="$container"})'
)
# Lag measured at the brokers still needs a series for the alert to fire on: the group's total,
# as kafka_exporter exports it per partition (no member, so no pod: the brokers attribute it).
DEFAULT_GROUP_LAG_TEMPLATE = 'sum(kafka_consumergroup_lag{consumergroup="$group"})'
DEFAULT_TEMPLATES = {"cpu": DEFAULT_CPU_TEMPLATE, "lag": DEFAULT_LAG_TEMPLATE, "memory": DEFAULT_MEMORY_TEMPLATE}


def escape_string(value: str) -> str:
    """Escape ``value`` for the inside of a double-quoted PromQL string literal.

    PromQL strings follow Go's escaping: a backslash or a double quote would end or bend the
    literal, and a raw newline is a syntax error, so all three (and CR/tab) are escaped.
    """
    return (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )


def check_template(template: str) -> None:
    """Raise ValueError when a template is empty or uses a placeholder we do not fill."""
    if not template.strip():
        raise ValueError("query template is empty")
    unknown = set(Template(template).get_identifiers()) - PLACEHOLDERS
    if unknown:
        names = ", ".join(f"${name}" for name in sorted(unknown))
        allowed = ", ".join(f"${name}" for name in sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {names} in query template (known: {allowed})")


def render(template: str, *, namespace: str, deployment: str, container: str, window: timedelta,
           group: str = "") -> str:
    """Fill a template. ``$`` signs that are not placeholders (regex anchors) are left alone."""
    check_template(template)
    return Template(template).safe_substitute(
        namespace=escape_string(namespace),
        deployment=escape_string(deployment),
        container=escape_string(container),
        group=escape_string(group),
        window=format_duration(window),
    )
