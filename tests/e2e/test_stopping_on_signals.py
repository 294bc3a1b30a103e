"""`make try` stops every process it started (the control plane and the pods' processes it runs,
the Kafka broker and its load, VictoriaMetrics, the function) on SIGINT, SIGTERM or SIGHUP, sent
to the script or to its whole process group (Ctrl-C, a supervisor or `timeout`, a closed
terminal), once or twice in a row: a second signal during the clean-up does not cut it short.
`make demo` stops the same way (tests/servers.Stopping); and a port already taken is one clear
line, before anything starts."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.servers import free_port, wait_for


def leftovers(markers: list[str]) -> list[str]:
    """Processes whose command line or environment names one of ``markers``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            seen = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
        except OSError:
            continue
        if any(marker.encode() in seen for marker in markers):
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()[:160]!r}")
    return found


def child_running(parent: int, script: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat, cmdline = (proc / "stat").read_text(), (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and script.encode() in cmdline:
                return int(proc.name)
    return None


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("twice", [False, True], ids=["once", "twice"])
@pytest.mark.parametrize("to_group", [False, True], ids=["to-the-script", "to-the-group"])
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_make_try_leaves_nothing_running_after(sent, to_group, twice, tmp_path):
    log = tmp_path / "try.log"
    with log.open("w") as out:
        make = subprocess.Popen(["make", "--no-print-directory", "try"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "TRY_PORT": str(free_port()), "TRY_VM_PORT": str(free_port())})
    try:
        wait_for(lambda: make.poll() is not None or "is listening on" in log.read_text(), "make try to listen", timeout=180)
        assert make.poll() is None, f"make try exited with {make.returncode}:\n{log.read_text()[-3000:]}"
        text = log.read_text()
        workdir = re.search(r"The function's log: (\S+)/function/function\.log", text).group(1)
        broker = re.search(r"Kafka broker on (127\.0\.0\.1:\d+)", text).group(1)
        markers = [workdir, broker]
        script = child_running(make.pid, "scripts/try.py")
        assert script is not None and leftovers(markers), "make try's processes were not found"

        for _ in range(2 if twice else 1):
            if to_group:
                os.killpg(make.pid, sent)
            else:
                os.kill(script, sent)
            time.sleep(0.3)

        wait_for(lambda: not alive(script), "the script to finish its clean-up", timeout=90)
        wait_for(lambda: not leftovers(markers), f"nothing of make try left after {sent.name}", timeout=30)
        make.wait(timeout=30)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=30)


def test_a_port_already_taken_is_one_clear_line_and_nothing_starts(tmp_path):
    taken = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", taken))
        listener.listen()
        result = subprocess.run(["make", "--no-print-directory", "try"], cwd=REPO, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "TRY_PORT": str(free_port()), "TRY_VM_PORT": str(taken)})

    assert result.returncode != 0
    said = [line for line in result.stderr.splitlines() if line.startswith("make try:")]
    assert said == [f"make try: port {taken} (VictoriaMetrics) is already in use on 127.0.0.1: an earlier `make try` still "
                    f"running, or another server. Stop it, or choose another port: TRY_VM_PORT=<port> make try"], result.stderr
    assert "Traceback" not in result.stderr and "pytest" not in result.stderr


def test_a_stopping_block_gives_the_signals_back_once_it_has_cleaned_up():
    # The benchmarks run inside pytest (tests/bench): a block that left SIGINT and SIGTERM ignored
    # made the rest of the session deaf to Ctrl-C (seen in a CI run that would not stop).
    from tests.servers import Stopping

    before = {received: signal.getsignal(received) for received in Stopping.SIGNALS}
    stopped = []

    class Server:
        def stop(self) -> None:
            stopped.append(signal.getsignal(signal.SIGTERM))

    with Stopping() as stopping:
        stopping.add(Server())

    assert stopped == [signal.SIG_IGN]  # ignored during the clean-up
    assert {received: signal.getsignal(received) for received in Stopping.SIGNALS} == before
