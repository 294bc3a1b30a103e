"""Real servers for integration tests: started as child processes on free loopback ports, with
their own temp dirs, waited for until ready, and stopped by PID. A server that cannot start
fails the test with its log; nothing here is mocked."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


_PR_SET_PDEATHSIG = 1


def stop_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it exits, however
    it ended (even SIGKILL, before any clean-up ran), so that no server outlives a test run or a
    script. The kernel ties this to the starting thread: start servers from the main thread."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


class Stopping:
    """For the scripts that start servers (`make try`, `make demo`): everything added is stopped,
    newest first, when the block ends, whether it ends normally, on an error, or on SIGINT,
    SIGTERM or SIGHUP, sent to the script or to its whole process group (a supervisor, `timeout`,
    a closed terminal). The first signal ends the block as Ctrl-C does; from then on signals are
    ignored, so a second one cannot cut the clean-up short. After SIGHUP the terminal is gone,
    so nothing more is written to it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.started: list = []
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def add(self, server):  # anything with stop(); returned, so that add(Server(...)).start() reads on
        self.started.append(server)
        return server

    def _interrupt(self, signum: int, _frame: object) -> None:
        self.received = signum
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def __enter__(self) -> Stopping:
        for received in self.SIGNALS:
            self.previous[received] = signal.signal(received, self._interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        for received in self.SIGNALS:
            signal.signal(received, signal.SIG_IGN)
        if self.received == signal.SIGHUP:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
        for server in reversed(self.started):
            try:
                server.stop()
            except Exception as e:  # one that will not stop must not keep the others running
                print(f"could not stop {type(server).__name__}: {e}", file=sys.stderr)
        # Cleaned up: the signals are the caller's again (a benchmark run inside pytest leaves
        # Ctrl-C working for the rest of the session).
        for received, handler in self.previous.items():
            signal.signal(received, handler)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `make test` installs it (scripts/install-system-deps)", pytrace=False)
    return path


class ServerProcess:
    """One child process, its log file, and a readiness URL."""

    def __init__(self, name: str, argv: list[str], ready_url: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.ready_url, self.workdir = name, argv, ready_url, workdir
        self.log_path = workdir / f"{name}.log"
        self.env = env
        self.process: subprocess.Popen | None = None

    def launch(self) -> subprocess.Popen:
        """Start the process and return at once, without waiting for it to be ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        # A session of its own, so stop() can end the whole process group (gunicorn workers too).
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                        env=self.env, start_new_session=True, preexec_fn=stop_with_parent)
        return self.process

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode} before it was ready")
            try:
                if requests.get(self.ready_url, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        self._fail(f"was not ready at {self.ready_url} within {timeout:.0f}s")
        return self

    def _fail(self, what: str) -> None:
        tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
        pytest.fail(f"{self.name} {what}.\ncommand: {' '.join(self.argv)}\nlog tail:\n{tail}", pytrace=False)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass


class VMAuth(ServerProcess):
    """vmauth (VictoriaMetrics' auth proxy) in front of ``upstream``: it lets through only the
    given bearer tokens and basic-auth users, and answers 401 to everything else."""

    def __init__(self, workdir: Path, upstream: str, bearer_tokens: list[str] = (),
                 users: dict[str, str] | None = None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        entries = [{"bearer_token": token, "url_prefix": upstream} for token in bearer_tokens]
        entries += [{"username": name, "password": password, "url_prefix": upstream} for name, password in (users or {}).items()]
        config = workdir / "auth.yml"
        config.write_text(yaml.safe_dump({"users": entries}))
        super().__init__("vmauth", [require_binary("vmauth"), f"-httpListenAddr=127.0.0.1:{port}",
                                    f"-auth.config={config}", "-loggerLevel=ERROR"], f"{self.url}/health", workdir)


class Pushgateway(ServerProcess):
    def __init__(self, workdir: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        # Debian's build persists to /var/lib/prometheus by default: a file of the test's own instead.
        super().__init__("pushgateway", [require_binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}",
                                         f"--persistence.file={workdir / 'pushgateway.db'}", "--log.level=error"],
                         f"{self.url}/-/ready", workdir)


class VictoriaMetrics(ServerProcess):
    """``scrape_config``: a Prometheus-style scrape configuration (a dict) that VictoriaMetrics'
    own scraper follows, as vmagent would in a cluster (tests/podscrape.py)."""

    def __init__(self, workdir: Path, port: int | None = None, scrape_config: dict | None = None) -> None:
        self._imported, self._newest_ms, self._oldest_ms = 0, 0, 2**62
        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        scraping = []
        if scrape_config is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "scrape.yml").write_text(yaml.safe_dump(scrape_config))
            scraping = [f"-promscrape.config={workdir / 'scrape.yml'}"]
        super().__init__(
            "victoria-metrics",
            [
                require_binary("victoria-metrics"),
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={workdir / 'data'}",
                "-retentionPeriod=1",
                # Without these, samples younger than 30 s are invisible and re-imported series
                # can be answered from a cache of the previous data.
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-loggerLevel=ERROR",
                *scraping,
            ],
            f"{self.url}/health",
            workdir,
        )

    def import_prometheus(self, text: str) -> None:
        """Load samples in Prometheus text format (with millisecond timestamps, no ``job`` label)
        and wait until every one of them is searchable: force_flush alone was seen to leave the newest sample
        invisible for a moment under load, which shifts a rate() window by one sample."""
        stamps = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line and not line.startswith("#")]
        response = requests.post(f"{self.url}/api/v1/import/prometheus", data=text.encode(), timeout=30)
        assert response.status_code == 204, f"import failed: HTTP {response.status_code} {response.text[:500]}"
        self._imported += len(stamps)
        self._newest_ms = max([self._newest_ms, *stamps])
        self._oldest_ms = min([self._oldest_ms, *stamps])
        span = (self._newest_ms - self._oldest_ms) // 1000 + 3600
        deadline = time.monotonic() + 15
        seen = None
        while time.monotonic() < deadline:
            self.flush()
            # job="": imported series only; what VictoriaMetrics scrapes itself carries a job label.
            result = self.query(f'sum(count_over_time({{__name__!="", job=""}}[{span}s]))', self._newest_ms / 1000)["data"]["result"]
            seen = int(float(result[0]["value"][1])) if result else 0
            if seen == self._imported:
                return
            time.sleep(0.1)
        pytest.fail(f"VictoriaMetrics shows {seen} of {self._imported} imported samples after 15 s", pytrace=False)

    def flush(self) -> None:
        """Make what was scraped or imported so far searchable now (about 6 s otherwise)."""
        flushed = requests.get(f"{self.url}/internal/force_flush", timeout=30)
        assert flushed.status_code == 200, f"force_flush failed: HTTP {flushed.status_code}"

    def reset(self) -> None:
        """Delete every series (the admin API), so a test can load different data for the same times."""
        deleted = requests.post(f"{self.url}/api/v1/admin/tsdb/delete_series", data={"match[]": '{__name__!=""}'}, timeout=30)
        assert deleted.status_code == 204, f"delete_series failed: HTTP {deleted.status_code} {deleted.text[:300]}"
        self._imported, self._newest_ms, self._oldest_ms = 0, 0, 2**62

    def query(self, promql: str, at: float) -> dict:
        response = requests.post(f"{self.url}/api/v1/query", data={"query": promql, "time": at}, timeout=30)
        response.raise_for_status()
        return response.json()


class Prometheus(ServerProcess):
    """Prometheus serving a TSDB that was backfilled with promtool (it has no import endpoint), or
    (``remote_write``) receiving what a scraper writes to it. Debian builds Prometheus without
    ``kubernetes_sd_configs``, so pods are scraped for it by vmagent (``VMAgent``)."""

    def __init__(self, workdir: Path, remote_write: bool = False) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = workdir / "prometheus.yml"
        workdir.mkdir(parents=True, exist_ok=True)
        config.write_text("global:\n  scrape_interval: 1h\n")
        receiving = ["--web.enable-remote-write-receiver"] if remote_write else []
        super().__init__(
            "prometheus",
            [
                require_binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=30d",
                "--log.level=error",
                *receiving,
            ],
            f"{self.url}/-/ready",
            workdir,
        )

    def backfill(self, openmetrics: str) -> None:
        """Write OpenMetrics text (seconds timestamps, ``# EOF``) into the TSDB before start()."""
        source = self.workdir / "backfill.om"
        source.write_text(openmetrics)
        result = subprocess.run(
            [require_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.workdir / "data")],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, f"promtool backfill failed:\n{result.stdout}\n{result.stderr}"


class VMAgent(ServerProcess):
    """vmagent scraping with a Prometheus-style ``scrape_config`` (tests/podscrape.py) and writing
    what it scrapes to ``remote_write`` (Prometheus' remote-write receiver, say)."""

    def __init__(self, workdir: Path, scrape_config: dict, remote_write: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "scrape.yml").write_text(yaml.safe_dump(scrape_config))
        super().__init__("vmagent", [require_binary("vmagent"), f"-httpListenAddr=127.0.0.1:{port}",
                                     f"-promscrape.config={workdir / 'scrape.yml'}", f"-remoteWrite.url={remote_write}",
                                     f"-remoteWrite.tmpDataPath={workdir / 'queue'}", "-remoteWrite.flushInterval=500ms",
                                     "-loggerLevel=ERROR"], f"{self.url}/health", workdir)


class FunctionProcess(ServerProcess):
    """The function as `functions-framework --source main.py --target rebalance` serves it
    (gunicorn, one worker, several threads), with the given environment."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "function", in_cluster: Path | None = None,
                 port: int | None = None, source: Path | None = None) -> None:
        """``source``: another checkout of the function to serve (make bench's "before")."""
        import sys

        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        repo = source or Path(__file__).resolve().parents[1]
        clean = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        argv = [str(Path(sys.executable).parent / "functions-framework"), "--source", str(repo / "main.py"),
                "--target", "rebalance", "--host", "127.0.0.1", "--port", str(port)]
        if in_cluster is not None:
            # As in a pod: the ServiceAccount's files (token, ca.crt, namespace) at the path the
            # Kubernetes client's in-cluster mode reads, in a mount namespace of the process's own.
            mount = "/run/secrets/kubernetes.io/serviceaccount"
            argv = [require_binary("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                    f'mount -t tmpfs tmpfs /run && mkdir -p {mount} && cp "$0"/* {mount}/ && exec "$@"',
                    str(in_cluster), *argv]
        super().__init__(
            name,
            argv,
            f"{self.url}/healthz",
            workdir,
            # Log lines reach the log file as they happen; a crash in C code leaves its Python stack there.
            env={**clean, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", **env},
        )


class MisbehavingBackend:
    """A loopback server that plays a broken metrics backend (or a broken proxy in front of one):
    every POST is answered with ``status`` and ``body`` after ``delay`` seconds. A real
    VictoriaMetrics cannot be made to time out or answer garbage on demand."""

    def __init__(self) -> None:
        self.status, self.body, self.delay = 200, b"", 0.0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(backend.delay)
                self.send_response(backend.status)
                self.send_header("Content-Length", str(len(backend.body)))
                self.end_headers()
                self.wfile.write(backend.body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, status: int = 200, body: bytes = b"", delay: float = 0.0) -> None:
        self.status, self.body, self.delay = status, body, delay

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
