"""How the metrics adapter ends when the backend misbehaves. A real VictoriaMetrics cannot be made
to time out or answer garbage on demand, so a small loopback server plays a broken proxy in
front of it; the verification tests themselves always use the real servers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rebalancer.adapters.metrics_source import MetricsSource
from rebalancer.errors import MetricsQueryError, MetricsUnavailableError

NOW = datetime.now(timezone.utc)


def test_slower_than_the_timeout_is_unavailable(misbehaving_backend):
    behaviour, url = misbehaving_backend, misbehaving_backend.url
    behaviour.delay, behaviour.body = 1.0, b'{"status":"success","data":{"resultType":"vector","result":[]}}'
    with pytest.raises(MetricsUnavailableError, match=r"did not answer within 0\.2s"):
        MetricsSource(url, timeout_seconds=0.2).query_by_pod("up", NOW)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_unavailable(misbehaving_backend, status):
    behaviour, url = misbehaving_backend, misbehaving_backend.url
    behaviour.status, behaviour.body = status, b"<html>bad gateway</html>"
    with pytest.raises(MetricsUnavailableError, match=f"HTTP {status}"):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


@pytest.mark.parametrize(
    "body",
    [b"<html>login</html>", b'{"status":"error"}', b"[]", b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1]}]}}'],
    ids=["html", "error-without-code", "list", "malformed-sample"],
)
def test_garbage_answers_are_unavailable(misbehaving_backend, body):
    behaviour, url = misbehaving_backend, misbehaving_backend.url
    behaviour.body = body
    with pytest.raises(MetricsUnavailableError):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


def test_rejected_query_is_a_query_error_with_the_backends_words(misbehaving_backend):
    behaviour, url = misbehaving_backend, misbehaving_backend.url
    behaviour.status, behaviour.body = 422, b'{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}'
    with pytest.raises(MetricsQueryError, match="many-to-many matching not allowed"):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


def test_a_matrix_result_is_refused(misbehaving_backend):
    behaviour, url = misbehaving_backend, misbehaving_backend.url
    behaviour.body = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
    with pytest.raises(MetricsQueryError, match="not an instant vector"):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


def test_non_finite_values_reach_the_decision_core_which_refuses_them(misbehaving_backend):
    behaviour, url = misbehaving_backend, misbehaving_backend.url
    behaviour.body = (b'{"status":"success","data":{"resultType":"vector","result":['
                      b'{"metric":{"pod":"a"},"value":[1,"NaN"]},{"metric":{"pod":"b"},"value":[1,"+Inf"]},'
                      b'{"metric":{},"value":[1,"3"]}]}}')
    result = MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)
    assert str(result.values["a"]) == "nan" and result.values["b"] == float("inf")
    assert result.series_without_pod == 1
