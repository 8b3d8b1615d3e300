//! HTTPS: the engine over rustls against an in-process TLS server on 127.0.0.1 with the fixed
//! test PKI of `certs/` (a test CA and certificates for `app.test` and `other.test`; `gen.sh`
//! regenerates them). The URL names `app.test`, and `resolve` maps it to the server's address.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use stackproof_loadtest::{Config, Error};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Read at run time (cargo sets it for the test): a test binary reused from a clone at another
/// path still finds this clone's files.
fn cert_file(name: &str) -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("tests/it/certs")
    .join(name)
}

/// An HTTPS server presenting the certificate of `name` (signed by the test CA); counts
/// handshakes, failed handshakes and requests, and keeps the server name (SNI) of each handshake.
struct TlsServer {
    port: u16,
    handshakes: Arc<AtomicU64>,
    failed_handshakes: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    server_names: Arc<Mutex<Vec<Option<String>>>>,
    task: JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    async fn start(name: &str) -> TlsServer {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(cert_file(&format!("{name}.pem")))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(cert_file(&format!("{name}.key"))).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(AtomicU64::new(0));
        let failed_handshakes = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let server_names = Arc::new(Mutex::new(Vec::new()));
        let (h, f, r, n) = (
            Arc::clone(&handshakes),
            Arc::clone(&failed_handshakes),
            Arc::clone(&requests),
            Arc::clone(&server_names),
        );
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            for _ in 0..100_000 {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let (acceptor, h, f, r, n) = (
                    acceptor.clone(),
                    Arc::clone(&h),
                    Arc::clone(&f),
                    Arc::clone(&r),
                    Arc::clone(&n),
                );
                conns.push(tokio::spawn(async move {
                    let tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            f.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    h.fetch_add(1, Ordering::Relaxed);
                    n.lock()
                        .unwrap()
                        .push(tls.get_ref().1.server_name().map(str::to_owned));
                    let svc = service_fn(move |_req| {
                        r.fetch_add(1, Ordering::Relaxed);
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }));
            }
            for c in conns {
                c.abort();
            }
        });
        TlsServer {
            port,
            handshakes,
            failed_handshakes,
            requests,
            server_names,
            task,
        }
    }

    /// A config for `https://app.test:{port}/` with app.test mapped to this server.
    fn config(&self, rate: f64, duration: f64, cacert: bool) -> Config {
        Config {
            url: format!("https://app.test:{}/", self.port),
            resolve: vec![format!("app.test:{}:127.0.0.1", self.port)],
            cacert: cacert.then(|| cert_file("ca.pem")),
            rate,
            duration,
            connections: 20,
            timeout: 3.0,
            ..Default::default()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_custom_ca_sends_exactly_the_scheduled_requests_on_kept_alive_connections() {
    let server = TlsServer::start("app.test").await;
    let c = Config {
        threads: 2,
        ..server.config(200.0, 2.0, true)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    assert_eq!(
        (r.scheduled, r.sent, r.completed, r.ok, r.errors, r.unsent),
        (400, 400, 400, 400, 0, 0),
        "{:?}",
        r.errors_by_kind
    );
    assert_eq!(server.requests.load(Ordering::Relaxed), 400);
    assert_eq!(r.statuses.get("200"), Some(&400));
    assert_eq!(
        r.by_addr.get(&format!("127.0.0.1:{}", server.port)),
        Some(&400)
    );
    // Keep-alive: at most one TLS connection per connection slot, each handshake a connect.
    let handshakes = server.handshakes.load(Ordering::Relaxed);
    assert_eq!(r.connects, handshakes);
    assert!((1..=20).contains(&r.connects), "connects {}", r.connects);
    assert_eq!(server.failed_handshakes.load(Ordering::Relaxed), 0);
    // SNI carries the URL's host, not the address it was mapped to.
    let names = server.server_names.lock().unwrap().clone();
    assert!(
        names.iter().all(|n| n.as_deref() == Some("app.test")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connections_are_reopened_after_the_maximum_requests_per_connection() {
    let server = TlsServer::start("app.test").await;
    let c = Config {
        connections: 2,
        max_requests_per_connection: Some(10),
        ..server.config(100.0, 1.0, true)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    assert_eq!((r.sent, r.ok, r.errors), (100, 100, 0));
    assert!(r.connects >= 10, "connects {}", r.connects);
    assert_eq!(r.connects, server.handshakes.load(Ordering::Relaxed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_custom_ca_every_request_fails_with_tls_and_the_run_ends() {
    let server = TlsServer::start("app.test").await;
    let r = stackproof_loadtest::run(server.config(50.0, 1.0, false), None)
        .await
        .unwrap();
    assert_eq!((r.sent, r.completed, r.errors), (50, 0, 50));
    assert_eq!(r.errors_by_kind["tls"], 50, "{:?}", r.errors_by_kind);
    assert_eq!(r.connects, 0);
    assert_eq!(server.requests.load(Ordering::Relaxed), 0);
    assert_eq!(r.error_rate(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_fails_with_tls() {
    let server = TlsServer::start("other.test").await;
    let r = stackproof_loadtest::run(server.config(50.0, 1.0, true), None)
        .await
        .unwrap();
    assert_eq!((r.sent, r.completed, r.errors), (50, 0, 50));
    assert_eq!(r.errors_by_kind["tls"], 50, "{:?}", r.errors_by_kind);
    assert_eq!(server.requests.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_bad_cacert_is_reported_before_the_run_with_option_path_and_cause() {
    let missing = cert_file("missing.pem");
    let c = Config {
        url: "https://app.test/".into(),
        cacert: Some(missing.clone()),
        ..Default::default()
    };
    let Err(Error::Invalid(p)) = stackproof_loadtest::run(c, None).await else {
        panic!("expected Invalid")
    };
    assert_eq!(p.0.len(), 1, "{p}");
    assert_eq!(p.0[0].field, "cacert");
    assert_eq!(p.0[0].value, missing.display().to_string());
    assert!(p.0[0].allowed.contains("cannot read it"), "{p}");

    // A key file: PEM, but no certificate in it.
    let key = cert_file("app.test.key");
    let c = Config {
        url: "https://app.test/".into(),
        cacert: Some(key.clone()),
        ..Default::default()
    };
    let p = c.validate().unwrap_err();
    assert_eq!(p.0[0].field, "cacert");
    assert_eq!(p.0[0].value, key.display().to_string());
    assert!(
        p.0[0].allowed.contains("no \"BEGIN CERTIFICATE\" block"),
        "{p}"
    );
    assert!(p.to_string().starts_with("cacert: "), "{p}");
}

/// A TCP server on 127.0.0.1 that accepts connections and runs `each` on every one.
async fn raw_server<F, Fut>(each: F) -> (u16, JoinHandle<()>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((s, _)) = listener.accept().await else {
                break;
            };
            tokio::spawn(each(s));
        }
    });
    (port, task)
}

fn https_config(port: u16) -> Config {
    Config {
        url: format!("https://app.test:{port}/"),
        resolve: vec![format!("app.test:{port}:127.0.0.1")],
        cacert: Some(cert_file("ca.pem")),
        rate: 20.0,
        duration: 1.0,
        connections: 20,
        timeout: 3.0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_covers_a_tls_handshake_that_never_completes() {
    // Accepts and holds the connection without ever answering the ClientHello.
    let (port, task) = raw_server(|s| async move {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        drop(s);
    })
    .await;
    let c = Config {
        connect_timeout: 0.2,
        ..https_config(port)
    };
    let r = stackproof_loadtest::run(c, None).await.unwrap();
    task.abort();
    assert_eq!((r.sent, r.completed, r.errors), (20, 0, 20));
    assert_eq!(r.errors_by_kind["timeout"], 20, "{:?}", r.errors_by_kind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_speak_tls_fails_with_tls() {
    // Answers the ClientHello with a plain HTTP response, as an http:// server would.
    let (port, task) = raw_server(|mut s| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    })
    .await;
    let r = stackproof_loadtest::run(https_config(port), None)
        .await
        .unwrap();
    task.abort();
    assert_eq!((r.sent, r.completed, r.errors), (20, 0, 20));
    assert_eq!(r.errors_by_kind["tls"], 20, "{:?}", r.errors_by_kind);
}
