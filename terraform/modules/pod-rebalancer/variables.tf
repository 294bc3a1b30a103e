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

variable "config_file" {
  description = "The function's YAML configuration (every field: docs/configuration.md), shipped as is. Make the alert rules from the same file: python -m rebalancer rules FILE. metrics_url and dry_run below override it."
  type        = string

  validation {
    condition     = length(try(yamldecode(file(var.config_file)).targets, [])) > 0
    error_message = "The configuration file must hold at least one target."
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
  description = "Optional Serverless VPC Access connector (or use direct_vpc, not both) (projects/P/locations/R/connectors/C) for a private cluster endpoint or metrics backend."
  type        = string
  default     = null
}

variable "direct_vpc" {
  description = "Direct VPC egress instead of a connector: the subnet the instances join (needed for a private metrics_url or cluster endpoint). egress: VPC_EGRESS_PRIVATE_RANGES_ONLY or VPC_EGRESS_ALL_TRAFFIC."
  type = object({
    network    = string
    subnetwork = string
    tags       = optional(list(string), [])
    egress     = optional(string, "VPC_EGRESS_PRIVATE_RANGES_ONLY")
  })
  default = null

  validation {
    condition     = var.direct_vpc == null || contains(["VPC_EGRESS_PRIVATE_RANGES_ONLY", "VPC_EGRESS_ALL_TRAFFIC"], try(var.direct_vpc.egress, ""))
    error_message = "direct_vpc.egress: VPC_EGRESS_PRIVATE_RANGES_ONLY or VPC_EGRESS_ALL_TRAFFIC."
  }
}

variable "invoker" {
  description = "Who may invoke the function: allUsers (the default: Alertmanager cannot mint Google ID tokens, and the bearer token is the gate), or one member such as serviceAccount:alertmanager@P.iam.gserviceaccount.com where domain-restricted sharing forbids allUsers."
  type        = string
  default     = "allUsers"
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

variable "kafka_password_env" {
  description = "Kafka SASL passwords as environment variables, for targets measured at the brokers (signals.lag.kafka.sasl.password_env): variable name => Secret Manager secret id in var.project. The function's identity gets read access to each; the password never enters the configuration file."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.kafka_password_env) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", name)) && !startswith(name, "REBALANCER_")])
    error_message = "kafka_password_env: keys are environment variable names, not REBALANCER_* (those are the function's own settings)."
  }
}

variable "kafka_password_files" {
  description = "Kafka SASL passwords as files, for password_file: a directory to mount (e.g. /var/secrets/kafka) => Secret Manager secret id in var.project; the latest version appears there as the file 'password', which the function re-reads when it changes, so rotating the secret needs no redeploy."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for path in keys(var.kafka_password_files) : startswith(path, "/") && !contains(["/", "/workspace"], trimsuffix(path, "/"))])
    error_message = "kafka_password_files: keys are absolute directories other than / and /workspace (the function's source)."
  }
}
