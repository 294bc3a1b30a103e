"""`make try`: the function on http://127.0.0.1:8080, against a local cluster and VictoriaMetrics,
so that every curl example in the README works as written.

It starts the tests' real control plane with posthog/ingestion-consumer and
posthog/session-recordings (six pods each), loads twenty minutes of skewed CPU counters and
per-partition Kafka lag into a real VictoriaMetrics, and serves the function with the example
configuration (examples/rebalancer.yaml, dry-run) and the token `local-try-token`. VictoriaMetrics
listens on its usual http://127.0.0.1:8428, for the README's backtest example. It runs until
Ctrl-C (or TRY_FOR seconds); TRY_PORT and TRY_VM_PORT change the ports.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.metricsdata import cpu_usage, partition_lag_with_assignment, to_victoriametrics_import  # noqa: E402
from tests.realcluster import Cluster, ControlPlane  # noqa: E402
from tests.servers import FunctionProcess, VictoriaMetrics  # noqa: E402

TOKEN = "local-try-token"
NAMESPACE = "posthog"
RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]


def main() -> int:
    port = int(os.environ.get("TRY_PORT", "8080"))
    vm_port = int(os.environ.get("TRY_VM_PORT", "8428"))
    run_for = float(os.environ.get("TRY_FOR", "0")) or None
    workdir = Path(tempfile.mkdtemp(prefix="rebalancer-try-"))
    started: list = []
    try:
        plane = ControlPlane(workdir / "kubernetes").start()
        started.append(plane)
        kube = Cluster(plane, NAMESPACE)
        kube.core.create_namespace({"metadata": {"name": NAMESPACE}})
        kube.grant()
        vm = VictoriaMetrics(workdir / "vm", port=vm_port).start()
        started.append(vm)
        now = (int(time.time()) // 15) * 15
        series = []
        for deployment in ("ingestion-consumer", "session-recordings"):
            pods = kube.deployment(deployment, replicas=len(RATES), grace_seconds=5)
            series += cpu_usage(NAMESPACE, deployment, dict(zip(pods, RATES, strict=True)), now - 1200, now + 3600)
            if deployment == "ingestion-consumer":  # three partitions each; pods[4] far behind
                lag = {p: 5000.0 if p % 6 == 4 else 300.0 for p in range(18)}
                series += partition_lag_with_assignment(NAMESPACE, "ingestion", lag, {p: pods[p % 6] for p in range(18)},
                                                        now - 1200, now + 3600)
        vm.import_prometheus(to_victoriametrics_import(series))

        config = yaml.safe_load((REPO / "examples" / "rebalancer.yaml").read_text())
        for target in config["targets"]:
            target["min_pod_age"] = "0s"  # the pods are seconds old
        config_path = workdir / "rebalancer.yaml"
        config_path.write_text(yaml.safe_dump({**config, "metrics_url": vm.url}))
        function = FunctionProcess(workdir / "function", {
            "REBALANCER_CONFIG": str(config_path), "REBALANCER_AUTH_TOKEN": TOKEN,
            "KUBECONFIG": str(kube.write_kubeconfig(workdir / "kubeconfig")), "REBALANCER_LOG_FORMAT": "text"}, port=port)
        started.append(function.start())
        print(f"\npod-rebalancer is listening on {function.url} (dry-run), with the example configuration;\n"
              f"VictoriaMetrics on {vm.url}, holding twenty minutes of skewed CPU and Kafka lag.\n"
              f"In another shell, from the repository's root:\n\n  URL={function.url}; TOKEN={TOKEN}\n\n"
              "then the README's curl examples (HTTP API). The function's log: "
              f"{function.log_path}\nCtrl-C stops everything.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        deadline = time.monotonic() + run_for if run_for else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(started):
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
