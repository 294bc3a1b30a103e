"""`make demo`: the function, for real, on one machine, told as a story.

Starts VictoriaMetrics with generated consumer metrics, the Kubernetes API stand-in (a test
double: no cluster runs here) holding two Deployments, and the function itself as a
functions-framework process; then delivers Alertmanager's own notification to it and prints
what it measured and decided. Everything it starts, it stops.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.metricsdata import cpu_usage, to_victoriametrics_import  # noqa: E402
from tests.samples import sample  # noqa: E402
from tests.servers import FunctionProcess, ServerProcess, VictoriaMetrics  # noqa: E402
from tests.standin import KubeApiStandIn  # noqa: E402
from tests.standin.fixtures import seed_deployment  # noqa: E402

TOKEN = "demo-token-not-a-secret"
NS = "posthog"
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n{BOLD}== {title}{RESET}")


def table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        say("   " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def main() -> int:
    started: list[ServerProcess] = []
    workdir = Path(tempfile.mkdtemp(prefix="rebalancer-demo-"))
    standin = KubeApiStandIn().start()
    try:
        step("1. A Kubernetes API stand-in with two consumer Deployments")
        consumer = seed_deployment(standin, NS, "ingestion-consumer", replicas=6)
        recordings = seed_deployment(standin, NS, "session-recordings", replicas=4)
        say(f"   {NS}/ingestion-consumer: {len(consumer)} Ready pods; {NS}/session-recordings: {len(recordings)} Ready pods")
        say(f"   {DIM}(the stand-in is a test double of the API server: no cluster runs on this machine){RESET}")

        step("2. VictoriaMetrics with 20 minutes of cAdvisor CPU counters")
        vm = VictoriaMetrics(workdir / "vm").start()
        started.append(vm)
        now = (int(time.time()) // 15) * 15
        skewed = dict(zip(consumer, [0.42, 0.12, 0.45, 0.40, 1.85, 0.38], strict=True))
        balanced = dict(zip(recordings, [0.61, 0.58, 0.60, 0.63], strict=True))
        series = cpu_usage(NS, "ingestion-consumer", skewed, now - 1200, now, noise=0.08, seed=5)
        series += cpu_usage(NS, "session-recordings", balanced, now - 1200, now, noise=0.08, seed=6)
        vm.import_prometheus(to_victoriametrics_import(series))
        table([("pod", "cores (generated)")] + [(p, f"{r:.2f}") for p, r in {**skewed, **balanced}.items()])

        step("3. The function, as functions-framework runs it")
        config = workdir / "rebalancer.yaml"
        config.write_text(yaml.safe_dump({
            "metrics_url": vm.url,
            "dry_run": True,
            "log_format": "text",
            "targets": [
                {"name": "ingestion-consumer", "namespace": NS, "deployment": "ingestion-consumer", "signals": {"cpu": {"threshold": 0.3}}},
                {"name": "session-recordings", "namespace": NS, "deployment": "session-recordings", "signals": {"cpu": {"threshold": 0.3}}},
            ],
        }))
        function = FunctionProcess(workdir, {
            "REBALANCER_CONFIG": str(config), "REBALANCER_AUTH_TOKEN": TOKEN,
            "KUBECONFIG": str(standin.write_kubeconfig(workdir / "kubeconfig")),
        }).start()
        url = function.url
        started.append(function)
        say(f"   functions-framework --source main.py --target rebalance --port {url.rsplit(':', 1)[1]}   (dry-run, config {config.name})")

        step("4. Alertmanager delivers its notification (a real 0.25 payload)")
        payload = sample("alertmanager-0.25-firing-cpu-two-deployments.json")
        for alert in payload["alerts"]:
            say(f"   firing {alert['labels']['alertname']} for {alert['labels']['namespace']}/{alert['labels']['deployment']}: {alert['annotations']['summary']}")
        started_at = time.perf_counter()
        answer = requests.post(f"{url}/", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        elapsed = (time.perf_counter() - started_at) * 1000
        body = answer.json()
        say(f"   HTTP {answer.status_code} in {elapsed:.0f} ms, outcome {BOLD}{body['outcome']}{RESET}")

        step("5. What it verified, and why it acted or not")
        for decision in body["decisions"]:
            verified = decision["verified"] or {}
            say(f"\n   {BOLD}{decision['target']} / {decision['signal']}: {decision['outcome']}{RESET}")
            if verified.get("value") is not None:
                say(f"   measured now: CV {verified['value']:.3f} over {verified['pods']} pods "
                    f"(mean {verified['mean']:.3f}, stddev {verified['stddev']:.3f}); threshold {verified['threshold']}")
            for chosen in decision["selected"]:
                say(f"   selected {chosen['pod']}  {chosen['role']:>4}  {chosen['value']:.3f} cores")
            for action in decision["actions"]:
                say(f"   action   {action['pod']}  {action['result']}")
            say(f"   {DIM}{decision['reason']}{RESET}")

        step("6. The same by hand")
        say(f"   TOKEN={TOKEN}")
        say(f'   curl -s -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" '
            f"-d '{json.dumps({'target': 'ingestion-consumer', 'signal': 'cpu'})}' {url}/rebalance")
        manual = requests.post(f"{url}/rebalance", json={"target": "ingestion-consumer", "signal": "cpu"},
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
        say(f"   -> {manual['outcome']}: {manual['reason'][:160]}...")
        unauthorized = requests.post(f"{url}/rebalance", json={"target": "ingestion-consumer"}, timeout=30)
        say(f"   without the token -> HTTP {unauthorized.status_code}: {unauthorized.json()['reason']}")
        writes = [r for r in standin.requests if r.verb in ("create", "update", "patch", "delete")]
        say(f"\n   Kubernetes API calls made: {len(standin.requests)}, of which writes: {len(writes)} (dry-run: the cooldown lock was read, never written)")
        return 0 if answer.status_code == 200 and body["outcome"] == "dry_run" else 1
    finally:
        for server in reversed(started):
            server.stop()
        standin.stop()
        say(f"\n{DIM}stopped VictoriaMetrics, the function and the stand-in; logs were in {workdir}{RESET}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BaseException as e:  # pytest.fail from the server helpers is a BaseException
        if isinstance(e, (SystemExit, KeyboardInterrupt)):
            raise
        print(f"demo failed: {e}", file=sys.stderr)
        sys.exit(1)
