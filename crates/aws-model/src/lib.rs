//! AWS's timings and behaviours for an ECS Fargate service behind an Application Load
//! Balancer, in one place: the model the stackproof sandbox runs and the proof predicts with.
//!
//! Every number AWS documents (or that AWS measured and published) is a named constant in
//! [`aws`], with its source beside it and a confidence: **H** stated in AWS's documentation or
//! API reference, **M** an AWS blog or benchmark, or several public observations that agree,
//! **L** a single observation or our inference. `docs/fidelity.md` lists them with what the
//! sandbox does and the test that holds it.
//!
//! - [`Clock`]: the time scale the model runs at. [`Clock::AWS`] is real time; a faster clock
//!   divides every duration of the model by its factor and changes nothing else (rates, such as
//!   requests per second, stay what they are).
//! - [`tracking`]: CloudWatch datapoints and Application Auto Scaling target tracking (the
//!   alarms, the proposal, cooldowns), the same code for the sandbox and the prediction.
//! - [`LaunchLatency`]: how long a Fargate task takes from its creation to RUNNING, drawn from a
//!   seeded distribution.
//! - [`HealthTiming`]: what a target group's health check settings mean in time.
//! - [`predict`]: time to first scale-out, to a steady service and to the end of a zone's
//!   failure, from a stack's settings, by running the same model on the planned load.
//!
//! ```
//! use std::time::Duration;
//! use stackproof_aws_model::{Clock, aws};
//! let fast: Clock = "fast".parse()?;
//! // The load balancer's DNS TTL on the fast clock, in wall time.
//! assert_eq!(fast.wall(aws::elb::DNS_TTL), Duration::from_secs(6));
//! assert_eq!(Clock::AWS.wall(aws::elb::DNS_TTL), Duration::from_secs(60));
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod aws;
mod clock;
mod health;
mod launch;
pub mod predict;
mod span;
pub mod tracking;

pub use clock::{Clock, ClockError};
pub use health::HealthTiming;
pub use launch::{LaunchLatency, Rng};
pub use span::Span;
