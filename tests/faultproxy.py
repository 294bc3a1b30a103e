"""A TCP fault proxy between the function and a server it talks to: toxiproxy (Shopify's, v2.5.0,
built from its Go module by `make`: scripts/build-toxiproxy), started as a child process like any
other server. Each route listens on a loopback port of its own and forwards to one upstream; the
bytes pass untouched (TLS included: the function still checks the API server's certificate, whose
name is 127.0.0.1 either way) until a test adds a "toxic":

- ``reset(after_bytes)``: the connection is closed once that many bytes went to the client: a
  reset in the middle of a response (``limit_data``);
- ``black_hole()``: nothing more is passed either way and nothing is closed (``timeout`` 0): a
  stall past every timeout;
- ``latency(ms)``: each piece of data is held that long (``latency``).

``clear(route)`` takes every toxic away again. toxiproxy applies a toxic to the connections it
opens from then on and to those already open."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.servers import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
BINARY = REPO / ".build" / "toxiproxy"


class FaultProxy(ServerProcess):
    def __init__(self, workdir: Path) -> None:
        port = free_port()
        self.api = f"http://127.0.0.1:{port}"
        super().__init__("toxiproxy", [str(BINARY), "-host", "127.0.0.1", "-port", str(port)], f"{self.api}/version", workdir)

    def start(self, timeout: float = 30.0) -> FaultProxy:
        if not BINARY.exists():
            pytest.fail(f"{BINARY} is missing: `make test` builds it (scripts/build-toxiproxy)", pytrace=False)
        super().start(timeout)
        return self

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        answer = requests.request(method, f"{self.api}{path}", json=body, timeout=10)
        if answer.status_code >= 300:
            raise AssertionError(f"toxiproxy answered {method} {path} with {answer.status_code}: {answer.text}")
        return answer.json() if answer.content else {}

    def route(self, name: str, upstream: str) -> str:
        """A new route to ``upstream`` (host:port); returns the host:port to connect to instead."""
        listen = f"127.0.0.1:{free_port()}"
        self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        return listen

    def drop(self, name: str) -> None:
        self._call("DELETE", f"/proxies/{name}")

    def _toxic(self, route: str, kind: str, stream: str = "downstream", **attributes: int) -> None:
        self._call("POST", f"/proxies/{route}/toxics",
                   {"name": f"{kind}-{stream}", "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes})

    def reset(self, route: str, after_bytes: int) -> None:
        self._toxic(route, "limit_data", bytes=after_bytes)

    def black_hole(self, route: str) -> None:
        self._toxic(route, "timeout", stream="upstream", timeout=0)

    def latency(self, route: str, ms: int) -> None:
        self._toxic(route, "latency", latency=ms, jitter=0)

    def clear(self, route: str) -> None:
        for toxic in self._call("GET", f"/proxies/{route}/toxics") or []:
            self._call("DELETE", f"/proxies/{route}/toxics/{toxic['name']}")
