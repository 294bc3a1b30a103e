"""`make bench-effects` (and `make bench`): what a rebalance really does to lag, on a real group.

Each run is one seeded scenario on a real KRaft broker (tests/kafkabroker.py) and a real
consumer group (tests/kafka/consumer.py, librdkafka), with a producer at seeded per-partition
rates:
- ``slow consumer``: one topic of ten partitions, four consumers under the new protocol's
  ``uniform`` assignor; one consumer (chosen by the seed) takes 150 ms a message.
- ``uneven assignment``: three topics of five partitions, four consumers under the new
  protocol's ``range`` assignor, joining one after another so that one of them keeps every
  topic's extra partition (six against three).
- ``slow consumer, classic protocol``: the first, with the classic protocol's
  ``cooperative-sticky`` assignor (the client assigns).

A run measures each partition's lag at the brokers (the high watermark minus the committed
offset, averaged over twenty samples at random intervals), who holds it and its inflow (the high
watermark's rate over the same seconds), and hands that to the decision core as the function
would: ``decide`` selects the hottest consumer and projects the CV after its eviction, as the
target's assignor moves partitions and the consumers' delays allow (the range), and as the
projection before this model did (biggest partition first to the least loaded consumer that
stays). Then the consumer is evicted as the kubelet does it (SIGTERM: it leaves the group), a
replacement starts a second later under a new name, and once the group is stable again and the
backlog drained, the lag is measured the same way (the CV the group settled at), and once more
right after (how far two readings of one settled group differ). Both sides are averaged alike:
one sample of a healthy consumer's lag is mostly where it is in its commit cycle, and
projecting from noisier values than the outcome is measured with would show the noise
regressing to the mean, not the model.

The consumers run as plain processes here, not as pods: the model is about the brokers'
assignor, and a pod adds nothing to what the group does (the Kafka tests run the same consumer
as pods on the real control plane). It prints a table and, with --write, writes it into
docs/benchmarks.md. The broker, the consumers and the producers stop on Ctrl-C, SIGTERM or SIGHUP
(tests/servers.Stopping; a second signal during the clean-up is ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import publish  # noqa: E402
from rebalancer.core.assignors import Outcome  # noqa: E402
from rebalancer.core.delays import delay_ends, delays_after  # noqa: E402
from rebalancer.core.partitions import ByPartition, PartitionLag, assignment, culprit  # noqa: E402
from rebalancer.core.policy import decide  # noqa: E402
from rebalancer.core.statistics import coefficient_of_variation  # noqa: E402
from rebalancer.core.workload import Assignor, PodState, Rules  # noqa: E402
from tests.kafkabroker import CONSUMER, KafkaBroker  # noqa: E402
from tests.servers import Stopping, free_port, stop_with_parent, wait_for  # noqa: E402

MEMBERS = 4
SLOW_MS = 150
BASE_RATE = 20.0  # messages per second into a partition, before the seed's spread
BEFORE_SAMPLES, AFTER_SAMPLES = 20, 20


@dataclass(frozen=True)
class Scenario:
    name: str
    assignor: Assignor  # the brokers' (group.remote.assignor), and the target's `assignor`
    topics: int
    partitions: int  # per topic
    slow: bool
    join_one_by_one: bool
    protocol: str = "consumer"  # KIP-848's, the brokers assigning; or "classic" (cooperative-sticky, in the client)


SCENARIOS = {
    "slow": Scenario("slow consumer", "uniform", topics=1, partitions=10, slow=True, join_one_by_one=False),
    "uneven": Scenario("uneven assignment", "range", topics=3, partitions=5, slow=False, join_one_by_one=True),
    "classic": Scenario("slow consumer, classic protocol", "cooperative-sticky", topics=1, partitions=10, slow=True,
                        join_one_by_one=False, protocol="classic"),
}


@dataclass(frozen=True)
class Run:
    scenario: str
    seed: int
    before: float  # the CV when the function decided
    evicted: str
    counts: str  # partitions per consumer before
    best: float
    worst: float
    old: float  # the projection before the assignor model
    measured: float  # the CV the group settled at
    again: float  # the same, read once more right after: how far two readings of one settled group differ
    counts_after: str
    real: tuple[float, float]  # the model's range for the assignment the group really made (same delays)
    raw: dict = field(default_factory=dict, compare=False, repr=False)  # what was measured, for --raw

    @property
    def inside(self) -> bool:
        return self.best - 1e-9 <= self.measured <= self.worst + 1e-9

    @property
    def real_inside(self) -> bool:
        return self.real[1] >= self.best - 1e-9 and self.real[0] <= self.worst + 1e-9

    @property
    def midpoint_error(self) -> float:
        return abs((self.best + self.worst) / 2 - self.measured)

    @property
    def old_error(self) -> float:
        return abs(self.old - self.measured)


class Consumer:
    """One member of the group, as a pod's container would run it."""

    def __init__(self, broker: KafkaBroker, name: str, topics: Sequence[str], group: str, scenario: Scenario,
                 slow_file: Path, log: Path) -> None:
        self.name = name
        env = {**os.environ, "POD_NAME": name, "POD_IP": "127.0.0.1", "METRICS_PORT": str(free_port()),
               "BOOTSTRAP_SERVERS": broker.bootstrap, "TOPIC": ",".join(topics), "GROUP_ID": group,
               "GROUP_PROTOCOL": scenario.protocol, "GROUP_REMOTE_ASSIGNOR": scenario.assignor,
               "SLOW_PODS_FILE": str(slow_file), "PYTHONUNBUFFERED": "1"}
        self.log = log.open("a")
        self.process = subprocess.Popen([sys.executable, str(CONSUMER)], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        preexec_fn=stop_with_parent)

    def stop(self) -> None:
        """SIGTERM, as the kubelet sends it: the consumer leaves its group and exits."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Producers:
    def __init__(self, broker: KafkaBroker, rates: Mapping[str, dict[int, float]], seconds: float) -> None:
        self.processes = [broker.produce(topic, by_partition, seconds) for topic, by_partition in rates.items()]

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def lag_now(broker: KafkaBroker, group: str, topics: Sequence[str]) -> dict[tuple[str, int], float]:
    return {(topic, partition): float(lag) for topic in topics for partition, lag in broker.lag(group, topic).items()}


def measured(broker: KafkaBroker, group: str, topics: Sequence[str], partitions: int,
             samples: int) -> tuple[dict[str, list[PartitionLag]], dict[tuple[str, str], float]]:
    """Each member's partitions with their lag averaged over ``samples`` taken 0.2 to 0.6 s apart,
    at random: a consumer commits every 0.5 s, so samples a whole second apart would all catch
    it at the same point of its cycle, and its lag would read as its commit phase. The group
    unchanged from the first sample to the last (else it starts again). Also each partition's
    inflow over the same seconds (messages/s), as an inflow query would give it."""
    jitter = random.Random()
    while True:
        first = broker.wait_for_group(group, MEMBERS, partitions)
        started, marks = time.monotonic(), watermarks(broker, topics)
        sums: dict[tuple[str, int], float] = {}
        for _ in range(samples):
            for key, lag in lag_now(broker, group, topics).items():
                sums[key] = sums.get(key, 0.0) + lag
            time.sleep(jitter.uniform(0.2, 0.6))
        seconds, now = time.monotonic() - started, watermarks(broker, topics)
        last = broker.group(group)
        if [m.assigned for m in last.members] == [m.assigned for m in first.members] and last.state == "STABLE":
            break
    held = {m.client_id: [PartitionLag(topic, str(n), sums[(topic, n)] / samples) for topic, n in m.assigned]
            for m in first.members}
    return held, {(topic, str(n)): (now[(topic, n)] - marks[(topic, n)]) / seconds for topic, n in now}


def watermarks(broker: KafkaBroker, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    return {(topic, n): offset for topic in topics for n, offset in broker.high_watermarks(topic).items()}


def cv_of(held: Mapping[str, Sequence[PartitionLag]]) -> float:
    """The CV over the consumers holding partitions, as the projection's outcomes take it."""
    return Outcome({pod: tuple(partitions) for pod, partitions in held.items()}).cv


def real_assignment(held: Mapping[str, Sequence[PartitionLag]], after: Mapping[str, Sequence[PartitionLag]],
                    evicted: str, inflow: Mapping[tuple[str, str], float], spread: float) -> tuple[float, float]:
    """The CV range the model gives for the assignment the group really made: each partition at
    its inflow times a delay anywhere in the band of the consumers that stayed. What separates it
    from the projected range is the assignor; from the measured CV, the delays."""
    delays = delays_after({pod: p for pod, p in held.items() if pod != evicted}, inflow, spread)
    assert delays is not None, "every consumer that stays takes in messages"
    lowest, highest = delay_ends(after, inflow, delays)
    return cv_of(lowest), cv_of(highest)


def old_projection(held: Mapping[str, Sequence[PartitionLag]], removed: str, draining: bool) -> float:
    """The projection before the assignor model: the removed consumer's partitions, biggest first,
    each to the consumer that stays with the least lag then; its replacement not counted."""
    typical = statistics.median(p.lag for partitions in held.values() for p in partitions)
    loads = {pod: math.fsum(p.lag for p in partitions) for pod, partitions in held.items() if pod != removed}
    for partition in sorted((min(p.lag, typical) if draining else p.lag for p in held[removed]), reverse=True):
        receiver = min(loads, key=lambda pod: (loads[pod], pod))
        loads[receiver] += partition
    return coefficient_of_variation(list(loads.values())).value


def one_run(broker: KafkaBroker, scenario_key: str, seed: int, workdir: Path, stopping: Stopping) -> Run:
    scenario, rng = SCENARIOS[scenario_key], random.Random(seed)
    tag = f"{scenario_key}-{seed}-{uuid.uuid4().hex[:4]}"
    topics = [broker.create_topic(f"events-{tag}-{i}", scenario.partitions) for i in range(scenario.topics)]
    group, slow_file, log = f"group-{tag}", workdir / f"slow-{tag}", workdir / f"consumers-{tag}.log"
    slow_file.write_text("")
    rates = {topic: {p: round(BASE_RATE * rng.uniform(0.7, 1.3), 1) for p in range(scenario.partitions)} for topic in topics}
    total = scenario.topics * scenario.partitions
    consumers: list[Consumer] = []

    def start(name: str) -> Consumer:
        consumer = stopping.add(Consumer(broker, name, topics, group, scenario, slow_file, log))
        consumers.append(consumer)
        return consumer

    try:
        for i in range(MEMBERS):
            start(f"consumer-{tag}-{i}")
            if scenario.join_one_by_one:
                broker.wait_for_group(group, i + 1, total)
        broker.wait_for_group(group, MEMBERS, total)
        if scenario.slow:
            slow_file.write_text(f"{rng.choice(consumers).name} {SLOW_MS}\n")
        producers = stopping.add(Producers(broker, rates, seconds=600))
        time.sleep(20 if scenario.slow else 10)  # a slow consumer's backlog builds; steady lag elsewhere

        held, inflow = measured(broker, group, topics, total, BEFORE_SAMPLES)
        pods = [PodState(name=pod, ready=True, owned=True, created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
                for pod in held]
        # The hottest consumer alone, whatever the CV and the improvement: every run moves one.
        rules = Rules(threshold=0.01, floor=0, min_pods=2, min_pod_age=timedelta(0), selection="hottest",
                      max_pods_per_action=1, min_improvement=0.0, assignor=scenario.assignor)
        verdict = decide("lag", pods, ByPartition(held, inflow), rules, datetime.now(timezone.utc))
        if not verdict.selected or verdict.projected is None:
            raise RuntimeError(f"the decision selected nothing to move: {verdict.code}: {verdict.reason}")
        evicted = verdict.selected[0].pod
        assigned = assignment(list(held), held)
        stats = verdict.stats
        assert stats is not None
        draining = bool(culprit(assigned, evicted, stats.mean, rules.hot_partition_share).why)

        victim = next(c for c in consumers if c.name == evicted)
        victim.stop()
        time.sleep(1)  # the replacement pod starts
        start(f"consumer-{tag}-{MEMBERS}")
        broker.wait_for_group(group, MEMBERS, total)
        # Settled: the group stable, and the evicted consumer's backlog drained.
        wait_for(lambda: max(lag_now(broker, group, topics).values()) < 5 * BASE_RATE, "the backlog to drain",
                 timeout=90, interval=1)
        time.sleep(3)
        after, inflow_after = measured(broker, group, topics, total, AFTER_SAMPLES)
        again, _ = measured(broker, group, topics, total, AFTER_SAMPLES)
        producers.stop()
        raw = {"scenario": scenario_key, "seed": seed, "assignor": scenario.assignor, "evicted": evicted,
               "draining": draining, "before": _plain(held), "after": _plain(after),
               "inflow": _flat(inflow), "inflow_after": _flat(inflow_after), "again": _plain(again)}
        return Run(scenario.name, seed, stats.value, evicted, _counts(held), verdict.projected.best,
                   verdict.projected.worst, old_projection(held, evicted, draining), cv_of(after), cv_of(again), _counts(after),
                   real_assignment(held, after, evicted, inflow, rules.delay_spread), raw)
    finally:
        for consumer in consumers:
            consumer.stop()


def _plain(held: Mapping[str, Sequence[PartitionLag]]) -> dict[str, list[tuple[str, str, float]]]:
    return {pod: [(p.topic, p.partition, p.lag) for p in partitions] for pod, partitions in held.items()}


def _flat(inflow: Mapping[tuple[str, str], float]) -> list[tuple[str, str, float]]:
    return [(topic, partition, rate) for (topic, partition), rate in inflow.items()]


def _counts(held: Mapping[str, Sequence[PartitionLag]]) -> str:
    """Partitions per consumer, most first: 6/3/3/3."""
    return "/".join(str(n) for n in sorted((len(p) for p in held.values()), reverse=True))


def render(runs: list[Run]) -> str:
    lines = [
        f"Measured by `make bench` on {datetime.now(timezone.utc):%Y-%m-%d}: a real KRaft broker (Kafka 4.4.0), "
        f"{MEMBERS} librdkafka consumers, lag at the brokers averaged over {BEFORE_SAMPLES} samples before, "
        f"{AFTER_SAMPLES} after, and {AFTER_SAMPLES} again right after that; inflow from the high watermarks over "
        "the same seconds.",
        "",
        "| scenario | seed | partitions per consumer before | CV before | evicted | projected range (best to worst) "
        "| measured CV after | inside | midpoint error | read again | old projection | old error "
        "| partitions per consumer after | the real assignment, projected | inside |",
        "|---|---:|---|---:|---|---|---:|:-:|---:|---:|---:|---:|---|---|:-:|",
    ]
    for r in runs:
        real = f"{r.real[0]:.3f}" if r.real[0] == r.real[1] else f"{r.real[0]:.3f} to {r.real[1]:.3f}"
        lines.append(f"| {r.scenario} | {r.seed} | {r.counts} | {r.before:.3f} | {r.evicted.rsplit('-', 1)[-1]} "
                     f"| {r.best:.3f} to {r.worst:.3f} | {r.measured:.3f} | {'yes' if r.inside else 'no'} "
                     f"| {r.midpoint_error:.3f} | {r.again:.3f} | {r.old:.3f} | {r.old_error:.3f} | {r.counts_after} "
                     f"| {real} | {'yes' if r.real_inside else 'no'} |")
    lines += ["", "| scenario | runs | measured inside the range | median midpoint error | median old projection error "
              "| median difference between two readings | the real assignment inside the range |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r.scenario for r in runs):
        mine = [r for r in runs if r.scenario == name]
        lines.append(f"| {name} | {len(mine)} | {sum(r.inside for r in mine)} of {len(mine)} "
                     f"| {statistics.median(r.midpoint_error for r in mine):.3f} "
                     f"| {statistics.median(r.old_error for r in mine):.3f} "
                     f"| {statistics.median(abs(r.again - r.measured) for r in mine):.3f} "
                     f"| {sum(r.real_inside for r in mine)} of {len(mine)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="seeded runs per scenario")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--raw", type=Path, help="also write each run's measured lag, partition by partition (JSON lines)")
    args = parser.parse_args(argv)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="rebalancer-effects-") as tmp, Stopping() as stopping:
        broker = stopping.add(KafkaBroker(Path(tmp) / "kafka")).start()
        for key in args.scenarios:
            for seed in range(args.first_seed, args.first_seed + args.runs):
                began = time.monotonic()
                run = one_run(broker, key, seed, Path(tmp), stopping)
                runs.append(run)
                if args.raw:
                    with args.raw.open("a") as raw:
                        raw.write(json.dumps(run.raw) + "\n")
                print(f"{run.scenario} seed {seed}: CV {run.before:.3f} -> projected {run.best:.3f} to {run.worst:.3f}, "
                      f"measured {run.measured:.3f} (old projection {run.old:.3f}), {time.monotonic() - began:.0f} s",
                      flush=True)
    publish(render(runs), "effects", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
