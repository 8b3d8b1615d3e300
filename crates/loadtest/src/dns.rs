//! [`DnsResolver`]: asks one DNS server (UDP, RFC 1035) for a name's A records and keeps the
//! answer's TTL, so the engine re-resolves when the records expire, as a client that honours
//! DNS does. Used with a server the system resolver does not know of (the sandbox's, which
//! answers for its load balancers' names with one address per zone, TTL as AWS's).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::resolve::{Resolve, ResolveFuture, Resolved, ResolvedFuture};

/// How long one query waits for its answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries sent before giving up.
const ATTEMPTS: u32 = 3;

/// A resolver that asks `server` over UDP.
#[derive(Debug, Clone)]
pub struct DnsResolver {
    server: SocketAddr,
}

impl DnsResolver {
    /// Asks `server` (e.g. `127.0.0.1:5353`).
    pub fn new(server: SocketAddr) -> Self {
        Self { server }
    }

    async fn query(&self, host: &str, port: u16) -> io::Result<Resolved> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(Resolved {
                addrs: vec![SocketAddr::new(ip, port)],
                ttl: None,
            });
        }
        let bind: SocketAddr = if self.server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(self.server).await?;
        let mut buf = vec![0u8; 1500];
        for attempt in 0..ATTEMPTS {
            let id = (std::process::id() as u16) ^ (attempt as u16).wrapping_mul(0x9E37);
            let query = encode_query(id, host)?;
            socket.send(&query).await?;
            let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
            loop {
                let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(r) => r?,
                };
                match parse_answer(&buf[..n], id) {
                    Ok(Some((ips, ttl))) => {
                        return Ok(Resolved {
                            addrs: ips
                                .into_iter()
                                .map(|ip| SocketAddr::new(ip.into(), port))
                                .collect(),
                            ttl: Some(ttl),
                        });
                    }
                    // Another query's answer: keep waiting for ours.
                    Ok(None) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from DNS server {} for {host}", self.server),
        ))
    }
}

impl Resolve for DnsResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { self.query(host, port).await.map(|r| r.addrs) })
    }

    fn resolve_ttl<'a>(&'a self, host: &'a str, port: u16) -> ResolvedFuture<'a> {
        Box::pin(self.query(host, port))
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// A standard query (recursion desired) for the A records of `name`.
pub(crate) fn encode_query(id: u16, name: &str) -> io::Result<Vec<u8>> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| {
                invalid(format!(
                    "{name:?} is not a DNS name (a label of 1 to 63 characters)"
                ))
            })?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// Skips a (possibly compressed) name at `at`; returns the offset after it.
fn skip_name(msg: &[u8], mut at: usize) -> io::Result<usize> {
    loop {
        let len = *msg.get(at).ok_or_else(|| invalid("truncated name"))?;
        if len & 0xC0 == 0xC0 {
            return Ok(at + 2);
        }
        if len == 0 {
            return Ok(at + 1);
        }
        at += 1 + usize::from(len);
    }
}

fn u16_at(msg: &[u8], at: usize) -> io::Result<u16> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| invalid("truncated message"))
}

/// The A records and their least TTL of an answer to query `id`; `None` when the message
/// answers another query.
pub(crate) fn parse_answer(msg: &[u8], id: u16) -> io::Result<Option<(Vec<Ipv4Addr>, Duration)>> {
    if u16_at(msg, 0)? != id {
        return Ok(None);
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 {
        return Err(invalid("not a response"));
    }
    match flags & 0x000F {
        0 => {}
        3 => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such name (NXDOMAIN)",
            ));
        }
        code => {
            return Err(io::Error::other(format!(
                "DNS server answered rcode {code}"
            )));
        }
    }
    let questions = u16_at(msg, 4)?;
    let answers = u16_at(msg, 6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut ips = Vec::new();
    let mut ttl = u32::MAX;
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let kind = u16_at(msg, at)?;
        let class = u16_at(msg, at + 2)?;
        let record_ttl = msg
            .get(at + 4..at + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| invalid("truncated record"))?;
        let len = usize::from(u16_at(msg, at + 8)?);
        let data = msg
            .get(at + 10..at + 10 + len)
            .ok_or_else(|| invalid("truncated record data"))?;
        if kind == 1 && class == 1 && len == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
            ttl = ttl.min(record_ttl);
        }
        at += 10 + len;
    }
    if ips.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no A record in the answer",
        ));
    }
    Ok(Some((ips, Duration::from_secs(u64::from(ttl)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built answer: the question, then `ips` as A records with `ttl`, the first name a
    /// compression pointer.
    fn answer(id: u16, name: &str, ips: &[[u8; 4]], ttl: u32, rcode: u8) -> Vec<u8> {
        let q = encode_query(id, name).unwrap();
        let mut m = q.clone();
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[6..8].copy_from_slice(&(ips.len() as u16).to_be_bytes());
        for ip in ips {
            m.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4]);
            m.extend_from_slice(ip);
        }
        m
    }

    #[test]
    fn queries_and_answers_round_trip() {
        let q = encode_query(7, "web.example.").unwrap();
        assert_eq!(&q[12..], b"\x03web\x07example\x00\x00\x01\x00\x01");
        let m = answer(7, "web.example", &[[127, 0, 1, 2], [127, 0, 2, 2]], 60, 0);
        let (ips, ttl) = parse_answer(&m, 7).unwrap().unwrap();
        assert_eq!(
            ips,
            vec![Ipv4Addr::new(127, 0, 1, 2), Ipv4Addr::new(127, 0, 2, 2)]
        );
        assert_eq!(ttl, Duration::from_secs(60));
        assert!(
            parse_answer(&m, 8).unwrap().is_none(),
            "another query's answer"
        );
        let nx = answer(7, "web.example", &[], 60, 3);
        assert_eq!(
            parse_answer(&nx, 7).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert!(parse_answer(&m[..20], 7).is_err());
        assert!(encode_query(1, &"x".repeat(64)).is_err());
    }

    #[tokio::test]
    async fn asks_a_server_and_keeps_the_ttl() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert_eq!(&buf[12..n - 4], b"\x03alb\x04test\x00");
            let reply = answer(id, "alb.test", &[[127, 0, 3, 2]], 6, 0);
            server.send_to(&reply, from).await.unwrap();
        });
        let r = DnsResolver::new(addr)
            .resolve_ttl("alb.test", 8080)
            .await
            .unwrap();
        assert_eq!(
            r.addrs,
            vec!["127.0.3.2:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(r.ttl, Some(Duration::from_secs(6)));
    }
}
