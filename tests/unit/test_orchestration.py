"""The orchestration rules, one test each, fast: ``service.handle`` and the ``Actor`` driven with
in-memory fakes of the ports (tests/fakes.py) and a fresh CollectorRegistry. The same rules are
proven against real servers in tests/integration; these say which rule broke, in milliseconds."""

from __future__ import annotations

import json
import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import rebalancer
from rebalancer import service
from rebalancer.acting import Actor
from rebalancer.alerts import ManualRun, plan_manual
from rebalancer.config import Settings
from rebalancer.cooldown import StateStore, annotation_keys, encode_history
from rebalancer.core.decision import CODES
from rebalancer.core.history import ActionRecord, TargetState
from rebalancer.core.partitions import PartitionLag
from rebalancer.core.timestamps import stamp
from rebalancer.errors import KubeNotFoundError, KubeUnavailableError, MetricsQueryError, MetricsUnavailableError
from rebalancer.telemetry import Telemetry
from rebalancer.timing import RequestTiming
from tests.fakes import FakeKube, FakeMetrics

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
PODS = ["c-0", "c-1", "c-2", "c-3", "c-4", "c-5"]
SKEWED = dict(zip(PODS, [0.1, 0.5, 0.5, 0.5, 1.9, 1.6], strict=True))
# The fake answers SKEWED to every query: as lag that is a few messages, under lag's default floor.
BOTH_SIGNALS = {"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5, "floor": 0}}


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
    both = settings(signals=BOTH_SIGNALS)

    outcome = run(both, kube, FakeMetrics(SKEWED))

    assert [(d["signal"], d["code"]) for d in outcome.body["decisions"]] == [("cpu", "lock_taken"), ("lag", "lock_taken")]
    assert [c for c in kube.writes() if c[0] == "evict"] == []


def test_one_action_per_target_per_invocation(kube):
    both = settings(signals=BOTH_SIGNALS)

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


def test_the_queries_are_answered_while_kubernetes_is_read(kube):
    """Side by side: the pods' read waits here until both signals' queries have been asked,
    which one after the other would never happen (the read comes first)."""
    both_asked = threading.Event()

    class Asked(FakeMetrics):
        def query_by_pod(self, query, at):
            answer = super().query_by_pod(query, at)
            if len(self.queries) == 2:
                both_asked.set()
            return answer

    class WaitsForTheQueries(FakeKube):
        def deployment_pods(self, namespace, deployment, container=None):
            assert both_asked.wait(10), "the queries were not sent before the Kubernetes read finished"
            return super().deployment_pods(namespace, deployment, container)

    waiting = WaitsForTheQueries(deployments=kube.deployments)
    outcome = run(settings(dry_run=True, signals=BOTH_SIGNALS), waiting, Asked(SKEWED))

    assert [d["code"] for d in outcome.body["decisions"]] == ["skew_verified", "skew_verified"]


def test_calls_to_one_backend_that_overlap_count_once_in_server_timing():
    timing = RequestTiming()
    for started, ended in ((0.0, 0.4), (0.1, 0.5), (0.7, 0.8)):  # two queries side by side, then a third
        timing.add("metrics", started, ended)
    timing.add("kubernetes", 0.0, 0.3)

    assert timing.upstream_seconds() == {"metrics": pytest.approx(0.6), "kubernetes": pytest.approx(0.3)}


@pytest.mark.parametrize("kube_error, status, code", [
    (KubeUnavailableError("Kubernetes API unreachable"), 503, None),
    (KubeNotFoundError('deployments.apps "consumer" not found', status=404, reason="NotFound"), 200, "kubernetes_error"),
])
def test_a_failed_kubernetes_read_answers_as_alone_when_the_query_beside_it_fails_too(kube_error, status, code):
    class Failing(FakeKube):
        def deployment_pods(self, namespace, deployment, container=None):
            raise kube_error

    outcome = run(settings(), Failing(), FakeMetrics(error=MetricsUnavailableError("VictoriaMetrics unreachable")))

    assert outcome.status == status
    assert [d["code"] for d in outcome.body["decisions"]] == ([code] if code else [])
    assert "Kubernetes API" in outcome.body["reason"] or 'deployments.apps "consumer" not found' in outcome.body["reason"]
    assert "VictoriaMetrics" not in json.dumps(outcome.body)


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


def seed_history(kube: FakeKube, *records: ActionRecord) -> None:
    state = TargetState(last_action=max(r.at for r in records), invocation=records[-1].invocation, history=records)
    last_key, invocation_key, _ = annotation_keys("consumer")
    annotations = {last_key: stamp(state.last_action), invocation_key: records[-1].invocation,
                   **encode_history("consumer", state, history_limit=20)}
    kube.write_configmap_annotations("ns", "pod-rebalancer-state", annotations, None)
    kube.calls.clear()


def action(minutes_ago: int, value: float, **judged) -> ActionRecord:
    at = NOW - timedelta(minutes=minutes_ago)
    return ActionRecord(at=at, invocation=f"inv-{minutes_ago}", signal="cpu", outcome="acted", value=value, threshold=0.3,
                        **judged)


def test_a_settled_action_that_changed_nothing_is_recorded_with_an_event_and_a_counter(kube):
    seed_history(kube, action(16, value=0.5))  # SKEWED's CV is higher now: the action made it worse
    registry = CollectorRegistry()

    outcome = run(settings(), kube, FakeMetrics(SKEWED), registry=registry)

    (decision,) = outcome.body["decisions"]
    (effect,) = decision["effects"]
    assert (effect["invocation"], effect["effect"], effect["recorded"]) == ("inv-16", "worse", True)
    assert effect["before"] == 0.5 and effect["after"] == pytest.approx(decision["verified"]["value"])
    assert "Closed loop, recorded" in decision["reason"]
    (history,) = [json.loads(v) for k, v in kube.configmaps[("ns", "pod-rebalancer-state")].annotations.items()
                  if k.endswith("/history")]
    assert history[0]["effect"] == "worse" and history[0]["value_after"] == pytest.approx(effect["after"])
    # The effect is recorded before this run's own action.
    assert [e["reason"] for e in kube.events if e["kind"] == "Deployment"] == ["RebalanceIneffective", "Rebalanced"]
    assert registry.get_sample_value("rebalancer_action_effects_total",
                                     {"target": "consumer", "signal": "cpu", "effect": "worse"}) == 1.0
    assert registry.get_sample_value("rebalancer_ineffective_actions_in_a_row", {"target": "consumer"}) == 1.0
    assert decision["outcome"] == "acted"  # one ineffective action is not yet a pattern


def test_a_dry_run_reports_an_effect_but_writes_nothing(kube):
    seed_history(kube, action(16, value=0.9))

    outcome = run(settings(dry_run=True), kube, FakeMetrics(SKEWED))

    (effect,) = outcome.body["decisions"][0]["effects"]
    assert effect["effect"] == "improved" and effect["recorded"] is False
    assert kube.writes() == [] and kube.events == []


def test_two_ineffective_actions_in_a_row_back_the_target_off(kube):
    seed_history(kube, action(50, value=0.8, effect="no_effect", value_after=0.75, effect_at=NOW - timedelta(minutes=33)),
                 action(16, value=0.75))

    outcome = run(settings(), kube, FakeMetrics(SKEWED))

    (decision,) = outcome.body["decisions"]
    assert decision["outcome"] == "skipped" and decision["code"] == "ineffective"
    assert decision["effects"][0]["effect"] == "no_effect"  # judged just now, which makes it two
    backoff = decision["backoff"]
    assert backoff["ineffective_in_a_row"] == 2 and backoff["wait"] == "1h"
    assert backoff["until"] == stamp(NOW + timedelta(hours=1)) == decision["cooldown_until"]
    assert [c for c in kube.writes() if c[0] == "evict"] == []
    reasons = [e["reason"] for e in kube.events]
    assert reasons == ["RebalanceIneffective"]


def test_a_partitions_signal_decides_on_whole_partitions(kube):
    partitions = {f"c-{i}": [PartitionLag("events", str(2 * i), 100.0), PartitionLag("events", str(2 * i + 1), 100.0)]
                  for i in range(6)}
    partitions["c-3"][0] = PartitionLag("events", "6", 50_000.0)
    config = settings(signals={"lag": {"threshold": 0.5, "partitions": 'lag{namespace="$namespace"}'}})
    metrics = FakeMetrics(partitions=partitions)

    outcome = run(config, kube, metrics)

    (decision,) = outcome.body["decisions"]
    assert decision["code"] == "hot_partition" and kube.writes() == []
    assert metrics.queries == ['lag{namespace="ns"}']
    assert decision["partitions"]["hot_partition"] == {"pod": "c-3", "topic": "events", "partition": "6", "lag": 50_000.0,
                                                       "share": 1.0, "typical": 100.0,
                                                       "evidence": "c-3's other 1 partition(s) keep up (median lag 100)"}
    assert decision["verified"]["floor"] == 500.0


def test_every_configured_series_exists_from_the_start_at_zero():
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)

    telemetry.initialise({"consumer": {"cpu": 0.3, "lag": 0.5}})

    for outcome in ("acted", "blocked", "dry_run", "skipped", "rejected"):
        labels = {"target": "consumer", "signal": "lag", "outcome": outcome}
        assert registry.get_sample_value("rebalancer_decisions_total", labels) == 0.0
    assert registry.get_sample_value("rebalancer_actions_total", {"target": "consumer", "signal": "cpu", "result": "blocked"}) == 0.0
    assert registry.get_sample_value("rebalancer_action_effects_total",
                                     {"target": "consumer", "signal": "cpu", "effect": "no_effect"}) == 0.0
    assert registry.get_sample_value("rebalancer_upstream_errors_total", {"backend": "metrics", "kind": "temporary"}) == 0.0
    (build,) = [s for m in registry.collect() if m.name == "rebalancer_build_info" for s in m.samples]
    assert build.value == 1.0 and build.labels["version"] == rebalancer.__version__


def test_an_action_publishes_the_last_action_and_the_cooldown_end(kube):
    registry = CollectorRegistry()

    run(settings(), kube, FakeMetrics(SKEWED), registry=registry)

    target = {"target": "consumer"}
    assert registry.get_sample_value("rebalancer_last_action_timestamp_seconds", target) == NOW.timestamp()
    assert registry.get_sample_value("rebalancer_cooldown_until_timestamp_seconds", target) == (
        NOW + timedelta(minutes=15)).timestamp()


def test_a_backing_off_target_publishes_the_end_of_its_back_off(kube):
    seed_history(kube, action(50, value=0.8, effect="no_effect", value_after=0.75, effect_at=NOW - timedelta(minutes=33)),
                 action(16, value=0.75))
    registry = CollectorRegistry()

    run(settings(), kube, FakeMetrics(SKEWED), registry=registry)

    target = {"target": "consumer"}
    assert registry.get_sample_value("rebalancer_cooldown_until_timestamp_seconds", target) == (NOW + timedelta(hours=1)).timestamp()
    assert registry.get_sample_value("rebalancer_last_action_timestamp_seconds", target) == (NOW - timedelta(minutes=16)).timestamp()
    assert registry.get_sample_value("rebalancer_ineffective_actions_in_a_row", target) == 2.0


def test_the_http_api_reference_lists_every_decision_code_and_no_other():
    text = (Path(__file__).resolve().parents[2] / "docs" / "http-api.md").read_text()
    table = text.split("| code | outcome | meaning |", 1)[1].split("\n\n", 1)[0]
    listed = {code for row in table.splitlines()[2:] for code in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert listed == set(CODES)


@pytest.mark.parametrize(("threshold", "code"), [(0.70, "acted"), (0.71, "hysteresis")])  # SKEWED's CV is 0.774
def test_after_an_action_the_next_needs_the_cv_above_the_raised_bar(kube, threshold, code):
    seed_history(kube, action(20, value=0.9, effect="improved", value_after=0.4, effect_at=NOW - timedelta(minutes=4)))

    outcome = run(settings(signals={"cpu": {"threshold": threshold}}), kube, FakeMetrics(SKEWED))

    (decision,) = outcome.body["decisions"]
    assert decision["code"] == code, decision["reason"]
    if code == "hysteresis":
        assert f"needs the CV above {threshold * 1.1:.4g}" in decision["reason"] and kube.writes() == []


def test_unreadable_proposals_refuse_to_propose(kube):
    kube.write_configmap_annotations("ns", "pod-rebalancer-state", {"consumer.pod-rebalancer.io/proposals": "{not json"}, None)
    kube.calls.clear()
    config = Settings(metrics_url="http://metrics.invalid", dry_run=False, targets=[{
        "name": "consumer", "namespace": "ns", "deployment": "consumer", "min_pods": 3, "approval": True,
        "signals": {"cpu": {"threshold": 0.3}}}])

    outcome = run(config, kube, FakeMetrics(SKEWED))

    (decision,) = outcome.body["decisions"]
    assert outcome.status == 200 and decision["code"] == "state_unreadable" and "proposals annotation" in decision["reason"]
    assert kube.writes() == []
