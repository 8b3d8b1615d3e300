//! Why building or pushing an image failed.

/// Why building or pushing an image failed. Every variant names what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input is not allowed; nothing was sent.
    #[error("{field} = {value:?}: {allowed}")]
    Invalid {
        /// The input.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is allowed, and why.
        allowed: String,
    },
    /// Writing the layer failed (in memory: only a bug makes this happen).
    #[error("building the image layer: {0}")]
    Layer(#[source] std::io::Error),
    /// The registry could not be reached.
    #[error("{method} {url}: cannot connect")]
    Connect {
        /// The request's method.
        method: String,
        /// Its URL.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake or the HTTP exchange failed.
    #[error("{method} {url}: {message}")]
    Http {
        /// The request's method.
        method: String,
        /// Its URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The request took longer than its deadline.
    #[error("{method} {url}: no answer within {seconds} s")]
    Timeout {
        /// The request's method.
        method: String,
        /// Its URL.
        url: String,
        /// The deadline.
        seconds: u64,
    },
    /// The registry answered with an error.
    #[error("{method} {url}: HTTP {status}: {message}")]
    Registry {
        /// The request's method.
        method: String,
        /// Its URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error codes and messages, or the body.
        message: String,
    },
}
