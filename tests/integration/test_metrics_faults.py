"""How the metrics adapter ends when the backend misbehaves. A real VictoriaMetrics cannot be made
to time out or answer garbage on demand, so a small loopback server plays a broken proxy in
front of it; the verification tests themselves always use the real servers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rebalancer.errors import MetricsQueryError, MetricsUnavailableError
from rebalancer.metrics_source import MetricsSource


class Misbehaving:
    def __init__(self) -> None:
        self.status, self.body, self.delay = 200, b"", 0.0


@pytest.fixture
def broken_backend() -> Iterator[tuple[Misbehaving, str]]:
    behaviour = Misbehaving()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(behaviour.delay)
            self.send_response(behaviour.status)
            self.send_header("Content-Length", str(len(behaviour.body)))
            self.end_headers()
            self.wfile.write(behaviour.body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield behaviour, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


NOW = datetime.now(timezone.utc)


def test_slower_than_the_timeout_is_unavailable(broken_backend):
    behaviour, url = broken_backend
    behaviour.delay, behaviour.body = 1.0, b'{"status":"success","data":{"resultType":"vector","result":[]}}'
    with pytest.raises(MetricsUnavailableError, match=r"did not answer within 0\.2s"):
        MetricsSource(url, timeout_seconds=0.2).query_by_pod("up", NOW)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_unavailable(broken_backend, status):
    behaviour, url = broken_backend
    behaviour.status, behaviour.body = status, b"<html>bad gateway</html>"
    with pytest.raises(MetricsUnavailableError, match=f"HTTP {status}"):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


@pytest.mark.parametrize(
    "body",
    [b"<html>login</html>", b'{"status":"error"}', b"[]", b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1]}]}}'],
    ids=["html", "error-without-code", "list", "malformed-sample"],
)
def test_garbage_answers_are_unavailable(broken_backend, body):
    behaviour, url = broken_backend
    behaviour.body = body
    with pytest.raises(MetricsUnavailableError):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


def test_rejected_query_is_a_query_error_with_the_backends_words(broken_backend):
    behaviour, url = broken_backend
    behaviour.status, behaviour.body = 422, b'{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}'
    with pytest.raises(MetricsQueryError, match="many-to-many matching not allowed"):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


def test_a_matrix_result_is_refused(broken_backend):
    behaviour, url = broken_backend
    behaviour.body = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
    with pytest.raises(MetricsQueryError, match="not an instant vector"):
        MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)


def test_non_finite_values_reach_the_decision_core_which_refuses_them(broken_backend):
    behaviour, url = broken_backend
    behaviour.body = (b'{"status":"success","data":{"resultType":"vector","result":['
                      b'{"metric":{"pod":"a"},"value":[1,"NaN"]},{"metric":{"pod":"b"},"value":[1,"+Inf"]},'
                      b'{"metric":{},"value":[1,"3"]}]}}')
    result = MetricsSource(url, timeout_seconds=2).query_by_pod("up", NOW)
    assert str(result.values["a"]) == "nan" and result.values["b"] == float("inf")
    assert result.series_without_pod == 1
