//! The compute crate's error.

use infra::{CallError, Problems};

/// What can go wrong in the compute module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was called.
    #[error(transparent)]
    Config(#[from] Problems),
    /// An AWS call failed, or retries of one ran out of time.
    #[error(transparent)]
    Aws(#[from] CallError),
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
            Error::Aws(e) => e.code(),
            _ => None,
        }
    }
}
