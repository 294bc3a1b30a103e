output "function_url" {
  description = "HTTPS URL of the function."
  value       = google_cloudfunctions2_function.rebalancer.url
}

output "service_account_email" {
  description = "The function's identity (the Kubernetes RBAC user)."
  value       = google_service_account.rebalancer.email
}

output "token_secret" {
  description = "Secret Manager secret holding the bearer token; mount it into Alertmanager."
  value       = google_secret_manager_secret.token.id
}

output "alertmanager_receiver" {
  description = "A receiver to paste into alertmanager.yml (see alertmanager/alertmanager.yml for the route)."
  value = yamlencode({
    receivers = [{
      name = var.name
      webhook_configs = [{
        url           = "${google_cloudfunctions2_function.rebalancer.url}/alertmanager"
        send_resolved = false
        max_alerts    = 20
        http_config = {
          authorization = {
            type             = "Bearer"
            credentials_file = "/etc/alertmanager/secrets/${var.name}/token"
          }
        }
      }]
    }]
  })
}
