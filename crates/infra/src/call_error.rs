//! The part of every module's error that concerns AWS: a call that failed, or retries of one
//! that ran out of time, always with the operation and the resource it concerned.

use std::fmt;

use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::WaitError;

/// An AWS call that failed, or retries of one that ran out of time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// AWS (or the SDK) answered with an error.
    #[error("{operation} for {resource} failed: {detail}")]
    Failed {
        /// The API operation (`CreateService`).
        operation: &'static str,
        /// The resource it concerned (`service demo`).
        resource: String,
        /// The AWS error code, when there is one (`InvalidParameterException`).
        code: Option<String>,
        /// The error with its whole chain of causes.
        detail: String,
    },
    /// Retries or a wait ran out of time; the message says what was tried and the last error.
    #[error("{0}")]
    Timeout(String),
}

impl CallError {
    /// The AWS error code, when AWS answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Failed { code, .. } => code.as_deref(),
            CallError::Timeout(_) => None,
        }
    }
}

/// Turns an SDK error into a [`CallError`] naming the operation and the resource: for
/// `.map_err(aws("CreateVpc", "vpc main"))?` in a module whose error converts from it.
pub fn aws<E>(operation: &'static str, resource: impl fmt::Display) -> impl FnOnce(E) -> CallError
where
    E: std::error::Error + ProvideErrorMetadata,
{
    move |err| CallError::Failed {
        operation,
        resource: resource.to_string(),
        code: err.code().map(str::to_owned),
        detail: DisplayErrorContext(&err).to_string(),
    }
}

/// A request the SDK could not build (a required field left out) as a [`CallError`] naming
/// the operation and the resource: for `.map_err(built("CreateRole", "role web"))?`.
pub fn built<E: fmt::Display>(
    operation: &'static str,
    resource: impl fmt::Display,
) -> impl FnOnce(E) -> CallError {
    move |err| CallError::Failed {
        operation,
        resource: resource.to_string(),
        code: None,
        detail: format!("could not build the request: {err}"),
    }
}

/// Turns a failed retry ([`crate::Backoff`]) into a [`CallError`]: the last error as
/// [`aws`] would, or a [`CallError::Timeout`].
pub fn waited<E>(
    operation: &'static str,
    resource: impl fmt::Display,
) -> impl FnOnce(WaitError<E>) -> CallError
where
    E: std::error::Error + ProvideErrorMetadata,
{
    move |err| match err {
        WaitError::Failed(e) => aws(operation, resource)(e),
        timeout @ WaitError::DeadlineExceeded { .. } => CallError::Timeout(timeout.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    #[test]
    fn a_failed_call_names_operation_resource_and_code() {
        let sdk = ErrorMetadata::builder()
            .code("InvalidVpcID.NotFound")
            .message("The vpc ID 'vpc-1' does not exist")
            .build();
        let err = aws("DescribeVpcs", "vpc main")(sdk);
        assert_eq!(err.code(), Some("InvalidVpcID.NotFound"));
        let shown = err.to_string();
        assert!(
            shown.starts_with("DescribeVpcs for vpc main failed: "),
            "{shown}"
        );
        assert!(shown.contains("does not exist"), "{shown}");
    }
}
