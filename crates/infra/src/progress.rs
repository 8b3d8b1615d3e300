//! Progress events: what a module is doing to which resource, for a live view.

use std::fmt;
use std::time::Duration;

use crate::Change;

/// One step of an apply or destroy.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A change is about to be made.
    Started(&'a Change),
    /// A change is still waiting on AWS (a NAT gateway becoming available, ...).
    Waiting {
        /// The change.
        change: &'a Change,
        /// How long it has waited so far.
        waited: Duration,
    },
    /// A change is done; `id` is the resource id when one is known.
    Finished {
        /// The change.
        change: &'a Change,
        /// The resource id, when known.
        id: Option<&'a str>,
        /// How long it took.
        elapsed: Duration,
    },
}

/// A sink for progress events. Implementations must be cheap: they run inline.
pub trait Progress: fmt::Debug + Send + Sync {
    /// Receives one event.
    fn on(&self, event: &Event<'_>);
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on(&self, _event: &Event<'_>) {}
}
