"""Alerting rules generated from the function's own configuration.

For every target and signal, the rule's expression is built from the very query the function
sends to re-verify (``Target.query_for``): CV = stddev(Q) / avg(Q), with the signal's threshold,
so the alert and the verification cannot disagree about the same data. The rule stays silent
for fewer pods than ``min_pods``, on missing data (no series: no result), and below the signal's
floor (``avg(Q) >= floor``, the level under which the function answers ``below_floor``; with a
floor of 0, ``avg(Q) > 0`` keeps an all-zero idle Deployment quiet, 0/0 being NaN anyway). With
partition-aware lag, Q is the per-pod sum of the partitions query, as the function computes it.

    python -m rebalancer rules examples/rebalancer.yaml > alertmanager/rules/pod-rebalancer.rules.yml

A signal in ``hpa`` mode alerts when the busiest pod uses more than ``tolerance`` times the
pods' average (``max(Q) > tolerance * avg(Q)``). While the HPA holds the average at its target
utilisation of the request, that is the function's own test (a pod above target x tolerance),
with no kube-state-metrics join: both sides are label-less aggregates, which compare alike on
Prometheus and VictoriaMetrics. The function then re-verifies with the HPA's real target.

Lag measured at the brokers (``source: kafka``) is verified there, so its alert needs no per-pod
series, only one to fire on: the group's total lag (``kafka.alert_query``, by default
kafka_exporter's ``kafka_consumergroup_lag`` summed for the group), at or above the floor times
``min_pods``, the least total at which the pods' mean lag can reach the floor. Where the signal
also has a per-pod ``query`` or a ``partitions`` template, the skew rule is built from it instead.

The output is valid for Prometheus and vmalert alike (checked by promtool and vmalert -dryRun).
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from rebalancer.alerts import SIGNAL_LABEL, TARGET_LABEL
from rebalancer.config import Settings, SignalName, Target, load_settings
from rebalancer.core.durations import format_duration, parse_duration
from rebalancer.errors import ConfigError

ALERT_NAMES = {"cpu": "ConsumerCpuSkew", "lag": "ConsumerLagSkew", "memory": "ConsumerMemorySkew",
               "composite": "ConsumerCompositeSkew"}
SUMMARIES = {"cpu": "CPU skew", "lag": "Kafka lag skew", "memory": "Memory skew", "composite": "Composite load skew"}


def _level(query: str, floor: float) -> str:
    """The floor, as the function applies it: a mean below it is no skew (and 0 is idle)."""
    return f"and on () avg({query}) >= {floor!r}\n" if floor > 0 else f"and on () avg({query}) > 0\n"


def alert_expression(query: str, threshold: float, min_pods: int, floor: float = 0.0) -> str:
    return (
        f"(stddev({query}) / avg({query})) > {threshold!r}\n"
        f"and on () count({query}) >= {min_pods}\n"
        + _level(query, floor)
    )


def hpa_alert_expression(query: str, tolerance: float, min_pods: int, floor: float = 0.0) -> str:
    return (
        f"max({query}) > {tolerance!r} * avg({query})\n"
        f"and on () count({query}) >= {min_pods}\n"
        + _level(query, floor)
    )


def group_lag_expression(query: str, floor: float, min_pods: int) -> str:
    """The group's total lag at the least level where the pods' mean can reach the floor."""
    return f"{query} >= {floor * min_pods!r}\n" if floor > 0 else f"{query} > 0\n"


def _group_rule(target: Target, for_duration: timedelta) -> dict[str, Any] | None:
    """The rule of a lag signal measured at the brokers with no metrics template to alert on."""
    query, spec = target.group_lag_query(), target.signals.get("lag")
    if query is None or spec is None or spec.query is not None or spec.partitions is not None:
        return None
    kafka = target.kafka_source("lag")
    assert kafka is not None
    return _rule(target, "lag", for_duration, group_lag_expression(query, target.floor("lag"), target.min_pods),
                 f'Consumer group {kafka.group} is {{{{ $value | printf "%.0f" }}}} messages behind',
                 f"The consumer group {kafka.group} of {target.namespace}/{target.deployment} is behind by at least "
                 f"{target.floor('lag') * target.min_pods:g} messages (the lag floor times min_pods). pod-rebalancer "
                 "verifies at the brokers whether the lag is skewed across the pods, and may move the outliers.")


def alert_rule(target: Target, signal: SignalName, for_duration: timedelta) -> dict[str, Any]:
    at_brokers = _group_rule(target, for_duration) if signal == "lag" else None
    if at_brokers is not None:
        return at_brokers
    query = target.query_for(signal)
    if signal == "composite":
        return _rule(target, signal, for_duration, alert_expression(query, target.threshold(signal), target.min_pods),
                     f'{SUMMARIES[signal]} {{{{ $value | printf "%.2f" }}}} across {target.deployment} pods',
                     f"The coefficient of variation of the pods' composite load (weighted "
                     f"{', '.join(target.composite.weights) if target.composite else ''}, each over its mean) across "
                     f"{target.namespace}/{target.deployment} is above {target.threshold(signal)!r}. pod-rebalancer "
                     "re-verifies it and may move the outlier pods.")
    spec = target.signals[signal]
    summary = f'{SUMMARIES[signal]} {{{{ $value | printf "%.2f" }}}} across {target.deployment} pods'
    if spec.mode == "hpa":
        expr = hpa_alert_expression(query, spec.tolerance, target.min_pods, target.floor(signal))
        summary = (f'Busiest {target.deployment} pod at {{{{ $value | printf "%.2f" }}}} cores, over '
                   f"{spec.tolerance!r} x the average")
        description = (f"The busiest pod of {target.namespace}/{target.deployment} uses more than {spec.tolerance!r} "
                       f"times the pods' average {signal}. pod-rebalancer re-verifies it against the HPA's target "
                       "and may move the outlier pods.")
    else:
        if spec.threshold is None:  # the configuration refuses a cv-mode signal without one
            raise ValueError(f"target {target.name}: signal {signal} has no threshold")
        expr = alert_expression(query, spec.threshold, target.min_pods, target.floor(signal))
        description = (f"The coefficient of variation (stddev/mean) of per-pod {signal} across {target.namespace}/"
                       f"{target.deployment} is above {spec.threshold!r}. "
                       "pod-rebalancer re-verifies it and may move the outlier pods.")
    return _rule(target, signal, for_duration, expr, summary, description)


def _rule(target: Target, signal: SignalName, for_duration: timedelta, expr: str, summary: str,
          description: str) -> dict[str, Any]:
    return {
        "alert": ALERT_NAMES[signal],
        "expr": expr,
        "for": format_duration(for_duration),
        "labels": {
            "severity": "warning",
            TARGET_LABEL: target.name,
            SIGNAL_LABEL: signal,
            "namespace": target.namespace,
            "deployment": target.deployment,
        },
        "annotations": {"summary": summary, "description": description},
    }


def rules_document(settings: Settings, for_duration: timedelta, interval: timedelta) -> dict[str, Any]:
    rules = [
        alert_rule(target, signal, for_duration)
        for target in settings.targets
        for signal in target.decision_signals()
    ]
    return {"groups": [{"name": "pod-rebalancer", "interval": format_duration(interval), "rules": rules}]}


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line expressions as YAML block literals, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_LiteralDumper.add_representer(str, _str)


def render(settings: Settings, for_duration: timedelta, interval: timedelta) -> str:
    header = (
        "# Generated by `python -m rebalancer rules` from the function's configuration: each expression is\n"
        "# built from the query the function re-verifies with. Regenerate when the targets change.\n"
    )
    document = rules_document(settings, for_duration, interval)
    return header + yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, width=1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rebalancer rules", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path, help="the function's YAML configuration")
    parser.add_argument("--for", dest="for_duration", default="5m", help="how long the skew must last before firing (default 5m)")
    parser.add_argument("--interval", default="30s", help="rule evaluation interval (default 30s)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        text = render(settings, parse_duration(args.for_duration), parse_duration(args.interval))
    except (ConfigError, ValueError) as e:  # a CLI: say what is wrong, never a traceback
        print(f"cannot generate rules from {args.config}: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
