//! The data crate's error.

use infra::{CallError, Problems};

/// What can go wrong in the data module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was called.
    #[error(transparent)]
    Config(#[from] Problems),
    /// An AWS call failed, or retries of one ran out of time.
    #[error(transparent)]
    Aws(#[from] CallError),
    /// A resource has the name the stack wants but does not carry the stack's tags.
    #[error(
        "{kind} {name:?} exists but is not tagged stackproof:stack = {stack}; it is left alone: rename the stack or remove it by hand"
    )]
    NotOurs {
        /// The kind of resource.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The stack.
        stack: String,
    },
    /// Destroy found the database with deletion protection on: nothing was deleted.
    #[error(
        "database {name:?} has deletion protection on, so destroy stopped before deleting anything of the data module. To delete it (a final snapshot is taken unless skip-final-snapshot), set `deletion-protection = false` in the [database] table of stack.toml, deploy, and destroy again"
    )]
    Protected {
        /// The DB instance identifier.
        name: String,
    },
    /// A setting the database cannot change in place.
    #[error(
        "database {name:?} has {field} {have} but the configuration says {want}; that needs a new database: destroy the data (a final snapshot keeps it), then deploy"
    )]
    NeedsReplacement {
        /// The DB instance identifier.
        name: String,
        /// The setting.
        field: &'static str,
        /// What it is.
        have: String,
        /// What the configuration wants.
        want: String,
    },
    /// A setting the cache cannot change in place.
    #[error(
        "cache {name:?} has {field} {have} but the configuration says {want}; that needs a new replication group: delete it (`aws elasticache delete-replication-group --replication-group-id {name}`; a cache holds nothing the database does not) and deploy again"
    )]
    CacheNeedsReplacement {
        /// The replication group id.
        name: String,
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
}
