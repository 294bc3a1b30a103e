"""Little's law for a consumer group: a partition's lag is its inflow times its consumer's delay. Pure.

A consumer that keeps up is, on average, some seconds behind its partitions: the time between a
message's arrival and its commit (the processing, the poll, the commit interval). Its lag is
then the inflow of what it holds times that delay. That says what a moved partition will
carry: its inflow (which moves with it) times its new consumer's delay, whatever it carried
before. A slow consumer's backlog drains; a busy partition stays busy.

A consumer's delay is not a constant, though. Measured on a real group, the same healthy consumer's
delay moved by up to 30 % across a rebalance (fetch sessions restart, the commit cycle shifts, its
load changes), and a replacement's is unknown before it runs. So the projection does not pin each
consumer to its delay now: every consumer after the move is taken anywhere in the band the
consumers that stay span now, widened to at least ``delay_spread`` either way of its middle,
and both ends of what that allows are projected.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rebalancer.core.partitions import PartitionLag
from rebalancer.core.statistics import coefficient_of_variation

Held = Mapping[str, Sequence[PartitionLag]]
Valued = dict[str, tuple[PartitionLag, ...]]


@dataclass(frozen=True)
class DelayBand:
    """The consumers' delays (seconds) the projection allows after the move."""

    low: float
    high: float


def consumer_delays(held: Held, inflow: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """Each consumer's delay: its lag over its inflow. A consumer whose partitions take in nothing
    has no delay to read, and is left out."""
    delays = {}
    for pod, partitions in held.items():
        rate = math.fsum(inflow.get((p.topic, p.partition), 0.0) for p in partitions)
        if partitions and rate > 0:
            delays[pod] = math.fsum(p.lag for p in partitions) / rate
    return delays


def delay_band(staying: Held, inflow: Mapping[tuple[str, str], float], spread: float) -> DelayBand | None:
    """From the shortest to the longest delay of the consumers that stay, and at least ``spread``
    either way of their middle: a few consumers read alike by chance, and what one reads now it
    need not read after the move. None when none of them takes in anything."""
    delays = consumer_delays(staying, inflow).values()
    if not delays:
        return None
    middle = (min(delays) + max(delays)) / 2
    return DelayBand(min(min(delays), middle * (1 - spread)), max(max(delays), middle * (1 + spread)))


def at_delays(held: Held, inflow: Mapping[tuple[str, str], float], delay: Mapping[str, float]) -> Valued:
    """The assignment with each partition valued at its inflow times its consumer's delay."""
    return {pod: tuple(PartitionLag(p.topic, p.partition, inflow.get((p.topic, p.partition), 0.0) * delay[pod])
                       for p in partitions) for pod, partitions in held.items()}


def delay_ends(held: Held, inflow: Mapping[tuple[str, str], float], band: DelayBand) -> tuple[Valued, Valued]:
    """One assignment, every consumer's delay anywhere in ``band``: the valuation with the lowest
    CV and the one with the highest.

    The CV is quasi-convex in the consumers' loads, so its highest over the box of delays is at a
    corner, and the corner is a threshold: the consumers taking in the most at the longest delay,
    the rest at the shortest (checked against every corner in the tests). At its lowest, every
    consumer is as close as its band lets it be to one common load, the load that is itself the
    mean of the squares over the mean (where the CV's gradient vanishes); that common load is
    found exactly, one stretch between the band's edges at a time."""
    rate = {pod: math.fsum(inflow.get((p.topic, p.partition), 0.0) for p in partitions)
            for pod, partitions in held.items() if partitions}
    by_rate = sorted(rate, key=lambda pod: (rate[pod], pod))
    corners = [{pod: band.high if i >= k else band.low for i, pod in enumerate(by_rate)}
               for k in range(len(by_rate) + 1)]
    highest = max(corners, key=lambda delay: _cv({pod: rate[pod] * delay[pod] for pod in rate}))
    common = _closest_common_load(rate, band)
    lowest = {pod: min(max(common, rate[pod] * band.low), rate[pod] * band.high) / rate[pod] if rate[pod] > 0
              else band.low for pod in rate}
    return at_delays(held, inflow, {**dict.fromkeys(held, band.low), **lowest}), \
        at_delays(held, inflow, {**dict.fromkeys(held, band.low), **highest})


def _closest_common_load(rate: Mapping[str, float], band: DelayBand) -> float:
    """The common load t minimising the CV of min(max(t, low_i), high_i): between two of the
    bounds the clamped members are fixed, and the CV is lowest at t = (sum of their squares) /
    (sum of them), kept inside the stretch."""
    bounds = sorted({r * band.low for r in rate.values()} | {r * band.high for r in rate.values()})

    def loads(t: float) -> dict[str, float]:
        return {pod: min(max(t, r * band.low), r * band.high) for pod, r in rate.items()}

    candidates = list(bounds)
    for start, end in itertools.pairwise(bounds):
        middle = loads((start + end) / 2)
        fixed = [load for pod, load in middle.items() if not rate[pod] * band.low < load < rate[pod] * band.high]
        squares, total = math.fsum(x * x for x in fixed), math.fsum(fixed)
        if total > 0:
            candidates.append(min(max(squares / total, start), end))
    return min(candidates, key=lambda t: _cv(loads(t)))


def _cv(loads: Mapping[str, float]) -> float:
    values = list(loads.values())
    return coefficient_of_variation(values).value if values and math.fsum(values) > 0 else 0.0
