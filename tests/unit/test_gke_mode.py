"""GKE connection mode: the function's Google identity, a CA written once, tokens refreshed in time.

The end-to-end ones reach the real control plane over TLS: each "Google token" the fake
credentials hand out is a real ServiceAccount token the API server minted (TokenRequest), so the
refreshed token is one the server must accept, as GKE accepts the function's identity."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kubernetes
import pytest

from rebalancer.adapters.gke import ca_file, gke_configuration
from rebalancer.adapters.google_token import REFRESH_MARGIN, GoogleTokenSource
from rebalancer.adapters.kube import KubeGateway
from rebalancer.errors import ConfigError, KubeUnavailableError
from tests.certificates import self_signed_certificate
from tests.realcluster import IDENTITY, IDENTITY_NAMESPACE

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


class FakeCredentials:
    """google-auth's Credentials contract: token, expiry (naive UTC), refresh(request)."""

    def __init__(self, lifetime: timedelta = timedelta(hours=1), on_refresh=None) -> None:
        self.token, self.expiry, self.refreshes = None, None, 0
        self.lifetime, self.on_refresh = lifetime, on_refresh
        self.now = NOW

    def refresh(self, request) -> None:
        self.refreshes += 1
        self.token = f"google-token-{self.refreshes}"
        self.expiry = (self.now + self.lifetime).replace(tzinfo=None)
        if self.on_refresh:
            self.on_refresh(self.token)


def test_token_is_fetched_once_and_reused_while_fresh():
    credentials = FakeCredentials()
    source = GoogleTokenSource(credentials, clock=lambda: credentials.now, request_factory=object)
    assert source.token() == source.token() == "google-token-1"
    assert credentials.refreshes == 1


def test_token_is_refreshed_before_it_expires():
    credentials = FakeCredentials(lifetime=timedelta(minutes=30))
    source = GoogleTokenSource(credentials, clock=lambda: credentials.now, request_factory=object)
    source.token()
    credentials.now = NOW + timedelta(minutes=30) - REFRESH_MARGIN - timedelta(seconds=1)
    assert source.token() == "google-token-1"  # still outside the margin
    credentials.now += timedelta(seconds=2)  # now within the margin of expiry: refresh before it lapses
    assert source.token() == "google-token-2"


def test_ca_is_written_once_whatever_the_encoding(tmp_path):
    first = ca_file(base64.b64encode(PEM.encode()).decode(), tmp_path)
    written = first.stat().st_mtime_ns
    assert ca_file(PEM, tmp_path) == first and first.stat().st_mtime_ns == written
    assert first.read_text() == PEM and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("bad", ["not base64 !", base64.b64encode(b"not a certificate").decode()])
def test_a_ca_that_is_not_a_certificate_is_refused_clearly(tmp_path, bad):
    with pytest.raises(ConfigError, match="REBALANCER_GKE_CA_CERT"):
        ca_file(bad, tmp_path)


def test_missing_google_credentials_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    with pytest.raises(ConfigError, match="GKE mode needs Google application default credentials"):
        gke_configuration("203.0.113.10", PEM, ca_directory=tmp_path)


def minted_token(kube) -> str:
    """A fresh token for the function's ServiceAccount, from the API server itself."""
    request = kube.core.create_namespaced_service_account_token(IDENTITY, IDENTITY_NAMESPACE, {"spec": {"expirationSeconds": 3600}})
    return request.status.token


class MintingCredentials(FakeCredentials):
    """Each refresh hands out a real token the API server minted."""

    def __init__(self, kube, lifetime: timedelta) -> None:
        super().__init__(lifetime=lifetime)
        self.kube, self.issued = kube, []

    def refresh(self, request) -> None:
        super().refresh(request)
        self.token = minted_token(self.kube)
        self.issued.append(self.token)


def test_gke_mode_reaches_the_api_over_tls_with_refreshed_tokens(kube, control_plane, tmp_path):
    kube.deployment("consumer", replicas=3)
    credentials = MintingCredentials(kube, lifetime=timedelta(minutes=20))
    ca = base64.b64encode(Path(control_plane.info["ca_file"]).read_bytes()).decode()
    configuration = gke_configuration(control_plane.server, ca, credentials=credentials, ca_directory=tmp_path,
                                      clock=lambda: credentials.now)
    gateway = KubeGateway(kubernetes.client.ApiClient(configuration), timeout_seconds=5)

    assert len(gateway.deployment_pods(kube.namespace, "consumer").pods) == 3
    credentials.now += timedelta(minutes=16)  # the token is about to expire
    assert len(gateway.deployment_pods(kube.namespace, "consumer").pods) == 3
    assert credentials.refreshes == 2 and len(set(credentials.issued)) == 2
    assert [(r.verb, r.code) for r in kube.requests()] == [("get", 200), ("list", 200), ("list", 200), ("list", 200)] * 2


def test_a_server_certificate_from_another_ca_is_refused(kube, control_plane, tmp_path):
    other_ca, _ = self_signed_certificate()
    credentials = MintingCredentials(kube, lifetime=timedelta(hours=1))
    configuration = gke_configuration(control_plane.server, other_ca, credentials=credentials, ca_directory=tmp_path)
    gateway = KubeGateway(kubernetes.client.ApiClient(configuration), timeout_seconds=5)
    with pytest.raises(KubeUnavailableError):
        gateway.deployment_pods(kube.namespace, "consumer")
    assert kube.requests() == []
