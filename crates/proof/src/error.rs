//! The errors of a proof run or a check.

/// Why a proof run or check could not run (a failing verdict is not an error: it is a result).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options are invalid; every problem names the field, the value and what is allowed.
    #[error("{0}")]
    Invalid(infra::Problems),
    /// The load engine failed to start or run.
    #[error("load engine: {0}")]
    Load(#[from] loadtest::Error),
    /// An AWS call failed.
    #[error("{operation} on {resource}: {message}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// What it was called on.
        resource: String,
        /// The service's message, with its error code.
        message: String,
    },
    /// A stack operation (zone isolation or restoration) failed.
    #[error(transparent)]
    Stack(#[from] stack::Error),
    /// Undoing the fault failed: it is still in place.
    #[error(
        "{fault} STILL: undoing it failed. A deploy of the stack restores an isolated zone (so does the next proof run); AWS FIS ends its experiment by itself when the experiment's duration is up, and a zonal shift when it expires"
    )]
    NotUndone {
        /// The fault left in place (`zone eu-west-1a is isolated`).
        fault: String,
        /// Why undoing it failed.
        #[source]
        source: Box<Error>,
    },
    /// The run was interrupted (Ctrl-C); the fault, if one was in place, was undone.
    #[error("interrupted; {undone}")]
    Interrupted {
        /// What was undone.
        undone: String,
    },
    /// A stop condition held: a CloudWatch alarm of [`crate::ProveConfig::stop_alarms`] was in
    /// ALARM (before the run, or during it); the fault, if one was in place, was undone.
    #[error("stopped: stop condition alarm {alarm} is in ALARM ({reason}); {undone}")]
    Stopped {
        /// The alarm.
        alarm: String,
        /// Its state reason.
        reason: String,
        /// What was undone.
        undone: String,
    },
    /// A load generator of a distributed run could not do its part (its start object, its
    /// report or its uploads).
    #[error("load generators: {0}")]
    Generators(String),
    /// The run stopped unexpectedly (a bug); the fault, if one was in place, was undone.
    #[error("{0}")]
    Internal(String),
    /// Writing a report file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// An [`Error::Aws`] from an SDK error, with its code and message.
pub(crate) fn aws<E>(
    operation: &'static str,
    resource: impl Into<String>,
) -> impl FnOnce(E) -> Error
where
    E: std::error::Error + 'static,
{
    let resource = resource.into();
    move |e| Error::Aws {
        operation,
        resource,
        message: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
    }
}
