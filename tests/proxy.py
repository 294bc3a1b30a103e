"""A logging proxy in front of the real metrics backend: forwards every request unchanged and
records what reached the backend, so tests can assert on the queries the function sent (or that
it sent none)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests


@dataclass(frozen=True)
class SeenQuery:
    path: str
    query: str | None
    headers: dict[str, str] = field(default_factory=dict)


class LoggingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[SeenQuery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> LoggingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                split = urlsplit(self.path)
                params = parse_qs(split.query) | parse_qs(body.decode(errors="replace"))
                with proxy._lock:
                    proxy.seen.append(SeenQuery(split.path, (params.get("query") or [None])[0], dict(self.headers.items())))
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "authorization") or k.lower().startswith("x-")}
                answer = requests.request(self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=30)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def queries(self) -> list[str]:
        with self._lock:
            return [s.query for s in self.seen if s.query is not None]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()
