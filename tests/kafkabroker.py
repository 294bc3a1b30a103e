"""A real Kafka broker for the tests, and consumer groups whose members are pods.

The broker is KRaft (broker and controller in one JVM) from Maven Central's jars
(tests/kafka/pom.xml; `make test` fetches them once with scripts/build-kafka into ~/.cache and
links .build/kafka-libs). It starts on free loopback ports with a freshly formatted data dir, is
ready once an admin call answers, and stops by PID like every other server here.

A consumer group's members are the pods of a Deployment: the node simulator runs each pod's
container command (tests/kafka/consumer.py) as a process with the pod's environment, so the
member's client.id is the pod's name and the group rebalances when a pod goes.

librdkafka handles freed after their broker stopped can hang the process: every admin client
made here lives for one call, and the broker is stopped last.
"""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.certificates import certificate_authority_and_leaf
from tests.servers import ServerProcess, free_port, stop_with_parent, wait_for

REPO = Path(__file__).resolve().parents[1]
LIBS = REPO / ".build" / "kafka-libs"
CONSUMER = REPO / "tests" / "kafka" / "consumer.py"
EXPORTER = REPO / "tests" / "kafka" / "exporter.py"
PRODUCER = REPO / "tests" / "kafka" / "produce.py"
# Half the start-up time on 2 cores; the log cleaner's buffer must then shrink to fit the heap.
JVM_FLAGS = ["-Xms32m", "-Xmx160m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]
ADMIN_TIMEOUT = 15.0

SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},SASL_SSL://127.0.0.1:{tls_port},PROXIED://127.0.0.1:{proxied_port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},SASL_SSL://127.0.0.1:{tls_port},PROXIED://{proxied_at}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,PROXIED:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
# SASL, in clear and over TLS (a certificate from a throw-away CA): PLAIN's users are listed here,
# SCRAM's credentials are written into the storage when it is formatted (StorageTool --add-scram).
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{user}="{password}";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{user}="{password}";
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location={keystore}
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
log.cleaner.dedupe.buffer.size=8388608
# The classic protocol: no initial delay, and sessions as short as a test needs.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=3000
# The new protocol's timings are the brokers' own: a SIGKILLed member is fenced after 6 s
# instead of 45 s, and a heartbeat each second brings assignments quickly.
group.consumer.session.timeout.ms=6000
group.consumer.min.session.timeout.ms=6000
group.consumer.heartbeat.interval.ms=1000
group.consumer.min.heartbeat.interval.ms=1000
"""


@dataclass(frozen=True)
class Member:
    client_id: str
    host: str
    partitions: tuple[int, ...]
    assigned: tuple[tuple[str, int], ...] = ()  # (topic, partition): for groups on several topics


@dataclass(frozen=True)
class Group:
    state: str
    members: tuple[Member, ...]
    protocol: str = ""  # "consumer" (KIP-848) or "classic"
    assignor: str = ""

    def owner(self, partition: int) -> str | None:
        return next((m.client_id for m in self.members if partition in m.partitions), None)


class KafkaBroker(ServerProcess):
    """Listeners: PLAINTEXT on ``port`` (``bootstrap``), SASL_PLAINTEXT on ``sasl_port`` and SASL_SSL
    on ``tls_port``, where ``user`` / ``password`` authenticate with PLAIN, SCRAM-SHA-256 or
    SCRAM-SHA-512, and ``ca_file`` is the CA to trust; and PROXIED (PLAINTEXT, behind a fault proxy)."""

    user = "rebalancer"

    def __init__(self, workdir: Path, overrides: dict[str, str] | None = None) -> None:
        self.overrides = overrides or {}  # server.properties lines of a test's own, after (so over) ours
        self.port, self.controller, self.sasl_port, self.tls_port = free_port(), free_port(), free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        # PROXIED: a PLAINTEXT listener that advertises ``proxied_at``; a test sets it to a fault
        # proxy's route to ``proxied_port`` before start, so that a client bootstrapped there stays
        # behind the proxy for every connection (the brokers' metadata names the proxy).
        self.proxied_port = free_port()
        self.proxied_at = f"127.0.0.1:{self.proxied_port}"
        self.password = f"kafka-{uuid.uuid4().hex[:12]}"
        self.ca_file = workdir / "ca.pem"
        self.properties = workdir / "server.properties"
        java = shutil.which("java")
        if java is None:
            pytest.fail("java is not installed: `make test` installs it (scripts/install-system-deps)", pytrace=False)
        self.java = java
        super().__init__("kafka", [java, *JVM_FLAGS, "-cp", f"{LIBS}/*", "kafka.Kafka", str(self.properties)], "", workdir)

    def start(self, timeout: float = 60.0) -> KafkaBroker:
        if not LIBS.exists():
            pytest.fail(f"{LIBS} is missing: `make test` fetches the broker (scripts/build-kafka)", pytrace=False)
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        ca, leaf, key = certificate_authority_and_leaf("kafka")
        self.ca_file.write_text(ca)
        keystore = self.workdir / "keystore.pem"  # the PEM keystore: the key, then its certificate
        keystore.write_text(key + leaf)
        self.properties.write_text(SERVER_PROPERTIES.format(
            port=self.port, controller=self.controller, sasl_port=self.sasl_port, tls_port=self.tls_port, data=data,
            proxied_port=self.proxied_port, proxied_at=self.proxied_at,
            user=self.user, password=self.password, keystore=keystore)
            + "".join(f"{key}={value}\n" for key, value in self.overrides.items()))
        scram = [arg for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
                 for arg in ("--add-scram", f"{mechanism}=[name={self.user},password={self.password}]")]
        # A fresh data dir each start: formatting is a second and a formatted one starts no faster.
        formatted = subprocess.run([self.java, *JVM_FLAGS, "-cp", f"{LIBS}/*", "kafka.tools.StorageTool", "format",
                                    "-t", uuid.uuid4().hex[:22], "-c", str(self.properties), *scram],
                                   capture_output=True, text=True, timeout=60)
        if formatted.returncode != 0:
            pytest.fail(f"formatting the broker's storage failed:\n{formatted.stdout}\n{formatted.stderr}", pytrace=False)
        return self._run(timeout)

    def restart(self, timeout: float = 60.0) -> KafkaBroker:
        """Start it again after it stopped or was killed: the same listeners, the same data (its
        topics, committed offsets and users), as a broker's pod restarted on its volume."""
        if self.process is not None and self.process.poll() is None:
            raise AssertionError("the broker is still running: stop or kill it before restarting it")
        return self._run(timeout)

    def _run(self, timeout: float) -> KafkaBroker:
        began = time.monotonic()
        self.launch()
        while not self._answers():
            if self.process.poll() is not None:
                self._fail(f"exited with code {self.process.returncode} before it was ready")
            if time.monotonic() - began > timeout:
                self.stop()
                self._fail(f"was not ready on {self.bootstrap} within {timeout:.0f}s")
            time.sleep(0.2)
        self.start_to_ready = time.monotonic() - began
        return self

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        try:
            with self._admin() as admin:
                return admin.list_topics(timeout=2).brokers is not None
        except Exception:
            return False

    def stop(self) -> None:
        gc.collect()  # librdkafka handles of finished calls go before the broker does
        super().stop()

    # Every client here is used in a `with` block, which destroys it at the block's end on this
    # thread. Left to the garbage collector (a failed call's traceback held in a cycle), a client
    # can be destroyed on its own librdkafka thread, and librdkafka then aborts this process.
    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        # librdkafka's informational lines (a freed handle's purged queue) are noise here.
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 4})

    def _committed(self, group_id: str, partitions: list[Any]) -> dict[int, int]:
        """The group's committed offsets (-1001: none), through a Consumer that never joins the
        group: an AdminClient's list_consumer_group_offsets can crash the process when the group's
        coordinator is moving (see rebalancer/adapters/kafka.py)."""
        from confluent_kafka import Consumer, KafkaException

        with Consumer({"bootstrap.servers": self.bootstrap, "group.id": group_id, "enable.auto.commit": False,
                       "log_level": 4}) as consumer:
            deadline = time.monotonic() + ADMIN_TIMEOUT
            while True:
                try:
                    return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=ADMIN_TIMEOUT)}
                except KafkaException as e:  # a coordinator still loading answers NOT_COORDINATOR: asked again
                    if e.args[0].name() not in {"NOT_COORDINATOR", "COORDINATOR_LOAD_IN_PROGRESS"} or \
                            time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def _partition_count(self, topic: str, admin: Any = None) -> int:
        """With the caller's client, or one of its own."""
        if admin is not None:
            return len(admin.list_topics(topic, timeout=5).topics[topic].partitions)
        with self._admin() as own:
            return self._partition_count(topic, own)

    # -- topics and groups ------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int) -> str:
        from confluent_kafka.admin import NewTopic

        with self._admin() as admin:  # held until its futures are done: a freed handle fails them
            futures = admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=ADMIN_TIMEOUT)
            futures[name].result(timeout=ADMIN_TIMEOUT)
        wait_for(lambda: self._partition_count(name) == partitions, f"topic {name} with {partitions} partitions",
                 timeout=30)
        return name

    def group(self, group_id: str) -> Group:
        """The group as the brokers describe it: state, and each member's client.id, host and partitions."""
        with self._admin() as admin:
            description = admin.describe_consumer_groups([group_id], request_timeout=ADMIN_TIMEOUT)[group_id].result(
                timeout=ADMIN_TIMEOUT)

        def held(m: Any) -> list[Any]:
            return m.assignment.topic_partitions if m.assignment else []

        members = tuple(sorted(
            (Member(m.client_id, m.host.lstrip("/"), tuple(sorted(tp.partition for tp in held(m))),
                    tuple(sorted((tp.topic, tp.partition) for tp in held(m))))
             for m in description.members), key=lambda m: m.client_id))
        protocol = str(getattr(description, "type", "")).rsplit(".", 1)[-1].lower()
        return Group(str(description.state).rsplit(".", 1)[-1], members, protocol, description.partition_assignor or "")

    def wait_for_group(self, group_id: str, members: int, partitions: int, timeout: float = 60.0) -> Group:
        """Until the group is Stable with ``members`` members and every partition owned once: the
        new protocol's assignor converges in steps (the first member briefly owns everything).
        A timeout says what the group looked like last."""
        last: list[object] = ["no answer from the brokers"]

        def settled() -> Group | None:
            try:
                found = self.group(group_id)
            except Exception as e:
                last[0] = e
                return None
            last[0] = found
            owned = sorted(tp for m in found.members for tp in m.assigned)
            return found if (found.state == "STABLE" and len(found.members) == members and len(owned) == partitions
                             and len(set(owned)) == partitions) else None
        try:
            return wait_for(settled, f"group {group_id}: {members} members, every one of {partitions} partitions owned",
                            timeout, interval=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}; last seen: {last[0]}") from None

    def lag(self, group_id: str, topic: str) -> dict[int, int]:
        """Each partition's lag at the brokers: high watermark minus the committed offset (from the
        earliest offset when nothing was committed)."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        with self._admin() as admin:
            every = [TopicPartition(topic, p) for p in range(self._partition_count(topic, admin))]
            futures = {name: admin.list_offsets({tp: spec for tp in every}, request_timeout=ADMIN_TIMEOUT)
                       for name, spec in (("high", OffsetSpec.latest()), ("low", OffsetSpec.earliest()))}
            committed = self._committed(group_id, every)  # while the offsets are on their way
            high, low = ({tp.partition: f.result(timeout=ADMIN_TIMEOUT).offset for tp, f in futures[name].items()}
                         for name in ("high", "low"))
        return {p: max(high[p] - (offset if offset >= 0 else low[p]), 0) for p, offset in committed.items()}

    def high_watermarks(self, topic: str) -> dict[int, int]:
        """Each partition's high watermark: the offset the next message will get. Its rate is the
        partition's inflow, as `rate()` over kafka_exporter's offsets gives it."""
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        with self._admin() as admin:
            latest = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest()
                                         for p in range(self._partition_count(topic, admin))},
                                        request_timeout=ADMIN_TIMEOUT)
            return {tp.partition: future.result(timeout=ADMIN_TIMEOUT).offset for tp, future in latest.items()}

    # -- load -----------------------------------------------------------------------------------

    def produce(self, topic: str, rates: dict[int, float], seconds: float) -> subprocess.Popen:
        """Start a producer process at ``rates`` (partition -> messages/s) for ``seconds``."""
        argv = [sys.executable, str(PRODUCER), "--bootstrap", self.bootstrap, "--topic", topic,
                "--rates", ",".join(f"{p}={r}" for p, r in rates.items()), "--seconds", str(seconds)]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=stop_with_parent)


DOWNWARD_API = [
    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
]


def consumer_pod_template(broker: KafkaBroker, topic: str, group_id: str, *, protocol: str = "consumer",
                          slow_file: Path | None = None, grace_seconds: int = 10, process_ms: float = 0,
                          max_poll_interval_ms: int = 300_000, container: str = "consumer", work: str = "sleep",
                          remote_assignor: str = "") -> dict[str, Any]:
    """A pod spec whose container is a real consumer, as a Deployment of consumers would have it:
    the pod's name, namespace and IP from the downward API, metrics on a named port, and a
    readiness probe on them."""
    env = [
        *DOWNWARD_API,
        {"name": "BOOTSTRAP_SERVERS", "value": broker.bootstrap},
        {"name": "TOPIC", "value": topic},
        {"name": "GROUP_ID", "value": group_id},
        {"name": "GROUP_PROTOCOL", "value": protocol},
        {"name": "METRICS_PORT", "value": "8001"},
        {"name": "PROCESS_MS", "value": str(process_ms)},
        {"name": "WORK", "value": work},
        {"name": "MAX_POLL_INTERVAL_MS", "value": str(max_poll_interval_ms)},
        {"name": "GROUP_REMOTE_ASSIGNOR", "value": remote_assignor},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if slow_file is not None:
        env.append({"name": "SLOW_PODS_FILE", "value": str(slow_file)})
    return {
        "terminationGracePeriodSeconds": grace_seconds,
        "containers": [{
            "name": container, "image": "pod-rebalancer.test/kafka-consumer:1",
            "command": [sys.executable, str(CONSUMER)], "env": env,
            "ports": [{"name": "metrics", "containerPort": 8001}],
            "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 1},
        }],
    }


def exporter_pod_template(broker: KafkaBroker, topic: str, group_id: str) -> dict[str, Any]:
    """A pod spec playing kafka_exporter (tests/kafka/exporter.py) for one topic and group."""
    env = [*DOWNWARD_API, {"name": "BOOTSTRAP_SERVERS", "value": broker.bootstrap}, {"name": "TOPIC", "value": topic},
           {"name": "GROUP", "value": group_id}, {"name": "METRICS_PORT", "value": "9308"}]
    return {"terminationGracePeriodSeconds": 5, "containers": [{
        "name": "kafka-exporter", "image": "pod-rebalancer.test/kafka-exporter:1",
        "command": [sys.executable, str(EXPORTER)], "env": env,
        "ports": [{"name": "metrics", "containerPort": 9308}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 1}}]}
