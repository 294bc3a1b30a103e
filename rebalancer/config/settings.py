"""Configuration: a YAML file named by ``REBALANCER_CONFIG``, overridden by ``REBALANCER_*`` env.

This module is the only reader of ``os.environ``. Everything is validated once, at start-up;
an invalid value stops the process with a message naming the field (and never its value,
which could be a secret).
"""


from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AnyHttpUrl,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rebalancer.config.fields import Dns1123Subdomain, PositiveDuration, StrictBool, header_name
from rebalancer.config.targets import Target
from rebalancer.errors import ConfigError


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
    metrics_headers: dict[Annotated[str, BeforeValidator(header_name)], str] = Field(default_factory=dict)
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
    """Every environment variable the function reads by itself (Terraform must set none other),
    beside those a configuration names for Kafka passwords (``sasl.password_env``, which
    Terraform's ``kafka_password_env`` sets)."""
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
