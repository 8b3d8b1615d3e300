//! The compute slice of a stackproof stack: IAM roles, ECS cluster, Fargate task definition and service, autoscaling.
