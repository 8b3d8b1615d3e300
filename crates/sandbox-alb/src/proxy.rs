//! [`Proxy`]: the listener, its control methods (targets, health, statistics, shutdown), the
//! accept loop and deregistration drains.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::forward::forward;
use crate::node::NodeState;
use crate::stats::StatsAcc;
use crate::target::{Control, Member, Routing, Shared};
use crate::{
    Error, Node, ProxySettings, ProxyStats, SHUTDOWN_DRAIN, TargetGroup, TargetHealth, TargetState,
    health, lock,
};

/// One ALB listener on loopback forwarding to one target group.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    accept: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `addr` (port 0: any free port) with no target registered (every request is
    /// a `503` until [`Proxy::set_target_group`]): a load balancer of one node, in no zone. The
    /// listener, health checks and drains run on the Tokio runtime this is called on; the
    /// other methods may be called from anywhere.
    pub async fn bind(addr: SocketAddr, settings: ProxySettings) -> Result<Proxy, Error> {
        Self::bind_nodes(
            &[Node {
                zone: String::new(),
                addr,
            }],
            settings,
        )
        .await
    }

    /// Listens on every node's address, all on one port: the first node's (any free port when
    /// it is 0), which the others then take too. A node's zone is what
    /// [`Proxy::set_node_reachable`] names. At least one node.
    pub async fn bind_nodes(nodes: &[Node], settings: ProxySettings) -> Result<Proxy, Error> {
        let bind_error = |addr: SocketAddr| {
            let name = settings.name.clone();
            move |source| Error::Bind { name, addr, source }
        };
        let mut states = Vec::with_capacity(nodes.len());
        let mut port = None;
        for node in nodes {
            let mut addr = node.addr;
            if let Some(p) = port {
                addr.set_port(p);
            }
            let listener = listen(addr).map_err(bind_error(addr))?;
            let local = listener.local_addr().map_err(bind_error(addr))?;
            port.get_or_insert(local.port());
            states.push(Arc::new(NodeState::new(&node.zone, listener, local)));
        }
        let Some(first) = states.first().map(|n| n.addr) else {
            return Err(Error::Bind {
                name: settings.name.clone(),
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "no node to listen on",
                ),
            });
        };
        let elb = if settings.name.starts_with("app/") {
            settings.name.clone()
        } else {
            format!(
                "app/{}/{:016x}",
                settings.name,
                fnv1a(settings.name.as_bytes())
            )
        };
        let shared = Arc::new(Shared {
            runtime: tokio::runtime::Handle::current(),
            name: settings.name,
            elb,
            idle_timeout: settings.idle_timeout,
            connect_timeout: settings.connect_timeout,
            seed: settings.seed,
            nodes: states,
            forwarded_port: HeaderValue::from(first.port()),
            routing: ArcSwap::from_pointee(Routing::default()),
            next: AtomicUsize::new(0),
            control: Mutex::new(Control::default()),
            stats: Mutex::new(StatsAcc::default()),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let accept = shared
            .nodes
            .iter()
            .map(|node| {
                tokio::spawn(accept_loop(
                    Arc::clone(node),
                    shared.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Proxy {
            shared,
            addr: first,
            stop,
            accept,
        })
    }

    /// The address of the first node.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every node: its zone, its address and whether clients reach it.
    pub fn nodes(&self) -> Vec<(String, SocketAddr, bool)> {
        self.shared
            .nodes
            .iter()
            .map(|n| (n.zone.to_string(), n.addr, n.is_reachable()))
            .collect()
    }

    /// Cuts the nodes of `zone` off (a network ACL that denies everything on their subnet: SYNs
    /// are dropped, open connections stop answering) or makes them reachable again.
    pub async fn set_node_reachable(&self, zone: &str, reachable: bool) {
        for node in self.shared.nodes.iter().filter(|n| *n.zone == *zone) {
            node.set_reachable(reachable).await;
        }
    }

    /// The zones a zonal shift moved traffic away from: their targets get no requests while
    /// targets elsewhere are healthy.
    pub fn set_shifted_zones(&self, zones: Vec<String>) {
        let mut control = lock(&self.shared.control);
        if control.shifted != zones {
            control.shifted = zones;
            self.shared.reroute(&control);
        }
    }

    /// Replaces the health check, deregistration delay and targets. Targets that stay (same
    /// `id` and `addr`) keep their health state and connections (their `reachable` flag is
    /// updated); new ones start [`TargetState::Initial`]; removed ones drain (see module doc).
    pub fn set_target_group(&self, group: TargetGroup) {
        let mut control = lock(&self.shared.control);
        control.matcher = health::parse_matcher(&group.health_check.matcher);
        control.health_check = Some(group.health_check.clone());
        let mut old: HashMap<(String, SocketAddr), Arc<Member>> = control
            .registered
            .drain(..)
            .map(|m| ((m.id.clone(), m.addr), m))
            .collect();
        let mut registered = Vec::with_capacity(group.targets.len());
        for target in &group.targets {
            if registered.iter().any(|m: &Arc<Member>| m.id == target.id) {
                continue; // A duplicate id: the first one wins.
            }
            let member = match old.remove(&(target.id.clone(), target.addr)) {
                Some(member) => {
                    let was = member.reachable.swap(target.reachable, Ordering::AcqRel);
                    if was && !target.reachable {
                        // A partition also stalls open connections: forget them, and stall
                        // the requests waiting on them.
                        lock(&member.pool).clear();
                        member.cut.notify_waiters();
                    }
                    member
                }
                None => {
                    let member = Member::new(target);
                    member.set_task(self.shared.runtime.spawn(health::check_loop(
                        Arc::downgrade(&self.shared),
                        member.clone(),
                    )));
                    member
                }
            };
            registered.push(member);
        }
        control.registered = registered;
        for (_, member) in old {
            member.stop_task();
            {
                let mut health = lock(&member.health);
                health.state = TargetState::Draining;
                health.reason = "Target.DeregistrationInProgress";
            }
            control.draining.push(member.clone());
            let shared = Arc::downgrade(&self.shared);
            let delay = group.deregistration_delay;
            member
                .clone()
                .set_task(self.shared.runtime.spawn(drain(shared, member, delay)));
        }
        self.shared.reroute(&control);
    }

    /// Every registered target, then every draining one, with its state.
    pub fn health(&self) -> Vec<TargetHealth> {
        let control = lock(&self.shared.control);
        control
            .registered
            .iter()
            .chain(&control.draining)
            .map(|m| m.report())
            .collect()
    }

    /// The statistics since the previous call (or since [`Proxy::bind`]), resetting them.
    pub fn take_stats(&self) -> ProxyStats {
        let acc = std::mem::take(&mut *lock(&self.shared.stats));
        let zones = acc
            .zones
            .into_iter()
            .map(|(zone, acc)| {
                let mut stats = acc.stats;
                if let Some(h) = acc.times.filter(|h| !h.is_empty()) {
                    stats.response_time_p50 = Duration::from_micros(h.value_at_quantile(0.5));
                    stats.response_time_p99 = Duration::from_micros(h.value_at_quantile(0.99));
                    stats.response_time_max = Duration::from_micros(h.max());
                }
                (zone.to_string(), stats)
            })
            .collect();
        ProxyStats {
            zones,
            elb_5xx_no_target: acc.no_target,
            per_target: acc.per_target.into_iter().collect(),
            access_log: acc.log,
            access_log_dropped: acc.dropped,
        }
    }

    /// Stops accepting, lets in-flight requests finish for at most [`SHUTDOWN_DRAIN`], stops
    /// the health checks and closes every connection.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for accept in std::mem::take(&mut self.accept) {
            let _ = accept.await;
        }
        // Drop stops the health checks and drains.
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for accept in self.accept.drain(..) {
            accept.abort();
        }
        let mut control = lock(&self.shared.control);
        let members: Vec<_> = control.registered.drain(..).collect();
        let draining: Vec<_> = control.draining.drain(..).collect();
        for member in members.into_iter().chain(draining) {
            member.stop_task();
            lock(&member.pool).clear();
        }
        self.shared.routing.store(Arc::new(Routing::default()));
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Waits until `member` has nothing in flight or `delay` passed, then forgets it.
async fn drain(shared: std::sync::Weak<Shared>, member: Arc<Member>, delay: Duration) {
    let deadline = Instant::now() + delay;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while Instant::now() < deadline && member.in_flight.load(Ordering::Acquire) > 0 {
        tick.tick().await;
    }
    lock(&member.pool).clear();
    member.gone.store(true, Ordering::Release);
    member.cut.notify_waiters();
    if let Some(shared) = shared.upgrade() {
        lock(&shared.control)
            .draining
            .retain(|m| !Arc::ptr_eq(m, &member));
    }
}

/// Completes once the stop flag is set (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A listening socket on `addr` with address reuse (a node cut off and restored, or a proxy
/// rebound, takes its address again at once).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(crate::node::BACKLOG.unsigned_abs())
}

async fn accept_loop(
    node: Arc<NodeState>,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.idle_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut connections = JoinSet::new();
    let mut reachable = node.reachable.subscribe();
    loop {
        while connections.try_join_next().is_some() {}
        if !*reachable.borrow_and_update() {
            // Cut off: accept nothing, so the full queue keeps dropping SYNs.
            tokio::select! {
                () = stopped(&mut stop) => break,
                _ = reachable.changed() => continue,
            }
        }
        let (stream, client) = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            _ = reachable.changed() => continue,
            accepted = node.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    eprintln!("sandbox ALB {}: accept failed: {err}", shared.name);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let node = node.clone();
        let builder = builder.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let client_ip = HeaderValue::from_str(&client.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-"));
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                let node = node.clone();
                let client_ip = client_ip.clone();
                async move {
                    Ok::<_, Infallible>(forward(shared, node, request, client, client_ip).await)
                }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                () = stopped(&mut stop) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    if tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}
