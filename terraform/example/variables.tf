variable "project" {
  description = "Google Cloud project of the function and the cluster."
  type        = string
}

variable "region" {
  description = "Region of the function."
  type        = string
}

variable "cluster_name" {
  description = "Name of the GKE cluster."
  type        = string
}

variable "cluster_location" {
  description = "Region or zone of the GKE cluster."
  type        = string
}

variable "metrics_url" {
  description = "VictoriaMetrics or Prometheus query URL reachable from the function."
  type        = string
}

variable "dry_run" {
  description = "Start in dry-run; set false after a burn-in."
  type        = bool
  default     = true
}

variable "auth_token" {
  description = "The bearer token Alertmanager presents (openssl rand -hex 32)."
  type        = string
  sensitive   = true
}

variable "vpc_connector" {
  description = "Optional Serverless VPC Access connector for a private cluster endpoint."
  type        = string
  default     = null
}
