variable "project" {
  description = "Google Cloud project that hosts the function."
  type        = string
}

variable "region" {
  description = "Region of the function and of its source bucket."
  type        = string
}

variable "name" {
  description = "Name of the function, its service account, secret and Kubernetes Role."
  type        = string
  default     = "pod-rebalancer"
}

variable "cluster" {
  description = "The GKE cluster the function acts on: its control-plane endpoint and CA certificate (base64 PEM, as google_container_cluster exposes it)."
  type = object({
    endpoint       = string
    ca_certificate = string
  })
}

variable "targets" {
  description = "The Deployments the function may act on; rendered into the function's YAML configuration (see the README's configuration reference)."
  type = list(object({
    name                 = string
    namespace            = string
    deployment           = string
    container            = optional(string)
    action               = optional(string, "evict")
    cooldown             = optional(string, "15m")
    min_pods             = optional(number, 3)
    min_pod_age          = optional(string, "10m")
    window               = optional(string, "5m")
    max_pods_per_action  = optional(number, 2)
    max_actions_per_hour = optional(number, 4)
    signals = map(object({
      threshold = number
      query     = optional(string)
    }))
  }))

  validation {
    condition     = length(var.targets) > 0 && alltrue([for t in var.targets : contains(["evict", "delete"], t.action)])
    error_message = "At least one target, each with action evict or delete."
  }
}

variable "metrics_url" {
  description = "Base URL of the VictoriaMetrics or Prometheus query API, reachable from the function."
  type        = string
}

variable "dry_run" {
  description = "Measure, decide and report, but never evict. Keep true for a burn-in period."
  type        = bool
  default     = true
}

variable "auth_token" {
  description = "Bearer token Alertmanager presents. Stored in Secret Manager; rotate by changing it (see the README)."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.auth_token) >= 32
    error_message = "Use a token of at least 32 characters (openssl rand -hex 32)."
  }
}

variable "max_instances" {
  description = "Upper bound on concurrent function instances."
  type        = number
  default     = 3
}

variable "memory" {
  description = "Memory per instance."
  type        = string
  default     = "512M"
}

variable "timeout_seconds" {
  description = "Request timeout; Alertmanager retries a delivery that times out."
  type        = number
  default     = 60
}

variable "ingress_settings" {
  description = "ALLOW_ALL (Alertmanager outside the VPC; the bearer token is the gate) or ALLOW_INTERNAL_ONLY."
  type        = string
  default     = "ALLOW_ALL"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress_settings)
    error_message = "One of ALLOW_ALL, ALLOW_INTERNAL_ONLY, ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "vpc_connector" {
  description = "Optional Serverless VPC Access connector (projects/P/locations/R/connectors/C) for a private cluster endpoint or metrics backend."
  type        = string
  default     = null
}

variable "vpc_egress" {
  description = "Egress through the connector: PRIVATE_RANGES_ONLY or ALL_TRAFFIC."
  type        = string
  default     = "PRIVATE_RANGES_ONLY"
}

variable "source_dir" {
  description = "Directory holding main.py, rebalancer/ and requirements.txt (the repository root)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels for the Google Cloud resources."
  type        = map(string)
  default     = {}
}
