"""A duplicate storm: Alertmanager retries plus an HA pair deliver the same notification 500 times,
spread over 2 function processes of 4 gunicorn workers each. Exactly one action per cooldown.
Latency figures are printed, not asserted (they belong to the machine, not the code)."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from statistics import quantiles

import requests

from rebalancer.cooldown import annotation_keys
from tests.conftest import TOKEN
from tests.fleet import REPEAT_SKIP_CODES, skewed_consumer, start_live_functions
from tests.samples import sample_in_namespace

FIRING = "alertmanager-0.25-firing-cpu-two-deployments.json"
REQUESTS, PROCESSES, WORKERS, CLIENTS = 500, 2, 4, 32


def test_a_storm_of_500_duplicates_over_8_workers_makes_exactly_one_action(victoria_metrics, kube, tmp_path, capsys):
    pods = skewed_consumer(kube, victoria_metrics)
    functions = start_live_functions(tmp_path, kube, victoria_metrics.url, PROCESSES, {"WORKERS": str(WORKERS)})
    try:
        def deliver(i: int) -> tuple[int, float, str]:
            started = time.perf_counter()
            try:
                answer = requests.post(f"{functions[i % PROCESSES].url}/alertmanager", json=sample_in_namespace(FIRING, kube.namespace),
                                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            except requests.RequestException as e:
                return 0, time.perf_counter() - started, f"{type(e).__name__}: {e}"[:300]
            elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                return answer.status_code, elapsed, answer.text[:200]
            record = next(d for d in answer.json()["decisions"] if d["target"] == "ingestion-consumer")
            return 200, elapsed, record["code"] if record["outcome"] == "skipped" else record["outcome"]

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            results = list(pool.map(deliver, range(REQUESTS)))
    finally:
        for function in functions:
            function.stop()

    latencies = sorted(seconds for _, seconds, _ in results)
    cuts = quantiles(latencies, n=100)
    outcomes = Counter(what for _, _, what in results)
    errors = sum(1 for status, _, _ in results if status != 200)
    with capsys.disabled():
        print(f"\n  [storm] {REQUESTS} duplicates, {PROCESSES} processes x {WORKERS} workers, {CLIENTS} concurrent clients: "
              f"p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms, "
              f"errors {errors}, outcomes {dict(outcomes)}")

    assert errors == 0, [r for r in results if r[0] != 200][:3]
    assert outcomes["acted"] == 1
    assert set(outcomes) <= {"acted"} | REPEAT_SKIP_CODES
    assert sorted(r.name for r in kube.requests("create", "pods")) == sorted([pods[4], pods[0]])
    history = json.loads(kube.annotations("configmaps", "pod-rebalancer-state")[annotation_keys("ingestion-consumer")[2]])
    assert [h["outcome"] for h in history] == ["acted"]
