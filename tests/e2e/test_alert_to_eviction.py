"""End to end with every real part this machine can run: skewed metrics -> vmalert fires the
shipped rule -> Alertmanager (shipped config) calls the function with the bearer token file ->
it re-verifies, evicts the outliers and writes the cooldown annotation; balanced again -> the
alert resolves and nothing more happens. Prints the time from firing to eviction."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from rebalancer.cooldown import annotation_keys
from tests.chain import REPO, Chain, wait_for
from tests.conftest import aligned_now
from tests.metricsdata import cpu_usage, partition_lag_with_assignment, to_victoriametrics_import
from tests.standin.fixtures import seed_deployment

NS = "posthog"
TOKEN = "e2e-token-7c1d"


def example_target() -> dict:
    """The example configuration's ingestion-consumer target (cpu and the lag join)."""
    config = yaml.safe_load((REPO / "examples" / "rebalancer.yaml").read_text())
    return next(t for t in config["targets"] if t["name"] == "ingestion-consumer")


def skewed(signal: str, pods: list[str], start: float, end: float, balanced: bool = False):
    if signal == "cpu":
        rates = [0.5] * 6 if balanced else [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]
        return cpu_usage(NS, "ingestion-consumer", dict(zip(pods, rates, strict=True)), start, end)
    assignment = {p: pods[p % 6] for p in range(18)}  # three partitions per pod
    behind = {0: 5.0, 4: 5000.0, 5: 3000.0}  # pods[4] far behind, pods[5] behind, pods[0] idle
    lag = {p: 100.0 if balanced else behind.get(p % 6, 100.0) for p in range(18)}
    return partition_lag_with_assignment(NS, "ingestion", lag, assignment, start, end)


@pytest.mark.parametrize("signal", ["cpu", "lag"])
def test_skew_alert_reaches_the_function_which_evicts_once_and_balance_ends_it(signal, standin, tmp_path, capsys):
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6)
    config = {"dry_run": False, "log_format": "json", "targets": [example_target()]}
    alert_name = {"cpu": "ConsumerCpuSkew", "lag": "ConsumerLagSkew"}[signal]

    with Chain(tmp_path, config, standin.write_kubeconfig(tmp_path / "kubeconfig"), TOKEN) as chain:
        chain.vm.import_prometheus(to_victoriametrics_import(skewed(signal, pods, now - 1200, now)))

        firing = wait_for(lambda: [a for a in chain.alerts(alert_name) if a["state"] == "firing"], f"{alert_name} to fire")
        fired_at = time.time()
        assert firing[0]["labels"]["rebalancer_signal"] == signal
        evictions = wait_for(lambda: standin.requests_for("create", "pods"), "the function's evictions", timeout=30)
        wait_for(lambda: len(standin.requests_for("create", "pods")) >= 2, "both evictions", timeout=10)
        latency = evictions[0].at - fired_at
        with capsys.disabled():  # shown in make test's output, not swallowed by capture
            print(f"\n  [e2e {signal}] alert firing -> first eviction: {latency * 1000:.0f} ms (Alertmanager group_wait 1s)")

        evicted = sorted(r.name for r in standin.requests_for("create", "pods"))
        assert evicted == sorted([pods[4], pods[0]])
        _, _, history_key = annotation_keys("ingestion-consumer")

        def history():
            state = standin.get("configmaps", NS, "pod-rebalancer-state")
            return [(h["signal"], h["outcome"]) for h in json.loads(state["metadata"]["annotations"][history_key])] if state else []

        # The function writes the outcome back after the evictions: wait for it, then read it.
        wait_for(lambda: history() and history()[-1][1] != "in_progress", "the outcome in the history", timeout=10)
        assert history() == [(signal, "acted")]
        decision = wait_for(lambda: next((line for line in chain.function_log()
                                          if line.get("event") == "decision" and line.get("outcome") == "acted"), None),
                            "the decision in the function's log", timeout=10)
        assert decision["verified"]["value"] > decision["verified"]["threshold"]

        # The load evens out: the alert resolves and nothing more happens.
        chain.vm.reset()
        chain.vm.import_prometheus(to_victoriametrics_import(skewed(signal, pods, now - 1200, time.time() // 15 * 15, balanced=True)))
        wait_for(lambda: not [a for a in chain.alerts(alert_name) if a["state"] == "firing"], f"{alert_name} to resolve", timeout=30)
        time.sleep(3)  # a few more evaluations and Alertmanager group intervals
        assert len(standin.requests_for("create", "pods")) == 2
        calls = [line for line in chain.function_log() if line.get("event") == "decision"]
        assert sum(1 for c in calls if c.get("outcome") == "acted") == 1
