//! Orders in PostgreSQL: what the stack's database (`[database]`) is for in the sample app.
//!
//! `POST /orders` with `{"id": "...", "item": "..."}` inserts the order and answers once the
//! commit is acknowledged (201 new, 200 when that id was already there: the client chooses the
//! id, so a retried write is harmless); `GET /orders/{id}` reads it back (200 or 404). Without
//! a database (no `$DATABASE_HOST`) both are 404s.
//!
//! The connection is made on first use and again after any failure: the endpoint's name is
//! resolved anew each time (a failover moves it), within [`CONNECT_TIMEOUT`]; a statement that
//! takes longer than [`STATEMENT_TIMEOUT`] (a primary cut off answers nothing) drops the
//! connection. A request tries at most [`ATTEMPTS`] times, then answers 503: bounded, so
//! requests do not pile up while the database fails over.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Mutex;
use tokio::task::AbortHandle;

/// How long making a connection (name, TCP, login) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one statement may take before the connection is given up.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per request.
pub const ATTEMPTS: u32 = 3;
/// The longest id and item accepted.
pub const MAX_ID: usize = 64;
/// See [`MAX_ID`].
pub const MAX_ITEM: usize = 256;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (
    id text PRIMARY KEY,
    item text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// Where the database is, from the task's environment.
#[derive(Debug, Clone)]
struct Settings {
    host: String,
    port: u16,
    name: String,
    user: String,
    password: String,
    /// The resolver to ask for `host` (`$STACKPROOF_DNS_SERVER`, in the sandbox), else the
    /// system's.
    dns: Option<SocketAddr>,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Order {
    /// The id the client chose.
    pub id: String,
    /// What was ordered.
    pub item: String,
}

impl Order {
    /// Checks an order a client sent; the message names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if self.id.is_empty()
            || self.id.len() > MAX_ID
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "id {:?}: 1 to {MAX_ID} letters, digits, '-' or '_'",
                self.id
            ));
        }
        if self.item.len() > MAX_ITEM {
            return Err(format!("item: at most {MAX_ITEM} bytes"));
        }
        Ok(())
    }
}

/// The database connection, remade after a failure.
#[derive(Debug)]
pub struct Database {
    settings: Settings,
    conn: Mutex<Option<(Arc<tokio_postgres::Client>, AbortHandle)>>,
}

/// The variables the database is configured by (what the stack hands the service).
const VARS: [&str; 5] = [
    "DATABASE_HOST",
    "DATABASE_PORT",
    "DATABASE_NAME",
    "DATABASE_USER",
    "DATABASE_PASSWORD",
];

impl Database {
    /// From `$DATABASE_HOST`, `$DATABASE_PORT` (default 5432), `$DATABASE_NAME`,
    /// `$DATABASE_USER`, `$DATABASE_PASSWORD` and `$STACKPROOF_DNS_SERVER`; `None` without a
    /// host. A variable that is missing or wrong is an error naming it.
    pub fn from_env() -> Result<Option<Database>, crate::Error> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let [host, port, name, user, password] = VARS;
        let Some(host_value) = var(host) else {
            return Ok(None);
        };
        let need = |n: &'static str| {
            var(n).ok_or(crate::Error::Env {
                name: n,
                value: String::new(),
                expected: "set when DATABASE_HOST is",
            })
        };
        let port_value = match var(port) {
            None => 5432,
            Some(v) => v.parse().map_err(|_| crate::Error::Env {
                name: port,
                value: v,
                expected: "a port number (1-65535)",
            })?,
        };
        let dns = match var("STACKPROOF_DNS_SERVER") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| crate::Error::Env {
                name: "STACKPROOF_DNS_SERVER",
                value: v,
                expected: "an address and port (127.0.0.1:5353)",
            })?),
        };
        Ok(Some(Database {
            settings: Settings {
                host: host_value,
                port: port_value,
                name: need(name)?,
                user: need(user)?,
                password: need(password)?,
                dns,
            },
            conn: Mutex::new(None),
        }))
    }

    /// The current connection, or a new one (resolving the host anew).
    async fn client(&self) -> Result<Arc<tokio_postgres::Client>, String> {
        let mut conn = self.conn.lock().await;
        if let Some((client, _)) = conn.as_ref()
            && !client.is_closed()
        {
            return Ok(client.clone());
        }
        if let Some((_, task)) = conn.take() {
            task.abort();
        }
        let s = &self.settings;
        let connect = async {
            let ip = resolve(&s.host, s.dns).await?;
            let mut config = tokio_postgres::Config::new();
            config
                .host(&s.host)
                .hostaddr(ip)
                .port(s.port)
                .dbname(&s.name)
                .user(&s.user)
                .password(&s.password)
                .connect_timeout(CONNECT_TIMEOUT)
                .application_name("sample-app");
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("connect to {} ({ip}): {e}", s.host))?;
            let task = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("sample-app: database connection ended: {e}");
                }
            });
            client
                .batch_execute(SCHEMA)
                .await
                .map_err(|e| format!("create table orders: {e}"))?;
            Ok::<_, String>((Arc::new(client), task.abort_handle()))
        };
        let (client, task) = tokio::time::timeout(CONNECT_TIMEOUT + STATEMENT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("connect to {}: no answer", s.host))??;
        *conn = Some((client.clone(), task));
        Ok(client)
    }

    /// Forgets the connection (after a failure), so the next use makes a new one.
    async fn drop_connection(&self) {
        if let Some((_, task)) = self.conn.lock().await.take() {
            task.abort();
        }
    }

    /// Runs `op` with a connection, at most [`ATTEMPTS`] times; the last error otherwise.
    async fn with_retries<T, F, Fut>(&self, op: F) -> Result<T, String>
    where
        F: Fn(Arc<tokio_postgres::Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            let client = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            match tokio::time::timeout(STATEMENT_TIMEOUT, op(client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    // A constraint or syntax error is the request's, not the connection's.
                    if e.as_db_error().is_some() && !e.is_closed() {
                        return Err(e.to_string());
                    }
                    last = e.to_string();
                }
                Err(_) => last = format!("no answer within {STATEMENT_TIMEOUT:?}"),
            }
            self.drop_connection().await;
        }
        Err(last)
    }

    /// Stores `order` (once: a second write of its id changes nothing); `true` when new.
    /// Returns once the commit is acknowledged.
    pub async fn put(&self, order: &Order) -> Result<bool, String> {
        let inserted = self
            .with_retries(|c| async move {
                c.execute(
                    "INSERT INTO orders (id, item) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[&order.id, &order.item],
                )
                .await
            })
            .await?;
        Ok(inserted == 1)
    }

    /// The order `id`, if stored.
    pub async fn get(&self, id: &str) -> Result<Option<Order>, String> {
        let row = self
            .with_retries(|c| async move {
                c.query_opt("SELECT id, item FROM orders WHERE id = $1", &[&id])
                    .await
            })
            .await?;
        Ok(row.map(|r| Order {
            id: r.get(0),
            item: r.get(1),
        }))
    }
}

/// `host`'s address: itself when it is one, else an A record from `dns` (or the system's
/// resolver).
pub(crate) async fn resolve(host: &str, dns: Option<SocketAddr>) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    match dns {
        Some(server) => query_a(host, server).await,
        None => tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .map(|a| a.ip())
            .ok_or_else(|| format!("resolve {host}: no address")),
    }
}

/// Asks `server` (UDP, RFC 1035) for `host`'s first A record.
async fn query_a(host: &str, server: SocketAddr) -> Result<IpAddr, String> {
    let fail = |why: String| format!("resolve {host} at {server}: {why}");
    let mut query = vec![0x53, 0x50, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in host.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..64).contains(l))
            .ok_or_else(|| fail(format!("bad label {label:?}")))?;
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut buf = [0u8; 512];
    let mut answer = None;
    for _ in 0..3 {
        socket
            .send_to(&query, server)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
        {
            answer = Some(n);
            break;
        }
    }
    let n = answer.ok_or_else(|| fail("no answer".to_owned()))?;
    first_a(&buf[..n], query.len()).ok_or_else(|| fail("no A record".to_owned()))
}

/// The first A record of a DNS answer whose question section ends at `question_end`.
fn first_a(msg: &[u8], question_end: usize) -> Option<IpAddr> {
    let answers = u16::from_be_bytes([*msg.get(6)?, *msg.get(7)?]);
    let mut at = question_end;
    for _ in 0..answers {
        // The owner name: a pointer (two bytes) or labels ending in a zero byte.
        loop {
            let len = *msg.get(at)?;
            if len & 0xC0 == 0xC0 {
                at += 2;
                break;
            }
            at += 1 + usize::from(len);
            if len == 0 {
                break;
            }
        }
        let kind = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        let len = usize::from(u16::from_be_bytes([*msg.get(at + 8)?, *msg.get(at + 9)?]));
        let data = msg.get(at + 10..at + 10 + len)?;
        if kind == 1 && len == 4 {
            return Some(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            )));
        }
        at += 10 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_checked_by_id_and_item() {
        let order = |id: &str, item: &str| Order {
            id: id.to_owned(),
            item: item.to_owned(),
        };
        assert!(order("run-1_a", "book").check().is_ok());
        assert!(order("", "x").check().unwrap_err().contains("id \"\""));
        assert!(order("a b", "x").check().is_err());
        assert!(order(&"a".repeat(65), "x").check().is_err());
        assert!(
            order("a", &"x".repeat(257))
                .check()
                .unwrap_err()
                .contains("item")
        );
    }

    #[test]
    fn the_first_a_record_is_read_past_the_question() {
        // Header (1 answer), question for "db.x", answer by pointer: A 127.0.1.4.
        let mut msg = vec![0x53, 0x50, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        msg.extend_from_slice(&[2, b'd', b'b', 1, b'x', 0, 0, 1, 0, 1]);
        let question_end = msg.len();
        msg.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 1, 4]);
        assert_eq!(
            first_a(&msg, question_end),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 4)))
        );
        assert_eq!(first_a(&msg[..question_end], question_end), None);
    }
}
