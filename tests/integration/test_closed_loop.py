"""The closed loop end to end, live, on the real control plane and a real VictoriaMetrics.

A skew whose cause moving pods cannot fix (each replacement takes over its predecessor's load, as
with a hot key): the function acts; once the action settled the skew is still there, so it
records ``no_effect`` and acts again; the second ``no_effect`` makes the target back off
(``ineffective``) for an hour; after it, it acts once more, and this time the replacements are
balanced: ``improved`` resets the back-off. The history annotation, the Deployment's Events and
the function's metrics record each step. The pods are seconds old, so the function's clock
(freezegun) runs 20 minutes ahead and is moved on between the steps; the series reach far enough.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rebalancer.cooldown import annotation_keys
from tests.conftest import AUTH, aligned_now
from tests.metricsdata import cpu_usage, to_victoriametrics_import

AHEAD = 1200
REACH = 4 * 3600  # how far past now the series go: the steps below span about 2 h 10 min
SKEW = [0.1, 0.5, 0.5, 0.5, 1.9, 0.5]  # pods[4] hot, pods[0] cold: CV 0.86
_, _, HISTORY = annotation_keys("consumer")


class Scene:
    """The Deployment, its series and the function; each step fires one manual run."""

    def __init__(self, kube, victoria_metrics, make_client, clock):
        self.kube, self.vm, self.clock = kube, victoria_metrics, clock
        self.pods = kube.deployment("consumer", replicas=len(SKEW))
        self.now = aligned_now()
        self.load(dict(zip(self.pods, SKEW, strict=True)))
        clock.at(datetime.fromtimestamp(self.now + AHEAD, timezone.utc))
        self.client = make_client(victoria_metrics.url, [{
            "name": "consumer", "namespace": kube.namespace, "deployment": "consumer", "min_pods": 3,
            "cooldown": "15m", "backoff": "1h", "signals": {"cpu": {"threshold": 0.3}}}], env_rebalancer_dry_run="false")

    def load(self, rates: dict[str, float]) -> None:
        self.vm.import_prometheus(to_victoriametrics_import(
            cpu_usage(self.kube.namespace, "consumer", rates, self.now - 1200, self.now + REACH)))

    def fire(self) -> dict:
        answer = self.client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()
        return answer["decisions"][0]

    def replace_evicted(self, decision: dict, hot: float, cold: float) -> None:
        """The replacements of the evicted pods start with the given CPU (the cause moves with the
        work, or not), and the Deployment is whole again."""
        gone = {a["pod"] for a in decision["actions"]}
        ready = self.kube.wait_for_ready_pods("consumer", len(SKEW))
        new = sorted(set(ready) - set(self.pods))
        assert len(new) == len(gone) == 2, (gone, new)
        by_role = {s["role"]: s["pod"] for s in decision["selected"]}
        self.kube.wait_for_settled("consumer")
        # The first replacement takes the hot pod's place, the second the cold one's: which is which
        # does not matter, only that the multiset of loads is what the step says.
        self.load({new[0]: hot, new[1]: cold})
        self.pods = sorted((set(self.pods) - set(by_role.values())) | set(new))

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the function's own /metrics, as Prometheus would scrape it."""
        text = self.client.get("/metrics").get_data(as_text=True)
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
        return next((s.value for s in samples if s.name == name and labels.items() <= s.labels.items()), None)


@pytest.fixture
def scene(kube, victoria_metrics, make_client, clock) -> Scene:
    return Scene(kube, victoria_metrics, make_client, clock)


def history(kube) -> list[dict]:
    return json.loads(kube.annotations("configmaps", "pod-rebalancer-state")[HISTORY])


def test_ineffective_actions_back_off_and_an_effective_one_resets_it(scene, kube, clock):
    first = scene.fire()
    assert first["outcome"] == "acted", first["reason"]
    assert first["verified"]["value"] == pytest.approx(0.856, abs=1e-3)
    scene.replace_evicted(first, hot=1.9, cold=0.1)  # the skew moves with the work

    clock.advance(minutes=16)  # past the cooldown, and the settle time (the cooldown by default)
    second = scene.fire()
    (effect,) = second["effects"]
    assert (effect["invocation"], effect["effect"], effect["recorded"]) == (history(kube)[0]["invocation"], "no_effect", True)
    assert effect["before"] == pytest.approx(effect["after"])
    assert second["outcome"] == "acted", second["reason"]  # one ineffective action is not yet a pattern
    assert "1 ineffective action(s) in a row" in second["reason"]
    scene.replace_evicted(second, hot=1.9, cold=0.1)

    clock.advance(minutes=16)
    third = scene.fire()
    assert third["outcome"] == "skipped" and third["code"] == "ineffective", third["reason"]
    assert third["effects"][0]["effect"] == "no_effect"
    assert third["backoff"]["ineffective_in_a_row"] == 2 and third["backoff"]["wait"] == "1h"
    assert "the last 2 actions did not lower the skew" in third["reason"] and "cpu CV 0.856 -> 0.856" in third["reason"]
    assert third["actions"] == [] and len(kube.requests("create", "pods")) == 4  # two evictions each, from the first two
    backing_off = datetime.fromisoformat(third["cooldown_until"].replace("Z", "+00:00"))
    assert (backing_off - clock()).total_seconds() == pytest.approx(3600, abs=5)

    clock.advance(minutes=30)
    assert scene.fire()["code"] == "ineffective"  # still backing off, and nothing new to judge

    clock.advance(minutes=31)  # past the hour
    fourth = scene.fire()
    assert fourth["outcome"] == "acted", fourth["reason"]
    scene.replace_evicted(fourth, hot=0.5, cold=0.5)  # this time the replacements share the load

    clock.advance(minutes=16)
    fifth = scene.fire()
    assert fifth["effects"][0]["effect"] == "improved"
    assert "0 ineffective action(s) in a row" in fifth["reason"]
    assert fifth["code"] == "below_threshold"

    assert [(h["outcome"], h.get("effect")) for h in history(kube)] == [
        ("acted", "no_effect"), ("acted", "no_effect"), ("acted", "improved")]
    ineffective = kube.events("RebalanceIneffective")
    assert len(ineffective) == 2 and all(e["type"] == "Warning" for e in ineffective)
    assert any("2 ineffective actions in a row, so pod-rebalancer backs off for 1h" in e["message"] for e in ineffective)
    (effective,) = kube.events("RebalanceEffective")
    assert effective["type"] == "Normal" and effective["involvedObject"]["name"] == "consumer"
    assert scene.metric("rebalancer_action_effects_total", effect="no_effect") == 2.0
    assert scene.metric("rebalancer_action_effects_total", effect="improved") == 1.0
    assert scene.metric("rebalancer_ineffective_actions_in_a_row", target="consumer") == 0.0
