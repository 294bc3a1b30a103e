"""Kubernetes label selectors, as the API server evaluates them (a test double's copy).

Follows https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors:
comma-separated requirements, all of which must hold (AND). Equality-based: ``k=v``, ``k==v``,
``k!=v`` (``!=`` also matches objects without the key). Set-based: ``k in (a,b)``,
``k notin (a,b)`` (also matches objects without the key), ``k`` (exists), ``!k`` (does not
exist). The structured form (``matchLabels`` / ``matchExpressions``, used by PDBs) is
converted by ``from_label_selector``; a nil selector matches nothing, an empty one everything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(\s*({_VALUE}(?:\s*,\s*{_VALUE})*)\s*\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


class SelectorError(ValueError):
    """The selector does not parse; the API server answers 400 BadRequest."""


Labels = Mapping[str, str]
Requirement = Callable[[Labels], bool]


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...]
    matches_nothing: bool = False

    def matches(self, labels: Labels | None) -> bool:
        if self.matches_nothing:
            return False
        labels = labels or {}
        return all(requirement(labels) for requirement in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a ``( ... )`` value set."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise SelectorError(f"unbalanced '(' in selector {text!r}")
    parts.append("".join(current))
    return parts


def _requirement(term: str) -> Requirement:
    if match := _SET_RE.match(term):
        key, operator, raw_values = match.groups()
        values = frozenset(v.strip() for v in raw_values.split(","))
        if operator == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    if match := _EQ_RE.match(term):
        key, operator, value = match.groups()
        if operator == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    if match := _EXISTS_RE.match(term):
        negated, key = match.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {term.strip()!r}")


def parse(text: str | None) -> Selector:
    """Parse a ``labelSelector`` query parameter. Empty or absent selects everything."""
    if text is None or not text.strip():
        return Selector(())
    return Selector(tuple(_requirement(term) for term in _split_top_level(text)))


def from_label_selector(selector: Mapping[str, Any] | None) -> Selector:
    """The structured ``metav1.LabelSelector``: nil matches nothing, ``{}`` matches everything."""
    if selector is None:
        return Selector((), matches_nothing=True)
    requirements: list[Requirement] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        requirements.append(lambda labels, k=key, v=value: labels.get(k) == v)
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], frozenset(expression.get("values") or [])
        if operator == "In":
            requirements.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
        elif operator == "NotIn":
            requirements.append(lambda labels, k=key, vs=values: k not in labels or labels[k] not in vs)
        elif operator == "Exists":
            requirements.append(lambda labels, k=key: k in labels)
        elif operator == "DoesNotExist":
            requirements.append(lambda labels, k=key: k not in labels)
        else:
            raise SelectorError(f"{operator!r} is not a valid label selector operator")
    return Selector(tuple(requirements))
