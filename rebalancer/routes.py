"""The HTTP surface of the function: routes, authentication, body limits, status codes.

Order of checks on a POST, each one answering before the next runs: route and method,
bearer token (401, before any upstream call), body size (413), JSON and schema (400). Only
then does a request reach the service, which is where Kubernetes and the metrics backend are
first contacted.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import flask
import pydantic
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rebalancer import alerts, service
from rebalancer.adapters.pushing import push_after
from rebalancer.app import AppState
from rebalancer.config import Settings, describe_validation_error
from rebalancer.errors import BadRequestError, PayloadTooLargeError, UnauthorizedError
from rebalancer.timing import timed_request


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> flask.Response:
    return flask.Response(
        json.dumps(body, allow_nan=False, ensure_ascii=False) + "\n",
        status=status,
        mimetype="application/json",
        headers=headers,
    )


def _rejection(status: int, reason: str, headers: dict[str, str] | None = None) -> flask.Response:
    return _json_response(status, {"outcome": "rejected", "reason": reason, "decisions": []}, headers)


def _check_token(request: flask.Request, settings: Settings) -> None:
    if settings.auth_token is None:
        if settings.allow_unauthenticated:
            return
        raise UnauthorizedError("this function has no REBALANCER_AUTH_TOKEN configured and refuses POSTs")
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise UnauthorizedError("missing or malformed Authorization header: expected 'Bearer <token>'")
    expected = settings.auth_token.get_secret_value().encode()
    # Constant-time comparison, so response timing says nothing about the token.
    if not hmac.compare_digest(presented.strip().encode(), expected):
        raise UnauthorizedError("invalid bearer token")


def _read_json(request: flask.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLargeError(f"body of {request.content_length} bytes exceeds the limit of {limit} bytes")
    body = request.stream.read(limit + 1)  # bounded even without Content-Length (chunked)
    if len(body) > limit:
        raise PayloadTooLargeError(f"body exceeds the limit of {limit} bytes")
    if not body.strip():
        raise BadRequestError("empty body: expected a JSON object")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BadRequestError(f"body is not valid JSON: {str(e)[:200]}") from e


def _validate(model: type[pydantic.BaseModel], payload: Any, what: str) -> Any:
    try:
        return model.model_validate(payload)
    except pydantic.ValidationError as e:
        raise BadRequestError(f"not {what}:\n{describe_validation_error(e)}") from e
    except RecursionError as e:
        raise BadRequestError(f"not {what}: nested too deeply") from e


def _run(state: AppState, plan: alerts.Plan, requested_dry_run: bool | None = None) -> flask.Response:
    outcome = service.handle(
        plan,
        state.deps,
        state.clock(),
        invocation=uuid.uuid4().hex[:16],
        requested_dry_run=requested_dry_run,
    )
    return _json_response(outcome.status, outcome.body)


def _alertmanager(request: flask.Request, state: AppState) -> flask.Response:
    payload = _read_json(request, state.settings.max_body_bytes)
    alert_list = payload.get("alerts") if isinstance(payload, dict) else None
    if isinstance(alert_list, list) and len(alert_list) > state.settings.max_alerts:
        raise BadRequestError(
                f"the notification holds {len(payload['alerts'])} alerts, more than max_alerts "
                f"{state.settings.max_alerts}: set max_alerts in the Alertmanager receiver"
            )
    message = _validate(alerts.WebhookMessage, payload, "an Alertmanager webhook payload (version 4)")
    return _run(state, alerts.plan_alerts(message, state.settings))


def _manual(request: flask.Request, state: AppState) -> flask.Response:
    payload = _read_json(request, state.settings.max_body_bytes)
    run = _validate(alerts.ManualRun, payload, 'a manual run: {"target": ..., "signal": "cpu"|"lag"|"memory", "dry_run": bool}')
    return _run(state, alerts.plan_manual(run, state.settings), requested_dry_run=run.dry_run)


def _approve(request: flask.Request, state: AppState) -> flask.Response:
    identifier = request.path.rstrip("/").removeprefix("/approve/")
    outcome = service.approve(identifier, state.deps, state.clock(), invocation=uuid.uuid4().hex[:16])
    return _json_response(outcome.status, outcome.body)


def _healthz(request: flask.Request, state: AppState) -> flask.Response:
    return _json_response(200, {"status": "ok", "dry_run": state.settings.dry_run})


def _metrics(request: flask.Request, state: AppState) -> flask.Response:
    return flask.Response(generate_latest(state.registry), status=200, content_type=CONTENT_TYPE_LATEST)


def _log_rejection(request: flask.Request, route: str, response: flask.Response) -> None:
    """A refused request is invisible to its sender's operator otherwise (a wrong token in
    Alertmanager's receiver shows only as its own retries). The cause is our own message,
    which never carries the token or the body."""
    body = response.get_json(silent=True) or {}
    cause = str(body.get("reason", ""))[:500]
    logging.getLogger("rebalancer").warning(
        f"rejected {request.method} {request.path[:200]}: {response.status_code} {cause}",
        extra={"json_fields": {"event": "rejected", "status": response.status_code, "route": route,
                               "method": request.method, "cause": cause}})


Handler = Callable[[flask.Request, AppState], flask.Response]
NOT_AN_INVOCATION = frozenset({400, 401, 404, 405, 413})
ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"POST": _alertmanager},
    "/alertmanager": {"POST": _alertmanager},
    "/rebalance": {"POST": _manual},
    "/approve/<id>": {"POST": _approve},
    "/healthz": {"GET": _healthz},
    "/metrics": {"GET": _metrics},
}


def respond(request: flask.Request, state: AppState) -> flask.Response:
    """Dispatch one request; every answer is JSON except /metrics, and says where its time went
    in a ``Server-Timing`` header."""
    with timed_request() as timing:
        response = _dispatch(request, state)
        # After the request's own counters, so the push includes them; never for a request refused
        # before it reached the service, so that unauthenticated POSTs cannot make the function push.
        if request.method == "POST" and response.status_code not in NOT_AN_INVOCATION:
            push_after(state.pusher, state.registry, state.deps.telemetry.push_errors.inc)
        response.headers["Server-Timing"] = timing.server_timing()
    return response


def _dispatch(request: flask.Request, state: AppState) -> flask.Response:
    started = time.perf_counter()
    path = request.path.rstrip("/") or "/"
    if path.startswith("/approve/") and len(path) > len("/approve/"):
        path = "/approve/<id>"
    methods = ROUTES.get(path)
    route = path if methods else "unknown"
    try:
        if methods is None:
            response = _rejection(404, f"no route {path}: use POST /, /alertmanager, /rebalance, /approve/<id>, "
                                  "GET /healthz, /metrics")
        elif request.method not in methods:
            response = _rejection(405, f"{path} takes {', '.join(methods)}", {"Allow": ", ".join(methods)})
        else:
            if request.method == "POST":
                _check_token(request, state.settings)
            response = methods[request.method](request, state)
    except UnauthorizedError as e:
        response = _rejection(401, str(e), {"WWW-Authenticate": 'Bearer realm="pod-rebalancer"'})
    except PayloadTooLargeError as e:
        response = _rejection(413, str(e))
    except BadRequestError as e:
        response = _rejection(400, str(e))
    except Exception:  # never leak internals; the log has the traceback
        logging.getLogger("rebalancer").exception("unhandled error while answering a request")
        response = _rejection(500, "internal error; see the function's log")
    if 400 <= response.status_code < 500:
        _log_rejection(request, route, response)
    telemetry = state.deps.telemetry
    telemetry.requests.labels(route, str(response.status_code)).inc()
    telemetry.request_seconds.labels(route).observe(time.perf_counter() - started)
    return response
