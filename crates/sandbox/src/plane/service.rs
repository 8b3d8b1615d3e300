//! Keeping each service's tasks running: starting them spread over the service's zones,
//! rolling a new task definition within the deployment's percentages, scaling in, and
//! replacing tasks that exit, are stopped through the API or fail their health checks.

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
            "stopping task {} ({} in {}, pid {}){}",
            t.id,
            t.addr,
            t.zone,
            t.pid,
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
        self.stopping.spawn(tasks::stop_child(t.child, t.pid));
    }

    /// Replaces processes that exited on their own.
    pub(super) async fn reap_exited(&mut self, world: &World) {
        let mut exited = Vec::new();
        for (arn, t) in &mut self.tasks {
            if let Ok(Some(status)) = t.child.try_wait() {
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

    pub(super) fn note_failure(&mut self, key: &str) {
        let e = self
            .failures
            .entry(key.to_owned())
            .or_insert((0, Instant::now()));
        e.0 += 1;
        let backoff = Duration::from_secs(1 << e.0.min(6)).min(Duration::from_secs(60));
        e.1 = Instant::now() + backoff;
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

    /// Stops the tasks their load balancer marked unhealthy, once the service's health check
    /// grace period since their start has passed, with the reason ECS gives; `converge_service`
    /// starts their replacements, and `sync_targets` deregisters them (they drain).
    pub(super) async fn replace_unhealthy(&mut self, world: &World) {
        let now = Instant::now();
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
                let Some(svc) = world
                    .services
                    .iter()
                    .find(|s| s.cluster == t.cluster && s.name == t.service)
                else {
                    continue;
                };
                let behind_it = svc.load_balancers.iter().any(|(arn, _)| arn == tg);
                if behind_it && now.duration_since(t.started) >= svc.health_check_grace {
                    victims.insert(h.id, tg.clone());
                }
            }
        }
        for (arn, tg) in victims {
            let reason = format!("Task failed ELB health checks in (target-group {tg})");
            self.stop_task(&arn, Some(&reason)).await;
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
        let (new, old): (Vec<&TaskProc>, Vec<&TaskProc>) = self
            .service_tasks(svc)
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
        if to_start > 0
            && let Some((_, not_before)) = self.failures.get(&key)
            && Instant::now() < *not_before
        {
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
            .filter(|t| t.task_definition == svc.task_definition)
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

    pub(super) async fn start_task(
        &mut self,
        svc: &ServiceSpec,
        td: &TaskDefSpec,
        world: &World,
    ) -> Result<(), Error> {
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
        let Some((&zi, _)) = counts.iter().min_by_key(|(i, c)| (**c, **i)) else {
            return Ok(());
        };
        let Some((zone, subnet)) = zones.get(&zi).cloned() else {
            return Ok(());
        };
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
        let addr = SocketAddr::from((ip, port));

        let mut net = AwsVpcConfiguration::builder().subnets(&subnet);
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
        let (arn, recorded) = match out {
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
        };
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
        self.metadata.insert(
            &id,
            serde_json::json!({
                "Cluster": svc.cluster,
                "TaskARN": arn,
                "Family": td.family,
                "Revision": td.revision.to_string(),
                "DesiredStatus": "RUNNING",
                "KnownStatus": "RUNNING",
                "AvailabilityZone": zone,
                "LaunchType": "FARGATE",
                "Containers": [{
                    "Name": td.container_name,
                    "Image": td.image,
                    "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [ip.to_string()]}],
                }],
            }),
            serde_json::json!({
                "Name": td.container_name,
                "Image": td.image,
                "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [ip.to_string()]}],
            }),
        );
        let log_path = self.opts.state_dir.as_ref().map(|d| {
            let dir = d.join("tasks");
            let _ = std::fs::create_dir_all(&dir);
            dir.join(format!("{id}.log"))
        });
        let launch = tasks::Launch {
            program: &self.opts.sample_app,
            addr,
            metadata_uri: self.metadata.uri(&id),
            zone: &zone,
            arn: &arn,
            log: log_path.as_deref(),
        };
        let (child, pid) = match tasks::spawn(&launch) {
            Ok(x) => x,
            Err(e) => {
                self.metadata.remove(&id);
                let _ = self
                    .c
                    .ecs
                    .stop_task()
                    .cluster(&svc.cluster)
                    .task(&arn)
                    .reason(format!("CannotStartContainerError: {e}"))
                    .send()
                    .await;
                return Err(e);
            }
        };
        log(format_args!(
            "started task {id} of {} at {addr} in {zone} (pid {pid})",
            svc.key()
        ));
        self.tasks.insert(
            arn.clone(),
            TaskProc {
                arn,
                id,
                cluster: svc.cluster.clone(),
                service: svc.name.clone(),
                task_definition: svc.task_definition.clone(),
                zone,
                subnet,
                addr,
                pid,
                child,
                cpu_units: td.cpu_units,
                cpu: VecDeque::new(),
                started: Instant::now(),
                recorded,
            },
        );
        Ok(())
    }
}
