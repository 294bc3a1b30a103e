"""`make bench`: what one invocation costs as a Deployment grows, cold start, and memory.

For each size (10, 100, 1,000, 10,000 pods) it creates a Deployment of realistic pods on the real
control plane (tests/realcluster.py: the controllers make the pods, the node simulator makes them
Ready; the API server serves them with managedFields and all) and per-pod CPU and lag series in
a real VictoriaMetrics, starts a fresh `functions-framework` process (dry-run, JSON
logs, as deployed), and sends the same webhook (one cpu and one lag alert for the target)
several times. It prints one table and, with --write, writes it into docs/benchmarks.md.

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
``import main`` in a fresh interpreter, with the same configuration.
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
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import publish  # noqa: E402
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
    series = cpu_usage(ns, name, rates, now - 360, now) + consumer_records_lag(ns, name, lag, now - 360, now)
    vm.import_prometheus(to_victoriametrics_import(series))


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


@dataclass
class SizeResult:
    case: Case
    runs: int
    latency_ms: list[float]
    cpu_ms: list[float]
    kube_ms: list[float]
    apiserver_ms: float  # the API server's own time per invocation, from its audit log
    metrics_ms: list[float]
    kube_requests: float
    metrics_requests: float
    response_bytes: int
    peak_rss_mib: float
    arbiter_private_mib: float
    outcome: str


def function_env(workdir: Path, config: dict, plane: ControlPlane) -> dict[str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "rebalancer.yaml"
    config_path.write_text(yaml.safe_dump(config))
    return {"REBALANCER_CONFIG": str(config_path), "REBALANCER_AUTH_TOKEN": TOKEN,
            "KUBECONFIG": str(plane.write_function_kubeconfig(workdir / "kubeconfig"))}


def measure_size(case: Case, runs: int, env: dict[str, str], workdir: Path, plane: ControlPlane,
                 vm: VictoriaMetrics) -> SizeResult:
    function = FunctionProcess(workdir / f"fn-{case.name}", env, name=f"function-{case.name}").start(timeout=60)
    try:
        session = requests.Session()
        body = json.dumps(webhook(case)).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

        def invoke() -> requests.Response:
            response = session.post(f"{function.url}/", data=body, headers=headers, timeout=120)
            if response.status_code != 200:
                raise SystemExit(f"{case.label} pods: HTTP {response.status_code}: {response.text[:500]}")
            return response

        invoke()  # warm-up: the first call also opens the connections
        latency, cpu, kube, metrics, sizes = [], [], [], [], []
        cluster = Cluster(plane, case.namespace)
        cluster.forget_requests()
        metrics_before = vm_queries(vm)
        outcome = ""
        for _ in range(runs):
            started = time.perf_counter()
            response = invoke()
            latency.append((time.perf_counter() - started) * 1000)
            timing = server_timing(response.headers.get("Server-Timing", ""))
            cpu.append(timing["cpu"])
            kube.append(timing.get("kubernetes", 0.0))
            metrics.append(timing.get("metrics", 0.0))
            sizes.append(len(response.content))
            outcome = ", ".join(f"{d['signal']}: {d['outcome']} ({d.get('code')})" for d in response.json()["decisions"])
        made = cluster.requests()  # the function's, from the API server's audit log
        kube_requests = len(made) / runs
        apiserver_ms = sum(r.server_seconds for r in made) * 1000 / runs
        metrics_requests = (vm_queries(vm) - metrics_before) / runs
        peak, tree = peak_rss_mib(function.process.pid)
    finally:
        function.stop()
    return SizeResult(case, runs, latency, cpu, kube, apiserver_ms, metrics, kube_requests, metrics_requests,
                      max(sizes), peak, tree, outcome)


def measure_cold_start(env: dict[str, str], workdir: Path, attempts: int) -> list[float]:
    """Process start to the first answered webhook, for the smallest target."""
    body = json.dumps(webhook(Case(SIZES[0]))).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    results = []
    for attempt in range(attempts):
        function = FunctionProcess(workdir / f"cold-{attempt}", env, name=f"cold-{attempt}")
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
                        results.append((time.perf_counter() - started) * 1000)
                        break
                    raise SystemExit(f"cold start: HTTP {response.status_code}: {response.text[:300]}")
                except requests.ConnectionError:
                    time.sleep(0.01)
        finally:
            function.stop()
    return results


def measure_import(env: dict[str, str], attempts: int) -> tuple[list[float], list[tuple[str, float]]]:
    """``import main`` in a fresh interpreter (ms), and where that time goes: each module's own
    import time (``-X importtime``, self column) summed by package, the six largest."""
    code = "import time; t = time.perf_counter(); import main; print((time.perf_counter() - t) * 1000)"
    run_env = {**os.environ, **env}
    times = []
    for _ in range(attempts):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=run_env, capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    trace = subprocess.run([sys.executable, "-X", "importtime", "-c", "import main"], cwd=REPO, env=run_env,
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


def render(results: list[SizeResult], cold: list[float], imports: list[float], costly: list[tuple[str, float]]) -> str:
    lines = [
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {machine()}.",
        "Dry-run webhook with one cpu and one lag alert, against the real control plane (kube-apiserver "
        "v1.37.2, pods created through the API by the controllers; realistic pods carry env, probes, ports "
        "and resources). kube ms: wall time in the Kubernetes adapter; of it, API server ms: the API "
        "server's own time (its audit log, received to response complete).",
        "",
        "| pods | runs | median ms | p95 ms | own CPU ms (share of median) | kube ms | API server ms | metrics ms "
        "| kube requests | metrics queries | response bytes | peak RSS MiB (worker + arbiter's own) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        median = statistics.median(r.latency_ms)
        cpu = statistics.median(r.cpu_ms)
        lines.append(
            f"| {r.case.label} | {r.runs} | {median:.0f} | {percentile(r.latency_ms, 0.95):.0f} | {cpu:.0f} ({cpu / median:.0%}) "
            f"| {statistics.median(r.kube_ms):.0f} | {r.apiserver_ms:.0f} | {statistics.median(r.metrics_ms):.0f} "
            f"| {r.kube_requests:g} "
            f"| {r.metrics_requests:g} | {r.response_bytes:,} | {r.peak_rss_mib:.0f} + {r.arbiter_private_mib:.0f} |"
        )
    lines += [
        "",
        f"Cold start (process start to the first answered webhook, {len(cold)} starts): median {statistics.median(cold):.0f} ms, "
        f"max {max(cold):.0f} ms. `import main`: median {statistics.median(imports):.0f} ms; the largest shares "
        "(own import time by package, under -X importtime): " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in costly) + ".",
        "",
        "Decisions at each size: " + "; ".join(f"{r.case.label}: {r.outcome}" for r in results) + ".",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--lean", type=int, nargs="*", default=[SIZES[-1]],
                        help="sizes to measure again with lean pods, to show what the JSON volume costs")
    parser.add_argument("--runs", type=int, default=10, help="timed invocations per size (after one warm-up)")
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--imports", type=int, default=5, help="fresh interpreters timing `import main`")
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)

    # Stopping: every server stops on Ctrl-C, SIGTERM or SIGHUP too, a second signal ignored.
    with tempfile.TemporaryDirectory(prefix="rebalancer-bench-") as tmp, Stopping() as stopping:
        workdir = Path(tmp)
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
        env = function_env(workdir, {"metrics_url": vm.url, "dry_run": True, "log_format": "json",
                                     "targets": targets}, plane)
        results = []
        for case in cases:
            print(f"timing {case.label} pods ...", flush=True)
            results.append(measure_size(case, args.runs, env, workdir, plane, vm))
        print("cold starts ...", flush=True)
        cold = measure_cold_start(env, workdir, args.cold_starts)
        imports, costly = measure_import(env, args.imports)
    publish(render(results, cold, imports, costly), "bench", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
