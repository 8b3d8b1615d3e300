//! The load balancers: each target group's targets from the services' tasks, one proxy per
//! HTTP listener, and the statistics taken from them (requests per target for autoscaling).

use super::*;

impl Reconciler {
    /// The targets each target group should have: the tasks of the services that use it.
    pub(super) fn desired_targets(&self, world: &World) -> BTreeMap<String, Vec<alb::Target>> {
        let mut map: BTreeMap<String, Vec<alb::Target>> = BTreeMap::new();
        for svc in &world.services {
            for (tg, _) in &svc.load_balancers {
                let list = map.entry(tg.clone()).or_default();
                for t in self.service_tasks(svc) {
                    let reachable = world
                        .subnets
                        .get(&t.subnet)
                        .is_none_or(|s| s.reachable(t.addr.port()));
                    list.push(alb::Target {
                        id: t.arn.clone(),
                        addr: t.addr,
                        zone: t.zone.clone(),
                        reachable,
                    });
                }
            }
        }
        map
    }

    /// Registers running tasks in their target groups in the control plane, deregisters gone ones.
    pub(super) async fn sync_targets(&mut self, world: &World) {
        let desired = self.desired_targets(world);
        let all: BTreeSet<String> = desired
            .keys()
            .cloned()
            .chain(self.registered.keys().cloned())
            .collect();
        for tg in all {
            let want: HashMap<String, (SocketAddr, String)> = desired
                .get(&tg)
                .map(|l| {
                    l.iter()
                        .map(|t| (t.id.clone(), (t.addr, t.zone.clone())))
                        .collect()
                })
                .unwrap_or_default();
            if !self.registered.contains_key(&tg) {
                self.clean_stale_targets(&tg, &want).await;
            }
            let have = self.registered.entry(tg.clone()).or_default().clone();
            let add: Vec<(String, SocketAddr, String)> = want
                .iter()
                .filter(|(id, _)| !have.contains_key(*id))
                .map(|(id, (a, z))| (id.clone(), *a, z.clone()))
                .collect();
            let remove: Vec<(String, SocketAddr)> = have
                .iter()
                .filter(|(id, _)| !want.contains_key(*id))
                .map(|(id, a)| (id.clone(), *a))
                .collect();
            if !add.is_empty() {
                let targets = add.iter().map(|(_, a, z)| {
                    TargetDescription::builder()
                        .id(a.ip().to_string())
                        .port(i32::from(a.port()))
                        .availability_zone(z)
                        .build()
                });
                match self
                    .c
                    .elb
                    .register_targets()
                    .target_group_arn(&tg)
                    .set_targets(Some(targets.collect()))
                    .send()
                    .await
                {
                    Ok(_) => {
                        let reg = self.registered.entry(tg.clone()).or_default();
                        for (id, a, _) in add {
                            reg.insert(id, a);
                        }
                    }
                    Err(e) => log(format_args!(
                        "RegisterTargets {tg}: {}",
                        DisplayErrorContext(&e)
                    )),
                }
            }
            if !remove.is_empty() {
                let targets = remove.iter().map(|(_, a)| {
                    TargetDescription::builder()
                        .id(a.ip().to_string())
                        .port(i32::from(a.port()))
                        .build()
                });
                let result = self
                    .c
                    .elb
                    .deregister_targets()
                    .target_group_arn(&tg)
                    .set_targets(Some(targets.collect()))
                    .send()
                    .await;
                if let Err(e) = &result {
                    log(format_args!(
                        "DeregisterTargets {tg}: {}",
                        DisplayErrorContext(e)
                    ));
                }
                // Forget them either way: a failure means the target group or the target is gone.
                let reg = self.registered.entry(tg.clone()).or_default();
                for (id, _) in remove {
                    reg.remove(&id);
                }
            }
            if self.registered.get(&tg).is_some_and(HashMap::is_empty) && !desired.contains_key(&tg)
            {
                self.registered.remove(&tg);
            }
        }
    }

    /// On first sight of a target group, deregisters loopback targets no task of ours has
    /// (left by an earlier run of the sandbox).
    pub(super) async fn clean_stale_targets(
        &self,
        tg: &str,
        want: &HashMap<String, (SocketAddr, String)>,
    ) {
        let Ok(out) = self
            .c
            .elb
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
        else {
            return;
        };
        let ours: BTreeSet<String> = want.values().map(|(a, _)| a.ip().to_string()).collect();
        let stale: Vec<TargetDescription> = out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| d.target())
            .filter(|t| {
                t.id()
                    .is_some_and(|id| id.starts_with("127.") && !ours.contains(id))
            })
            .cloned()
            .collect();
        if !stale.is_empty() {
            let _ = self
                .c
                .elb
                .deregister_targets()
                .target_group_arn(tg)
                .set_targets(Some(stale))
                .send()
                .await;
        }
    }

    /// One proxy per HTTP listener, fed with its target group.
    pub(super) async fn sync_proxies(&mut self, world: &World) {
        let wanted: BTreeSet<String> = world.listeners.iter().map(|l| l.arn.clone()).collect();
        let gone: Vec<String> = self
            .proxies
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for arn in gone {
            if let Some(p) = self.proxies.remove(&arn) {
                p.proxy.shutdown().await;
            }
        }
        let targets = self.desired_targets(world);
        for l in &world.listeners {
            if !self.proxies.contains_key(&l.arn) {
                let settings = alb::ProxySettings {
                    idle_timeout: l.idle_timeout,
                    name: l.lb_arn_suffix.clone(),
                };
                match alb::Proxy::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), settings).await {
                    Ok(proxy) => {
                        log(format_args!(
                            "ALB {} ({}:{}) listens on {}",
                            l.lb_name,
                            l.dns_name,
                            l.port,
                            proxy.local_addr()
                        ));
                        self.proxies.insert(
                            l.arn.clone(),
                            ProxyEntry {
                                spec: l.clone(),
                                proxy,
                                pushed: None,
                            },
                        );
                    }
                    Err(e) => {
                        log(format_args!("ALB {}: {e}", l.lb_name));
                        continue;
                    }
                }
            }
            let Some(entry) = self.proxies.get_mut(&l.arn) else {
                continue;
            };
            entry.spec = l.clone();
            let Some(tg_arn) = &l.target_group else {
                continue;
            };
            let Some(TargetGroupSpec {
                health,
                deregistration_delay,
                ..
            }) = world.target_groups.get(tg_arn)
            else {
                continue;
            };
            let list = targets.get(tg_arn).cloned().unwrap_or_default();
            let key = (health.clone(), *deregistration_delay, list.clone());
            if entry.pushed.as_ref() != Some(&key) {
                entry.proxy.set_target_group(alb::TargetGroup {
                    health_check: health.to_check(),
                    deregistration_delay: *deregistration_delay,
                    targets: list,
                });
                entry.pushed = Some(key);
            }
        }
        let endpoints = self.endpoints();
        if self.written_endpoints.as_ref() != Some(&endpoints) {
            if let Some(dir) = &self.opts.state_dir {
                let path = dir.join("sandbox-endpoints.json");
                let text = serde_json::to_string_pretty(&endpoints).unwrap_or_default();
                let tmp = dir.join("sandbox-endpoints.json.tmp");
                let result = std::fs::create_dir_all(dir)
                    .and_then(|()| std::fs::write(&tmp, text))
                    .and_then(|()| std::fs::rename(&tmp, &path));
                if let Err(e) = result {
                    log(format_args!("writing {}: {e}", path.display()));
                }
            }
            self.written_endpoints = Some(endpoints);
        }
    }

    pub(super) fn endpoints(&self) -> Vec<AlbEndpoint> {
        self.proxies
            .values()
            .map(|p| AlbEndpoint {
                name: p.spec.lb_name.clone(),
                dns_name: p.spec.dns_name.clone(),
                port: p.spec.port,
                local_addr: p.proxy.local_addr(),
            })
            .collect()
    }

    pub(super) fn collect_stats(&mut self, now: Instant) {
        for p in self.proxies.values() {
            let stats = p.proxy.take_stats();
            if let Some(tg) = &p.spec.target_group {
                let total: u64 = stats.zones.values().map(|z| z.requests).sum();
                self.window.push_back((now, tg.clone(), total));
            }
            self.report.add(&p.spec, stats);
        }
        while self
            .window
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > self.opts.scaling_window)
        {
            self.window.pop_front();
        }
        for t in self.tasks.values_mut() {
            t.sample_cpu(now, self.opts.scaling_window);
        }
    }

    /// Requests per healthy target per minute over the window, for a target group.
    pub(super) fn request_count_per_target(&self, tg: &str, now: Instant) -> Option<f64> {
        let span = now
            .duration_since(self.started)
            .min(self.opts.scaling_window)
            .as_secs_f64();
        if span <= 0.0 {
            return None;
        }
        let requests: u64 = self
            .window
            .iter()
            .filter(|(_, t, _)| t == tg)
            .map(|(_, _, n)| n)
            .sum();
        let healthy = self
            .proxies
            .values()
            .filter(|p| p.spec.target_group.as_deref() == Some(tg))
            .flat_map(|p| p.proxy.health())
            .filter(|h| h.state == alb::TargetState::Healthy)
            .map(|h| h.id)
            .collect::<BTreeSet<_>>()
            .len();
        if healthy == 0 {
            return None;
        }
        Some(requests as f64 / span * 60.0 / healthy as f64)
    }
}
