//! Standalone tasks: what RunTask starts outside a service (the load generators of a
//! distributed run). The plane is their container agent: each launches as a service's task
//! does (PROVISIONING, PENDING, RUNNING on the model's Fargate latency), runs its image's
//! program with the container's command (the override's when given) and environment plus
//! [`super::PlaneOptions::task_env`], and when the process exits the task is reported STOPPED
//! with the container's exit code ("Essential container in task exited"); a task stopped
//! through the API has its process stopped (SIGTERM, SIGKILL after the grace period).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use aws_model::LaunchLatency;
use aws_model::aws::ecs;
use aws_sdk_ecs::types::ContainerStateChange;
use serde::Serialize;
use tokio::time::Instant;

use super::observe::{JobSpec, Program};
use super::tasks::{self, Launching, Process};
use super::{Reconciler, World, log};
use crate::Error;

/// One standalone task.
#[derive(Debug)]
pub(crate) struct Job {
    arn: String,
    id: String,
    cluster: String,
    task_definition: String,
    zone: String,
    spec: JobSpec,
    launch: Option<Launching>,
    process: Option<Process>,
}

/// A standalone task in the plane's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    /// The task ARN.
    pub arn: String,
    /// Its cluster.
    pub cluster: String,
    /// Its task definition ARN.
    pub task_definition: String,
    /// Its zone.
    pub zone: String,
    /// Its ECS status: PROVISIONING, PENDING or RUNNING.
    pub status: String,
    /// Its process id, once RUNNING.
    pub pid: Option<u32>,
}

impl Job {
    pub(crate) fn status(&self) -> JobStatus {
        JobStatus {
            arn: self.arn.clone(),
            cluster: self.cluster.clone(),
            task_definition: self.task_definition.clone(),
            zone: self.zone.clone(),
            status: match (&self.process, &self.launch) {
                (Some(_), _) => "RUNNING",
                (None, Some(l)) if l.pending => "PENDING",
                (None, _) => "PROVISIONING",
            }
            .to_owned(),
            pid: self.process.as_ref().map(|p| p.pid),
        }
    }

    /// Its process, to stop (the plane is shutting down).
    pub(crate) fn into_process(self) -> Option<Process> {
        self.process
    }
}

impl Reconciler {
    /// Takes on new standalone tasks, moves launching ones on, reports exited ones STOPPED and
    /// stops the processes of tasks stopped through the API (`read`: the world is fresh).
    pub(super) async fn converge_jobs(&mut self, world: &World, read: bool) {
        if read {
            let wanted: BTreeSet<&str> = world.jobs.iter().map(|j| j.arn.as_str()).collect();
            let gone: Vec<String> = self
                .jobs
                .keys()
                .filter(|arn| !wanted.contains(arn.as_str()))
                .cloned()
                .collect();
            for arn in gone {
                if let Some(job) = self.jobs.remove(&arn) {
                    log(format_args!(
                        "standalone task {} stopped through the API",
                        job.id
                    ));
                    self.metadata.remove(&job.id);
                    self.jobs_done.insert(arn);
                    if let Some(p) = job.process {
                        self.stopping.spawn(tasks::stop_child(p.child, p.pid));
                    }
                }
            }
            for spec in &world.jobs {
                if !self.jobs.contains_key(&spec.arn)
                    && !self.jobs_done.contains(&spec.arn)
                    && let Err(e) = self.take_job(spec, world).await
                {
                    log(format_args!("standalone task {}: {e}", spec.arn));
                }
            }
        }
        self.advance_jobs().await;
        self.reap_jobs().await;
    }

    /// Places a new standalone task in its subnet's zone and starts its launch.
    async fn take_job(&mut self, spec: &JobSpec, world: &World) -> Result<(), Error> {
        let td = match self.task_defs.get(&spec.task_definition) {
            Some(td) => td.clone(),
            None => {
                let td = super::observe::task_definition(&self.c, &spec.task_definition).await?;
                self.task_defs
                    .insert(spec.task_definition.clone(), td.clone());
                td
            }
        };
        let id = spec.arn.rsplit('/').next().unwrap_or(&spec.arn).to_owned();
        let zone = spec
            .subnet
            .as_ref()
            .and_then(|s| world.subnets.get(s))
            .map(|s| s.zone.clone())
            .unwrap_or_default();
        if td
            .program()
            .is_none_or(|p| p == Program::Loadgen && self.opts.loadgen.is_none())
        {
            let reason = format!(
                "CannotPullContainerError: the sandbox runs images whose repository ends in {}, not {}",
                Program::KNOWN,
                td.image
            );
            log(format_args!(
                "standalone task {id} failed to start: {reason}"
            ));
            self.jobs_done.insert(spec.arn.clone());
            self.report_stopped(&spec.cluster, &spec.arn, &td.container_name, None, &reason)
                .await;
            return Ok(());
        }
        let latency = self.opts.launch.sample(&mut self.rng);
        let phases = LaunchLatency::phases(latency);
        let now = Instant::now();
        let pending_at = now
            + self
                .opts
                .clock
                .wall(ecs::SCHEDULER_DELAY + phases.provisioning);
        let running_at = pending_at + self.opts.clock.wall(phases.pending);
        self.report_state(&spec.cluster, &spec.arn, "PROVISIONING")
            .await;
        log(format_args!(
            "standalone task {id} ({}) in {zone}: RUNNING in {:.1} s",
            td.family,
            running_at.duration_since(now).as_secs_f64()
        ));
        self.jobs.insert(
            spec.arn.clone(),
            Job {
                arn: spec.arn.clone(),
                id,
                cluster: spec.cluster.clone(),
                task_definition: spec.task_definition.clone(),
                zone,
                spec: spec.clone(),
                launch: Some(Launching {
                    pending_at,
                    running_at,
                    pending: false,
                }),
                process: None,
            },
        );
        Ok(())
    }

    /// PENDING, then RUNNING with its process, as the launch's times come.
    async fn advance_jobs(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, bool)> = self
            .jobs
            .values()
            .filter_map(|j| {
                let l = j.launch?;
                if now >= l.running_at {
                    Some((j.arn.clone(), true))
                } else if now >= l.pending_at && !l.pending {
                    Some((j.arn.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        for (arn, run) in due {
            let Some(cluster) = self.jobs.get(&arn).map(|j| j.cluster.clone()) else {
                continue;
            };
            if !run {
                if let Some(l) = self.jobs.get_mut(&arn).and_then(|j| j.launch.as_mut()) {
                    l.pending = true;
                }
                self.report_state(&cluster, &arn, "PENDING").await;
                continue;
            }
            match self.spawn_job(&arn) {
                Ok(()) => self.report_state(&cluster, &arn, "RUNNING").await,
                Err(e) => {
                    log(format_args!("standalone task {arn} failed to start: {e}"));
                    if let Some(job) = self.jobs.remove(&arn) {
                        self.jobs_done.insert(arn.clone());
                        let name = self
                            .task_defs
                            .get(&job.task_definition)
                            .map(|t| t.container_name.clone())
                            .unwrap_or_default();
                        let reason = format!("CannotStartContainerError: {e}");
                        self.report_stopped(&cluster, &arn, &name, None, &reason)
                            .await;
                    }
                }
            }
        }
    }

    /// Starts a job's process: its program, the container's command and environment.
    fn spawn_job(&mut self, arn: &str) -> Result<(), Error> {
        let Some(job) = self.jobs.get(arn) else {
            return Ok(());
        };
        let td = self
            .task_defs
            .get(&job.task_definition)
            .cloned()
            .ok_or_else(|| Error::Aws {
                operation: "RunTask",
                resource: arn.to_owned(),
                message: format!("task definition {} unknown", job.task_definition),
            })?;
        let program = match td.program() {
            Some(Program::Loadgen) => self.opts.loadgen.clone(),
            Some(Program::SampleApp) => Some(self.opts.sample_app.clone()),
            None => None,
        }
        .ok_or_else(|| Error::Aws {
            operation: "RunTask",
            resource: arn.to_owned(),
            message: format!("no program for image {}", td.image),
        })?;
        let mut env = td.environment.clone();
        env.extend(job.spec.environment.iter().cloned());
        env.extend(self.opts.task_env.iter().cloned());
        env.push(("AWS_REGION".to_owned(), self.region.clone()));
        let args = job
            .spec
            .command
            .clone()
            .unwrap_or_else(|| td.command.clone());
        self.metadata
            .publish(&job.id, arn, &job.cluster, &td, &job.zone, None);
        let log_path = self.opts.state_dir.as_ref().map(|d| {
            let dir = d.join("tasks");
            let _ = std::fs::create_dir_all(&dir);
            dir.join(format!("{}.log", job.id))
        });
        let launch = tasks::Launch {
            program: &program,
            args: &args,
            // A standalone task serves nothing: port 0 on the loopback address.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metadata_uri: self.metadata.uri(&job.id),
            zone: &job.zone,
            arn,
            log: log_path.as_deref(),
            env,
            dns: self.dns.addr(),
            ca_file: self.caches.ca_file(),
        };
        let (child, pid) = tasks::spawn(&launch)?;
        log(format_args!(
            "standalone task {} RUNNING in {} (pid {pid}): {} {}",
            job.id,
            job.zone,
            program.display(),
            args.join(" ")
        ));
        if let Some(job) = self.jobs.get_mut(arn) {
            job.process = Some(Process { child, pid });
            job.launch = None;
        }
        Ok(())
    }

    /// Reports the jobs whose process exited STOPPED, with the exit code.
    async fn reap_jobs(&mut self) {
        let mut exited = Vec::new();
        for (arn, job) in &mut self.jobs {
            let Some(p) = job.process.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = p.child.try_wait() {
                exited.push((arn.clone(), status));
            }
        }
        for (arn, status) in exited {
            let Some(job) = self.jobs.remove(&arn) else {
                continue;
            };
            self.metadata.remove(&job.id);
            self.jobs_done.insert(arn.clone());
            let name = self
                .task_defs
                .get(&job.task_definition)
                .map(|t| t.container_name.clone())
                .unwrap_or_default();
            log(format_args!("standalone task {} exited ({status})", job.id));
            // A process killed by a signal exits 128 + the signal, as a container's does.
            let code = status.code().or_else(|| {
                std::os::unix::process::ExitStatusExt::signal(&status).map(|s| 128 + s)
            });
            self.report_stopped(
                &job.cluster,
                &arn,
                &name,
                code,
                "Essential container in task exited",
            )
            .await;
        }
    }

    /// Reports a task STOPPED with its container's exit code (when it ran) and the reason.
    async fn report_stopped(
        &self,
        cluster: &str,
        arn: &str,
        container: &str,
        exit_code: Option<i32>,
        reason: &str,
    ) {
        let change = ContainerStateChange::builder()
            .container_name(container)
            .status("STOPPED")
            .set_exit_code(exit_code)
            .build();
        if let Err(e) = self
            .c
            .ecs
            .submit_task_state_change()
            .cluster(cluster)
            .task(arn)
            .status("STOPPED")
            .reason(reason)
            .containers(change)
            .send()
            .await
        {
            log(format_args!(
                "SubmitTaskStateChange {arn} STOPPED: {}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ));
        }
    }
}
