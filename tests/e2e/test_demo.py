"""`make demo` keeps working: the whole chain, told as a story, under two minutes, and no
process left behind; and its real-cluster mode stays dry-run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.conftest import REPO
from tests.standin import KubeApiStandIn
from tests.standin.fixtures import seed_deployment


def run_demo(env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **(env or {})})
    return result, time.monotonic() - started


def no_leftovers() -> None:
    leftover = subprocess.run(["pgrep", "-f", "rebalancer-demo-"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"the demo left processes running: {leftover.stdout}"


def test_demo_tells_the_whole_chain_and_stops_everything():
    result, seconds = run_demo({"DEMO_CLUSTER": ""})
    out = result.stdout
    assert result.returncode == 0, f"demo failed:\n{out}\n{result.stderr}"
    assert seconds < 120
    assert "ConsumerCpuSkew firing -> Alertmanager" in out
    assert "measured now: CV" in out and "outcome acted" in out
    assert "-bbbbg   hot" in out and "-bbbbc  cold" in out  # the generated hot and cold pods
    assert "POST pods/ingestion-consumer-7d9f8c6b5-bbbbg/eviction" in out and "Event Rebalanced on Deployment" in out
    assert "skipped (cooldown): in cooldown until" in out
    assert "ConsumerCpuSkew resolved; nothing more happens" in out
    assert "2 evictions" in out
    no_leftovers()


def test_demo_against_a_cluster_through_its_kubeconfig_is_dry_run_only(tmp_path):
    with KubeApiStandIn() as cluster:  # any API server reached through a kubeconfig will do
        seed_deployment(cluster, "shop", "checkout", replicas=5)
        result, _ = run_demo({"DEMO_CLUSTER": "real", "KUBECONFIG": str(cluster.write_kubeconfig(tmp_path / "kc")),
                              "DEMO_NAMESPACE": "shop", "DEMO_DEPLOYMENT": "checkout"})
        writes = [r for r in cluster.requests if r.verb in ("create", "update", "patch", "delete")]
    assert result.returncode == 0, f"demo failed:\n{result.stdout}\n{result.stderr}"
    assert "dry-run only" in result.stdout and "outcome dry_run" in result.stdout
    assert writes == []
    no_leftovers()
