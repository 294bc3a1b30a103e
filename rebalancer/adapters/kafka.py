"""The consumer group as its brokers describe it, through confluent-kafka's AdminClient, and its
committed offsets through a Consumer that never joins it.

confluent-kafka (librdkafka inside) is imported when a target first reads its group, never at
start: a configuration without ``source: kafka`` does not pay for it in its cold start. One pair
of clients per group reader lives as long as the process (a connection and a SASL handshake per
invocation would be most of the cost); it is rebuilt when the password changes.

Why not the AdminClient's list_consumer_group_offsets: when its OffsetFetch is answered
NOT_COORDINATOR or COORDINATOR_NOT_AVAILABLE (a coordinator moving, as in a broker's restart, or
a new broker's offsets topic being made), librdkafka asks the client's consumer-group handle to
find the coordinator again, and an admin client has none: the process dies of a segmentation
fault (librdkafka's rd_kafka_handle_OffsetFetch, up to 2.16; upstream issue librdkafka#5040).
A Consumer has that handle, and re-queries the coordinator as it should. It is given the group's
id so that the brokers answer for that group, and it never subscribes: it is no member.

Three round trips, each bounded by what is left of the one timeout:
1. the group's description (state, members, assignment, assignor); the topics' partition lists
   with it when the topics are configured;
2. otherwise the partition lists of the topics the members hold or are to hold;
3. every partition's high watermark and earliest offset, and the group's committed offsets.

librdkafka reports a refused password or an unknown CA only through its error callback, served
by ``poll()``, while the request itself just times out: the wait polls, so that such an answer
comes in a fraction of a second and names the cause. Errors become ours here: a timeout or a
broken connection is ``KafkaUnavailableError`` (503, Alertmanager retries), a refusal is
``KafkaAccessError``.

No client is ever left to Python's garbage collector: librdkafka aborts the whole process when a
client is destroyed on one of that client's own threads, and a collection can run on exactly
such a thread (the Python code that completes a request runs there). A timed-out read's
traceback holds its client in a reference cycle, so that was one collection away. A client let go
is handed to ``_CLIENT_CLOSER``, which destroys it on a thread of ours.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

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
_Answer = TypeVar("_Answer")


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


class _ClientCloser:
    """Destroys the clients handed to it, one at a time, on a daemon thread of its own.
    ``close_later`` only puts on a SimpleQueue, which is safe wherever a ``__del__`` runs."""

    def __init__(self) -> None:
        self._clients: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._started = False
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Called where a client is made, never from ``__del__`` (a lock there could deadlock)."""
        with self._start_lock:
            if not self._started:
                threading.Thread(target=self._run, name="kafka-client-closer", daemon=True).start()
                self._started = True

    def close_later(self, client: Any) -> None:
        self._clients.put(client)

    def _run(self) -> None:
        while True:
            client = self._clients.get()
            try:
                client.__exit__(None, None, None)  # rd_kafka_destroy, the GIL released while it waits
            except Exception:  # a client's end must never end the thread that ends the others
                logging.getLogger(__name__).exception("closing a Kafka client failed")
            del client  # not held until the next one arrives


_CLIENT_CLOSER = _ClientCloser()


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds, self.at = seconds, time.monotonic() + seconds

    def left(self) -> float:
        return max(self.at - time.monotonic(), 0.0)


class _Clients(NamedTuple):
    admin: Any  # confluent_kafka.admin.AdminClient
    offsets: Any  # confluent_kafka.Consumer, with the group's id, never subscribed


class GroupReader:
    """Reads one consumer group, for one target. Thread-safe: one read at a time."""

    def __init__(self, connection: Connection, group: str, topics: Iterable[str] | None = None) -> None:
        self.connection, self.group = connection, group
        self.topics = tuple(topics) if topics else None
        self._lock = threading.Lock()
        self._clients: _Clients | None = None
        self._password_digest: bytes | None = None
        self._errors: list[Any] = []  # what librdkafka's error callback reported since the last read

    def read_group(self) -> GroupSnapshot:
        """Raises KafkaUnavailableError (no answer in time) or KafkaAccessError (refused)."""
        with self._lock:
            began = time.monotonic()
            clients = self._made()
            for client in clients:  # what librdkafka reported since the last read reaches the error callback
                client.poll(0)
            if any(e.code() in (_TRANSPORT, _ALL_BROKERS_DOWN) for e in self._errors):
                # Clients whose brokers went away are not kept: after a broker's restart, librdkafka's
                # client went on timing out against the broker that answered a new client at once
                # (tests/kafka, a broker restarted). New ones are made.
                self._let_go()
                clients = self._made()
            self._errors.clear()
            deadline = _Deadline(self.connection.timeout_seconds)
            try:
                snapshot = self._read(clients, deadline)
            except KafkaUnavailableError:
                self._let_go()  # the same: the next read starts with new clients
                raise
            return GroupSnapshot(**{**snapshot.__dict__, "read_seconds": time.monotonic() - began})

    def close(self) -> None:
        """Let the clients go (the next read makes new ones)."""
        with self._lock:
            self._let_go()

    def __del__(self, closer: _ClientCloser = _CLIENT_CLOSER) -> None:
        # A reader dropped with requests in flight (a refused read's exception can hold it in a
        # cycle) is collected wherever the collector runs: its clients are handed over, not destroyed.
        # (``closer`` is bound here: at the interpreter's exit the module's names may be gone.)
        for client in getattr(self, "_clients", None) or ():
            closer.close_later(client)

    # -- the clients -----------------------------------------------------------------------------

    def _let_go(self) -> None:
        for client in self._clients or ():
            _CLIENT_CLOSER.close_later(client)
        self._clients = None

    def _made(self) -> _Clients:
        try:
            password = self.connection.password() if self.connection.password else None
        except OSError as e:  # a mounted Secret mid-rotation, or its file removed: never its content
            raise KafkaAccessError(f"cannot read the Kafka password for {self.connection.bootstrap_servers}: "
                                   f"{e.strerror} ({e.filename})") from e
        digest = hashlib.sha256(password.encode()).digest() if password is not None else None
        if self._clients is None or digest != self._password_digest:
            from confluent_kafka import Consumer  # here, not at import: the cold start
            from confluent_kafka.admin import AdminClient

            _CLIENT_CLOSER.start()
            self._let_go()  # a changed password's clients
            # A list of their own: a Consumer's close serves the errors it queued, on the closer's
            # thread, while the new clients read; a rotated password's read then failed on the old
            # password's refusal (tests/kafka, 1 run in 4).
            self._errors = []
            config: dict[str, Any] = {**self.connection.client_config(password), "error_cb": self._errors.append}
            admin = None
            try:
                admin = AdminClient(config)
                offsets = Consumer({**config, "group.id": self.group, "enable.auto.commit": False})
            except Exception as e:  # librdkafka refuses a configuration at construction (KafkaException)
                if admin is not None:
                    _CLIENT_CLOSER.close_later(admin)
                raise KafkaAccessError(f"cannot configure a Kafka client for {self.connection.bootstrap_servers}: "
                                       f"{_message(e)}") from e
            self._clients, self._password_digest = _Clients(admin, offsets), digest
        return self._clients

    # -- the reads -------------------------------------------------------------------------------

    def _read(self, clients: _Clients, deadline: _Deadline) -> GroupSnapshot:
        from confluent_kafka import TopicCollection

        admin = clients.admin

        def described() -> dict[Any, Any]:
            futures: dict[Any, concurrent.futures.Future[Any]] = {
                "group": admin.describe_consumer_groups([self.group], request_timeout=_seconds(deadline))[self.group]}
            if self.topics:
                futures.update(_topic_keys(admin.describe_topics(TopicCollection(list(self.topics)),
                                                                 request_timeout=_seconds(deadline))))
            return self._wait(admin, futures, deadline, "the group's description")

        done = self._until_the_coordinator_answers(described, "the group's description", deadline)
        description = done.pop("group")
        if description is None:
            return GroupSnapshot(self.group, "DEAD", "", "", (), {})
        members = tuple(_member(m) for m in description.members)
        topics = self.topics or tuple(sorted({t for m in members for t, _ in (*m.assigned, *(m.target or ()))}))
        if not self.topics and topics:
            done = self._wait(admin, _topic_keys(admin.describe_topics(TopicCollection(list(topics)),
                                                                       request_timeout=_seconds(deadline))),
                              deadline, "the topics' partitions")
        partitions = [(t, p.id) for t in topics for p in done[("topic", t)].partitions]
        offsets = self._offsets(clients, partitions, deadline)
        return GroupSnapshot(self.group, _name(description.state), _name(getattr(description, "type", "")).lower(),
                             description.partition_assignor or "", members, offsets)

    def _offsets(self, clients: _Clients, partitions: list[TopicPartition],
                 deadline: _Deadline) -> dict[TopicPartition, Offsets]:
        from confluent_kafka import TopicPartition as KafkaPartition
        from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # exported, not in __all__

        if not partitions:
            return {}
        wanted = [KafkaPartition(t, p) for t, p in partitions]
        futures = {(name, k.topic, k.partition): f
                   for name, spec in (("latest", OffsetSpec.latest()), ("earliest", OffsetSpec.earliest()))
                   for k, f in clients.admin.list_offsets({tp: spec for tp in wanted},
                                                          request_timeout=_seconds(deadline)).items()}
        commits = self._committed(clients.offsets, wanted, deadline)  # while the watermarks are on their way
        done = self._wait(clients.admin, futures, deadline, "the partitions' offsets")
        return {(t, p): Offsets(done[("latest", t, p)].offset, commits.get((t, p)), done[("earliest", t, p)].offset)
                for t, p in partitions}

    def _committed(self, consumer: Any, partitions: list[Any], deadline: _Deadline) -> dict[TopicPartition, int]:
        """The group's committed offsets; a partition it never committed on is left out."""
        from confluent_kafka import KafkaException

        what = "the committed offsets"

        def committed() -> list[Any]:
            try:
                return consumer.committed(partitions, timeout=_seconds(deadline))  # type: ignore[no-any-return]
            except KafkaException as e:
                raise self._failure("committed", e, what, deadline) from e

        answered = self._until_the_coordinator_answers(committed, what, deadline)
        for tp in answered:
            if tp.error is not None:
                refused = KafkaException(tp.error)
                raise self._failure(("committed", tp.topic, tp.partition), refused, what, deadline) from refused
        return {(tp.topic, tp.partition): tp.offset for tp in answered if tp.offset >= 0}

    def _until_the_coordinator_answers(self, ask: Callable[[], _Answer], what: str, deadline: _Deadline) -> _Answer:
        """``ask()``, asked again while the group's coordinator is loading or moving (a broker's
        restart) and the timeout allows; then the timeout's answer."""
        while True:
            try:
                return ask()
            except _CoordinatorMovingError as e:
                pause = min(0.2, deadline.left())
                if pause <= 0:
                    raise self._unanswered(what, deadline) from e
                time.sleep(pause)

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
            if key == "group" and _code(e) in _GROUP_UNKNOWN:
                return None
            raise self._failure(key, e, what, deadline) from e

    def _failure(self, key: Any, e: Exception, what: str, deadline: _Deadline) -> Exception:
        """What a failed request of ours becomes."""
        name = _code(e)
        if name == "_TIMED_OUT":  # the request's own timeout, a moment before ours: the same answer
            self._refused()
            return self._unanswered(what, deadline)
        if name in _COORDINATOR_MOVING:
            return _CoordinatorMovingError()
        if name in _REFUSALS:
            return KafkaAccessError(f"the brokers at {self.connection.bootstrap_servers} refused {_what(key)}: "
                                    f"{_message(e)}")
        return KafkaUnavailableError(f"the brokers at {self.connection.bootstrap_servers} failed on {_what(key)}: "
                                     f"{_message(e)}")


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


def _code(e: Exception) -> str:
    """The librdkafka code's name of a KafkaException (or of a future's failure), else the type's."""
    error = e.args[0] if e.args and hasattr(e.args[0], "name") else None
    return str(error.name()) if error is not None else type(e).__name__


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
