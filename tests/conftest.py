"""Fixtures shared by the integration and API tests: the real app, the stand-in, real backends."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import functions_framework
import pytest
import yaml
from freezegun import freeze_time

from tests.certificates import self_signed_certificate
from tests.faultproxy import FaultProxy
from tests.kafkabroker import KafkaBroker
from tests.metricsdata import Series, to_openmetrics, to_victoriametrics_import
from tests.realcluster import Cluster, ControlPlane, drop_namespace, new_namespace
from tests.servers import MisbehavingBackend, Prometheus, VictoriaMetrics
from tests.standin import KubeApiStandIn

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-4f1c2a9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@functools.cache
def before_the_first_freeze() -> None:
    """What must happen in real time once, before freezegun first replaces datetime.datetime."""
    import_every_pydantic_model()
    make_a_certificate()


def import_every_pydantic_model() -> None:
    """While frozen, freezegun puts its FakeDatetime in place of datetime.datetime, and pydantic
    cannot build a model over it (spulec/freezegun#480). Kubernetes' client models are pydantic
    models imported on first use, so a test's first read of, say, an Event list must not happen
    while frozen: they are all imported (about 2 s), as is the app."""
    import kubernetes.client

    import rebalancer.app  # noqa: F401  (and every module main.py imports)

    for name in dir(kubernetes.client):
        getattr(kubernetes.client, name)


def make_a_certificate() -> None:
    """cryptography's certificate builder looks datetime.datetime up once, at its first use, and
    then holds every date to that class: a first certificate made while frozen (an admission
    webhook's, say) would make every later one, made in real time (a Kafka broker's), fail with
    "'datetime' object is not an instance of 'FakeDatetime'"."""
    self_signed_certificate()


class Clock:
    """The time the function reads in this test, set with freezegun: real time until the test
    sets it (``at``) or moves it on (``advance``). The function (and the stand-in, in the same
    process) then read the test's moment. By default time keeps ticking from there, so the
    servers' timeouts and the tests' waits still pass; ``ticking=False`` stands it still, for
    a test that must ask at an exact instant."""

    def __init__(self) -> None:
        self._freezer: Any = None
        self._ticking = True

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc)

    def at(self, moment: datetime, ticking: bool = True) -> None:
        before_the_first_freeze()
        self.stop()
        self._freezer, self._ticking = freeze_time(moment, tick=ticking), ticking
        self._freezer.start()

    def advance(self, **delta: float) -> None:
        self.at(self() + timedelta(**delta), self._ticking)

    def stop(self) -> None:
        if self._freezer is not None:
            self._freezer.stop()
            self._freezer = None


@pytest.fixture
def clock() -> Iterator[Clock]:
    moving = Clock()
    yield moving
    moving.stop()


@pytest.fixture(scope="session")
def control_plane(request, tmp_path_factory) -> Iterator[ControlPlane]:
    """The real control plane (tests/realcluster.py), started once per test session."""
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # shown in make test's output, as the e2e latency is
        print(f"\n  [control plane] kube-apiserver {plane.info['version']} ready {plane.start_to_ready:.1f} s "
              "after start (etcd, kube-apiserver, kube-controller-manager, node simulator)", flush=True)
    yield plane
    plane.stop()


@pytest.fixture(scope="session")
def kafka_broker(request, tmp_path_factory) -> Iterator[KafkaBroker]:
    """A real Kafka broker (KRaft, from Maven Central's jars), started once per test session;
    each test makes a topic and a group of its own."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n  [kafka] broker {broker.bootstrap} ready {broker.start_to_ready:.1f} s after start", flush=True)
    yield broker
    broker.stop()


@pytest.fixture
def kube(control_plane) -> Iterator[Cluster]:
    """A namespace of this test's own on the real control plane, where the function's identity
    holds exactly terraform's Role (``kube.grant(...)`` changes it)."""
    cluster = new_namespace(control_plane)
    cluster.grant()
    yield cluster
    drop_namespace(cluster)


@pytest.fixture(scope="session")
def fault_proxy(tmp_path_factory) -> Iterator[FaultProxy]:
    """toxiproxy (tests/faultproxy.py), started once per test session; each test makes its own routes."""
    proxy = FaultProxy(tmp_path_factory.mktemp("toxiproxy")).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def standin() -> Iterator[KubeApiStandIn]:
    """The Kubernetes API stand-in: only for faults a real control plane cannot produce on demand."""
    with KubeApiStandIn() as api:
        yield api


@dataclass
class MetricsBackend:
    """A real metrics server holding exactly the series a test loaded."""

    kind: str
    url: str
    server: VictoriaMetrics | Prometheus


@pytest.fixture(params=["victoriametrics", "prometheus"])
def load_metrics(request, tmp_path) -> Iterator[Callable[[list[Series]], MetricsBackend]]:
    """``load_metrics(series)`` starts the backend with those series and returns it.

    Users run either server, so the verification tests run against both.
    """
    started: list[VictoriaMetrics | Prometheus] = []

    def load(series: list[Series]) -> MetricsBackend:
        if request.param == "victoriametrics":
            server = VictoriaMetrics(tmp_path / "vm").start()
            started.append(server)
            server.import_prometheus(to_victoriametrics_import(series))
        else:
            server = Prometheus(tmp_path / "prometheus")
            server.backfill(to_openmetrics(series))
            started.append(server.start())
        return MetricsBackend(request.param, server.url, server)

    yield load
    for server in started:
        server.stop()


@pytest.fixture
def misbehaving_backend() -> Iterator[MisbehavingBackend]:
    backend = MisbehavingBackend()
    yield backend
    backend.stop()


@pytest.fixture
def victoria_metrics(tmp_path) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path / "vm").start()
    yield server
    server.stop()


def aligned_now() -> float:
    """The latest point of a 15 s scrape grid: the newest sample is at most one interval old."""
    return (int(time.time()) // 15) * 15


def target(name: str, namespace: str, deployment: str | None = None, **overrides: Any) -> dict[str, Any]:
    config = {
        "name": name,
        "namespace": namespace,
        "deployment": deployment or name,
        "min_pods": 3,
        "signals": {"cpu": {"threshold": 0.3}},
    }
    config.update(overrides)
    return config


def client_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_kubeconfig: Callable[[Path], Path]) -> Callable[..., Any]:
    """Build the function as functions-framework does (``create_app('rebalance', 'main.py')``)
    with a config file and env; returns Flask's test client."""

    def build(metrics_url: str, targets: list[dict[str, Any]], **settings: Any) -> Any:
        env = {k: v for k, v in settings.items() if k.startswith("env_")}
        document = {"metrics_url": metrics_url, "targets": targets,
                    **{k: v for k, v in settings.items() if not k.startswith("env_")}}
        config = tmp_path / "rebalancer.yaml"
        config.write_text(yaml.safe_dump(document))
        monkeypatch.setenv("REBALANCER_CONFIG", str(config))
        monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("REBALANCER_AUTH_TOKEN", TOKEN)
        for name in ("KUBERNETES_SERVICE_HOST", "REBALANCER_DRY_RUN", "REBALANCER_METRICS_URL", "REBALANCER_ALLOW_UNAUTHENTICATED"):
            monkeypatch.delenv(name, raising=False)
        for key, value in env.items():
            name = key.removeprefix("env_").upper()
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        return functions_framework.create_app("rebalance", str(REPO / "main.py")).test_client()

    return build


@pytest.fixture
def make_client(tmp_path, monkeypatch, kube) -> Callable[..., Any]:
    """The function, acting as its ServiceAccount on this test's namespace of the real control plane."""
    return client_builder(tmp_path, monkeypatch, kube.write_kubeconfig)


@pytest.fixture
def client_builder_for(tmp_path, monkeypatch) -> Callable[[Cluster], Callable[..., Any]]:
    """``client_builder_for(cluster)``: the function acting as its ServiceAccount on a namespace
    the test made itself."""
    return lambda cluster: client_builder(tmp_path, monkeypatch, cluster.write_kubeconfig)


@pytest.fixture
def make_standin_client(tmp_path, monkeypatch, standin) -> Callable[..., Any]:
    """The function pointed at the stand-in, for the tests that need an injected fault."""
    return client_builder(tmp_path, monkeypatch, standin.write_kubeconfig)
