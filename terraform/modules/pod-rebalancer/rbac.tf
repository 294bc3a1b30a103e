# Kubernetes RBAC in each target namespace: exactly the verbs the function uses, nothing
# cluster-wide. GKE maps the function's Google identity to the RBAC user named by its e-mail.
# tests/terraform checks these rules against the API calls the function makes.
locals {
  namespaces = toset([for t in var.targets : t.namespace])
  # Pods are deleted only by targets configured with action: delete.
  deleting_namespaces = toset([for t in var.targets : t.namespace if t.action == "delete"])
}

resource "kubernetes_role_v1" "rebalancer" {
  for_each = local.namespaces

  metadata {
    name      = var.name
    namespace = each.key
    labels    = { "app.kubernetes.io/managed-by" = "terraform", "app.kubernetes.io/name" = var.name }
  }

  rule {
    api_groups = ["apps"]
    resources  = ["deployments"]
    verbs      = ["get"]
  }
  rule {
    api_groups = ["apps"]
    resources  = ["replicasets"]
    verbs      = ["list"]
  }
  rule {
    api_groups = ["autoscaling"]
    resources  = ["horizontalpodautoscalers"]
    verbs      = ["list"]
  }
  rule {
    api_groups = [""]
    resources  = ["pods"]
    verbs      = ["list"]
  }
  rule {
    api_groups = [""]
    resources  = ["pods/eviction"]
    verbs      = ["create"]
  }
  rule {
    api_groups = [""]
    resources  = ["configmaps"]
    verbs      = ["get", "create", "patch"]
  }
  rule {
    api_groups = [""]
    resources  = ["events"]
    verbs      = ["create"]
  }
  dynamic "rule" {
    for_each = contains(local.deleting_namespaces, each.key) ? ["delete"] : []
    content {
      api_groups = [""]
      resources  = ["pods"]
      verbs      = ["delete"]
    }
  }
}

resource "kubernetes_role_binding_v1" "rebalancer" {
  for_each = local.namespaces

  metadata {
    name      = var.name
    namespace = each.key
    labels    = { "app.kubernetes.io/managed-by" = "terraform", "app.kubernetes.io/name" = var.name }
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.rebalancer[each.key].metadata[0].name
  }

  subject {
    api_group = "rbac.authorization.k8s.io"
    kind      = "User"
    name      = google_service_account.rebalancer.email
  }
}
