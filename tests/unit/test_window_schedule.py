"""Maintenance windows in the pure core: the edges, windows past midnight, blackouts, and the
next opening across daylight-saving changes (Europe/Berlin: 2026-10-25 and 2027-03-28)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rebalancer.config import WindowSpec

UTC = timezone.utc
WORKDAYS = WindowSpec(days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="17:00", timezone="Europe/Berlin")


def schedule(windows=(), blackouts=()):
    from rebalancer.core.windows import Schedule
    return Schedule(tuple(w.window() for w in windows), tuple(b.window() for b in blackouts))


@pytest.mark.parametrize(("moment", "allowed"), [
    (datetime(2026, 11, 23, 8, 0, tzinfo=UTC), True),  # Monday 09:00 CET: the first instant inside
    (datetime(2026, 11, 23, 7, 59, 59, 999999, tzinfo=UTC), False),  # a microsecond before
    (datetime(2026, 11, 23, 15, 59, 59, tzinfo=UTC), True),  # 16:59:59 CET
    (datetime(2026, 11, 23, 16, 0, tzinfo=UTC), False),  # 17:00 CET: the end is not inside
    (datetime(2026, 11, 28, 10, 0, tzinfo=UTC), False),  # Saturday
])
def test_a_window_includes_its_start_and_excludes_its_end(moment, allowed):
    assert schedule([WORKDAYS]).allows(moment) == allowed


def test_outside_it_says_when_the_next_window_opens():
    friday_evening = datetime(2026, 11, 27, 17, 30, tzinfo=UTC)
    assert schedule([WORKDAYS]).next_opening(friday_evening) == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)  # Monday 09:00 CET
    reason = schedule([WORKDAYS]).why_closed(friday_evening)
    assert "outside its maintenance windows (mon,tue,wed,thu,fri 09:00-17:00 Europe/Berlin)" in reason
    assert "the next opening is 2026-11-30T08:00:00Z" in reason


def test_a_window_past_midnight_belongs_to_the_day_it_starts():
    night = WindowSpec(days=["fri"], start="22:00", end="02:00", timezone="UTC")
    assert schedule([night]).allows(datetime(2026, 11, 27, 22, 0, tzinfo=UTC))  # Friday 22:00
    assert schedule([night]).allows(datetime(2026, 11, 28, 1, 59, tzinfo=UTC))  # Saturday 01:59
    assert not schedule([night]).allows(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))
    assert not schedule([night]).allows(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))  # Friday 01:00: Thursday had none
    assert schedule([night]).next_opening(datetime(2026, 11, 28, 2, 0, tzinfo=UTC)) == datetime(2026, 12, 4, 22, 0, tzinfo=UTC)


def test_until_midnight_is_written_24_00():
    evening = WindowSpec(days=["sat"], start="20:00", end="24:00", timezone="UTC")
    assert schedule([evening]).allows(datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC))
    assert not schedule([evening]).allows(datetime(2026, 11, 29, 0, 0, tzinfo=UTC))


def test_a_blackout_closes_a_window_and_the_next_opening_is_its_end():
    freeze = WindowSpec(days=["mon"], start="12:00", end="14:00", timezone="Europe/Berlin")
    monday_noon = datetime(2026, 11, 23, 11, 30, tzinfo=UTC)  # 12:30 CET, inside the workday window
    closed = schedule([WORKDAYS], [freeze])
    assert not closed.allows(monday_noon)
    assert closed.next_opening(monday_noon) == datetime(2026, 11, 23, 13, 0, tzinfo=UTC)  # 14:00 CET
    assert "in the blackout window mon 12:00-14:00 Europe/Berlin" in closed.why_closed(monday_noon)
    assert schedule([], [freeze]).allows(datetime(2026, 11, 24, 11, 30, tzinfo=UTC))  # no windows: only blackouts close


@pytest.mark.parametrize(("saturday_noon", "sunday_nine"), [
    (datetime(2027, 3, 27, 11, 0, tzinfo=UTC), datetime(2027, 3, 28, 7, 0, tzinfo=UTC)),  # CET -> CEST overnight
    (datetime(2026, 10, 24, 10, 0, tzinfo=UTC), datetime(2026, 10, 25, 8, 0, tzinfo=UTC)),  # CEST -> CET overnight
], ids=["spring-forward", "fall-back"])
def test_the_next_opening_keeps_local_hours_across_a_daylight_saving_change(saturday_noon, sunday_nine):
    daily = WindowSpec(days=list(("mon", "tue", "wed", "thu", "fri", "sat", "sun")), start="09:00", end="10:00",
                       timezone="Europe/Berlin")
    assert schedule([daily]).next_opening(saturday_noon) == sunday_nine
    assert schedule([daily]).allows(sunday_nine) and not schedule([daily]).allows(sunday_nine - timedelta(microseconds=1))


@pytest.mark.parametrize(("spec", "message"), [
    ({"days": ["mon"], "start": "09:00", "end": "09:00"}, "an empty window"),
    ({"days": ["monday"], "start": "09:00", "end": "10:00"}, "Input should be"),
    ({"days": ["mon"], "start": "9:00", "end": "10:00"}, "String should match pattern"),
    ({"days": ["mon"], "start": "09:00", "end": "10:00", "timezone": "Mars/Olympus"}, "unknown IANA time zone"),
])
def test_a_malformed_window_is_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        WindowSpec(**spec)
