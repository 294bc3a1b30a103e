"""Instants as the function writes and reads them: RFC 3339 in UTC with a ``Z``, as Kubernetes
writes its own times. One format for the state annotations, the answer, Events and reasons."""

from __future__ import annotations

from datetime import datetime, timezone


def stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_stamp(text: str) -> datetime:
    """Inverse of ``stamp``; also takes an explicit offset. Raises ValueError."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
