"""terraform/ against the providers' own schemas at the versions it allows, offline: a real
`terraform init` + `terraform validate` with schema-only providers from a filesystem mirror, and a
walk of every block and argument (tests/terraform/providers.py). Each mutation of a copy of
terraform/ must fail both; terraform/ as shipped passes both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.terraform.providers import (
    REPO,
    SCHEMAS,
    Versions,
    build_mirror,
    copy_configuration,
    errors,
    terraform_validate,
    walk,
)

MINIMUM = Versions(google="7.25.0", kubernetes="2.35.0", archive="2.7.0")  # the module's lower bounds
NEWEST = Versions(google="7.45.0", kubernetes="3.2.1", archive="2.7.0")  # the newest the module allows
# The example pins kubernetes ~> 2.35, so 3.x is not among its choices (Terraform would refuse it).
EXAMPLE_NEWEST = Versions(google="7.45.0", kubernetes="2.35.0", archive="2.7.0")
RUNS = {
    "module-minimum": ("modules/pod-rebalancer", MINIMUM),
    "module-newest": ("modules/pod-rebalancer", NEWEST),
    "example-minimum": ("example", MINIMUM),
    "example-newest": ("example", EXAMPLE_NEWEST),
}
MODULE_MAIN = "modules/pod-rebalancer/main.tf"
RBAC = "modules/pod-rebalancer/rbac.tf"


def test_every_vendored_schema_is_used_by_a_run():
    used = {f"{name}-{version}.json" for _, versions in RUNS.values() for name, version in versions.items()}
    assert used == {path.name for path in SCHEMAS.glob("*.json")}


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory) -> dict[Versions, Path]:
    root = tmp_path_factory.mktemp("mirrors")
    try:
        return {versions: build_mirror(root / str(index), versions)
                for index, versions in enumerate({v for _, v in RUNS.values()})}
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


def validated(tmp_path: Path, mirrors: dict[Versions, Path], run: str, mutate=None) -> tuple[dict, list[str]]:
    """Both checks of one run on a fresh copy of terraform/ (mutated first, when asked)."""
    directory, versions = RUNS[run]
    terraform = copy_configuration(REPO, tmp_path / "repo")
    if mutate is not None:
        mutate(terraform)
    answer = terraform_validate(terraform / directory, mirrors[versions])
    return answer, walk(terraform / directory, versions)


@pytest.mark.parametrize("run", RUNS)
def test_terraform_as_shipped_validates_and_walks_clean(tmp_path, mirrors, run):
    answer, walked = validated(tmp_path, mirrors, run)

    assert answer["valid"], json.dumps(answer["diagnostics"], indent=1)[:4000]
    assert walked == []
    # Terraform chose the versions the mirror holds, so each schema really was the one checked.
    chosen = {name.rsplit("/", 1)[-1]: version for name, version in answer["providers"].items()}
    assert chosen == dict(RUNS[run][1].items())


def edit(path: str, old: str, new: str):
    def mutate(terraform: Path) -> None:
        file = terraform / path
        text = file.read_text()
        assert text.count(old) == 1, f"{old!r} is not once in {path}: the mutation needs a new anchor"
        file.write_text(text.replace(old, new))
    return mutate


MUTATIONS = {
    "misspelt argument": (edit(MODULE_MAIN, "  uniform_bucket_level_access = true\n", "  uniform_bucket_level_acess = true\n"),
                          "Unsupported argument", "no argument or block named uniform_bucket_level_acess"),
    "block written as an argument": (edit(MODULE_MAIN, "  versioning {\n    enabled = true\n  }\n",
                                          "  versioning = {\n    enabled = true\n  }\n"),
                                     "Unsupported argument", "versioning is a block, written as an argument"),
    "missing required argument": (edit(MODULE_MAIN, '  role    = "roles/container.clusterViewer"\n', ""),
                                  "Missing required argument", "the required argument role is missing"),
    "computed-only attribute set": (edit(MODULE_MAIN, "  uniform_bucket_level_access = true\n",
                                         "  uniform_bucket_level_access = true\n  self_link = \"x\"\n"),
                                    "Computed attributes cannot be set", "self_link is computed only"),
    "reference to no attribute": (edit(MODULE_MAIN, "= google_service_account.rebalancer.email\n", "= google_service_account.rebalancer.emial\n"),
                                  "Unsupported attribute", "google_service_account.rebalancer.emial names no attribute"),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
@pytest.mark.parametrize("run", ["module-minimum", "module-newest"])
def test_each_mutation_fails_both_checks(tmp_path, mirrors, mutation, run):
    mutate, terraform_says, walk_says = MUTATIONS[mutation]

    answer, walked = validated(tmp_path, mirrors, run, mutate)

    assert not answer["valid"] and answer["stage"] == "validate"
    assert any(terraform_says in e for e in errors(answer)), errors(answer)
    assert any(walk_says in problem for problem in walked), walked


def test_a_resource_type_missing_from_the_vendored_schemas_is_named(tmp_path):
    terraform = copy_configuration(REPO, tmp_path / "repo")
    with (terraform / MODULE_MAIN).open("a") as main:
        main.write('\nresource "google_pubsub_topic" "extra" {\n  name = "x"\n}\n')

    walked = walk(terraform / "modules/pod-rebalancer", NEWEST)

    assert [p for p in walked if "google_pubsub_topic" in p] == [
        "resource google_pubsub_topic: the type is missing from the vendored schemas (google-7.45.0.json); "
        "read its schema from the provider's source at that tag and add it"]


def test_a_dynamic_block_is_walked_into(tmp_path):
    """rbac.tf's rules are a dynamic block: a wrong argument inside its content is found."""
    terraform = copy_configuration(REPO, tmp_path / "repo")
    edit(RBAC, "    api_groups = rule.value.apiGroups\n", "    api_groups = rule.value.apiGroups\n    api_grops  = []\n")(terraform)

    walked = walk(terraform / "modules/pod-rebalancer", NEWEST)

    assert any("dynamic.rule.content" in p and "api_grops" in p for p in walked), walked
