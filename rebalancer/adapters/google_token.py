"""A Google access token from application default credentials, refreshed before it expires.

Both the GKE connection mode and Google Managed Prometheus take the function's own Google
identity; neither may send a token that expires in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import google.auth.transport.requests

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# Refresh this long before expiry, so that a token never expires in flight.
REFRESH_MARGIN = timedelta(minutes=5)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class GoogleTokenSource:
    """A Google access token, refreshed when it is missing or within the margin of its expiry."""

    def __init__(self, credentials: Any, clock: Callable[[], datetime] = utcnow,
                 request_factory: Callable[[], Any] = google.auth.transport.requests.Request) -> None:
        self.credentials, self.clock, self.request_factory = credentials, clock, request_factory
        self._lock = threading.Lock()

    def _expiry(self) -> datetime | None:
        expiry: datetime | None = self.credentials.expiry  # google-auth keeps it naive, in UTC
        return expiry.replace(tzinfo=timezone.utc) if expiry is not None and expiry.tzinfo is None else expiry

    def token(self) -> str:
        with self._lock:
            expiry = self._expiry()
            if not self.credentials.token or (expiry is not None and expiry - self.clock() < REFRESH_MARGIN):
                self.credentials.refresh(self.request_factory())
            token: str = self.credentials.token
            return token
