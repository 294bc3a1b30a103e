from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from rebalancer.config import load_settings
from rebalancer.errors import ConfigError

BASE = {
    "metrics_url": "http://victoriametrics:8428",
    "targets": [
        {"name": "ingestion-consumer", "namespace": "posthog", "deployment": "ingestion-consumer",
         "signals": {"cpu": {"threshold": 0.3}}},
    ],
}


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    def write(document) -> None:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
        monkeypatch.setenv("REBALANCER_CONFIG", str(path))

    for name in ("REBALANCER_METRICS_URL", "REBALANCER_DRY_RUN", "REBALANCER_AUTH_TOKEN", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    return write


def test_defaults_are_safe(config_file):
    config_file(BASE)
    settings = load_settings()
    target = settings.targets[0]
    assert settings.dry_run is True
    assert settings.allow_unauthenticated is False
    assert settings.max_body_bytes == 1024 * 1024
    assert (target.action, target.cooldown, target.min_pods, target.min_pod_age) == ("evict", timedelta(minutes=15), 3, timedelta(minutes=10))
    assert target.container == "ingestion-consumer"
    assert (target.max_pods_per_action, target.max_missing_fraction, target.selection) == (2, 0.2, "rotate_outliers")


def test_durations_are_read_as_prometheus_durations(config_file):
    config_file({**BASE, "targets": [{**BASE["targets"][0], "cooldown": "1h30m", "window": "2m"}]})
    target = load_settings().targets[0]
    assert target.cooldown == timedelta(minutes=90) and target.window == timedelta(minutes=2)


def test_env_overrides_the_file(config_file, monkeypatch):
    config_file(BASE)
    monkeypatch.setenv("REBALANCER_METRICS_URL", "http://prometheus:9090")
    monkeypatch.setenv("REBALANCER_DRY_RUN", "0")
    settings = load_settings()
    assert str(settings.metrics_url) == "http://prometheus:9090/" and settings.dry_run is False


@pytest.mark.parametrize("word", ["yes", "flase", "off", "2"])
def test_dry_run_accepts_only_true_false_1_0(config_file, monkeypatch, word):
    config_file(BASE)
    monkeypatch.setenv("REBALANCER_DRY_RUN", word)
    with pytest.raises(ConfigError, match="dry_run: must be true or false"):
        load_settings()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cooldown": "15 minutes"}, "targets.0.cooldown"),
        ({"name": "Ingestion_Consumer"}, "targets.0.name"),
        ({"action": "kill"}, "targets.0.action"),
        ({"min_pods": 1}, "targets.0.min_pods"),
        ({"signals": {}}, "targets.0.signals"),
        ({"signals": {"disk": {"threshold": 0.3}}}, "targets.0.signals.disk"),
        ({"signals": {"cpu": {"threshold": -1}}}, "targets.0.signals.cpu.threshold"),
        ({"signals": {"cpu": {"threshold": 0.3, "query": 'x{pod="$pod"}'}}}, "targets.0.signals.cpu.query"),
        ({"max_missing_fraction": 1.5}, "targets.0.max_missing_fraction"),
        ({"surprise": True}, "targets.0.surprise"),
        ({"signals": {"cpu": {"threshold": 0.3, "floor": -0.1}}}, "targets.0.signals.cpu.floor"),
        ({"signals": {"lag": {"threshold": 0.5, "partitions": "lag{x=\"$topic\"}"}}}, "targets.0.signals.lag.partitions"),
        ({"signals": {"lag": {"threshold": 0.5, "hot_partition_share": 1.5}}}, "targets.0.signals.lag.hot_partition_share"),
        ({"signals": {"lag": {"threshold": 0.5, "partitions": "x", "inflow": "y{x=\"$topic\"}"}}}, "targets.0.signals.lag.inflow"),
        ({"signals": {"lag": {"threshold": 0.5, "partitions": "x", "hot_inflow_ratio": 1}}},
         "targets.0.signals.lag.hot_inflow_ratio"),
        ({"backoff_after_ineffective": 0}, "targets.0.backoff_after_ineffective"),
        ({"settle": "0s"}, "targets.0.settle"),
        ({"assignor": "sticky"}, "targets.0.assignor"),
        ({"assignor": "roundrobin"}, "targets.0.assignor"),
        ({"signals": {"lag": {"threshold": 0.5, "partitions": "x", "inflow": "y", "delay_spread": 1}}},
         "targets.0.signals.lag.delay_spread"),
        ({"signals": {"lag": {"threshold": 0.5, "partitions": "x", "inflow": "y", "delay_spread": -0.1}}},
         "targets.0.signals.lag.delay_spread"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(config_file, change, field):
    config_file({**BASE, "targets": [{**BASE["targets"][0], **change}]})
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert f"  {field}:" in str(raised.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"assignor": "range"}, "assignor: the projection follows the assignor only where it knows who holds which partition"),
    ({"signals": {"cpu": {"threshold": 0.3, "partitions": "x"}}}, "signals.cpu.partitions: partition-aware decisions are "
                                                                  "for the lag signal only"),
    ({"backoff": "2h", "max_backoff": "1h"}, "max_backoff: must be at least backoff"),
    ({"signals": {"lag": {"threshold": 0.5, "inflow": "rate(x[1m])"}}}, "inflow: tells a hot partition from a slow "
                                                                         "consumer, so it needs partitions"),
    ({"signals": {"lag": {"threshold": 0.5, "partitions": "x", "delay_spread": 0.3}}}, "delay_spread: a consumer's "
                                                                                       "delay is its lag over its inflow"),
])
def test_inconsistent_closed_loop_and_partition_settings_are_refused(config_file, change, message):
    config_file({**BASE, "targets": [{**BASE["targets"][0], **change}]})
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_floors_default_per_signal_and_the_closed_loop_settles_over_the_cooldown(config_file):
    config_file({**BASE, "targets": [{**BASE["targets"][0], "cooldown": "20m",
                                      "signals": {"cpu": {"threshold": 0.3}, "lag": {"threshold": 0.5, "floor": 0}}}]})
    target = load_settings().targets[0]
    assert (target.floor("cpu"), target.floor("lag")) == (0.1, 0.0)
    assert target.effect_rules("cpu").settle == timedelta(minutes=20)
    assert target.limits().backoff.wait == timedelta(hours=1) and target.limits().backoff.after == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"metrics_basic_auth_username": "u", "metrics_google_auth": True},
     "set one of metrics_basic_auth_username, metrics_google_auth, not several"),
    ({"metrics_basic_auth_username": "u"}, "set both or neither"),
    ({"metrics_bearer_token_file": "/nonexistent/token"}, "is not a readable file"),
    ({"metrics_headers": {"Authorization": "Bearer x"}}, "Authorization is set by the function"),
    ({"metrics_headers": {"X Tenant": "1"}}, "must be an HTTP header name"),
    ({"metrics_bearer_token": "in-the-file"}, "metrics_bearer_token is a secret; set it with env "
                                              "REBALANCER_METRICS_BEARER_TOKEN"),
    ({"metrics_basic_auth_password": "in-the-file"}, "metrics_basic_auth_password is a secret"),
])
def test_metrics_credentials_are_checked_and_secrets_stay_out_of_the_file(config_file, change, message):
    config_file({**BASE, **change})
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings()
    assert "in-the-file" not in str(raised.value)


def test_duplicate_target_names_are_refused(config_file):
    other = {**BASE["targets"][0], "deployment": "other"}
    config_file({**BASE, "targets": [BASE["targets"][0], other]})
    with pytest.raises(ConfigError, match="names must be unique"):
        load_settings()


def test_secrets_are_never_printed_in_errors(config_file, monkeypatch):
    config_file({**BASE, "metrics_url": "not a url with hunter2"})
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "metrics_url" in str(raised.value) and "hunter2" not in str(raised.value)


def test_token_in_the_file_is_refused_with_a_pointer_to_the_env(config_file):
    config_file({**BASE, "auth_token": "s3cret"})
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "REBALANCER_AUTH_TOKEN" in str(raised.value) and "s3cret" not in str(raised.value)


def test_missing_config_file_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("REBALANCER_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings()


def test_yaml_that_is_not_a_mapping_is_refused(config_file):
    config_file("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings()


def test_custom_query_is_rendered_with_the_targets_values(config_file):
    template = 'sum by (pod) (lag{namespace="$namespace", group="$deployment"}[$window])'
    config_file({**BASE, "targets": [{**BASE["targets"][0], "signals": {"lag": {"threshold": 0.5, "query": template}}}]})
    target = load_settings().targets[0]
    assert target.query_for("lag") == 'sum by (pod) (lag{namespace="posthog", group="ingestion-consumer"}[5m])'
