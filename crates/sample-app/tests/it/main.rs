//! End-to-end tests of the `sample-app` binary: a real process on 127.0.0.1 with a fake ECS
//! task metadata endpoint served by the test.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions fail loudly.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

const BIN: &str = env!("CARGO_BIN_EXE_sample-app");
const TASK_ARN: &str = "arn:aws:ecs:eu-west-1:123456789012:task/web/0123456789abcdef";

/// A fake metadata endpoint v4: `GET /v4/meta/task` answers like Fargate does.
async fn metadata_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<Incoming>| async move {
                        let body = if req.uri().path() == "/v4/meta/task" {
                            format!(
                                r#"{{"Cluster":"web","TaskARN":"{TASK_ARN}","AvailabilityZone":"eu-west-1b","Family":"app"}}"#
                            )
                        } else {
                            String::new()
                        };
                        let status = if body.is_empty() { 404 } else { 200 };
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running sample-app, killed when dropped.
struct App {
    child: Child,
    port: u16,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl App {
    async fn start(env: &[(&str, String)]) -> App {
        let port = free_port();
        let mut command = Command::new(BIN);
        command
            .env_remove("ECS_CONTAINER_METADATA_URI_V4")
            .env_remove("AZ")
            .env_remove("TASK_ID")
            .env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let app = App {
            child: command.spawn().unwrap(),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _, _)) = get(app.port, "/health").await {
                return app;
            }
            assert!(
                Instant::now() < deadline,
                "sample-app did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn health_command(&self) -> std::process::ExitStatus {
        Command::new(BIN)
            .arg("health")
            .env("PORT", self.port.to_string())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    }

    /// Waits (bounded) for the process to exit and returns its status.
    async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sample-app did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One GET on a fresh connection: (status, headers, body).
async fn get(port: u16, path: &str) -> Result<(u16, http::HeaderMap, String), String> {
    request(port, http::Method::GET, path).await
}

/// One request on a fresh connection: (status, headers, body).
async fn request(
    port: u16,
    method: http::Method,
    path: &str,
) -> Result<(u16, http::HeaderMap, String), String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[tokio::test]
async fn root_reports_az_and_task_from_the_metadata_endpoint() {
    let meta = metadata_server().await;
    let app = App::start(&[(
        "ECS_CONTAINER_METADATA_URI_V4",
        format!("http://{meta}/v4/meta"),
    )])
    .await;
    let (status, headers, body) = get(app.port, "/").await.unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"az": "eu-west-1b", "task": TASK_ARN})
    );
    assert_eq!(headers["x-az"], "eu-west-1b");
    assert_eq!(headers["x-task"], TASK_ARN);
    assert_eq!(headers["content-type"], "application/json");

    let (status, headers, body) = get(app.port, "/health").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(headers["x-az"], "eu-west-1b");

    let (status, headers, _) = get(app.port, "/nope").await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(headers["x-task"], TASK_ARN);
}

#[tokio::test]
async fn falls_back_to_env_when_metadata_is_missing_or_broken() {
    let app = App::start(&[("AZ", "zone-x".into()), ("TASK_ID", "t-1".into())]).await;
    let (_, headers, body) = get(app.port, "/").await.unwrap();
    assert_eq!(headers["x-az"], "zone-x");
    assert_eq!(body, r#"{"az":"zone-x","task":"t-1"}"#);

    // A metadata endpoint that refuses connections: falls back, then to "unknown".
    let dead = format!("http://127.0.0.1:{}/v4", free_port());
    let app = App::start(&[("ECS_CONTAINER_METADATA_URI_V4", dead)]).await;
    let (_, headers, _) = get(app.port, "/").await.unwrap();
    assert_eq!(headers["x-az"], "unknown");
    assert_eq!(headers["x-task"], "unknown");
}

#[tokio::test]
async fn work_burns_cpu_and_sleeps_and_rejects_garbage_when_work_routes_are_on() {
    // Off by default: on a public load balancer it would let anyone burn the service's CPU.
    let app = App::start(&[("AZ", "a".into())]).await;
    assert_eq!(get(app.port, "/work?cpu_ms=50").await.unwrap().0, 404);
    let app = App::start(&[("AZ", "a".into()), ("WORK_ROUTES", "1".into())]).await;
    let start = Instant::now();
    let (status, _, body) = get(app.port, "/work?cpu_ms=50&sleep_ms=50").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"cpu_ms":50,"sleep_ms":50}"#);
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
    let (status, headers, _) = get(app.port, "/work?cpu_ms=lots").await.unwrap();
    assert_eq!(status, 400);
    assert_eq!(headers["x-az"], "a");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut app = App::start(&[("AZ", "a".into()), ("WORK_ROUTES", "true".into())]).await;
    let port = app.port;
    let slow = tokio::spawn(async move { get(port, "/work?sleep_ms=700").await });
    // Let the slow request reach the server before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, _, body) = slow
        .await
        .unwrap()
        .expect("in-flight request must complete");
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"cpu_ms":0,"sleep_ms":700}"#);
    let exit = app.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    // It no longer accepts connections.
    assert!(get(port, "/health").await.is_err());
}

#[tokio::test]
async fn health_subcommand_exit_codes() {
    let mut app = App::start(&[("AZ", "a".into())]).await;
    assert!(app.health_command().success());
    let port = app.port;
    app.child.kill().unwrap();
    app.wait_exit(Duration::from_secs(10)).await;
    let status = Command::new(BIN)
        .arg("health")
        .env("PORT", port.to_string())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn fail_health_turns_only_health_into_503_when_fault_routes_are_on() {
    // Off by default: the route does not exist.
    let app = App::start(&[("AZ", "a".into())]).await;
    let (status, _, _) = request(app.port, http::Method::POST, "/fail-health")
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(get(app.port, "/health").await.unwrap().0, 200);

    let app = App::start(&[("AZ", "a".into()), ("FAULT_ROUTES", "1".into())]).await;
    let (status, _, _) = request(app.port, http::Method::POST, "/fail-health")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, headers, body) = get(app.port, "/health").await.unwrap();
    assert_eq!((status, body.as_str()), (503, "failing"));
    assert_eq!(headers["x-az"], "a");
    assert_eq!(
        get(app.port, "/").await.unwrap().0,
        200,
        "/ keeps answering"
    );
    assert!(
        !app.health_command().success(),
        "the container health check fails too"
    );
}

#[test]
fn a_route_flag_that_is_not_a_boolean_stops_the_app_with_its_name() {
    let out = Command::new(BIN)
        .env("PORT", free_port().to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("WORK_ROUTES", "yes")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WORK_ROUTES")
            && stderr.contains("\"yes\"")
            && stderr.contains("1, true, 0 or false"),
        "{stderr}"
    );
}
