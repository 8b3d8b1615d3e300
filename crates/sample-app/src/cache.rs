//! The orders' cache in Redis (`[cache]`): a cache-aside read and a write-through after each
//! committed order, with a client of its own (RESP2 over TCP, or over TLS when the cache has
//! encryption in transit; a handful of commands need no library).
//!
//! The cache is never the truth: an order is in the database once its commit is acknowledged;
//! the cache only spares the database a read. So every cache failure (no connection, a timeout,
//! an error reply) falls back to the database, and is reported in the response's `x-cache`
//! header (`hit`, `miss`, `stored`, `down`), which is how the proof sees a cache failover. The
//! connection is made on first use and after any failure, the endpoint resolved anew each time
//! (a failover moves it), within [`TIMEOUT`] for connecting and for each command: a primary that
//! lost power answers nothing, and a read must not wait for it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// How long connecting (name, TCP, TLS) and each command may take.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// How long a cached order is kept.
pub const TTL_SECONDS: u32 = 300;
/// The longest reply line or value read.
const MAX_REPLY: usize = 64 * 1024;

/// The variables the cache is configured by (what the stack hands the service).
const VARS: [&str; 3] = ["REDIS_HOST", "REDIS_PORT", "REDIS_TLS"];

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the cache did for a request, as the `x-cache` header says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Read from the cache.
    Hit,
    /// Not in the cache: read from the database (and stored).
    Miss,
    /// Written to the cache after the commit.
    Stored,
    /// The cache did not answer: the database served.
    Down,
}

impl Outcome {
    /// The header's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stored => "stored",
            Outcome::Down => "down",
        }
    }
}

/// The cache connection, remade after a failure.
pub struct Cache {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    dns: Option<SocketAddr>,
    conn: Mutex<Option<BufReader<Box<dyn Stream>>>>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The TLS client: the system's roots and the authority in `ca_file`, when it names one (the
/// sandbox's).
fn tls_config(ca_file: Option<PathBuf>) -> Result<Arc<rustls::ClientConfig>, crate::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file.filter(|p| p.is_file()) {
        let bad = |why: String| crate::Error::Env {
            name: "STACKPROOF_CA_FILE",
            value: format!("{} ({why})", path.display()),
            expected: "a PEM file of CA certificates",
        };
        for cert in CertificateDer::pem_file_iter(&path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| crate::Error::Env {
            name: "REDIS_TLS",
            value: "true".to_owned(),
            expected: "TLS 1.2 or 1.3 available",
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Cache {
    /// From `$REDIS_HOST`, `$REDIS_PORT` (default 6379), `$REDIS_TLS` (`true` or `false`,
    /// default false), `$STACKPROOF_DNS_SERVER` and `$STACKPROOF_CA_FILE`; `None` without a host.
    /// A variable that is wrong is an error naming it.
    pub fn from_env() -> Result<Option<Cache>, crate::Error> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let [host, port, tls] = VARS;
        let Some(host_value) = var(host) else {
            return Ok(None);
        };
        let port_value = match var(port) {
            None => 6379,
            Some(v) => v.parse().map_err(|_| crate::Error::Env {
                name: port,
                value: v,
                expected: "a port number (1-65535)",
            })?,
        };
        let tls_on = match var(tls).as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(crate::Error::Env {
                    name: tls,
                    value: other.to_owned(),
                    expected: "true or false",
                });
            }
        };
        let dns = match var("STACKPROOF_DNS_SERVER") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| crate::Error::Env {
                name: "STACKPROOF_DNS_SERVER",
                value: v,
                expected: "an address and port (127.0.0.1:5353)",
            })?),
        };
        let tls = if tls_on {
            Some(tls_config(var("STACKPROOF_CA_FILE").map(PathBuf::from))?)
        } else {
            None
        };
        Ok(Some(Cache {
            host: host_value,
            port: port_value,
            tls,
            dns,
            conn: Mutex::new(None),
        }))
    }

    async fn connect(&self) -> Result<BufReader<Box<dyn Stream>>, String> {
        let ip = crate::orders::resolve(&self.host, self.dns).await?;
        let tcp = TcpStream::connect((ip, self.port))
            .await
            .map_err(|e| format!("connect to {} ({ip}): {e}", self.host))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{}: {e}", self.host))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        Ok(BufReader::new(stream))
    }

    /// Runs one command (connecting first when needed); the connection is dropped on any
    /// failure, so the next command makes a new one.
    async fn command(&self, args: &[&[u8]]) -> Result<Reply, String> {
        // One command at a time on the one connection; a request does not queue behind a cache
        // that hangs for longer than it would wait for the cache itself.
        let mut guard = tokio::time::timeout(TIMEOUT, self.conn.lock())
            .await
            .map_err(|_| format!("the connection stayed busy for {TIMEOUT:?}"))?;
        let result = tokio::time::timeout(TIMEOUT * 2, async {
            if guard.is_none() {
                *guard = Some(
                    tokio::time::timeout(TIMEOUT, self.connect())
                        .await
                        .map_err(|_| {
                            format!("connect to {}: no answer within {TIMEOUT:?}", self.host)
                        })??,
                );
            }
            let Some(conn) = guard.as_mut() else {
                return Err("no connection".to_owned());
            };
            conn.get_mut()
                .write_all(&encode(args))
                .await
                .map_err(|e| format!("send: {e}"))?;
            read_reply(conn).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")));
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// The cached value of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.command(&[b"GET", key.as_bytes()]).await? {
            Reply::Bulk(v) => Ok(v),
            other => Err(format!("GET {key}: unexpected reply {other:?}")),
        }
    }

    /// Stores `value` under `key` for [`TTL_SECONDS`].
    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), String> {
        let ttl = TTL_SECONDS.to_string();
        match self
            .command(&[b"SET", key.as_bytes(), value, b"EX", ttl.as_bytes()])
            .await?
        {
            Reply::Simple(s) if s == "OK" => Ok(()),
            other => Err(format!("SET {key}: unexpected reply {other:?}")),
        }
    }
}

/// A reply, as far as the commands used need.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
}

/// A command as RESP sends it: an array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one reply; an error reply (`-ERR ...`, `-READONLY ...` from a replica) is an error.
async fn read_reply<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<Reply, String> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_REPLY as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".to_owned());
    }
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end_matches(['\r', '\n']);
    let (kind, rest) = text.split_at_checked(1).ok_or("an empty reply")?;
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Err(format!("the server answered {rest}")),
        ":" => rest
            .parse()
            .map(Reply::Integer)
            .map_err(|_| format!("a bad integer reply {rest:?}")),
        "$" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| format!("a bad bulk length {rest:?}"))?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_REPLY)
                .ok_or_else(|| format!("a value of {len} bytes (at most {MAX_REPLY})"))?;
            let mut value = vec![0; len + 2];
            r.read_exact(&mut value)
                .await
                .map_err(|e| format!("read: {e}"))?;
            value.truncate(len);
            Ok(Reply::Bulk(Some(value)))
        }
        _ => Err(format!("an unknown reply {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"SET", b"order:a", b"{}", b"EX", b"300"]),
            b"*5\r\n$3\r\nSET\r\n$7\r\norder:a\r\n$2\r\n{}\r\n$2\r\nEX\r\n$3\r\n300\r\n"
        );
    }

    #[tokio::test]
    async fn replies_are_read_and_errors_are_errors() {
        let read = |bytes: &'static [u8]| async move {
            let mut r = BufReader::new(bytes);
            read_reply(&mut r).await
        };
        assert_eq!(read(b"+OK\r\n").await, Ok(Reply::Simple("OK".into())));
        assert_eq!(read(b":42\r\n").await, Ok(Reply::Integer(42)));
        assert_eq!(read(b"$-1\r\n").await, Ok(Reply::Bulk(None)));
        assert_eq!(
            read(b"$5\r\nhello\r\n").await,
            Ok(Reply::Bulk(Some(b"hello".to_vec())))
        );
        let err = read(b"-READONLY You can't write against a read only replica.\r\n")
            .await
            .unwrap_err();
        assert!(err.contains("READONLY"), "{err}");
        assert!(read(b"").await.is_err());
        assert!(read(b"$999999999\r\n").await.is_err());
    }
}
