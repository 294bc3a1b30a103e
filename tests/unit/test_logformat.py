"""The function's log lines are google-cloud-logging's StructuredLogHandler lines, field for field,
plus the time, and the trace with its project: the same records go through both."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timezone

import flask
import pytest
from google.cloud.logging.handlers import StructuredLogHandler

from rebalancer.logformat import CloudLoggingFormatter

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
XCLOUD = "105445aa7843bc8bf206b12000100000/1;o=1"


def lines_from_both(emit, project: str | None = None) -> tuple[dict, dict]:
    """Run ``emit(logger)`` once through the reference handler and once through ours."""
    out = []
    for handler in (StructuredLogHandler(stream=io.StringIO(), project_id=project), logging.StreamHandler(io.StringIO())):
        if not isinstance(handler, StructuredLogHandler):
            handler.setFormatter(CloudLoggingFormatter(project))
        logger = logging.getLogger("rebalancer-logformat-test")
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        emit(logger)
        out.append(json.loads(handler.stream.getvalue().splitlines()[-1]))
    return out[0], out[1]


def same_apart_from_time(reference: dict, ours: dict) -> None:
    moment = datetime.fromisoformat(ours.pop("time").replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - moment).total_seconds()) < 60
    assert ours == reference
    assert list(ours) == list(reference)  # the same order too: the message before the special fields


def test_a_plain_line_outside_a_request():
    reference, ours = lines_from_both(lambda log: log.info("pod-rebalancer ready (dry-run) for %d target(s)", 2))
    assert ours["message"] == "pod-rebalancer ready (dry-run) for 2 target(s)" and ours["httpRequest"] == {}
    same_apart_from_time(reference, ours)


def test_json_fields_become_the_payload_and_cannot_set_special_fields():
    fields = {"event": "decision", "target": "consumer", "verified": {"value": 0.8}, "severity": "DEBUG"}
    reference, ours = lines_from_both(lambda log: log.warning("consumer/cpu: skipped", extra={"json_fields": fields}))
    assert ours["event"] == "decision" and ours["verified"] == {"value": 0.8} and ours["severity"] == "WARNING"
    same_apart_from_time(reference, ours)


def test_an_exception_is_in_the_message():
    def emit(log):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("unhandled error while answering a request")

    reference, ours = lines_from_both(emit)
    assert ours["severity"] == "ERROR" and "ValueError: boom" in ours["message"]
    same_apart_from_time(reference, ours)


@pytest.mark.parametrize("headers", [{"traceparent": TRACEPARENT}, {"X-Cloud-Trace-Context": XCLOUD}, {}],
                         ids=["traceparent", "x-cloud-trace-context", "none"])
@pytest.mark.parametrize("project", ["my-project", None])
def test_inside_a_request_the_http_request_and_the_trace_are_filled_in(headers, project):
    app = flask.Flask("logformat-test")
    with app.test_request_context("/rebalance", method="POST", headers={"User-Agent": "Alertmanager/0.25.0", **headers}):
        reference, ours = lines_from_both(lambda log: log.info("answered"), project)
    assert ours["httpRequest"]["requestMethod"] == "POST" and ours["httpRequest"]["userAgent"] == "Alertmanager/0.25.0"
    if headers and project:
        assert ours["logging.googleapis.com/trace"].startswith("projects/my-project/traces/")
    same_apart_from_time(reference, ours)
