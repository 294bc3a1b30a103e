"""The Kubernetes Role that terraform/ deploys, read from its HCL: the one source of the rules
that the tests grant the function's identity on the real control plane."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "terraform" / "modules" / "pod-rebalancer"


def unquote(value: str) -> str:
    """python-hcl2 keeps the quotes of string literals and block labels."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def hcl(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle)


def resource(document: dict, kind: str, name: str) -> dict:
    for block in document.get("resource", []):
        for key, body in block.items():
            if unquote(key) == kind:
                for label, inner in body.items():
                    if unquote(label) == name:
                        return inner
    raise AssertionError(f"no resource {kind}.{name}")


def role_rules(*, deleting: bool) -> list[dict[str, Any]]:
    """The Role's rules as the Kubernetes API takes them; the dynamic ``delete`` rule is there
    only in the namespaces of targets whose action is ``delete``, as Terraform renders it."""
    role = resource(hcl(MODULE / "rbac.tf"), "kubernetes_role_v1", "rebalancer")
    blocks = list(role["rule"])
    if deleting:
        for dynamic in role.get("dynamic", []):
            for key, body in dynamic.items():
                if unquote(key) == "rule":
                    blocks.extend(body["content"])
    return [{"apiGroups": [unquote(g) for g in rule["api_groups"]],
             "resources": [unquote(r) for r in rule["resources"]],
             "verbs": [unquote(v) for v in rule["verbs"]]} for rule in blocks]


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (api group, resource, verb) the rules allow."""
    return {(group, res, verb) for rule in rules for group in rule["apiGroups"]
            for res in rule["resources"] for verb in rule["verbs"]}
