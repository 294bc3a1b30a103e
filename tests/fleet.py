"""Shared set-up of the multi-process tests: a skewed consumer Deployment and a fleet of function
processes (functions-framework, gunicorn) pointed at it."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import TOKEN, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.servers import FunctionProcess, VictoriaMetrics
from tests.standin import KubeApiStandIn
from tests.standin.fixtures import seed_deployment

NS = "posthog"
# After the hot and the cold pod go, 1.6 still stands out: a repeat would act again but for the lock.
SKEWED_RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]


def skewed_consumer(standin: KubeApiStandIn, victoria_metrics: VictoriaMetrics) -> list[str]:
    """posthog/ingestion-consumer: six Ready pods, pods[4] hot and pods[0] cold, 20 minutes of data."""
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=len(SKEWED_RATES))
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, SKEWED_RATES, strict=True)), now - 1200, now)))
    return pods


def start_live_functions(tmp_path: Path, standin: KubeApiStandIn, metrics_url: str, processes: int,
                         extra_env: dict[str, str] | None = None) -> list[FunctionProcess]:
    """``processes`` live function processes sharing one config, token and kubeconfig."""
    config = tmp_path / "rebalancer.yaml"
    config.write_text(yaml.safe_dump({"metrics_url": metrics_url, "dry_run": False, "log_format": "text",
                                      "targets": [target("ingestion-consumer", NS)]}))
    env = {"REBALANCER_CONFIG": str(config), "REBALANCER_AUTH_TOKEN": TOKEN,
           "KUBECONFIG": str(standin.write_kubeconfig(tmp_path / "kubeconfig")), **(extra_env or {})}
    return [FunctionProcess(tmp_path / f"fn{i}", env, name=f"function-{i}").start(timeout=60) for i in range(processes)]
