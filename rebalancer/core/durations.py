"""Durations written the way Prometheus writes them (``30s``, ``5m``, ``1h30m``).

Config values such as ``window`` end up inside PromQL range selectors, so we accept exactly
the syntax PromQL accepts (units from largest to smallest, each at most once) and render a
timedelta back into it. Pure: no I/O.
"""

from __future__ import annotations

import re
from datetime import timedelta

# Largest unit first: Prometheus requires this order in a compound duration.
_UNITS_MS: tuple[tuple[str, int], ...] = (
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
)
_DURATION_RE = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?"
    r"(?:(?P<m>\d+)m(?!s))?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)


def parse_duration(text: str) -> timedelta:
    """Parse ``'5m'``, ``'1h30m'``, ``'250ms'``; raise ValueError naming the bad text."""
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string like '5m', got {type(text).__name__}")
    match = _DURATION_RE.match(text.strip())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"invalid duration {text!r}: use Prometheus syntax, e.g. '30s', '5m', '1h30m'"
        )
    total_ms = sum(int(value) * dict(_UNITS_MS)[unit] for unit, value in match.groupdict().items() if value)
    return timedelta(milliseconds=total_ms)


def format_duration(delta: timedelta) -> str:
    """Render a positive timedelta in PromQL syntax, e.g. ``timedelta(minutes=90) -> '1h30m'``."""
    total_ms = round(delta.total_seconds() * 1000)
    if total_ms <= 0:
        raise ValueError(f"duration must be positive, got {delta}")
    parts = []
    for unit, size in _UNITS_MS:
        count, total_ms = divmod(total_ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
