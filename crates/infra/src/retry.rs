//! Bounded exponential backoff with a deadline, for what the SDK does not retry itself:
//! eventual consistency after a create, `DependencyViolation` on delete, resources reaching a
//! state. Never fixed sleeps.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tokio::time::Instant;

use crate::WaitPolicy;

/// The outcome of one attempt.
#[derive(Debug)]
pub enum Step<T, E> {
    /// Finished with a value.
    Done(T),
    /// Not yet: try again after a delay. The text says why (shown if the deadline passes).
    Retry(String),
    /// Failed for good.
    Fail(E),
}

/// Why [`Backoff::run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError<E> {
    /// An attempt failed with an error that retrying cannot fix.
    #[error(transparent)]
    Failed(E),
    /// The deadline passed while attempts still asked to retry.
    #[error(
        "{operation}: gave up after {attempts} attempts over {waited:.1?} (deadline {deadline:?}); last: {last}"
    )]
    DeadlineExceeded {
        /// What was being attempted, with the resource it concerns.
        operation: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        waited: Duration,
        /// The deadline.
        deadline: Duration,
        /// Why the last attempt asked to retry.
        last: String,
    },
}

/// A retry schedule: delays start at `initial`, double up to `max`, carry jitter, and stop at
/// `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Total time allowed, from the first attempt.
    pub deadline: Duration,
}

impl Backoff {
    /// Backoff for eventual consistency after a create.
    pub fn consistency(waits: &WaitPolicy) -> Self {
        Self {
            initial: waits.initial_delay,
            max: waits.max_delay,
            deadline: waits.eventual_consistency,
        }
    }

    /// Backoff for deletes blocked by dependencies.
    pub fn dependency(waits: &WaitPolicy) -> Self {
        Self {
            initial: waits.initial_delay,
            max: waits.max_delay,
            deadline: waits.dependency,
        }
    }

    /// Backoff for a resource reaching a state.
    pub fn resource_state(waits: &WaitPolicy) -> Self {
        Self {
            initial: waits.initial_delay,
            max: waits.max_delay,
            deadline: waits.resource_state,
        }
    }

    /// Runs `attempt` until it returns [`Step::Done`] or [`Step::Fail`], or the deadline passes.
    /// `operation` names the operation and the resource, for the deadline error.
    pub async fn run<T, E, F, Fut>(
        &self,
        operation: impl fmt::Display,
        mut attempt: F,
    ) -> Result<T, WaitError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Step<T, E>>,
    {
        let start = Instant::now();
        let mut delay = self.initial;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            // The deadline also cuts an attempt in flight (a call that hangs).
            let left = self.deadline.saturating_sub(start.elapsed());
            let last = match tokio::time::timeout(left, attempt()).await {
                Ok(Step::Done(value)) => return Ok(value),
                Ok(Step::Fail(error)) => return Err(WaitError::Failed(error)),
                Ok(Step::Retry(why)) => why,
                Err(_) => format!("the attempt in flight was cut at the deadline ({left:.1?} in)"),
            };
            let waited = start.elapsed();
            if waited >= self.deadline {
                return Err(WaitError::DeadlineExceeded {
                    operation: operation.to_string(),
                    attempts,
                    waited,
                    deadline: self.deadline,
                    last,
                });
            }
            // Equal jitter: half the delay fixed, half random, never past the deadline.
            let jittered = delay / 2 + delay.mul_f64(jitter() / 2.0);
            tokio::time::sleep(jittered.min(self.deadline - waited)).await;
            delay = (delay * 2).min(self.max);
        }
    }

    /// Runs an AWS call, retrying while its error code is one of `retry_on`.
    pub async fn retry_codes<T, E, F, Fut>(
        &self,
        operation: impl fmt::Display,
        retry_on: &[&str],
        call: F,
    ) -> Result<T, WaitError<E>>
    where
        E: ProvideErrorMetadata + fmt::Debug,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.retry_when(
            operation,
            |err: &E| error_code(err).is_some_and(|code| retry_on.contains(&code)),
            call,
        )
        .await
    }

    /// Runs an AWS call, retrying while `retry` says its error is one AWS clears by itself
    /// (a resource not visible yet, a policy not in force yet); the retry's reason is the
    /// error's code and message.
    pub async fn retry_when<T, E, F, Fut>(
        &self,
        operation: impl fmt::Display,
        retry: impl Fn(&E) -> bool,
        mut call: F,
    ) -> Result<T, WaitError<E>>
    where
        E: ProvideErrorMetadata + fmt::Debug,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let retry = &retry;
        self.run(operation, || {
            let fut = call();
            async move {
                match fut.await {
                    Ok(value) => Step::Done(value),
                    Err(err) if retry(&err) => Step::Retry(format!(
                        "{}: {}",
                        error_code(&err).unwrap_or_default(),
                        err.message().unwrap_or_default()
                    )),
                    Err(err) => Step::Fail(err),
                }
            }
        })
        .await
    }
}

/// The AWS error code of an SDK error, when it has one.
pub fn error_code<E: ProvideErrorMetadata>(err: &E) -> Option<&str> {
    err.code()
}

/// A number in [0, 1), random enough to spread retries of concurrent callers.
fn jitter() -> f64 {
    let bits = RandomState::new().hash_one(Instant::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        deadline: Duration::from_secs(5),
    };

    #[tokio::test(start_paused = true)]
    async fn retries_until_done() {
        let mut n = 0;
        let value: Result<u32, WaitError<()>> = B
            .run("wait for thing", || {
                n += 1;
                let step = if n < 3 {
                    Step::Retry(format!("not yet {n}"))
                } else {
                    Step::Done(n)
                };
                async move { step }
            })
            .await;
        assert_eq!(value.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_at_once_on_fail() {
        let r: Result<(), _> = B.run("op", || async { Step::Fail("boom") }).await;
        assert!(matches!(r, Err(WaitError::Failed("boom"))));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_the_deadline_with_a_clear_error() {
        let start = Instant::now();
        let r: Result<(), WaitError<String>> = B
            .run("delete subnet public-a (subnet-1)", || async {
                Step::Retry("DependencyViolation: has dependencies".to_owned())
            })
            .await;
        let waited = start.elapsed();
        assert!(
            waited >= B.deadline && waited < B.deadline + B.max,
            "{waited:?}"
        );
        let text = r.unwrap_err().to_string();
        assert!(
            text.starts_with("delete subnet public-a (subnet-1): gave up after"),
            "{text}"
        );
        assert!(text.contains("DependencyViolation"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_an_attempt_that_hangs() {
        let start = Instant::now();
        let mut n = 0;
        let r: Result<(), WaitError<String>> = B
            .run("describe nat-gateway nat-a", || {
                n += 1;
                let first = n == 1;
                async move {
                    if first {
                        // The first attempt answers "not yet"; the second never answers.
                        Step::Retry("pending".to_owned())
                    } else {
                        std::future::pending().await
                    }
                }
            })
            .await;
        assert_eq!(start.elapsed(), B.deadline);
        let text = r.unwrap_err().to_string();
        assert!(text.contains("gave up after 2 attempts"), "{text}");
        assert!(text.contains("cut at the deadline"), "{text}");
    }

    /// An error with an AWS code and message, as the SDK's errors have.
    #[derive(Debug)]
    struct Coded(&'static str, &'static str);

    impl fmt::Display for Coded {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}: {}", self.0, self.1)
        }
    }

    impl ProvideErrorMetadata for Coded {
        fn meta(&self) -> &aws_smithy_types::error::ErrorMetadata {
            unreachable!("code and message are overridden")
        }
        fn code(&self) -> Option<&str> {
            Some(self.0)
        }
        fn message(&self) -> Option<&str> {
            Some(self.1)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_when_retries_what_the_caller_names_and_fails_the_rest_at_once() {
        // A policy not in force yet: retried, the reason is code and message.
        let mut n = 0;
        let r = B
            .retry_when(
                "ModifyLoadBalancerAttributes lb",
                |e: &Coded| e.0 == "InvalidConfigurationRequest" && e.1.contains("Access Denied"),
                || {
                    n += 1;
                    let answer = if n < 3 {
                        Err(Coded(
                            "InvalidConfigurationRequest",
                            "Access Denied for bucket",
                        ))
                    } else {
                        Ok(n)
                    };
                    async move { answer }
                },
            )
            .await;
        assert_eq!(r.unwrap(), 3);
        // The same code with another message is not what the caller named.
        let mut calls = 0;
        let r: Result<(), _> = B
            .retry_when(
                "ModifyLoadBalancerAttributes lb",
                |e: &Coded| e.0 == "InvalidConfigurationRequest" && e.1.contains("Access Denied"),
                || {
                    calls += 1;
                    async { Err(Coded("InvalidConfigurationRequest", "bad attribute")) }
                },
            )
            .await;
        assert!(matches!(
            r,
            Err(WaitError::Failed(Coded(_, "bad attribute")))
        ));
        assert_eq!(calls, 1);
        // Out of time, the error says what it waited for.
        let text = B
            .retry_codes(
                "CreateSubnet subnet",
                &["InvalidVpcID.NotFound"],
                || async { Err::<(), _>(Coded("InvalidVpcID.NotFound", "no such VPC")) },
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("InvalidVpcID.NotFound: no such VPC"),
            "{text}"
        );
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
