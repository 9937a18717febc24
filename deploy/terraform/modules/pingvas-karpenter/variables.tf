variable "cluster_name" {
  description = "Name of the existing EKS cluster (also the karpenter.sh/discovery tag value and the interruption queue name)."
  type        = string
}

variable "identity_mode" {
  description = "How the Karpenter controller gets its role: \"irsa\" (IAM Roles for Service Accounts, needs the cluster's OIDC provider) or \"pod_identity\" (EKS Pod Identity, needs the eks-pod-identity-agent add-on)."
  type        = string
  default     = "pod_identity"

  validation {
    condition     = contains(["irsa", "pod_identity"], var.identity_mode)
    error_message = "identity_mode must be \"irsa\" or \"pod_identity\"."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider. Required when identity_mode is \"irsa\"."
  type        = string
  default     = ""
}

variable "karpenter_namespace" {
  description = "Namespace of the Karpenter controller."
  type        = string
  default     = "kube-system"
}

variable "karpenter_service_account" {
  description = "Service account of the Karpenter controller."
  type        = string
  default     = "karpenter"
}

variable "pingvas_namespace" {
  description = "Namespace of the pingvas server (deploy/k8s)."
  type        = string
  default     = "pingvas"
}

variable "pingvas_server_service_account" {
  description = "Service account of the pingvas server, which writes images to S3."
  type        = string
  default     = "pingvas-server"
}

variable "images_bucket_name" {
  description = "Name of the S3 bucket for generated images. Empty: \"<cluster_name>-images\"."
  type        = string
  default     = ""
}

variable "images_noncurrent_days" {
  description = "Days after which noncurrent (overwritten or deleted) image versions expire."
  type        = number
  default     = 30
}

variable "interruption_queue_retention_seconds" {
  description = "How long an unread interruption event stays in the queue. Events older than a spot notice are useless."
  type        = number
  default     = 300
}

variable "tags" {
  description = "Tags for every resource this module creates."
  type        = map(string)
  default     = {}
}
