# A reusable module states minimums only; the root configuration pins exact versions.
# google >= 7.25: the first 7.x releases with Direct VPC egress on cloudfunctions2 GA
# (magic-modules#16396, February 2026) came later than 7.14.
terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 7.25.0, < 8.0.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = ">= 2.35.0, < 4.0.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.7.0, < 3.0.0"
    }
  }
}
