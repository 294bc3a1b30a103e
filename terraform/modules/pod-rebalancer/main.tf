locals {
  source_dir = coalesce(var.source_dir, "${path.module}/../../..")
  labels     = merge({ app = var.name }, var.labels)

  # The function's configuration file, as written: every field of docs/configuration.md can be
  # used, and the same file is what `python -m rebalancer rules` makes the alert rules from, so the
  # rules and the deployed configuration cannot disagree. metrics_url and dry_run come from the
  # environment below (it overrides the file), so that they can change without touching it.
  config  = file(var.config_file)
  targets = yamldecode(local.config).targets

  # Deploy what was tested: the tests run on Python 3.11 (tests/terraform checks the two agree).
  runtime = "python311"
}

# The source archive: main.py, the package, the pinned requirements and the rendered config.
data "archive_file" "source" {
  type        = "zip"
  output_path = "${path.root}/.build/${var.name}-source.zip"

  source {
    filename = "main.py"
    content  = file("${local.source_dir}/main.py")
  }
  source {
    filename = "requirements.txt"
    content  = file("${local.source_dir}/requirements.txt")
  }
  source {
    filename = "rebalancer.yaml"
    content  = local.config
  }
  dynamic "source" {
    for_each = fileset(local.source_dir, "rebalancer/**/*.py")
    content {
      filename = source.value
      content  = file("${local.source_dir}/${source.value}")
    }
  }
}

resource "google_storage_bucket" "source" {
  # checkov:skip=CKV_GCP_62:The bucket holds only the function's build archives (no data); Cloud Audit Logs record who reads or writes them, and access logs would need a second bucket for no gain.
  project                     = var.project
  name                        = "${var.project}-${var.name}-source"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      num_newer_versions = 5
    }
    action {
      type = "Delete"
    }
  }
}

# Named by the archive's content hash: a code or config change uploads a new object, and the
# function's build_config changes with it, so Terraform redeploys.
resource "google_storage_bucket_object" "source" {
  name   = "${var.name}-${data.archive_file.source.output_sha256}.zip"
  bucket = google_storage_bucket.source.name
  source = data.archive_file.source.output_path
}

resource "google_service_account" "rebalancer" {
  project      = var.project
  account_id   = var.name
  display_name = "pod-rebalancer function"
  description  = "Identity of the pod-rebalancer function: reads its token and talks to the GKE API under Kubernetes RBAC."
}

# The identity Cloud Build runs the function's build as. Organisations created secure by default
# give the default compute account no rights, so a build without one of its own fails.
resource "google_service_account" "build" {
  project      = var.project
  account_id   = "${var.name}-build"
  display_name = "pod-rebalancer build"
  description  = "Builds the pod-rebalancer function: reads its source, writes its image and build logs."
}

resource "google_project_iam_member" "build" {
  for_each = toset(["roles/logging.logWriter", "roles/artifactregistry.writer"]) # build logs, the built image
  project  = var.project
  role     = each.key
  member   = "serviceAccount:${google_service_account.build.email}"
}

resource "google_storage_bucket_iam_member" "build_reads_source" {
  bucket = google_storage_bucket.source.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.build.email}"
}

# Enough to reach the cluster's API at all; what it may do there is Kubernetes RBAC (rbac.tf).
resource "google_project_iam_member" "cluster_viewer" {
  project = var.project
  role    = "roles/container.clusterViewer"
  member  = "serviceAccount:${google_service_account.rebalancer.email}"
}

resource "google_secret_manager_secret" "token" {
  project   = var.project
  secret_id = "${var.name}-token"
  labels    = local.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_version" "token" {
  secret      = google_secret_manager_secret.token.id
  secret_data = var.auth_token
}

# Only the function's own identity can read the token.
resource "google_secret_manager_secret_iam_member" "token" {
  project   = var.project
  secret_id = google_secret_manager_secret.token.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.rebalancer.email}"
}

# The Kafka passwords (lag measured at the brokers): secrets the caller made, readable by the function alone.
resource "google_secret_manager_secret_iam_member" "kafka" {
  for_each  = toset(concat(values(var.kafka_password_env), values(var.kafka_password_files)))
  project   = var.project
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.rebalancer.email}"
}

resource "google_cloudfunctions2_function" "rebalancer" {
  # checkov:skip=CKV_GCP_124:Alertmanager usually runs outside this project's VPC; every POST needs the bearer token (checked before any upstream call). Set ingress_settings = "ALLOW_INTERNAL_ONLY" when Alertmanager calls from inside the VPC.
  project     = var.project
  name        = var.name
  location    = var.region
  description = "Re-verifies Kafka consumer skew alerts and rebalances the outlier pods."
  labels      = local.labels

  build_config {
    runtime         = local.runtime
    entry_point     = "rebalance"
    service_account = google_service_account.build.id
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory               = var.memory
    timeout_seconds                = var.timeout_seconds
    max_instance_count             = var.max_instances
    min_instance_count             = 0
    service_account_email          = google_service_account.rebalancer.email
    ingress_settings               = var.ingress_settings
    all_traffic_on_latest_revision = true
    vpc_connector                  = var.vpc_connector
    vpc_connector_egress_settings  = var.vpc_connector == null ? null : var.vpc_egress
    direct_vpc_egress              = var.direct_vpc == null ? null : var.direct_vpc.egress

    # Direct VPC egress: the instances on a subnet of your VPC, no connector to run.
    dynamic "direct_vpc_network_interface" {
      for_each = var.direct_vpc == null ? [] : [var.direct_vpc]
      content {
        network    = direct_vpc_network_interface.value.network
        subnetwork = direct_vpc_network_interface.value.subnetwork
        tags       = direct_vpc_network_interface.value.tags
      }
    }
    max_instance_request_concurrency = 1

    environment_variables = {
      REBALANCER_CONFIG       = "/workspace/rebalancer.yaml"
      REBALANCER_METRICS_URL  = var.metrics_url
      REBALANCER_DRY_RUN      = tostring(var.dry_run)
      REBALANCER_GKE_ENDPOINT = var.cluster.endpoint
      REBALANCER_GKE_CA_CERT  = var.cluster.ca_certificate
      REBALANCER_LOG_FORMAT   = "json"
      REBALANCER_GCP_PROJECT  = var.project
    }

    secret_environment_variables {
      key        = "REBALANCER_AUTH_TOKEN"
      project_id = var.project
      secret     = google_secret_manager_secret.token.secret_id
      version    = "latest"
    }

    dynamic "secret_environment_variables" {
      for_each = var.kafka_password_env
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }

    dynamic "secret_volumes" {
      for_each = var.kafka_password_files
      content {
        mount_path = secret_volumes.key
        project_id = var.project
        secret     = secret_volumes.value
        versions {
          version = "latest"
          path    = "password"
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.vpc_connector == null || var.direct_vpc == null
      error_message = "Set vpc_connector or direct_vpc, not both."
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.token, google_secret_manager_secret_version.token,
    google_secret_manager_secret_iam_member.kafka,
  google_project_iam_member.build, google_storage_bucket_iam_member.build_reads_source]
}

# Who may invoke the function. Alertmanager cannot mint Google ID tokens, so by default
# (invoker = "allUsers") Cloud Run's IAM check is not what keeps strangers out: the function
# refuses every POST without the bearer token (401, before any upstream call, compared in
# constant time). Where domain-restricted sharing forbids allUsers, name an invoker instead
# (an identity-aware proxy in front of Alertmanager, or a service account that mints ID tokens).
resource "google_cloud_run_service_iam_member" "invoker" {
  # checkov:skip=CKV_GCP_102:Alertmanager cannot mint Google ID tokens, so Cloud Run IAM cannot authenticate it; the function refuses every POST without the bearer token from Secret Manager (401, constant-time comparison). var.invoker names a single member instead where allUsers is not allowed.
  project  = var.project
  location = var.region
  service  = google_cloudfunctions2_function.rebalancer.name
  role     = "roles/run.invoker"
  member   = var.invoker
}
