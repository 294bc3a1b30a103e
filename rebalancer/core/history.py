"""A target's action history, and what it allows now. Pure: ``now`` is passed in.

The history (kept in the state ConfigMap by ``cooldown``) says when the target was last acted
on, how often in the last hour, and what each action did: the first verification after an
action's settle time measures the skew again and records the effect. Those effects close the
loop. Actions that did not lower the skew (a hot key, a slow node, a noisy neighbour: causes that
moving pods cannot fix) make the target back off, longer with each further one, until an action
works again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from rebalancer.core.durations import format_duration
from rebalancer.core.timestamps import stamp

Effect = Literal["improved", "no_effect", "worse"]
EFFECTS: tuple[Effect, ...] = ("improved", "no_effect", "worse")
INEFFECTIVE: tuple[Effect, ...] = ("no_effect", "worse")


@dataclass(frozen=True)
class ActionRecord:
    """One entry of a target's action history, as kept in the state ConfigMap."""

    at: datetime
    invocation: str
    signal: str
    outcome: str  # in_progress, acted, blocked, abandoned (in progress past its cooldown: the run died)
    value: float | None = None  # the signal's CV when the action was decided
    threshold: float | None = None
    pods: tuple[dict[str, Any], ...] = ()  # {pod, role, value, result}
    effect: Effect | None = None  # once settled: what the action did to the skew
    value_after: float | None = None  # the CV measured then
    effect_at: datetime | None = None  # when it was measured


@dataclass(frozen=True)
class TargetState:
    last_action: datetime | None = None
    invocation: str | None = None
    history: tuple[ActionRecord, ...] = ()


@dataclass(frozen=True)
class CooldownCheck:
    allowed: bool
    code: str  # "lock_free", "cooldown", "hourly_budget", "ineffective"
    reason: str
    cooldown_until: datetime | None


def mark_abandoned(state: TargetState, now: datetime, cooldown: timedelta) -> tuple[TargetState, tuple[ActionRecord, ...]]:
    """The state with every ``in_progress`` entry whose cooldown has passed marked ``abandoned``, and
    those entries. A run writes its outcome seconds after taking the lock; one still in progress a
    cooldown later died on the way (it may have evicted pods, so it still counts in its hour)."""
    stale = tuple(r for r in state.history if r.outcome == "in_progress" and r.at + cooldown <= now)
    if not stale:
        return state, ()
    history = tuple(replace(r, outcome="abandoned") if r in stale else r for r in state.history)
    return replace(state, history=history), stale


@dataclass(frozen=True)
class Backoff:
    """After ``after`` ineffective actions in a row, wait ``wait``; twice as long after each
    further one, never more than ``max_wait``."""

    after: int = 2
    wait: timedelta = timedelta(hours=1)
    max_wait: timedelta = timedelta(hours=24)

    def wait_for(self, streak: int) -> timedelta:
        """The wait after ``streak`` ineffective actions in a row (at least ``after`` of them)."""
        doublings = min(streak - self.after, 30)  # 2**30 waits are past any cap; keeps the number small
        return min(self.wait * (1 << doublings), self.max_wait)


@dataclass(frozen=True)
class Hysteresis:
    """After an action, the next one needs the CV above the threshold by ``margin`` (a fraction
    of it), for ``period``: a CV hovering at the threshold does not act every cooldown."""

    margin: float = 0.1
    period: timedelta = timedelta(hours=6)


@dataclass(frozen=True)
class Limits:
    """How often a target may be acted on: its cooldown, its hourly budget, its back-off, and the
    raised bar after an action."""

    cooldown: timedelta
    max_actions_per_hour: int
    backoff: Backoff = Backoff()
    hysteresis: Hysteresis = Hysteresis()


@dataclass(frozen=True)
class EffectRules:
    """How an action's effect is judged: ``settle`` after it, the CV against the CV it acted on.
    Better by at least ``margin`` (the target's min_improvement, which the action's projection
    promised), or below the threshold, is ``improved``; worse by as much is ``worse``."""

    settle: timedelta
    threshold: float
    margin: float


def judge_effect(before: float, after: float, rules: EffectRules, gone: bool = False) -> Effect:
    """``gone``: the skew is no longer there to measure (every pod idle, or the level below the
    floor): on a real group a drained lag reads 0 everywhere, which is the action working."""
    if gone or after <= rules.threshold or after <= before * (1 - rules.margin):
        return "improved"
    if after >= before * (1 + rules.margin):
        return "worse"
    return "no_effect"


def record_effects(state: TargetState, signal: str, now: datetime, value: float,
                   rules: EffectRules, gone: bool = False) -> tuple[TargetState, tuple[ActionRecord, ...]]:
    """The state with the effect of every settled, not yet judged action on ``signal`` recorded
    (``value`` is the CV measured now; ``gone``: no skew left to measure), and those actions."""
    def due(r: ActionRecord) -> bool:
        return (r.signal == signal and r.outcome == "acted" and r.effect is None and r.value is not None
                and r.at + rules.settle <= now)

    history = tuple(replace(r, effect=judge_effect(r.value or 0.0, value, rules, gone), value_after=value, effect_at=now)
                    if due(r) else r for r in state.history)
    judged = tuple(new for old, new in zip(state.history, history, strict=True) if new is not old)
    return (replace(state, history=history), judged) if judged else (state, ())


def ineffective_streak(state: TargetState) -> tuple[ActionRecord, ...]:
    """The judged actions since the last one that improved the skew, oldest first."""
    streak: list[ActionRecord] = []
    for record in sorted((r for r in state.history if r.effect is not None), key=lambda r: r.at, reverse=True):
        if record.effect not in INEFFECTIVE:
            break
        streak.append(record)
    return tuple(reversed(streak))


def backoff_until(state: TargetState, backoff: Backoff) -> datetime | None:
    """When a target backing off may act again (None: it is not backing off). The wait counts
    from when the last ineffective action was judged."""
    streak = ineffective_streak(state)
    if len(streak) < backoff.after:
        return None
    last = streak[-1]
    return (last.effect_at or last.at) + backoff.wait_for(len(streak))


def _describe(record: ActionRecord) -> str:
    return (f"{record.signal} CV {record.value:.3g} -> {record.value_after:.3g} ({record.effect}) after the action "
            f"at {stamp(record.at)}")


def _check_backoff(state: TargetState, now: datetime, backoff: Backoff) -> CooldownCheck | None:
    until = backoff_until(state, backoff)
    if until is None or now >= until:
        return None
    streak = ineffective_streak(state)
    return CooldownCheck(False, "ineffective", (
        f"the last {len(streak)} actions did not lower the skew ({'; '.join(_describe(r) for r in streak)}): moving pods "
        f"does not fix what causes it, so the target backs off until {stamp(until)} (a wait of "
        f"{format_duration(backoff.wait_for(len(streak)))}, doubling with each further ineffective action up to "
        f"{format_duration(backoff.max_wait)}; "
        "an action that works resets it)"), until)


def check_cooldown(state: TargetState, now: datetime, limits: Limits) -> CooldownCheck:
    """May the target be acted on at ``now``? Every attempt that took the lock counts, even a
    blocked one: the PDB or the API said no, and asking again at once would only hammer it."""
    if state.last_action is not None and now < state.last_action + limits.cooldown:
        until = state.last_action + limits.cooldown
        return CooldownCheck(False, "cooldown", f"in cooldown until {stamp(until)} (last action at "
                             f"{stamp(state.last_action)} by invocation {state.invocation})", until)
    recent = [r for r in state.history if now - timedelta(hours=1) < r.at <= now]
    if len(recent) >= limits.max_actions_per_hour:
        until = min(r.at for r in recent) + timedelta(hours=1)
        return CooldownCheck(False, "hourly_budget", f"max_actions_per_hour {limits.max_actions_per_hour} used up "
                             f"({len(recent)} actions in the last hour); next at {stamp(until)}", until)
    backing_off = _check_backoff(state, now, limits.backoff)
    if backing_off is not None:
        return backing_off
    return CooldownCheck(True, "lock_free", "no cooldown in force", now + limits.cooldown)


def check_hysteresis(state: TargetState, now: datetime, cv: float, threshold: float,
                     hysteresis: Hysteresis) -> CooldownCheck | None:
    """None when ``cv`` may act; else why not: the target acted within the period and the CV is
    not above the raised bar (threshold x (1 + margin))."""
    last = state.last_action
    if last is None or hysteresis.margin <= 0 or now >= last + hysteresis.period:
        return None
    bar = threshold * (1 + hysteresis.margin)
    if cv > bar:
        return None
    return CooldownCheck(False, "hysteresis", (
        f"the target acted at {stamp(last)}, so until {stamp(last + hysteresis.period)} an action needs the CV above "
        f"{bar:.4g} (the threshold {threshold:.4g} plus hysteresis {hysteresis.margin:.0%}), and it is {cv:.4g}: a CV "
        "hovering at the threshold does not move pods every cooldown"), last + hysteresis.period)
