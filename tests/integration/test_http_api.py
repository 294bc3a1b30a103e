"""The HTTP surface through the real app (functions-framework's create_app): routes, auth,
limits and status codes, with a real VictoriaMetrics and the real control plane behind it (the
API server's audit log shows whether the function asked Kubernetes anything). The two tests
that need a failing API server on demand use the stand-in, and say so."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AUTH, TOKEN, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.samples import sample, sample_in_namespace
from tests.servers import free_port
from tests.standin.fixtures import seed_deployment
from tests.terraform_rbac import role_rules

FIRING_SAMPLE = "alertmanager-0.25-firing-cpu-two-deployments.json"
RESOLVED_SAMPLE = "alertmanager-0.25-resolved-cpu-two-deployments.json"


@pytest.fixture
def firing(kube):
    return sample_in_namespace(FIRING_SAMPLE, kube.namespace)


@pytest.fixture
def resolved(kube):
    return sample_in_namespace(RESOLVED_SAMPLE, kube.namespace)


@pytest.fixture
def skewed(victoria_metrics, kube):
    """A five-pod Deployment with one hot pod (names sorted), on the control plane and in VictoriaMetrics."""
    pods = kube.deployment("ingestion-consumer", replicas=5)
    now = aligned_now()
    rates = dict(zip(pods, [0.125, 0.25, 0.3125, 0.28125, 1.5], strict=True))
    victoria_metrics.import_prometheus(to_victoriametrics_import(cpu_usage(kube.namespace, "ingestion-consumer", rates, now - 900, now)))
    return pods


def consumer(kube, **overrides):
    """The target, in the test's namespace; its pods are seconds old, hence min_pod_age 0."""
    return target("ingestion-consumer", kube.namespace, min_pod_age="0s", **overrides)


@pytest.fixture
def client(make_client, victoria_metrics, skewed, kube):
    return make_client(victoria_metrics.url, [consumer(kube)])


def metric_value(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


# -- authentication ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}x"}],
    ids=["none", "wrong", "no-scheme", "basic", "empty", "longer"],
)
def test_posts_without_the_right_token_get_401_before_any_upstream_call(client, kube, headers, firing):
    response = client.post("/", json=firing, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["outcome"] == "rejected"
    assert kube.requests() == []  # the Kubernetes API was never asked


def test_without_a_configured_token_posts_are_refused(make_client, victoria_metrics, kube, firing):
    client = make_client(victoria_metrics.url, [consumer(kube)], env_rebalancer_auth_token=None)
    response = client.post("/", json=firing, headers=AUTH)
    assert response.status_code == 401 and "no REBALANCER_AUTH_TOKEN" in response.get_json()["reason"]
    assert kube.requests() == []


def test_unauthenticated_mode_must_be_asked_for_explicitly(make_client, victoria_metrics, skewed, firing, kube):
    client = make_client(victoria_metrics.url, [consumer(kube)],
                         env_rebalancer_auth_token=None, env_rebalancer_allow_unauthenticated="true")
    assert client.post("/", json=firing).status_code == 200


def test_the_token_never_appears_in_answers_or_logs(client, caplog, firing):
    caplog.set_level(logging.DEBUG)
    bodies = [client.post("/", json=firing, headers=h).get_data(as_text=True) for h in (AUTH, {"Authorization": "Bearer no"})]
    assert all(TOKEN not in b for b in bodies)
    assert TOKEN not in caplog.text


# -- routes ------------------------------------------------------------------------------------------

def test_healthz_answers_without_auth_or_upstream_calls(client, kube):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.get_json()["status"] == "ok"
    assert kube.requests() == []


def test_metrics_are_in_prometheus_text_format_and_count_decisions(client, firing):
    client.post("/", json=firing, headers=AUTH)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    assert metric_value(client, "rebalancer_decisions_total", target="ingestion-consumer", signal="cpu", outcome="dry_run") == 1
    assert metric_value(client, "rebalancer_refused_alerts_total") == 1
    assert metric_value(client, "rebalancer_verified_cv", target="ingestion-consumer", signal="cpu") > 0.3


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nope", 404), ("GET", "/rebalance", 405), ("POST", "/healthz", 405)])
def test_unknown_routes_and_methods_are_refused(client, method, path, status):
    response = client.open(path, method=method, headers=AUTH)
    assert response.status_code == status and response.get_json()["outcome"] == "rejected"


def test_both_webhook_paths_take_alertmanager_payloads(client, firing):
    assert client.post("/alertmanager", json=firing, headers=AUTH).get_json()["outcome"] == "dry_run"
    assert client.post("/", json=firing, headers=AUTH).get_json()["outcome"] == "dry_run"


# -- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"[]", b'{"version": "3", "status": "firing", "alerts": []}',
     json.dumps({**sample(FIRING_SAMPLE), "alerts": "many"}).encode(), b"\xff\xfe", b"[" * 100000 + b"]" * 100000],
    ids=["empty", "broken", "list", "version-3", "alerts-not-list", "not-utf8", "deep-nesting"],
)
def test_malformed_payloads_get_400_and_touch_nothing(client, kube, body):
    response = client.post("/", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["outcome"] == "rejected"
    assert kube.requests() == []


def test_bodies_over_the_limit_get_413(client, kube):
    response = client.post("/", data=b" " * (1024 * 1024 + 1), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and kube.requests() == []


def test_more_alerts_than_the_limit_get_400_naming_the_limit(make_client, victoria_metrics, kube, firing):
    client = make_client(victoria_metrics.url, [consumer(kube)], max_alerts=3)
    payload = {**firing, "alerts": firing["alerts"] * 2}
    response = client.post("/", json=payload, headers=AUTH)
    assert response.status_code == 400 and "max_alerts 3" in response.get_json()["reason"]
    assert kube.requests() == []


def test_a_notification_whose_every_alert_is_refused_gets_403(make_client, victoria_metrics, kube, firing):
    client = make_client(victoria_metrics.url, [target("other", "elsewhere")])
    response = client.post("/", json=firing, headers=AUTH)
    assert response.status_code == 403
    assert [d["outcome"] for d in response.get_json()["decisions"]] == ["rejected", "rejected"]
    assert kube.requests() == []


def test_resolved_notifications_are_answered_200_and_do_nothing(client, kube, resolved):
    response = client.post("/", json=resolved, headers=AUTH)
    body = response.get_json()
    assert response.status_code == 200 and body["outcome"] == "skipped"
    assert all("resolved" in d["reason"] for d in body["decisions"])
    assert kube.requests() == []


# -- manual runs ---------------------------------------------------------------------------------------

def test_manual_run_verifies_the_named_target(client, skewed):
    response = client.post("/rebalance", json={"target": "ingestion-consumer", "signal": "cpu"}, headers=AUTH)
    body = response.get_json()
    assert response.status_code == 200 and body["outcome"] == "dry_run"
    assert body["decisions"][0]["alerts"] == ["manual"] and body["decisions"][0]["selected"][0]["pod"] == skewed[4]


def test_manual_run_of_an_unknown_target_gets_403(client, kube):
    assert client.post("/rebalance", json={"target": "kube-dns"}, headers=AUTH).status_code == 403
    assert kube.requests() == []


@pytest.mark.parametrize("body", [{"target": "ingestion-consumer", "dry_run": "false"}, {"target": "x", "extra": 1}, {"signal": "cpu"}])
def test_malformed_manual_runs_get_400(client, body):
    assert client.post("/rebalance", json=body, headers=AUTH).status_code == 400


def test_a_request_cannot_turn_a_dry_run_configuration_live(client):
    body = client.post("/rebalance", json={"target": "ingestion-consumer", "dry_run": False}, headers=AUTH).get_json()
    assert body["dry_run"] is True and body["outcome"] == "dry_run" and "dry-run, which wins" in body["note"]


def test_a_request_can_make_a_live_configuration_dry(make_client, victoria_metrics, skewed, kube):
    client = make_client(victoria_metrics.url, [consumer(kube)], env_rebalancer_dry_run="false")
    body = client.post("/rebalance", json={"target": "ingestion-consumer", "dry_run": True}, headers=AUTH).get_json()
    assert body["dry_run"] is True and body["decisions"][0]["actions"][0]["result"] == "dry_run"


# -- upstream failures -----------------------------------------------------------------------------------

def test_unreachable_metrics_backend_gets_503_so_alertmanager_retries(make_client, skewed, firing, kube):
    client = make_client(f"http://127.0.0.1:{free_port()}", [consumer(kube)])
    response = client.post("/", json=firing, headers=AUTH)
    assert response.status_code == 503
    assert "metrics backend unreachable" in response.get_json()["reason"]


@pytest.fixture
def standin_client(make_standin_client, victoria_metrics, standin):
    """The same five pods in the stand-in, for the faults a real API server cannot produce on demand."""
    pods = seed_deployment(standin, "posthog", "ingestion-consumer", replicas=5)
    now = aligned_now()
    rates = dict(zip(pods, [0.125, 0.25, 0.3125, 0.28125, 1.5], strict=True))
    victoria_metrics.import_prometheus(to_victoriametrics_import(cpu_usage("posthog", "ingestion-consumer", rates, now - 900, now)))
    return make_standin_client(victoria_metrics.url, [target("ingestion-consumer", "posthog")])


@pytest.mark.parametrize("status", [500, 503])
def test_kubernetes_api_failure_on_the_pod_list_gets_503(standin_client, standin, status):
    """Stand-in because: a 5xx on one chosen read (an admission webhook sees only writes). The
    real server's 429 on reads is test_kube_faults.py (API Priority and Fairness)."""
    standin.fail("list", "pods", status)
    response = standin_client.post("/", json=sample(FIRING_SAMPLE), headers=AUTH)
    assert response.status_code == 503 and "Kubernetes API" in response.get_json()["reason"]


def test_missing_deployment_is_a_skipped_decision_with_the_reason(make_client, victoria_metrics, kube, firing):
    client = make_client(victoria_metrics.url, [consumer(kube)])
    body = client.post("/", json=firing, headers=AUTH).get_json()
    decision = next(d for d in body["decisions"] if d["target"] == "ingestion-consumer")
    assert decision["outcome"] == "skipped" and decision["code"] == "kubernetes_error"
    assert "404" in decision["reason"] and "not found" in decision["reason"]


def test_rbac_refusal_is_a_skipped_decision_naming_the_permission(client, kube, firing):
    kube.grant([rule for rule in role_rules(deleting=False) if rule["resources"] != ["pods"]])
    body = client.post("/", json=firing, headers=AUTH).get_json()
    decision = next(d for d in body["decisions"] if d["target"] == "ingestion-consumer")
    assert decision["code"] == "kubernetes_error" and "403" in decision["reason"] and "cannot list" in decision["reason"]


def test_query_the_backend_rejects_is_a_skipped_decision(make_client, victoria_metrics, skewed, firing, kube):
    broken = consumer(kube, signals={"cpu": {"threshold": 0.3, "query": "sum by (pod) (rate(x[$window]"}})
    client = make_client(victoria_metrics.url, [broken])
    response = client.post("/", json=firing, headers=AUTH)
    decision = next(d for d in response.get_json()["decisions"] if d["target"] == "ingestion-consumer")
    assert response.status_code == 200 and decision["code"] == "query_error"
    assert "rejected the query" in decision["reason"]


# -- logging ---------------------------------------------------------------------------------------------

def test_each_decision_is_one_structured_json_log_line(capsys, client, firing):
    capsys.readouterr()
    client.post("/", json=firing, headers=AUTH)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    decisions = [line for line in lines if line.get("event") == "decision"]
    assert len(decisions) == 2
    acted = next(d for d in decisions if d["target"] == "ingestion-consumer")
    assert acted["severity"] == "INFO" and acted["outcome"] == "dry_run"
    assert acted["verified"]["pods"] == 5 and acted["message"].startswith("ingestion-consumer/cpu: dry_run")


def test_text_log_format_is_one_readable_line(make_client, victoria_metrics, skewed, capsys, firing, kube):
    client = make_client(victoria_metrics.url, [consumer(kube)], log_format="text")
    capsys.readouterr()
    client.post("/", json=firing, headers=AUTH)
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "ingestion-consumer/cpu" in line)
    assert " INFO ingestion-consumer/cpu: dry_run: dry run: would evict" in line and not line.startswith("{")


# -- start-up -------------------------------------------------------------------------------------------

def test_invalid_configuration_stops_the_function_at_start_up_naming_the_field(make_client, victoria_metrics, kube):
    from rebalancer.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        make_client(victoria_metrics.url, [consumer(kube, cooldown="soon")])
    assert "targets.0.cooldown" in str(raised.value)
