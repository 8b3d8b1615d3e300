//! Name resolution: the [`Resolve`] trait, the system resolver with `--resolve` overrides, and a
//! [`StaticResolver`] whose answers can be changed while a run is going (tests, embedding).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// A boxed resolution future.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// A boxed resolution future that also tells how long the answer may be kept.
pub type ResolvedFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Resolved>> + Send + 'a>>;

/// An answer: the addresses, and the records' TTL when the resolver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Every address.
    pub addrs: Vec<SocketAddr>,
    /// How long the answer may be kept (`None`: not known; the engine re-resolves every
    /// `dns-ttl`).
    pub ttl: Option<Duration>,
}

/// Resolves a host and port to every address it has. The engine calls it before the run and
/// then whenever the answer expires (its TTL, at most `dns-ttl` seconds), and spreads
/// connections over all the addresses returned.
pub trait Resolve: Send + Sync + fmt::Debug {
    /// All addresses of `host:port`.
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;

    /// All addresses of `host:port` with the answer's TTL; by default [`Resolve::resolve`]
    /// with no TTL.
    fn resolve_ttl<'a>(&'a self, host: &'a str, port: u16) -> ResolvedFuture<'a> {
        let f = self.resolve(host, port);
        Box::pin(async move { f.await.map(|addrs| Resolved { addrs, ttl: None }) })
    }
}

/// The system resolver (`getaddrinfo` through tokio), with curl-style overrides.
#[derive(Debug, Default, Clone)]
pub struct SystemResolver {
    overrides: Vec<(String, u16, Vec<IpAddr>)>,
}

impl SystemResolver {
    /// A resolver that answers `host:port` from `overrides` first.
    pub fn with_overrides(overrides: Vec<(String, u16, Vec<IpAddr>)>) -> Self {
        Self { overrides }
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            let lower = host.to_ascii_lowercase();
            if let Some((_, _, ips)) = self
                .overrides
                .iter()
                .find(|(h, p, _)| *h == lower && *p == port)
            {
                return Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
            }
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![SocketAddr::new(ip, port)]);
            }
            let mut out: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
            out.sort();
            out.dedup();
            Ok(out)
        })
    }
}

/// A resolver with a fixed, replaceable answer for every name.
#[derive(Debug)]
pub struct StaticResolver {
    answer: Mutex<io::Result<Vec<IpAddr>>>,
    calls: AtomicU64,
}

impl StaticResolver {
    /// Answers every name with `ips`.
    pub fn new(ips: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(Ok(ips)),
            calls: AtomicU64::new(0),
        })
    }
    /// Replaces the answer (takes effect at the next re-resolution).
    pub fn set(&self, ips: Vec<IpAddr>) {
        if let Ok(mut a) = self.answer.lock() {
            *a = Ok(ips);
        }
    }
    /// Makes every resolution fail with "not found".
    pub fn fail(&self) {
        if let Ok(mut a) = self.answer.lock() {
            *a = Err(io::Error::new(io::ErrorKind::NotFound, "name not found"));
        }
    }
    /// How many times the resolver was asked.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, _host: &'a str, port: u16) -> ResolveFuture<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = match self.answer.lock() {
            Ok(a) => match &*a {
                Ok(ips) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            },
            Err(_) => Err(io::Error::other("resolver lock poisoned")),
        };
        Box::pin(async move { r })
    }
}

/// The current address list shared by every connection, with a generation counter so a
/// connection notices a change with one relaxed load per request.
#[derive(Debug, Default)]
pub(crate) struct Addrs {
    list: RwLock<Arc<Vec<SocketAddr>>>,
    generation: AtomicU64,
}

impl Addrs {
    pub(crate) fn new(list: Vec<SocketAddr>) -> Self {
        Self {
            list: RwLock::new(Arc::new(list)),
            generation: AtomicU64::new(1),
        }
    }
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
    pub(crate) fn get(&self) -> Arc<Vec<SocketAddr>> {
        self.list.read().map(|l| Arc::clone(&l)).unwrap_or_default()
    }
    /// Replaces the list when it differs; returns whether it changed.
    pub(crate) fn set(&self, mut list: Vec<SocketAddr>) -> bool {
        list.sort();
        list.dedup();
        let Ok(mut cur) = self.list.write() else {
            return false;
        };
        if **cur == list {
            return false;
        }
        *cur = Arc::new(list);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }
}
