"""Lag measured at the source (``signals.lag.source: kafka``): the function reads the consumer group
from the real broker itself (confluent-kafka's AdminClient), over plain TCP, SASL (PLAIN, SCRAM)
and SASL over TLS with a throw-away CA, and attributes each partition to the pod whose
``client.id`` holds it. The pods are real consumers run by the node simulator on the real
control plane.

The function runs in-process in most tests here (functions-framework's app, acting as its
ServiceAccount), so that each calls it when the group is where the test wants it. The first runs
the whole alerting chain instead: kafka_exporter's group series in VictoriaMetrics, vmalert with
the group-level rule `make rules` writes for a target measured at the brokers, Alertmanager, and
the function as a process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.conftest import AUTH, REPO
from tests.kafkabroker import KafkaBroker, consumer_pod_template
from tests.kafkascene import ALERT, decisions, evictions
from tests.servers import wait_for

# Nothing is ever asked of the metrics backend at the source without an inflow query: a port
# where nothing listens makes any such request fail loudly.
NO_METRICS = "http://127.0.0.1:9"


def at_source(namespace: str, group: str, bootstrap: str, **kafka) -> dict:
    return {"name": "consumer", "namespace": namespace, "deployment": "consumer", "container": "consumer",
            "min_pods": 3, "min_pod_age": "0s", "cooldown": "30s", "settle": "10s", "window": "10s",
            "signals": {"lag": {"threshold": 0.5, "floor": 50, "source": "kafka",
                                "kafka": {"bootstrap_servers": bootstrap, "group": group, "timeout": "3s", **kafka}}}}


def verify(client) -> tuple[int, dict]:
    response = client.post("/rebalance", json={"target": "consumer", "signal": "lag"}, headers=AUTH)
    return response.status_code, response.get_json()


def nothing_done(kube) -> bool:
    """No eviction, no delete, no state written: what every refusal must leave."""
    return (evictions(kube) == [] and kube.requests("delete", "pods") == []
            and not [r for r in kube.requests() if r.resource == "configmaps" and r.verb in ("create", "update", "patch")])


def test_the_group_rule_fires_and_the_function_finds_the_slow_consumer_at_the_brokers(scene, chain, kube):
    group = scene(partitions=8, replicas=4, exporter=True)
    slow = group.pods[2]
    group.slow(slow, 150)
    target = at_source(kube.namespace, group.group, group.broker.bootstrap)
    running = chain({"dry_run": False, "log_format": "json", "targets": [target]})
    group.produce(dict.fromkeys(range(8), 20.0), seconds=120)

    wait_for(lambda: evictions(kube), "the function's eviction", timeout=90)

    assert evictions(kube) == [slow]
    acted = wait_for(lambda: decisions(running, "acted"), "the acted decision in the function's log", timeout=15)[0]
    assert acted["source"] == "kafka" and acted["alerts"] and acted["group"]["state"] == "STABLE", acted
    fired = [a for a in running.alerts(ALERT) if a["labels"].get("rebalancer_target") == "consumer"]
    assert fired and "kafka_consumergroup_lag" in rules_of(running), "the group-level rule fired"


def rules_of(running) -> str:
    return (running.workdir / "rules.yml").read_text()


def test_a_slow_consumer_is_found_at_the_brokers_its_pod_evicted_and_the_effect_judged_there(scene, make_client, kube):
    group = scene(partitions=8, replicas=4)
    slow = group.pods[1]
    group.slow(slow, 150)  # 6-7 messages a second, against 40 a second into its two partitions
    group.produce(dict.fromkeys(range(8), 20.0), seconds=60)
    wait_for(lambda: (lag := group.lag_at_brokers()) and sum(lag[p] for p in group.settled.members[1].partitions) > 400,
             "the slow consumer's partitions to fall behind at the brokers", timeout=40)
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, group.broker.bootstrap)],
                         env_rebalancer_dry_run="false")

    status, body = verify(client)

    (decision,) = body["decisions"]
    assert status == 200 and decision["outcome"] == "acted", decision
    assert decision["source"] == "kafka" and decision["query"].startswith(f"kafka: consumer group {group.group}")
    assert (decision["group"]["state"], decision["group"]["protocol"], decision["group"]["assignor"]) == (
        "STABLE", "consumer", "uniform")
    assert decision["group"]["unmapped_members"] == [] and decision["group"]["pods_without_member"] == []
    assert [s["pod"] for s in decision["selected"] if s["role"] == "hot"] == [slow]
    held = {pod: sorted(int(p.split("/")[1]) for p in partitions) for pod, partitions in decision["partitions"]["held"].items()}
    assert held == {m.client_id: sorted(m.partitions) for m in group.settled.members}, "attributed as the brokers assign"
    assert "the consumer is slow or stuck" in decision["reason"]
    assert slow in evictions(kube)

    # The closed loop judges the action from the same source: the group at the brokers, settled.
    wait_for(lambda: [m for m in group.broker.wait_for_group(group.group, 4, 8).members if m.client_id not in group.pods],
             "the replacement to join the group", timeout=60)
    wait_for(lambda: max(group.lag_at_brokers().values()) < 100, "the lag to drain at the brokers", timeout=60)
    time.sleep(10)  # settle
    status, body = verify(client)
    (judged,) = body["decisions"]
    assert status == 200 and judged["source"] == "kafka", judged
    assert [e["effect"] for e in judged.get("effects", [])] == ["improved"], judged


def test_a_hot_partition_at_the_brokers_is_not_chased(scene, make_client, kube):
    # Every message costs 5 ms: a consumer does 200 a second. One key sends 300 a second to one
    # partition; its owner cannot keep up, whoever it is, while its other partition keeps up.
    group = scene(partitions=6, replicas=3, process_ms=5)
    owner = group.settled.members[0]
    hot = owner.partitions[0]
    group.produce({p: 300.0 if p == hot else 20.0 for p in range(6)}, seconds=60)
    wait_for(lambda: group.lag_at_brokers()[hot] > 1500, "the hot partition to fall behind at the brokers", timeout=40)
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, group.broker.bootstrap)],
                         env_rebalancer_dry_run="false")

    status, body = verify(client)

    (decision,) = body["decisions"]
    assert status == 200 and decision["code"] == "hot_partition", decision
    assert decision["partitions"]["hot_partition"]["pod"] == owner.client_id
    assert decision["partitions"]["hot_partition"]["partition"] == str(hot)
    assert "keep up" in decision["partitions"]["hot_partition"]["evidence"]
    assert nothing_done(kube)


def test_a_rebalancing_group_is_skipped_and_nothing_is_done(scene, make_client, kube):
    # The classic protocol waits for every member to rejoin; one busy for 20 s a message rejoins late,
    # so a new member keeps the group preparing its rebalance for that long.
    group = scene(partitions=6, replicas=3, protocol="classic", max_poll_interval_ms=60_000)
    group.slow(group.pods[0], 20_000)
    group.produce(dict.fromkeys(range(6), 5.0), seconds=60)
    time.sleep(3)  # the slow consumer is inside its 20 s message
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, group.broker.bootstrap)],
                         env_rebalancer_dry_run="false")
    kube.apps.patch_namespaced_deployment_scale("consumer", kube.namespace, {"spec": {"replicas": 4}})

    answers = wait_for(lambda: (found := verify(client)) and found[1]["decisions"][0].get("code") == "group_rebalancing"
                       and found, "a verification while the group rebalances", timeout=30, interval=0.5)

    status, body = answers
    (decision,) = body["decisions"]
    assert status == 200 and decision["outcome"] == "skipped" and decision["source"] == "kafka"
    assert decision["group"]["state"] in ("PREPARING_REBALANCING", "COMPLETING_REBALANCING"), decision
    assert "is rebalancing" in decision["reason"] and "the next alert verifies again" in decision["reason"]
    assert nothing_done(kube)


def test_an_unknown_group_is_skipped_with_its_own_code(scene, make_client, kube):
    group = scene(partitions=2, replicas=3)
    client = make_client(NO_METRICS, [at_source(kube.namespace, "no-such-group", group.broker.bootstrap)],
                         env_rebalancer_dry_run="false")

    status, body = verify(client)

    (decision,) = body["decisions"]
    assert status == 200 and decision["code"] == "unknown_group", decision
    assert "know no consumer group 'no-such-group'" in decision["reason"] and decision["group"]["state"] == "DEAD"
    assert nothing_done(kube)


def test_members_whose_address_is_no_pod_ip_are_never_guessed(scene, make_client, kube):
    """pod_from: host on this machine: every consumer reaches the broker from 127.0.0.1, while the
    simulated pods' IPs are 127.x addresses of their own (as behind a NAT). No member maps, every
    one is listed with why, and the pods count as without data: nothing is decided on a guess."""
    group = scene(partitions=4, replicas=3)
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, group.broker.bootstrap, pod_from="host")],
                         env_rebalancer_dry_run="false")

    status, body = verify(client)

    (decision,) = body["decisions"]
    assert status == 200 and decision["code"] == "incomplete_data", decision
    unmapped = decision["group"]["unmapped_members"]
    assert sorted(m["client_id"] for m in unmapped) == group.pods
    assert {m["why"] for m in unmapped} == {"host 127.0.0.1 is no pod IP of the target"}
    assert decision["group"]["pods_without_member"] == group.pods and decision["missing_pods"] == group.pods
    assert nothing_done(kube)


def test_configured_topics_are_read_whole_and_one_that_does_not_exist_is_named(scene, make_client, kube):
    group = scene(partitions=4, replicas=3)
    other = group.broker.create_topic(f"never-consumed-{uuid.uuid4().hex[:6]}", 3)  # every partition of it: uncommitted, from the earliest offset
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, group.broker.bootstrap,
                                                topics=[group.topic, other])])
    status, body = verify(client)
    (decision,) = body["decisions"]
    assert status == 200 and decision["partitions"]["count"] == 4, decision
    assert decision["group"]["partitions_unowned"] == [f"{other}/0", f"{other}/1", f"{other}/2"]

    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, group.broker.bootstrap,
                                                topics=[group.topic, "no-such-topic"])], env_rebalancer_dry_run="false")
    status, body = verify(client)
    (decision,) = body["decisions"]
    assert status == 200 and decision["code"] == "kafka_error" and "topic 'no-such-topic'" in decision["reason"], decision
    assert nothing_done(kube)


def test_a_closed_port_is_a_503_that_says_so_and_nothing_is_done(scene, make_client, kube):
    group = scene(partitions=2, replicas=3)
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, "127.0.0.1:9", timeout="2s")],
                         env_rebalancer_dry_run="false")

    status, body = verify(client)

    assert status == 503 and body["outcome"] == "skipped", body
    assert "did not answer" in body["reason"] and "Connection refused" in body["reason"], body["reason"]
    assert nothing_done(kube)


def test_a_group_whose_coordinator_never_comes_is_a_503_at_its_timeout(scene, make_client, kube, tmp_path):
    """A broker that cannot make its offsets topic (three replicas asked of one broker) has no
    coordinator for any group. librdkafka looks for one again and again within the request's
    timeout, which is what is left of the function's: a 503 that says what did not come, at the
    timeout and not after it."""
    group = scene(partitions=2, replicas=3)
    broker = KafkaBroker(tmp_path, overrides={"offsets.topic.replication.factor": "3"}).start()
    try:
        client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, broker.bootstrap, timeout="2s")],
                             env_rebalancer_dry_run="false")
        began = time.monotonic()
        status, body = verify(client)
        took = time.monotonic() - began
    finally:
        broker.stop()

    assert status == 503 and body["outcome"] == "skipped", body
    assert f"the brokers at {broker.bootstrap} did not answer with the group's description within 2s" \
        in body["reason"], body["reason"]
    assert took < 4, f"asked past its 2 s timeout: {took:.1f} s"
    assert nothing_done(kube)


@pytest.mark.parametrize(("listener", "mechanism"), [
    ("tls", "SCRAM-SHA-512"), ("tls", "PLAIN"), ("sasl", "SCRAM-SHA-256")])
def test_sasl_and_tls_read_the_group_and_the_password_stays_out_of_every_answer(scene, make_client, kube, tmp_path,
                                                                                  listener, mechanism, capsys):
    group = scene(partitions=4, replicas=3)
    broker: KafkaBroker = group.broker
    secret = tmp_path / "kafka-password"
    secret.write_text(broker.password + "\n")
    port, tls = (broker.tls_port, {"tls": {"ca_file": str(broker.ca_file)}}) if listener == "tls" else (broker.sasl_port, {})
    sasl = {"mechanism": mechanism, "username": broker.user, "password_file": str(secret)}
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, f"127.0.0.1:{port}", sasl=sasl, **tls)])

    status, body = verify(client)

    (decision,) = body["decisions"]
    assert status == 200 and decision["source"] == "kafka" and decision["group"]["state"] == "STABLE", decision
    assert decision["group"]["members"] == 3 and decision["partitions"]["count"] == 4
    metrics = client.get("/metrics").get_data(as_text=True)
    said = repr(body) + metrics + capsys.readouterr().out + capsys.readouterr().err
    assert broker.password not in said


def test_a_wrong_password_is_a_clear_refusal_and_the_rotated_file_is_read_at_the_next_call(scene, make_client, kube,
                                                                                            tmp_path):
    group = scene(partitions=2, replicas=3)
    broker: KafkaBroker = group.broker
    secret = tmp_path / "kafka-password"
    secret.write_text("not-the-password\n")
    sasl = {"mechanism": "SCRAM-SHA-512", "username": broker.user, "password_file": str(secret)}
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, f"127.0.0.1:{broker.tls_port}", sasl=sasl,
                                                tls={"ca_file": str(broker.ca_file)})], env_rebalancer_dry_run="false")

    began = time.monotonic()
    status, body = verify(client)
    took = time.monotonic() - began

    (decision,) = body["decisions"]
    assert status == 200 and decision["code"] == "kafka_error", decision
    assert "SASL authentication error" in decision["reason"] and "invalid credentials" in decision["reason"]
    assert "not-the-password" not in repr(body)
    assert took < 3, f"a refused password is known at the first answer, not at the timeout ({took:.1f} s)"
    assert nothing_done(kube)

    secret.write_text(broker.password + "\n")  # the mounted Secret rotated
    status, body = verify(client)
    assert status == 200 and body["decisions"][0]["group"]["state"] == "STABLE", body


def test_a_certificate_from_another_ca_is_refused(scene, make_client, kube, tmp_path):
    group = scene(partitions=2, replicas=3)
    broker: KafkaBroker = group.broker
    from tests.certificates import certificate_authority_and_leaf

    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(certificate_authority_and_leaf("other")[0])
    secret = tmp_path / "kafka-password"
    secret.write_text(broker.password)
    sasl = {"mechanism": "SCRAM-SHA-256", "username": broker.user, "password_file": str(secret)}
    client = make_client(NO_METRICS, [at_source(kube.namespace, group.group, f"127.0.0.1:{broker.tls_port}", sasl=sasl,
                                                tls={"ca_file": str(other_ca)})], env_rebalancer_dry_run="false")

    status, body = verify(client)

    (decision,) = body["decisions"]
    assert status == 200 and decision["code"] == "kafka_error" and "certificate verify failed" in decision["reason"], decision
    assert nothing_done(kube)


def three_consumers(broker: KafkaBroker, kube, make_client, group: str, bootstrap: str | None = None):
    """A topic of four partitions, a Deployment of three consumers in ``group``, settled, and the
    live function reading the group at ``bootstrap`` (the broker's own by default) within 3 s:
    (the function's client, the group as the brokers first describe it)."""
    topic = broker.create_topic("events", 4)
    kube.deployment("consumer", replicas=3, pod_spec=consumer_pod_template(broker, topic, group))
    settled = broker.wait_for_group(group, 3, 4)
    client = make_client(NO_METRICS, [at_source(kube.namespace, group, bootstrap or broker.bootstrap, timeout="3s")],
                         env_rebalancer_dry_run="false")
    return client, settled


def killed_during_a_verification(broker: KafkaBroker, client) -> tuple[list, threading.Thread]:
    """A verification started on a thread while the broker is frozen (it takes the requests and
    answers none), and the broker SIGKILLed a second later (its connections drop): the thread's
    answer lands in the list."""
    os.kill(broker.process.pid, signal.SIGSTOP)
    answered: list = []
    during = threading.Thread(target=lambda: answered.append(verify(client)))
    during.start()
    time.sleep(1)
    os.kill(broker.process.pid, signal.SIGKILL)
    return answered, during


def test_a_broker_stopped_in_the_middle_of_a_verification_is_a_503_and_nothing_is_done(make_client, kube,
                                                                                      tmp_path_factory):
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-stopped")).start()
    try:
        client, _ = three_consumers(broker, kube, make_client, "stopped-group")
        status, body = verify(client)  # the client is connected, and the group read once
        assert status == 200 and body["decisions"][0]["group"]["state"] == "STABLE", body

        answered, during = killed_during_a_verification(broker, client)
        during.join(timeout=30)

        (status, body), = answered
        # The request was on the wire when the connection dropped: librdkafka's transport failure.
        assert status == 503 and body["outcome"] == "skipped", body
        assert f"the brokers at {broker.bootstrap} failed on the group's description: Local: Broker transport failure" \
            in body["reason"], body["reason"]
        assert nothing_done(kube)
    finally:
        kube.apps.delete_namespaced_deployment("consumer", kube.namespace)
        broker.stop()


def test_a_broker_restarted_in_the_middle_of_a_verification_is_a_503_and_the_next_reads_the_whole_group(
        make_client, kube, tmp_path_factory):
    """The broker is frozen while the function's group read is on the wire, killed, and started
    again on its data (its topic, the group's committed offsets): that read fails (503, nothing
    done). Once the consumers have rejoined, the very next verification reads the whole group, and
    so it does after a second restart that no read saw. (librdkafka's client, kept from before,
    went on timing out against the restarted broker: the function now makes a new one when its
    brokers went away.)"""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-restarted")).start()
    try:
        client, before = three_consumers(broker, kube, make_client, "restarted-group")
        status, body = verify(client)
        assert status == 200 and body["decisions"][0]["group"]["state"] == "STABLE", body

        answered, during = killed_during_a_verification(broker, client)
        broker.process.wait(timeout=10)
        broker.restart()
        during.join(timeout=30)

        (status, body), = answered
        assert status == 503 and body["outcome"] == "skipped", body
        assert f"the brokers at {broker.bootstrap}" in body["reason"], body["reason"]
        assert nothing_done(kube)

        def reads_whole() -> None:
            after = broker.wait_for_group("restarted-group", 3, 4)  # the consumers are back on the restarted broker
            assert sorted(m.client_id for m in after.members) == sorted(m.client_id for m in before.members)
            status, body = verify(client)
            decisions = body.get("decisions") or []
            assert status == 200 and decisions and decisions[0]["group"]["state"] == "STABLE", body
            assert decisions[0]["outcome"] == "skipped" and nothing_done(kube), decisions  # balanced: nothing to move

        reads_whole()
        os.kill(broker.process.pid, signal.SIGKILL)  # a second restart, with no read while it is down
        broker.process.wait(timeout=10)
        broker.restart()
        reads_whole()
    finally:
        kube.apps.delete_namespaced_deployment("consumer", kube.namespace)
        broker.stop()


def test_broken_connections_to_the_brokers_are_503s_and_the_next_verification_reads_the_whole_group(
        make_client, kube, tmp_path_factory, fault_proxy):
    """The function reaches the broker through toxiproxy (the broker's PROXIED listener advertises
    the proxy, so every connection stays behind it); the consumers do not. A reset in the middle
    of an answer and a black hole are 503s with nothing done; latency only slows the read; and
    once the connection is whole, the next verification reads the whole group."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-proxied"))
    route = "kafka-" + kube.namespace
    broker.proxied_at = fault_proxy.route(route, f"127.0.0.1:{broker.proxied_port}")
    broker.start()
    try:
        client, _ = three_consumers(broker, kube, make_client, "proxied-group", broker.proxied_at)

        def reads_whole() -> dict:
            status, body = verify(client)
            decisions = body.get("decisions") or []
            assert status == 200 and decisions and decisions[0]["group"]["state"] == "STABLE", body
            assert decisions[0]["group"]["members"] == 3 and nothing_done(kube), decisions
            return decisions[0]

        reads_whole()
        for fault, inject in (("reset mid-answer", lambda: fault_proxy.reset(route, after_bytes=200)),
                              ("black hole", lambda: fault_proxy.black_hole(route))):
            inject()
            status, body = verify(client)
            assert status == 503 and body["outcome"] == "skipped", (fault, body)
            assert f"the brokers at {broker.proxied_at}" in body["reason"], (fault, body["reason"])
            assert nothing_done(kube), fault
            fault_proxy.clear(route)
            reads_whole()

        fault_proxy.latency(route, ms=200)
        slowed = reads_whole()
        assert slowed["group"]["read_seconds"] >= 0.2, slowed["group"]  # the latency was there, and only slowed it
        fault_proxy.clear(route)
    finally:
        kube.apps.delete_namespaced_deployment("consumer", kube.namespace)
        broker.stop()
        fault_proxy.drop(route)


def in_a_process_of_its_own(case: str, *args: str) -> subprocess.CompletedProcess:
    """tests/kafka/process_crashes.py: what it checks, when it fails, kills the process."""
    argv = [sys.executable, "-X", "faulthandler", str(REPO / "tests" / "kafka" / "process_crashes.py"), case, *args]
    return subprocess.run(argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("case", ["timed-out", "refused"])
def test_a_client_let_go_with_requests_in_flight_never_aborts_the_process(kafka_broker, case):
    """librdkafka aborts the whole process when a client is destroyed on its own threads, where a
    garbage collection can run; a timed-out or refused read leaves just such garbage behind."""
    bootstrap = kafka_broker.bootstrap if case == "timed-out" else f"127.0.0.1:{kafka_broker.sasl_port}"
    run = in_a_process_of_its_own(case, bootstrap, f"collected-{uuid.uuid4().hex[:8]}", kafka_broker.user)
    expected = "KafkaUnavailableError" if case == "timed-out" else "KafkaAccessError"
    assert run.returncode == 0 and run.stdout.split() == [expected, "survived"], (
        f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-3000:]}")


def test_the_first_reads_on_a_broker_that_has_just_started_never_crash_the_process(tmp_path):
    """A broker that has just started answers NOT_COORDINATOR while it makes and loads its offsets
    topic; an AdminClient's list_consumer_group_offsets crashed the process on that answer
    (librdkafka#5040), 4 times in 4 with 30 groups. A broker of this test's own, as the session's
    has long settled."""
    broker = KafkaBroker(tmp_path).start()
    try:
        run = in_a_process_of_its_own("fresh-broker", broker.bootstrap, f"fresh-{uuid.uuid4().hex[:8]}")
    finally:
        broker.stop()
    assert run.returncode == 0 and run.stdout.split()[-1] == "survived", (
        f"exit {run.returncode}\n{run.stdout}\n{run.stderr[-3000:]}")
    outcomes = run.stdout.split()[:-2]
    assert run.stdout.split()[-2] == "30" and set(outcomes) <= {"DEAD", "KafkaUnavailableError"}, run.stdout
