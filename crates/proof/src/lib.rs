//! Proves a deployed stack under real HTTP load.
//!
//! [`prove`] runs scenarios against the stack's load balancer with the `loadtest` engine while it
//! watches the service in ECS and, for the failover scenario, cuts one availability zone off:
//! - **baseline**: steady load below the scaling threshold; the SLO baseline and the per-zone split;
//! - **scaling**: load in stages above what the running tasks carry at their target-tracking
//!   value; the desired and running counts must rise, new tasks must take traffic, and the SLOs
//!   must hold once it settles;
//! - **az-failover**: at steady load one zone is isolated (a deny-all network ACL, as AWS FIS
//!   does) or its tasks stopped; time to detect, error budget spent, time until errors stop, the
//!   per-zone share before, during and after, capacity in the remaining zones, then recovery
//!   once the zone is restored. The fault is always undone.
//!
//! The result is a [`ProofReport`]: a terminal table, JSON and a self-contained HTML page
//! ([`html::render`]). [`check`] is the short scheduled availability probe.

pub mod check;
mod config;
pub mod distributed;
mod error;
pub mod html;
pub mod model;
mod observe;
mod prove;
pub mod report;
mod target;
mod window;

pub use config::{Fault, ProveConfig, Scenario};
pub use error::Error;
pub use prove::{Deployment, ProgressFn, prove};
pub use report::{
    Check, Figure, Mark, MarkKind, Point, ProofReport, SCHEMA, ScenarioResult, ServicePoint,
    SloSpec,
};
pub use target::{ConnectTo, Target};
