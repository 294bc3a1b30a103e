"""`make demo` keeps working: the whole chain, told as a story (CPU, then lag on a real consumer
group), and no process left behind; and its real-cluster mode stays dry-run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


def run_demo(env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **(env or {})})
    return result, time.monotonic() - started


def no_leftovers() -> None:
    """No process of the demo's: none whose command line or environment names its work dir (the
    consumers the node simulator ran carry it in SLOW_PODS_FILE)."""
    leftover = subprocess.run(["pgrep", "-f", "rebalancer-demo-"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", f"the demo left processes running: {leftover.stdout}"
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes() if proc.name.isdigit() else b""
        except OSError:
            continue
        assert b"rebalancer-demo-" not in environ, f"the demo left process {proc.name} running: {(proc / 'cmdline').read_bytes()!r}"


def test_demo_tells_the_whole_chain_and_stops_everything():
    result, seconds = run_demo({"DEMO_CLUSTER": ""})
    out = result.stdout
    assert result.returncode == 0, f"demo failed:\n{out}\n{result.stderr}"
    assert seconds < 120
    assert "ConsumerCpuSkew firing -> Alertmanager" in out
    assert "measured now: CV" in out and "outcome acted" in out
    assert "kube-apiserver v1.37.2" in out
    # The pods the controllers named: the hottest (1.85 cores) and coldest (0.12) are the ones evicted.
    hot = re.search(r"(ingestion-consumer-\S+)  1\.85 cores", out).group(1)
    cold = re.search(r"(ingestion-consumer-\S+)  0\.12 cores", out).group(1)
    assert f"selected {hot}   hot" in out and f"selected {cold}  cold" in out
    assert f"POST pods/{hot}/eviction -> 201" in out and f"POST pods/{cold}/eviction -> 201" in out
    assert "Event Rebalanced on Deployment" in out
    assert "skipped (cooldown): in cooldown until" in out
    assert "ConsumerCpuSkew resolved; nothing more happens" in out
    assert "the evicted pods are gone after their grace period; 8 Ready pods again" in out
    # The lag story, on a real consumer group: the slow consumer found and moved, its lag drained.
    slow = re.search(r"all 2 of (events-consumer-\S+)'s partitions fall behind", out)
    assert slow and "the consumer is slow or stuck" in out, out
    assert f"evicted {slow.group(1)} (" in out and "ConsumerLagSkew firing" in out
    assert re.search(r"lag at the brokers now: \d+ messages in all", out)
    assert "3 evictions" in out
    no_leftovers()


def test_demo_against_a_cluster_through_its_kubeconfig_is_dry_run_only(kube, tmp_path):
    kube.deployment("checkout", replicas=5)  # any cluster reached through a kubeconfig will do
    kube.grant()
    result, _ = run_demo({"DEMO_CLUSTER": "real", "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kc")),
                          "DEMO_NAMESPACE": kube.namespace, "DEMO_DEPLOYMENT": "checkout"})
    assert result.returncode == 0, f"demo failed:\n{result.stdout}\n{result.stderr}"
    assert "dry-run only" in result.stdout and "outcome dry_run" in result.stdout
    assert kube.requests("list", "pods"), "the function did not reach the cluster"
    assert kube.writes() == []
    no_leftovers()
