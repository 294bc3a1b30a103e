"""`make bench-sources` (and `make bench`): lag at the brokers beside lag through VictoriaMetrics.

One consumer group per scenario, on the real control plane: its pods are real consumers
(tests/kafka/consumer.py, librdkafka, client.id = the pod's name) of a real KRaft broker, a
kafka_exporter pod (tests/kafka/exporter.py) beside them, and VictoriaMetrics scraping both every
second through the API server's pod discovery, as in a cluster.

Scenarios: ``balanced`` (8 partitions, 4 consumers, 20 messages/s each), ``slow consumer`` (the
same, one consumer taking 150 ms a message), ``hot partition`` (6 partitions, 3 consumers at 5 ms a
message, one partition at 300/s).

Each round reads the same group three ways, one right after the other:
- at the brokers, with the function's own reader (``adapters.kafka.GroupReader``): each
  partition's high watermark minus the committed offset;
- kafka_exporter's ``kafka_consumergroup_lag`` in VictoriaMetrics (the same definition, scraped);
- the consumers' own ``kafka_consumer_fetch_manager_records_lag`` in VictoriaMetrics (the high
  watermark minus the offset processed, from librdkafka's statistics), what ``partitions`` reads.
A difference is judged against each partition's inflow (its high watermark's rate over the
round): one production scrape interval (30 s) of inflow is the most a scraped reading can lag
behind the brokers. Then three function processes, dry-run, are invoked interleaved on the same
target: one measuring through VictoriaMetrics (the example's ``partitions``), one at the brokers
over plain TCP, one at the brokers over SASL_SSL with SCRAM-SHA-512. Their Server-Timing gives
the time in the Kafka adapter and in the metrics adapter, and each answer's decision is kept.

It prints the tables and, with --write, writes them into docs/benchmarks.md. Every server, pod
and process stops on Ctrl-C, SIGTERM or SIGHUP (tests/servers.Stopping; a second signal during
the clean-up is ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import publish  # noqa: E402
from bench.run import percentile, server_timing  # noqa: E402
from rebalancer.adapters.kafka import Connection, GroupReader  # noqa: E402
from tests.kafkabroker import KafkaBroker  # noqa: E402
from tests.kafkascene import Scene, lag_target  # noqa: E402
from tests.podscrape import pod_scrape_config, scraper_token  # noqa: E402
from tests.realcluster import ControlPlane, new_namespace  # noqa: E402
from tests.servers import FunctionProcess, Stopping, VictoriaMetrics, wait_for  # noqa: E402

TOKEN = "bench-sources-token"
PRODUCTION_SCRAPE_SECONDS = 30.0
FUNCTIONS = ("metrics", "kafka", "kafka, SASL_SSL + SCRAM")


@dataclass(frozen=True)
class Scenario:
    name: str
    partitions: int
    replicas: int
    rates: dict[int, float]
    slow_ms: int = 0
    process_ms: float = 0


SCENARIOS = (
    Scenario("balanced", 8, 4, dict.fromkeys(range(8), 20.0)),
    Scenario("slow consumer", 8, 4, dict.fromkeys(range(8), 20.0), slow_ms=150),
    Scenario("hot partition", 6, 3, {p: 300.0 if p == 0 else 20.0 for p in range(6)}, process_ms=5),
)


@dataclass
class Result:
    scenario: str
    rounds: int = 0
    # per round and partition: |brokers - exporter| and |brokers - consumers'|, in messages and in
    # seconds of that partition's inflow
    exporter_apart: list[float] = field(default_factory=list)
    consumers_apart: list[float] = field(default_factory=list)
    exporter_seconds: list[float] = field(default_factory=list)
    consumers_seconds: list[float] = field(default_factory=list)
    largest_lag: list[float] = field(default_factory=list)
    source_ms: dict[str, list[float]] = field(default_factory=dict)  # function -> its adapter's time
    total_ms: dict[str, list[float]] = field(default_factory=dict)
    decisions: dict[str, list[str]] = field(default_factory=dict)  # function -> each answer's "code (hot pod)"


def vm_partitions(vm: VictoriaMetrics, query: str) -> dict[int, float]:
    return {int(r["metric"]["partition"]): float(r["value"][1]) for r in vm.query(query, time.time())["data"]["result"]}


def exporter_query(scene: Scene) -> str:
    return f'kafka_consumergroup_lag{{consumergroup="{scene.group}"}}'


def one_round(scene: Scene, reader: GroupReader, vm: VictoriaMetrics, result: Result, before: dict[int, int],
              since: float) -> None:
    """The group read at the brokers and through VictoriaMetrics at (nearly) the same moment."""
    vm.flush()  # what was scraped is searchable: the gap measured is the scrape's, not VictoriaMetrics' buffering
    snapshot = reader.read_group()
    exporter = vm_partitions(vm, exporter_query(scene))
    consumers = vm_partitions(vm, 'sum by (partition) (kafka_consumer_fetch_manager_records_lag'
                                  f'{{namespace="{scene.kube.namespace}"}})')
    now = time.monotonic()
    high = {p: o.high for (_, p), o in snapshot.offsets.items()}
    at_brokers = {p: o.lag for (_, p), o in snapshot.offsets.items()}
    for partition, lag in at_brokers.items():
        inflow = max((high[partition] - before[partition]) / (now - since), 1e-9)
        for source, apart, seconds in ((exporter, result.exporter_apart, result.exporter_seconds),
                                       (consumers, result.consumers_apart, result.consumers_seconds)):
            if partition in source:
                apart.append(abs(lag - source[partition]))
                seconds.append(abs(lag - source[partition]) / inflow)
    result.largest_lag.append(max(at_brokers.values()))
    result.rounds += 1


def invoke(function: FunctionProcess, name: str, result: Result) -> None:
    response = requests.post(f"{function.url}/rebalance", json={"target": "consumer", "signal": "lag"},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    if response.status_code != 200:
        raise SystemExit(f"{name}: HTTP {response.status_code}: {response.text[:400]}")
    timing = server_timing(response.headers.get("Server-Timing", ""))
    result.source_ms.setdefault(name, []).append(timing.get("kafka" if name.startswith("kafka") else "metrics", 0.0))
    result.total_ms.setdefault(name, []).append(timing["total"])
    (decision,) = response.json()["decisions"]
    # The hot pod, where the decision names one that matters: the one it would move, or the hot partition's owner.
    hot = next((s["pod"] for s in decision["selected"] if s["role"] == "hot"), None) or \
        ((decision.get("partitions") or {}).get("hot_partition") or {}).get("pod")
    result.decisions.setdefault(name, []).append(f"{decision.get('code')}" + (f" ({hot})" if hot else ""))


def functions_for(scene: Scene, broker: KafkaBroker, vm: VictoriaMetrics, workdir: Path, plane: ControlPlane,
                  stopping: Stopping) -> dict[str, FunctionProcess]:
    secret = workdir / "kafka-password"
    secret.write_text(broker.password)
    kafka = {"bootstrap_servers": broker.bootstrap, "group": scene.group}
    secure = {"bootstrap_servers": f"127.0.0.1:{broker.tls_port}", "group": scene.group,
              "tls": {"ca_file": str(broker.ca_file)},
              "sasl": {"mechanism": "SCRAM-SHA-512", "username": broker.user, "password_file": str(secret)}}
    configs = {"metrics": {}, "kafka": {"source": "kafka", "kafka": kafka},
               "kafka, SASL_SSL + SCRAM": {"source": "kafka", "kafka": secure}}
    started = {}
    for name, source in configs.items():
        target = lag_target(scene.kube.namespace)
        target["signals"]["lag"].update(source)
        folder = workdir / f"fn-{len(started)}"
        folder.mkdir()
        config = folder / "rebalancer.yaml"
        config.write_text(yaml.safe_dump({"metrics_url": vm.url, "dry_run": True, "log_format": "json", "targets": [target]}))
        env = {"REBALANCER_CONFIG": str(config), "REBALANCER_AUTH_TOKEN": TOKEN,
               "KUBECONFIG": str(plane.write_function_kubeconfig(folder / "kubeconfig"))}
        started[name] = stopping.add(FunctionProcess(folder, env, name=f"function-{len(started)}")).start(timeout=60)
    return started


def measure(scenario: Scenario, broker: KafkaBroker, plane: ControlPlane, workdir: Path, rounds: int,
            stopping: Stopping) -> Result:
    kube = new_namespace(plane, "sources")
    kube.grant()
    token = scraper_token(plane, workdir / "scraper-token")
    vm = stopping.add(VictoriaMetrics(workdir / "vm", scrape_config=pod_scrape_config(plane, [kube.namespace], token))).start()
    scene = Scene(broker, kube, workdir, scenario.partitions, scenario.replicas, exporter=True, process_ms=scenario.process_ms)
    try:
        if scenario.slow_ms:
            scene.slow(scene.pods[0], scenario.slow_ms)
        scene.produce(scenario.rates, seconds=60 + 3 * rounds)
        reader = GroupReader(Connection(broker.bootstrap, 5.0), scene.group)
        wait_for(lambda: len(vm_partitions(vm, exporter_query(scene))) == scenario.partitions,
                 "kafka_exporter's series of every partition in VictoriaMetrics", timeout=60)
        time.sleep(15)  # the lag builds up
        functions = functions_for(scene, broker, vm, workdir, plane, stopping)
        result = Result(scenario.name)
        for name, function in functions.items():
            invoke(function, name, Result(""))  # warm-up: connections, and the Kafka client
        for _ in range(rounds):
            since, before = time.monotonic(), {p: o.high for (_, p), o in reader.read_group().offsets.items()}
            time.sleep(1)
            one_round(scene, reader, vm, result, before, since)
            for name, function in functions.items():
                invoke(function, name, result)
        for function in functions.values():
            function.stop()
        return result
    finally:
        scene.stop()
        vm.stop()


def render(results: list[Result], started: str) -> str:
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} / {percentile(values, 0.9):.1f}"

    lines = [
        f"Measured {started} on this machine (`make bench-sources`), {results[0].rounds} rounds per scenario.",
        "",
        "| scenario | largest partition lag (median) | brokers vs kafka_exporter: messages apart, median / max | "
        "as seconds of inflow, max | brokers vs consumers' records-lag: messages apart, median / max | "
        "as seconds of inflow, max | within one 30 s scrape |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in results:
        within = max(r.exporter_seconds + r.consumers_seconds) <= PRODUCTION_SCRAPE_SECONDS
        lines.append(
            f"| {r.scenario} | {statistics.median(r.largest_lag):,.0f} | {statistics.median(r.exporter_apart):,.0f} / "
            f"{max(r.exporter_apart):,.0f} | {max(r.exporter_seconds):.1f} s | {statistics.median(r.consumers_apart):,.0f} / "
            f"{max(r.consumers_apart):,.0f} | {max(r.consumers_seconds):.1f} s | {'yes' if within else 'no'} |")
    lines += ["", "Per invocation, the same target three ways, interleaved (milliseconds, median / 90th percentile): "
              "the time in the adapter that measured the lag, and the whole answer (Server-Timing `total`).", "",
              "| scenario | " + " | ".join(f"{n}: lag read" for n in FUNCTIONS) + " | "
              + " | ".join(f"{n}: total" for n in FUNCTIONS) + " | decisions (code, hot pod) |",
              "|---|" + "---:|" * (2 * len(FUNCTIONS)) + "---|"]
    for r in results:
        decided = "; ".join(f"{n}: " + ", ".join(f"{said} ×{count}" for said, count in sorted(Counter(r.decisions[n]).items()))
                            for n in FUNCTIONS)
        lines.append(f"| {r.scenario} | " + " | ".join(ms(r.source_ms[n]) for n in FUNCTIONS) + " | "
                     + " | ".join(ms(r.total_ms[n]) for n in FUNCTIONS) + f" | {decided} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--scenarios", nargs="+", choices=[s.name for s in SCENARIOS], default=[s.name for s in SCENARIOS])
    parser.add_argument("--write", action="store_true", help="write the tables into docs/benchmarks.md")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d")
    results = []
    with tempfile.TemporaryDirectory(prefix="rebalancer-sources-") as tmp, Stopping() as stopping:
        workdir = Path(tmp)
        plane = stopping.add(ControlPlane(workdir / "kubernetes")).start()
        broker = stopping.add(KafkaBroker(workdir / "kafka")).start()
        for scenario in SCENARIOS:
            if scenario.name in args.scenarios:
                print(f"{scenario.name} ...", flush=True)
                folder = workdir / scenario.name.replace(" ", "-")
                folder.mkdir()
                results.append(measure(scenario, broker, plane, folder, args.rounds, stopping))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    publish(render(results, started), "sources", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
