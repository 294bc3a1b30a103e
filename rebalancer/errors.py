"""Our own error types. Adapters translate library errors into these at their edge.

Two families, because they ask different things of the caller:

* ``TemporaryError``: the condition could not be verified right now (a backend unreachable,
  slow or failing). The HTTP layer answers 503 so that Alertmanager retries.
* ``PermanentError``: retrying the same request cannot help (bad input, refused target,
  a query the backend rejects). The HTTP layer or the decision record says why.
"""

from __future__ import annotations


class RebalancerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(RebalancerError):
    """The configuration is invalid; raised at start-up, never mid-request."""


class TemporaryError(RebalancerError):
    """Verification is impossible right now; the request may succeed when retried."""

    backend = "unknown"  # which upstream failed, for metrics and the answer


class PermanentError(RebalancerError):
    """Retrying the same request cannot succeed."""


class BadRequestError(PermanentError):
    """The request body is malformed (HTTP 400)."""


class PayloadTooLargeError(PermanentError):
    """The request body exceeds the configured limit (HTTP 413)."""


class UnauthorizedError(PermanentError):
    """No valid bearer token, or none configured (HTTP 401); nothing upstream is asked."""


class MetricsUnavailableError(TemporaryError):
    """The metrics backend could not be reached, timed out, answered 5xx or garbage."""

    backend = "metrics"


class RebalanceUnderWayError(MetricsUnavailableError):
    """The metrics show one partition under two pods: a consumer-group rebalance is under way (the
    old owner's series not yet stale), so lag cannot be attributed now; it can be in seconds."""


class MetricsQueryError(PermanentError):
    """The metrics backend rejected the query (4xx) or its result cannot be attributed to pods."""


class StateError(PermanentError):
    """The cooldown state annotations exist but cannot be read; acting is refused."""


class KubeUnavailableError(TemporaryError):
    """The Kubernetes API could not be reached, timed out or answered 5xx/429."""

    backend = "kubernetes"


class KubeError(PermanentError):
    """The Kubernetes API answered with a definite refusal (404, 403, 409, 422, ...)."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFoundError(KubeError):
    """404: the object does not exist."""


class KubeConflictError(KubeError):
    """409: AlreadyExists on create, or a resourceVersion/UID precondition that no longer holds."""


class KubeForbiddenError(KubeError):
    """401/403: the function's identity may not do this (RBAC)."""


class KafkaUnavailableError(TemporaryError):
    """The brokers could not be reached, or did not answer within the timeout."""

    backend = "kafka"


class KafkaAccessError(PermanentError):
    """The brokers refused us: authentication (a wrong password), TLS (an unknown CA), an ACL, or a
    topic that does not exist. Retrying cannot help until the configuration or the cluster changes."""
