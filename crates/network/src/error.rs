//! The network crate's error.

use infra::{CallError, Problems};

/// What can go wrong in the network module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was called.
    #[error(transparent)]
    Config(#[from] Problems),
    /// An AWS call failed, or retries of one ran out of time.
    #[error(transparent)]
    Aws(#[from] CallError),
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
    /// The region lacks the zones the configuration asks for.
    #[error("{field}: the region {region} offers {available:?}, which does not satisfy {wanted}")]
    Zones {
        /// The configuration field.
        field: &'static str,
        /// The region.
        region: String,
        /// What it offers.
        available: Vec<String>,
        /// What was asked.
        wanted: String,
    },
    /// A step needed a resource that an earlier step should have made.
    #[error("{kind} {name:?} should exist by now but was not found; run the same command again")]
    Missing {
        /// The kind of resource.
        kind: &'static str,
        /// Its logical name.
        name: String,
    },
    /// A NAT gateway failed to become available.
    #[error("NAT gateway {name:?} ({id}) failed: {reason}; apply again to replace it")]
    NatFailed {
        /// Its logical name.
        name: String,
        /// Its id.
        id: String,
        /// What AWS said.
        reason: String,
    },
    /// A VPC endpoint ended failed or rejected instead of available.
    #[error(
        "{what} is {state}, not available (AWS gives the reason in its state message; a rejected one needs the service's acceptance)"
    )]
    EndpointFailed {
        /// The endpoint, by kind, name and id.
        what: String,
        /// Its state.
        state: String,
    },
    /// A load balancer or target group has the name the stack derives but is not the stack's
    /// (its `stackproof:stack` tag says otherwise, or it has none).
    #[error(
        "{kind} {name:?} ({arn}) exists but is not part of stack {stack} (its stackproof:stack tag is {owner:?}); it is left alone: delete or rename it, or use another stack name"
    )]
    NotOurs {
        /// The kind of resource.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Its ARN.
        arn: String,
        /// The stack that wanted the name.
        stack: String,
        /// The stack it belongs to, when it has the tag.
        owner: Option<String>,
    },
    /// The stack has no network (for operations that need one, like isolating a zone).
    #[error("stack {stack} has no VPC: deploy it first")]
    NotDeployed {
        /// The stack.
        stack: String,
    },
    /// An availability zone that the stack does not use.
    #[error("availability zone {zone:?} has no subnet of stack {stack}; its zones are {zones:?}")]
    UnknownZone {
        /// The stack.
        stack: String,
        /// The zone asked for.
        zone: String,
        /// The zones the stack uses.
        zones: Vec<String>,
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

/// Outputs read from the account: `None` when a resource they name is missing (a module
/// partly created, e.g. by a run killed after the VPC), any other error kept.
pub(crate) fn unless_missing<T>(outputs: Result<T, Error>) -> Result<Option<T>, Error> {
    match outputs {
        Ok(o) => Ok(Some(o)),
        Err(Error::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
