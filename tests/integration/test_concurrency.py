"""Alertmanager retries and HA pairs deliver the same notification many times at once. However
many copies arrive, and however many function instances take them, one action happens per
cooldown: the lock is a conditional write on the state ConfigMap, and only one can win.

Real functions-framework processes (gunicorn, threads), a real VictoriaMetrics, the real control plane.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from rebalancer.cooldown import annotation_keys
from tests.conftest import TOKEN
from tests.fleet import REPEAT_SKIP_CODES, skewed_consumer, start_live_functions
from tests.samples import sample_in_namespace

FIRING = "alertmanager-0.25-firing-cpu-two-deployments.json"
REQUESTS = 50


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
def test_concurrent_identical_webhooks_evict_exactly_one_actions_worth(processes, victoria_metrics, kube, tmp_path):
    pods = skewed_consumer(kube, victoria_metrics)
    functions = start_live_functions(tmp_path, kube, victoria_metrics.url, processes)
    try:
        def deliver(i: int) -> dict:
            url = functions[i % processes].url
            answer = requests.post(f"{url}/alertmanager", json=sample_in_namespace(FIRING, kube.namespace), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            assert answer.status_code == 200, answer.text
            return next(d for d in answer.json()["decisions"] if d["target"] == "ingestion-consumer")

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            decisions = list(pool.map(deliver, range(REQUESTS)))
    finally:
        for function in functions:
            function.stop()

    outcomes = Counter(d["outcome"] for d in decisions)
    assert outcomes["acted"] == 1, outcomes
    assert outcomes["skipped"] == REQUESTS - 1
    assert {d["code"] for d in decisions if d["outcome"] == "skipped"} <= REPEAT_SKIP_CODES
    evictions = kube.requests("create", "pods")
    assert sorted((r.name, r.code) for r in evictions) == sorted([(pods[4], 201), (pods[0], 201)])
    assert kube.terminating(pods) == sorted([pods[4], pods[0]])
    _, _, history_key = annotation_keys("ingestion-consumer")
    history = json.loads(kube.annotations("configmaps", "pod-rebalancer-state")[history_key])
    assert len(history) == 1 and history[0]["outcome"] == "acted"
