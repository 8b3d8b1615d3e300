//! The compute crate's error.

use std::fmt;

use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Problems, WaitError};

/// What can go wrong in the compute module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was called.
    #[error(transparent)]
    Config(#[from] Problems),
    /// An AWS call failed.
    #[error("{operation} for {resource} failed: {detail}")]
    Aws {
        /// The API operation (`CreateService`).
        operation: &'static str,
        /// The resource it concerned (`service demo`).
        resource: String,
        /// The AWS error code, when there is one (`InvalidParameterException`).
        code: Option<String>,
        /// The error with its whole chain of causes.
        detail: String,
    },
    /// A retry or wait ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// A resource with the stack's name exists but does not carry the stack's tags: it was not
    /// made by this stack, so it is neither changed nor deleted.
    #[error(
        "{kind} {name:?} exists but is not tagged stackproof:stack = {stack}; rename the stack or remove it by hand"
    )]
    NotOurs {
        /// The kind of resource.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The stack.
        stack: String,
    },
    /// A resource exists with a setting that cannot change in place.
    #[error(
        "{resource} has {field} {have} but the configuration says {want}; that needs a new resource: run destroy, then deploy again"
    )]
    NeedsReplacement {
        /// The resource.
        resource: String,
        /// The setting.
        field: &'static str,
        /// What it is.
        have: String,
        /// What the configuration wants.
        want: String,
    },
    /// A step needed a resource that an earlier step should have made.
    #[error("{kind} {name:?} should exist by now but was not found; run the same command again")]
    Missing {
        /// The kind of resource.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// AWS answered with something this module cannot read.
    #[error("{operation} for {resource} returned an unexpected answer: {detail}")]
    Unexpected {
        /// The API operation.
        operation: &'static str,
        /// The resource.
        resource: String,
        /// What was wrong.
        detail: String,
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
