"""The HTTP session the metrics adapter talks through, with the configured credentials.

vmauth-fronted VictoriaMetrics and hosted Prometheus take a bearer token or basic auth, and a
multi-tenant one a tenant header; Google Managed Prometheus takes a Google access token of the
function's own identity, refreshed before it expires. No credential is ever logged, put in an
answer or in a metric: they live only in this session's hooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import google.auth
import google.auth.exceptions
import requests
import requests.auth

from rebalancer.adapters.google_token import GoogleTokenSource
from rebalancer.config import Settings
from rebalancer.errors import ConfigError, MetricsQueryError

# Reading monitoring data is all the function does with Google Managed Prometheus.
MONITORING_SCOPES = ("https://www.googleapis.com/auth/monitoring.read",)


class Bearer(requests.auth.AuthBase):
    """``Authorization: Bearer <token>``, the token from a callable (fixed, a file, Google)."""

    def __init__(self, token: Any) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request


def token_file_reader(path: Path) -> Any:
    """The token in ``path``, read at each request: a rotated Secret needs no restart."""

    def read() -> str:
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise MetricsQueryError(f"cannot read metrics_bearer_token_file {path}: {e.strerror}") from e
        if not token:
            raise MetricsQueryError(f"metrics_bearer_token_file {path} is empty")
        return token

    return read


def google_token(credentials: Any = None) -> Any:
    if credentials is None:
        try:
            credentials, _ = google.auth.default(scopes=list(MONITORING_SCOPES))
        except google.auth.exceptions.DefaultCredentialsError as e:
            raise ConfigError("metrics_google_auth needs Google application default credentials (the function's "
                              f"service account on Cloud Run, or GOOGLE_APPLICATION_CREDENTIALS): {e}") from e
    return GoogleTokenSource(credentials).token


def metrics_session(settings: Settings, google_credentials: Any = None) -> requests.Session:
    """A session carrying the configured credentials and headers on every request."""
    session = requests.Session()
    session.headers.update(settings.metrics_headers)
    if settings.metrics_bearer_token is not None:
        secret = settings.metrics_bearer_token
        session.auth = Bearer(secret.get_secret_value)
    elif settings.metrics_bearer_token_file is not None:
        session.auth = Bearer(token_file_reader(settings.metrics_bearer_token_file))
    elif settings.metrics_basic_auth_username is not None and settings.metrics_basic_auth_password is not None:
        session.auth = requests.auth.HTTPBasicAuth(settings.metrics_basic_auth_username,
                                                   settings.metrics_basic_auth_password.get_secret_value())
    elif settings.metrics_google_auth:
        session.auth = Bearer(google_token(google_credentials))
    return session
