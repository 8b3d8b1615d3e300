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
use crate::stats::StatsAcc;
use crate::target::{Control, Member, Routing, Shared};
use crate::{
    Error, ProxySettings, ProxyStats, SHUTDOWN_DRAIN, TargetGroup, TargetHealth, TargetState,
    health, lock,
};

/// One ALB listener on loopback forwarding to one target group.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `addr` (port 0: any free port) with no target registered (every request is
    /// a `503` until [`Proxy::set_target_group`]). The listener, health checks and drains run
    /// on the Tokio runtime this is called on; the other methods may be called from anywhere.
    pub async fn bind(addr: SocketAddr, settings: ProxySettings) -> Result<Proxy, Error> {
        let bind_error = |source| Error::Bind {
            name: settings.name.clone(),
            addr,
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
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
            forwarded_port: HeaderValue::from(local.port()),
            routing: ArcSwap::from_pointee(Routing::default()),
            next: AtomicUsize::new(0),
            control: Mutex::new(Control::default()),
            stats: Mutex::new(StatsAcc::default()),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
        Ok(Proxy {
            shared,
            addr: local,
            stop,
            accept: Some(accept),
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        // Drop stops the health checks and drains.
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(accept) = self.accept.take() {
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

async fn accept_loop(
    listener: TcpListener,
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
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, client) = tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
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
        let builder = builder.clone();
        let mut stop = stop.clone();
        connections.spawn(async move {
            let client_ip = HeaderValue::from_str(&client.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-"));
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                let client_ip = client_ip.clone();
                async move {
                    Ok::<_, Infallible>(forward(shared, request, client, client_ip).await)
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
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        connections.abort_all();
    }
}
