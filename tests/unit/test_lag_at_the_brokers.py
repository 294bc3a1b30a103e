"""Lag measured at the brokers (``source: kafka``): the group's attribution to pods (pure), the
configuration's checks, and the orchestration's answers with a fake of the group reader port.
The same behaviours are shown on a real broker and group in tests/kafka/test_lag_at_the_source.py."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from rebalancer import service
from rebalancer.acting import Actor
from rebalancer.alerts import ManualRun, plan_manual
from rebalancer.config import Settings, load_settings
from rebalancer.cooldown import StateStore
from rebalancer.core import groups
from rebalancer.core.groups import GroupSnapshot, Member, Offsets
from rebalancer.errors import ConfigError, KafkaAccessError, KafkaUnavailableError
from rebalancer.telemetry import Telemetry
from tests.fakes import FakeGroup, FakeKube, FakeMetrics

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)
PODS = ["c-0", "c-1", "c-2", "c-3"]


def snapshot(lags: dict[str, list[int]], *, state: str = "STABLE", committed: bool = True, extra: tuple = (),
             assignor: str = "uniform") -> GroupSnapshot:
    """A group whose member ``pod`` holds partitions with the given lags (topic t, numbered in order)."""
    members, offsets, n = [], {}, 0
    for pod, partition_lags in lags.items():
        held = []
        for lag in partition_lags:
            offsets[("t", n)] = Offsets(high=1000 + lag, committed=1000 if committed else None, earliest=1000)
            held.append(("t", n))
            n += 1
        members.append(Member(f"m-{pod}", pod, f"/10.0.0.{len(members) + 1}", tuple(held)))
    return GroupSnapshot("ingestion", state, "consumer", assignor, (*members, *extra), offsets)


def test_a_partitions_lag_is_its_high_watermark_less_the_commit_or_the_earliest_offset_when_none():
    assert Offsets(high=150, committed=100).lag == 50
    assert Offsets(high=150, committed=None, earliest=20).lag == 130
    assert Offsets(high=100, committed=120).lag == 0  # a commit past the watermark (a truncated log) is no lag


def test_members_map_to_pods_by_client_id_and_what_maps_to_nothing_is_reported():
    stranger = Member("m-x", "consumer-ingestion-1", "/10.9.9.9", (("t", 9),))
    read = snapshot({"c-0": [10, 20], "c-1": [5]}, extra=(stranger,))
    attributed = groups.attribute(read, PODS, {}, "client_id")

    assert {pod: [p.lag for p in held] for pod, held in attributed.samples.held.items()} == {"c-0": [10, 20], "c-1": [5]}
    assert attributed.values == {"c-0": 30, "c-1": 5}
    (unmapped,) = attributed.report.unmapped_members
    assert (unmapped.client_id, unmapped.partitions) == ("consumer-ingestion-1", 1)
    assert "is no pod of the target" in unmapped.why
    assert attributed.report.pods_without_member == ("c-2", "c-3")
    assert attributed.samples.members == frozenset({"c-0", "c-1"})


def test_members_map_to_pods_by_their_address_and_a_shared_address_is_never_guessed():
    read = snapshot({"a": [10], "b": [20], "c": [30]})
    ips = {"c-0": "10.0.0.1", "c-1": "10.0.0.2", "c-2": "10.0.0.3", "c-3": "10.0.0.3"}  # c-2 and c-3: hostNetwork
    attributed = groups.attribute(read, PODS, ips, "host")

    assert {pod: [p.lag for p in held] for pod, held in attributed.samples.held.items()} == {"c-0": [10], "c-1": [20]}
    (shared,) = attributed.report.unmapped_members
    assert shared.host == "10.0.0.3" and "IP of 2 pods" in shared.why and "pod_from: client_id" in shared.why


def test_partitions_no_member_holds_are_named():
    read = snapshot({"c-0": [10]})
    read = GroupSnapshot(read.group, read.state, read.protocol, read.assignor, read.members,
                         {**read.offsets, ("t", 7): Offsets(5, 5)})
    assert groups.attribute(read, PODS, {}, "client_id").report.partitions_unowned == ("t/7",)


@pytest.mark.parametrize(("read", "code", "words"), [
    (GroupSnapshot("ingestion", "DEAD", "classic", "", (), {}), "unknown_group", "know no consumer group 'ingestion'"),
    (GroupSnapshot("ingestion", "EMPTY", "classic", "", (), {("t", 0): Offsets(5, 5)}), "group_empty", "no members"),
    (snapshot({"c-0": [1]}, state="PREPARING_REBALANCING"), "group_rebalancing", "state PREPARING_REBALANCING"),
    (snapshot({"c-0": [1]}, state="UNKNOWN"), "group_rebalancing", "assigning or reconciling"),
])
def test_a_group_that_cannot_be_judged_now_is_refused_with_its_own_code(read, code, words):
    refused = groups.refusal(read)
    assert refused is not None and refused.code == code and words in refused.reason


def test_a_stable_group_whose_member_has_not_taken_up_its_target_assignment_is_rebalancing():
    moving = Member("m-c-3", "c-3", "/10.0.0.4", (), target=(("t", 9),))
    refused = groups.refusal(snapshot({"c-0": [1]}, extra=(moving,)))
    assert refused is not None and refused.code == "group_rebalancing" and "(c-3)" in refused.reason
    assert groups.refusal(snapshot({"c-0": [1]})) is None


# -- the configuration ---------------------------------------------------------------------------

def lag_config(tmp_path, monkeypatch, **kafka) -> None:
    document = {"metrics_url": "http://vm:8428", "targets": [{
        "name": "consumer", "namespace": "ns", "deployment": "consumer",
        "signals": {"lag": {"threshold": 0.5, "source": "kafka",
                            "kafka": {"bootstrap_servers": "kafka-0.kafka:9092,10.0.0.1:9093", "group": "ingestion",
                                      **kafka}}}}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("REBALANCER_CONFIG", str(path))


def test_a_kafka_source_is_read_with_its_defaults(tmp_path, monkeypatch):
    lag_config(tmp_path, monkeypatch)
    kafka = load_settings().targets[0].kafka_source("lag")
    assert kafka is not None and kafka.pod_from == "client_id" and kafka.timeout == timedelta(seconds=5)
    assert kafka.security_protocol == "PLAINTEXT"
    assert load_settings().targets[0].group_lag_query() == 'sum(kafka_consumergroup_lag{consumergroup="ingestion"})'


@pytest.mark.parametrize(("kafka", "message"), [
    ({"bootstrap_servers": "kafka-0"}, "is not host:port"),
    ({"bootstrap_servers": "kafka-0:99999"}, "is not host:port"),
    ({"group": ""}, "at least 1 character"),
    ({"pod_from": "ip"}, "'client_id' or 'host'"),
    ({"topics": ["bad topic"]}, "is not a Kafka topic name"),
    ({"timeout": "5m"}, "at most 1m"),
    ({"tls": {"ca_file": "/nonexistent/ca.pem"}}, "is not a readable file"),
    ({"sasl": {"mechanism": "GSSAPI", "username": "u", "password_env": "HOME"}}, "'PLAIN', 'SCRAM-SHA-256' or"),
    ({"sasl": {"mechanism": "PLAIN", "username": "u"}}, "set exactly one"),
    ({"sasl": {"mechanism": "PLAIN", "username": "u", "password_env": "KAFKA_PASSWORD_NOT_SET"}},
     "environment variable KAFKA_PASSWORD_NOT_SET is not set"),
    ({"sasl": {"mechanism": "PLAIN", "username": "u", "password": "hunter2"}}, "Extra inputs are not permitted"),
])
def test_every_kafka_field_is_checked_at_start_and_a_password_is_never_in_the_file(tmp_path, monkeypatch, kafka, message):
    monkeypatch.delenv("KAFKA_PASSWORD_NOT_SET", raising=False)
    lag_config(tmp_path, monkeypatch, **kafka)
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings()
    assert "hunter2" not in str(raised.value) and "signals.lag.kafka" in str(raised.value)


@pytest.mark.parametrize(("signals", "message"), [
    ({"cpu": {"threshold": 0.3, "source": "kafka", "kafka": {"bootstrap_servers": "k:9092", "group": "g"}}},
     "only the lag signal can be measured at the brokers"),
    ({"lag": {"threshold": 0.5, "source": "kafka"}}, "kafka: required with source: kafka"),
    ({"lag": {"threshold": 0.5, "kafka": {"bootstrap_servers": "k:9092", "group": "g"}}}, "only read with source: kafka"),
    ({"lag": {"threshold": 0.5, "query": 'sum by (pod) (x{group="$group"})'}}, "\\$group is the consumer group"),
])
def test_a_kafka_source_is_for_lag_only_and_needs_its_brokers(tmp_path, monkeypatch, signals, message):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"metrics_url": "http://vm:8428", "targets": [
        {"name": "consumer", "namespace": "ns", "deployment": "consumer", "signals": signals}]}))
    monkeypatch.setenv("REBALANCER_CONFIG", str(path))
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_the_password_file_is_read_anew_each_time_and_tls_with_sasl_is_sasl_ssl(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("first\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    lag_config(tmp_path, monkeypatch, tls={"ca_file": str(ca)},
               sasl={"mechanism": "SCRAM-SHA-512", "username": "rebalancer", "password_file": str(secret)})
    kafka = load_settings().targets[0].kafka_source("lag")
    assert kafka is not None and kafka.sasl is not None and kafka.security_protocol == "SASL_SSL"
    assert kafka.sasl.password() == "first"
    secret.write_text("rotated\n")
    assert kafka.sasl.password() == "rotated"
    assert "rotated" not in repr(load_settings()) and "first" not in repr(kafka)


# -- the orchestration, with a fake group reader ---------------------------------------------------

def run(read: GroupSnapshot | Exception, dry_run: bool = True, **kafka) -> tuple[service.Outcome, FakeKube]:
    kube = FakeKube()
    kube.add_deployment("ns", "consumer", PODS, NOW - timedelta(hours=1))
    config = Settings(metrics_url="http://metrics.invalid", dry_run=dry_run, targets=[{
        "name": "consumer", "namespace": "ns", "deployment": "consumer", "min_pods": 3, "min_pod_age": "0s",
        "signals": {"lag": {"threshold": 0.5, "floor": 50, "source": "kafka",
                            "kafka": {"bootstrap_servers": "k:9092", "group": "ingestion", **kafka}}}}])
    telemetry, logger = Telemetry(CollectorRegistry()), logging.getLogger("test-lag-at-the-brokers")
    actor = Actor(kube, StateStore(kube, config.state_configmap, config.history_limit), telemetry, logger)
    metrics = FakeMetrics({})  # never asked: the lag comes from the brokers
    deps = service.Dependencies(config, kube, metrics, telemetry, logger, actor, {"consumer": FakeGroup(read)})
    outcome = service.handle(plan_manual(ManualRun(target="consumer"), config), deps, NOW, invocation="inv-1")
    assert metrics.queries == []
    return outcome, kube


def test_a_slow_consumer_at_the_brokers_is_selected_with_source_kafka():
    outcome, _ = run(snapshot({"c-0": [100, 110], "c-1": [90, 100], "c-2": [2000, 2100], "c-3": [95, 105]}))

    (decision,) = outcome.body["decisions"]
    assert outcome.status == 200 and decision["code"] == "skew_verified", decision
    assert decision["source"] == "kafka" and decision["group"]["state"] == "STABLE"
    assert [s["pod"] for s in decision["selected"] if s["role"] == "hot"] == ["c-2"]
    assert decision["partitions"]["held"]["c-2"] == ["t/4", "t/5"]
    assert decision["query"] == "kafka: consumer group ingestion at k:9092"
    assert decision["projected"]["model"] == "uniform"


def test_the_projection_follows_the_assignor_the_brokers_report():
    outcome, _ = run(snapshot({"c-0": [100, 110], "c-1": [90, 100], "c-2": [2000, 2100], "c-3": [95, 105]},
                              assignor="range"))
    assert outcome.body["decisions"][0]["projected"]["model"] == "range"


def test_a_pod_that_is_no_member_of_the_group_is_missing_data_not_idle():
    outcome, _ = run(snapshot({"c-0": [100, 110], "c-1": [90, 100]}))

    (decision,) = outcome.body["decisions"]
    assert decision["code"] == "incomplete_data", decision
    assert decision["missing_pods"] == ["c-2", "c-3"] and decision["group"]["pods_without_member"] == ["c-2", "c-3"]


@pytest.mark.parametrize(("read", "code"), [
    (GroupSnapshot("ingestion", "DEAD", "classic", "", (), {}), "unknown_group"),
    (snapshot({"c-0": [1]}, state="COMPLETING_REBALANCING"), "group_rebalancing"),
])
def test_an_unknown_or_rebalancing_group_is_skipped_and_nothing_is_done(read, code):
    outcome, kube = run(read, dry_run=False)

    (decision,) = outcome.body["decisions"]
    assert outcome.status == 200 and decision["outcome"] == "skipped" and decision["code"] == code
    assert decision["group"]["state"] == read.state and decision["actions"] == []
    assert kube.writes() == []


def test_brokers_that_do_not_answer_are_a_503_and_a_refusal_is_a_clear_skip():
    unavailable, kube = run(KafkaUnavailableError("the brokers at k:9092 did not answer within 5s"), dry_run=False)
    assert unavailable.status == 503 and "did not answer within 5s" in unavailable.body["reason"]
    assert kube.writes() == []

    refused, kube = run(KafkaAccessError("SASL authentication error: invalid credentials"), dry_run=False)
    (decision,) = refused.body["decisions"]
    assert refused.status == 200 and decision["code"] == "kafka_error" and "invalid credentials" in decision["reason"]
    assert kube.writes() == []


# -- the cold start ----------------------------------------------------------------------------------

IMPORTED_AFTER_BUILD = """
import sys
from rebalancer.app import build
from rebalancer.config import load_settings
state = build(load_settings())
print("confluent_kafka" in sys.modules, sorted(state.deps.groups),
      sorted(m for m in ("rebalancer.adapters.kafka", "rebalancer.core.groups") if m in sys.modules))
"""


@pytest.mark.parametrize(("source", "expected"), [({}, "False [] []"), (
    {"source": "kafka", "kafka": {"bootstrap_servers": "127.0.0.1:9", "group": "g"}},
    "False ['consumer'] ['rebalancer.adapters.kafka', 'rebalancer.core.groups']")])
def test_the_kafka_client_is_imported_only_when_a_group_is_read_so_the_cold_start_does_not_grow(tmp_path, source,
                                                                                                  expected):
    import subprocess
    import sys

    config = tmp_path / "rebalancer.yaml"
    config.write_text(yaml.safe_dump({"metrics_url": "http://127.0.0.1:9", "log_format": "text", "targets": [{
        "name": "consumer", "namespace": "ns", "deployment": "consumer", "signals": {"lag": {"threshold": 0.5, **source}}}]}))
    env = {"REBALANCER_CONFIG": str(config), "KUBECONFIG": str(tmp_path / "none"), "PATH": "/usr/bin:/bin",
           "REBALANCER_ALLOW_UNAUTHENTICATED": "true"}
    (tmp_path / "none").write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
                                   "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
                                   "current-context: c\n")
    found = subprocess.run([sys.executable, "-c", IMPORTED_AFTER_BUILD], env=env, capture_output=True, text=True,
                           timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip().splitlines()[-1] == expected


def test_a_password_file_gone_mid_rotation_is_a_clear_refusal_that_names_the_file_not_its_content(tmp_path):
    from rebalancer.adapters.kafka import Connection, GroupReader

    missing = tmp_path / "password"

    def password() -> str:
        return missing.read_text()

    reader = GroupReader(Connection("127.0.0.1:9", 1.0, "SASL_PLAINTEXT", sasl_mechanism="PLAIN", username="u",
                                    password=password), "g")
    with pytest.raises(KafkaAccessError, match=f"cannot read the Kafka password for 127.0.0.1:9: No such file or "
                                               f"directory \\({missing}\\)"):
        reader.read_group()
