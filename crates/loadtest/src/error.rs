//! The crate's one error type.

use std::io;

use crate::config::Problems;

/// Why a run could not start or finish. (A run that starts always produces a [`crate::Report`],
/// whatever its requests did: request failures are counted, not returned.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; every problem is listed.
    #[error("invalid load test configuration:\n{0}")]
    Invalid(Problems),
    /// The target host did not resolve before the run.
    #[error("could not resolve {host}:{port}")]
    Resolve {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
        /// Resolver error.
        #[source]
        source: io::Error,
    },
    /// The target host resolved to no address.
    #[error("{host}:{port} resolved to no address")]
    NoAddress {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
    /// The TLS client configuration could not be built (a `cacert` certificate that validation
    /// accepted but rustls refused, or no TLS version the crypto provider supports).
    #[error("could not set up TLS")]
    Tls {
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The shared start time (`start-at-unix-ms`) had passed when the run began: a striped
    /// run whose generators do not start together measures the generators, not the target.
    #[error(
        "the start time had passed {late:?} before this generator was ready (at most {:?} is allowed): start the generators with a later start-at-unix-ms",
        crate::config::MAX_START_LATE
    )]
    StartMissed {
        /// How late it was.
        late: std::time::Duration,
    },
    /// A thread or runtime could not be started.
    #[error("could not start the {what}")]
    Start {
        /// What failed to start.
        what: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An internal task ended abnormally.
    #[error("the {what} ended abnormally")]
    Internal {
        /// Which task.
        what: &'static str,
    },
    /// An output could not be written.
    #[error("could not write the {what} to {path}")]
    Write {
        /// Which output (JSON report, CSV, interval log).
        what: &'static str,
        /// Where.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
