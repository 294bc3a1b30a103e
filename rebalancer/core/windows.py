"""Maintenance windows: when a target may be acted on. Pure: ``now`` is passed in.

A window is days of the week, a start and an end time, in an IANA time zone. ``end`` at or
before ``start`` runs past midnight into the next day; ``end`` 24:00 is the end of the day. A
target with ``windows`` may act only inside one of them; ``blackouts`` (the same shape) are
never acted in. Times are wall-clock times in the zone, so a window keeps its local hours
across daylight-saving changes. A start inside the hour that a spring change skips opens
when the clocks resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    days: tuple[int, ...]  # 0 is Monday
    start: time
    end: time | None  # None: midnight at the end of the day
    zone: ZoneInfo

    @property
    def crosses_midnight(self) -> bool:
        return self.end is not None and self.end <= self.start

    def contains(self, moment: datetime) -> bool:
        local = moment.astimezone(self.zone)
        day, clock = local.weekday(), local.time().replace(tzinfo=None)
        if self.end is None:
            return day in self.days and clock >= self.start
        if not self.crosses_midnight:
            return day in self.days and self.start <= clock < self.end
        return (day in self.days and clock >= self.start) or ((day - 1) % 7 in self.days and clock < self.end)

    def _at(self, day: date, clock: time) -> datetime:
        return datetime.combine(day, clock, tzinfo=self.zone).astimezone(timezone.utc)

    def edges_after(self, moment: datetime) -> list[datetime]:
        """The moments this window opens or closes in the eight days after ``moment``."""
        first = moment.astimezone(self.zone).date() - timedelta(days=1)
        edges = []
        for offset in range(9):
            day = first + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            edges.append(self._at(day, self.start))
            if self.end is None:
                edges.append(self._at(day + timedelta(days=1), time(0)))
            else:
                edges.append(self._at(day + timedelta(days=1) if self.crosses_midnight else day, self.end))
        return [edge for edge in edges if edge > moment]

    def describe(self) -> str:
        days = ",".join(DAYS[d] for d in self.days)
        end = "24:00" if self.end is None else self.end.strftime("%H:%M")
        return f"{days} {self.start.strftime('%H:%M')}-{end} {self.zone.key}"


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...] = ()
    blackouts: tuple[Window, ...] = ()

    def allows(self, moment: datetime) -> bool:
        inside = not self.windows or any(w.contains(moment) for w in self.windows)
        return inside and not any(b.contains(moment) for b in self.blackouts)

    def next_opening(self, moment: datetime) -> datetime | None:
        """The first moment after ``moment`` at which acting is allowed (None: not within a week)."""
        edges = sorted({edge for w in (*self.windows, *self.blackouts) for edge in w.edges_after(moment)})
        return next((edge for edge in edges if self.allows(edge)), None)

    def why_closed(self, moment: datetime) -> str | None:
        """None when the target may act at ``moment``, else why not and when it may."""
        if self.allows(moment):
            return None
        opening = self.next_opening(moment)
        blackout = next((b for b in self.blackouts if b.contains(moment)), None)
        where = (f"in the blackout window {blackout.describe()}" if blackout is not None else
                 "outside its maintenance windows (" + "; ".join(w.describe() for w in self.windows) + ")")
        when = opening.strftime("%Y-%m-%dT%H:%M:%SZ") if opening is not None else "not within a week"
        return f"{where}; the next opening is {when}"
