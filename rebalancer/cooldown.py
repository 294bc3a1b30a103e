"""The cooldown lock: per-target state in annotations of one ConfigMap per namespace.

For target ``T`` the ConfigMap (default ``pod-rebalancer-state``) carries:

    T.pod-rebalancer.io/last-action   when the last action took the lock (RFC 3339, UTC)
    T.pod-rebalancer.io/invocation    which invocation took it
    T.pod-rebalancer.io/history       JSON list of the recent actions, newest last (bounded)

The lock is taken *before* acting, by a write conditioned on the resourceVersion that was read
(or a create, when the ConfigMap does not exist yet): of any number of concurrent invocations
exactly one write succeeds; the others get 409 and stand down. The outcome of the actions is
written back afterwards into the same history entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, cast

from rebalancer.adapters.kube import ConfigMapState
from rebalancer.core.history import EFFECTS, ActionRecord, Effect, TargetState
from rebalancer.core.proposals import Proposal
from rebalancer.core.timestamps import parse_stamp, stamp
from rebalancer.errors import KubeConflictError, StateError
from rebalancer.ports import StateConfigMaps

ANNOTATION_DOMAIN = "pod-rebalancer.io"
FINISH_ATTEMPTS = 5


def proposals_key(target: str) -> str:
    return f"{target}.{ANNOTATION_DOMAIN}/proposals"


PROPOSALS_KEPT = 10


def encode_proposals(target: str, proposals: tuple[Proposal, ...]) -> dict[str, str]:
    kept = sorted(proposals, key=lambda p: p.at)[-PROPOSALS_KEPT:]
    return {proposals_key(target): json.dumps([{**asdict(p), "at": stamp(p.at), "expires": stamp(p.expires),
                                                "pods": [dict(x) for x in p.pods]} for p in kept], separators=(",", ":"))}


def decode_proposals(annotations: dict[str, str], target: str) -> tuple[Proposal, ...]:
    """A target's proposals; unreadable ones are a StateError, as for the rest of the state."""
    try:
        return tuple(Proposal(id=str(r["id"]), signal=str(r["signal"]), at=parse_stamp(r["at"]),
                              expires=parse_stamp(r["expires"]), invocation=str(r["invocation"]), value=r.get("value"),
                              threshold=float(r["threshold"]), pods=tuple(dict(x) for x in r["pods"]),
                              status=str(r.get("status", "pending")))
                     for r in json.loads(annotations.get(proposals_key(target), "[]")))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StateError(f"the proposals annotation of target {target} cannot be read ({type(e).__name__}); "
                         f"fix or remove it: {proposals_key(target)}") from e


def annotation_keys(target: str) -> tuple[str, str, str]:
    prefix = f"{target}.{ANNOTATION_DOMAIN}"
    return f"{prefix}/last-action", f"{prefix}/invocation", f"{prefix}/history"


def _record_to_json(record: ActionRecord) -> dict[str, Any]:
    out = asdict(record)
    out["at"] = stamp(record.at)
    out["pods"] = [dict(p) for p in record.pods]
    for unjudged in ("effect", "value_after", "effect_at"):  # absent until the action's effect is measured
        if out[unjudged] is None:
            del out[unjudged]
    if record.effect_at is not None:
        out["effect_at"] = stamp(record.effect_at)
    return out


def _record_from_json(raw: dict[str, Any]) -> ActionRecord:
    return ActionRecord(
        at=parse_stamp(raw["at"]),
        invocation=str(raw["invocation"]),
        signal=str(raw.get("signal", "")),
        outcome=str(raw.get("outcome", "")),
        value=raw.get("value"),
        threshold=raw.get("threshold"),
        pods=tuple(dict(p) for p in raw.get("pods") or []),
        effect=_effect(raw.get("effect")),
        value_after=raw.get("value_after"),
        effect_at=parse_stamp(raw["effect_at"]) if raw.get("effect_at") else None,
    )


def _effect(raw: Any) -> Effect | None:
    if raw is None or raw in EFFECTS:
        return cast("Effect | None", raw)
    raise ValueError(f"unknown effect {raw!r}")


def decode_state(annotations: dict[str, str], target: str) -> TargetState:
    """Read a target's state. Unreadable state refuses action (StateError): guessing could act twice."""
    last_key, invocation_key, history_key = annotation_keys(target)
    try:
        last = parse_stamp(annotations[last_key]) if last_key in annotations else None
        history = tuple(_record_from_json(r) for r in json.loads(annotations.get(history_key, "[]")))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StateError(f"the state annotations of target {target} cannot be read ({type(e).__name__}); "
                         f"fix or remove them: {last_key}, {history_key}") from e
    return TargetState(last_action=last, invocation=annotations.get(invocation_key), history=history)


def encode_lock(target: str, state: TargetState, entry: ActionRecord, history_limit: int) -> dict[str, str]:
    """The annotations that take the lock: last action now, and the entry appended to the history."""
    last_key, invocation_key, history_key = annotation_keys(target)
    history = [*state.history, entry][-history_limit:]
    return {
        last_key: stamp(entry.at),
        invocation_key: entry.invocation,
        history_key: json.dumps([_record_to_json(r) for r in history], separators=(",", ":")),
    }


def encode_finished(target: str, state: TargetState, entry: ActionRecord, history_limit: int) -> dict[str, str]:
    """The history with ``entry`` replacing its in-progress version (or appended if it was pushed out)."""
    history = tuple(r for r in state.history if not (r.invocation == entry.invocation and r.at == entry.at))
    return encode_history(target, replace(state, history=(*history, entry)), history_limit)


def encode_history(target: str, state: TargetState, history_limit: int) -> dict[str, str]:
    """The history annotation of ``state`` as it stands (after effects were recorded into it)."""
    _, _, history_key = annotation_keys(target)
    history = sorted(state.history, key=lambda r: r.at)[-history_limit:]
    return {history_key: json.dumps([_record_to_json(r) for r in history], separators=(",", ":"))}


class StateStore:
    """Reads and writes the state ConfigMap through the Kubernetes adapter."""

    def __init__(self, kube: StateConfigMaps, configmap: str, history_limit: int) -> None:
        self.kube, self.configmap, self.history_limit = kube, configmap, history_limit

    def read(self, namespace: str) -> ConfigMapState:
        return self.kube.read_configmap(namespace, self.configmap)

    def _write_if_unchanged(self, namespace: str, snapshot: ConfigMapState,
                            annotations: dict[str, str]) -> ConfigMapState | None:
        """Write ``annotations`` on the condition that the ConfigMap is still at ``snapshot`` (or
        still absent); the ConfigMap as written, or None when another writer got there first."""
        try:
            version = self.kube.write_configmap_annotations(namespace, self.configmap, annotations, snapshot.resource_version)
        except KubeConflictError:
            return None
        return ConfigMapState({**snapshot.annotations, **annotations}, version)

    def _update(self, namespace: str, change: Callable[[ConfigMapState], dict[str, str]]) -> None:
        """Re-read and write ``change(the ConfigMap read)`` until no other writer came between,
        at most FINISH_ATTEMPTS times: other targets' writers may touch the same ConfigMap."""
        for _ in range(FINISH_ATTEMPTS):
            snapshot = self.read(namespace)
            if self._write_if_unchanged(namespace, snapshot, change(snapshot)) is not None:
                return
        raise KubeConflictError(f"ConfigMap {namespace}/{self.configmap} kept changing under {FINISH_ATTEMPTS} writes",
                                status=409, reason="Conflict")

    def take(self, namespace: str, target: str, snapshot: ConfigMapState, state: TargetState, entry: ActionRecord) -> bool:
        """Take the lock for ``target`` (``state`` decoded from ``snapshot``): True when this
        invocation's conditional write won."""
        return self._write_if_unchanged(namespace, snapshot, encode_lock(target, state, entry, self.history_limit)) is not None

    def write_history(self, namespace: str, target: str, snapshot: ConfigMapState, state: TargetState) -> ConfigMapState | None:
        """Write ``state``'s history if the ConfigMap is still at ``snapshot`` (see _write_if_unchanged)."""
        return self._write_if_unchanged(namespace, snapshot, encode_history(target, state, self.history_limit))

    def write_proposals(self, namespace: str, target: str, snapshot: ConfigMapState,
                        proposals: tuple[Proposal, ...]) -> ConfigMapState | None:
        """Write the proposals if the ConfigMap is still at ``snapshot`` (see _write_if_unchanged)."""
        return self._write_if_unchanged(namespace, snapshot, encode_proposals(target, proposals))

    def mark_approved(self, namespace: str, target: str, proposal_id: str) -> None:
        """Record that a proposal was carried out."""
        self._update(namespace, lambda snapshot: encode_proposals(target, tuple(
            replace(p, status="approved") if p.id == proposal_id else p
            for p in decode_proposals(snapshot.annotations, target))))

    def finish(self, namespace: str, target: str, entry: ActionRecord) -> None:
        """Write the outcome into the history. The lock is ours, but other targets' writers may
        touch the same ConfigMap meanwhile, so this re-reads and retries on conflict."""
        self._update(namespace, lambda snapshot: encode_finished(
            target, decode_state(snapshot.annotations, target), entry, self.history_limit))


def finished(entry: ActionRecord, outcome: str, pods: list[dict[str, Any]]) -> ActionRecord:
    return replace(entry, outcome=outcome, pods=tuple(pods))
