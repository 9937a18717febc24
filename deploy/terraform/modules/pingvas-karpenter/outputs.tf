output "controller_role_arn" {
  description = "Karpenter controller role (IRSA: the service account annotation eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.controller.arn
}

output "node_role_name" {
  description = "Node role for the EC2NodeClass `spec.role`."
  value       = aws_iam_role.node.name
}

output "node_role_arn" {
  description = "Node role ARN."
  value       = aws_iam_role.node.arn
}

output "node_instance_profile_name" {
  description = "Instance profile for the node role (only for an EC2NodeClass that names `instanceProfile` instead of `role`)."
  value       = aws_iam_instance_profile.node.name
}

output "interruption_queue_name" {
  description = "SQS queue for Karpenter's settings.interruptionQueue (Helm: --set settings.interruptionQueue=...)."
  value       = aws_sqs_queue.interruption.name
}

output "interruption_queue_arn" {
  description = "SQS queue ARN."
  value       = aws_sqs_queue.interruption.arn
}

output "images_bucket" {
  description = "S3 bucket for generated images (STORAGE_URL=s3://<bucket>/images)."
  value       = aws_s3_bucket.images.bucket
}

output "server_role_arn" {
  description = "Role of the pingvas server (IRSA: annotation on the pingvas-server service account)."
  value       = aws_iam_role.server.arn
}
