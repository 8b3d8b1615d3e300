//! The call policy against a server on loopback that throttles, hangs or is slow: what every
//! client built from a `Context` does with it. (STS's GetCallerIdentity, the smallest call.)

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use stackproof_infra::{CallPolicy, Context, StackName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const THROTTLED: &str = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>";
const IDENTITY: &str = "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/ana</Arn><UserId>AIDA</UserId><Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></GetCallerIdentityResponse>";

/// How the server answers request `n` (0-based).
#[derive(Clone, Copy)]
enum Behaviour {
    /// Throttles the first `n` requests, then answers.
    ThrottleFirst(usize),
    /// Reads the request and never answers.
    Hang,
    /// Answers after this long.
    Slow(Duration),
}

/// A server on 127.0.0.1 that answers as `behaviour` says; returns its URL and the count of
/// requests it read. It lives as long as the test's runtime.
async fn server(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    tokio::spawn(async move {
        // Bounded: no test sends more than 100 requests.
        for _ in 0..100 {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // One request per connection (the answer closes it): read its head and body.
                loop {
                    let Ok(n) = socket.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (status, body) = match behaviour {
                    Behaviour::ThrottleFirst(k) if n < k => ("400 Bad Request", THROTTLED),
                    Behaviour::ThrottleFirst(_) => ("200 OK", IDENTITY),
                    Behaviour::Hang => {
                        // Holds the connection open without a byte, for longer than any test.
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        return;
                    }
                    Behaviour::Slow(d) => {
                        tokio::time::sleep(d).await;
                        ("200 OK", IDENTITY)
                    }
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, seen)
}

fn context(url: &str, policy: Option<CallPolicy>) -> Context {
    let sdk = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .endpoint_url(url)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "id", "secret", None, None, "test",
        )))
        .build();
    let mut b = Context::builder(sdk, StackName::new("calls").unwrap());
    if let Some(p) = policy {
        b = b.call_policy(p);
    }
    b.build()
}

/// The default policy, with short backoffs and timeouts so the test takes seconds.
fn quick() -> CallPolicy {
    CallPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        attempt_timeout: Duration::from_millis(500),
        operation_timeout: Duration::from_secs(3),
        ..CallPolicy::default()
    }
}

async fn identity(cx: &Context) -> Result<String, String> {
    let sts: aws_sdk_sts::Client = stackproof_infra::client!(cx, aws_sdk_sts);
    sts.get_caller_identity()
        .send()
        .await
        .map(|o| o.account().unwrap_or_default().to_owned())
        .map_err(|e| {
            format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            )
        })
}

#[tokio::test]
async fn a_throttling_storm_is_outlasted_within_the_attempts() {
    // Seven throttled answers: the SDK's default (3 attempts) gives up; the policy (10) does not.
    let (url, seen) = server(Behaviour::ThrottleFirst(7)).await;
    // What the SDK's default of 3 attempts does.
    let sdk_default = context(
        &url,
        Some(CallPolicy {
            max_attempts: 3,
            ..quick()
        }),
    );
    let err = identity(&sdk_default).await.unwrap_err();
    assert!(err.contains("Throttling"), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    let cx = context(&url, Some(quick()));
    assert_eq!(identity(&cx).await.unwrap(), "123456789012");
    // 3 before, then 4 more throttled and the answer.
    assert_eq!(seen.load(Ordering::SeqCst), 3 + 5);
}

#[tokio::test]
async fn throttling_beyond_the_attempts_fails_naming_it() {
    let (url, seen) = server(Behaviour::ThrottleFirst(100)).await;
    let cx = context(
        &url,
        Some(CallPolicy {
            max_attempts: 4,
            ..quick()
        }),
    );
    let err = identity(&cx).await.unwrap_err();
    assert!(
        err.contains("Throttling") && err.contains("Rate exceeded"),
        "{err}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_hung_endpoint_is_cut_by_the_attempt_and_operation_timeouts() {
    let (url, seen) = server(Behaviour::Hang).await;
    let cx = context(&url, Some(quick()));
    let start = Instant::now();
    let err = identity(&cx).await.unwrap_err();
    let took = start.elapsed();
    assert!(
        err.to_lowercase().contains("timeout") || err.to_lowercase().contains("timed out"),
        "{err}"
    );
    // Each attempt was cut at 500 ms and retried; the operation ended by its 3 s timeout.
    assert!(
        seen.load(Ordering::SeqCst) >= 2,
        "{} attempts",
        seen.load(Ordering::SeqCst)
    );
    assert!(took < Duration::from_secs(30), "hung for {took:?}");
}

#[tokio::test]
async fn a_slow_answer_within_the_attempt_timeout_is_not_cut() {
    let (url, seen) = server(Behaviour::Slow(Duration::from_millis(200))).await;
    let cx = context(&url, Some(quick()));
    assert_eq!(identity(&cx).await.unwrap(), "123456789012");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn the_default_policy_retries_throttling_adaptively_and_bounds_every_call() {
    let cx = context("http://127.0.0.1:9", None);
    let sdk = cx.sdk_config();
    let retry = sdk.retry_config().unwrap();
    assert_eq!(retry.mode(), aws_config::retry::RetryMode::Adaptive);
    assert_eq!(retry.max_attempts(), 10);
    let timeouts = sdk.timeout_config().unwrap();
    assert_eq!(
        timeouts.operation_attempt_timeout(),
        Some(Duration::from_secs(30))
    );
    assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(300)));
    assert_eq!(
        timeouts.connect_timeout(),
        Some(Duration::from_millis(3100))
    );
}
