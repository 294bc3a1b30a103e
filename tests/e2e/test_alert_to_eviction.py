"""End to end with every real part this machine can run: skewed metrics -> vmalert fires the
shipped rule -> Alertmanager (shipped config) calls the function with the bearer token file ->
it re-verifies, evicts the outliers on the real control plane (as its ServiceAccount, with
terraform's Role) and writes the cooldown annotation; balanced again -> the alert resolves and
nothing more happens. Prints the time from firing to eviction (the API server's audit log
timestamps the evictions)."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from rebalancer.cooldown import annotation_keys
from tests.chain import REPO, Chain
from tests.conftest import aligned_now
from tests.metricsdata import cpu_usage, partition_lag_with_assignment, to_victoriametrics_import
from tests.servers import wait_for

TOKEN = "e2e-token-7c1d"


def example_target(namespace: str) -> dict:
    """The example configuration's ingestion-consumer target (cpu and the lag join), in the test's
    namespace; its pods are seconds old, so min_pod_age is 0."""
    config = yaml.safe_load((REPO / "examples" / "rebalancer.yaml").read_text())
    found = next(t for t in config["targets"] if t["name"] == "ingestion-consumer")
    return {**found, "namespace": namespace, "min_pod_age": "0s"}


def skewed(namespace: str, signal: str, pods: list[str], start: float, end: float, balanced: bool = False):
    if signal == "cpu":
        rates = [0.5] * 6 if balanced else [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]
        return cpu_usage(namespace, "ingestion-consumer", dict(zip(pods, rates, strict=True)), start, end)
    assignment = {p: pods[p % 6] for p in range(18)}  # three partitions per pod
    behind = {0: 5.0, 4: 5000.0, 5: 300.0}  # pods[4] far behind, pods[5] a little behind, pods[0] idle
    lag = {p: 100.0 if balanced else behind.get(p % 6, 100.0) for p in range(18)}
    return partition_lag_with_assignment(namespace, "ingestion", lag, assignment, start, end)


@pytest.mark.parametrize("signal", ["cpu", "lag"])
def test_skew_alert_reaches_the_function_which_evicts_once_and_balance_ends_it(signal, kube, tmp_path, capsys):
    pods = kube.deployment("ingestion-consumer", replicas=6)
    now = aligned_now()
    config = {"dry_run": False, "log_format": "json", "targets": [example_target(kube.namespace)]}
    alert_name = {"cpu": "ConsumerCpuSkew", "lag": "ConsumerLagSkew"}[signal]

    with Chain(tmp_path, config, kube.write_kubeconfig(tmp_path / "kubeconfig"), TOKEN) as chain:
        chain.vm.import_prometheus(to_victoriametrics_import(skewed(kube.namespace, signal, pods, now - 1200, now)))

        firing = wait_for(lambda: [a for a in chain.alerts(alert_name) if a["state"] == "firing"], f"{alert_name} to fire")
        fired_at = time.time()
        assert firing[0]["labels"]["rebalancer_signal"] == signal
        evictions = wait_for(lambda: kube.requests("create", "pods"), "the function's evictions", timeout=30)
        wait_for(lambda: len(kube.requests("create", "pods")) >= 2, "both evictions", timeout=10)
        latency = evictions[0].at - fired_at
        with capsys.disabled():  # shown in make test's output, not swallowed by capture
            print(f"\n  [e2e {signal}] alert firing -> first eviction: {latency * 1000:.0f} ms (Alertmanager group_wait 1s)")

        assert sorted((r.name, r.code) for r in kube.requests("create", "pods")) == sorted([(pods[4], 201), (pods[0], 201)])
        _, _, history_key = annotation_keys("ingestion-consumer")

        def history():
            state = kube.annotations("configmaps", "pod-rebalancer-state")
            return [(h["signal"], h["outcome"]) for h in json.loads(state[history_key])] if state else []

        # The function writes the outcome back after the evictions: wait for it, then read it.
        wait_for(lambda: history() and history()[-1][1] != "in_progress", "the outcome in the history", timeout=10)
        assert history() == [(signal, "acted")]
        decision = wait_for(lambda: next((line for line in chain.function_log()
                                          if line.get("event") == "decision" and line.get("outcome") == "acted"), None),
                            "the decision in the function's log", timeout=10)
        assert decision["verified"]["value"] > decision["verified"]["threshold"]

        # The load evens out: the alert resolves and nothing more happens.
        chain.vm.reset()
        chain.vm.import_prometheus(to_victoriametrics_import(skewed(kube.namespace, signal, pods, now - 1200, time.time() // 15 * 15, balanced=True)))
        wait_for(lambda: not [a for a in chain.alerts(alert_name) if a["state"] == "firing"], f"{alert_name} to resolve", timeout=30)
        time.sleep(3)  # a few more evaluations and Alertmanager group intervals
        assert len(kube.requests("create", "pods")) == 2
        calls = [line for line in chain.function_log() if line.get("event") == "decision"]
        assert sum(1 for c in calls if c.get("outcome") == "acted") == 1
