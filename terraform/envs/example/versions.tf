terraform {
  required_version = ">= 1.9"
  required_providers {
    vultr = {
      source  = "vultr/vultr"
      version = "~> 2.21"
    }
  }
  # Keep the state remote and locked in a real deployment, for example:
  # backend "s3" { ... }
}

# The API key comes from VULTR_API_KEY in the environment.
provider "vultr" {
  rate_limit  = 700
  retry_limit = 3
}
