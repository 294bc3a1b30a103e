# Kubernetes RBAC in each target namespace: exactly the verbs the function uses, nothing
# cluster-wide. GKE maps the function's Google identity to the RBAC user named by its e-mail.
# The rules are deploy/helm/pod-rebalancer/files/role-rules.yaml, which the Helm chart renders
# as well; tests/ check them against the API calls the function makes.
locals {
  role_rules = yamldecode(file("${path.module}/../../../deploy/helm/pod-rebalancer/files/role-rules.yaml"))
  namespaces = toset([for t in local.targets : t.namespace])
  # Pods are deleted only by targets configured with action: delete.
  deleting_namespaces = toset([for t in local.targets : t.namespace if try(t.action, "evict") == "delete"])
}

resource "kubernetes_role_v1" "rebalancer" {
  for_each = local.namespaces

  metadata {
    name      = var.name
    namespace = each.key
    labels    = { "app.kubernetes.io/managed-by" = "terraform", "app.kubernetes.io/name" = var.name }
  }

  # The rules come from the one file the Helm chart renders too.
  dynamic "rule" {
    for_each = concat(local.role_rules.always, contains(local.deleting_namespaces, each.key) ? local.role_rules.deleting : [])
    content {
      api_groups = rule.value.apiGroups
      resources  = rule.value.resources
      verbs      = rule.value.verbs
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
