"""What would the function have done? Replays the decision core over history.

    python -m rebalancer backtest --config rebalancer.yaml --target ingestion-consumer \\
        --signal cpu --since 24h --step 1m [--plot backtest.png]

The target's own query is evaluated over the period with range queries (as few as the
backend's point limit allows), then the *same* ``decide`` runs at every step, with the
cooldown and hourly budget simulated by the same ``history.check_cooldown``. Kubernetes is
never contacted, so what only Kubernetes knows is assumed, and the report says so: every pod
with a value at a step is taken as Ready, owned by the Deployment, old enough and not
excluded; the Deployment as not rolling out and its HPA as not scaling; in hpa mode the HPA's
target and the pods' CPU request come from the command line. The history is what happened
without the actions, so a skew the function would have fixed keeps showing after its action.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rebalancer.adapters.metrics_auth import metrics_session
from rebalancer.adapters.metrics_source import MetricsSource, PartitionKey
from rebalancer.config import SIGNAL_NAMES, Settings, SignalName, Target, load_settings
from rebalancer.core import history
from rebalancer.core.composite import composite
from rebalancer.core.durations import format_duration, parse_duration
from rebalancer.core.measurement import Verdict
from rebalancer.core.partitions import ByPartition, PartitionLag
from rebalancer.core.policy import decide, measured_skew
from rebalancer.core.timestamps import stamp
from rebalancer.core.windows import Schedule
from rebalancer.core.workload import PodState, Rules, WorkloadStatus
from rebalancer.errors import RebalancerError

# How the codes that held an action back are grouped in the summary.
HELD_BY = {
    "cooldown": "cooldown", "hourly_budget": "cooldown",
    "no_improvement": "min_improvement",
    "min_pods": "safety guard", "no_candidates": "safety guard", "too_many_unready": "safety guard",
    "rolling_out": "safety guard", "hpa_scaling": "safety guard",
    "below_floor": "floor", "hot_partition": "hot partition", "ineffective": "back-off", "hysteresis": "hysteresis",
    "outside_window": "maintenance window",
}
ASSUMPTIONS = (
    "every pod with a value at a step is taken as Ready, owned by the Deployment, older than min_pod_age "
    "and not excluded; the Deployment as not rolling out and its HPA as not scaling (Kubernetes is not asked)",
    "the history is what happened without these actions: a skew an action would have fixed keeps showing after it",
    "so the effects cannot be seen: each action's effect is read from the recorded history once it settled, as if it "
    "changed nothing; the back-off shown is what would follow if the actions did not help",
)


@dataclass(frozen=True)
class Step:
    """The decision at one step, and what the simulated cooldown made of it."""

    at: datetime
    verdict: Verdict
    acted: bool
    held_by: str | None = None  # the code that held back a verdict that wanted to act, or a guard
    effects: tuple[history.Effect, ...] = ()  # of earlier simulated actions, judged at this step


@dataclass(frozen=True)
class Judging:
    """Everything the replay decides with, as the live function does for the same target."""

    rules: Rules
    limits: history.Limits
    effects: history.EffectRules
    schedule: Schedule = field(default_factory=Schedule)

    @classmethod
    def of(cls, target: Target, signal: SignalName) -> Judging:
        return cls(target.rules(signal), target.limits(), target.effect_rules(signal), target.schedule())


@dataclass(frozen=True)
class Assumed:
    """What the backtest cannot know and takes as given (see ASSUMPTIONS)."""

    hpa_target_utilization: float | None = None  # hpa mode: percent
    cpu_request: float | None = None  # hpa mode: cores per pod


@dataclass
class Report:
    target: str
    signal: str
    start: datetime
    end: datetime
    step: timedelta
    steps: list[Step] = field(default_factory=list)
    cooldown: timedelta = timedelta(0)  # the target's, for the plot's shading
    schedule: Schedule = field(default_factory=Schedule)

    @property
    def actions(self) -> list[Step]:
        return [s for s in self.steps if s.acted]

    @property
    def days(self) -> float:
        return max((self.end - self.start).total_seconds() / 86400, 1e-9)

    def effects(self) -> Counter[str]:
        return Counter(effect for s in self.steps for effect in s.effects)

    def held(self) -> Counter[str]:
        """How often the cooldown, the minimum improvement or a safety guard held an action back."""
        return Counter(HELD_BY[s.held_by] for s in self.steps if s.held_by in HELD_BY)


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    step: timedelta


@dataclass(frozen=True)
class CompositeHistory:
    """A composite's period: each component's per-pod history, and how they combine."""

    components: Mapping[str, Mapping[str, Mapping[float, float]]]  # signal -> pod -> {time: value}
    weights: Mapping[str, float]
    floors: Mapping[str, float]


@dataclass(frozen=True)
class PartitionHistory:
    """Partition-aware lag over a period: each (pod, topic, partition)'s lag, and each partition's
    inflow where the signal has an inflow query, so that the replay tells a hot partition from a
    slow consumer as the live function does."""

    lag: Mapping[PartitionKey, Mapping[float, float]]
    inflow: Mapping[tuple[str, str], Mapping[float, float]] | None = None


# What a period's history is: per pod, per (pod, topic, partition) for partition-aware lag (with
# its inflow), or the components of a composite.
History = (Mapping[str, Mapping[float, float]] | Mapping[PartitionKey, Mapping[float, float]] | PartitionHistory
           | CompositeHistory)


def _samples_at(recorded: History, stamp: float, by_partition: bool) -> dict[str, float] | ByPartition:
    if isinstance(recorded, CompositeHistory):
        values = {signal: {pod: points[stamp] for pod, points in by_pod.items() if stamp in points}
                  for signal, by_pod in recorded.components.items()}
        return composite(values, recorded.weights, recorded.floors).scores
    if isinstance(recorded, PartitionHistory):
        return _partitions_at(recorded, stamp)
    if by_partition:  # the per-partition lag alone
        lag = {key: points for key, points in recorded.items() if isinstance(key, tuple)}
        return _partitions_at(PartitionHistory(lag), stamp)
    return {pod: points[stamp] for pod, points in recorded.items() if stamp in points and isinstance(pod, str)}


def _partitions_at(recorded: PartitionHistory, stamp: float) -> ByPartition:
    held: dict[str, list[PartitionLag]] = {}
    for (pod, topic, partition), points in recorded.lag.items():
        if stamp in points:
            held.setdefault(pod, []).append(PartitionLag(topic, partition, points[stamp]))
    if recorded.inflow is None:
        return ByPartition(held)
    return ByPartition(held, {key: points[stamp] for key, points in recorded.inflow.items() if stamp in points})


def _pods_of(samples: dict[str, float] | ByPartition) -> list[str]:
    return sorted(samples.held if isinstance(samples, ByPartition) else samples)


def replay(recorded: History, times: Sequence[datetime], signal: str, judging: Judging, assumed: Assumed = Assumed(),
           by_partition: bool = False) -> list[Step]:
    """``decide`` at every time, with the cooldown, the effects of its own actions and the
    back-off simulated as the live function keeps them. Pure."""
    rules, state = judging.rules, history.TargetState()
    workload = None
    if rules.mode == "hpa":
        workload = WorkloadStatus(replicas=0, hpa_name="assumed", hpa_count=1,
                                         hpa_cpu_target_utilization=assumed.hpa_target_utilization)
    steps = []
    for at in times:
        samples = _samples_at(recorded, at.timestamp(), by_partition)
        old = at - rules.min_pod_age - timedelta(days=1)
        pods = [PodState(name=pod, ready=True, owned=True, created_at=old, cpu_request=assumed.cpu_request)
                for pod in _pods_of(samples)]
        verdict = decide(signal, pods, samples, rules, at, workload=workload)
        judged: tuple[history.ActionRecord, ...] = ()
        measured = measured_skew(verdict)
        if measured is not None:
            state, judged = history.record_effects(state, signal, at, measured[0], judging.effects, gone=measured[1])
        effects = tuple(r.effect for r in judged if r.effect is not None)
        if not verdict.act:
            steps.append(Step(at, verdict, False, verdict.code if verdict.code in HELD_BY else None, effects))
            continue
        if not judging.schedule.allows(at):
            steps.append(Step(at, verdict, False, "outside_window", effects))
            continue
        check = history.check_cooldown(state, at, judging.limits)
        if check.allowed and verdict.mode == "cv" and verdict.stats is not None:
            check = history.check_hysteresis(state, at, verdict.stats.value, verdict.threshold,
                                             judging.limits.hysteresis) or check
        if not check.allowed:
            steps.append(Step(at, verdict, False, check.code, effects))
            continue
        record = history.ActionRecord(at=at, invocation="backtest", signal=signal, outcome="acted",
                                      value=verdict.stats.value if verdict.stats else None)
        state = history.TargetState(last_action=at, invocation="backtest", history=(*state.history, record))
        steps.append(Step(at, verdict, True, effects=effects))
    return steps


def step_times(start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """Every multiple of ``step`` (since the epoch) from ``start`` to ``end``. A range query that
    starts on one evaluates at exactly these instants, on Prometheus and VictoriaMetrics alike."""
    step_s = step.total_seconds()
    first = math.ceil(start.timestamp() / step_s) * step_s
    count = int((end.timestamp() - first) // step_s) + 1
    return [datetime.fromtimestamp(first + i * step_s, timezone.utc) for i in range(max(count, 0))]


def run(settings: Settings, target: Target, signal: SignalName, period: Period, assumed: Assumed,
        source: MetricsSource | None = None) -> Report:
    """Fetch the history with range queries, then replay it."""
    start, end, step = period.start, period.end, period.step
    times = step_times(start, end, step)
    report = Report(target.name, signal, start, end, step, cooldown=target.cooldown, schedule=target.schedule())
    if not times:
        return report
    # Range queries over a day take longer than the function's instant ones: at least 30 s.
    timeout = max(30.0, settings.metrics_timeout.total_seconds())
    source = source or MetricsSource(str(settings.metrics_url), timeout_seconds=timeout, session=metrics_session(settings))
    partitions_query = target.partitions_query(signal)
    recorded: History
    if signal == "composite" and target.composite is not None:
        weights = {str(s): w for s, w in target.composite.weights.items()}
        recorded = CompositeHistory(
            {s: source.query_range_by_pod(target.query_for(s), times[0], times[-1], step) for s in target.composite.weights},
            weights, {s: target.floor(s) for s in target.composite.weights})
    elif partitions_query is not None:
        inflow_query = target.inflow_query(signal)
        recorded = PartitionHistory(source.query_range_partitions(partitions_query, times[0], times[-1], step),
                                    None if inflow_query is None else
                                    source.query_range_by_partition(inflow_query, times[0], times[-1], step))
    else:
        recorded = source.query_range_by_pod(target.query_for(signal), times[0], times[-1], step)
    report.steps = replay(recorded, times, signal, Judging.of(target, signal), assumed, partitions_query is not None)
    return report


def _fmt_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _why(verdict: Verdict, rules: Rules) -> str:
    """The reason, short enough for a table row (the full one is in verdict.reason)."""
    better = f"{verdict.extra.get('improvement', 0):.0%} better"
    if rules.mode == "hpa":
        hot = sum(1 for s in verdict.selected if s.role == "hot")
        return f"{hot} pod(s) above {verdict.threshold:.3g} cores (HPA target x tolerance); {better}"
    projected = verdict.projected
    if projected is None or projected.best == projected.worst:
        return f"CV above {rules.threshold:g}; projected CV {verdict.projected_cv:.3g} after the move ({better})"
    # Partition-aware lag: the range the target's assignor can land in, judged on its worst end.
    return (f"CV above {rules.threshold:g}; projected CV {projected.best:.3g} to {projected.worst:.3g} after the move "
            f"({projected.model} assignor; {better} at worst)")


def render(report: Report, rules: Rules) -> str:
    """The report as text: the moments it would have acted, how often, and what held it back."""
    lines = [
        f"Backtest of {report.target}/{report.signal} from {_fmt_time(report.start)} to {_fmt_time(report.end)} UTC, "
        f"every {format_duration(report.step)}: {len(report.steps)} steps, "
        + (f"hpa mode (tolerance {rules.tolerance:g}, top_k {rules.top_k})" if rules.mode == "hpa"
           else f"CV threshold {rules.threshold:g}") + ".",
        "",
        "| time (UTC) | CV | pods chosen | reason |",
        "|---|---:|---|---|",
    ]
    for s in report.actions:
        cv = f"{s.verdict.stats.value:.3f}" if s.verdict.stats else "-"
        chosen = ", ".join(f"{p.pod} ({p.role}, {p.value:.4g})" for p in s.verdict.selected)
        lines.append(f"| {_fmt_time(s.at)} | {cv} | {chosen} | {_why(s.verdict, rules)} |")
    if not report.actions:
        lines.append("| - | - | - | it would not have acted in this period |")
    held = report.held()
    codes = Counter(s.verdict.code for s in report.steps)
    lines += [
        "",
        f"Would have acted {len(report.actions)} times: {len(report.actions) / report.days:.1f} per day.",
        f"Held back at {sum(held.values())} steps: by the cooldown {held['cooldown']}, by min_improvement "
        f"{held['min_improvement']}, by a safety guard {held['safety guard']}, by the floor {held['floor']}, "
        f"by a hot partition {held['hot partition']}, by the back-off after ineffective actions {held['back-off']}, "
        f"by hysteresis {held['hysteresis']}, outside the maintenance windows {held['maintenance window']}.",
        "Effects of the simulated actions, read from the history once settled: "
        + (", ".join(f"{effect} {count}" for effect, count in report.effects().most_common()) or "none judged") + ".",
        "Every step's verdict: " + ", ".join(f"{code} {count}" for code, count in codes.most_common()) + ".",
        "",
        "Assumed, because only Kubernetes knows it:",
        *[f"  - {a}" for a in ASSUMPTIONS],
    ]
    if rules.mode == "hpa":
        extra = next((s.verdict.extra for s in report.steps if "hpa_target_utilization" in s.verdict.extra), {})
        lines.append(f"  - hpa mode: the HPA's CPU target {extra.get('hpa_target_utilization', '?')}% and a CPU request of "
                     f"{extra.get('avg_cpu_request', '?')} cores per pod, as given on the command line")
    return "\n".join(lines)


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-24T00:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _replayable(target: Target, signal: SignalName) -> str:
    """Lag measured at the brokers has no history to replay: the backtest replays the signal's
    metrics template instead, and says so; without one it refuses (ValueError). Returns the note."""
    signals = tuple(target.composite.weights) if signal == "composite" and target.composite else (signal,)
    at_brokers = [s for s in signals if target.kafka_source(s) is not None]
    if not at_brokers:
        return ""
    spec, kafka = target.signals["lag"], target.kafka_source("lag")
    if spec.partitions is None and spec.query is None:
        raise ValueError("signals.lag is measured at the brokers (source: kafka), which keep no history: the backtest "
                         "cannot replay them. Give signals.lag.partitions (or query), a metrics template of the same "
                         "lag, and it replays that")
    template = "partitions" if spec.partitions is not None else "query"
    group = kafka.group if kafka is not None else ""
    return (f"Note: the function measures lag at the brokers (consumer group {group}), which keep no history: this "
            f"replays the metrics template signals.lag.{template} instead.\n")


def main(argv: list[str] | None = None, now: datetime | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rebalancer backtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the function's YAML configuration")
    parser.add_argument("--target", required=True, help="a target name from the configuration")
    parser.add_argument("--signal", choices=SIGNAL_NAMES, help="default: the target's only signal")
    parser.add_argument("--since", help="how far back from now, e.g. 24h or 7d (default 24h)")
    parser.add_argument("--start", type=_parse_time, help="ISO 8601 start (with --end, instead of --since)")
    parser.add_argument("--end", type=_parse_time, help="ISO 8601 end (default: now)")
    parser.add_argument("--step", default="1m", help="time between decisions (default 1m)")
    parser.add_argument("--metrics-url", help="override the configuration's metrics_url")
    parser.add_argument("--hpa-target-utilization", type=float, help="hpa mode: the HPA's CPU target, percent")
    parser.add_argument("--cpu-request", type=float, help="hpa mode: each pod's CPU request, cores")
    parser.add_argument("--plot", type=Path, help="draw the CV over time with the threshold and the actions (PNG)")
    args = parser.parse_args(argv)
    now = now or datetime.now(timezone.utc)
    try:
        settings = load_settings(args.config, **({"metrics_url": args.metrics_url} if args.metrics_url else {}))
        target = next((t for t in settings.targets if t.name == args.target), None)
        if target is None:
            raise ValueError(f"no target {args.target!r} in {args.config}; it has: {', '.join(t.name for t in settings.targets)}")
        signal = args.signal or (next(iter(target.signals)) if len(target.signals) == 1 else None)
        if signal is None or signal not in target.signals:
            raise ValueError(f"--signal: target {target.name} has signals {', '.join(target.signals)}; name one of them")
        if args.since and args.start:
            raise ValueError("give --since or --start/--end, not both")
        end = args.end or now
        start = args.start or end - parse_duration(args.since or "24h")
        step = parse_duration(args.step)
        if start >= end:
            raise ValueError(f"the period is empty: start {stamp(start)} is not before end {stamp(end)}")
        replayed = _replayable(target, signal)
        rules = target.rules(signal)
        if rules.mode == "hpa" and (args.hpa_target_utilization is None or args.cpu_request is None):
            raise ValueError("hpa mode: the backtest cannot ask Kubernetes; give --hpa-target-utilization and --cpu-request")
        assumed = Assumed(args.hpa_target_utilization, args.cpu_request)
        report = run(settings, target, signal, Period(start, end, step), assumed)
    except (OSError, ValueError, RebalancerError) as e:  # a CLI: what is wrong, never a traceback
        print(f"backtest: {e}", file=sys.stderr)
        return 2
    if replayed:
        print(replayed)
    print(render(report, rules))
    if args.plot:
        from rebalancer.tools.backtest_plot import plot

        plot(report, rules, args.plot)
        print(f"\nPlot written to {args.plot}")
    return 0
