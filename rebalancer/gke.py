"""GKE connection mode: reach a cluster's API with the function's own Google identity.

Terraform sets REBALANCER_GKE_ENDPOINT (the control plane's address) and REBALANCER_GKE_CA_CERT
(its CA, base64 PEM as `google_container_cluster` exposes it). The access token comes from
Google application default credentials (on Cloud Run: the function's service account), and is
refreshed before each API request that would otherwise carry a token about to expire. GKE maps
the token to the service account's e-mail, which the Kubernetes RBAC binds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import kubernetes

from rebalancer.errors import ConfigError

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# Refresh this long before expiry, so that a token never expires in flight.
REFRESH_MARGIN = timedelta(minutes=5)
CA_DIR = Path(tempfile.gettempdir()) / "pod-rebalancer"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class GoogleTokenSource:
    """A Google access token, refreshed when it is missing or within the margin of its expiry."""

    def __init__(self, credentials: Any, clock: Callable[[], datetime] = _utcnow,
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


def ca_file(ca_certificate: str, directory: Path = CA_DIR) -> Path:
    """Write the cluster CA once (named by its content) and return its path."""
    text = ca_certificate.strip()
    if "BEGIN CERTIFICATE" not in text:
        try:
            text = base64.b64decode(text, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as e:
            raise ConfigError("REBALANCER_GKE_CA_CERT is neither a PEM certificate nor base64 of one") from e
    if "BEGIN CERTIFICATE" not in text:
        raise ConfigError("REBALANCER_GKE_CA_CERT does not hold a PEM certificate")
    text = text.strip() + "\n"  # the same certificate, however it was encoded, is the same file
    path = directory / f"gke-ca-{hashlib.sha256(text.encode()).hexdigest()[:16]}.pem"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)  # atomic: a concurrent instance never reads half a file
    return path


def gke_configuration(endpoint: str, ca_certificate: str, credentials: Any = None,
                      ca_directory: Path = CA_DIR, clock: Callable[[], datetime] = _utcnow) -> kubernetes.client.Configuration:
    """A client configuration for the cluster at ``endpoint``, authenticated as this identity."""
    if credentials is None:
        try:
            credentials, _ = google.auth.default(scopes=list(SCOPES))
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise ConfigError(
                "GKE mode needs Google application default credentials (the function's service account on "
                f"Cloud Run, or GOOGLE_APPLICATION_CREDENTIALS): {e}"
            ) from e
    source = GoogleTokenSource(credentials, clock=clock)
    configuration = kubernetes.client.Configuration()
    configuration.host = endpoint if endpoint.startswith("https://") else f"https://{endpoint}"
    configuration.ssl_ca_cert = str(ca_file(ca_certificate, ca_directory))
    configuration.verify_ssl = True
    configuration.api_key = {"BearerToken": ""}  # present, so the client sends it; the hook fills it
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    # The client declares the hook as None, yet calls it before every request when it is set.
    configuration.refresh_api_key_hook = lambda c: c.api_key.__setitem__("BearerToken", source.token())  # type: ignore[assignment]
    return configuration
