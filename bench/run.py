"""`make bench`: what one invocation costs as a Deployment grows, cold start, and memory, beside
the function as it was before (``--before``) and a client-go baseline, all in one run.

For each size (10, 100, 1,000, 10,000 pods) it creates a Deployment of realistic pods on the real
control plane (tests/realcluster.py: the controllers make the pods, the node simulator makes them
Ready; the API server serves them with managedFields and all) and per-pod CPU and lag series in
a real VictoriaMetrics. Then, interleaved round by round, the same work is timed six ways:
- after / before: a fresh `functions-framework` process (dry-run, JSON logs, as deployed) of this
  checkout and of the ``--before`` commit, each sent the same webhook (one cpu and one lag alert);
- client-go, run once: tests/controlplane/baseline as a new process per alert, the way a CronJob
  runs a Go rebalancer's binary (process start to exit);
- client-go, in process: the same program kept running, its own time for the reads and the pick
  alone (a warm Go service's best case);
- the pod list alone (protobuf, as the function asks, read and inflated, not decoded) and the two
  queries alone (sent together): the two reads the function waits for side by side.
It prints the tables and, with --write, writes them into docs/benchmarks.md.

What each column is, and where it comes from:
- latency: at the client, request sent to response read, after one warm-up invocation.
- cpu: the request thread's own CPU time (Server-Timing ``cpu``); waiting on a socket is not in it.
- kube / metrics: wall time inside the Kubernetes and metrics adapters (Server-Timing).
- API server: the API server's own time for the function's requests (its audit log: received
  to response complete), the part of "kube" that is not the network, the client or decoding.
- requests: counted by the servers themselves (the API server's audit log of the function's
  ServiceAccount, VictoriaMetrics' ``vm_http_requests_total``), not by the function.
- peak RSS: VmHWM of the gunicorn worker that served the runs, plus the private memory of the
  arbiter it was forked from (shared pages are counted once, as the container's memory counts them).
Cold start: ``Popen`` to the first 200 answer to the webhook, polling every 10 ms; import time:
``import main`` in a fresh interpreter, with the same configuration; before and after alternate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import publish  # noqa: E402
from rebalancer.adapters.kube import KubeGateway, api_client  # noqa: E402
from rebalancer.adapters.metrics_source import MetricsSource  # noqa: E402
from rebalancer.config import Settings, Target  # noqa: E402
from tests.metricsdata import consumer_records_lag, cpu_usage, to_victoriametrics_import  # noqa: E402
from tests.realcluster import Cluster, ControlPlane  # noqa: E402
from tests.samples import sample  # noqa: E402
from tests.servers import FunctionProcess, Stopping, VictoriaMetrics  # noqa: E402

TOKEN = "bench-token-not-a-secret"
SIZES = (10, 100, 1_000, 10_000)


@dataclass(frozen=True)
class Case:
    """One Deployment size; ``realistic`` pods carry what a real cluster serves (about 6 KB each),
    lean ones only the fields the function reads and a few more (about 0.9 KB)."""

    pods: int
    realistic: bool = True

    @property
    def name(self) -> str:
        return f"consumer-{self.pods}" + ("" if self.realistic else "-lean")

    @property
    def namespace(self) -> str:
        """One namespace per case, so that a small Deployment is not listed beside 10,000 other pods."""
        return f"bench-{self.pods}" + ("" if self.realistic else "-lean")

    @property
    def label(self) -> str:
        return f"{self.pods:,}" + ("" if self.realistic else " (lean pods)")


def seed(plane: ControlPlane, vm: VictoriaMetrics, case: Case, now: float) -> None:
    """A consumer Deployment whose lag sits on one pod (the act path, with its cooldown read) and
    whose CPU is spread with noise (measured, not acted on at large sizes: moving two pods out
    of thousands cannot improve it by min_improvement)."""
    name, ns = case.name, case.namespace
    cluster = Cluster(plane, ns)
    cluster.core.create_namespace({"metadata": {"name": ns}})
    cluster.grant()
    # Created through the API: the Deployment and ReplicaSet controllers make the pods, the node
    # simulator binds them and reports them Ready, as on a cluster (about a minute for 10,000).
    cluster.deployment(name, replicas=case.pods, realistic=case.realistic, wait=False)
    cluster.wait_for_settled(name, timeout=1800)
    names = sorted(p.metadata.name for p in cluster.core.list_namespaced_pod(ns, label_selector=f"app={name}").items)
    rates = {pod: 0.3 + 0.4 * ((i * 7919) % 1000) / 1000 for i, pod in enumerate(names)}
    lag = {pod: 800.0 + (i % 50) for i, pod in enumerate(names)}
    lag[names[len(names) // 2]] = 2_000_000.0
    # An hour ahead too: the queries' 5-minute windows stay full however long the timing takes.
    series = cpu_usage(ns, name, rates, now - 360, now + 3600) + consumer_records_lag(ns, name, lag, now - 360, now + 3600)
    vm.import_prometheus(to_victoriametrics_import(series))


def wait_until_idle(busy_below: float = 0.15, timeout: float = 300.0) -> float:
    """Until the machine's CPUs are idle (busy under ``busy_below`` over two seconds): after
    seeding, the controllers and the node simulator work on 10,000 pods for a while, and what
    was timed then would be their noise. Returns the seconds waited."""
    def ticks() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    began = time.monotonic()
    while time.monotonic() - began < timeout:
        total, idle = ticks()
        time.sleep(2)
        total2, idle2 = ticks()
        if 1 - (idle2 - idle) / max(1, total2 - total) < busy_below:
            break
    return time.monotonic() - began


def webhook(case: Case) -> dict:
    """A real Alertmanager notification, re-labelled: one cpu and one lag alert for the target."""
    message = sample("alertmanager-0.25-firing-cpu-two-deployments.json")
    first = message["alerts"][0]
    message["alerts"] = [
        {**first, "labels": {**first["labels"], "rebalancer_target": case.name, "rebalancer_signal": signal,
                             "namespace": case.namespace, "deployment": case.name}}
        for signal in ("cpu", "lag")
    ]
    message["groupLabels"] = {"rebalancer_target": case.name}
    return message


def server_timing(header: str) -> dict[str, float]:
    """``name;dur=12.3;desc=...`` entries -> {name: milliseconds}."""
    found = {}
    for entry in header.split(","):
        parts = [p.strip() for p in entry.split(";")]
        durations = [p[4:] for p in parts[1:] if p.startswith("dur=")]
        if parts[0] and durations:
            found[parts[0]] = float(durations[0])
    return found


def peak_rss_mib(arbiter: int) -> tuple[float, float]:
    """(the gunicorn worker's peak RSS, the arbiter's private memory), in MiB. The worker is forked
    from the arbiter after the app was loaded, so they share pages; the arbiter's private pages
    are what it adds to the container's memory."""
    workers = [int(p) for p in Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()]
    if len(workers) != 1:
        raise SystemExit(f"expected one gunicorn worker under pid {arbiter}, found {workers}")
    status = Path(f"/proc/{workers[0]}/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    rollup = Path(f"/proc/{arbiter}/smaps_rollup").read_text()
    private = sum(int(kb) for kb in re.findall(r"Private_(?:Clean|Dirty):\s+(\d+) kB", rollup)) / 1024
    return peak, private


def vm_queries(vm: VictoriaMetrics) -> int:
    """Instant queries VictoriaMetrics has answered. Its /metrics counters lag by up to a second."""
    time.sleep(1.5)
    text = requests.get(f"{vm.url}/metrics", timeout=10).text
    return sum(int(float(m)) for m in re.findall(r'vm_http_requests_total\{path="/api/v1/query"\} (\S+)', text))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


BEFORE = "5f040af"  # the function before protobuf reads and reads side by side (issue 24)
VARIANTS = ("after", "before", "client-go, run once", "client-go, in process", "pod list alone", "queries alone")


@dataclass(frozen=True)
class CpuSpent:
    plane_s: float
    vm_s: float
    machine_s: float


class CpuMeter:
    """CPU time spent while one run is timed, read from /proc: the processes' utime + stime (all
    their threads) and the machine's busy ticks. What the servers and the client spend together
    bounds how fast the run can be on this machine's cores, whatever the client does."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, plane_pid: int, vm_pid: int) -> None:
        self.pids = (plane_pid, vm_pid)

    def _process_s(self, pid: int) -> float:
        """The process and its children's, recursively (the control plane runs etcd in its own
        process and the API server, the controller manager and the node simulator as children)."""
        # after the command's closing parenthesis (it may hold spaces): utime and stime, 12th and 13th
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
        return (int(fields[11]) + int(fields[12])) / self.TICK + sum(self._process_s(child) for child in children)

    def _sample(self) -> tuple[float, float, float]:
        ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
        busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        return self._process_s(self.pids[0]), self._process_s(self.pids[1]), busy / self.TICK

    def around(self, step: Callable[[Timings], None], into: Timings) -> None:
        before = self._sample()
        step(into)
        after = self._sample()
        into.cpu_during.append(CpuSpent(*(b - a for a, b in zip(before, after, strict=True))))


@dataclass
class Timings:
    """One variant's runs at one size. Server-Timing fields are empty for what is not the function."""

    latency_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    kube_ms: list[float] = field(default_factory=list)
    metrics_ms: list[float] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)  # epoch seconds, for the audit log
    apiserver_ms: float = 0.0  # the API server's own time per run, from its audit log
    kube_requests: float = 0.0
    peak_rss_mib: float = 0.0
    arbiter_private_mib: float = 0.0
    selected: dict[str, list[str]] = field(default_factory=dict)  # signal -> pods picked (the last run)
    # CPU seconds spent during each run: by the control plane's process, by VictoriaMetrics, and by
    # the whole machine (both, the function or the Go program, and the bench's own client)
    cpu_during: list[CpuSpent] = field(default_factory=list)
    outcome: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.latency_ms)


@dataclass
class SizeResult:
    case: Case
    runs: int
    timings: dict[str, Timings]


def function_env(workdir: Path, config: dict, plane: ControlPlane) -> dict[str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "rebalancer.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return {"REBALANCER_CONFIG": str(config_path), "REBALANCER_AUTH_TOKEN": TOKEN,
            "KUBECONFIG": str(plane.write_function_kubeconfig(workdir / "kubeconfig"))}


class Invoker:
    """One running function (this checkout or the ``--before`` one), invoked with the webhook."""

    def __init__(self, function: FunctionProcess, case: Case) -> None:
        self.function, self.case = function, case
        self.session = requests.Session()
        self.body = json.dumps(webhook(case)).encode()

    def __call__(self, into: Timings) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        began, started = time.time(), time.perf_counter()
        response = self.session.post(f"{self.function.url}/", data=self.body, headers=headers, timeout=120)
        into.latency_ms.append((time.perf_counter() - started) * 1000)
        into.windows.append((began, time.time()))
        if response.status_code != 200:
            raise SystemExit(f"{self.case.label} pods: HTTP {response.status_code}: {response.text[:500]}")
        timing = server_timing(response.headers.get("Server-Timing", ""))
        into.cpu_ms.append(timing["cpu"])
        into.kube_ms.append(timing.get("kubernetes", 0.0))
        into.metrics_ms.append(timing.get("metrics", 0.0))
        decisions = response.json()["decisions"]
        into.outcome = ", ".join(f"{d['signal']}: {d['outcome']} ({d.get('code')})" for d in decisions)
        into.selected = {d["signal"]: sorted(s["pod"] for s in d.get("selected") or []) for d in decisions}


class GoBaseline:
    """tests/controlplane/baseline with the function's own queries and thresholds."""

    def __init__(self, case: Case, target: Target, vm: VictoriaMetrics, kubeconfig: str) -> None:
        self.argv = [str(REPO / ".build" / "baseline"), "-kubeconfig", kubeconfig, "-namespace", case.namespace,
                     "-deployment", case.name, "-metrics", vm.url]
        for signal in ("cpu", "lag"):
            self.argv += ["-query", f"{signal}={target.query_for(signal)}", "-threshold", f"{signal}={target.threshold(signal)}"]
        self.serving = subprocess.Popen([*self.argv, "-serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run_once(self, into: Timings) -> None:
        began, started = time.time(), time.perf_counter()
        done = subprocess.run(self.argv, capture_output=True, text=True)
        into.latency_ms.append((time.perf_counter() - started) * 1000)
        into.windows.append((began, time.time()))
        self._read(done.stdout if done.returncode == 0 else "", done.stderr, into)

    def in_process(self, into: Timings) -> None:
        assert self.serving.stdin and self.serving.stdout
        began = time.time()
        self.serving.stdin.write("\n")
        self.serving.stdin.flush()
        line = self.serving.stdout.readline()
        into.windows.append((began, time.time()))
        into.latency_ms.append(self._read(line, "the serving baseline exited", into)["total_ms"])

    @staticmethod
    def _read(line: str, error: str, into: Timings) -> dict:
        if not line.strip():
            raise SystemExit(f"client-go baseline: {error.strip()}")
        found = json.loads(line)
        into.selected = {signal: sorted(pods) for signal, pods in found["selected"].items()}
        return found

    def stop(self) -> None:
        self.serving.kill()
        self.serving.wait()


class ReadsAlone:
    """The two reads the function waits for, each alone: the pod list as the function asks for it
    (protobuf, gzip; read and inflated, not decoded) and the two queries, sent together."""

    def __init__(self, case: Case, target: Target, vm: VictoriaMetrics, kubeconfig: str) -> None:
        self.gateway = KubeGateway(api_client(kubeconfig=Path(kubeconfig), in_cluster=False), 60)
        self.metrics = MetricsSource(vm.url, timeout_seconds=60)
        self.queries = [target.query_for(signal) for signal in ("cpu", "lag")]
        self.case = case

    def pod_list(self, into: Timings) -> None:
        began, started = time.time(), time.perf_counter()
        self.gateway._read(f"/api/v1/namespaces/{self.case.namespace}/pods", [("labelSelector", f"app={self.case.name}")])
        into.latency_ms.append((time.perf_counter() - started) * 1000)
        into.windows.append((began, time.time()))

    def queries_together(self, into: Timings) -> None:
        now = datetime.now(timezone.utc)
        with ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            list(pool.map(lambda query: self.metrics.query_by_pod(query, now), self.queries))
            into.latency_ms.append((time.perf_counter() - started) * 1000)


def measure_size(case: Case, runs: int, env: dict[str, str], workdir: Path, plane: ControlPlane,
                 vm: VictoriaMetrics, before: Path | None, target: Target) -> SizeResult:
    """Every variant ``runs`` times after one warm-up each, interleaved round by round, the order
    rotated each round so that none always follows the same neighbour."""
    timings = {variant: Timings() for variant in VARIANTS if before is not None or variant != "before"}
    functions = {"after": FunctionProcess(workdir / f"fn-{case.name}", env, name=f"function-{case.name}")}
    if before is not None:
        functions["before"] = FunctionProcess(workdir / f"before-{case.name}", env, name=f"before-{case.name}", source=before)
    started: list[FunctionProcess] = []
    baseline: GoBaseline | None = None
    try:  # whatever fails to start, what did start is stopped
        for function in functions.values():
            started.append(function)
            function.start(timeout=60)
        baseline = GoBaseline(case, target, vm, env["KUBECONFIG"])
        alone = ReadsAlone(case, target, vm, env["KUBECONFIG"])
        steps = {"client-go, run once": baseline.run_once, "client-go, in process": baseline.in_process,
                 "pod list alone": alone.pod_list, "queries alone": alone.queries_together,
                 **{variant: Invoker(function, case) for variant, function in functions.items()}}
        for step in steps.values():  # warm-up: the first call also opens the connections
            step(Timings())
        cluster = Cluster(plane, case.namespace)
        cluster.forget_requests()
        meter = CpuMeter(plane.process.pid, vm.process.pid)
        order = list(timings)
        for round_ in range(runs):
            for variant in order[round_ % len(order):] + order[:round_ % len(order)]:
                meter.around(steps[variant], timings[variant])
        attribute_audit(timings, cluster.requests(), runs)
        for variant, function in functions.items():
            timings[variant].peak_rss_mib, timings[variant].arbiter_private_mib = peak_rss_mib(function.process.pid)
    finally:
        if baseline is not None:
            baseline.stop()
        for function in started:
            function.stop()
    return SizeResult(case, runs, timings)


def attribute_audit(timings: dict[str, Timings], made: list, runs: int) -> None:
    """The API server's requests (its audit log), each given to the variant whose run it fell in."""
    for timing in timings.values():
        mine = [r for r in made if any(start <= r.at <= end for start, end in timing.windows)]
        timing.kube_requests = len(mine) / runs if timing.windows else 0.0
        timing.apiserver_ms = sum(r.server_seconds for r in mine) * 1000 / runs if timing.windows else 0.0


def measure_cold_starts(env: dict[str, str], workdir: Path, attempts: int, sources: dict[str, Path]) -> dict[str, list[float]]:
    """Process start to the first answered webhook, for the smallest target; the checkouts alternate."""
    results: dict[str, list[float]] = {name: [] for name in sources}
    for attempt in range(attempts):
        for name, source in sources.items():
            results[name].append(measure_cold_start(env, workdir / f"cold-{name}-{attempt}", source))
    return results


def measure_cold_start(env: dict[str, str], workdir: Path, source: Path) -> float:
    body = json.dumps(webhook(Case(SIZES[0]))).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    function = FunctionProcess(workdir, env, name="cold", source=source)
    started = time.perf_counter()
    process = function.launch()
    try:
        while True:
            if process.poll() is not None:
                raise SystemExit(f"cold start: the function exited with {process.returncode}; see {function.log_path}")
            if time.perf_counter() - started > 60:
                raise SystemExit(f"cold start: no answer within 60 s; see {function.log_path}")
            try:
                response = requests.post(f"{function.url}/", data=body, headers=headers, timeout=30)
                if response.status_code == 200:
                    return (time.perf_counter() - started) * 1000
                raise SystemExit(f"cold start: HTTP {response.status_code}: {response.text[:300]}")
            except requests.ConnectionError:
                time.sleep(0.01)
    finally:
        function.stop()


def measure_import(env: dict[str, str], attempts: int, source: Path) -> tuple[list[float], list[tuple[str, float]]]:
    """``import main`` in a fresh interpreter (ms), and where that time goes: each module's own
    import time (``-X importtime``, self column) summed by package, the six largest."""
    code = "import time; t = time.perf_counter(); import main; print((time.perf_counter() - t) * 1000)"
    run_env = {**os.environ, **env}
    times = []
    for _ in range(attempts):
        out = subprocess.run([sys.executable, "-c", code], cwd=source, env=run_env, capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import main"], cwd=source, env=run_env,
                           capture_output=True, text=True, check=True).stderr
    by_package: dict[str, float] = {}
    for line in trace.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)", line)
        if match:
            parts = match.group(2).split(".")
            package = ".".join(parts[:3]) if parts[0] == "google" else parts[0]  # google.* is many projects
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1000
    return times, sorted(by_package.items(), key=lambda kv: -kv[1])[:6]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024 // 1024
    # Debian's build prints no -version; the package knows.
    vm_version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "victoria-metrics"],
                                capture_output=True, text=True).stdout.strip() or "unknown"
    return (f"{os.cpu_count()} cores ({cpu}), {memory} GiB, Python {platform.python_version()}, "
            f"VictoriaMetrics {vm_version}, functions-framework (gunicorn, 1 worker)")


def ratio(value: float, other: float) -> str:
    return f"{value / other:.2f}×"


def render(results: list[SizeResult], cold: dict[str, list[float]], imports: dict[str, list[float]],
           costly: list[tuple[str, float]], before: str | None) -> str:
    was = f"`{before}`" if before else "(not measured)"
    lines = [
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        "Dry-run webhook with one cpu and one lag alert, against the real control plane (kube-apiserver "
        "v1.37.2, pods created through the API by the controllers; realistic pods carry env, probes, ports "
        f"and resources). after: this checkout; before: commit {was}, JSON reads one after the other. "
        "client-go: tests/controlplane/baseline (protobuf, the reads one after the other), as a new process per "
        "alert (run once) and kept running (in process, its own time). The variants interleave round by round. "
        "kube ms: wall time in the Kubernetes adapter; of it, API server ms: the API server's own time (its audit "
        "log, received to response complete).",
        "",
        "| pods | variant | median ms | p95 ms | own CPU ms | kube ms | API server ms | metrics ms | kube requests "
        "| peak RSS MiB (worker + arbiter's own) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for variant, t in r.timings.items():
            server = f"{t.apiserver_ms:.0f}" if t.kube_requests else ""
            cells = [f"{statistics.median(t.cpu_ms):.0f}", f"{statistics.median(t.kube_ms):.0f}", server,
                     f"{statistics.median(t.metrics_ms):.0f}"] if t.cpu_ms else ["", "", server, ""]
            memory = f"{t.peak_rss_mib:.0f} + {t.arbiter_private_mib:.0f}" if t.peak_rss_mib else ""
            lines.append(f"| {r.case.label} | {variant} | {t.median:.0f} | {percentile(t.latency_ms, 0.95):.0f} | "
                         + " | ".join(cells) + f" | {t.kube_requests:g} | {memory} |")
    lines += [
        "",
        "Ratios of the medians (below 1: the function is faster), and the function against the slower of its two "
        "reads alone:",
        "",
        "| pods | after / before | after / client-go run once | after / client-go in process "
        "| pod list alone ms | queries alone ms | after / slower read | same picks as client-go |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        t = r.timings
        after, slower = t["after"].median, max(t["pod list alone"].median, t["queries alone"].median)
        same = "yes" if t["after"].selected == t["client-go, run once"].selected else (
            f"no: {t['after'].selected} against {t['client-go, run once'].selected}")
        lines.append(f"| {r.case.label} | {ratio(after, t['before'].median) if 'before' in t else ''} "
                     f"| {ratio(after, t['client-go, run once'].median)} | {ratio(after, t['client-go, in process'].median)} "
                     f"| {t['pod list alone'].median:.0f} | {t['queries alone'].median:.0f} | {ratio(after, slower)} | {same} |")
    lines += cpu_table(results)
    starts = "; ".join(f"{name}: median {statistics.median(v):.0f} ms, max {max(v):.0f} ms" for name, v in cold.items())
    imported = "; ".join(f"{name}: median {statistics.median(v):.0f} ms" for name, v in imports.items())
    lines += [
        "",
        f"Cold start (process start to the first answered webhook, {len(cold['after'])} starts each, alternating): {starts}. "
        f"`import main`: {imported}; the largest shares after (own import time by package, under -X importtime): "
        + ", ".join(f"{name} {ms:.0f} ms" for name, ms in costly) + ".",
        "",
        "Decisions at each size (after): " + "; ".join(f"{r.case.label}: {r.timings['after'].outcome}" for r in results) + ".",
    ]
    return "\n".join(lines)


def cpu_table(results: list[SizeResult]) -> list[str]:
    """Where the machine's CPU went during the runs, and the floor it sets: what every process
    spent during a run, spread over all the cores, is as fast as the run could be here."""
    cores = os.cpu_count() or 1
    lines = [
        "",
        f"CPU spent on the machine during a run (median ms of CPU time), and the floor it sets on {cores} cores "
        "(all of it spread evenly over every core); the rest is the function or the Go program, and the bench's client:",
        "",
        "| pods | variant | median ms | control plane CPU ms | VictoriaMetrics CPU ms | the rest CPU ms "
        f"| machine CPU ms | floor on {cores} cores ms | median / floor |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for variant in ("after", "client-go, run once", "pod list alone", "queries alone"):
            t = r.timings[variant]
            plane, vm, machine = (statistics.median(getattr(c, part) * 1000 for c in t.cpu_during)
                                  for part in ("plane_s", "vm_s", "machine_s"))
            rest = statistics.median((c.machine_s - c.plane_s - c.vm_s) * 1000 for c in t.cpu_during)
            floor = machine / cores
            lines.append(f"| {r.case.label} | {variant} | {t.median:.0f} | {plane:.0f} | {vm:.0f} | {rest:.0f} "
                         f"| {machine:.0f} | {floor:.0f} | {ratio(t.median, floor) if floor else ''} |")
    return lines


def before_checkout(ref: str, into: Path) -> Path:
    """The function's files at ``ref`` (git archive: no worktree to clean up)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "main.py", "rebalancer"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--lean", type=int, nargs="*", default=[],
                        help="sizes to measure again with lean pods, to show what the volume of each pod costs")
    parser.add_argument("--runs", type=int, default=10, help="timed invocations per size and variant (after one warm-up)")
    parser.add_argument("--before", default=BEFORE, help="the commit to measure as 'before' ('none': skip it)")
    parser.add_argument("--settle", type=float, default=300.0,
                        help="seconds to wait at most, after seeding, for the machine to be idle")
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--imports", type=int, default=5, help="fresh interpreters timing `import main`")
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not (REPO / ".build" / "baseline").exists():
        raise SystemExit("the client-go baseline is not built: make bench builds it (scripts/build-baseline)")

    # Stopping: every server stops on Ctrl-C, SIGTERM or SIGHUP too, a second signal ignored.
    with tempfile.TemporaryDirectory(prefix="rebalancer-bench-") as tmp, Stopping() as stopping:
        workdir = Path(tmp)
        before = before_checkout(args.before, workdir / "before") if args.before != "none" else None
        vm = stopping.add(VictoriaMetrics(workdir / "vm")).start()
        plane = stopping.add(ControlPlane(workdir / "kubernetes")).start()
        now = time.time() // 15 * 15
        cases = [Case(pods) for pods in args.sizes] + [Case(pods, realistic=False) for pods in args.lean]
        seeded = sorted(set(cases) | {Case(SIZES[0])}, key=lambda c: (c.pods, not c.realistic))
        for case in seeded:
            print(f"seeding {case.label} pods and their series ...", flush=True)
            began = time.monotonic()
            seed(plane, vm, case, now)
            print(f"  {case.label} pods Ready in {time.monotonic() - began:.1f} s", flush=True)
        targets = [
            # The pods were created seconds ago: without min_pod_age 0 none could be selected, and
            # the lag decision would stop before the cooldown read that a real one makes.
            {"name": case.name, "namespace": case.namespace, "deployment": case.name, "min_pods": 3, "min_pod_age": "0s",
             "signals": {"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}}}
            for case in seeded
        ]
        config = {"metrics_url": vm.url, "dry_run": True, "log_format": "json", "targets": targets}
        env = function_env(workdir, config, plane)
        settings = Settings(**config)
        results = []
        print(f"waited {wait_until_idle(timeout=args.settle):.0f} s for the machine to be idle", flush=True)
        for case in cases:
            print(f"timing {case.label} pods ...", flush=True)
            target = settings.target(case.name)
            assert target is not None
            results.append(measure_size(case, args.runs, env, workdir, plane, vm, before, target))
        print("cold starts ...", flush=True)
        sources = {"after": REPO, **({"before": before} if before else {})}
        cold = measure_cold_starts(env, workdir, args.cold_starts, sources)
        measured = {name: measure_import(env, args.imports, source) for name, source in sources.items()}
    imports = {name: times for name, (times, _) in measured.items()}
    publish(render(results, cold, imports, measured["after"][1], args.before if before else None), "bench", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
