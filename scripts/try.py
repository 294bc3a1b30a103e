"""`make try`: the function on http://127.0.0.1:8080, against a local cluster and VictoriaMetrics,
so that every curl example in the README works as written.

It starts the tests' real control plane with posthog/ingestion-consumer and
posthog/session-recordings (six pods each), loads twenty minutes of skewed CPU counters into a
real VictoriaMetrics, and serves the function with the example configuration
(examples/rebalancer.yaml, dry-run) and the token `local-try-token`. The lag is real: a Kafka
broker, topic `events` (12 partitions), and ingestion-consumer's pods are consumers of group
`ingestion`, one of them slow, scraped by VictoriaMetrics through the API server, so the
README's lag example shows the group's real partitions. VictoriaMetrics
listens on its usual http://127.0.0.1:8428, for the README's backtest example. It runs until
Ctrl-C (or TRY_FOR seconds); TRY_PORT and TRY_VM_PORT change the ports. Ctrl-C, SIGTERM or
SIGHUP (a closed terminal), to it or to its process group, once or twice, stop everything it
started; a port already taken is said in one line before anything starts.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.kafkabroker import KafkaBroker, consumer_pod_template  # noqa: E402
from tests.metricsdata import cpu_usage, to_victoriametrics_import  # noqa: E402
from tests.podscrape import SCRAPE_ANNOTATION, pod_scrape_config, scraper_token  # noqa: E402
from tests.realcluster import Cluster, ControlPlane  # noqa: E402
from tests.servers import FunctionProcess, Stopping, VictoriaMetrics, port_in_use, wait_for  # noqa: E402

TOKEN = "local-try-token"
NAMESPACE = "posthog"
RATES = [0.1, 0.5, 0.5, 0.5, 1.9, 1.6]


class Producer:
    """The steady load of `make try`'s group, stopped with everything else."""

    def __init__(self, process) -> None:
        self.process = process

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def real_consumer_group(kube: Cluster, broker: KafkaBroker, workdir: Path, seconds: float, started: Stopping) -> list[str]:
    """ingestion-consumer as six real consumers of `events` (12 partitions) in group `ingestion`;
    one of them slow (a bad node), with a backlog the others drained; a steady load after it."""
    topic, slow_file = broker.create_topic("events", 12), workdir / "slow-pods"
    slow_file.write_text("")
    spec = consumer_pod_template(broker, topic, "ingestion", slow_file=slow_file, container="ingestion-consumer", grace_seconds=5)
    pods = kube.deployment("ingestion-consumer", replicas=len(RATES), pod_annotations=SCRAPE_ANNOTATION, pod_spec=spec)
    members = broker.wait_for_group("ingestion", len(RATES), 12).members
    slow_file.write_text(f"{members[4].client_id} 300\n")
    time.sleep(1.5)  # each consumer reads the file every second
    # 2,000 messages a partition at once: the slow pod keeps its 4,000, a mean above the example's floor.
    broker.produce(topic, dict.fromkeys(range(12), 2000.0), seconds=1).wait(timeout=60)
    started.add(Producer(broker.produce(topic, dict.fromkeys(range(12), 5.0), seconds=seconds)))
    return pods


def ports_taken(ports: dict[str, tuple[int, str]]) -> list[str]:
    """One line for each port already taken: which, and what to do."""
    return [f"make try: port {port} ({what}) is already in use on 127.0.0.1: an earlier `make try` still running, or "
            f"another server. Stop it, or choose another port: {variable}=<port> make try"
            for variable, (port, what) in ports.items() if port_in_use(port)]


def main() -> int:
    port = int(os.environ.get("TRY_PORT", "8080"))
    vm_port = int(os.environ.get("TRY_VM_PORT", "8428"))
    run_for = float(os.environ.get("TRY_FOR", "0")) or None
    taken = ports_taken({"TRY_PORT": (port, "the function"), "TRY_VM_PORT": (vm_port, "VictoriaMetrics")})
    if taken:
        print("\n".join(taken), file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="rebalancer-try-"))
    with Stopping() as started:
        # The broker first: it is stopped last, after the consumers the control plane runs have left their group.
        broker = started.add(KafkaBroker(workdir / "kafka")).start()
        plane = started.add(ControlPlane(workdir / "kubernetes")).start()
        kube = Cluster(plane, NAMESPACE)
        kube.core.create_namespace({"metadata": {"name": NAMESPACE}})
        kube.grant()
        scraping = pod_scrape_config(plane, [NAMESPACE], scraper_token(plane, workdir / "scraper-token"), interval="2s",
                                     cadvisor=False)  # the CPU here is the imported twenty minutes
        vm = started.add(VictoriaMetrics(workdir / "vm", port=vm_port, scrape_config=scraping)).start()
        consumers = real_consumer_group(kube, broker, workdir, run_for or 3600, started)
        pods = {"ingestion-consumer": consumers,
                "session-recordings": kube.deployment("session-recordings", replicas=len(RATES), grace_seconds=5)}
        now = (int(time.time()) // 15) * 15
        series = []
        for deployment, names in pods.items():
            series += cpu_usage(NAMESPACE, deployment, dict(zip(names, RATES, strict=True)), now - 1200, now + 3600)
        vm.import_prometheus(to_victoriametrics_import(series))
        # The README's lag example right away: every consumer's lag scraped and searchable.
        lag = 'count(count by (pod) (kafka_consumer_fetch_manager_records_lag{namespace="posthog"}))'

        def scraped() -> bool:
            vm.flush()
            found = vm.query(lag, time.time())["data"]["result"]
            return bool(found) and found[0]["value"][1] == str(len(RATES))

        wait_for(scraped, "VictoriaMetrics to scrape every consumer's lag", timeout=60)

        config = yaml.safe_load((REPO / "examples" / "rebalancer.yaml").read_text())
        for target in config["targets"]:
            target["min_pod_age"] = "0s"  # the pods are seconds old
        config_path = workdir / "rebalancer.yaml"
        config_path.write_text(yaml.safe_dump({**config, "metrics_url": vm.url}))
        env = {"REBALANCER_CONFIG": str(config_path), "REBALANCER_AUTH_TOKEN": TOKEN,
               "KUBECONFIG": str(kube.write_kubeconfig(workdir / "kubeconfig")), "REBALANCER_LOG_FORMAT": "text"}
        function = started.add(FunctionProcess(workdir / "function", env, port=port)).start()
        print(f"\npod-rebalancer is listening on {function.url} (dry-run), with the example configuration;\n"
              f"VictoriaMetrics on {vm.url}, holding twenty minutes of skewed CPU, and scraping the lag of a real\n"
              f"consumer group: Kafka broker on {broker.bootstrap}, topic events, group ingestion.\n"
              f"In another shell, from the repository's root:\n\n  URL={function.url}; TOKEN={TOKEN}\n\n"
              "then the README's curl examples (HTTP API). The function's log: "
              f"{function.log_path}\nCtrl-C stops everything.", flush=True)
        deadline = time.monotonic() + run_for if run_for else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: everything was stopped on the way out
        sys.exit(0)
    except BaseException as e:  # a server that could not start (the helpers' pytest.fail is a BaseException)
        if isinstance(e, SystemExit):
            raise
        print(f"make try failed: {e}", file=sys.stderr)
        sys.exit(1)
