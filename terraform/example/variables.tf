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

variable "direct_vpc" {
  description = "Direct VPC egress (network, subnetwork): for a metrics_url or cluster endpoint only reachable inside the VPC."
  type = object({
    network    = string
    subnetwork = string
    tags       = optional(list(string), [])
    egress     = optional(string, "VPC_EGRESS_PRIVATE_RANGES_ONLY")
  })
  default = null
}

variable "invoker" {
  description = "allUsers (the bearer token is the gate), or one member where domain-restricted sharing forbids allUsers."
  type        = string
  default     = "allUsers"
}

variable "kafka_password_env" {
  description = "SASL passwords for lag measured at the brokers: environment variable (password_env) => Secret Manager secret id."
  type        = map(string)
  default     = {}
}

variable "kafka_password_files" {
  description = "SASL passwords as files: directory to mount (password_file is DIR/password) => Secret Manager secret id."
  type        = map(string)
  default     = {}
}
