//! The observability crate's error.

use std::fmt;

use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Problems, WaitError};

/// What can go wrong in the observability module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was called.
    #[error(transparent)]
    Config(#[from] Problems),
    /// An AWS call failed.
    #[error("{operation} for {resource} failed: {detail}")]
    Aws {
        /// The API operation (`PutMetricAlarm`).
        operation: &'static str,
        /// The resource it concerned (`alarm "demo-5xx-rate"`).
        resource: String,
        /// The AWS error code, when there is one (`ResourceNotFound`).
        code: Option<String>,
        /// The error with its whole chain of causes.
        detail: String,
    },
    /// A retry or wait ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// A request could not be built or a body could not be written.
    #[error("building {what} failed: {detail}")]
    Build {
        /// What was being built (`dashboard body "demo"`).
        what: String,
        /// Why.
        detail: String,
    },
    /// A step needed a resource that an earlier step should have made.
    #[error("{kind} {name:?} should exist by now but was not found; run the same command again")]
    Missing {
        /// The kind of resource.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

impl Error {
    /// The AWS error code, when this is an AWS error that has one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// Turns an SDK error into [`Error::Aws`] naming the operation and the resource.
pub(crate) fn aws<E>(
    operation: &'static str,
    resource: impl fmt::Display,
) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + ProvideErrorMetadata,
{
    move |err| Error::Aws {
        operation,
        resource: resource.to_string(),
        code: err.code().map(str::to_owned),
        detail: DisplayErrorContext(&err).to_string(),
    }
}

/// Turns a failed retry into an [`Error`].
pub(crate) fn waited<E>(
    operation: &'static str,
    resource: impl fmt::Display,
) -> impl FnOnce(WaitError<E>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata,
{
    move |err| match err {
        WaitError::Failed(e) => aws(operation, resource)(e),
        timeout @ WaitError::DeadlineExceeded { .. } => Error::Timeout(timeout.to_string()),
    }
}

/// Turns a builder or serializer error into [`Error::Build`].
pub(crate) fn build<E: fmt::Display>(what: impl fmt::Display) -> impl FnOnce(E) -> Error {
    move |err| Error::Build {
        what: what.to_string(),
        detail: err.to_string(),
    }
}
