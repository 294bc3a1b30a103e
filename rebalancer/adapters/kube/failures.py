"""The client's failures, translated into the function's own errors at this edge."""

from __future__ import annotations

import json
from typing import Any

import google.auth.exceptions
import urllib3
from kubernetes.client.exceptions import ApiException

from rebalancer.errors import (
    KubeConflictError,
    KubeError,
    KubeForbiddenError,
    KubeNotFoundError,
    KubeUnavailableError,
)


def status_message(error: ApiException) -> tuple[str, str]:
    """The ``message`` and ``reason`` of a Kubernetes Status body, when there is one."""
    try:
        body = json.loads(error.body or "")
        return str(body.get("message") or error.reason or ""), str(body.get("reason") or "")
    except (ValueError, AttributeError):
        return str(error.reason or ""), ""


def _causes(error: ApiException) -> list[dict[str, Any]]:
    """The ``details.causes`` of a Status body; none when the body is not a well-formed Status."""
    try:
        causes = (json.loads(error.body or "").get("details") or {}).get("causes") or []
    except (ValueError, AttributeError):
        return []
    return causes if isinstance(causes, list) and all(isinstance(c, dict) for c in causes) else []


def status_causes(error: ApiException) -> str:
    """The ``details.causes`` messages of a Status body (the PDB's own words on a 429)."""
    return "; ".join(str(c["message"]) for c in _causes(error) if c.get("message"))


def from_a_disruption_budget(error: ApiException) -> bool:
    """Whether a 429 is a PodDisruptionBudget's refusal: the eviction subresource gives every one
    a ``DisruptionBudget`` cause. A 429 without it is the API server throttling (API Priority and
    Fairness, whose body is not even a Status) or an admission webhook's denial: not a budget."""
    return any(c.get("reason") == "DisruptionBudget" for c in _causes(error))


def translate(error: Exception, doing: str) -> Exception:
    """Turn a client-library failure into one of our errors; ``doing`` says what was tried."""
    if isinstance(error, ApiException):
        message, reason = status_message(error)
        status = error.status or 0
        text = f"Kubernetes API refused to {doing}: HTTP {status} {reason}: {message}".rstrip(": ")
        if status == 404:
            return KubeNotFoundError(text, status=status, reason=reason)
        if status == 409:
            return KubeConflictError(text, status=status, reason=reason)
        if status in (401, 403):
            return KubeForbiddenError(text, status=status, reason=reason)
        if status == 429 or status >= 500 or status == 0:
            return KubeUnavailableError(text)
        return KubeError(text, status=status, reason=reason)
    if isinstance(error, google.auth.exceptions.GoogleAuthError):
        return KubeUnavailableError(f"cannot obtain a Google access token to {doing}: {type(error).__name__}")
    return KubeUnavailableError(f"Kubernetes API unreachable while trying to {doing}: {_what_broke(error)}")


def _what_broke(error: Exception) -> str:
    """The connection failure in words an operator can act on, with the client's own name for it."""
    cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason else error
    if isinstance(cause, urllib3.exceptions.TimeoutError):
        said = "no answer within kube_timeout"
    elif isinstance(cause, urllib3.exceptions.ProtocolError):
        said = "the connection broke in the middle of an answer"
    elif isinstance(cause, urllib3.exceptions.NewConnectionError):
        said = "the connection was refused"
    else:
        return type(error).__name__
    return f"{said} ({type(cause).__name__})"


CLIENT_FAILURES = (ApiException, urllib3.exceptions.HTTPError, OSError, google.auth.exceptions.GoogleAuthError)


