# Example environment: the seed's dev cluster. The EKS cluster, its VPC and the
# karpenter.sh/discovery tags on subnets and security groups already exist
# (docs/deploy.md, "Before you start").
#
#   cd deploy/terraform/environments/dev
#   terraform init && terraform apply

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0"
    }
  }

  # Keep state remote in real use, for example:
  # backend "s3" {
  #   bucket = "my-terraform-state"
  #   key    = "pingvas/dev/terraform.tfstate"
  #   region = "us-east-1"
  # }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string
  default     = "us-east-1"
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster."
  type        = string
  default     = "dev-pingvas-eks"
}

variable "identity_mode" {
  description = "\"pod_identity\" (EKS Pod Identity) or \"irsa\"."
  type        = string
  default     = "pod_identity"
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  count = var.identity_mode == "irsa" ? 1 : 0
  url   = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

module "pingvas_karpenter" {
  source = "../../modules/pingvas-karpenter"

  cluster_name      = data.aws_eks_cluster.this.name
  identity_mode     = var.identity_mode
  oidc_provider_arn = var.identity_mode == "irsa" ? data.aws_iam_openid_connect_provider.this[0].arn : ""

  tags = {
    Environment = "dev"
    Project     = "pingvas"
    ManagedBy   = "terraform"
  }
}

output "controller_role_arn" {
  value = module.pingvas_karpenter.controller_role_arn
}

output "node_role_name" {
  value = module.pingvas_karpenter.node_role_name
}

output "interruption_queue_name" {
  value = module.pingvas_karpenter.interruption_queue_name
}

output "images_bucket" {
  value = module.pingvas_karpenter.images_bucket
}

output "server_role_arn" {
  value = module.pingvas_karpenter.server_role_arn
}
