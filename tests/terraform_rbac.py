"""The Kubernetes Role that terraform/ and the Helm chart deploy: the rules file both render (the
one source of the rules that the tests grant the function's identity on the real control plane),
and helpers to read terraform/'s HCL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hcl2
import yaml

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "terraform" / "modules" / "pod-rebalancer"
RULES_FILE = REPO / "deploy" / "helm" / "pod-rebalancer" / "files" / "role-rules.yaml"


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
    """The Role's rules as the Kubernetes API takes them; the ``delete`` rule is there only in the
    namespaces of targets whose action is ``delete``, as Terraform and the chart render it."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    return [*rules["always"], *(rules["deleting"] if deleting else [])]


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Every (api group, resource, verb) the rules allow."""
    return {(group, res, verb) for rule in rules for group in rule["apiGroups"]
            for res in rule["resources"] for verb in rule["verbs"]}
