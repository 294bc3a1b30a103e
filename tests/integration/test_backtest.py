"""The backtest against a real VictoriaMetrics, and a real Prometheus, holding a synthetic day with
known skew episodes: it finds exactly those, respects the cooldown between them, and at any
instant its verdict is the one the live function reaches on the same data (on the real control
plane, its pods backdated to before the day)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from rebalancer.config import Settings
from rebalancer.core.durations import parse_duration
from rebalancer.tools import backtest
from rebalancer.tools.backtest_plot import plot
from tests.conftest import AUTH, aligned_now
from tests.metricsdata import MICROMETER_PARTITIONS, cpu_usage, partition_lag_with_assignment
from tests.proxy import LoggingProxy

NS = "posthog"
BALANCED = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
SKEWED = [0.1, 0.5, 0.5, 0.5, 1.9, 0.5]  # pods[4] hot, pods[0] cold: CV 0.8
# (start, end) after the day's start. The second begins 40 minutes after the first one's action,
# inside its one-hour cooldown, and ends before the cooldown does.
EPISODES = [(timedelta(hours=2), timedelta(hours=2, minutes=30)),
            (timedelta(hours=2, minutes=40), timedelta(hours=2, minutes=55)),
            (timedelta(hours=9), timedelta(hours=9, minutes=30)),
            (timedelta(hours=18), timedelta(hours=18, minutes=20))]
TARGET = {"name": "ingestion-consumer", "namespace": NS, "deployment": "ingestion-consumer", "min_pods": 3,
          "cooldown": "1h", "signals": {"cpu": {"threshold": 0.3}}}


def load_day(load_metrics, namespace: str, pods: list[str]) -> tuple[datetime, datetime, str]:
    """24 hours of ``pods``' CPU counters with the four EPISODES in VictoriaMetrics or Prometheus,
    ending now; returns (the day's start, its end, the backend's URL)."""
    end = aligned_now()
    start = end - 86400
    phases = [(start - 3600, dict(zip(pods, BALANCED, strict=True)))]
    for begin, finish in EPISODES:
        phases.append((start + begin.total_seconds(), dict(zip(pods, SKEWED, strict=True))))
        phases.append((start + finish.total_seconds(), dict(zip(pods, BALANCED, strict=True))))
    backend = load_metrics(cpu_usage(namespace, "ingestion-consumer", phases, start - 600, end, with_neighbours=False))
    return datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc), backend.url


@pytest.fixture
def day(load_metrics):
    """The day of six pods named as a ReplicaSet names them: (start, end, pods, the backend's URL).
    The backtest asks Kubernetes nothing (what only it knows is assumed), so no cluster holds them."""
    pods = [f"ingestion-consumer-6d5f8b7c9-{suffix}" for suffix in ("b2x7k", "f9q4m", "h3w8p", "k7z2r", "n4c6t", "v8j5d")]
    start, end, url = load_day(load_metrics, NS, pods)
    return start, end, pods, url


def run_backtest(url: str, start: datetime, end: datetime, step: str = "1m", target: dict | None = None) -> backtest.Report:
    settings = Settings(metrics_url=url, targets=[target or TARGET])
    return backtest.run(settings, settings.targets[0], "cpu", backtest.Period(start, end, parse_duration(step)), backtest.Assumed())


def test_the_backtest_finds_exactly_the_skew_episodes_and_respects_the_cooldown(day):
    start, end, pods, url = day
    proxy = LoggingProxy(url).start()
    try:
        report = run_backtest(proxy.url, start, end)
        queries = proxy.seen
    finally:
        proxy.stop()

    # Every whole minute of the day (1,440 or 1,441 of them, as the day starts on a minute or not).
    assert len(report.steps) in (1440, 1441) and all(s.at.second == 0 for s in report.steps)
    assert [q.path for q in queries] == ["/api/v1/query_range"]  # the whole day in one request, not one per step
    acted = [s.at - start for s in report.actions]
    first, _, third, fourth = EPISODES
    # Each act comes within the rate window (5m) of its episode's start; the second episode falls
    # in the first one's cooldown and is never acted on.
    assert len(acted) == 3
    for moment, (begin, _) in zip(acted, [first, third, fourth], strict=True):
        assert begin < moment <= begin + timedelta(minutes=5), moment
    assert all({p.pod for p in s.verdict.selected} == {pods[4], pods[0]} for s in report.actions)
    held = [s.at - start for s in report.steps if s.held_by == "cooldown"]
    second_begin, second_end = EPISODES[1]
    assert any(second_begin < h <= second_end + timedelta(minutes=5) for h in held)  # the second episode: held
    assert all(any(a < h < a + timedelta(hours=1) for a in acted) for h in held)  # only ever inside a cooldown
    assert report.held()["cooldown"] == len(held)
    assert len(report.actions) / report.days == pytest.approx(3.0, rel=0.01)


def test_at_any_instant_the_backtest_decides_as_the_live_function_does(load_metrics, kube, make_client, clock):
    """The live function on the real control plane, its clock at moments of the past day. Its pods
    must have existed then: their creation is moved an hour before the day in etcd, since the API
    server sets creationTimestamp to now (tests/controlplane/backdate.go)."""
    pods = kube.deployment("ingestion-consumer", replicas=6)
    start, end, url = load_day(load_metrics, kube.namespace, pods)
    kube.backdate(pods, start - timedelta(hours=1))
    in_this_namespace = {**TARGET, "namespace": kube.namespace}
    report = run_backtest(url, start, end, target=in_this_namespace)
    client = make_client(url, [in_this_namespace])
    by_time = {s.at: s for s in report.steps}
    acted = report.actions[0].at
    wanted = [acted, acted + timedelta(minutes=10), start + timedelta(hours=2, minutes=45),  # acting, held, held
              start + timedelta(hours=5), start + EPISODES[2][0] + timedelta(minutes=2)]  # balanced, rising
    instants = [min(by_time, key=lambda t, w=w: abs(t - w)) for w in wanted]  # the steps nearest to them

    for instant in instants:
        clock.at(instant, ticking=False)  # a step of the backtest is an exact instant
        live = client.post("/rebalance", json={"target": "ingestion-consumer", "signal": "cpu"}, headers=AUTH).get_json()
        decision, replayed = live["decisions"][0], by_time[instant].verdict
        assert (decision["outcome"] == "dry_run") == replayed.act, instant
        assert decision["verified"]["value"] == pytest.approx(replayed.stats.value, rel=1e-9, abs=1e-12), instant
        assert [(s["pod"], s["role"]) for s in decision["selected"]] == [(s.pod, s.role) for s in replayed.selected]


def test_the_command_prints_the_moments_and_draws_the_plot(day, tmp_path, capsys):
    _, end, _, url = day
    config = tmp_path / "rebalancer.yaml"
    config.write_text(yaml.safe_dump({"metrics_url": url, "targets": [TARGET]}))
    plot = tmp_path / "backtest.png"

    code = backtest.main(["--config", str(config), "--target", "ingestion-consumer", "--since", "24h", "--step", "1m",
                          "--plot", str(plot)], now=end)

    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line for line in out.splitlines() if line.startswith("| 20")]
    assert len(rows) == 3 and all("CV above 0.3" in row for row in rows)
    assert "Would have acted 3 times: 3.0 per day." in out
    assert "by the cooldown" in out and "Assumed, because only Kubernetes knows it" in out
    # Each action settles into a balanced hour: the simulated closed loop judges all three improved.
    assert "Effects of the simulated actions, read from the history once settled: improved 3." in out
    assert "the back-off shown is what would follow if the actions did not help" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000


@pytest.mark.parametrize(("argv", "message"), [
    (["--target", "nope"], "no target 'nope'"),
    (["--target", "ingestion-consumer", "--since", "1h", "--start", "2026-11-24T00:00:00Z"], "not both"),
    (["--target", "ingestion-consumer", "--start", "2026-11-25T00:00:00Z", "--end", "2026-11-24T00:00:00Z"], "the period is empty"),
    (["--target", "ingestion-consumer", "--step", "soon"], "soon"),
])
def test_a_bad_command_line_is_refused_in_one_line_and_queries_nothing(tmp_path, capsys, argv, message):
    config = tmp_path / "rebalancer.yaml"
    config.write_text(yaml.safe_dump({"metrics_url": "http://127.0.0.1:9", "targets": [TARGET]}))
    assert backtest.main(["--config", str(config), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("backtest: ") and message in err and "\n" not in err


@pytest.mark.parametrize("at_brokers", [False, True])
def test_partition_lag_is_replayed_partition_by_partition(load_metrics, tmp_path, capsys, at_brokers):
    """And where the lag is measured at the brokers, which keep no history, the same metrics
    template is replayed with a note that says so."""
    # An hour in which one partition of twelve holds 50,000 messages: moving pods cannot split it.
    end = aligned_now()
    pods = [f"consumer-{i}" for i in range(6)]
    lag = {p: 50_000.0 if p == 6 else 100.0 for p in range(12)}
    backend = load_metrics(partition_lag_with_assignment(NS, "ingestion", lag, {p: pods[p // 2] for p in range(12)},
                                                         end - 4200, end, container="consumer"))
    config = tmp_path / "rebalancer.yaml"
    source = {"source": "kafka", "kafka": {"bootstrap_servers": "127.0.0.1:9", "group": "ingestion"}} if at_brokers else {}
    config.write_text(yaml.safe_dump({"metrics_url": backend.url, "targets": [{
        "name": "consumer", "namespace": NS, "deployment": "consumer", "signals": {"lag": {
            "threshold": 0.5, "partitions": MICROMETER_PARTITIONS, **source}}}]}))

    code = backtest.main(["--config", str(config), "--target", "consumer", "--since", "1h", "--step", "5m"],
                         now=datetime.fromtimestamp(end, timezone.utc))

    out = capsys.readouterr().out
    assert code == 0, out
    assert ("the function measures lag at the brokers (consumer group ingestion), which keep no history: this replays "
            "the metrics template signals.lag.partitions instead" in out) == at_brokers
    steps = int(re.search(r"every 5m: (\d+) steps", out).group(1))  # 12 or 13, as the hour falls on the grid
    assert steps >= 12 and "Would have acted 0 times" in out
    assert f"by a hot partition {steps}," in out and f"Every step's verdict: hot_partition {steps}." in out


def test_lag_at_the_brokers_without_a_metrics_template_cannot_be_replayed_and_says_so(tmp_path, capsys):
    config = tmp_path / "rebalancer.yaml"
    config.write_text(yaml.safe_dump({"metrics_url": "http://127.0.0.1:9", "targets": [{
        "name": "consumer", "namespace": NS, "deployment": "consumer", "signals": {"lag": {
            "threshold": 0.5, "source": "kafka", "kafka": {"bootstrap_servers": "127.0.0.1:9", "group": "ingestion"}}}}]}))

    assert backtest.main(["--config", str(config), "--target", "consumer"]) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith("backtest: signals.lag is measured at the brokers (source: kafka), which keep no history: the "
                          "backtest cannot replay them") and "signals.lag.partitions (or query)" in err


def test_the_plot_shades_the_cooldowns_and_the_closed_windows(day, tmp_path):
    start, end, _, url = day
    closed_afternoons = {**TARGET, "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00",
                                                "end": "12:00", "timezone": "UTC"}]}
    settings = Settings(metrics_url=url, targets=[closed_afternoons])
    report = backtest.run(settings, settings.targets[0], "cpu", backtest.Period(start, end, parse_duration("1m")),
                          backtest.Assumed())

    drawn = plot(report, settings.targets[0].rules("cpu"), tmp_path / "backtest.png")

    assert drawn.actions == drawn.cooldown_spans == len(report.actions) >= 1
    assert drawn.closed_spans in (1, 2)  # the afternoons the day holds
    assert all(a.at.hour < 12 for a in report.actions)
    assert report.held()["maintenance window"] > 0  # the 18:00 episode
    assert (tmp_path / "backtest.png").stat().st_size > 20_000
