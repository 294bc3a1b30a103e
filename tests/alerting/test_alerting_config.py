"""The shipped alerting side: generated rules (promtool, vmalert) and the Alertmanager config (amtool)."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
import yaml

from rebalancer.config import Settings
from rebalancer.core.durations import parse_duration
from rebalancer.tools import rules
from tests.conftest import REPO
from tests.servers import require_binary

RULES = REPO / "alertmanager" / "rules" / "pod-rebalancer.rules.yml"
RULE_TESTS = REPO / "alertmanager" / "tests" / "pod-rebalancer.test.yml"
ALERTMANAGER = REPO / "alertmanager" / "alertmanager.yml"
EXAMPLE = REPO / "examples" / "rebalancer.yaml"


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


def example_settings() -> Settings:
    return Settings(**yaml.safe_load(EXAMPLE.read_text()))


def test_shipped_rules_are_generated_from_the_example_configuration():
    expected = rules.render(example_settings(), timedelta(minutes=5), timedelta(seconds=30))
    assert RULES.read_text() == expected, "alertmanager/rules is stale: run `make rules`"


def test_each_rule_is_built_from_the_query_the_function_verifies_with():
    document = yaml.safe_load(RULES.read_text())
    by_target = {(r["labels"]["rebalancer_target"], r["labels"]["rebalancer_signal"]): r for r in document["groups"][0]["rules"]}
    for target in example_settings().targets:
        for signal, spec in target.signals.items():
            expr = by_target[(target.name, signal)]["expr"]
            if target.kafka_source(signal) is not None:  # verified at the brokers: the group's total fires
                assert expr == f"{target.group_lag_query()} >= {target.floor(signal) * target.min_pods!r}\n"
                continue
            assert f"stddev({target.query_for(signal)}) / avg({target.query_for(signal)})" in expr
            assert f"> {spec.threshold!r}" in expr and f">= {target.min_pods}" in expr


def test_promtool_accepts_the_rules():
    result = run(require_binary("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0 and "SUCCESS: 4 rules found" in result.stdout, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass():
    result = run(require_binary("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_can_fail(tmp_path):
    """Expect an alert from the balanced case: promtool must report the mismatch."""
    document = yaml.safe_load(RULE_TESTS.read_text())
    balanced = next(t for t in document["tests"] if t["name"].startswith("cpu balanced"))
    balanced["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"rebalancer_signal": "cpu"}}]
    document["tests"] = [balanced]
    document["rule_files"] = [str(RULES)]
    broken = tmp_path / "broken.test.yml"
    broken.write_text(yaml.safe_dump(document))
    result = run(require_binary("promtool"), "test", "rules", str(broken))
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_vmalert_dry_run_accepts_the_rules_and_refuses_a_broken_file(tmp_path):
    accepted = run(require_binary("vmalert"), "-dryRun", f"-rule={RULES}")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("stddev(", "stddev((", 1))
    refused = run(require_binary("vmalert"), "-dryRun", f"-rule={broken}")
    assert refused.returncode != 0


def test_amtool_accepts_the_alertmanager_config_and_refuses_a_broken_one(tmp_path):
    accepted = run(require_binary("amtool"), "check-config", str(ALERTMANAGER))
    assert accepted.returncode == 0 and "SUCCESS" in accepted.stdout, accepted.stdout + accepted.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERTMANAGER.read_text().replace("receiver: pod-rebalancer", "receiver: nowhere"))
    assert run(require_binary("amtool"), "check-config", str(broken)).returncode != 0


def test_alertmanager_route_fits_the_function():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    (route,) = config["route"]["routes"]
    assert route["group_by"] == ["rebalancer_target", "rebalancer_signal"]
    longest_cooldown = max(t.cooldown for t in example_settings().targets)
    assert parse_duration(route["repeat_interval"]) >= longest_cooldown
    (webhook,) = next(r for r in config["receivers"] if r["name"] == route["receiver"])["webhook_configs"]
    assert webhook["url"].endswith("/alertmanager")
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    assert webhook["http_config"]["authorization"]["credentials_file"]
    assert 0 < webhook["max_alerts"] <= Settings.model_fields["max_alerts"].default


@pytest.mark.parametrize("document", ["targets: []\n", "- not a mapping\n", "targets:\n  - name: x\n",
                                      "metrics_url: http://vm:8428\nauth_token: s3cret\ntargets: []\n"])
def test_the_rules_generator_refuses_a_bad_configuration_in_one_line(tmp_path, document):
    config = tmp_path / "bad.yaml"
    config.write_text(document)
    result = run(sys.executable, "-m", "rebalancer.tools.rules", str(config))
    assert result.returncode == 2 and result.stderr.startswith("cannot generate rules from") and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr


def test_an_hpa_mode_rule_fires_on_a_pod_above_tolerance_times_the_average_in_promtool(tmp_path):
    """``max(Q) > tolerance * avg(Q)``: label-less on both sides, so Prometheus compares it (a
    per-pod vector against a label-less avg(), as PostHog's query does, would match nothing)."""
    settings = Settings(metrics_url="http://unused", targets=[{
        "name": "consumer", "namespace": "posthog", "deployment": "consumer", "min_pods": 3,
        "signals": {"cpu": {"mode": "hpa", "tolerance": 1.5}}}])
    rule_file = tmp_path / "hpa.rules.yml"
    rule_file.write_text(rules.render(settings, timedelta(minutes=1), timedelta(seconds=15)))
    rule = yaml.safe_load(rule_file.read_text())["groups"][0]["rules"][0]
    assert "> 1.5 * avg(" in rule["expr"] and "stddev" not in rule["expr"]

    def case(name: str, per_step: list[float], fires: bool) -> dict:
        series = [{"series": f'container_cpu_usage_seconds_total{{namespace="posthog",pod="consumer-p{i}",container="consumer"}}',
                   "values": f"1000+{step}x80"} for i, step in enumerate(per_step)]
        expected = [{"exp_labels": {"severity": "warning", "rebalancer_target": "consumer", "rebalancer_signal": "cpu",
                                    "namespace": "posthog", "deployment": "consumer"},
                     "exp_annotations": {"summary": "Busiest consumer pod at 1.20 cores, over 1.5 x the average",
                                         "description": rule["annotations"]["description"]}}] if fires else []
        return {"name": name, "interval": "15s", "input_series": series,
                "alert_rule_test": [{"eval_time": "10m", "alertname": "ConsumerCpuSkew", "exp_alerts": expected}]}

    # Per 15 s step: 18 cores-seconds = 1.2 cores. Average 0.7: 1.2 > 1.5 x 0.7 fires; 0.9 < 1.5 x 0.75 does not.
    tests = {"rule_files": [str(rule_file)], "evaluation_interval": "15s", "tests": [
        case("hpa skew fires", [18, 16.5, 12, 9, 9, 4.5, 6], fires=True),
        case("close loads stay silent", [13.5, 12.75, 12, 11.25, 11.25, 12, 11.25], fires=False),
    ]}
    test_file = tmp_path / "hpa.test.yml"
    test_file.write_text(yaml.safe_dump(tests))
    result = run(require_binary("promtool"), "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_m_rebalancer_rules_prints_the_shipped_rules_and_a_wrong_command_says_which_exist():
    """The entry point the Makefile, the README and the rules' header name (`python -m rebalancer
    rules`), run as a person runs it, wherever the package keeps the module."""
    generated = subprocess.run([sys.executable, "-m", "rebalancer", "rules", str(EXAMPLE)], cwd=REPO,
                               capture_output=True, text=True, timeout=120, check=False)
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == RULES.read_text()

    unknown = subprocess.run([sys.executable, "-m", "rebalancer", "rulez"], cwd=REPO, capture_output=True, text=True,
                             timeout=120, check=False)
    assert unknown.returncode == 2
    assert "backtest" in unknown.stderr and "rules" in unknown.stderr
