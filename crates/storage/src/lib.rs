//! The storage slice of a stackproof stack: the ALB access-log bucket and the ECR repository.
