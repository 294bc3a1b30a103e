"""A consumer group as its brokers describe it, turned into each pod's partitions and their lag. Pure.

The brokers know what the metrics backend can only be told: who holds which partition, the
offsets the group committed, and the high watermarks, all as of now. Each partition's lag is its
high watermark minus the committed offset (from its earliest offset when nothing was committed:
a consumer without a committed offset starts there under ``auto.offset.reset=earliest``, and
that is the backlog it faces). A member is mapped to a pod of the target by its ``client.id``
(the pod's name) or by its host (the pod's IP); what maps to nothing is reported, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from rebalancer.core.partitions import ByPartition, PartitionLag

PodFrom = Literal["client_id", "host"]
TopicPartition = tuple[str, int]

# The states the brokers report. A consumer-protocol (KIP-848) group's Assigning and Reconciling
# reach an admin client as an unknown state; its members' assignment then differs from their target.
STABLE, EMPTY, DEAD = "STABLE", "EMPTY", "DEAD"


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str  # as the brokers give it: "/10.0.3.7" for a Java broker
    assigned: tuple[TopicPartition, ...]
    target: tuple[TopicPartition, ...] | None = None  # the consumer protocol's target assignment

    @property
    def address(self) -> str:
        return self.host.lstrip("/")

    @property
    def reconciling(self) -> bool:
        return self.target is not None and sorted(self.target) != sorted(self.assigned)


@dataclass(frozen=True)
class Offsets:
    high: int  # the high watermark: the offset the next message will get
    committed: int | None  # None: the group never committed on this partition
    earliest: int = 0

    @property
    def lag(self) -> int:
        start = self.committed if self.committed is not None else self.earliest
        return max(self.high - start, 0)


@dataclass(frozen=True)
class GroupSnapshot:
    """What one read of the brokers returned."""

    group: str
    state: str  # STABLE, EMPTY, DEAD, PREPARING_REBALANCING, COMPLETING_REBALANCING, UNKNOWN
    protocol: str  # "consumer" (KIP-848) or "classic"
    assignor: str  # "uniform", "range", "cooperative-sticky", …; empty while rebalancing
    members: tuple[Member, ...]
    offsets: Mapping[TopicPartition, Offsets]
    read_seconds: float = 0.0


@dataclass(frozen=True)
class Unmapped:
    member: str
    client_id: str
    host: str
    partitions: int
    why: str


@dataclass(frozen=True)
class GroupReport:
    """What the answer says about the group: enough to check the attribution by hand."""

    group: str
    state: str
    protocol: str
    assignor: str
    members: int
    pod_from: PodFrom
    read_seconds: float
    unmapped_members: tuple[Unmapped, ...] = ()
    pods_without_member: tuple[str, ...] = ()
    partitions_unowned: tuple[str, ...] = ()  # "topic/partition" no member holds


@dataclass(frozen=True)
class Refusal:
    code: Literal["unknown_group", "group_empty", "group_rebalancing"]
    reason: str


@dataclass(frozen=True)
class Attributed:
    """The group's partitions by pod, ready for the partition-aware decision, and the report."""

    samples: ByPartition
    report: GroupReport
    values: dict[str, float] = field(default_factory=dict)  # each mapped pod's lag, for the answer


def refusal(snapshot: GroupSnapshot) -> Refusal | None:
    """A group that cannot be judged now: unknown to the brokers, without members, or moving
    partitions (any lag read now belongs to an assignment about to change)."""
    name = snapshot.group
    if snapshot.state == DEAD or (snapshot.state != EMPTY and not snapshot.members and not snapshot.offsets):
        return Refusal("unknown_group", f"the brokers know no consumer group {name!r} (state {snapshot.state}): check "
                                        "signals.lag.kafka.group against the consumers' group.id")
    if snapshot.state == EMPTY or not snapshot.members:
        return Refusal("group_empty", f"consumer group {name!r} has no members (state {snapshot.state}): no consumer "
                                      "is running, so there is nothing to rebalance")
    moving = [m.client_id or m.member_id for m in snapshot.members if m.reconciling]
    if snapshot.state != STABLE or moving:
        state = snapshot.state if snapshot.state != "UNKNOWN" else "assigning or reconciling"
        detail = f"; {len(moving)} member(s) still taking up their new assignment ({', '.join(sorted(moving)[:5])})" \
            if moving else ""
        return Refusal("group_rebalancing", f"consumer group {name!r} is rebalancing (state {state}{detail}): its "
                                            "partitions are moving already, so the lag read now says nothing about "
                                            "the next assignment; the next alert verifies again")
    return None


def report_of(snapshot: GroupSnapshot, pod_from: PodFrom) -> GroupReport:
    """The group as read, before anything is attributed (a group refused as it stands)."""
    return GroupReport(snapshot.group, snapshot.state, snapshot.protocol, snapshot.assignor, len(snapshot.members),
                       pod_from, snapshot.read_seconds)


def attribute(snapshot: GroupSnapshot, pods: Sequence[str], pod_ips: Mapping[str, str], pod_from: PodFrom,
              inflow: Mapping[tuple[str, str], float] | None = None) -> Attributed:
    """Each member's partitions under its pod. Members that map to no pod of the target, or to
    several, are left out with the reason; pods that are no member are not given any partition,
    so the decision counts them as pods without data, never as idle."""
    owner, unmapped = _owners(snapshot.members, pods, pod_ips, pod_from)
    held: dict[str, list[PartitionLag]] = {}
    members: set[str] = set()
    for member in snapshot.members:
        pod = owner.get(member.member_id)
        if pod is None:
            continue
        members.add(pod)
        held.setdefault(pod, []).extend(
            PartitionLag(topic, str(partition), float(snapshot.offsets[(topic, partition)].lag))
            for topic, partition in sorted(member.assigned) if (topic, partition) in snapshot.offsets)
    owned = {tp for m in snapshot.members for tp in m.assigned}
    report = replace(report_of(snapshot, pod_from), unmapped_members=tuple(unmapped),
                     pods_without_member=tuple(sorted(p for p in pods if p not in members)),
                     partitions_unowned=tuple(f"{t}/{p}" for t, p in sorted(set(snapshot.offsets) - owned)))
    samples = ByPartition(held, inflow, frozenset(members))
    values = {pod: float(sum(p.lag for p in partitions)) for pod, partitions in held.items()}
    return Attributed(samples, report, values)


def _owners(members: Sequence[Member], pods: Sequence[str], pod_ips: Mapping[str, str],
            pod_from: PodFrom) -> tuple[dict[str, str], list[Unmapped]]:
    """member id -> pod, and the members left out with why."""
    known = set(pods)
    by_ip: dict[str, list[str]] = {}
    for name in pods:
        if name in pod_ips:
            by_ip.setdefault(pod_ips[name], []).append(name)
    owner: dict[str, str] = {}
    unmapped: list[Unmapped] = []
    for member in sorted(members, key=lambda m: (m.client_id, m.member_id)):
        pod: str | None
        if pod_from == "client_id":
            pod = member.client_id if member.client_id in known else None
            why = f"client_id {member.client_id!r} is no pod of the target"
        else:
            candidates = by_ip.get(member.address, [])
            pod = candidates[0] if len(candidates) == 1 else None
            why = (f"host {member.address} is the IP of {len(candidates)} pods of the target ({', '.join(sorted(candidates))}"
                   "; hostNetwork?): use pod_from: client_id" if candidates
                   else f"host {member.address} is no pod IP of the target")
        if pod is None:
            unmapped.append(Unmapped(member.member_id, member.client_id, member.address, len(member.assigned), why))
        else:  # a pod may be several members (two consumers in one process): it holds all their partitions
            owner[member.member_id] = pod
    return owner, unmapped
