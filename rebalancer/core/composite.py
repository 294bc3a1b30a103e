"""A composite load per pod from several signals, as PostHog's pod-rebalancer scores pods. Pure.

Each component is normalised by its mean over the pods, so that cores, messages and bytes add
up: a pod at the mean of every signal scores the sum of the weights. A component whose mean is
below its floor is left out: near-idle CPU, say, would otherwise make noise look like load. The
decision then takes the CV of the scores, as for any signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Composite:
    scores: dict[str, float]  # pod -> weighted sum of its normalised components
    components: dict[str, dict[str, float]]  # pod -> signal -> raw value
    means: dict[str, float]  # signal -> its mean over the pods scored
    weights: dict[str, float]  # the components that count
    left_out: dict[str, str] = field(default_factory=dict)  # signal -> why it does not count


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0


def composite(values: Mapping[str, Mapping[str, float]], weights: Mapping[str, float],
              floors: Mapping[str, float]) -> Composite:
    """Scores of the pods that have a usable value for every counted component. ``values`` is
    signal -> pod -> value; pods missing a component are not scored (the decision counts them
    as missing data)."""
    left_out: dict[str, str] = {}
    counted: dict[str, float] = {}
    pods = set.intersection(*(set(values.get(s, {})) for s in weights)) if weights else set()
    pods = {p for p in pods if all(_usable(values[s][p]) for s in weights)}
    means: dict[str, float] = {}
    for signal, weight in weights.items():
        mean = math.fsum(values[signal][p] for p in pods) / len(pods) if pods else 0.0
        means[signal] = mean
        if mean <= 0 or mean < floors.get(signal, 0.0):
            left_out[signal] = f"its mean {mean:.4g} is below its floor {floors.get(signal, 0.0):.4g}"
        else:
            counted[signal] = weight
    scores = {p: math.fsum(w * values[s][p] / means[s] for s, w in counted.items()) for p in sorted(pods)}
    components = {p: {s: values[s][p] for s in weights} for p in sorted(pods)}
    return Composite(scores if counted else {}, components, means, counted, left_out)
