"""The whole chain on one machine, for the end-to-end tests and `make demo`:

    VictoriaMetrics --(vmalert: the shipped, generated rules)--> Alertmanager (the shipped config)
        --webhook, bearer token file--> the function (a functions-framework process)
        --> Kubernetes API (the real control plane, or any cluster through its kubeconfig)

Only what a test on one machine must change is changed: URLs and the token file path point at
the local processes, and the timers are short (rule ``for``, evaluation interval, group_wait)
so the chain runs in seconds instead of minutes.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import requests
import yaml

from rebalancer.config import Settings
from rebalancer.tools import rules
from tests.servers import FunctionProcess, ServerProcess, VictoriaMetrics, free_port, require_binary

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ALERTMANAGER = REPO / "alertmanager" / "alertmanager.yml"


def alertmanager_config(function_url: str, token_file: Path) -> dict[str, Any]:
    """The shipped Alertmanager config, pointed at the local function, with short timers."""
    config = yaml.safe_load(SHIPPED_ALERTMANAGER.read_text())
    (route,) = config["route"]["routes"]
    route.update(group_wait="1s", group_interval="2s")
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"{function_url}/alertmanager"
            webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return config


class Chain:
    def __init__(self, workdir: Path, config: dict[str, Any], kubeconfig: Path, token: str,
                 rule_for: timedelta = timedelta(seconds=3), scrape_config: dict[str, Any] | None = None) -> None:
        self.workdir, self.config, self.kubeconfig, self.token, self.rule_for = workdir, config, kubeconfig, token, rule_for
        self.started: list[ServerProcess] = []
        # With a scrape configuration, VictoriaMetrics scrapes the pods itself (tests/podscrape.py).
        self.vm = VictoriaMetrics(workdir / "vm", scrape_config=scrape_config)

    def start(self) -> Chain:
        self.started.append(self.vm.start())
        config_path = self.workdir / "rebalancer.yaml"
        config_path.write_text(yaml.safe_dump({**self.config, "metrics_url": self.vm.url}))
        self.function = FunctionProcess(self.workdir / "function", {
            "REBALANCER_CONFIG": str(config_path), "REBALANCER_AUTH_TOKEN": self.token, "KUBECONFIG": str(self.kubeconfig)})
        self.started.append(self.function.start())

        token_file = self.workdir / "token"
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        am_config = self.workdir / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(alertmanager_config(self.function.url, token_file)))
        am_port = free_port()
        self.alertmanager_url = f"http://127.0.0.1:{am_port}"
        self.started.append(ServerProcess("alertmanager", [
            require_binary("prometheus-alertmanager"), f"--config.file={am_config}",
            f"--storage.path={self.workdir / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=", "--log.level=warn",
        ], f"{self.alertmanager_url}/-/ready", self.workdir / "alertmanager").start())

        rules_file = self.workdir / "rules.yml"
        settings = Settings(**{**self.config, "metrics_url": self.vm.url})
        rules_file.write_text(rules.render(settings, self.rule_for, timedelta(seconds=1)))
        vmalert_port = free_port()
        self.vmalert_url = f"http://127.0.0.1:{vmalert_port}"
        self.started.append(ServerProcess("vmalert", [
            require_binary("vmalert"), f"-rule={rules_file}", f"-datasource.url={self.vm.url}",
            f"-notifier.url={self.alertmanager_url}", f"-httpListenAddr=127.0.0.1:{vmalert_port}",
            "-evaluationInterval=1s", "-loggerLevel=ERROR",
        ], f"{self.vmalert_url}/health", self.workdir / "vmalert").start())
        return self

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()

    def __enter__(self) -> Chain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def alerts(self, name: str) -> list[dict[str, Any]]:
        found = requests.get(f"{self.vmalert_url}/api/v1/alerts", timeout=5).json()["data"]["alerts"] or []
        return [a for a in found if a["name"] == name]

    def function_log(self) -> list[dict[str, Any]]:
        """The function's structured log lines (one JSON object per line)."""
        lines = []
        for line in self.function.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines
