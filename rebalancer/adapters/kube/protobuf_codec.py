"""The protobuf codec: the API server's answers as ``application/vnd.kubernetes.protobuf``, as
client-go reads them. For a list of 10,000 pods the server spends less time producing protobuf
than JSON, the answer is smaller, and the trimmed schema (``wire.proto``: only the fields read,
with Kubernetes' own numbers) lets the C parser (upb) skip the rest of each object.

The answer is the 4-byte magic ``k8s\\0``, then a ``runtime.Unknown`` whose ``raw`` holds the
object; each envelope in ``wire.proto`` declares ``raw`` as the object itself, so it is parsed in
the same pass. Protobuf has no None: an absent field reads as its default, so presence is asked
with ``HasField`` (a pod whose ``deletionTimestamp`` merely *reads* as zero is not terminating),
and maps are read with ``get`` (indexing a missing key would insert it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, cast

from google.protobuf.message import DecodeError, Message

from rebalancer.adapters.kube import wire_pb2 as wire
from rebalancer.adapters.kube.decoding import (
    AutoscalerFacts,
    DeploymentFacts,
    PodFacts,
    StatusFacts,
    controlled_by,
    cpu_cores,
    is_ready,
    selector_string,
)
from rebalancer.adapters.kube.records import EXCLUDE_ANNOTATION, ConfigMapState
from rebalancer.core.workload import PodState
from rebalancer.errors import KubeUnavailableError

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
# The field numbers the pod list's framing is read by (tests/controlplane/test_wire_schema.py holds
# them to Kubernetes' .proto files): runtime.Unknown's raw and contentEncoding, a List's items.
UNKNOWN_RAW, UNKNOWN_CONTENT_ENCODING, LIST_ITEMS = 2, 3, 2


def _unwrap(data: bytes, envelope: type[Message], doing: str) -> Any:
    """The object inside the envelope (``raw``), parsed as the envelope is."""
    if data[:4] != MAGIC:
        raise KubeUnavailableError(f"Kubernetes API answered protobuf without its magic prefix while trying to {doing}")
    try:
        # upb parses from the buffer in place; a bytes slice would copy the whole answer first.
        found: Any = envelope.FromString(cast(bytes, memoryview(data)[4:]))
    except DecodeError as e:
        raise KubeUnavailableError(f"Kubernetes API answered a malformed object while trying to {doing}: {e}") from e
    encoding: str = found.contentEncoding
    if encoding:  # never set by the API server today; an encoding we cannot read must not pass as empty
        raise KubeUnavailableError(f"Kubernetes API answered an object in content encoding {encoding!r} while trying to {doing}")
    return found.raw


def _cpu_request(pod: wire.PodWithRequests, container: str) -> float | None:
    for candidate in pod.spec.containers:
        if candidate.name == container:
            requests = candidate.resources.requests
            return cpu_cores(requests["cpu"].string) if "cpu" in requests else None
    return None


def _cpu_target_utilization(hpa: wire.HorizontalPodAutoscaler) -> float | None:
    for metric in hpa.spec.metrics:
        resource = metric.resource
        if metric.type == "Resource" and resource.name == "cpu" and resource.target.type == "Utilization" \
                and resource.target.HasField("averageUtilization"):
            return float(resource.target.averageUtilization)
    return None


class ProtobufCodec:
    """Each read's answer as protobuf."""

    def deployment(self, data: bytes, doing: str) -> DeploymentFacts:
        found: wire.Deployment = _unwrap(data, wire.DeploymentEnvelope, doing)
        spec, status, selector = found.spec, found.status, found.spec.selector
        expressions = [(e.key, e.operator, list(e.values)) for e in selector.matchExpressions]
        return DeploymentFacts(
            uid=found.metadata.uid, selector=selector_string(dict(selector.matchLabels), expressions),
            replicas=spec.replicas if spec.HasField("replicas") else 1, generation=found.metadata.generation,
            observed_generation=status.observedGeneration, updated_replicas=status.updatedReplicas,
            available_replicas=status.availableReplicas,
        )

    def owned_replica_sets(self, data: bytes, deployment_uid: str, doing: str) -> set[str]:
        listed: wire.ReplicaSetList = _unwrap(data, wire.ReplicaSetListEnvelope, doing)
        return {rs.metadata.uid for rs in listed.items
                if controlled_by(rs.metadata.ownerReferences, "Deployment", (deployment_uid,))}

    def pods(self, pieces: Iterable[bytes], owned_replica_sets: set[str], container: str | None, doing: str) -> PodFacts:
        """As ``JsonCodec.pods``: the same states from the same pods. Each pod is decoded as soon
        as it has arrived whole, while the rest of the list is still on its way."""
        message = wire.PodWithRequests if container else wire.Pod
        states, uids, ips = [], {}, {}
        created: dict[int, datetime] = {}  # pods made in the same second share one datetime
        try:
            for item in _list_items(pieces, doing):  # a plain loop: 10,000 times for a large Deployment
                pod = message.FromString(item)
                meta, status = pod.metadata, pod.status
                name = meta.name
                seconds = meta.creationTimestamp.seconds if meta.HasField("creationTimestamp") else None
                if seconds is not None and seconds not in created:
                    created[seconds] = datetime.fromtimestamp(seconds, tz=timezone.utc)
                states.append(PodState(
                    name=name,
                    ready=is_ready(status.conditions),
                    owned=controlled_by(meta.ownerReferences, "ReplicaSet", owned_replica_sets),
                    created_at=created[seconds] if seconds is not None else None,
                    terminating=meta.HasField("deletionTimestamp"),
                    phase=status.phase or "Unknown",
                    excluded=meta.annotations.get(EXCLUDE_ANNOTATION, "").lower() == "true",
                    cpu_request=_cpu_request(cast("wire.PodWithRequests", pod), container) if container else None,
                ))
                uids[name] = meta.uid
                if status.podIP:
                    ips[name] = status.podIP
        except DecodeError as e:
            raise KubeUnavailableError(f"Kubernetes API answered a malformed object while trying to {doing}: {e}") from e
        return PodFacts(tuple(states), uids, ips)

    def autoscalers(self, data: bytes, doing: str) -> list[AutoscalerFacts]:
        listed: wire.HorizontalPodAutoscalerList = _unwrap(data, wire.HorizontalPodAutoscalerListEnvelope, doing)
        return [AutoscalerFacts(
            name=hpa.metadata.name, target_kind=hpa.spec.scaleTargetRef.kind, target_name=hpa.spec.scaleTargetRef.name,
            # JSON omits currentReplicas when it is 0 (omitempty), where protobuf sends the 0: as JSON reads it.
            current_replicas=hpa.status.currentReplicas or None,
            desired_replicas=hpa.status.desiredReplicas if hpa.status.HasField("desiredReplicas") else None,
            cpu_target_utilization=_cpu_target_utilization(hpa),
        ) for hpa in listed.items]

    def configmap(self, data: bytes, doing: str) -> ConfigMapState:
        found: wire.ConfigMap = _unwrap(data, wire.ConfigMapEnvelope, doing)
        version = found.metadata.resourceVersion if found.metadata.HasField("resourceVersion") else None
        return ConfigMapState(dict(found.metadata.annotations), version)


class _Pieces:
    """The bytes of a body that arrives in pieces, read from the front: what has been read is
    dropped as the reading goes on, so the whole body is never held at once."""

    def __init__(self, pieces: Iterable[bytes], doing: str) -> None:
        self.pieces, self.doing = iter(pieces), doing
        self.buffer = bytearray()
        self.position = 0  # in the buffer
        self.dropped = 0  # bytes dropped from the front of the buffer so far

    @property
    def offset(self) -> int:
        return self.dropped + self.position

    def has(self, count: int) -> bool:
        while len(self.buffer) - self.position < count:
            piece = next(self.pieces, None)
            if piece is None:
                return False
            if self.position > _DROP_AFTER:
                del self.buffer[:self.position]
                self.dropped, self.position = self.dropped + self.position, 0
            self.buffer += piece
        return True

    def take(self, count: int) -> bytes:
        if not self.has(count):
            raise self.malformed("it ends inside a field")
        taken = bytes(self.buffer[self.position:self.position + count])
        self.position += count
        return taken

    def varint(self) -> int | None:
        """A base-128 varint (a field's key or length), or None where the body ends cleanly."""
        value = shift = 0
        for size in range(1, 11):
            if not self.has(size):
                if size == 1:
                    return None
                raise self.malformed("it ends inside a varint")
            byte = self.buffer[self.position + size - 1]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                self.position += size
                return value
        raise self.malformed("a varint longer than 10 bytes")

    def length_delimited(self) -> tuple[int, int]:
        """The next field's number and length; every field of runtime.Unknown and of a List is
        length-delimited (wire type 2)."""
        key = self.varint()
        if key is None:
            raise self.malformed("it ends before a field")
        length = self.varint() if key & 7 == 2 else None
        if length is None:
            raise self.malformed(f"field {key >> 3} has wire type {key & 7}, not a length-delimited one")
        return key >> 3, length

    def malformed(self, why: str) -> KubeUnavailableError:
        return KubeUnavailableError(f"Kubernetes API answered a malformed object while trying to {self.doing}: {why}")


_DROP_AFTER = 1 << 20


def _list_items(pieces: Iterable[bytes], doing: str) -> Iterator[bytes]:
    """The bytes of each item of the List in a protobuf answer (magic, then runtime.Unknown whose
    ``raw`` is the List: ``metadata`` = 1, ``items`` = 2), each as soon as it has arrived whole.
    The framing is read here, not by the protobuf runtime, because the runtime parses only a whole
    message; each item is then parsed by it."""
    body = _Pieces(pieces, doing)
    if not body.has(len(MAGIC)) or body.take(len(MAGIC)) != MAGIC:
        raise KubeUnavailableError(f"Kubernetes API answered protobuf without its magic prefix while trying to {doing}")
    encoding, listed = b"", False
    while body.has(1):
        field, length = body.length_delimited()
        if field != UNKNOWN_RAW:  # typeMeta, contentEncoding, contentType
            value = body.take(length)
            encoding = value if field == UNKNOWN_CONTENT_ENCODING else encoding
            continue
        listed, end = True, body.offset + length
        while body.offset < end:
            field, length = body.length_delimited()
            item = body.take(length)
            if field == LIST_ITEMS:  # else the List's metadata
                yield item
        if body.offset != end:
            raise body.malformed("an item runs past the end of the list")
    if not listed:
        raise body.malformed("the envelope holds no object")
    if encoding:  # never set by the API server today; an encoding we cannot read must not pass as read
        raise KubeUnavailableError(f"Kubernetes API answered an object in content encoding {encoding.decode(errors='replace')!r} "
                                   f"while trying to {doing}")


def status_of(data: bytes) -> StatusFacts | None:
    """An error answer's Status, or None when the body is not one."""
    try:
        found: wire.Status = _unwrap(data, wire.StatusEnvelope, "read an error answer")
    except KubeUnavailableError:
        return None
    return StatusFacts(found.message, found.reason, tuple(c.message for c in found.details.causes if c.message))


PROTOBUF = ProtobufCodec()
