"""Credentials for the metrics backend, against a real VictoriaMetrics behind vmauth (its real
auth proxy, which answers 401 to anything it was not told to let through). A logging proxy in
front of vmauth records what the function sent (the tenant header, which token). The function
is the real app on the real control plane; no credential may appear in an answer, a log line
or /metrics."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from rebalancer.adapters.metrics_auth import metrics_session
from rebalancer.adapters.metrics_source import MetricsSource
from rebalancer.config import Settings
from tests.conftest import AUTH, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.proxy import LoggingProxy
from tests.servers import VMAuth

TOKEN = "metrics-token-5b9e21"
ROTATED = "metrics-token-rotated-77d0"
USER, PASSWORD = "rebalancer", "basic-secret-c4a1"
GOOGLE = ["google-token-1", "google-token-2"]
RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]


@pytest.fixture
def guarded(victoria_metrics, tmp_path):
    """vmauth in front of VictoriaMetrics, and a logging proxy in front of vmauth."""
    auth = VMAuth(tmp_path / "vmauth", victoria_metrics.url, bearer_tokens=[TOKEN, ROTATED, *GOOGLE],
                  users={USER: PASSWORD}).start()
    proxy = LoggingProxy(auth.url).start()
    yield proxy
    proxy.stop()
    auth.stop()


@pytest.fixture
def skewed(kube, victoria_metrics):
    pods = kube.deployment("ingestion-consumer", replicas=len(RATES))
    now = aligned_now()
    victoria_metrics.import_prometheus(to_victoriametrics_import(
        cpu_usage(kube.namespace, "ingestion-consumer", dict(zip(pods, RATES, strict=True)), now - 1200, now)))
    return pods


def ask(client) -> dict:
    answer = client.post("/rebalance", json={"target": "ingestion-consumer"}, headers=AUTH).get_json()
    return answer["decisions"][0]


@pytest.mark.parametrize("credential", ["bearer", "bearer_file", "basic"])
def test_configured_credentials_get_through_the_auth_proxy_and_appear_nowhere(
        credential, guarded, skewed, make_client, kube, tmp_path, capsys):
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN + "\n")
    settings = {"bearer": {"env_rebalancer_metrics_bearer_token": TOKEN},
                "bearer_file": {"metrics_bearer_token_file": str(token_file)},
                "basic": {"metrics_basic_auth_username": USER, "env_rebalancer_metrics_basic_auth_password": PASSWORD}}
    client = make_client(guarded.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")],
                         metrics_headers={"X-Scope-OrgID": "team-ingestion"}, **settings[credential])

    decision = ask(client)
    metrics = client.get("/metrics").get_data(as_text=True)

    assert decision["outcome"] == "dry_run", decision["reason"]  # verified through vmauth
    (seen,) = guarded.seen
    assert seen.headers["X-Scope-OrgID"] == "team-ingestion"
    assert seen.headers["Authorization"].startswith("Basic " if credential == "basic" else f"Bearer {TOKEN}")
    out = capsys.readouterr()
    for secret in (TOKEN, PASSWORD):
        assert secret not in str(decision) + metrics + out.out + out.err


def test_a_rotated_token_file_is_used_without_a_restart(guarded, skewed, make_client, kube, tmp_path):
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    client = make_client(guarded.url, [target("ingestion-consumer", kube.namespace, min_pod_age="0s")],
                         metrics_bearer_token_file=str(token_file))
    ask(client)
    token_file.write_text(ROTATED)

    assert ask(client)["outcome"] == "dry_run"
    assert [s.headers["Authorization"] for s in guarded.seen] == [f"Bearer {TOKEN}", f"Bearer {ROTATED}"]


def test_refused_credentials_are_a_skipped_decision_that_says_so(guarded, skewed, make_client, kube, capsys):
    client = make_client(guarded.url, [target("ingestion-consumer", kube.namespace)],
                         env_rebalancer_metrics_bearer_token="not-the-token-9")

    decision = ask(client)

    assert decision["outcome"] == "skipped" and decision["code"] == "query_error"
    # vmauth 1.79 answers 400 and echoes the token it did not know; newer ones answer 401.
    assert "(HTTP 400)" in decision["reason"] or "refused the function's credentials (HTTP 401)" in decision["reason"]
    assert "[redacted]" in decision["reason"] or "(HTTP 401)" in decision["reason"]
    assert "not-the-token-9" not in decision["reason"] + capsys.readouterr().out


class ExpiringCredentials:
    """google-auth's Credentials contract; each token lives four minutes, inside the refresh
    margin, so every request refreshes it: the refreshed token is the one sent."""

    def __init__(self) -> None:
        self.token, self.expiry, self.refreshes = None, None, 0

    def refresh(self, request) -> None:
        self.token = GOOGLE[self.refreshes]
        self.refreshes += 1
        self.expiry = (datetime.now(timezone.utc) + timedelta(minutes=4)).replace(tzinfo=None)


def test_google_managed_prometheus_gets_a_refreshed_google_token(guarded, skewed):
    settings = Settings(metrics_url=guarded.url, metrics_google_auth=True,
                        targets=[target("ingestion-consumer", "x")])
    source = MetricsSource(guarded.url, timeout_seconds=5,
                           session=metrics_session(settings, google_credentials=ExpiringCredentials()))
    now = datetime.fromtimestamp(aligned_now(), timezone.utc)

    first = source.query_by_pod("up", now)
    second = source.query_by_pod("up", now)

    assert first.values == second.values  # both answered by VictoriaMetrics through vmauth
    assert [s.headers["Authorization"] for s in guarded.seen] == [f"Bearer {t}" for t in GOOGLE]
