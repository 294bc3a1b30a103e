"""The configuration's vocabulary: signal names, floors and units, and the validated field
types (durations, DNS names, strict booleans) the targets and the settings are built from."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

from rebalancer.core.durations import parse_duration

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

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def _dns1123_label(value: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not DNS1123_LABEL.match(value):
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


def header_name(value: Any) -> str:
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



class Strict(BaseModel):
    """A part of the configuration: unknown keys are refused (a typo is never ignored), values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
