"""Mapping alerts to configured work, with Alertmanager's real payloads as fixtures."""

from __future__ import annotations

import json

import pytest

from rebalancer.alerts import ManualRun, WebhookMessage, plan_alerts, plan_manual
from rebalancer.config import Settings
from tests.samples import SAMPLES, SHARED_SAMPLES, sample

SETTINGS = Settings(
    metrics_url="http://vm:8428",
    targets=[
        {"name": "ingestion-consumer", "namespace": "posthog", "deployment": "ingestion-consumer",
         "signals": {"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5}}},
        {"name": "recordings", "namespace": "posthog", "deployment": "session-recordings",
         "signals": {"cpu": {"threshold": 0.3}}},
    ],
)


def alert(labels: dict[str, str], status: str = "firing", fingerprint: str = "f1") -> dict:
    return {"status": status, "labels": labels, "annotations": {}, "fingerprint": fingerprint}


def message(*alerts: dict) -> WebhookMessage:
    return WebhookMessage.model_validate({"version": "4", "status": "firing", "alerts": list(alerts)})


def test_real_firing_payload_maps_each_alert_to_its_target_by_namespace_and_deployment():
    plan = plan_alerts(WebhookMessage.model_validate(sample("alertmanager-0.25-firing-cpu-two-deployments.json")), SETTINGS)
    assert [(i.target.name, i.signals, i.alerts) for i in plan.items] == [
        ("ingestion-consumer", ("cpu",), ("fe4775bfa16ad878",)),
        ("recordings", ("cpu",), ("57d07e435287b672",)),
    ]
    assert plan.refusals == []


def test_real_lag_payload_refuses_the_signal_a_target_does_not_configure():
    plan = plan_alerts(WebhookMessage.model_validate(sample("alertmanager-0.25-firing-lag-two-deployments.json")), SETTINGS)
    assert [(i.target.name, i.signals) for i in plan.items] == [("ingestion-consumer", ("lag",))]
    (refusal,) = plan.refusals
    assert refusal.refused and refusal.target == "recordings" and "no such signal" in refusal.reason


@pytest.mark.parametrize("name", ["alertmanager-0.25-resolved-cpu-two-deployments.json", "alertmanager-0.25-resolved-lag-two-deployments.json"])
def test_resolved_alerts_never_lead_to_work(name):
    plan = plan_alerts(WebhookMessage.model_validate(sample(name)), SETTINGS)
    assert plan.items == []
    assert len(plan.refusals) == 2 and all(not r.refused and "resolved" in r.reason for r in plan.refusals)


def test_rebalancer_target_label_decides_and_must_agree_with_namespace_and_deployment():
    agreeing = alert({"rebalancer_target": "recordings", "namespace": "posthog", "deployment": "session-recordings", "rebalancer_signal": "cpu"})
    disagreeing = alert({"rebalancer_target": "recordings", "deployment": "ingestion-consumer", "rebalancer_signal": "cpu"}, fingerprint="f2")
    plan = plan_alerts(message(agreeing, disagreeing), SETTINGS)
    assert [i.target.name for i in plan.items] == ["recordings"]
    assert plan.refusals[0].alert == "f2" and "disagrees" in plan.refusals[0].reason


@pytest.mark.parametrize(
    "labels",
    [
        {"rebalancer_target": "kube-system-coredns", "rebalancer_signal": "cpu"},
        {"namespace": "kube-system", "deployment": "coredns", "rebalancer_signal": "cpu"},
        {"namespace": "posthog", "rebalancer_signal": "cpu"},
        {"rebalancer_target": "recordings"},
        {"rebalancer_target": 'recordings"} or vector(1)', "rebalancer_signal": "cpu"},
    ],
)
def test_alerts_that_name_nothing_configured_are_refused(labels):
    plan = plan_alerts(message(alert(labels)), SETTINGS)
    assert plan.items == [] and plan.refusals[0].refused


def test_refusal_reasons_never_echo_label_values():
    plan = plan_alerts(message(alert({"rebalancer_target": "<script>x</script>", "rebalancer_signal": "cpu"})), SETTINGS)
    assert "<script>" not in plan.refusals[0].reason


def test_alerts_asking_for_the_same_target_are_merged_into_one_item():
    a = alert({"rebalancer_target": "ingestion-consumer", "rebalancer_signal": "cpu"}, fingerprint="a")
    b = alert({"namespace": "posthog", "deployment": "ingestion-consumer", "rebalancer_signal": "lag"}, fingerprint="b")
    c = alert({"rebalancer_target": "ingestion-consumer", "rebalancer_signal": "cpu"}, fingerprint="c")
    (item,) = plan_alerts(message(a, b, c), SETTINGS).items
    assert item.signals == ("cpu", "lag") and item.alerts == ("a", "b", "c")


def test_manual_run_without_signal_takes_every_configured_signal():
    (item,) = plan_manual(ManualRun(target="ingestion-consumer"), SETTINGS).items
    assert item.signals == ("cpu", "lag")


def test_manual_run_of_an_unknown_target_is_refused():
    plan = plan_manual(ManualRun(target="nope"), SETTINGS)
    assert plan.items == [] and plan.refusals[0].refused


@pytest.mark.parametrize("shared", sorted(SHARED_SAMPLES.glob("*.json")) if SHARED_SAMPLES.is_dir() else [], ids=lambda p: p.name)
def test_in_repo_samples_are_the_shared_files_untouched(shared):
    assert (SAMPLES / shared.name).read_bytes() == shared.read_bytes()


def test_every_sample_payload_parses_as_version_4():
    for path in SAMPLES.glob("*.json"):
        assert WebhookMessage.model_validate(json.loads(path.read_text())).version == "4"
