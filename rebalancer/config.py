"""Configuration: a YAML file named by ``REBALANCER_CONFIG``, overridden by ``REBALANCER_*`` env.

This module is the only reader of ``os.environ``. Everything is validated once, at start-up;
an invalid value stops the process with a message naming the field (and never its value,
which could be a secret).
"""

from __future__ import annotations

import os
import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rebalancer import history, policy, promql
from rebalancer.durations import parse_duration
from rebalancer.errors import ConfigError
from rebalancer.windows import DAYS, Schedule, Window

MeasuredSignal = Literal["cpu", "lag", "memory"]
MEASURED_SIGNALS: tuple[MeasuredSignal, ...] = ("cpu", "lag", "memory")
# What a decision can be about: a measured signal, or the target's composite of several.
SignalName = Literal["cpu", "lag", "memory", "composite"]
SIGNAL_NAMES: tuple[SignalName, ...] = (*MEASURED_SIGNALS, "composite")
# The level (the pods' mean) below which a skew does not matter, per signal, and its unit.
# cpu: a tenth of a core. A consumer averaging less is near idle: even three times the mean is a
#   third of a core, far from any CPU limit, and the skew is scheduling noise, not load.
# lag: 500 messages, the Kafka consumer's default max.poll.records. A pod less than one poll
#   batch behind on average is keeping up; its "lag" is the batch in flight.
# memory: 256 MiB of working set. Below it a consumer holds little more than its runtime's
#   baseline (a JVM's or Python's own heap and libraries); a skew there is start-up noise, not
#   data a restart would shed.
DEFAULT_FLOORS: dict[SignalName, float] = {"cpu": 0.1, "lag": 500.0, "memory": 256 * 2**20, "composite": 0.0}
UNITS: dict[SignalName, str] = {"cpu": "cores", "lag": "messages", "memory": "bytes", "composite": ""}

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def _dns1123_label(value: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError("must be a DNS-1123 label: lower-case letters, digits and '-', at most 63")
    return value


def _dns1123_subdomain(value: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise ValueError("must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.'")
    return value


def _strict_bool(value: Any) -> bool:
    """Accept true/false/1/0 only: a typo in REBALANCER_DRY_RUN must not be guessed at."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0"):
        return False
    raise ValueError("must be true or false (or 1 / 0)")


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110)


def _header_name(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        raise ValueError("must be an HTTP header name")
    if value.lower() in ("authorization", "host", "content-length", "content-type"):
        raise ValueError(f"{value} is set by the function (use the metrics_* credential fields for Authorization)")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
PositiveDuration = Annotated[Duration, Field(gt=timedelta(0))]
Dns1123Label = Annotated[str, BeforeValidator(_dns1123_label)]
Dns1123Subdomain = Annotated[str, BeforeValidator(_dns1123_subdomain)]
StrictBool = Annotated[bool, BeforeValidator(_strict_bool)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalSpec(_Strict):
    """One signal of a target: how skew is judged, and the per-pod query.

    ``mode: cv`` (the default) acts when the coefficient of variation exceeds ``threshold``.
    ``mode: hpa`` (cpu only) follows PostHog's pod-rebalancer: hot pods are the ``top_k``
    busiest above the HorizontalPodAutoscaler's target utilisation x ``tolerance`` x the
    average CPU request; it acts when moving them and the ``top_k`` idlest would improve the
    hot pods' average by more than the target's ``min_improvement``."""

    mode: policy.Mode = "cv"
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

    @model_validator(mode="after")
    def _threshold_matches_mode(self) -> SignalSpec:
        if self.mode == "cv" and self.threshold is None:
            raise ValueError("threshold: required in cv mode (the coefficient of variation to exceed)")
        if self.mode == "hpa" and self.threshold is not None:
            raise ValueError("threshold: not used in hpa mode, which derives it from the HPA (remove it, or set tolerance)")
        return self

    @model_validator(mode="after")
    def _inflow_needs_partitions(self) -> SignalSpec:
        if self.inflow is not None and self.partitions is None:
            raise ValueError("inflow: tells a hot partition from a slow consumer, so it needs partitions (the per-partition lag)")
        return self

    @field_validator("query", "partitions", "inflow")
    @classmethod
    def _known_placeholders(cls, query: str | None) -> str | None:
        if query is not None:
            promql.check_template(query)
        return query


class CompositeSpec(_Strict):
    """A composite load: each pod's score is the weighted sum of its signals' values, each
    normalised by that signal's mean over the pods; the CV is taken over the scores."""

    weights: dict[MeasuredSignal, Annotated[float, Field(gt=0.0)]] = Field(min_length=2)
    threshold: float = Field(gt=0.0, description="the CV of the scores to exceed")


class WindowSpec(_Strict):
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


class Target(_Strict):
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
    selection: policy.Selection = "rotate_outliers"
    max_pods_per_action: int = Field(default=2, ge=1)
    max_missing_fraction: Fraction = 0.2
    min_improvement: Fraction = 0.1
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
        if self.max_backoff < self.backoff:
            raise ValueError("max_backoff: must be at least backoff (the first wait)")
        return self

    @model_validator(mode="after")
    def _default_container(self) -> Target:
        if self.container is None:
            if not _DNS1123_LABEL.match(self.deployment) or len(self.deployment) > 63:
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
            return 0.0  # its components' floors apply instead (rebalancer.composite)
        spec = self.signals[signal]
        return DEFAULT_FLOORS[signal] if spec.floor is None else spec.floor

    def threshold(self, signal: SignalName) -> float:
        if signal == "composite":
            return self.composite.threshold if self.composite else 0.0
        return self.signals[signal].threshold or 0.0

    def rules(self, signal: SignalName) -> policy.Rules:
        """The decision rules for one of this target's signals."""
        spec = self.signals[signal] if signal != "composite" else SignalSpec(threshold=self.threshold(signal))
        return policy.Rules(
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
        )

    def _render(self, template: str) -> str:
        return promql.render(template, namespace=self.namespace, deployment=self.deployment,
                             container=self.container or self.deployment, window=self.window)

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


class Settings(BaseSettings):
    """Everything the function reads. Field ``x`` comes from env ``REBALANCER_X`` or the file."""

    model_config = SettingsConfigDict(env_prefix="REBALANCER_", extra="forbid", frozen=True)

    metrics_url: AnyHttpUrl
    dry_run: StrictBool = True
    auth_token: SecretStr | None = None
    allow_unauthenticated: StrictBool = False
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_alerts: int = Field(default=100, gt=0)
    metrics_timeout: PositiveDuration = timedelta(seconds=5)
    # Credentials for the metrics backend (vmauth, hosted Prometheus, Google Managed Prometheus):
    # at most one of a bearer token (env, or a file read at each request), basic auth, or the
    # function's Google identity; plus headers for every request (a tenant: X-Scope-OrgID).
    metrics_bearer_token: SecretStr | None = None
    metrics_bearer_token_file: Path | None = None
    metrics_basic_auth_username: str | None = None
    metrics_basic_auth_password: SecretStr | None = None
    metrics_google_auth: StrictBool = False
    metrics_headers: dict[Annotated[str, BeforeValidator(_header_name)], str] = Field(default_factory=dict)
    # Push the function's own metrics after each invocation (scale-to-zero leaves nothing to scrape),
    # through the same credentials and headers.
    metrics_push_url: AnyHttpUrl | None = None
    metrics_push_format: Literal["victoriametrics", "pushgateway"] = "victoriametrics"
    kube_timeout: PositiveDuration = timedelta(seconds=5)
    state_configmap: Dns1123Subdomain = "pod-rebalancer-state"
    history_limit: int = Field(default=20, ge=1, le=200)  # entries kept per target in the state ConfigMap
    log_format: Literal["json", "text"] = "json"
    gcp_project: str | None = None  # makes each log line's trace projects/P/traces/T, which Cloud Trace links
    targets: list[Target] = Field(min_length=1)
    # How to reach Kubernetes: in-cluster, else KUBECONFIG, else GKE (endpoint + CA from Terraform).
    kubeconfig: Path | None = Field(default=None, validation_alias="KUBECONFIG")
    kubernetes_service_host: str | None = Field(default=None, validation_alias="KUBERNETES_SERVICE_HOST")
    gke_endpoint: str | None = None
    gke_ca_cert: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init kwargs; env must override them, so env comes first.
        return (env_settings, init_settings)

    @field_validator("auth_token")
    @classmethod
    def _non_empty_token(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().strip():
            return None  # an empty variable means "not configured", which the auth check refuses
        return token

    @model_validator(mode="after")
    def _unique_targets(self) -> Settings:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("targets: names must be unique")
        deployments = [(t.namespace, t.deployment) for t in self.targets]
        if len(set(deployments)) != len(deployments):
            raise ValueError("targets: two targets name the same namespace/deployment")
        return self

    @model_validator(mode="after")
    def _one_metrics_credential(self) -> Settings:
        chosen = [name for name, present in (
            ("metrics_bearer_token", self.metrics_bearer_token is not None),
            ("metrics_bearer_token_file", self.metrics_bearer_token_file is not None),
            ("metrics_basic_auth_username", self.metrics_basic_auth_username is not None),
            ("metrics_google_auth", self.metrics_google_auth)) if present]
        if len(chosen) > 1:
            raise ValueError(f"metrics credentials: set one of {', '.join(chosen)}, not several")
        if (self.metrics_basic_auth_username is None) != (self.metrics_basic_auth_password is None):
            raise ValueError("metrics_basic_auth_username and metrics_basic_auth_password: set both or neither")
        if self.metrics_bearer_token_file is not None and not self.metrics_bearer_token_file.is_file():
            raise ValueError(f"metrics_bearer_token_file: {self.metrics_bearer_token_file} is not a readable file")
        return self

    @model_validator(mode="after")
    def _gke_pair(self) -> Settings:
        if bool(self.gke_endpoint) != bool(self.gke_ca_cert):
            raise ValueError("gke_endpoint and gke_ca_cert: set both (REBALANCER_GKE_ENDPOINT, "
                             "REBALANCER_GKE_CA_CERT) or neither")
        return self

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def target_for_deployment(self, namespace: str, deployment: str) -> Target | None:
        return next(
            (t for t in self.targets if t.namespace == namespace and t.deployment == deployment), None
        )


def environment_variables() -> set[str]:
    """Every environment variable the function reads (Terraform must set none other)."""
    names = {"REBALANCER_CONFIG"}
    for name, field in Settings.model_fields.items():
        names.add(field.validation_alias if isinstance(field.validation_alias, str) else f"REBALANCER_{name.upper()}")
    return names


# Never in the configuration file (which Terraform ships inside the source archive): env only.
SECRETS = ("auth_token", "metrics_bearer_token", "metrics_basic_auth_password")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for secret in SECRETS:
        if secret in loaded:
            raise ConfigError(f"config file {path}: {secret} is a secret; set it with env REBALANCER_{secret.upper()}")
    return loaded


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the field; input values are left out on purpose."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        parts = [str(part) for part in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if parts and parts[-1] == "[key]":  # pydantic's marker for a bad dictionary key
            parts.pop()
            message = f"not an allowed key: {message}"
        location = ".".join(parts) or "(top level)"
        lines.append(f"  {location}: {message}")
    return "\n".join(lines)


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration, the one way the function and its CLIs do it: the YAML
    file (``path``, else env REBALANCER_CONFIG) with its own checks, ``overrides`` on top of the
    file (a CLI's flags), and REBALANCER_* env over both. Raises ConfigError with a readable message."""
    config_path = str(path) if path is not None else os.environ.get("REBALANCER_CONFIG")
    file_values = {**(_read_file(Path(config_path)) if config_path else {}), **overrides}
    source = f"config file {config_path} and REBALANCER_* env" if config_path else "REBALANCER_* env"
    try:
        return Settings(**file_values)
    except ValidationError as e:
        hint = "" if config_path else "\n  (REBALANCER_CONFIG is not set: no config file was read)"
        raise ConfigError(f"invalid configuration ({source}):\n{describe_validation_error(e)}{hint}") from e
