//! Tasks: their launch (PROVISIONING, PENDING, then RUNNING, when the process starts), the
//! sample-app process for a task on its zone's loopback address, the ECS task metadata endpoint
//! (v4) the tasks read their zone and ARN from, CPU accounting from `/proc`, and stopping
//! processes by PID (SIGTERM, then SIGKILL after a grace period).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Error;

/// How long a task may take to exit after SIGTERM before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A task's process, once it is RUNNING.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) pid: u32,
}

/// A task still launching: when it turns PENDING (its image pull starts) and RUNNING.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Launching {
    pub(crate) pending_at: Instant,
    pub(crate) running_at: Instant,
    /// PENDING was reported.
    pub(crate) pending: bool,
}

/// One task: launching, or running as a process.
#[derive(Debug)]
pub(crate) struct TaskProc {
    pub(crate) arn: String,
    pub(crate) id: String,
    pub(crate) cluster: String,
    pub(crate) service: String,
    pub(crate) task_definition: String,
    pub(crate) zone: String,
    pub(crate) subnet: String,
    pub(crate) addr: SocketAddr,
    /// The process, once RUNNING.
    pub(crate) process: Option<Process>,
    /// Until RUNNING.
    pub(crate) launch: Option<Launching>,
    pub(crate) cpu_units: u32,
    /// (when, utime + stime ticks)
    pub(crate) cpu: VecDeque<(Instant, u64)>,
    /// When it was created, then when its process started.
    pub(crate) started: Instant,
    /// Whether ECS has a record of it (RunTask succeeded).
    pub(crate) recorded: bool,
    /// The task started to replace this one after it failed its load balancer health checks;
    /// this one is stopped once that one is healthy (ECS since 2023).
    pub(crate) replaced_by: Option<String>,
}

impl TaskProc {
    /// Its process id, once RUNNING.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Whether its process runs.
    pub(crate) fn running(&self) -> bool {
        self.process.is_some()
    }

    /// The ECS status it is in.
    pub(crate) fn status(&self) -> &'static str {
        match (&self.process, &self.launch) {
            (Some(_), _) => "RUNNING",
            (None, Some(l)) if l.pending => "PENDING",
            (None, _) => "PROVISIONING",
        }
    }

    /// Samples CPU time; keeps samples within `window`.
    pub(crate) fn sample_cpu(&mut self, now: Instant, window: Duration) {
        let Some(pid) = self.pid() else { return };
        if let Some(ticks) = cpu_ticks(pid) {
            self.cpu.push_back((now, ticks));
        }
        while self
            .cpu
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > window)
            && self.cpu.len() > 2
        {
            self.cpu.pop_front();
        }
    }

    /// CPU use over the window in percent of the task's CPU units (1024 units = one vCPU).
    pub(crate) fn cpu_percent(&self) -> Option<f64> {
        let (t0, c0) = self.cpu.front()?;
        let (t1, c1) = self.cpu.back()?;
        let secs = t1.duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let used = c1.saturating_sub(*c0) as f64 / TICKS_PER_SECOND;
        let vcpu = f64::from(self.cpu_units.max(1)) / 1024.0;
        Some(100.0 * used / secs / vcpu)
    }
}

/// utime + stime of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after the closing parenthesis.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The loopback address of task slot `k` in zone `n`: 127.0.{n+1}.{10+k}.
pub(crate) fn task_ip(zone_index: usize, slot: usize) -> Option<Ipv4Addr> {
    let third = u8::try_from(zone_index + 1).ok()?;
    let fourth = u8::try_from(10 + slot).ok().filter(|v| *v < 255)?;
    Some(Ipv4Addr::new(127, 0, third, fourth))
}

/// The first free task address of zone `zone_index` for `port`: the lowest slot not in `taken`
/// whose address nothing on this machine listens on with that port. The bind test finds what the data plane
/// cannot know of: another data plane (the daemon and a test, two tests) or any other program
/// on the same loopback address and port. `None` when the zone's range is full.
pub(crate) fn free_task_ip(
    zone_index: usize,
    port: u16,
    taken: &std::collections::BTreeSet<usize>,
) -> Option<Ipv4Addr> {
    (0..245)
        .filter(|k| !taken.contains(k))
        .map_while(|k| task_ip(zone_index, k))
        .find(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
}

/// The zone index of a task address (inverse of [`task_ip`]).
pub(crate) fn zone_slot(ip: Ipv4Addr) -> (usize, usize) {
    let o = ip.octets();
    (
        usize::from(o[2]).saturating_sub(1),
        usize::from(o[3]).saturating_sub(10),
    )
}

/// What a task process needs to start.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Path,
    /// Its arguments (the container's command).
    pub(crate) args: &'a [String],
    pub(crate) addr: SocketAddr,
    pub(crate) metadata_uri: String,
    pub(crate) zone: &'a str,
    pub(crate) arn: &'a str,
    pub(crate) log: Option<&'a Path>,
    /// The container's environment from its task definition (secrets resolved); the
    /// sandbox's own variables (address, port, metadata endpoint) win over it.
    pub(crate) env: Vec<(String, String)>,
    /// The plane's DNS server: the task's resolver, as the VPC's is a task's on AWS.
    pub(crate) dns: SocketAddr,
    /// The authority the caches' certificates chain to ([`super::CA_FILE_VAR`]).
    pub(crate) ca_file: std::path::PathBuf,
}

/// The variable that names a task's DNS server (`127.0.0.1:PORT`): on AWS a task resolves
/// through the VPC's resolver, which the system's configuration names; a sandbox task cannot
/// have the plane's server there, so it is told here, and resolves names the plane answers
/// for (an RDS endpoint) through it.
pub const DNS_SERVER_VAR: &str = "STACKPROOF_DNS_SERVER";

/// Starts a task process.
pub(crate) fn spawn(launch: &Launch<'_>) -> Result<(Child, u32), Error> {
    let out = |log: Option<&Path>| -> Stdio {
        log.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        })
        .map_or_else(Stdio::null, Stdio::from)
    };
    let mut cmd = Command::new(launch.program);
    cmd.args(launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env("BIND_ADDR", launch.addr.ip().to_string())
        .env("PORT", launch.addr.port().to_string())
        .env("ECS_CONTAINER_METADATA_URI_V4", &launch.metadata_uri)
        .env("AZ", launch.zone)
        .env("TASK_ID", launch.arn)
        .env(DNS_SERVER_VAR, launch.dns.to_string())
        .env(super::CA_FILE_VAR, &launch.ca_file)
        .stdin(Stdio::null())
        .stdout(out(launch.log))
        .stderr(out(launch.log))
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| Error::Io {
        operation: "spawn",
        resource: launch.program.display().to_string(),
        source,
    })?;
    let pid = child.id().ok_or_else(|| Error::Io {
        operation: "spawn",
        resource: launch.program.display().to_string(),
        source: std::io::Error::other("exited at once"),
    })?;
    Ok((child, pid))
}

/// Sends SIGTERM to `pid` (by PID, with the `kill` program: this crate forbids unsafe code).
pub(crate) async fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .await;
}

/// Stops a child: SIGTERM, then SIGKILL after [`STOP_GRACE`]; waits for it.
pub(crate) async fn stop_child(mut child: Child, pid: u32) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    terminate(pid).await;
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// The ECS task metadata endpoint v4 of all tasks: `GET /v4/{task-id}/task` and
/// `GET /v4/{task-id}` on 127.0.0.1.
#[derive(Debug)]
pub(crate) struct Metadata {
    addr: SocketAddr,
    docs: Arc<Mutex<HashMap<String, (serde_json::Value, serde_json::Value)>>>,
    server: JoinHandle<()>,
}

impl Metadata {
    /// Starts the endpoint on a free port.
    pub(crate) async fn start() -> Result<Metadata, Error> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|source| Error::Io {
                operation: "bind",
                resource: "metadata endpoint 127.0.0.1:0".to_owned(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            operation: "local_addr",
            resource: "metadata endpoint".to_owned(),
            source,
        })?;
        let docs: Arc<Mutex<HashMap<String, (serde_json::Value, serde_json::Value)>>> =
            Arc::default();
        let shared = docs.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let docs = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let docs = docs.clone();
                        async move {
                            let path = req.uri().path().trim_end_matches('/').to_owned();
                            let found = {
                                let map = docs
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                let rest = path.strip_prefix("/v4/").unwrap_or_default();
                                match rest.split_once('/') {
                                    Some((id, "task")) => map.get(id).map(|d| d.0.clone()),
                                    None => map.get(rest).map(|d| d.1.clone()),
                                    _ => None,
                                }
                            };
                            let resp = match found {
                                Some(doc) => {
                                    let mut r =
                                        Response::new(Full::new(Bytes::from(doc.to_string())));
                                    r.headers_mut().insert(
                                        http::header::CONTENT_TYPE,
                                        http::HeaderValue::from_static("application/json"),
                                    );
                                    r
                                }
                                None => {
                                    let mut r = Response::new(Full::new(Bytes::from_static(
                                        b"not found\n",
                                    )));
                                    *r.status_mut() = StatusCode::NOT_FOUND;
                                    r
                                }
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Metadata { addr, docs, server })
    }

    /// The URI a task gets in `ECS_CONTAINER_METADATA_URI_V4`.
    pub(crate) fn uri(&self, task_id: &str) -> String {
        format!("http://{}/v4/{task_id}", self.addr)
    }

    /// Publishes a task's documents.
    pub(crate) fn insert(
        &self,
        task_id: &str,
        task: serde_json::Value,
        container: serde_json::Value,
    ) {
        self.docs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(task_id.to_owned(), (task, container));
    }

    /// Publishes the documents of task `id` as ECS's endpoint has them: its cluster, ARN,
    /// family and revision, zone and its one container (with its address when it has one).
    pub(crate) fn publish(
        &self,
        id: &str,
        arn: &str,
        cluster: &str,
        td: &super::observe::TaskDefSpec,
        zone: &str,
        ip: Option<std::net::IpAddr>,
    ) {
        let mut network = serde_json::json!({"NetworkMode": "awsvpc"});
        if let Some(ip) = ip {
            network["IPv4Addresses"] = serde_json::json!([ip.to_string()]);
        }
        let container = serde_json::json!({
            "Name": td.container_name,
            "Image": td.image,
            "Networks": [network],
        });
        let task = serde_json::json!({
            "Cluster": cluster,
            "TaskARN": arn,
            "Family": td.family,
            "Revision": td.revision.to_string(),
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "AvailabilityZone": zone,
            "LaunchType": "FARGATE",
            "Containers": [container.clone()],
        });
        self.insert(id, task, container);
    }

    /// Forgets a task.
    pub(crate) fn remove(&self, task_id: &str) {
        self.docs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(task_id);
    }

    /// Stops the endpoint.
    pub(crate) async fn shutdown(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_zone_plan() {
        assert_eq!(task_ip(0, 0), Some(Ipv4Addr::new(127, 0, 1, 10)));
        assert_eq!(task_ip(2, 5), Some(Ipv4Addr::new(127, 0, 3, 15)));
        assert_eq!(zone_slot(Ipv4Addr::new(127, 0, 3, 15)), (2, 5));
        assert_eq!(task_ip(0, 245), None);
    }

    #[test]
    fn a_taken_address_moves_to_the_next_host_of_the_zone() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0);
        assert_ne!(port, 0);
        let none = std::collections::BTreeSet::new();
        let first = free_task_ip(4, port, &none);
        assert_eq!(first, Some(Ipv4Addr::new(127, 0, 5, 10)));
        // Someone else listens there: the next host number of the same zone.
        let _held = first.map(|ip| std::net::TcpListener::bind((ip, port)));
        assert_eq!(
            free_task_ip(4, port, &none),
            Some(Ipv4Addr::new(127, 0, 5, 11))
        );
        // Taken by a task of ours too: the one after.
        let ours = std::collections::BTreeSet::from([1]);
        assert_eq!(
            free_task_ip(4, port, &ours),
            Some(Ipv4Addr::new(127, 0, 5, 12))
        );
    }

    #[test]
    fn reads_own_cpu_ticks() {
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
