"""``signals.lag.kafka``: where the brokers are, which group the target's pods form, and how to
reach them (TLS, SASL). The password is never part of the file: it is named, by an environment
variable or a file, and read when a connection needs it (a file again whenever it changes)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from rebalancer.config.fields import PositiveDuration, Strict
from rebalancer.core import promql

# Kafka's own rule for a topic name (org.apache.kafka.common.internals.Topic).
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _topic(name: str) -> str:
    if not _TOPIC.match(name) or name in (".", ".."):
        raise ValueError(f"{name!r} is not a Kafka topic name (letters, digits, '.', '_' and '-', at most 249)")
    return name


def _readable_file(path: Path) -> Path:
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ValueError(f"{path} is not a readable file")
    return path


ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
TopicName = Annotated[str, AfterValidator(_topic)]


class KafkaTls(Strict):
    """TLS to the brokers. ``ca_file``: the CA that signed their certificates (else the system's);
    ``cert_file`` and ``key_file``: a client certificate, for brokers that ask for one (mTLS)."""

    ca_file: ReadableFile | None = None
    cert_file: ReadableFile | None = None
    key_file: ReadableFile | None = None

    @model_validator(mode="after")
    def _certificate_pair(self) -> KafkaTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file: a client certificate needs both, or neither")
        return self


class KafkaSasl(Strict):
    """SASL to the brokers: PLAIN or SCRAM. The password comes from ``password_env`` (the name of
    an environment variable) or ``password_file`` (re-read whenever it changes, as a mounted
    Secret is rotated); never from this file."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    username: str = Field(min_length=1)
    password_env: str | None = None
    password_file: ReadableFile | None = None

    @field_validator("password_env")
    @classmethod
    def _set_variable(cls, name: str | None) -> str | None:
        if name is None:
            return None
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        if not os.environ.get(name):
            raise ValueError(f"environment variable {name} is not set (or empty): it must hold the password")
        return name

    @model_validator(mode="after")
    def _one_password_source(self) -> KafkaSasl:
        if (self.password_env is None) == (self.password_file is None):
            raise ValueError("password_env or password_file: set exactly one (the password is never in the file)")
        return self

    def password(self) -> str:
        """The password now: the variable's, or the file's current content without its final newline."""
        if self.password_env is not None:
            return os.environ.get(self.password_env, "")
        assert self.password_file is not None
        return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")


class KafkaSource(Strict):
    """Lag measured at the brokers: ``bootstrap_servers`` (host:port, comma-separated), the
    consumer ``group`` the target's pods form, and how a member maps to a pod: ``client_id`` (its
    client.id is the pod's name) or ``host`` (its address is the pod's IP)."""

    bootstrap_servers: str
    group: str = Field(min_length=1, max_length=255)
    pod_from: Literal["client_id", "host"] = "client_id"
    topics: list[TopicName] | None = Field(default=None, min_length=1)
    timeout: PositiveDuration = timedelta(seconds=5)
    tls: KafkaTls | None = None
    sasl: KafkaSasl | None = None
    # The series the generated alert fires on (the brokers verify, but an alert needs a series).
    alert_query: str = promql.DEFAULT_GROUP_LAG_TEMPLATE

    @field_validator("alert_query")
    @classmethod
    def _known_placeholders(cls, query: str) -> str:
        promql.check_template(query)
        return query

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, servers: str) -> str:
        entries = [s.strip() for s in servers.split(",")]
        for entry in entries:
            match = _HOST_PORT.match(entry)
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise ValueError(f"{entry!r} is not host:port (a comma-separated list, e.g. kafka-0.kafka:9092)")
        return ",".join(entries)

    @field_validator("group")
    @classmethod
    def _printable(cls, group: str) -> str:
        if not group.isprintable() or group != group.strip():
            raise ValueError("a consumer group id without control characters or surrounding spaces")
        return group

    @field_validator("timeout")
    @classmethod
    def _bounded(cls, timeout: timedelta) -> timedelta:
        if timeout > timedelta(minutes=1):
            raise ValueError("at most 1m: when the brokers do not answer in time the function answers 503, and "
                             "Alertmanager retries")
        return timeout

    @property
    def security_protocol(self) -> str:
        return {(False, False): "PLAINTEXT", (True, False): "SSL", (False, True): "SASL_PLAINTEXT",
                (True, True): "SASL_SSL"}[(self.tls is not None, self.sasl is not None)]
