//! What every module call gets: SDK configuration, stack identity, tags, waits, progress.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};

use crate::tags;
use crate::{CallCounter, NoProgress, Progress};

/// A validated stack name: 1 to 24 characters, lowercase ASCII letters, digits and hyphens,
/// starting with a letter and not ending with a hyphen. It becomes part of resource names
/// (load balancer names allow 32 characters, bucket names must be lowercase), hence the rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackName(String);

/// A stack name that breaks the rule of [`StackName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stack name {value:?} is not allowed: use {allowed}")]
pub struct StackNameError {
    /// The rejected value.
    pub value: String,
    /// What is allowed, and why, for the rule it breaks.
    pub allowed: &'static str,
}

impl StackName {
    /// The longest name allowed.
    pub const MAX_LEN: usize = 24;

    /// Checks `value` against the rule.
    pub fn new(value: impl Into<String>) -> Result<Self, StackNameError> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value.starts_with(|c: char| c.is_ascii_lowercase())
            && !value.ends_with('-')
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let allowed = if !ok {
            "1 to 24 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'"
        } else if value.contains("--") {
            // The stack's ECR repository is named after it.
            "a name without \"--\": ECR repository names allow no two separators in a row"
        } else if value == "internal" || value.starts_with("internal-") {
            // The stack's load balancer is `{stack}-alb`.
            "a name that is not \"internal\" and does not start with \"internal-\": load balancer names (the stack's is {stack}-alb) may not begin with \"internal-\""
        } else {
            return Ok(Self(value));
        };
        Err(StackNameError { value, allowed })
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long to keep retrying each kind of AWS behaviour the SDK does not retry itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    /// A resource that was just created is not yet visible (`InvalidVpcID.NotFound`, ...).
    /// Default 2 minutes.
    pub eventual_consistency: Duration,
    /// A delete blocked by something still releasing (`DependencyViolation`). Default 10 minutes.
    pub dependency: Duration,
    /// A resource reaching a state (a NAT gateway becoming available). Default 15 minutes.
    pub resource_state: Duration,
    /// The first delay between attempts; it doubles up to `max_delay`. Default 250 ms.
    pub initial_delay: Duration,
    /// The longest delay between attempts. Default 10 s.
    pub max_delay: Duration,
}

impl WaitPolicy {
    /// Waits for tests whose clients answer from mocks, on a paused tokio clock: 100 ms first
    /// delay, 5 s at most, deadlines of 30 s (not visible yet) and 60 s (dependencies, states).
    pub const MOCKED: WaitPolicy = WaitPolicy {
        eventual_consistency: Duration::from_secs(30),
        dependency: Duration::from_secs(60),
        resource_state: Duration::from_secs(60),
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
    };
}

impl Default for WaitPolicy {
    fn default() -> Self {
        Self {
            eventual_consistency: Duration::from_secs(120),
            dependency: Duration::from_secs(600),
            resource_state: Duration::from_secs(900),
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// How every AWS call made through a [`Context`] is retried and timed out: set on the SDK
/// configuration when the context is built, so every client built from it carries it.
///
/// The SDK's own default is the standard retry mode with 3 attempts and no operation or attempt
/// timeout: a throttled deploy fails, and a call to an endpoint that accepts the connection and
/// never answers hangs for as long as the connection lives (holding the stack's lock). These
/// defaults retry throttling in adaptive mode (the client slows its own rate after throttling
/// answers) for up to 10 attempts, and cut any attempt after 30 s and any operation, its
/// retries included, after 5 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// Attempts of one operation, the first included (throttling, 5xx, timeouts). Default 10.
    pub max_attempts: u32,
    /// The first backoff between attempts; it grows exponentially (with jitter). Default 1 s.
    pub initial_backoff: Duration,
    /// The longest backoff. Default 20 s.
    pub max_backoff: Duration,
    /// Connect timeout. Default 3.1 s (the SDK's).
    pub connect_timeout: Duration,
    /// One attempt, from sending the request to the end of the response. Default 30 s.
    pub attempt_timeout: Duration,
    /// One operation, every attempt and backoff included. Default 5 minutes.
    pub operation_timeout: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            connect_timeout: Duration::from_millis(3100),
            attempt_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(300),
        }
    }
}

impl CallPolicy {
    /// `sdk` with this policy's retry and timeout configuration.
    pub fn apply(&self, sdk: &SdkConfig) -> SdkConfig {
        sdk.to_builder()
            .retry_config(
                aws_config::retry::RetryConfig::adaptive()
                    .with_max_attempts(self.max_attempts)
                    .with_initial_backoff(self.initial_backoff)
                    .with_max_backoff(self.max_backoff),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(self.connect_timeout)
                    .operation_attempt_timeout(self.attempt_timeout)
                    .operation_timeout(self.operation_timeout)
                    .build(),
            )
            .build()
    }
}

/// Everything a module call needs besides its own configuration.
#[derive(Clone)]
pub struct Context {
    sdk: SdkConfig,
    stack: StackName,
    user_tags: BTreeMap<String, String>,
    interceptors: Vec<SharedInterceptor>,
    calls: CallCounter,
    waits: WaitPolicy,
    policy: CallPolicy,
    progress: Arc<dyn Progress>,
    run: String,
    account: Option<String>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("stack", &self.stack)
            .field("region", &self.sdk.region())
            .field("user_tags", &self.user_tags)
            .field("waits", &self.waits)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Starts a context for tests whose clients answer from mocks (`aws-smithy-mocks`): region
    /// `eu-west-1`, no endpoint and no credentials (a request that escapes its mock fails at
    /// once), and [`WaitPolicy::MOCKED`]. Every module's mocked tests start here.
    pub fn mocked(stack: StackName) -> ContextBuilder {
        let sdk = SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        Context::builder(sdk, stack).waits(WaitPolicy::MOCKED)
    }

    /// Starts a context for `stack` on the given SDK configuration.
    pub fn builder(sdk: SdkConfig, stack: StackName) -> ContextBuilder {
        ContextBuilder {
            cx: Context {
                sdk,
                stack,
                user_tags: BTreeMap::new(),
                interceptors: Vec::new(),
                calls: CallCounter::default(),
                waits: WaitPolicy::default(),
                policy: CallPolicy::default(),
                progress: Arc::new(NoProgress),
                run: run_id(),
                account: None,
            },
        }
    }

    /// The SDK configuration (region, credentials, endpoint), with the [`CallPolicy`]'s retry
    /// and timeout configuration.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The region name, or an empty string when none is configured.
    pub fn region(&self) -> &str {
        self.sdk.region().map(|r| r.as_ref()).unwrap_or_default()
    }

    /// The account the SDK configuration acts in, when the caller has read it already (STS
    /// GetCallerIdentity, once per run): modules that need it use it instead of asking again.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The stack and region a module's configuration is checked for ([`crate::Config`]).
    pub fn scope(&self) -> crate::Scope<'_> {
        crate::Scope::new(self.stack.as_str(), self.region())
    }

    /// The stack name.
    pub fn stack(&self) -> &StackName {
        &self.stack
    }

    /// Interceptors every client built from this context carries (see [`crate::client!`]);
    /// the call counter is always among them.
    pub fn interceptors(&self) -> impl Iterator<Item = &SharedInterceptor> {
        self.interceptors.iter()
    }

    /// The counter of AWS calls made through clients built from this context.
    pub fn calls(&self) -> &CallCounter {
        &self.calls
    }

    /// How long to retry.
    pub fn waits(&self) -> &WaitPolicy {
        &self.waits
    }

    /// Where progress events go.
    pub fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    /// The client token (idempotency token) for creating the resource `kind` named `name` in
    /// this run: the same for every call of the run, so a create sent again (an attempt cut by
    /// the operation timeout, a retry of ours after an error that may have hidden a success)
    /// returns the resource the first one made instead of a second one. Another run (another
    /// context) gets other tokens: a resource deleted since is created anew, not returned.
    /// At most 64 ASCII characters, as EC2 and ECS allow.
    pub fn client_token(&self, kind: &str, name: &str) -> String {
        let token = format!("{}-{kind}-{name}", self.run);
        if token.len() <= 64 && token.is_ascii() {
            return token;
        }
        format!("{}-{:016x}", self.run, fnv1a(&format!("{kind}\0{name}")))
    }

    /// The tags of one resource of `module` named `name` (see [`tags::for_resource`]).
    pub fn tags(&self, module: &str, name: &str) -> BTreeMap<String, String> {
        tags::for_resource(self.stack.as_str(), &self.user_tags, module, name)
    }
}

/// A run id: 16 hex digits from the process's randomly keyed hasher, the time and the pid.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(now);
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// FNV-1a, 64 bits: a stable hash (std's is keyed per process).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Builds a [`Context`].
#[derive(Debug)]
pub struct ContextBuilder {
    cx: Context,
}

impl ContextBuilder {
    /// Tags added to every resource, besides the identity tags. Keys starting with
    /// `stackproof:` are reserved and must be rejected by configuration validation first.
    pub fn user_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.cx.user_tags = tags;
        self
    }

    /// An interceptor for every client (for example one that adds a header).
    pub fn interceptor(mut self, interceptor: impl Intercept + 'static) -> Self {
        self.cx
            .interceptors
            .push(SharedInterceptor::new(interceptor));
        self
    }

    /// The wait policy.
    pub fn waits(mut self, waits: WaitPolicy) -> Self {
        self.cx.waits = waits;
        self
    }

    /// How AWS calls are retried and timed out (default [`CallPolicy::default`]).
    pub fn call_policy(mut self, policy: CallPolicy) -> Self {
        self.cx.policy = policy;
        self
    }

    /// The account the SDK configuration acts in, as STS GetCallerIdentity answered it; see
    /// [`Context::account`].
    pub fn account(mut self, account: impl Into<String>) -> Self {
        self.cx.account = Some(account.into());
        self
    }

    /// The progress sink.
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.cx.progress = progress;
        self
    }

    /// Finishes the context.
    pub fn build(mut self) -> Context {
        self.cx.sdk = self.cx.policy.apply(&self.cx.sdk);
        let counter = SharedInterceptor::new(self.cx.calls.clone());
        self.cx.interceptors.insert(0, counter);
        self.cx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context {
        let sdk = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        Context::builder(sdk, StackName::new("demo").unwrap()).build()
    }

    #[test]
    fn client_tokens_are_stable_in_a_run_distinct_across_runs_and_fit_64_ascii_characters() {
        let (a, b) = (cx(), cx());
        let t = a.client_token("route-table", "public");
        assert_eq!(t, a.client_token("route-table", "public"));
        assert_eq!(
            t,
            a.clone().client_token("route-table", "public"),
            "clones share the run"
        );
        assert_ne!(t, a.client_token("route-table", "private-a"));
        assert_ne!(
            t,
            b.client_token("route-table", "public"),
            "another run, another token"
        );
        let long = "x".repeat(80);
        let t = a.client_token("route-table", &long);
        assert!(t.len() <= 64 && t.is_ascii(), "{t}");
        assert_eq!(t, a.client_token("route-table", &long));
        assert_ne!(t, a.client_token("route-table", &"y".repeat(80)));
    }

    #[test]
    fn stack_names() {
        for ok in ["a", "demo", "web-1", "abcdefghijklmnopqrstuvwx"] {
            assert!(StackName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Demo",
            "demo-",
            "de_mo",
            "abcdefghijklmnopqrstuvwxy",
            "dé",
            "web--1",
            "internal",
            "internal-web",
        ] {
            let err = StackName::new(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        // Names AWS takes that only look close to the rules.
        for ok in ["internalweb", "web-internal", "w-e-b"] {
            assert!(StackName::new(ok).is_ok(), "{ok}");
        }
        let err = StackName::new("a--b").unwrap_err();
        assert!(err.allowed.contains("ECR repository names"), "{err}");
        let err = StackName::new("internal-web").unwrap_err();
        assert!(
            err.allowed.contains("may not begin with \"internal-\""),
            "{err}"
        );
    }
}
