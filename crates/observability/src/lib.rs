//! The observability slice of a stackproof stack: CloudWatch dashboard, alarms and their SNS topic.
