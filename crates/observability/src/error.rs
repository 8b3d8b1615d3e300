//! The observability crate's error.

use std::fmt;

use infra::{CallError, Problems};

/// What can go wrong in the observability module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was called.
    #[error(transparent)]
    Config(#[from] Problems),
    /// An AWS call failed, or retries of one ran out of time.
    #[error(transparent)]
    Aws(#[from] CallError),
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
            Error::Aws(e) => e.code(),
            _ => None,
        }
    }
}

/// Turns a builder or serializer error into [`Error::Build`].
pub(crate) fn build<E: fmt::Display>(what: impl fmt::Display) -> impl FnOnce(E) -> Error {
    move |err| Error::Build {
        what: what.to_string(),
        detail: err.to_string(),
    }
}
