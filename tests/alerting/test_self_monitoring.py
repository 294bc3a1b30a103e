"""Watching pod-rebalancer itself: the alert rules about it (promtool's rule unit tests, vmalert),
their runbooks in docs/runbooks.md, and the Grafana dashboard, whose every query must parse and use
only metrics the function exports."""

from __future__ import annotations

import json
import re
import subprocess

import yaml

from tests.conftest import REPO, target
from tests.servers import require_binary

SELF_RULES = REPO / "alertmanager" / "rules" / "pod-rebalancer-self.rules.yml"
SELF_TESTS = REPO / "alertmanager" / "tests" / "pod-rebalancer-self.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "pod-rebalancer.json"
ALERTS = ["RebalancerInvocationsFailing", "RebalancerVerificationErrors", "RebalancerNoPodsFound",
          "RebalancerExcessiveEvictions", "RebalancerBlockedByDisruptionBudget", "RebalancerSkewWithoutVerification",
          "RebalancerSkewPersists"]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict]:
    return [r for group in yaml.safe_load(SELF_RULES.read_text())["groups"] for r in group["rules"]]


def test_the_self_monitoring_rules_parse_and_pass_their_unit_tests():
    assert [r["alert"] for r in rules()] == ALERTS
    checked = run(require_binary("promtool"), "check", "rules", str(SELF_RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(require_binary("promtool"), "test", "rules", str(SELF_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tested_alerts = set(re.findall(r"alertname: (\w+)", SELF_TESTS.read_text()))
    assert tested_alerts == set(ALERTS)  # each one has a case


def test_the_unit_tests_fail_when_a_rule_changes(tmp_path):
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    loosened = SELF_RULES.read_text().replace("> 0.5 * max by (target)", "> 20 * max by (target)")
    (tmp_path / "rules" / SELF_RULES.name).write_text(loosened)
    (tmp_path / "tests" / SELF_TESTS.name).write_text(SELF_TESTS.read_text())
    tested = run(require_binary("promtool"), "test", "rules", str(tmp_path / "tests" / SELF_TESTS.name))
    assert tested.returncode != 0 and "RebalancerExcessiveEvictions" in tested.stdout + tested.stderr


def test_vmalert_accepts_the_self_monitoring_rules():
    result = run(require_binary("vmalert"), "-dryRun", f"-rule={SELF_RULES}")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_summary_a_description_and_a_runbook_in_the_docs():
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in runbooks.splitlines() if line.startswith("#")}
    for rule in rules():
        annotations = rule["annotations"]
        assert annotations["summary"] and len(annotations["description"]) > 80, rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/runbooks.md" and anchor in anchors, (rule["alert"], anchor)


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def as_promql(query: str) -> str:
    """Grafana's variables replaced as Grafana would, so that the rest is plain PromQL."""
    return query.replace("$__rate_interval", "5m").replace("$target", ".*")


def test_every_dashboard_query_parses(tmp_path):
    queries = [q for q in dashboard_queries() if not q.startswith("label_values(")]
    assert len(queries) >= 10
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": as_promql(q)} for i, q in enumerate(queries)]}]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(recording))
    checked = run(require_binary("promtool"), "check", "rules", str(tmp_path / "dashboard.rules.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_broken_dashboard_query_would_be_caught(tmp_path):
    broken = {"groups": [{"name": "d", "rules": [{"record": "d:q", "expr": "sum by (target (rebalancer_decisions_total)"}]}]}
    (tmp_path / "broken.rules.yml").write_text(yaml.safe_dump(broken))
    assert run(require_binary("promtool"), "check", "rules", str(tmp_path / "broken.rules.yml")).returncode != 0


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
ALERT_LABELS = {"rebalancer_target", "rebalancer_signal"}  # labels of the skew alerts, not metrics


def exported_names(exposition: str) -> set[str]:
    """Every series name the function's /metrics declares (a labelled gauge is declared before
    its first value)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def test_the_dashboard_and_the_rules_use_only_metrics_the_function_exports(make_client, victoria_metrics, kube):
    client = make_client(victoria_metrics.url, [target("consumer", kube.namespace)])
    exported = exported_names(client.get("/metrics").get_data(as_text=True))
    assert {"rebalancer_decisions_total", "rebalancer_request_duration_seconds_bucket", "rebalancer_verified_cv"} <= exported
    used = {name for q in dashboard_queries() + [r["expr"] for r in rules()] for name in re.findall(r"\b(rebalancer_\w+)", q)}
    assert used - ALERT_LABELS - exported == set(), f"not exported: {used - ALERT_LABELS - exported}"
    # Any other metric name would be a selector: an identifier right before { or [.
    others = {m for q in dashboard_queries() for m in re.findall(r"\b([a-zA-Z_:][\w:]*)\s*[{\[]", as_promql(q))
              if not m.startswith("rebalancer_")}
    assert others == set()
