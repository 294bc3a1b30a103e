"""The orchestration rules, one test each, fast: ``service.handle`` and the ``Actor`` driven with
in-memory fakes of the ports (tests/fakes.py) and a fresh CollectorRegistry. The same rules are
proven against real servers in tests/integration; these say which rule broke, in milliseconds."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
from prometheus_client import CollectorRegistry

from rebalancer import service
from rebalancer.acting import Actor
from rebalancer.alerts import ManualRun, plan_manual
from rebalancer.config import Settings
from rebalancer.cooldown import StateStore
from rebalancer.errors import KubeUnavailableError, MetricsQueryError
from rebalancer.telemetry import Telemetry
from tests.fakes import FakeKube, FakeMetrics

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
PODS = ["c-0", "c-1", "c-2", "c-3", "c-4", "c-5"]
SKEWED = dict(zip(PODS, [0.1, 0.5, 0.5, 0.5, 1.9, 1.6], strict=True))


def settings(dry_run: bool = False, signals: dict | None = None) -> Settings:
    return Settings(metrics_url="http://metrics.invalid", dry_run=dry_run, targets=[{
        "name": "consumer", "namespace": "ns", "deployment": "consumer", "min_pods": 3,
        "signals": signals or {"cpu": {"threshold": 0.3}}}])


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.add_deployment("ns", "consumer", PODS, NOW)
    return fake


def run(config: Settings, kube: FakeKube, metrics: FakeMetrics, requested_dry_run: bool | None = None,
        registry: CollectorRegistry | None = None) -> service.Outcome:
    registry = registry or CollectorRegistry()
    telemetry, logger = Telemetry(registry), logging.getLogger("test-orchestration")
    actor = Actor(kube, StateStore(kube, config.state_configmap, config.history_limit), telemetry, logger)
    deps = service.Dependencies(config, kube, metrics, telemetry, logger, actor)
    plan = plan_manual(ManualRun(target="consumer"), config)
    return service.handle(plan, deps, NOW, invocation="inv-1", requested_dry_run=requested_dry_run)


def test_a_live_action_takes_the_lock_before_the_first_eviction(kube):
    outcome = run(settings(), kube, FakeMetrics(SKEWED))

    assert outcome.status == 200 and outcome.body["outcome"] == "acted"
    kinds = [c[0] for c in kube.writes()]
    assert kinds[:3] == ["write_configmap", "evict", "evict"]  # lock, then the hot and the cold pod
    assert kinds.count("write_configmap") == 2  # the lock, then the outcome written back


def test_losing_the_lock_stands_down_every_signal_of_the_target(kube):
    rival = {"k.pod-rebalancer.io/last-action": "2026-11-25T11:59:59Z"}
    kube.before_write = lambda: kube.write_configmap_annotations("ns", "pod-rebalancer-state", rival, None)
    both = settings(signals={"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}})

    outcome = run(both, kube, FakeMetrics(SKEWED))

    assert [(d["signal"], d["code"]) for d in outcome.body["decisions"]] == [("cpu", "lock_taken"), ("lag", "lock_taken")]
    assert [c for c in kube.writes() if c[0] == "evict"] == []


def test_one_action_per_target_per_invocation(kube):
    both = settings(signals={"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}})

    outcome = run(both, kube, FakeMetrics(SKEWED))

    assert [(d["signal"], d["outcome"], d["code"]) for d in outcome.body["decisions"]] == [
        ("cpu", "acted", "acted"), ("lag", "skipped", "already_acted")]
    assert len([c for c in kube.writes() if c[0] == "evict"]) == 2


@pytest.mark.parametrize(("configured", "requested"), [(True, None), (True, False), (False, True)])
def test_a_dry_run_reads_but_writes_nothing_and_a_request_cannot_make_it_live(kube, configured, requested):
    outcome = run(settings(dry_run=configured), kube, FakeMetrics(SKEWED), requested_dry_run=requested)

    assert outcome.body["dry_run"] is True and outcome.body["outcome"] == "dry_run"
    assert kube.writes() == [] and ("read_configmap", "ns", "pod-rebalancer-state") in kube.calls


def test_an_unreachable_kubernetes_api_is_a_503_so_alertmanager_retries(kube):
    class Unreachable(FakeKube):
        def deployment_pods(self, namespace, deployment, container=None):
            raise KubeUnavailableError("Kubernetes API unreachable")

    outcome = run(settings(), Unreachable(), FakeMetrics(SKEWED))

    assert outcome.status == 503 and "nothing was done" in outcome.body["reason"]


def test_a_missing_deployment_is_a_skipped_decision_not_an_error():
    outcome = run(settings(), FakeKube(), FakeMetrics(SKEWED))

    (decision,) = outcome.body["decisions"]
    assert outcome.status == 200 and decision["outcome"] == "skipped" and decision["code"] == "kubernetes_error"
    assert 'deployments.apps "consumer" not found' in decision["reason"]


def test_a_query_the_backend_rejects_is_a_query_error_and_no_action(kube):
    outcome = run(settings(), kube, FakeMetrics(error=MetricsQueryError("bad_data: parse error")))

    (decision,) = outcome.body["decisions"]
    assert decision["code"] == "query_error" and kube.writes() == []


def test_each_decision_is_counted_on_the_registry_it_was_given(kube):
    registry = CollectorRegistry()

    run(settings(), kube, FakeMetrics(SKEWED), registry=registry)

    labels = {"target": "consumer", "signal": "cpu", "outcome": "acted"}
    assert registry.get_sample_value("rebalancer_decisions_total", labels) == 1.0
    assert registry.get_sample_value("rebalancer_actions_total", {"target": "consumer", "signal": "cpu", "result": "evicted"}) == 2.0
