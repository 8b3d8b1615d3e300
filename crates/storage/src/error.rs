//! The storage crate's error.

use infra::{CallError, Problems};

/// What can go wrong in the storage module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was called.
    #[error(transparent)]
    Config(#[from] Problems),
    /// An AWS call failed, or retries of one ran out of time.
    #[error(transparent)]
    Aws(#[from] CallError),
    /// A bucket or repository has the name the stack wants but is not the stack's.
    #[error(
        "{kind} {name:?} exists but is not part of stack {stack} ({owner}); it is left alone: delete or rename it, set another name in [storage] of stack.toml, or use another stack name"
    )]
    NotOurs {
        /// `bucket` or `repository`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The stack that wanted the name.
        stack: String,
        /// Who it belongs to, as far as can be told (`its stackproof:stack tag is "other"`).
        owner: String,
    },
    /// Destroy found a bucket or repository that still holds data, and `force-destroy` is off.
    /// Found before anything is deleted, nothing is; found at the delete itself (something was
    /// written meanwhile), what came before in the destroy order is gone.
    #[error(
        "{kind} {name:?} is not empty: it holds {count} {unit}, so destroy stopped before deleting it. To delete it with everything in it, set `force-destroy = true` in the [storage] table of stack.toml and run destroy again, or empty it yourself first"
    )]
    NotEmpty {
        /// `bucket` or `repository`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// How many objects (versions and delete markers included) or images it holds.
        count: u64,
        /// `objects` or `images`.
        unit: &'static str,
    },
    /// A step needed a resource that an earlier step should have made.
    #[error("{kind} {name:?} should exist by now but was not found; run the same command again")]
    Missing {
        /// The kind of resource.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// AWS answered without something it always sends (an account id, a repository ARN).
    #[error("{operation} for {resource} answered without {field}")]
    Incomplete {
        /// The API operation.
        operation: &'static str,
        /// The resource it concerned.
        resource: String,
        /// What was missing.
        field: &'static str,
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
