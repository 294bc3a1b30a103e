"""A container for the node simulator's tests: it records how it was started (its environment,
its pid) and the signals it gets, and serves a readiness endpoint that the test switches on.

Environment: POD_NAME, POD_NAMESPACE, POD_IP (the downward API's), RECORD_DIR (where to write),
IGNORE_SIGTERM=1 (play a container that does not stop on SIGTERM).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

RECORD = Path(os.environ["RECORD_DIR"])
POD = os.environ["POD_NAME"]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ready = (RECORD / f"{POD}.ready").exists()
        self.send_response(200 if ready else 503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def on_sigterm(*_) -> None:
    with (RECORD / f"{POD}.signals").open("a") as f:
        f.write("SIGTERM\n")
    if os.environ.get("IGNORE_SIGTERM") != "1":
        threading.Thread(target=server.shutdown).start()


server = ThreadingHTTPServer((os.environ["POD_IP"], 8080), Handler)
signal.signal(signal.SIGTERM, on_sigterm)
# Recorded only once SIGTERM is handled: a test that deletes the pod as soon as it sees this record
# must find the signal recorded (written first, a SIGTERM in between killed the process unrecorded).
with (RECORD / f"{POD}.started").open("a") as f:
    f.write(json.dumps({"pid": os.getpid(), **{k: os.environ.get(k) for k in ("POD_NAME", "POD_NAMESPACE", "POD_IP")}}) + "\n")
server.serve_forever(poll_interval=0.1)
sys.exit(0)
