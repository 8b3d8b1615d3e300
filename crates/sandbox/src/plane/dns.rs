//! The sandbox's DNS server: it answers A queries for its load balancers' DNS names with the
//! addresses of their nodes that are in DNS (one per zone, as Route 53 answers for an ALB),
//! with the ALB's TTL on the plane's clock; any other name is NXDOMAIN. UDP on 127.0.0.1, RFC
//! 1035 by hand (one question per query, as resolvers send).
//!
//! A node leaves the answer only when AWS would take it out: a zonal shift away from its zone
//! (at once), or its impairment seen by Route 53's health checks ([`removal_delay`]). When no
//! node would be left, every node is answered (DNS fails open, as ELB's does).

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_model::aws::elb;
use aws_model::{Clock, Rng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::Error;

/// name (lower case) -> (addresses, TTL in seconds).
type Records = Arc<RwLock<HashMap<String, (Vec<Ipv4Addr>, u32)>>>;

/// The DNS server of a data plane.
#[derive(Debug)]
pub(crate) struct DnsServer {
    addr: SocketAddr,
    records: Records,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Listens on a free UDP port of 127.0.0.1.
    pub(crate) async fn start() -> Result<DnsServer, Error> {
        let io = |operation: &'static str| {
            move |source| Error::Io {
                operation,
                resource: "DNS server on 127.0.0.1".to_owned(),
                source,
            }
        };
        let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(io("bind"))?;
        let addr = socket.local_addr().map_err(io("local_addr"))?;
        let records: Records = Arc::default();
        let r = Arc::clone(&records);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let answer = {
                    let records = r.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                    answer(&buf[..n], &records)
                };
                if let Some(answer) = answer {
                    let _ = socket.send_to(&answer, from).await;
                }
            }
        });
        Ok(DnsServer {
            addr,
            records,
            task,
        })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the answer for `name`.
    pub(crate) fn set(&self, name: &str, ips: Vec<Ipv4Addr>, ttl: u32) {
        self.records
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_ascii_lowercase(), (ips, ttl));
    }

    /// Forgets every name not in `names`.
    pub(crate) fn retain(&self, names: &BTreeSet<String>) {
        self.records
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|n, _| names.contains(n));
    }

    /// Stops answering.
    pub(crate) async fn shutdown(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// The ALB records' TTL on `clock`, whole seconds (DNS has no smaller unit), at least one.
pub(crate) fn ttl(clock: Clock) -> u32 {
    let secs = clock.wall(elb::DNS_TTL).as_secs_f64().ceil();
    // A TTL of at most 60 s fits.
    (secs as u32).max(1)
}

/// How long after a node's reachability changed its address leaves (or rejoins) the DNS
/// answer: Route 53 sees [`elb::NODE_CHECK_FAILURES`] checks in a row, every
/// [`elb::NODE_CHECK_INTERVAL`], the first at a point of the interval fixed by the seed and the
/// node (model time).
pub(crate) fn removal_delay(seed: u64, node: &str) -> Duration {
    let failures = elb::NODE_CHECK_FAILURES.max(1);
    elb::NODE_CHECK_INTERVAL.mul_f64(f64::from(failures - 1) + Rng::keyed(seed, node))
}

/// The answer to one query, `None` when it is not a query to answer.
fn answer(query: &[u8], records: &HashMap<String, (Vec<Ipv4Addr>, u32)>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let questions = u16::from_be_bytes([query[4], query[5]]);
    let mut out = query[..12].to_vec();
    // QR, AA, the query's RD; RA off.
    out[2] = 0x84 | (query[2] & 0x01);
    out[3] = 0;
    out[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    if questions != 1 {
        out[3] = 1; // FORMERR
        out[4..6].copy_from_slice(&[0, 0]);
        return Some(out);
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).to_ascii_lowercase());
        at += 1 + len;
    }
    let kind = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question = query.get(12..at + 4)?;
    out.extend_from_slice(question);
    let name = labels.join(".");
    match records.get(&name) {
        None => out[3] = 3, // NXDOMAIN
        // A (1) or ANY (255): the addresses; other types: no data.
        Some((ips, ttl)) if kind == 1 || kind == 255 => {
            let n = u16::try_from(ips.len()).unwrap_or(u16::MAX);
            out[6..8].copy_from_slice(&n.to_be_bytes());
            for ip in ips.iter().take(usize::from(n)) {
                out.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&[0, 4]);
                out.extend_from_slice(&ip.octets());
            }
        }
        Some(_) => {}
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, kind: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&kind.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[test]
    fn answers_known_names_with_every_node_and_the_ttl() {
        let mut records = HashMap::new();
        records.insert(
            "web-1.eu-west-1.elb.amazonaws.com".to_owned(),
            (
                vec![Ipv4Addr::new(127, 0, 1, 2), Ipv4Addr::new(127, 0, 2, 2)],
                60,
            ),
        );
        let q = query(9, "Web-1.eu-west-1.elb.amazonaws.com", 1);
        let a = answer(&q, &records).unwrap();
        assert_eq!(&a[..2], &9u16.to_be_bytes());
        assert_eq!(a[2] & 0x80, 0x80, "a response");
        assert_eq!(a[3] & 0x0F, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 2);
        let first = q.len();
        assert_eq!(&a[first..first + 2], &[0xC0, 12]);
        assert_eq!(&a[first + 6..first + 10], &60u32.to_be_bytes());
        assert_eq!(&a[first + 12..first + 16], &[127, 0, 1, 2]);
        // Unknown name: NXDOMAIN; AAAA of a known one: no data.
        assert_eq!(
            answer(&query(1, "other.test", 1), &records).unwrap()[3] & 0x0F,
            3
        );
        let aaaa = answer(&query(1, "web-1.eu-west-1.elb.amazonaws.com", 28), &records).unwrap();
        assert_eq!((aaaa[3] & 0x0F, aaaa[7]), (0, 0));
        assert!(answer(&[0u8; 5], &records).is_none());
    }

    #[test]
    fn ttl_and_node_removal_follow_the_clock_and_the_seed() {
        assert_eq!(ttl(Clock::AWS), 60);
        assert_eq!(ttl(Clock::fast()), 6);
        assert_eq!(ttl(Clock::scaled(50.0).unwrap()), 2);
        let d = removal_delay(1, "alb/eu-west-1a");
        assert!(
            d >= Duration::from_secs(60) && d < Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(d, removal_delay(1, "alb/eu-west-1a"));
    }
}
