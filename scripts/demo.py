"""`make demo`: the whole chain on one machine, told as a story, in under a minute once built.

First CPU: VictoriaMetrics gets generated consumer metrics with one hot and one cold pod; vmalert
evaluates the rules generated from the configuration; Alertmanager, with the shipped config and a
bearer token file, calls the function (a functions-framework process); the function re-verifies,
evicts and takes the cooldown; a repeat is refused. Then lag, on a real consumer group: a Kafka
broker, a Deployment whose pods are real consumers, one of them slow; VictoriaMetrics scrapes
their per-partition lag through the API server; the alert fires, the function finds the slow
consumer, evicts it, the group rebalances and the lag drains. Everything it starts, it stops.

Kubernetes is a real control plane started for the demo (kube-apiserver, etcd, the controllers
and a node simulator, built from k8s.io/kubernetes by `make`): the evicted pods terminate after
their grace period and their ReplicaSet's replacements become Ready before the demo ends. With
DEMO_CLUSTER=real and KUBECONFIG set, it uses that cluster instead: the Deployment
DEMO_NAMESPACE/DEMO_DEPLOYMENT (default posthog/ingestion-consumer) must exist there, and the
function runs dry-run only.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.chain import Chain  # noqa: E402
from tests.kafkabroker import KafkaBroker, consumer_pod_template  # noqa: E402
from tests.metricsdata import cpu_usage, to_victoriametrics_import  # noqa: E402
from tests.podscrape import SCRAPE_ANNOTATION, pod_scrape_config, scraper_token  # noqa: E402
from tests.realcluster import Cluster, ControlPlane  # noqa: E402
from tests.samples import sample  # noqa: E402
from tests.servers import Stopping, wait_for  # noqa: E402

TOKEN = "demo-token-not-a-secret"
# Two hot pods: after the first action the second keeps the skew, so a repeat is refused by the cooldown.
RATES = [0.42, 0.12, 0.45, 0.40, 1.85, 0.38, 1.70, 0.41]
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say(f"\n{BOLD}== {title}{RESET}")


def real_cluster_pods(namespace: str, deployment: str) -> list[str]:
    import kubernetes

    client = kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    apps, core = kubernetes.client.AppsV1Api(client), kubernetes.client.CoreV1Api(client)
    found = apps.read_namespaced_deployment(deployment, namespace)
    selector = ",".join(f"{k}={v}" for k, v in (found.spec.selector.match_labels or {}).items())
    pods = sorted(p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items)
    if len(pods) < 3:
        raise SystemExit(f"{namespace}/{deployment} has {len(pods)} pods; the demo needs at least 3")
    return pods


LAG_DEPLOYMENT = "events-consumer"


def example_lag_signal() -> dict:
    import yaml

    config = yaml.safe_load((REPO / "examples" / "rebalancer.yaml").read_text())
    return next(t for t in config["targets"] if t["name"] == "ingestion-consumer")["signals"]["lag"]


def lag_story(kube: Cluster, chain: Chain, broker: KafkaBroker, workdir: Path) -> None:
    """Steps 8 to 10: a slow consumer in a real group, found, moved, and its lag drained."""
    step("8. Lag, on a real consumer group: a Kafka broker, and a Deployment whose pods are consumers")
    topic, group, slow_file = broker.create_topic("events", 8), "events", workdir / "slow-pods"
    slow_file.write_text("")
    kube.deployment(LAG_DEPLOYMENT, replicas=4, pod_annotations=SCRAPE_ANNOTATION,
                    pod_spec=consumer_pod_template(broker, topic, group, slow_file=slow_file, container=LAG_DEPLOYMENT,
                                                   grace_seconds=5))
    members = broker.wait_for_group(group, 4, 8).members
    say(f"   Kafka broker {broker.bootstrap} (KRaft, ready in {broker.start_to_ready:.1f} s), topic events, 8 partitions")
    for member in members:
        say(f"   {member.client_id}  a consumer in group events, partitions {', '.join(map(str, member.partitions))}")
    say("   VictoriaMetrics finds the pods through the API server and scrapes each one's per-partition records-lag")

    step("9. One consumer slows down (a bad node: 150 ms a message), and a burst of 3,200 messages arrives")
    slow = members[0].client_id
    slow_file.write_text(f"{slow} 150\n")
    time.sleep(1.5)  # each consumer reads the file every second
    broker.produce(topic, dict.fromkeys(range(8), 400.0), seconds=1).wait(timeout=30)
    steady = broker.produce(topic, dict.fromkeys(range(8), 5.0), seconds=60)
    try:
        firing = wait_for(lambda: [a for a in chain.alerts("ConsumerLagSkew") if a["state"] == "firing"],
                          "ConsumerLagSkew to fire", timeout=60)
        say(f"   ConsumerLagSkew firing, value {float(firing[0]['value']):.2f} > 0.5: the others drained their share, "
            f"{slow} did not")
        decision = wait_for(lambda: next((d for d in chain.function_log() if d.get("event") == "decision"
                                          and d.get("target") == LAG_DEPLOYMENT and d.get("outcome") == "acted"), None),
                            "the function to act on the lag", timeout=30)
        verified = decision["verified"]
        say(f"   the function measured now: lag CV {verified['value']:.2f} over {verified['pods']} pods, "
            f"partition by partition ({decision['partitions']['count']} partitions)")
        why = next((part for part in decision["reason"].split("; ") if "fall behind" in part or "inflow" in part), "")
        say(f"   {why}")
        say(f"   evicted {decision['selected'][0]['pod']} ({decision['selected'][0]['value']:,.0f} messages behind)")

        step("10. SIGTERM: the consumer leaves the group, its partitions move, a replacement joins and drains")
        rejoined = wait_for(lambda: (found := broker.wait_for_group(group, 4, 8)) and slow not in
                            [m.client_id for m in found.members] and found, "the group to rebalance", timeout=60)
        for member in rejoined.members:
            say(f"   {member.client_id}  partitions {', '.join(map(str, member.partitions))}")
        wait_for(lambda: max(broker.lag(group, topic).values()) < 50, "the lag to drain", timeout=60)
        say(f"   lag at the brokers now: {sum(broker.lag(group, topic).values())} messages in all")
    finally:
        steady.kill()
        steady.wait(timeout=10)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rebalancer-demo-"))
    try:
        with Stopping() as started:
            return story(started, workdir)
    finally:
        say(f"{DIM}stopped every process it started; logs are in {workdir}{RESET}")


def story(started: Stopping, workdir: Path) -> int:
    real = os.environ.get("DEMO_CLUSTER") == "real"
    namespace = os.environ.get("DEMO_NAMESPACE", "posthog") if real else "posthog"
    deployment = os.environ.get("DEMO_DEPLOYMENT", "ingestion-consumer") if real else "ingestion-consumer"
    plane: ControlPlane | None = None
    kube: Cluster | None = None
    broker: KafkaBroker | None = None
    if real:
        if not os.environ.get("KUBECONFIG"):
            raise SystemExit("DEMO_CLUSTER=real needs KUBECONFIG pointing at the cluster")
        step(f"1. A real cluster ({os.environ['KUBECONFIG']}): {namespace}/{deployment}, dry-run only")
        pods = real_cluster_pods(namespace, deployment)
        kubeconfig = Path(os.environ["KUBECONFIG"])
    else:
        step("1. Kubernetes: a real control plane, and a consumer Deployment on it")
        # The broker (for the lag story) first: stopped last, after the consumers have left their group.
        broker = started.add(KafkaBroker(workdir / "kafka")).start()
        plane = started.add(ControlPlane(workdir / "kubernetes")).start()
        say(f"   kube-apiserver {plane.info['version']} at {plane.server}, ready in {plane.start_to_ready:.1f} s "
            f"(etcd, controllers, a simulated node)")
        kube = Cluster(plane, namespace)
        kube.core.create_namespace({"metadata": {"name": namespace}})
        kube.grant()
        pods = kube.deployment(deployment, replicas=len(RATES), grace_seconds=5)
        kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig")
        say(f"   {namespace}/{deployment}: {len(pods)} Ready pods, created by its ReplicaSet")
        say("   the function acts as ServiceAccount pod-rebalancer/pod-rebalancer, bound to terraform's Role")
        say(f"   {DIM}(DEMO_CLUSTER=real KUBECONFIG=... uses your cluster instead, dry-run only){RESET}")

    rates = dict(zip(pods, (RATES * len(pods))[: len(pods)], strict=True))
    config = {"dry_run": real, "log_format": "json", "targets": [{
        "name": deployment, "namespace": namespace, "deployment": deployment, "container": deployment,
        # The demo's pods are seconds old: min_pod_age (10m by default) would pass over all of them.
        "min_pods": 3, "cooldown": "15m", "min_pod_age": "0s", "signals": {"cpu": {"threshold": 0.3}}}]}
    scraping = None
    if plane is not None:  # the lag story's consumers, found and scraped as in a cluster
        config["targets"].append({"name": LAG_DEPLOYMENT, "namespace": namespace, "deployment": LAG_DEPLOYMENT,
                                  "min_pods": 3, "cooldown": "15m", "min_pod_age": "0s",
                                  "signals": {"lag": {**example_lag_signal(), "floor": 100}}})
        scraping = pod_scrape_config(plane, [namespace], scraper_token(plane, workdir / "scraper-token"))
    chain = started.add(Chain(workdir, config, kubeconfig, TOKEN, scrape_config=scraping))
    began = time.monotonic()
    step("2. The chain: VictoriaMetrics, vmalert (shipped rules), Alertmanager (shipped config), the function")
    chain.start()
    say(f"   function {chain.function.url} ({'dry-run' if real else 'LIVE on the control plane'}), "
        f"Alertmanager {chain.alertmanager_url}, vmalert {chain.vmalert_url}")

    step("3. Twenty minutes of cAdvisor CPU counters, one pod hot and one cold")
    now = (int(time.time()) // 15) * 15
    counters = cpu_usage(namespace, deployment, rates, now - 1200, now, noise=0.05)
    chain.vm.import_prometheus(to_victoriametrics_import(counters))
    for pod, rate in rates.items():
        say(f"   {pod}  {rate:4.2f} cores  {'#' * round(rate * 20)}")

    step("4. vmalert evaluates the rule (CV = stddev/mean of the same per-pod query the function uses)")
    pending = wait_for(lambda: chain.alerts("ConsumerCpuSkew"), "the alert to become pending")
    say(f"   ConsumerCpuSkew pending, value {float(pending[0]['value']):.2f} > 0.3 (the demo's rule waits `for: 3s`)")
    wait_for(lambda: [a for a in chain.alerts("ConsumerCpuSkew") if a["state"] == "firing"], "the alert to fire")
    fired = time.time()
    say("   ConsumerCpuSkew firing -> Alertmanager -> POST /alertmanager with the bearer token from its file")

    step("5. The function re-verifies against VictoriaMetrics and decides")
    decision = wait_for(lambda: next((d for d in chain.function_log() if d.get("event") == "decision"), None),
                        "the function's decision", timeout=30)
    verified = decision["verified"]
    say(f"   measured now: CV {verified['value']:.3f} over {verified['pods']} pods "
        f"(mean {verified['mean']:.3f}, stddev {verified['stddev']:.3f}), threshold {verified['threshold']}")
    for chosen in decision["selected"]:
        say(f"   selected {chosen['pod']}  {chosen['role']:>4}  {chosen['value']:.2f} cores")
    say(f"   projected CV after rebalancing: {decision['projected_cv']:.3f}")
    say(f"   outcome {BOLD}{decision['outcome']}{RESET}: {DIM}{decision['reason'][:220]}{RESET}")

    if kube is not None:
        step("6. The evictions, and the audit trail (the API server's own audit log)")
        evictions = wait_for(lambda: [r for r in kube.requests("create", "pods") if r.code == 201], "evictions", timeout=10)
        say(f"   first eviction {(evictions[0].at - fired) * 1000:.0f} ms after the alert fired")
        for request in kube.requests("create", "pods"):
            say(f"   POST pods/{request.name}/eviction -> {request.code}: terminating, its 5 s grace period runs")
        wait_for(lambda: len(kube.events("Rebalanced")) >= 3, "events", timeout=10)
        for event in kube.events("Rebalanced"):
            say(f"   Event {event['reason']:<10} on {event['involvedObject']['kind']}/{event['involvedObject']['name']}")
        state = kube.annotations("configmaps", "pod-rebalancer-state")
        say(f"   ConfigMap pod-rebalancer-state: {deployment}.pod-rebalancer.io/last-action = "
            f"{state[f'{deployment}.pod-rebalancer.io/last-action']}")
        replacements = sorted(set(kube.wait_for_ready_pods(deployment, len(pods))) - set(pods))
        say(f"   the ReplicaSet replaced them: {', '.join(replacements)} Ready")
        now = (int(time.time()) // 15) * 15
        chain.vm.import_prometheus(to_victoriametrics_import(
            cpu_usage(namespace, deployment, dict.fromkeys(replacements, 0.42), now - 1200, now, noise=0.05)))
        say("   they are scraped like the others (0.42 cores each)")

    step("7. The skew persists (a second hot pod); the same notification comes again")
    again = requests.post(f"{chain.function.url}/alertmanager", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30,
                          json={**sample("alertmanager-0.25-firing-cpu-two-deployments.json"),
                                "alerts": [{"status": "firing",
                                            "labels": {"rebalancer_target": deployment, "rebalancer_signal": "cpu"}}]})
    repeat = next(d for d in again.json()["decisions"] if d["target"] == deployment)
    say(f"   HTTP {again.status_code}, {repeat['outcome']} ({repeat.get('code')}): {repeat['reason'][:140]}")

    if kube is not None and broker is not None:
        lag_story(kube, chain, broker, workdir)

    step("11. The CPU load evens out" if kube is not None else "8. The load evens out")
    chain.vm.reset()
    balanced_end = (int(time.time()) // 15) * 15
    balanced = cpu_usage(namespace, deployment, dict.fromkeys(pods, 0.55), now - 1200, balanced_end)
    chain.vm.import_prometheus(to_victoriametrics_import(balanced))
    wait_for(lambda: not chain.alerts("ConsumerCpuSkew"), "the alert to resolve", timeout=30)
    say("   ConsumerCpuSkew resolved; nothing more happens")
    if kube is not None:
        evicted = [r.name for r in kube.requests("create", "pods")]
        wait_for(lambda: kube.terminating(evicted) == sorted(evicted) and all(kube.get("pods", p) is None for p in evicted),
                 "the evicted pods to finish terminating", timeout=30)
        ready = kube.wait_for_ready_pods(deployment, len(pods))
        say(f"   the evicted pods are gone after their grace period; {len(ready)} Ready pods again")
    step("Done")
    if kube is not None:
        say(f"   {len(kube.requests('create', 'pods'))} evictions, "
            f"{len(kube.writes())} Kubernetes writes by the function in all, "
            f"in {time.monotonic() - began:.0f} s")
    else:
        say(f"   dry-run against the real cluster: no writes; {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: everything was stopped on the way out
        sys.exit(130)
    except BaseException as e:  # pytest.fail from the server helpers is a BaseException
        if isinstance(e, SystemExit):
            raise
        print(f"demo failed: {e}", file=sys.stderr)
        sys.exit(1)
