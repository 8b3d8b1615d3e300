//! Progress events: what a module is doing to which resource, for a live view.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

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

/// Runs `step`, the step of an apply or destroy that makes `changes`: reports each change as
/// started, then, once the step succeeded, as finished with the id the step returns (else the
/// change's own id) and how long the step took. A failed step reports nothing more: its error
/// says what happened. Every module's executor runs its steps through this (boxing the step:
/// the futures of AWS calls are large, and a debug build's stack is small).
pub async fn reported<E>(
    progress: &dyn Progress,
    changes: &[Change],
    step: impl Future<Output = Result<Option<String>, E>>,
) -> Result<Option<String>, E> {
    for change in changes {
        progress.on(&Event::Started(change));
    }
    let start = Instant::now();
    let id = step.await?;
    let elapsed = start.elapsed();
    for change in changes {
        progress.on(&Event::Finished {
            change,
            id: id.as_deref().or(change.id.as_deref()),
            elapsed,
        });
    }
    Ok(id)
}

/// Drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on(&self, _event: &Event<'_>) {}
}
