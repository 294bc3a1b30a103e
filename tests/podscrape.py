"""Scraping pods as in a real cluster: service discovery through the API server
(``kubernetes_sd_configs``, roles pod and node), as a ServiceAccount that may only get, list and
watch pods and nodes, and the relabelling that puts ``namespace``, ``pod`` and ``container`` on every series from the
pod's metadata. No static target list: a replacement pod is found the way a real one is.

Pods opt in as they commonly do, with the annotation ``prometheus.io/scrape: "true"``; the port
scraped is the container port named ``metrics``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes.client import CoreV1Api, RbacAuthorizationV1Api

from tests.realcluster import ControlPlane

SCRAPER_NAMESPACE = "monitoring"
SCRAPER = "victoria-metrics"
SCRAPE_ANNOTATION = {"prometheus.io/scrape": "true"}


def scraper_token(plane: ControlPlane, path: Path) -> Path:
    """A token of the scraper's own ServiceAccount, allowed to get, list and watch pods and nodes
    (what vmagent's and Prometheus' charts grant), written to ``path``."""
    core, rbac = CoreV1Api(plane.admin), RbacAuthorizationV1Api(plane.admin)
    if not getattr(plane, "_scraper_ready", False):
        core.create_namespace({"metadata": {"name": SCRAPER_NAMESPACE}})
        core.create_namespaced_service_account(SCRAPER_NAMESPACE, {"metadata": {"name": SCRAPER}})
        rbac.create_cluster_role({"metadata": {"name": SCRAPER}, "rules": [
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]}]})
        rbac.create_cluster_role_binding({
            "metadata": {"name": SCRAPER},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": SCRAPER},
            "subjects": [{"kind": "ServiceAccount", "name": SCRAPER, "namespace": SCRAPER_NAMESPACE}]})
        plane._scraper_ready = True  # type: ignore[attr-defined]
    token = core.create_namespaced_service_account_token(SCRAPER, SCRAPER_NAMESPACE, {"spec": {"expirationSeconds": 24 * 3600}})
    path.write_text(token.status.token)
    return path


def pod_scrape_config(plane: ControlPlane, namespaces: list[str], token_file: Path, interval: str = "1s",
                      cadvisor: bool = True) -> dict[str, Any]:
    """The scrape configuration: every annotated pod's ``metrics`` port in ``namespaces``, and
    (``cadvisor``) each node's kubelet cAdvisor endpoint (found through the API server too: the
    node's address and its kubelet port), whose series carry their own namespace, pod and
    container labels."""
    discovery = {"api_server": plane.server, "bearer_token_file": str(token_file), "tls_config": {"ca_file": plane.info["ca_file"]}}
    cadvisor = {"job_name": "kubernetes-cadvisor", "scrape_interval": interval, "scrape_timeout": interval,
                "metrics_path": "/metrics/cadvisor", "honor_labels": True,
                "kubernetes_sd_configs": [{"role": "node", **discovery}]}
    return {"scrape_configs": [*([cadvisor] if cadvisor else []), {
        "job_name": "kubernetes-pods",
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "kubernetes_sd_configs": [{"role": "pod", **discovery, "namespaces": {"names": namespaces}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "regex": "true", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "metrics", "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        ],
    }]}
