//! Shared vocabulary of the stackproof modules.
//!
//! Every slice of the stack (`network`, `storage`, `compute`, `observability`) implements the one
//! [`Module`] trait: `plan` reads and says what would change, `apply` converges, `destroy` removes
//! what the stack owns. Each is written as a [`Pipeline`] (observe, desired, pure diff, steps,
//! one AWS call site per step) and [`pipeline`]'s driver makes it a [`Module`]. They share a [`Context`] (SDK configuration, stack name, tags, wait
//! policy, progress sink), a [`Plan`] made of [`Change`]s, the tag conventions in [`tags`], and
//! one retry helper, [`Backoff`], for the AWS behaviours the SDK does not retry itself.
//!
//! ```
//! use stackproof_infra::{Action, Change, Plan};
//!
//! let mut plan = Plan::default();
//! plan.push(Change::new(Action::Create, "network", "vpc", "vpc").detail("cidr 10.0.0.0/16"));
//! assert_eq!(plan.counts().create, 1);
//! println!("{plan}");
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod call_error;
mod calls;
mod context;
mod module;
pub mod pipeline;
mod plan;
mod progress;
mod retry;
pub mod tags;
mod time;
mod validate;

pub use call_error::{CallError, aws, built, waited};
pub use calls::{CallCounter, CallCounts};
pub use context::{CallPolicy, Context, ContextBuilder, StackName, StackNameError, WaitPolicy};
pub use module::Module;
pub use pipeline::{Observation, Pipeline, Survey};
pub use plan::{Action, Change, Counts, FieldChange, Plan};
pub use progress::{Event, NoProgress, Progress, reported};
pub use retry::{Backoff, Step, WaitError, error_code};
pub use time::UtcTime;
pub use validate::{Config, Problem, Problems, Scope};

/// Builds a service client from a [`Context`]: the context's SDK configuration plus its
/// interceptors (the call counter and any the caller added, such as a test account header).
///
/// ```ignore
/// let ec2: aws_sdk_ec2::Client = stackproof_infra::client!(cx, aws_sdk_ec2);
/// ```
#[macro_export]
macro_rules! client {
    ($cx:expr, $krate:ident) => {{
        let cx: &$crate::Context = $cx;
        let mut builder = $krate::config::Builder::from(cx.sdk_config());
        for interceptor in cx.interceptors() {
            builder.push_interceptor(interceptor.clone());
        }
        $krate::Client::from_conf(builder.build())
    }};
}
