"""Alertmanager retries and HA pairs deliver the same notification many times at once. However
many copies arrive, and however many function instances take them, one action happens per
cooldown: the lock is a conditional write on the state ConfigMap, and only one can win.

Real functions-framework processes (gunicorn, threads), a real VictoriaMetrics, the stand-in.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from rebalancer.cooldown import annotation_keys
from tests.conftest import TOKEN
from tests.fleet import NS, skewed_consumer, start_live_functions
from tests.samples import sample

FIRING = sample("alertmanager-0.25-firing-cpu-two-deployments.json")
REQUESTS = 50


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
def test_concurrent_identical_webhooks_evict_exactly_one_actions_worth(processes, victoria_metrics, standin, tmp_path):
    pods = skewed_consumer(standin, victoria_metrics)
    functions = start_live_functions(tmp_path, standin, victoria_metrics.url, processes)
    try:
        def deliver(i: int) -> dict:
            url = functions[i % processes].url
            answer = requests.post(f"{url}/alertmanager", json=FIRING, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
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
    assert {d["code"] for d in decisions if d["outcome"] == "skipped"} <= {"lock_taken", "cooldown"}
    evictions = standin.requests_for("create", "pods")
    assert sorted(r.name for r in evictions) == sorted([pods[4], pods[0]])
    terminating = [p["metadata"]["name"] for p in standin.objects("pods", NS) if p["metadata"].get("deletionTimestamp")]
    assert sorted(terminating) == sorted([pods[4], pods[0]])
    _, _, history_key = annotation_keys("ingestion-consumer")
    history = json.loads(standin.get("configmaps", NS, "pod-rebalancer-state")["metadata"]["annotations"][history_key])
    assert len(history) == 1 and history[0]["outcome"] == "acted"
