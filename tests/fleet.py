"""Shared set-up of the multi-process tests: a skewed consumer Deployment on the real control
plane and a fleet of function processes (functions-framework, gunicorn) acting on it."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import TOKEN, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.realcluster import Cluster
from tests.servers import FunctionProcess, VictoriaMetrics

# After the hot and the cold pod go, 1.6 still stands out: a repeat would act again but for the lock.
SKEWED_RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]


def skewed_consumer(kube: Cluster, victoria_metrics: VictoriaMetrics) -> list[str]:
    """ingestion-consumer: six Ready pods (names sorted), pods[4] hot and pods[0] cold, 20 minutes of data."""
    pods = kube.deployment("ingestion-consumer", replicas=len(SKEWED_RATES))
    now = aligned_now()
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(kube.namespace, "ingestion-consumer", dict(zip(pods, SKEWED_RATES, strict=True)), now - 1200, now + 60)))
    return pods


def start_live_functions(tmp_path: Path, kube: Cluster, metrics_url: str, processes: int,
                         extra_env: dict[str, str] | None = None) -> list[FunctionProcess]:
    """``processes`` live function processes sharing one config, token and kubeconfig (the
    function's ServiceAccount). The pods are seconds old and a process's clock is real time, so
    min_pod_age is 0 here."""
    config = tmp_path / "rebalancer.yaml"
    config.write_text(yaml.safe_dump({"metrics_url": metrics_url, "dry_run": False, "log_format": "text",
                                      "targets": [target("ingestion-consumer", kube.namespace, min_pod_age="0s")]}))
    env = {"REBALANCER_CONFIG": str(config), "REBALANCER_AUTH_TOKEN": TOKEN,
           "KUBECONFIG": str(kube.write_kubeconfig(tmp_path / "kubeconfig")), **(extra_env or {})}
    return [FunctionProcess(tmp_path / f"fn{i}", env, name=f"function-{i}").start(timeout=60) for i in range(processes)]


# Why a duplicate may stand down: the lock or the cooldown; or what a real cluster shows right after
# the eviction, before the cooldown is read: the Deployment not yet fully available again
# (rolling_out), then the ReplicaSet's replacements Ready but not yet scraped (min_pod_age is 0
# here, so they are not "starting"): incomplete data.
REPEAT_SKIP_CODES = {"lock_taken", "cooldown", "rolling_out", "incomplete_data"}
