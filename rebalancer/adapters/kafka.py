"""The consumer group as its brokers describe it, through confluent-kafka's AdminClient.

confluent-kafka (librdkafka inside) is imported when a target first reads its group, never at
start: a configuration without ``source: kafka`` does not pay for it in its cold start. One
client per group reader lives as long as the process (a connection and a SASL handshake per
invocation would be most of the cost); it is rebuilt when the password changes.

Three round trips, each bounded by what is left of the one timeout:
1. the group's description (state, members, assignment, assignor) and its committed offsets,
   side by side; the topics' partition lists with them when the topics are configured;
2. otherwise the partition lists of the topics the group holds or committed on;
3. the high watermarks of every partition, and the earliest offsets of those never committed.

librdkafka reports a refused password or an unknown CA only through its error callback, served
by ``poll()``, while the request itself just times out: the wait polls, so that such an answer
comes in a fraction of a second and names the cause. Errors become ours here: a timeout or a
broken connection is ``KafkaUnavailableError`` (503, Alertmanager retries), a refusal is
``KafkaAccessError``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rebalancer.core.groups import GroupSnapshot, Member, Offsets, TopicPartition
from rebalancer.errors import KafkaAccessError, KafkaUnavailableError

# librdkafka's codes (rdkafka.h): refusals that retrying cannot cure, and the coordinator's
# passing states, retried within the timeout (a group's coordinator loads after a broker starts).
_AUTHENTICATION, _SSL = -169, -181
# The connections dropped, or every broker down: what a broker's restart reports.
_TRANSPORT, _ALL_BROKERS_DOWN = -195, -187
_REFUSALS = {"TOPIC_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED",
             "SASL_AUTHENTICATION_FAILED", "UNKNOWN_TOPIC_OR_PART", "_AUTHENTICATION", "_SSL", "_INVALID_ARG"}
_COORDINATOR_MOVING = {"NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE"}
_GROUP_UNKNOWN = {"GROUP_ID_NOT_FOUND"}
_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Connection:
    """How to reach the brokers. ``password`` is a function so that a rotated file is read anew."""

    bootstrap_servers: str
    timeout_seconds: float
    security_protocol: str = "PLAINTEXT"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password: Callable[[], str] | None = None

    def client_config(self, password: str | None) -> dict[str, Any]:
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol,
                                  # librdkafka's own lines would repeat what the answer says; errors reach us by callback.
                                  "log_level": 0}
        optional = {"ssl.ca.location": self.ca_file, "ssl.certificate.location": self.cert_file,
                    "ssl.key.location": self.key_file, "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.username, "sasl.password": password}
        config.update({k: v for k, v in optional.items() if v is not None})
        return config


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.at = seconds, time.monotonic() + seconds

    def left(self) -> float:
        return max(self.at - time.monotonic(), 0.0)


class GroupReader:
    """Reads one consumer group, for one target. Thread-safe: one read at a time."""

    def __init__(self, connection: Connection, group: str, topics: Iterable[str] | None = None) -> None:
        self.connection, self.group = connection, group
        self.topics = tuple(topics) if topics else None
        self._lock = threading.Lock()
        self._client: Any = None
        self._password_digest: bytes | None = None
        self._errors: list[Any] = []  # what librdkafka's error callback reported since the last read

    def read_group(self) -> GroupSnapshot:
        """Raises KafkaUnavailableError (no answer in time) or KafkaAccessError (refused)."""
        with self._lock:
            began = time.monotonic()
            admin = self._admin()
            admin.poll(0)  # what librdkafka reported since the last read reaches the error callback
            if any(e.code() in (_TRANSPORT, _ALL_BROKERS_DOWN) for e in self._errors):
                # A client whose brokers went away is not kept: after a broker's restart, librdkafka's
                # client went on timing out against the broker that answered a new client at once
                # (tests/kafka, a broker restarted). A new one is made.
                self._client = None
                admin = self._admin()
            self._errors.clear()
            deadline = _Deadline(self.connection.timeout_seconds)
            try:
                snapshot = self._read(admin, deadline)
            except KafkaUnavailableError:
                self._client = None  # the same: the next read starts with a new client
                raise
            return GroupSnapshot(**{**snapshot.__dict__, "read_seconds": time.monotonic() - began})

    # -- the client ------------------------------------------------------------------------------

    def _admin(self) -> Any:
        try:
            password = self.connection.password() if self.connection.password else None
        except OSError as e:  # a mounted Secret mid-rotation, or its file removed: never its content
            raise KafkaAccessError(f"cannot read the Kafka password for {self.connection.bootstrap_servers}: "
                                   f"{e.strerror} ({e.filename})") from e
        digest = hashlib.sha256(password.encode()).digest() if password is not None else None
        if self._client is None or digest != self._password_digest:
            from confluent_kafka.admin import AdminClient  # here, not at import: the cold start

            try:
                config: dict[str, Any] = {**self.connection.client_config(password), "error_cb": self._errors.append}
                self._client = AdminClient(config)
            except Exception as e:  # librdkafka refuses a configuration at construction (KafkaException)
                raise KafkaAccessError(f"cannot configure a Kafka client for {self.connection.bootstrap_servers}: "
                                       f"{_message(e)}") from e
            self._password_digest = digest
        return self._client

    # -- the reads -------------------------------------------------------------------------------

    def _read(self, admin: Any, deadline: _Deadline) -> GroupSnapshot:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection

        while True:
            described = admin.describe_consumer_groups([self.group], request_timeout=_seconds(deadline))[self.group]
            committed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(self.group)],
                                                          request_timeout=_seconds(deadline))[self.group]
            futures: dict[str, concurrent.futures.Future[Any]] = {"group": described, "committed": committed}
            if self.topics:
                futures.update(_topic_keys(admin.describe_topics(TopicCollection(list(self.topics)),
                                                                 request_timeout=_seconds(deadline))))
            try:
                done = self._wait(admin, futures, deadline, "the group's description and committed offsets")
                break
            except _CoordinatorMovingError:
                time.sleep(min(0.2, deadline.left()))
        description = done.pop("group")
        if description is None:
            return GroupSnapshot(self.group, "DEAD", "", "", (), {})
        committed_now = done.pop("committed")
        commits = {(tp.topic, tp.partition): tp.offset for tp in (committed_now.topic_partitions if committed_now else [])}
        members = tuple(_member(m) for m in description.members)
        topics = self.topics or tuple(sorted({t for m in members for t, _ in m.assigned} | {t for t, _ in commits}))
        if not self.topics and topics:
            done = self._wait(admin, _topic_keys(admin.describe_topics(TopicCollection(list(topics)),
                                                                       request_timeout=_seconds(deadline))),
                              deadline, "the topics' partitions")
        partitions = [(t, p.id) for t in topics for p in done[("topic", t)].partitions]
        offsets = self._offsets(admin, partitions, {tp: o for tp, o in commits.items() if o >= 0}, deadline)
        return GroupSnapshot(self.group, _name(description.state), _name(getattr(description, "type", "")).lower(),
                             description.partition_assignor or "", members, offsets)

    def _offsets(self, admin: Any, partitions: list[TopicPartition], commits: Mapping[TopicPartition, int],
                 deadline: _Deadline) -> dict[TopicPartition, Offsets]:
        from confluent_kafka import TopicPartition as KafkaPartition
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # exported, not in __all__

        if not partitions:
            return {}
        latest = admin.list_offsets({KafkaPartition(t, p): OffsetSpec.latest() for t, p in partitions},
                                    request_timeout=_seconds(deadline))
        never = [tp for tp in partitions if tp not in commits]
        earliest = admin.list_offsets({KafkaPartition(t, p): OffsetSpec.earliest() for t, p in never},
                                      request_timeout=_seconds(deadline)) if never else {}
        futures = {**{("latest", k.topic, k.partition): f for k, f in latest.items()},
                   **{("earliest", k.topic, k.partition): f for k, f in earliest.items()}}
        done = self._wait(admin, futures, deadline, "the partitions' offsets")
        return {(t, p): Offsets(done[("latest", t, p)].offset, commits.get((t, p)),
                                done[("earliest", t, p)].offset if (t, p) not in commits else 0)
                for t, p in partitions}

    def _wait(self, admin: Any, futures: Mapping[Any, concurrent.futures.Future[Any]], deadline: _Deadline,
              what: str) -> dict[Any, Any]:
        """Every future's result, polling the client so that its error callback is heard. A group
        the brokers do not know gives None for "group"."""
        pending = set(futures.values())
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=min(_POLL_SECONDS, deadline.left()))
            admin.poll(0)
            self._refused()
            if pending and deadline.left() <= 0:
                for future in pending:
                    future.cancel()
                raise self._unanswered(what, deadline)
        return {key: self._result(key, future, what, deadline) for key, future in futures.items()}

    def _unanswered(self, what: str, deadline: _Deadline) -> KafkaUnavailableError:
        """No answer in time, with the last error librdkafka reported (a refused connection, say)."""
        last = f" (last error: {_message(self._errors[-1])})" if self._errors else ""
        return KafkaUnavailableError(f"the brokers at {self.connection.bootstrap_servers} did not answer with {what} "
                                     f"within {deadline.seconds:g}s{last}")

    def _refused(self) -> None:
        refusal = next((e for e in self._errors if e.code() in (_AUTHENTICATION, _SSL)), None)
        if refusal is not None:
            raise KafkaAccessError(f"the brokers at {self.connection.bootstrap_servers} refused the connection: "
                                   f"{_message(refusal)}")

    def _result(self, key: Any, future: concurrent.futures.Future[Any], what: str, deadline: _Deadline) -> Any:
        try:
            return future.result(timeout=0)
        except Exception as e:
            error = e.args[0] if e.args and hasattr(e.args[0], "name") else None
            name = error.name() if error is not None else type(e).__name__
            if key == "group" and name in _GROUP_UNKNOWN:
                return None
            if name == "_TIMED_OUT":  # the request's own timeout, a moment before ours: the same answer
                self._refused()
                raise self._unanswered(what, deadline) from e
            if name in _COORDINATOR_MOVING:
                raise _CoordinatorMovingError() from e
            if name in _REFUSALS:
                raise KafkaAccessError(f"the brokers at {self.connection.bootstrap_servers} refused "
                                       f"{_what(key)}: {_message(e)}") from e
            raise KafkaUnavailableError(f"the brokers at {self.connection.bootstrap_servers} failed on {_what(key)}: "
                                        f"{_message(e)}") from e


class _CoordinatorMovingError(Exception):
    """The group's coordinator is loading or moving: asked again while the timeout allows."""


def _topic_keys(futures: Mapping[str, concurrent.futures.Future[Any]]) -> dict[Any, concurrent.futures.Future[Any]]:
    """A topic's future under ("topic", name): a topic may well be called "group"."""
    return {("topic", name): future for name, future in futures.items()}


def _member(description: Any) -> Member:
    def pairs(assignment: Any) -> tuple[TopicPartition, ...]:
        return tuple(sorted((tp.topic, tp.partition) for tp in (assignment.topic_partitions if assignment else [])))

    target = getattr(description, "target_assignment", None)
    return Member(description.member_id, description.client_id or "", description.host or "",
                  pairs(description.assignment), pairs(target) if target is not None else None)


def _name(value: Any) -> str:
    """An enum's name (ConsumerGroupState.STABLE -> STABLE), or the string as given."""
    return getattr(value, "name", None) or str(value).rsplit(".", 1)[-1]


def _seconds(deadline: _Deadline) -> float:
    return max(deadline.left(), 0.001)


def _what(key: Any) -> str:
    if key == "group":
        return "the group's description"
    if key == "committed":
        return "the committed offsets"
    if key[0] == "topic":
        return f"topic {key[1]!r}"
    return f"the {key[0]} offset of {key[1]}/{key[2]}"


def _message(error: Any) -> str:
    """librdkafka's text for a KafkaError (or the exception wrapping one), else the exception's."""
    inner = error.args[0] if isinstance(error, Exception) and error.args else error
    text = inner.str() if hasattr(inner, "str") else str(error)
    return text or (inner.name() if hasattr(inner, "name") else type(error).__name__)
