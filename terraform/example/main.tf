# A root configuration: deploy pod-rebalancer next to an existing GKE cluster.
#   terraform init && terraform plan -var-file=prod.tfvars && terraform apply -var-file=prod.tfvars

provider "google" {
  project = var.project
  region  = var.region
}

data "google_client_config" "current" {}

data "google_container_cluster" "target" {
  project  = var.project
  name     = var.cluster_name
  location = var.cluster_location
}

# Terraform itself needs to reach the cluster to create the Roles and RoleBindings.
provider "kubernetes" {
  host                   = "https://${data.google_container_cluster.target.endpoint}"
  token                  = data.google_client_config.current.access_token
  cluster_ca_certificate = base64decode(data.google_container_cluster.target.master_auth[0].cluster_ca_certificate)
}

module "pod_rebalancer" {
  source = "../modules/pod-rebalancer"

  project = var.project
  region  = var.region
  cluster = {
    endpoint       = data.google_container_cluster.target.endpoint
    ca_certificate = data.google_container_cluster.target.master_auth[0].cluster_ca_certificate
  }
  metrics_url   = var.metrics_url
  dry_run       = var.dry_run
  auth_token    = var.auth_token
  vpc_connector = var.vpc_connector

  direct_vpc = var.direct_vpc
  invoker    = var.invoker

  # Lag measured at the brokers with SASL: the passwords' Secret Manager secrets.
  kafka_password_env   = var.kafka_password_env
  kafka_password_files = var.kafka_password_files

  # The same file `make rules` makes alertmanager/rules/ from: the deployed configuration and the
  # alert rules cannot disagree.
  config_file = "${path.module}/../../examples/rebalancer.yaml"
}
