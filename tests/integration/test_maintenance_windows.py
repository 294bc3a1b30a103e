"""Maintenance windows through the real app, its time set with freezegun: at both edges of a
window, and across a daylight-saving change. Outside a window the function asks nothing of
Kubernetes or the metrics backend, and says when the next window opens."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import AUTH, target

UTC = timezone.utc
WORKDAYS = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00", "timezone": "Europe/Berlin"}
DAILY = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "09:00", "end": "10:00",
         "timezone": "Europe/Berlin"}


def decide(make_client, kube, victoria_metrics, window, clock, moment):
    client = make_client(victoria_metrics.url, [target("consumer", kube.namespace, windows=[window])])
    clock.at(moment, ticking=False)
    answer = client.post("/rebalance", json={"target": "consumer"}, headers=AUTH).get_json()
    return answer["decisions"][0]


@pytest.mark.parametrize(("moment", "inside"), [
    (datetime(2026, 11, 23, 8, 0, tzinfo=UTC), True),  # Monday 09:00 CET
    (datetime(2026, 11, 23, 8, 0, tzinfo=UTC) - timedelta(microseconds=1), False),
    (datetime(2026, 11, 23, 16, 0, tzinfo=UTC) - timedelta(microseconds=1), True),
    (datetime(2026, 11, 23, 16, 0, tzinfo=UTC), False),  # 17:00 CET
], ids=["start", "just-before", "just-before-end", "end"])
def test_the_function_acts_only_inside_its_window(make_client, kube, victoria_metrics, clock, moment, inside):
    kube.deployment("consumer", replicas=3)
    kube.forget_requests()

    decision = decide(make_client, kube, victoria_metrics, WORKDAYS, clock, moment)

    if inside:
        assert decision["code"] != "outside_window" and kube.requests("get", "deployments")
    else:
        assert decision["outcome"] == "skipped" and decision["code"] == "outside_window"
        assert "outside its maintenance windows (mon,tue,wed,thu,fri 09:00-17:00 Europe/Berlin)" in decision["reason"]
        assert kube.requests() == []  # nothing asked of Kubernetes


@pytest.mark.parametrize(("saturday_noon", "opening"), [
    (datetime(2027, 3, 27, 11, 0, tzinfo=UTC), "2027-03-28T07:00:00Z"),  # CET -> CEST: 09:00 local is 07:00 UTC
    (datetime(2026, 10, 24, 10, 0, tzinfo=UTC), "2026-10-25T08:00:00Z"),  # CEST -> CET: 09:00 local is 08:00 UTC
], ids=["spring-forward", "fall-back"])
def test_the_next_opening_is_right_across_a_daylight_saving_change(make_client, kube, victoria_metrics, clock,
                                                                    saturday_noon, opening):
    decision = decide(make_client, kube, victoria_metrics, DAILY, clock, saturday_noon)
    assert decision["code"] == "outside_window" and f"the next opening is {opening}" in decision["reason"]
