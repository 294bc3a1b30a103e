"""Acting when the Kubernetes API fails in a way a real control plane cannot be made to fail on
demand, so these run against the stand-in (tests/standin). Everything else about acting is
proven on the real control plane (test_acting.py, test_concurrency.py)."""

from __future__ import annotations

from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import consumer_records_lag, cpu_usage, to_victoriametrics_import
from tests.standin.fixtures import seed_deployment

NS = "posthog"
RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]


def test_losing_the_lock_stands_down_every_signal_of_the_target(make_standin_client, victoria_metrics, standin):
    """Stand-in because: the losing side of the race needs the create to answer 409 *between* this
    invocation's read and its write, every time. The race itself, with real winners and losers,
    is test_concurrency.py on the real control plane."""
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6)
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)
        + consumer_records_lag(NS, "ingestion-consumer", dict(zip(pods, [10, 20, 30, 40, 9000, 50], strict=True)), now - 1200, now)))
    both = target("ingestion-consumer", NS, signals={"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}})
    client = make_standin_client(victoria_metrics.url, [both], env_rebalancer_dry_run="false")
    standin.fail("create", "configmaps", 409)  # another invocation created the state first

    body = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH).get_json()

    assert [(d["signal"], d["outcome"], d["code"]) for d in body["decisions"]] == [
        ("cpu", "skipped", "lock_taken"), ("lag", "skipped", "lock_taken")]
    assert [p for p in pods if (standin.get("pods", NS, p) or {}).get("metadata", {}).get("deletionTimestamp")] == []


def test_an_eviction_answered_500_by_a_failing_api_server_is_recorded_as_failed(make_standin_client, victoria_metrics, standin):
    """Stand-in because: an API server that answers 500 to one eviction and not the next cannot be
    had on demand. (The real server's own 500, two budgets on one pod, is in test_acting.py.)"""
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6)
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)))
    client = make_standin_client(victoria_metrics.url, [target("ingestion-consumer", NS)], env_rebalancer_dry_run="false")
    standin.fail("create", "pods", 500, subresource="eviction", name=pods[0])

    body = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH).get_json()["decisions"][0]

    assert [(a["pod"], a["result"]) for a in body["actions"]] == [(pods[4], "evicted"), (pods[0], "failed")]
