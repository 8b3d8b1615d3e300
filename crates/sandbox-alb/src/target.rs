//! Target group state: the registered and draining targets ([`Member`]), their health
//! bookkeeping, and the routable snapshot the hot path reads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::task::JoinHandle;

use crate::node::NodeState;
use crate::stats::StatsAcc;
use crate::{HealthCheck, Target, TargetHealth, TargetState, lock};

/// Health bookkeeping of one target (control path only).
#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) state: TargetState,
    pub(crate) reason: &'static str,
    pub(crate) passes: u32,
    pub(crate) failures: u32,
}

/// One registered (or draining) target and its connections.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) zone: Arc<str>,
    pub(crate) reachable: AtomicBool,
    pub(crate) health: Mutex<Health>,
    pub(crate) pool: Mutex<Vec<SendRequest<Incoming>>>,
    pub(crate) in_flight: AtomicUsize,
    /// Woken when the target gets partitioned or its deregistration delay ends: requests
    /// waiting for its answer stall (partition) or are cut (deregistered).
    pub(crate) cut: tokio::sync::Notify,
    /// Set when the deregistration delay ended.
    pub(crate) gone: AtomicBool,
    pub(crate) task: Mutex<Option<JoinHandle<()>>>,
}

impl Member {
    pub(crate) fn new(target: &Target) -> Arc<Member> {
        Arc::new(Member {
            id: target.id.clone(),
            addr: target.addr,
            zone: Arc::from(target.zone.as_str()),
            reachable: AtomicBool::new(target.reachable),
            health: Mutex::new(Health {
                state: TargetState::Initial,
                reason: "Elb.InitialHealthChecking",
                passes: 0,
                failures: 0,
            }),
            pool: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            cut: tokio::sync::Notify::new(),
            gone: AtomicBool::new(false),
            task: Mutex::new(None),
        })
    }

    pub(crate) fn state(&self) -> TargetState {
        lock(&self.health).state
    }

    pub(crate) fn set_task(&self, task: JoinHandle<()>) {
        if let Some(old) = lock(&self.task).replace(task) {
            old.abort();
        }
    }

    pub(crate) fn stop_task(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    pub(crate) fn report(&self) -> TargetHealth {
        let health = lock(&self.health);
        TargetHealth {
            id: self.id.clone(),
            addr: self.addr,
            zone: self.zone.to_string(),
            state: health.state,
            reason: health.reason.to_owned(),
        }
    }
}

/// Registration and health-check settings (control path).
#[derive(Debug, Default)]
pub(crate) struct Control {
    pub(crate) registered: Vec<Arc<Member>>,
    pub(crate) draining: Vec<Arc<Member>>,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) matcher: Vec<(u16, u16)>,
    /// Zones a zonal shift moved traffic away from.
    pub(crate) shifted: Vec<String>,
}

/// The targets requests may go to now.
#[derive(Debug, Default)]
pub(crate) struct Routing {
    pub(crate) targets: Vec<Arc<Member>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// The runtime the proxy was bound on: health checks and drains run there, whoever calls
    /// [`Proxy::set_target_group`].
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) name: String,
    pub(crate) elb: String,
    pub(crate) idle_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Fixes each new target's first health check within the interval.
    pub(crate) seed: u64,
    pub(crate) nodes: Vec<Arc<NodeState>>,
    pub(crate) forwarded_port: HeaderValue,
    pub(crate) routing: ArcSwap<Routing>,
    pub(crate) next: AtomicUsize,
    pub(crate) control: Mutex<Control>,
    pub(crate) stats: Mutex<StatsAcc>,
}

impl Shared {
    /// Recomputes the routable snapshot: healthy registered targets outside the shifted zones,
    /// else the healthy ones anywhere, else (fail open) all registered ones.
    pub(crate) fn reroute(&self, control: &Control) {
        let healthy: Vec<_> = control
            .registered
            .iter()
            .filter(|m| m.state() == TargetState::Healthy)
            .cloned()
            .collect();
        let unshifted: Vec<_> = healthy
            .iter()
            .filter(|m| !control.shifted.iter().any(|z| **z == *m.zone))
            .cloned()
            .collect();
        let targets = if !unshifted.is_empty() {
            unshifted
        } else if !healthy.is_empty() {
            healthy
        } else {
            control.registered.clone()
        };
        self.routing.store(Arc::new(Routing { targets }));
    }

    pub(crate) fn reroute_now(&self) {
        let control = lock(&self.control);
        self.reroute(&control);
    }
}
