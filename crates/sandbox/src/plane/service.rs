//! Keeping each service's tasks running, as the ECS service scheduler and Fargate do: tasks are
//! placed spread over the service's zones (blind to a zone's impairment), launch through
//! PROVISIONING and PENDING to RUNNING (the scheduler's delay and a launch latency drawn from
//! the seeded distribution; a task whose subnet cannot reach its registry fails its image pull),
//! a new task definition rolls within the deployment's percentages, desired-count changes scale
//! in and out, and tasks that exit or are stopped through the API are replaced. A task its load
//! balancer marks unhealthy gets a replacement first, and is stopped once that one is healthy
//! (or at once when `maximumPercent` leaves no room), as ECS does since 2023. Tasks that keep
//! failing to start put the service in back-off (ECS's throttle logic, at most 15 minutes).

use super::*;

impl Reconciler {
    /// Removes a task: forgets it, stops its process in the background (SIGTERM, then
    /// SIGKILL), and records the stop in ECS when `api_reason` is given.
    pub(super) async fn stop_task(&mut self, arn: &str, api_reason: Option<&str>) {
        let Some(t) = self.tasks.remove(arn) else {
            return;
        };
        self.metadata.remove(&t.id);
        log(format_args!(
            "stopping task {} ({} in {}, {}){}",
            t.id,
            t.addr,
            t.zone,
            t.pid()
                .map_or_else(|| t.status().to_owned(), |p| format!("pid {p}")),
            api_reason.map(|r| format!(": {r}")).unwrap_or_default()
        ));
        if let (Some(reason), true) = (api_reason, t.recorded)
            && let Err(e) = self
                .c
                .ecs
                .stop_task()
                .cluster(&t.cluster)
                .task(arn)
                .reason(reason)
                .send()
                .await
        {
            log(format_args!("StopTask {arn}: {}", DisplayErrorContext(&e)));
        }
        // As ECS does, the target leaves its target group (draining: no new requests) before
        // the container gets SIGTERM: the process stops once this iteration has told the load
        // balancers (`release_stopped`).
        if let Some(p) = t.process {
            self.deregistering.push(p);
        }
    }

    /// Stops the processes of tasks stopped in this iteration, now that their targets drain.
    pub(super) fn release_stopped(&mut self) {
        for p in std::mem::take(&mut self.deregistering) {
            self.stopping.spawn(tasks::stop_child(p.child, p.pid));
        }
    }

    /// Replaces processes that exited on their own.
    pub(super) async fn reap_exited(&mut self, world: &World) {
        let mut exited = Vec::new();
        for (arn, t) in &mut self.tasks {
            let Some(p) = t.process.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = p.child.try_wait() {
                let early = t.started.elapsed() < EARLY_EXIT;
                exited.push((
                    arn.clone(),
                    status,
                    t.cluster.clone(),
                    t.service.clone(),
                    early,
                ));
            }
        }
        for (arn, status, cluster, service, early) in exited {
            let reason = format!("Essential container in task exited ({status})");
            self.stop_task(&arn, Some(&reason)).await;
            if early
                && world
                    .services
                    .iter()
                    .any(|s| s.cluster == cluster && s.name == service)
            {
                self.note_failure(&format!("{cluster}/{service}"));
            }
        }
    }

    /// A task of the service failed to start: the scheduler waits before the next start,
    /// doubling from [`ecs::THROTTLE_FIRST`] up to [`ecs::THROTTLE_MAX`] (model time).
    pub(super) fn note_failure(&mut self, key: &str) {
        let e = self
            .failures
            .entry(key.to_owned())
            .or_insert((0, Instant::now()));
        e.0 += 1;
        let backoff = ecs::THROTTLE_FIRST
            .saturating_mul(1 << e.0.saturating_sub(1).min(16))
            .min(ecs::THROTTLE_MAX);
        e.1 = Instant::now() + self.opts.clock.wall(backoff);
    }

    /// Whether the service may start a task now (not in back-off).
    fn may_start(&self, key: &str) -> bool {
        self.failures
            .get(key)
            .is_none_or(|(_, not_before)| Instant::now() >= *not_before)
    }

    /// Stops processes whose task was stopped through the ECS API (by someone else).
    pub(super) async fn sync_stopped_from_api(&mut self) {
        let mut by_cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.tasks.values().filter(|t| t.recorded) {
            by_cluster
                .entry(t.cluster.clone())
                .or_default()
                .push(t.arn.clone());
        }
        let mut gone = Vec::new();
        for (cluster, arns) in by_cluster {
            for chunk in arns.chunks(100) {
                match self
                    .c
                    .ecs
                    .describe_tasks()
                    .cluster(&cluster)
                    .set_tasks(Some(chunk.to_vec()))
                    .send()
                    .await
                {
                    Ok(out) => {
                        for t in out.tasks() {
                            // Only the desired status: moto advances lastStatus on its own
                            // as it is described.
                            let stopped = t.desired_status() == Some("STOPPED");
                            if let (true, Some(arn)) = (stopped, t.task_arn()) {
                                gone.push(arn.to_owned());
                            }
                        }
                        for f in out.failures() {
                            if f.reason() == Some("MISSING")
                                && let Some(arn) = f.arn()
                            {
                                gone.push(arn.to_owned());
                            }
                        }
                    }
                    Err(e) => log(format_args!(
                        "DescribeTasks {cluster}: {}",
                        DisplayErrorContext(&e)
                    )),
                }
            }
        }
        for arn in gone {
            self.stop_task(&arn, None).await;
        }
    }

    /// Stops tasks of services that no longer exist (deleted, or inactive).
    pub(super) async fn stop_orphans(&mut self, world: &World) {
        let orphans: Vec<String> = self
            .tasks
            .values()
            .filter(|t| {
                !world
                    .services
                    .iter()
                    .any(|s| s.cluster == t.cluster && s.name == t.service)
            })
            .map(|t| t.arn.clone())
            .collect();
        for arn in orphans {
            self.stop_task(&arn, Some("Service deleted")).await;
        }
    }

    /// Replaces the tasks their load balancer marked unhealthy, once the service's health
    /// check grace period since their start has passed: a replacement starts first (within
    /// `maximumPercent`) and the unhealthy task is stopped, with the reason ECS gives, once the
    /// replacement is healthy; with no room for a replacement, unhealthy tasks are stopped one
    /// at a time. `sync_targets` deregisters what is stopped (it drains).
    pub(super) async fn replace_unhealthy(&mut self, world: &World) {
        let now = Instant::now();
        let health = self.health();
        // Replacements under way: once one is healthy the task it replaces stops (also if that
        // task recovered meanwhile: ECS committed to the replacement); a replacement that is
        // gone (it failed to start) is tried again below.
        let mut done = Vec::new();
        let mut gone = Vec::new();
        for t in self.tasks.values() {
            let Some(r) = &t.replaced_by else { continue };
            if health.get(r) == Some(&alb::TargetState::Healthy) {
                done.push(t.arn.clone());
            } else if !self.tasks.contains_key(r) {
                gone.push(t.arn.clone());
            }
        }
        for arn in gone {
            if let Some(t) = self.tasks.get_mut(&arn) {
                t.replaced_by = None;
            }
        }
        for arn in done {
            let tg = self
                .registered
                .iter()
                .find(|(_, m)| m.contains_key(&arn))
                .map(|(tg, _)| tg.clone())
                .unwrap_or_default();
            let reason = format!("Task failed ELB health checks in (target-group {tg})");
            self.stop_task(&arn, Some(&reason)).await;
        }
        let mut victims: BTreeMap<String, String> = BTreeMap::new();
        for p in self.proxies.values() {
            let Some(tg) = &p.spec.target_group else {
                continue;
            };
            for h in p.proxy.health() {
                if h.state != alb::TargetState::Unhealthy || victims.contains_key(&h.id) {
                    continue;
                }
                let Some(t) = self.tasks.get(&h.id) else {
                    continue;
                };
                let Some(svc) = world.service_of(t) else {
                    continue;
                };
                let behind_it = svc.load_balancers.iter().any(|(arn, _)| arn == tg);
                if behind_it
                    && t.replaced_by.is_none()
                    && now.duration_since(t.started) >= svc.health_check_grace
                {
                    victims.insert(h.id, tg.clone());
                }
            }
        }
        let mut stopped_for_room: BTreeSet<String> = BTreeSet::new();
        for (arn, tg) in victims {
            let reason = format!("Task failed ELB health checks in (target-group {tg})");
            let Some(t) = self.tasks.get(&arn) else {
                continue;
            };
            let Some(svc) = world.service_of(t).cloned() else {
                continue;
            };
            let total = self.service_tasks(&svc).count();
            let max_total = usize::try_from(svc.desired).unwrap_or(0)
                * usize::try_from(svc.max_percent.max(100)).unwrap_or(200)
                / 100;
            if total < max_total {
                if !self.may_start(&svc.key()) {
                    continue;
                }
                let Some(td) = self.task_defs.get(&svc.task_definition).cloned() else {
                    continue;
                };
                match self.start_task(&svc, &td, world).await {
                    Ok(new) => {
                        log(format_args!(
                            "task {} failed its health checks: replacement {} started first",
                            arn.rsplit('/').next().unwrap_or(&arn),
                            new.rsplit('/').next().unwrap_or(&new)
                        ));
                        if let Some(t) = self.tasks.get_mut(&arn) {
                            t.replaced_by = Some(new);
                        }
                    }
                    Err(e) => {
                        self.note_failure(&svc.key());
                        log(format_args!("service {}: {e}", svc.key()));
                    }
                }
            } else if stopped_for_room.insert(svc.key()) {
                self.stop_task(&arn, Some(&reason)).await;
            }
        }
    }

    pub(super) fn is_healthy(
        &self,
        t: &TaskProc,
        svc: &ServiceSpec,
        health: &HashMap<String, alb::TargetState>,
    ) -> bool {
        if svc.load_balancers.is_empty() {
            return true;
        }
        health.get(&t.arn) == Some(&alb::TargetState::Healthy)
    }

    pub(super) async fn converge_service(
        &mut self,
        svc: &ServiceSpec,
        world: &World,
    ) -> Result<(), Error> {
        let Some(td) = self.task_defs.get(&svc.task_definition).cloned() else {
            return Ok(());
        };
        let desired = usize::try_from(svc.desired).unwrap_or(0);
        let health = self.health();
        // A task being replaced (it failed its health checks) counts no more: its replacement
        // does.
        let (new, old): (Vec<&TaskProc>, Vec<&TaskProc>) = self
            .service_tasks(svc)
            .filter(|t| t.replaced_by.is_none())
            .partition(|t| t.task_definition == svc.task_definition);
        let healthy_new = new
            .iter()
            .filter(|t| self.is_healthy(t, svc, &health))
            .count();
        let mut old_sorted: Vec<(bool, String)> = old
            .iter()
            .map(|t| (self.is_healthy(t, svc, &health), t.arn.clone()))
            .collect();
        // Unhealthy old tasks go first: stopping them costs no capacity.
        old_sorted.sort();
        let mut to_stop: Vec<(String, String)> = Vec::new();
        let to_start = if old_sorted.is_empty() {
            desired.saturating_sub(new.len())
        } else {
            let max_total =
                desired * usize::try_from(svc.max_percent.max(100)).unwrap_or(200) / 100;
            let min_healthy = (desired
                * usize::try_from(svc.min_healthy_percent.max(0)).unwrap_or(100))
            .div_ceil(100);
            let healthy_old = old_sorted.iter().filter(|(h, _)| *h).count();
            let mut healthy_total = healthy_new + healthy_old;
            let mut remaining_old = old_sorted.len();
            for (healthy, arn) in &old_sorted {
                if *healthy {
                    if healthy_total <= min_healthy {
                        break;
                    }
                    healthy_total -= 1;
                }
                remaining_old -= 1;
                to_stop.push((
                    arn.clone(),
                    "Deployment: replaced by a new task definition".to_owned(),
                ));
            }
            let room = max_total.saturating_sub(new.len() + remaining_old);
            room.min(desired.saturating_sub(new.len()))
        };
        // Too many new tasks: desired fell (scale-in), also during a deployment.
        if new.len() > desired {
            for arn in self.scale_in_victims(svc, new.len() - desired) {
                to_stop.push((
                    arn,
                    format!(
                        "Scaling activity initiated by (deployment {})",
                        svc.deployment_id
                    ),
                ));
            }
        }
        for (arn, reason) in to_stop {
            self.stop_task(&arn, Some(&reason)).await;
        }
        let key = svc.key();
        if to_start > 0 && !self.may_start(&key) {
            return Ok(());
        }
        for _ in 0..to_start.min(MAX_STARTS) {
            if let Err(e) = self.start_task(svc, &td, world).await {
                self.note_failure(&key);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Which tasks to stop when scaling in: each from the zone with the most tasks of the
    /// service (then the newest).
    pub(super) fn scale_in_victims(&self, svc: &ServiceSpec, count: usize) -> Vec<String> {
        let mut by_zone: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self
            .service_tasks(svc)
            .filter(|t| t.task_definition == svc.task_definition && t.replaced_by.is_none())
        {
            by_zone
                .entry(t.zone.clone())
                .or_default()
                .push(t.arn.clone());
        }
        let mut victims = Vec::new();
        for _ in 0..count {
            let Some((_, list)) = by_zone
                .iter_mut()
                .filter(|(_, l)| !l.is_empty())
                .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
            else {
                break;
            };
            if let Some(arn) = list.pop() {
                victims.push(arn);
            }
        }
        victims
    }

    /// Where a new task of `svc` goes: the zone with the fewest of the service's tasks, its
    /// subnet, and the lowest free address of the zone's range.
    fn place(
        &self,
        svc: &ServiceSpec,
        td: &TaskDefSpec,
        world: &World,
    ) -> Result<(String, String, SocketAddr), Error> {
        // The service's zones, and the subnet to use in each.
        let mut zones: BTreeMap<usize, (String, String)> = BTreeMap::new();
        for sid in &svc.subnets {
            if let Some(SubnetSpec { zone, .. }) = world.subnets.get(sid)
                && let Some(i) = self.zone_index(zone)
            {
                zones
                    .entry(i)
                    .or_insert_with(|| (zone.clone(), sid.clone()));
            }
        }
        if zones.is_empty() {
            return Err(Error::Aws {
                operation: "RunTask",
                resource: svc.key(),
                message: "the service has no subnet in a known zone".to_owned(),
            });
        }
        let mut counts: BTreeMap<usize, usize> = zones.keys().map(|i| (*i, 0)).collect();
        for t in self.service_tasks(svc) {
            if let Some(i) = self.zone_index(&t.zone)
                && let Some(c) = counts.get_mut(&i)
            {
                *c += 1;
            }
        }
        let no_zone = || Error::Aws {
            operation: "RunTask",
            resource: svc.key(),
            message: "no zone to place the task in".to_owned(),
        };
        let (&zi, _) = counts
            .iter()
            .min_by_key(|(i, c)| (**c, **i))
            .ok_or_else(no_zone)?;
        let (zone, subnet) = zones.get(&zi).cloned().ok_or_else(no_zone)?;
        // Not the address of a running task, nor of one still registered (a stopped task is
        // deregistered later in the iteration: registering its replacement on the same
        // address and then deregistering the old one would leave neither in the group).
        let used: BTreeSet<usize> = self
            .tasks
            .values()
            .map(|t| t.addr)
            .chain(self.registered.values().flat_map(|m| m.values().copied()))
            .filter_map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => Some(tasks::zone_slot(ip)),
                std::net::IpAddr::V6(_) => None,
            })
            .filter(|(z, _)| *z == zi)
            .map(|(_, k)| k)
            .collect();
        let port = svc
            .load_balancers
            .iter()
            .find_map(|(_, p)| *p)
            .or(td.container_port)
            .unwrap_or(8080);
        // The lowest free host of the zone's range that nothing else on this machine listens
        // on (another data plane, a test, any program): the third octet still tells the zone.
        let Some(ip) = tasks::free_task_ip(zi, port, &used) else {
            return Err(Error::Aws {
                operation: "RunTask",
                resource: svc.key(),
                message: format!(
                    "no free task address left on port {port} in 127.0.{}.10-254 ({zone})",
                    zi + 1
                ),
            });
        };
        Ok((zone, subnet, SocketAddr::from((ip, port))))
    }

    /// Records the task with RunTask; returns its ARN and whether ECS holds it (moto cannot
    /// run some task definitions Fargate accepts: those run unrecorded).
    async fn record_run(
        &mut self,
        svc: &ServiceSpec,
        subnet: &str,
    ) -> Result<(String, bool), Error> {
        let mut net = AwsVpcConfiguration::builder().subnets(subnet);
        for sg in &svc.security_groups {
            net = net.security_groups(sg);
        }
        let net = net.build().map_err(|e| Error::Aws {
            operation: "RunTask",
            resource: svc.key(),
            message: e.to_string(),
        })?;
        let out = self
            .c
            .ecs
            .run_task()
            .cluster(&svc.cluster)
            .task_definition(&svc.task_definition)
            .launch_type(LaunchType::Fargate)
            .started_by(&svc.deployment_id)
            .group(format!("service:{}", svc.name))
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(net)
                    .build(),
            )
            .send()
            .await;
        // moto answers 500 to RunTask when a container definition has neither `memory` nor
        // `memoryReservation` (legal on Fargate): run the task anyway, unrecorded in ECS.
        Ok(match out {
            Ok(out) => {
                let Some(arn) = out
                    .tasks()
                    .first()
                    .and_then(|t| t.task_arn())
                    .map(str::to_owned)
                else {
                    return Err(Error::Aws {
                        operation: "RunTask",
                        resource: svc.key(),
                        message: format!("no task started: {:?}", out.failures()),
                    });
                };
                (arn, true)
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 500) => {
                self.unrecorded += 1;
                if self.unrecorded == 1 {
                    log(format_args!(
                        "RunTask {} failed inside the control plane (moto needs container-level memory or memoryReservation); running tasks unrecorded in ECS: {}",
                        svc.key(),
                        DisplayErrorContext(&e)
                    ));
                }
                let arn = format!(
                    "arn:aws:ecs:{}:000000000000:task/{}/sandbox{:024x}",
                    self.region, svc.cluster, self.unrecorded
                );
                (arn, false)
            }
            Err(e) => return Err(observe::aws("RunTask", svc.key())(e)),
        })
    }

    /// Creates a task of `svc`: placed in the zone with the fewest of the service's tasks (the
    /// lowest free address of its range), recorded with RunTask and reported PROVISIONING; it
    /// turns PENDING and RUNNING later ([`Reconciler::advance_launches`]). Returns its ARN.
    pub(super) async fn start_task(
        &mut self,
        svc: &ServiceSpec,
        td: &TaskDefSpec,
        world: &World,
    ) -> Result<String, Error> {
        let (zone, subnet, addr) = self.place(svc, td, world)?;
        let (arn, recorded) = self.record_run(svc, &subnet).await?;
        let id = arn.rsplit('/').next().unwrap_or(&arn).to_owned();
        if !td.runnable() {
            let reason = format!(
                "CannotPullContainerError: the sandbox runs only images whose repository ends in sample-app, not {}",
                td.image
            );
            log(format_args!(
                "task {id} of {} failed to start: {reason}",
                svc.key()
            ));
            let _ = self
                .c
                .ecs
                .stop_task()
                .cluster(&svc.cluster)
                .task(&arn)
                .reason(&reason)
                .send()
                .await;
            return Err(Error::Aws {
                operation: "RunTask",
                resource: svc.key(),
                message: reason,
            });
        }
        // The scheduler's delay and the draw's provisioning share are PROVISIONING, the image
        // pull is PENDING (model time, on the plane's clock).
        let latency = self.opts.launch.sample(&mut self.rng);
        let phases = LaunchLatency::phases(latency);
        let now = Instant::now();
        let clock = self.opts.clock;
        let pending_at = now + clock.wall(ecs::SCHEDULER_DELAY + phases.provisioning);
        let running_at = pending_at + clock.wall(phases.pending);
        if recorded {
            self.report_state(&svc.cluster, &arn, "PROVISIONING").await;
        }
        log(format_args!(
            "task {id} of {} placed at {addr} in {zone}: RUNNING in {:.1} s (model {:.0} s: scheduler {:.0} s, launch {:.0} s)",
            svc.key(),
            running_at.duration_since(now).as_secs_f64(),
            (ecs::SCHEDULER_DELAY + latency).as_secs_f64(),
            ecs::SCHEDULER_DELAY.as_secs_f64(),
            latency.as_secs_f64(),
        ));
        self.tasks.insert(
            arn.clone(),
            TaskProc {
                arn: arn.clone(),
                id,
                cluster: svc.cluster.clone(),
                service: svc.name.clone(),
                task_definition: svc.task_definition.clone(),
                zone,
                subnet,
                addr,
                process: None,
                launch: Some(tasks::Launching {
                    pending_at,
                    running_at,
                    pending: false,
                }),
                cpu_units: td.cpu_units,
                cpu: VecDeque::new(),
                started: now,
                recorded,
                replaced_by: None,
            },
        );
        Ok(arn)
    }

    /// Reports a task's state to ECS as its agent does (SubmitTaskStateChange).
    pub(super) async fn report_state(&self, cluster: &str, arn: &str, status: &str) {
        if let Err(e) = self
            .c
            .ecs
            .submit_task_state_change()
            .cluster(cluster)
            .task(arn)
            .status(status)
            .send()
            .await
        {
            log(format_args!(
                "SubmitTaskStateChange {arn} {status}: {}",
                DisplayErrorContext(&e)
            ));
        }
    }

    /// Moves launching tasks on: PENDING when their provisioning is done; when their pull is
    /// done, RUNNING (the process starts) or, if their subnet cannot reach the registry (a
    /// network ACL that denies it), stopped with `CannotPullContainerError`, which counts as a
    /// failed start of the service.
    pub(super) async fn advance_launches(&mut self, world: &World) {
        let now = Instant::now();
        let due: Vec<(String, bool)> = self
            .tasks
            .values()
            .filter_map(|t| {
                let l = t.launch?;
                if now >= l.running_at {
                    Some((t.arn.clone(), true))
                } else if now >= l.pending_at && !l.pending {
                    Some((t.arn.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        for (arn, run) in due {
            if !run {
                if let Some(t) = self.tasks.get_mut(&arn)
                    && let Some(l) = t.launch.as_mut()
                {
                    l.pending = true;
                }
                if let Some(t) = self.tasks.get(&arn)
                    && t.recorded
                {
                    self.report_state(&t.cluster, &arn, "PENDING").await;
                }
                continue;
            }
            let Some(t) = self.tasks.get(&arn) else {
                continue;
            };
            let key = format!("{}/{}", t.cluster, t.service);
            let subnet = world.subnets.get(&t.subnet);
            let acl_ok = subnet.is_none_or(observe::SubnetSpec::acl_admits_pull);
            let way_out = match subnet {
                // An unreadable route table is no failed pull: the next iteration decides.
                Some(s) => match observe::reaches_registry(&self.c, &t.subnet, &s.vpc).await {
                    Ok(reach) => reach,
                    Err(e) => {
                        log(format_args!(
                            "task {arn}: reading its way to the registry: {e}"
                        ));
                        continue;
                    }
                },
                None => true,
            };
            if !(acl_ok && way_out) {
                let reason = format!(
                    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref: dial tcp: i/o timeout (subnet {} cannot reach the registry)",
                    t.subnet
                );
                self.stop_task(&arn, Some(&reason)).await;
                self.note_failure(&key);
                continue;
            }
            let env = match self.task_environment(&arn).await {
                Ok(env) => env,
                Err(reason) => {
                    self.stop_task(&arn, Some(&reason)).await;
                    self.note_failure(&key);
                    continue;
                }
            };
            if let Err(e) = self.run_process(&arn, env).await {
                log(format_args!("task {arn}: {e}"));
                self.stop_task(&arn, Some(&format!("CannotStartContainerError: {e}")))
                    .await;
                self.note_failure(&key);
            }
        }
    }

    /// The environment of a task's container: its task definition's variables, then its
    /// secrets, read now (`Err`: the reason the task stops, as ECS words it).
    async fn task_environment(&self, arn: &str) -> Result<Vec<(String, String)>, String> {
        let Some(td) = self
            .tasks
            .get(arn)
            .and_then(|t| self.task_defs.get(&t.task_definition))
        else {
            return Ok(Vec::new());
        };
        let mut env = td.environment.clone();
        env.extend(secrets::resolve(&self.c, &td.secrets).await?);
        Ok(env)
    }

    /// Starts the process of a task whose launch is done, with `env` as its container's
    /// environment, and reports it RUNNING.
    async fn run_process(&mut self, arn: &str, env: Vec<(String, String)>) -> Result<(), Error> {
        let Some(t) = self.tasks.get(arn) else {
            return Ok(());
        };
        let Some(td) = self.task_defs.get(&t.task_definition).cloned() else {
            return Err(Error::Aws {
                operation: "RunTask",
                resource: arn.to_owned(),
                message: format!("task definition {} unknown", t.task_definition),
            });
        };
        let (id, zone, addr, cluster) = (t.id.clone(), t.zone.clone(), t.addr, t.cluster.clone());
        self.metadata
            .publish(&id, arn, &cluster, &td, &zone, Some(addr.ip()));
        let log_path = self.opts.state_dir.as_ref().map(|d| {
            let dir = d.join("tasks");
            let _ = std::fs::create_dir_all(&dir);
            dir.join(format!("{id}.log"))
        });
        let launch = tasks::Launch {
            program: &self.opts.sample_app,
            args: &[],
            addr,
            metadata_uri: self.metadata.uri(&id),
            zone: &zone,
            arn,
            log: log_path.as_deref(),
            env,
            dns: self.dns.addr(),
            ca_file: self.caches.ca_file(),
        };
        let (child, pid) = match tasks::spawn(&launch) {
            Ok(x) => x,
            Err(e) => {
                self.metadata.remove(&id);
                return Err(e);
            }
        };
        log(format_args!(
            "task {id} RUNNING at {addr} in {zone} (pid {pid})"
        ));
        let recorded = if let Some(t) = self.tasks.get_mut(arn) {
            t.process = Some(tasks::Process { child, pid });
            t.launch = None;
            t.started = Instant::now();
            t.recorded
        } else {
            false
        };
        if recorded {
            self.report_state(&cluster, arn, "RUNNING").await;
        }
        Ok(())
    }
}
