"""The statistics of a skew: the coefficient of variation, and what it becomes when pods leave. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean


@dataclass(frozen=True)
class Stats:
    value: float  # coefficient of variation: population stddev / mean
    mean: float
    stddev: float
    pods: int  # number of pods the statistics were computed over



def coefficient_of_variation(values: Sequence[float]) -> Stats:
    """Population stddev over mean. The caller guarantees at least one value and a mean > 0.

    Two passes with ``math.fsum`` (correctly rounded sums), not ``statistics.pstdev``: that one
    computes in exact fractions and took half of a 10,000-pod decision; this agrees with it to
    within a few units in the last place."""
    count = len(values)
    mean = math.fsum(values) / count
    stddev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / count)
    return Stats(value=stddev / mean, mean=mean, stddev=stddev, pods=count)


def cv_or_zero(values: Sequence[float]) -> float:
    """The CV of loads that may be none or all zero (a projection's): 0 then, no skew at all."""
    return coefficient_of_variation(values).value if values and fmean(values) > 0 else 0.0


def projected_cv(values: Mapping[str, float], removed: Sequence[str]) -> float:
    """CV after the removed pods' load is spread evenly over the pods that stay.

    This is what a consumer-group rebalance does to a first approximation: the partitions (or
    requests) an evicted pod was serving move to the others.
    """
    staying = [v for pod, v in values.items() if pod not in removed]
    if not staying:
        raise ValueError("projection needs at least one pod that stays")
    moved = sum(values[pod] for pod in removed) / len(staying)
    after = [v + moved for v in staying]
    if fmean(after) == 0:
        return 0.0
    return coefficient_of_variation(after).value


def fmt(x: float) -> str:
    # Lag runs to millions of messages: 50,000 reads better than 5e+04.
    return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"

