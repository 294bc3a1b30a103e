"""Hostile input, generated: at least 10,000 requests against the real app, live mode, with a real
VictoriaMetrics behind a logging proxy and the real control plane. Whatever arrives: never a 5xx,
never an action (the API server's audit log shows no write by the function), and never a query
other than the configured targets' own."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebalancer.config import SIGNAL_NAMES, Settings
from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import KAFKA_EXPORTER_LAG_JOIN, cpu_usage, partition_lag_with_assignment, to_victoriametrics_import
from tests.proxy import LoggingProxy
from tests.realcluster import Cluster, drop_namespace

# The strategies name this namespace, so the test's namespace on the control plane is exactly it
# (no other test of a session uses it).
NS = "posthog"
WRITES = ("create", "update", "patch", "delete", "deletecollection")
ALLOWED_STATUS = {200, 400, 403, 413}
TARGETS = [
    target("ingestion-consumer", NS, signals={"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5, "query": KAFKA_EXPORTER_LAG_JOIN}}),
    target("session-recordings", NS),
]
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from([
        'ingestion-consumer"} or vector(1) #', "ingestion-consumer\\", 'a"b', "x\ny", "{{ .Values }}", "$namespace", "${container}",
        "kube-system", "default", "*", ".*", "ingestion-consumer", "session-recordings", "posthog", "cpu", "lag",
        "cpu\n", " cpu", "CPU", "🔥", "\u202eevil", "\x00", "../../etc/passwd", "up offset 1h", "sum(rate(x[5m]))",
    ]),
)
LABEL_KEYS = st.one_of(st.sampled_from(["rebalancer_target", "rebalancer_signal", "namespace", "deployment", "alertname", "pod"]), st.text(max_size=12))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=30,
)
ALERT = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved", "pending", "", 1]), "labels": st.dictionaries(LABEL_KEYS, HOSTILE_TEXT, max_size=6)},
    optional={"annotations": st.dictionaries(st.text(max_size=8), HOSTILE_TEXT, max_size=3), "fingerprint": HOSTILE_TEXT,
              "startsAt": st.sampled_from(["2026-11-25T04:56:01Z", "not a time", 7])},
)
# Alerts that do name a configured target, carrying hostile companions: these reach verification,
# where a label value must never leak into a query or an API call.
MAPPED_ALERT = st.builds(
    lambda target, signal, extra, namespace, deployment: {
        "status": "firing",
        "labels": {**extra, "rebalancer_target": target, "rebalancer_signal": signal,
                   **({"namespace": namespace} if namespace is not None else {}),
                   **({"deployment": deployment} if deployment is not None else {})},
    },
    st.sampled_from(["ingestion-consumer", "session-recordings"]),
    st.sampled_from(["cpu", "cpu", "lag", "lag\n", 'cpu"}']),
    st.dictionaries(st.text(max_size=10).filter(lambda k: not k.startswith("rebalancer_")), HOSTILE_TEXT, max_size=4),
    st.one_of(st.none(), st.just("posthog"), HOSTILE_TEXT),
    st.one_of(st.none(), st.sampled_from(["ingestion-consumer", "session-recordings"]), HOSTILE_TEXT),
)
WEBHOOK = st.fixed_dictionaries(
    {"version": st.sampled_from(["4", "4", "4", "3", "", 4, None]), "status": st.sampled_from(["firing", "resolved", "x"]),
     "alerts": st.lists(st.one_of(ALERT, MAPPED_ALERT), max_size=5)},
    optional={"receiver": HOSTILE_TEXT, "groupKey": HOSTILE_TEXT, "truncatedAlerts": st.integers(), "commonLabels": st.dictionaries(LABEL_KEYS, HOSTILE_TEXT, max_size=3)},
)
MANUAL = st.fixed_dictionaries({}, optional={"target": HOSTILE_TEXT, "signal": HOSTILE_TEXT | st.integers(), "dry_run": JSON_VALUES})
HUGE = st.builds(lambda n, alert: {"version": "4", "status": "firing", "alerts": [alert] * n}, st.integers(101, 400), ALERT)


@pytest.fixture
def posthog(control_plane):
    cluster = Cluster(control_plane, NS)
    cluster.core.create_namespace({"metadata": {"name": NS}})
    cluster.grant()
    yield cluster
    drop_namespace(cluster)


def test_generated_hostile_requests_never_5xx_never_act_never_query_outside_the_targets(client_builder_for, posthog,
                                                                                        victoria_metrics, capsys):
    make_client = client_builder_for(posthog)
    pods = posthog.deployment("ingestion-consumer", replicas=6)
    recordings = posthog.deployment("session-recordings", replicas=4)
    now = aligned_now()
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict.fromkeys(pods, 0.5), now - 1200, now)
        + cpu_usage(NS, "session-recordings", dict.fromkeys(recordings, 0.5), now - 1200, now)
        + partition_lag_with_assignment(NS, "ingestion", dict.fromkeys(range(12), 100.0), {p: pods[p % 6] for p in range(12)}, now - 1200, now)))
    proxy = LoggingProxy(victoria_metrics.url).start()
    try:
        client = make_client(proxy.url, TARGETS, env_rebalancer_dry_run="false")  # live: any action would be a bug
        settings_model = Settings(metrics_url="http://x", targets=TARGETS)
        allowed_queries = {t.query_for(s) for t in settings_model.targets for s in SIGNAL_NAMES if s in t.signals}
        counts = {"requests": 0, "statuses": {}}

        def send(path: str, body: bytes) -> None:
            response = client.post(path, data=body, headers={**AUTH, "Content-Type": "application/json"})
            counts["requests"] += 1
            counts["statuses"][response.status_code] = counts["statuses"].get(response.status_code, 0) + 1
            assert response.status_code in ALLOWED_STATUS, (path, body[:300], response.get_data(as_text=True)[:300])
            assert response.is_json

        run = settings(max_examples=2500, deadline=None, derandomize=True, database=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])

        @run
        @given(st.sampled_from(["/", "/alertmanager", "/rebalance"]), st.binary(max_size=300))
        def raw_bytes(path, body):
            send(path, body)

        @run
        @given(st.sampled_from(["/", "/alertmanager", "/rebalance"]), JSON_VALUES)
        def any_json(path, value):
            send(path, json.dumps(value).encode())

        @run
        @given(st.sampled_from(["/", "/alertmanager"]), WEBHOOK)
        def webhook_shaped(path, payload):
            send(path, json.dumps(payload).encode())

        @run
        @given(MANUAL)
        def manual_runs(payload):
            send("/rebalance", json.dumps(payload).encode())

        @settings(max_examples=1000, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(MAPPED_ALERT, min_size=1, max_size=3))
        def valid_envelope_hostile_labels(alerts):
            send("/alertmanager", json.dumps({"version": "4", "status": "firing", "alerts": alerts}).encode())

        @settings(max_examples=50, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(HUGE)
        def huge_arrays(payload):
            send("/", json.dumps(payload).encode())

        for property_test in (raw_bytes, any_json, webhook_shaped, manual_runs, valid_envelope_hostile_labels, huge_arrays):
            property_test()

        writes = [r for r in posthog.requests() if r.verb in WRITES]
        outside = set(proxy.queries()) - allowed_queries
        with capsys.disabled():
            print(f"\n  [hostile] {counts['requests']} requests, statuses {dict(sorted(counts['statuses'].items()))}, "
                  f"{len(proxy.queries())} queries reached the backend, {len(writes)} Kubernetes writes")
        assert counts["requests"] >= 10_000
        assert writes == [], writes[:3]
        assert outside == set(), sorted(outside)[:3]
        assert len(proxy.queries()) > 250, "the generator must also reach the verification path often"
    finally:
        proxy.stop()
