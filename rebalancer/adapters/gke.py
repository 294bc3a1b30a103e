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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import google.auth
import google.auth.exceptions
import kubernetes

from rebalancer.adapters.google_token import SCOPES, GoogleTokenSource, utcnow
from rebalancer.errors import ConfigError

CA_DIR = Path(tempfile.gettempdir()) / "pod-rebalancer"


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
                      ca_directory: Path = CA_DIR, clock: Callable[[], datetime] = utcnow) -> kubernetes.client.Configuration:
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
