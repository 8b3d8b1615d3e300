//! The local AWS of stackproof.
//!
//! The control plane: a [`MotoServer`] (moto, the AWS API emulator) on 127.0.0.1, the
//! [`sdk_config`] that points the AWS SDK at it, and [`MotoAccount`], an interceptor that
//! isolates callers in their own emulated account. The data plane, [`DataPlane`], reads the
//! desired state from moto through the same SDK and makes it real: task processes, a local
//! ALB per listener, network-ACL faults, target tracking, CloudWatch metrics and access logs.
//! [`daemon`] runs both in one background process (`cargo xtask sandbox start`).
//!
//! ```no_run
//! let moto = stackproof_sandbox::MotoServer::start(&stackproof_sandbox::python_path()?)?;
//! let sdk = stackproof_sandbox::sdk_config(moto.endpoint(), "eu-west-1");
//! # let _ = sdk;
//! Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod daemon;
mod moto;
mod plane;
mod registry;

/// The load balancer's data plane, the [`sandbox_alb`] crate (no AWS SDK in it).
pub use sandbox_alb as alb;

pub use aws_model::{Clock, LaunchLatency};
pub use moto::{
    Error, MIN_MOTO_VERSION, MotoAccount, MotoServer, TEST_WAITS, cache_dir, python_path,
    sdk_config, spawn_daemon, task_env,
};
pub use plane::{
    AlbEndpoint, CA_FILE_VAR, CacheStatus, DNS_SERVER_VAR, DataPlane, DatabaseStatus, JobStatus,
    NodeEndpoint, PlaneOptions, PlaneStatus, ServiceStatus, TaskHealth, TaskStatus,
    postgres_bin_dir, redis_programs,
};
pub use registry::{RegistryServer, registry_program};
