"""The README's examples, run as written against `make try` (scripts/try.py): every curl of the
HTTP API section, and the backtest command. The only change is the ports, so that the test can
run beside anything else on this machine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO
from tests.servers import free_port, wait_for

README = (REPO / "README.md").read_text()


def shell_block(after_heading: str) -> str:
    section = README.split(after_heading, 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def commands(block: str) -> list[str]:
    """The block's commands (a line ending in a backslash continues), comments and blanks left out."""
    joined = block.replace("\\\n", " ")
    return [line.split("   #")[0].strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def tried(tmp_path_factory) -> Iterator[tuple[int, int, Path]]:
    """`make try`'s script, on free ports; its function's and VictoriaMetrics' ports, and its output."""
    port, vm_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("try") / "try.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "try.py")], cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "TRY_PORT": str(port), "TRY_VM_PORT": str(vm_port)})
    try:
        wait_for(lambda: process.poll() is not None or "is listening on" in log.read_text(), "make try to listen", timeout=120)
        if process.poll() is not None:
            pytest.fail(f"scripts/try.py exited with {process.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        yield port, vm_port, log
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)


def brokers_assignment(log: str, group: str) -> dict[str, list[str]]:
    """Who holds which partition of ``group``, as the broker `make try` started says."""
    from confluent_kafka.admin import AdminClient

    bootstrap = re.search(r"Kafka broker on (127\.0\.0\.1:\d+)", log).group(1)
    with AdminClient({"bootstrap.servers": bootstrap, "log_level": 4}) as admin:  # destroyed here, on this thread
        description = admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=15)
    return {m.client_id: [f"{tp.topic}/{tp.partition}" for tp in sorted(m.assignment.topic_partitions, key=lambda tp: tp.partition)]
            for m in sorted(description.members, key=lambda m: m.client_id)}


def run(command: str, port: int, vm_port: int) -> str:
    command = command.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace("127.0.0.1:8428", f"127.0.0.1:{vm_port}")
    result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result.stdout


def test_every_curl_of_the_http_api_section_works_as_written(tried):
    port, vm_port, log = tried
    setup, *examples = commands(shell_block("## HTTP API"))
    assert setup.startswith("URL=http://127.0.0.1:8080; TOKEN=local-try-token")
    assert len(examples) == 5 and all(e.startswith("curl ") for e in examples)
    webhook, manual, lag, health, metrics = (run(f"{setup}; {example}", port, vm_port) for example in examples)

    decisions = json.loads(webhook)["decisions"]
    assert {(d["target"], d["outcome"]) for d in decisions} == {("ingestion-consumer", "dry_run"),
                                                                ("session-recordings", "dry_run")}
    assert json.loads(manual)["decisions"][0]["code"] == "skew_verified"
    # The lag example shows the real group's partitions, held as the brokers say.
    (lag_decision,) = json.loads(lag)["decisions"]
    assert lag_decision["code"] == "skew_verified", lag_decision["reason"]
    assert lag_decision["partitions"]["held"] == brokers_assignment(log.read_text(), "ingestion")
    assert json.loads(health)["status"] == "ok"
    assert metrics and all(line.startswith("rebalancer_") for line in metrics.splitlines())
    assert re.search(r'^rebalancer_decisions_total\{outcome="dry_run",signal="cpu",target="ingestion-consumer"\} [1-9]',
                     metrics, re.M)


def test_the_backtest_command_works_as_written(tried):
    port, vm_port, _ = tried
    (command,) = commands(shell_block("## Backtesting a threshold"))
    assert command.startswith("make backtest ")

    out = run(command, port, vm_port)

    assert "Backtest of ingestion-consumer/cpu" in out and "Would have acted" in out
    assert re.search(r"Would have acted [1-9]\d* times", out)  # the skew is there from the first step


def test_the_readme_first_screen_gives_the_two_set_up_commands():
    first_screen = "\n".join(README.splitlines()[:30])
    assert "make demo" in first_screen and "make test" in first_screen
    assert Path(REPO / "Makefile").read_text().count("\ntry:") == 1
