"""A target (one Deployment) and its signals, windows and composite, as the file describes them."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from rebalancer.config.fields import (
    DEFAULT_FLOORS,
    DNS1123_LABEL,
    SIGNAL_NAMES,
    UNITS,
    Dns1123Label,
    Dns1123Subdomain,
    Duration,
    Fraction,
    MeasuredSignal,
    PositiveDuration,
    SignalName,
    Strict,
    StrictBool,
)
from rebalancer.config.kafka import KafkaSource
from rebalancer.core import history, promql
from rebalancer.core.windows import DAYS, Schedule, Window
from rebalancer.core.workload import DELAY_SPREAD, Assignor, Mode, Rules, Selection


class SignalSpec(Strict):
    """One signal of a target: how skew is judged, and the per-pod query.

    ``mode: cv`` (the default) acts when the coefficient of variation exceeds ``threshold``.
    ``mode: hpa`` (cpu only) follows PostHog's pod-rebalancer: hot pods are the ``top_k``
    busiest above the HorizontalPodAutoscaler's target utilisation x ``tolerance`` x the
    average CPU request; it acts when moving them and the ``top_k`` idlest would improve the
    hot pods' average by more than the target's ``min_improvement``."""

    mode: Mode = "cv"
    threshold: float | None = Field(default=None, gt=0.0, description="cv mode: coefficient of variation to exceed")
    tolerance: float = Field(default=1.5, gt=0.0, description="hpa mode: multiple of the HPA's target usage")
    top_k: int = Field(default=2, ge=1, description="hpa mode: hot and cold pods considered on each side")
    query: str | None = Field(default=None, description="PromQL template; one series per pod")
    floor: float | None = Field(default=None, ge=0.0, description="mean level below which a skew does not matter")
    partitions: str | None = Field(default=None, description="lag only: PromQL template, one series per "
                                   "(topic, partition) with its lag, labelled pod, topic, partition")
    hot_partition_share: float = Field(default=0.5, gt=0.0, le=1.0, description="partitions: share of the hot "
                                       "pod's excess one partition may explain before moving pods cannot help")
    inflow: str | None = Field(default=None, description="partitions: PromQL template, one series per (topic, "
                               "partition) with the messages per second written to it (labelled topic, partition); "
                               "tells a hot partition from a slow consumer")
    hot_inflow_ratio: float = Field(default=3.0, gt=1.0, description="inflow: a partition whose inflow is at least "
                                    "this many times the median partition's is hot")
    delay_spread: float = Field(default=DELAY_SPREAD, ge=0.0, lt=1.0, description="inflow: how far a consumer's delay "
                                "(its lag over its inflow) may move either way across a rebalance, as a share of its "
                                "delay now; the projected range takes it in")
    source: Literal["metrics", "kafka"] = Field(default="metrics", description="lag only: where the lag is measured "
                                                "now: the metrics backend, or the brokers themselves (kafka)")
    kafka: KafkaSource | None = Field(default=None, description="source kafka: the brokers, the group, how members "
                                      "map to pods")

    @model_validator(mode="after")
    def _threshold_matches_mode(self) -> SignalSpec:
        if self.mode == "cv" and self.threshold is None:
            raise ValueError("threshold: required in cv mode (the coefficient of variation to exceed)")
        if self.mode == "hpa" and self.threshold is not None:
            raise ValueError("threshold: not used in hpa mode, which derives it from the HPA (remove it, or set tolerance)")
        return self

    @model_validator(mode="after")
    def _kafka_with_its_source(self) -> SignalSpec:
        if self.source == "kafka" and self.kafka is None:
            raise ValueError("kafka: required with source: kafka (bootstrap_servers, group)")
        if self.source != "kafka" and self.kafka is not None:
            raise ValueError("kafka: only read with source: kafka (set it, or remove kafka)")
        return self

    @property
    def by_partition(self) -> bool:
        """Whether the decision knows who holds which partition: from a partitions query, or the brokers."""
        return self.partitions is not None or self.source == "kafka"

    @model_validator(mode="after")
    def _inflow_needs_partitions(self) -> SignalSpec:
        if self.inflow is not None and not self.by_partition:
            raise ValueError("inflow: tells a hot partition from a slow consumer, so it needs partitions (the "
                             "per-partition lag) or source: kafka")
        if "delay_spread" in self.model_fields_set and self.inflow is None:
            raise ValueError("delay_spread: a consumer's delay is its lag over its inflow: set inflow too, or remove "
                             "delay_spread")
        return self

    @field_validator("query", "partitions", "inflow")
    @classmethod
    def _known_placeholders(cls, query: str | None) -> str | None:
        if query is not None:
            promql.check_template(query)
        return query

    @model_validator(mode="after")
    def _group_placeholder_needs_a_group(self) -> SignalSpec:
        for name in ("query", "partitions", "inflow"):
            template = getattr(self, name)
            if self.kafka is None and template is not None and "$group" in template:
                raise ValueError(f"{name}: $group is the consumer group of source: kafka, which is not configured")
        return self


class CompositeSpec(Strict):
    """A composite load: each pod's score is the weighted sum of its signals' values, each
    normalised by that signal's mean over the pods; the CV is taken over the scores."""

    weights: dict[MeasuredSignal, Annotated[float, Field(gt=0.0)]] = Field(min_length=2)
    threshold: float = Field(gt=0.0, description="the CV of the scores to exceed")


class WindowSpec(Strict):
    """A maintenance (or blackout) window: days, HH:MM start and end, an IANA time zone."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown IANA time zone {zone!r} (e.g. Europe/Berlin)") from e
        return zone

    @model_validator(mode="after")
    def _not_empty(self) -> WindowSpec:
        if self.start == self.end:
            raise ValueError("start and end are equal: an empty window (use 00:00 to 24:00 for whole days)")
        return self

    def window(self) -> Window:
        end = None if self.end == "24:00" else time.fromisoformat(self.end)
        return Window(tuple(sorted({DAYS.index(d) for d in self.days})), time.fromisoformat(self.start), end,
                      ZoneInfo(self.timezone))


class Target(Strict):
    """A Deployment the function may act on. Alerts can only select among these."""

    name: Dns1123Label
    namespace: Dns1123Label
    deployment: Dns1123Subdomain
    container: Dns1123Label | None = None  # defaults to the deployment's name
    action: Literal["evict", "delete"] = "evict"
    cooldown: PositiveDuration = timedelta(minutes=15)
    min_pods: int = Field(default=3, ge=2)
    min_pod_age: Duration = timedelta(minutes=10)
    window: PositiveDuration = timedelta(minutes=5)
    selection: Selection = "rotate_outliers"
    max_pods_per_action: int = Field(default=2, ge=1)
    max_missing_fraction: Fraction = 0.2
    min_improvement: Fraction = 0.1
    # How the consumer group hands partitions out, for the projection of partition-aware lag:
    # the new protocol's uniform (its default) or range, or the classic cooperative-sticky.
    assignor: Assignor = "uniform"
    max_unready_fraction: Fraction = 0.2
    max_actions_per_hour: int = Field(default=4, ge=1)
    # The closed loop: how long after an action its effect is measured (default: the cooldown),
    # and the back-off after actions that did not lower the skew.
    settle: PositiveDuration | None = None
    backoff_after_ineffective: int = Field(default=2, ge=1)
    backoff: PositiveDuration = timedelta(hours=1)
    max_backoff: PositiveDuration = timedelta(hours=24)
    # After an action, the next needs the CV above threshold x (1 + hysteresis), for hysteresis_for.
    hysteresis: Fraction = 0.1
    hysteresis_for: PositiveDuration = timedelta(hours=6)
    # A person in the loop: a verified skew becomes a proposal, carried out by POST /approve/<id>.
    approval: StrictBool = False
    approval_ttl: PositiveDuration = timedelta(hours=1)
    # When it may act at all: inside one of `windows` (if any), never inside a `blackouts` one.
    windows: list[WindowSpec] = Field(default_factory=list)
    blackouts: list[WindowSpec] = Field(default_factory=list)
    signals: dict[MeasuredSignal, SignalSpec] = Field(min_length=1)
    composite: CompositeSpec | None = None

    @model_validator(mode="after")
    def _hpa_mode_is_for_cpu(self) -> Target:
        for signal in ("lag", "memory"):
            if signal in self.signals and self.signals[signal].mode == "hpa":
                raise ValueError(f"signals.{signal}.mode: hpa mode reads CPU requests and the HPA's CPU target: cpu only")
        return self

    @model_validator(mode="after")
    def _composite_of_configured_signals(self) -> Target:
        if self.composite is not None:
            missing = sorted(set(self.composite.weights) - set(self.signals))
            if missing:
                raise ValueError(f"composite.weights: {', '.join(missing)} not configured in signals (configure each "
                                 "component signal, with its own query and floor)")
        return self

    @model_validator(mode="after")
    def _partitions_are_for_lag(self) -> Target:
        for signal in ("cpu", "memory"):
            if signal in self.signals and self.signals[signal].partitions is not None:
                raise ValueError(f"signals.{signal}.partitions: partition-aware decisions are for the lag signal only")
            if signal in self.signals and self.signals[signal].source != "metrics":
                raise ValueError(f"signals.{signal}.source: only the lag signal can be measured at the brokers")
        lag = self.signals.get("lag")
        if "assignor" in self.model_fields_set and (lag is None or not lag.by_partition):
            raise ValueError("assignor: the projection follows the assignor only where it knows who holds which "
                             "partition: set signals.lag.partitions (or source: kafka) too, or remove assignor")
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff: must be at least backoff (the first wait)")
        return self

    @model_validator(mode="after")
    def _default_container(self) -> Target:
        if self.container is None:
            if not DNS1123_LABEL.match(self.deployment) or len(self.deployment) > 63:
                raise ValueError("container: required when the deployment name is not a DNS-1123 label")
            object.__setattr__(self, "container", self.deployment)
        return self

    def limits(self) -> history.Limits:
        return history.Limits(self.cooldown, self.max_actions_per_hour,
                              history.Backoff(self.backoff_after_ineffective, self.backoff, self.max_backoff),
                              history.Hysteresis(self.hysteresis, self.hysteresis_for))

    def schedule(self) -> Schedule:
        return Schedule(tuple(w.window() for w in self.windows), tuple(b.window() for b in self.blackouts))

    def effect_rules(self, signal: SignalName) -> history.EffectRules:
        """How the effect of this target's actions on ``signal`` is judged once they settled."""
        return history.EffectRules(self.settle or self.cooldown, self.threshold(signal), self.min_improvement)

    def decision_signals(self) -> tuple[SignalName, ...]:
        """The signals alerts and manual runs may ask about: the configured ones, and composite."""
        return tuple(s for s in SIGNAL_NAMES if s in self.signals or (s == "composite" and self.composite is not None))

    def floor(self, signal: SignalName) -> float:
        if signal == "composite":
            return 0.0  # its components' floors apply instead (rebalancer.core.composite)
        spec = self.signals[signal]
        return DEFAULT_FLOORS[signal] if spec.floor is None else spec.floor

    def threshold(self, signal: SignalName) -> float:
        if signal == "composite":
            return self.composite.threshold if self.composite else 0.0
        return self.signals[signal].threshold or 0.0

    def rules(self, signal: SignalName) -> Rules:
        """The decision rules for one of this target's signals."""
        spec = self.signals[signal] if signal != "composite" else SignalSpec(threshold=self.threshold(signal))
        return Rules(
            threshold=self.threshold(signal),
            mode=spec.mode,
            tolerance=spec.tolerance,
            top_k=spec.top_k,
            min_pods=self.min_pods,
            min_pod_age=self.min_pod_age,
            selection=self.selection,
            max_pods_per_action=self.max_pods_per_action,
            max_missing_fraction=self.max_missing_fraction,
            min_improvement=self.min_improvement,
            max_unready_fraction=self.max_unready_fraction,
            floor=self.floor(signal),
            unit=UNITS[signal],
            hot_partition_share=spec.hot_partition_share,
            hot_inflow_ratio=spec.hot_inflow_ratio,
            delay_spread=spec.delay_spread,
            assignor=self.assignor,
        )

    def _render(self, template: str) -> str:
        kafka = self.kafka_source("lag")
        return promql.render(template, namespace=self.namespace, deployment=self.deployment,
                             container=self.container or self.deployment, window=self.window,
                             group=kafka.group if kafka else "")

    def kafka_source(self, signal: SignalName) -> KafkaSource | None:
        """Where the signal is measured at the brokers (``source: kafka``), else None."""
        spec = self.signals.get(signal) if signal != "composite" else None
        return spec.kafka if spec is not None and spec.source == "kafka" else None

    def group_lag_query(self) -> str | None:
        """The group's total lag, what the alert fires on when the lag is measured at the brokers
        with no per-pod or per-partition template to alert on."""
        kafka = self.kafka_source("lag")
        return None if kafka is None else self._render(kafka.alert_query)

    def query_for(self, signal: SignalName) -> str:
        """The per-pod PromQL for ``signal`` (the alert rules' and the backtest's), placeholders
        filled and escaped. With ``partitions``, a pod's value is the sum of its partitions; the
        composite is its components' weighted sum, each over its mean."""
        if signal == "composite":
            assert self.composite is not None
            parts = [f"{weight!r} * ({self.query_for(s)} / scalar(avg({self.query_for(s)})))"
                     for s, weight in self.composite.weights.items()]
            return "(" + " + ".join(parts) + ")"
        spec = self.signals[signal]
        if spec.partitions is not None:
            return f"sum by (pod) ({self._render(spec.partitions)})"
        return self._render(spec.query or promql.DEFAULT_TEMPLATES[signal])

    def partitions_query(self, signal: SignalName) -> str | None:
        """The per-partition PromQL the function decides with, when the signal has ``partitions``."""
        if signal == "composite":
            return None
        template = self.signals[signal].partitions
        return None if template is None else self._render(template)

    def inflow_query(self, signal: SignalName) -> str | None:
        """The per-partition inflow PromQL (messages/s), when the signal has ``inflow``."""
        if signal == "composite":
            return None
        template = self.signals[signal].inflow
        return None if template is None else self._render(template)
