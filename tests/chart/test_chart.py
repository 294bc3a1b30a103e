"""The Helm chart (deploy/helm/pod-rebalancer), with the pinned helm built from its Go module:
lint, what it renders, a server-side dry-run apply of it on the real control plane, and the
function started in in-cluster mode as the chart's ServiceAccount, acting with exactly the chart's
RBAC."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from kubernetes.client import AuthorizationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from rebalancer.config import Settings
from rebalancer.core.durations import parse_duration
from rebalancer.tools import rules as rule_generator
from tests.conftest import REPO, aligned_now
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.realcluster import AuditedRequest, drop_namespace, new_namespace
from tests.servers import FunctionProcess
from tests.terraform_rbac import granted, role_rules

CHART = REPO / "deploy" / "helm" / "pod-rebalancer"
HELM = REPO / ".build" / "helm"
KUBE_VERSION = "v1.37.2"
CUSTOM_KINDS = {"ServiceMonitor", "VMServiceScrape", "PrometheusRule", "VMRule"}  # CRDs the cluster may not have


def helm(*argv: str) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: `make test` builds it (scripts/build-helm)", pytrace=False)
    return subprocess.run([str(HELM), *argv], capture_output=True, text=True, timeout=120, check=False)


def values(namespace_a: str = "team-a", namespace_b: str = "team-b", **more: Any) -> dict[str, Any]:
    return {"auth": {"token": "chart-token-3e1f"}, "metricsUrl": "http://vm.monitoring:8428", "config": {
        "log_format": "json",
        "targets": [{"name": "consumer", "namespace": namespace_a, "deployment": "consumer",
                     "signals": {"cpu": {"threshold": 0.3}}},
                    {"name": "worker", "namespace": namespace_b, "deployment": "worker", "action": "delete",
                     "signals": {"lag": {"threshold": 0.5}}}]}, **more}


def render(tmp_path: Path, chart_values: dict[str, Any], *extra: str, namespace: str = "ops") -> list[dict[str, Any]]:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(chart_values))
    result = helm("template", "rb", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                  "-f", str(values_file), *extra)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def kinds(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_helm_lint_passes(tmp_path):
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values()))
    result = helm("lint", str(CHART), "--strict", "-f", str(tmp_path / "values.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_a_token_the_chart_refuses_to_render(tmp_path):
    (tmp_path / "values.yaml").write_text(yaml.safe_dump({**values(), "auth": {"token": ""}}))
    result = helm("template", "rb", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(tmp_path / "values.yaml"))
    assert result.returncode != 0 and "auth.token or auth.existingSecret is required" in result.stderr


def test_each_target_namespace_gets_exactly_the_shared_rules(tmp_path):
    documents = render(tmp_path, values())
    roles = {r["metadata"]["namespace"]: r for r in kinds(documents, "Role")}
    assert set(roles) == {"team-a", "team-b"}
    assert roles["team-a"]["rules"] == role_rules(deleting=False)
    assert roles["team-b"]["rules"] == role_rules(deleting=True)  # worker deletes pods
    for binding in kinds(documents, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rb-pod-rebalancer", "namespace": "ops"}]
    assert not kinds(documents, "ClusterRole") and not kinds(documents, "ClusterRoleBinding")


def test_the_pod_runs_as_non_root_on_a_read_only_root_with_probes_and_resources(tmp_path):
    (deployment,) = kinds(render(tmp_path, values()), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["readinessProbe"]["httpGet"]["path"] == container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["args"][:5] == ["functions-framework", "--source", "/app/main.py", "--target", "rebalance"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REBALANCER_DRY_RUN"]["value"] == "true"  # dry-run unless asked
    assert env["REBALANCER_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "rb-pod-rebalancer", "key": "token"}


def test_an_existing_secret_is_used_instead_of_a_new_one(tmp_path):
    documents = render(tmp_path, {**values(), "auth": {"existingSecret": "mine", "existingSecretKey": "alertmanager"}})
    assert not kinds(documents, "Secret")
    (deployment,) = kinds(documents, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REBALANCER_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "mine", "key": "alertmanager"}


def test_a_kafka_password_reaches_the_function_from_a_secret_as_env_or_as_a_mounted_file(tmp_path):
    """Lag measured at the brokers: the password is in a Secret the operator manages, given as the
    variable password_env names or mounted where password_file points; never in the ConfigMap."""
    documents = render(tmp_path, values(
        extraSecretEnv={"KAFKA_PASSWORD": {"secret": "kafka-credentials", "key": "password"}},
        secretFiles={"kafka": {"secret": "kafka-tls", "mountPath": "/var/run/secrets/kafka"}}))
    (deployment,) = kinds(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KAFKA_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "kafka-credentials", "key": "password"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["secret-kafka"] == {"name": "secret-kafka", "mountPath": "/var/run/secrets/kafka", "readOnly": True}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secret-kafka"]["secret"] == {"secretName": "kafka-tls", "defaultMode": 0o440}


def test_the_configuration_from_values_is_a_valid_function_configuration(tmp_path):
    (configmap,) = kinds(render(tmp_path, values()), "ConfigMap")
    rendered = yaml.safe_load(configmap["data"]["rebalancer.yaml"])
    assert rendered == values()["config"]
    settings = Settings(metrics_url="http://vm.monitoring:8428", **rendered)
    assert [t.name for t in settings.targets] == ["consumer", "worker"]


def test_the_rule_resources_carry_the_generated_skew_rules_and_the_self_monitoring_ones(tmp_path):
    settings = Settings(metrics_url="http://vm:8428", **values()["config"])
    skew = tmp_path / "skew.rules.yml"
    skew.write_text(rule_generator.render(settings, parse_duration("5m"), parse_duration("30s")))
    documents = render(tmp_path, values(prometheusRule={"enabled": True}, vmRule={"enabled": True},
                                        serviceMonitor={"enabled": True}, vmServiceScrape={"enabled": True}),
                       "--set-file", f"skewRules={skew}")
    expected = yaml.safe_load(skew.read_text())["groups"] + yaml.safe_load(
        (CHART / "files" / "self-monitoring.rules.yml").read_text())["groups"]
    for kind in ("PrometheusRule", "VMRule"):
        (rule,) = kinds(documents, kind)
        assert rule["spec"]["groups"] == expected
    (monitor,) = kinds(documents, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert kinds(documents, "VMServiceScrape")
    alerts = [r["alert"] for g in expected for r in g["rules"]]
    assert "ConsumerCpuSkew" in alerts and "ConsumerLagSkew" in alerts and "RebalancerSkewPersists" in alerts


def apply(plane, documents: list[dict[str, Any]], *, dry_run: bool) -> list[str]:
    """Server-side apply each object as the admin; the kinds applied, in order."""
    client = DynamicClient(plane.admin)
    applied = []
    for document in documents:
        api = client.resources.get(api_version=document["apiVersion"], kind=document["kind"])
        api.server_side_apply(body=document, name=document["metadata"]["name"],
                              namespace=document["metadata"].get("namespace"), field_manager="helm-chart-test",
                              dry_run="All" if dry_run else None)
        applied.append(document["kind"])
    return applied


@pytest.fixture
def namespaces(control_plane):
    """The release's namespace and two target namespaces, made for this test."""
    made = [new_namespace(control_plane, prefix) for prefix in ("rel", "ta", "tb")]
    yield made
    for cluster in made:
        drop_namespace(cluster)


def test_the_api_server_accepts_every_object_of_the_chart_in_a_dry_run(control_plane, namespaces, tmp_path):
    release, team_a, team_b = namespaces
    documents = render(tmp_path, values(team_a.namespace, team_b.namespace), namespace=release.namespace)

    applied = apply(control_plane, [d for d in documents if d["kind"] not in CUSTOM_KINDS], dry_run=True)

    assert sorted(set(applied)) == ["ConfigMap", "Deployment", "Role", "RoleBinding", "Secret", "Service", "ServiceAccount"]
    with pytest.raises(ApiException) as missing:  # a dry run creates nothing
        CoreV1Api(control_plane.admin).read_namespaced_service_account("rb-pod-rebalancer", release.namespace)
    assert missing.value.status == 404


def test_a_dry_run_apply_refuses_a_broken_object(control_plane, namespaces, tmp_path):
    release, team_a, team_b = namespaces
    (deployment,) = kinds(render(tmp_path, values(team_a.namespace, team_b.namespace), namespace=release.namespace),
                          "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 700000
    with pytest.raises(DynamicApiError) as refused:
        apply(control_plane, [deployment], dry_run=True)
    assert refused.value.status == 422


def test_the_function_in_cluster_mode_acts_with_exactly_the_charts_rbac(control_plane, namespaces, victoria_metrics,
                                                                         tmp_path):
    release, team_a, team_b = namespaces
    chart_values = values(team_a.namespace, team_b.namespace)
    chart_values["config"]["targets"][0]["min_pod_age"] = "0s"  # the pods are seconds old
    documents = render(tmp_path, chart_values, namespace=release.namespace)
    apply(control_plane, [d for d in documents if d["kind"] not in CUSTOM_KINDS | {"Deployment"}], dry_run=False)
    pods = team_a.deployment("consumer", replicas=6)
    now = aligned_now()
    victoria_metrics.import_prometheus(to_victoriametrics_import(cpu_usage(
        team_a.namespace, "consumer", dict(zip(pods, [0.1, 0.5, 0.5, 0.5, 1.9, 1.6], strict=True)), now - 1200, now)))

    # What the kubelet mounts into the chart's pod: its ServiceAccount's token, the cluster CA, the namespace.
    identity = f"system:serviceaccount:{release.namespace}:rb-pod-rebalancer"
    account = tmp_path / "serviceaccount"
    account.mkdir()
    token = CoreV1Api(control_plane.admin).create_namespaced_service_account_token(
        "rb-pod-rebalancer", release.namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    (account / "token").write_text(token)
    (account / "ca.crt").write_text(Path(control_plane.info["ca_file"]).read_text())
    (account / "namespace").write_text(release.namespace)
    (configmap,) = kinds(documents, "ConfigMap")
    (tmp_path / "rebalancer.yaml").write_text(configmap["data"]["rebalancer.yaml"])
    (secret,) = kinds(documents, "Secret")
    port = control_plane.server.rsplit(":", 1)[1]
    function = FunctionProcess(tmp_path / "function", {
        "REBALANCER_CONFIG": str(tmp_path / "rebalancer.yaml"), "REBALANCER_METRICS_URL": victoria_metrics.url,
        "REBALANCER_DRY_RUN": "false", "REBALANCER_AUTH_TOKEN": base64.b64decode(secret["data"]["token"]).decode(),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, in_cluster=account).start()
    try:
        answer = requests.post(f"{function.url}/rebalance", json={"target": "consumer"}, timeout=30,
                               headers={"Authorization": f"Bearer {chart_values['auth']['token']}"}).json()
    finally:
        function.stop()

    decision = answer["decisions"][0]
    assert decision["outcome"] == "acted", decision["reason"]
    made = [AuditedRequest.from_audit(e) for e in control_plane.audit() if e["user"]["username"] == identity]
    assert made and {r.namespace for r in made} == {team_a.namespace}
    calls = {(r.group, r.resource + (f"/{r.subresource}" if r.subresource else ""), r.verb) for r in made}
    assert calls == granted(role_rules(deleting=False))  # every call of a live eviction run, and only those
    assert [(r.verb, r.resource, r.code) for r in made if r.code >= 300] == [("get", "configmaps", 404)]

    def may(namespace: str, verb: str, resource: str = "pods") -> bool:
        review = AuthorizationV1Api(control_plane.admin).create_subject_access_review({"spec": {
            "user": identity, "groups": ["system:serviceaccounts", f"system:serviceaccounts:{release.namespace}"],
            "resourceAttributes": {"namespace": namespace, "resource": resource, "verb": verb}}})
        return bool(review.status.allowed)

    assert not may(team_a.namespace, "delete") and may(team_b.namespace, "delete")  # team-b's target deletes
    assert not may(release.namespace, "list") and not may("kube-system", "list")
    assert not may(team_a.namespace, "update", "deployments")


def test_the_readmes_helm_template_command_renders_without_a_cluster_as_written():
    readme = (REPO / "README.md").read_text().split("## Installing with Helm", 1)[1]
    (command,) = [block for block in readme.split("```sh\n")[1:] if block.startswith("helm template")]
    command = command.split("```", 1)[0].replace("\\\n", " ").strip()
    assert "--kube-version" in command

    rendered = subprocess.run(["bash", "-c", command.replace("helm ", f"{HELM} ", 1)], cwd=REPO, capture_output=True, text=True,
                              timeout=120, check=False)

    assert rendered.returncode == 0, rendered.stderr
    documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert [d["metadata"]["namespace"] for d in kinds(documents, "Deployment")] == ["pod-rebalancer"]
    # Why the README says which Kubernetes: without it, helm assumes v1.20.0.
    bare = subprocess.run(["bash", "-c", command.replace("helm ", f"{HELM} ", 1).replace("--kube-version 1.30", "")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert bare.returncode != 0 and "incompatible with Kubernetes v1.20.0" in bare.stderr
