"""The container image, without a container engine (none runs here): the Dockerfile is read with
dockerfile-parse and its steps are carried out as written. The build stage's commands run here
(scripts/install-runtime, into a fresh virtualenv, from PyPI). The runtime stage's files are
copied and its RUN executed. Its CMD is then started as its USER, on a read-only root filesystem
(a mount namespace remounts / read-only, with a tmpfs for /tmp as the chart mounts one), and it
answers a manual run against the real control plane and VictoriaMetrics."""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from dockerfile_parse import DockerfileParser

from tests.conftest import REPO, aligned_now
from tests.metricsdata import cpu_usage, to_victoriametrics_import
from tests.servers import ServerProcess, free_port, require_binary

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[dict]:
    parser = DockerfileParser(fileobj=DOCKERFILE.open("rb"))
    return parser.structure


def stages() -> list[list[dict]]:
    found: list[list[dict]] = []
    for instruction in instructions():
        if instruction["instruction"] == "COMMENT":
            continue
        if instruction["instruction"] == "FROM":
            found.append([])
        found[-1].append(instruction)
    return found


def test_the_image_is_two_stages_on_a_pinned_base_of_the_tested_python():
    build, runtime = stages()
    bases = [stage[0]["value"].split()[0] for stage in (build, runtime)]
    assert bases[0] == bases[1]
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-bookworm", bases[0])  # an exact release, never :latest
    assert match and (int(match[1]), int(match[2])) == sys.version_info[:2]  # deploy what was tested
    assert [i["value"] for i in build if i["instruction"] == "RUN"] == ["scripts/install-runtime /opt/venv"]


def test_the_runtime_stage_holds_the_virtualenv_and_the_code_only_and_runs_as_non_root():
    _, runtime = stages()
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv", "main.py main.py", "rebalancer rebalancer"]
    (user,) = [i["value"] for i in runtime if i["instruction"] == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    (command,) = [i["value"] for i in runtime if i["instruction"] == "CMD"]
    assert yaml.safe_load(command)[:5] == ["functions-framework", "--source", "/app/main.py", "--target", "rebalance"]
    assert "ENTRYPOINT" not in {i["instruction"] for i in runtime}  # the chart's args replace CMD whole


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A directory every user can read (pytest's tmp_path is root's only), as an image's layers are."""
    root = Path(tempfile.mkdtemp(prefix="rebalancer-image-", dir="/var/tmp"))  # not under /tmp: that is a tmpfs then
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def build_here(root: Path) -> tuple[dict[str, str], list[str], str]:
    """The Dockerfile's steps, carried out here: /opt/venv and /app become directories under
    ``root``. Returns the image's environment, its command and its user."""
    venv, app = root / "opt-venv", root / "app"
    paths = {"/opt/venv": str(venv), "/app": str(app)}

    def local(text: str) -> str:
        for image_path, here in paths.items():
            text = text.replace(image_path, here)
        return text

    build, runtime = stages()
    for step in build:
        if step["instruction"] == "RUN":  # the interpreter an unprivileged user can run, as the image's is
            subprocess.run(local(step["value"]), shell=True, check=True, cwd=REPO, timeout=600,
                           env={**os.environ, "PYTHON": "/usr/bin/python3"})
    env, command, user = {}, [], ""
    for step in runtime:
        kind, value = step["instruction"], step["value"]
        if kind == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(value)))
        elif kind == "COPY" and not value.startswith("--from="):
            source, destination = value.split()
            target = app / destination
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(REPO / source, target)
        elif kind == "RUN":
            subprocess.run(local(value).replace("python ", f"{venv}/bin/python ", 1), shell=True, check=True, timeout=120)
        elif kind == "CMD":
            command = [local(part) for part in yaml.safe_load(value)]
        elif kind == "USER":
            user = value
    env["PATH"] = local(env["PATH"])
    command[0] = str(venv / "bin" / command[0])
    for directory, _, files in os.walk(root):  # world-readable, as an image's files are
        for name in files:
            os.chmod(os.path.join(directory, name), os.stat(os.path.join(directory, name)).st_mode | 0o444)
    return env, command, user


def test_the_image_steps_give_a_function_that_serves_as_its_user_from_a_read_only_root(
        image_root, kube, victoria_metrics):
    env, command, user = build_here(image_root)
    pods = kube.deployment("consumer", replicas=6)
    now = aligned_now()
    victoria_metrics.import_prometheus(to_victoriametrics_import(cpu_usage(
        kube.namespace, "consumer", dict(zip(pods, [0.1, 0.5, 0.5, 0.5, 1.9, 1.6], strict=True)), now - 1200, now)))
    config = image_root / "rebalancer.yaml"
    config.write_text(yaml.safe_dump({"targets": [{"name": "consumer", "namespace": kube.namespace, "deployment": "consumer",
                                                   "min_pod_age": "0s", "signals": {"cpu": {"threshold": 0.3}}}]}))
    # The CA inline: the plane's files are under root's /tmp, which the image's user cannot see.
    kubeconfig = kube.write_kubeconfig(image_root / "kubeconfig")
    document = yaml.safe_load(kubeconfig.read_text())
    cluster = document["clusters"][0]["cluster"]
    cluster["certificate-authority-data"] = base64.b64encode(Path(cluster.pop("certificate-authority")).read_bytes()).decode()
    kubeconfig.write_text(yaml.safe_dump(document))
    for path in (config, kubeconfig):
        path.chmod(0o644)
    port = free_port()
    command = [part if part != "8080" else str(port) for part in command]
    uid, _, gid = user.partition(":")
    # The root filesystem read-only (the pod's readOnlyRootFilesystem), a tmpfs on /tmp (its emptyDir).
    read_only = ("mount --bind / / && mount -o remount,bind,ro / && mount -t tmpfs tmpfs /tmp && "
                 f'exec {require_binary("setpriv")} --reuid {uid} --regid {gid} --clear-groups "$@"')
    function = ServerProcess("image", [require_binary("unshare"), "--mount", "--propagation", "private", "sh", "-c",
                                       read_only, "image", *command], f"http://127.0.0.1:{port}/healthz",
                             image_root / "run", env={
                                 **env, "HOME": "/",  # what Docker sets for a user without a passwd entry
                                 "REBALANCER_CONFIG": str(config), "KUBECONFIG": str(kubeconfig),
                                 "REBALANCER_METRICS_URL": victoria_metrics.url, "REBALANCER_AUTH_TOKEN": "image-token"})
    function.start(timeout=60)
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/rebalance", json={"target": "consumer"}, timeout=30,
                               headers={"Authorization": "Bearer image-token"}).json()
        whoami = subprocess.run(["ps", "-o", "user=", "-p", str(function.process.pid)], capture_output=True, text=True)
    finally:
        function.stop()

    assert answer["decisions"][0]["outcome"] == "dry_run", answer["reason"]
    log = (image_root / "run" / "image.log").read_text()
    assert "Read-only file system" not in log and "Traceback" not in log and "[ERROR]" not in log, log
    assert whoami.stdout.strip() == user.partition(":")[0]  # the process ran as the image's user (no passwd entry)
