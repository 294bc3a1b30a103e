"""Every way in is closed, and every failure ends safe: the right status, no unsafe action, and
whatever was done before the failure is on record.

Everything here runs on the real control plane (its audit log shows what the function asked),
but for a connection reset on the second eviction once the first went through: that needs a
fault between the function and the API server that only the stand-in gives so far. The real API
server refusing a chosen eviction (403, 429, 500, a webhook timeout) is test_kube_faults.py."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import google.auth.exceptions
import kubernetes
import pytest

import rebalancer.routes
from rebalancer.adapters.gke import gke_configuration
from rebalancer.adapters.kube import KubeGateway
from rebalancer.cooldown import annotation_keys
from rebalancer.errors import KubeUnavailableError
from tests.conftest import AUTH, TOKEN, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.proxy import LoggingProxy
from tests.samples import sample, sample_in_namespace
from tests.standin.fixtures import seed_deployment

NS = "posthog"
FIRING = sample("alertmanager-0.25-firing-cpu-two-deployments.json")
RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]
WRITES = ("create", "update", "patch", "delete")


def decision(response):
    return next(d for d in response.get_json()["decisions"] if d.get("target") == "ingestion-consumer")


@pytest.fixture
def skewed(victoria_metrics, standin):
    now = aligned_now()
    pods = seed_deployment(standin, NS, "ingestion-consumer", replicas=6)
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(NS, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)))
    return pods


# -- authentication (the real control plane) ----------------------------------------------------------

@pytest.fixture
def real_skewed(victoria_metrics, kube):
    pods = kube.deployment("ingestion-consumer", replicas=6)
    now = aligned_now()
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(kube.namespace, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)))
    return sample_in_namespace("alertmanager-0.25-firing-cpu-two-deployments.json", kube.namespace)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer"}, {"Authorization": f"Token {TOKEN}"},
                                     {"Authorization": f"bearer  {TOKEN} extra"}, {"Authorization": "Bearer " + "x" * 10000}])
def test_unauthenticated_posts_reach_neither_backend(make_client, victoria_metrics, kube, real_skewed, headers):
    proxy = LoggingProxy(victoria_metrics.url).start()
    try:
        client = make_client(proxy.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")], env_rebalancer_dry_run="false")
        for path in ("/", "/alertmanager", "/rebalance"):
            assert client.post(path, json=real_skewed, headers=headers).status_code == 401
        assert proxy.seen == [] and kube.requests() == []
    finally:
        proxy.stop()


def test_tokens_are_compared_in_constant_time(make_client, victoria_metrics, kube, monkeypatch):
    calls = []
    real = rebalancer.routes.hmac.compare_digest
    monkeypatch.setattr(rebalancer.routes.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace)])
    client.post("/rebalance", json={"target": "ingestion-consumer"}, headers={"Authorization": "Bearer guess"})
    assert calls == [(b"guess", TOKEN.encode())]


def test_the_token_appears_in_no_answer_and_no_log_line(make_client, victoria_metrics, kube, real_skewed, capsys):
    capsys.readouterr()
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")],
                         env_rebalancer_dry_run="false")
    answers = [client.post(p, json=real_skewed, headers=h).get_data(as_text=True)
               for p in ("/", "/rebalance") for h in (AUTH, {"Authorization": f"Bearer {TOKEN}x"})]
    answers.append(client.get("/metrics").get_data(as_text=True))
    out = capsys.readouterr()
    assert all(TOKEN not in a for a in answers) and TOKEN not in out.out + out.err


@pytest.mark.parametrize(("request_args", "status", "cause"), [
    ({"headers": {"Authorization": f"Bearer {TOKEN}x"}}, 401, "invalid bearer token"),
    ({"headers": AUTH, "data": b"{not json", "content_type": "application/json"}, 400, "body is not valid JSON"),
    ({"headers": AUTH, "data": b"x" * (1024 * 1024 + 1), "content_type": "application/json"}, 413, "exceeds the limit"),
], ids=["401", "400", "413"])
def test_each_rejected_request_leaves_one_warning_line_without_the_token(make_client, victoria_metrics, kube, capsys,
                                                                          request_args, status, cause):
    client = make_client(victoria_metrics.url, [target("ingestion-consumer", kube.namespace)])
    capsys.readouterr()

    assert client.post("/alertmanager", **request_args).status_code == status

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    (rejected,) = [line for line in lines if line.get("event") == "rejected"]
    assert rejected["severity"] == "WARNING" and rejected["status"] == status and rejected["route"] == "/alertmanager"
    assert cause in rejected["cause"] and rejected["httpRequest"]["requestMethod"] == "POST"
    assert TOKEN not in json.dumps(lines)
    assert rejected["time"].endswith("Z")  # RFC 3339, UTC


# -- the metrics backend misbehaving, through the real app -------------------------------------------

@pytest.mark.parametrize(
    ("status", "body", "delay", "expected"),
    [
        (503, b"upstream unavailable", 0.0, 503),
        (502, b"<html>bad gateway</html>", 0.0, 503),
        (200, b"<html>a login page</html>", 0.0, 503),
        (200, b'{"status":"success","data":{"resultType":"vector","result":[]}}', 2.0, 503),  # slower than the 0.5s timeout
        (200, b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"x"},"value":[1,"NaN"]}]}}', 0.0, 200),
        (422, b'{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}', 0.0, 200),
    ],
    ids=["5xx", "proxy-502", "garbage", "too-slow", "nan-and-partial", "query-rejected"],
)
def test_a_misbehaving_metrics_backend_never_leads_to_action(make_client, misbehaving_backend, kube, real_skewed, status, body, delay, expected):
    misbehaving_backend.answer(status, body, delay)
    client = make_client(misbehaving_backend.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")],
                         env_rebalancer_dry_run="false", metrics_timeout="500ms")
    response = client.post("/", json=real_skewed, headers=AUTH)
    assert response.status_code == expected
    assert response.get_json()["outcome"] == "skipped"
    assert kube.writes() == []


# -- Kubernetes failing mid-run: whatever was done is on record ----------------------------------------

def test_a_connection_reset_on_the_second_eviction_is_recorded_with_the_first(make_standin_client, victoria_metrics, standin,
                                                                              skewed, capsys):
    """Stand-in because: the connection must drop on the second eviction of one run, and only
    on it (three times: the function's one quick retry of a refused connection included)."""
    second = skewed[0]  # the cold pod goes second
    standin.fail("create", "pods", 0, subresource="eviction", name=second, times=3)
    client = make_standin_client(victoria_metrics.url, [target("ingestion-consumer", NS)], env_rebalancer_dry_run="false")

    body = decision(client.post("/", json=FIRING, headers=AUTH))

    results = {a["pod"]: a for a in body["actions"]}
    assert body["outcome"] == "acted" and results[skewed[4]]["result"] == "evicted"
    assert results[second]["result"] == "failed" and "unreachable" in results[second]["detail"]
    history = json.loads(standin.get("configmaps", NS, "pod-rebalancer-state")["metadata"]["annotations"][annotation_keys("ingestion-consumer")[2]])
    assert {p["pod"]: p["result"] for p in history[0]["pods"]} == {a["pod"]: a["result"] for a in body["actions"]}
    events = {e["involvedObject"]["name"]: e["reason"] for e in standin.objects("events", NS)}
    assert events[skewed[4]] == "Rebalanced" and events[second] == "RebalanceBlocked"
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"event": "action"')]
    assert {line["pod"]: line["result"] for line in logged} == {a["pod"]: a["result"] for a in body["actions"]}


def test_an_expired_gke_token_that_cannot_be_refreshed_is_a_temporary_failure(kube, control_plane, tmp_path):
    class ExpiredCredentials:
        token = "old"
        expiry = (datetime.now(timezone.utc) - timedelta(minutes=1)).replace(tzinfo=None)  # google-auth: naive UTC

        def refresh(self, request):
            raise google.auth.exceptions.RefreshError("the service account key was disabled")

    kube.deployment("ingestion-consumer", replicas=3)
    ca = base64.b64encode(Path(control_plane.info["ca_file"]).read_bytes()).decode()
    configuration = gke_configuration(control_plane.server, ca, credentials=ExpiredCredentials(), ca_directory=tmp_path)
    gateway = KubeGateway(kubernetes.client.ApiClient(configuration), timeout_seconds=5)
    with pytest.raises(KubeUnavailableError, match="cannot obtain a Google access token"):
        gateway.deployment_pods(kube.namespace, "ingestion-consumer")
    assert kube.requests() == []  # nothing was sent with a stale token
