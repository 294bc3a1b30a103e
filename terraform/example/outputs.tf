output "function_url" {
  description = "HTTPS URL of the function."
  value       = module.pod_rebalancer.function_url
}

output "alertmanager_receiver" {
  description = "Paste into alertmanager.yml."
  value       = module.pod_rebalancer.alertmanager_receiver
}
