//! The load balancers: each target group's targets from the services' running tasks, one proxy
//! per HTTP listener with one node per zone of its load balancer (reachable as its subnet's
//! network ACL allows; in the DNS answer as Route 53 and zonal shifts decide), and the
//! statistics taken from them (requests per target group for autoscaling).

use super::*;

impl Reconciler {
    /// The targets each target group should have: the tasks of the services that use it.
    pub(super) fn desired_targets(&self, world: &World) -> BTreeMap<String, Vec<alb::Target>> {
        let mut map: BTreeMap<String, Vec<alb::Target>> = BTreeMap::new();
        for svc in &world.services {
            for (tg, _) in &svc.load_balancers {
                let list = map.entry(tg.clone()).or_default();
                // ECS registers a task once it is RUNNING.
                for t in self.service_tasks(svc).filter(|t| t.running()) {
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

    /// The node addresses of a load balancer in `zones` (indices of the region's zones): host
    /// `127.0.{zone+1}.h` for the lowest `h` from 2 to 9 where `port` is free in every zone.
    /// `None` when no host has it free (then the proxy takes any free port).
    fn node_addrs(&self, zones: &[usize], port: u16) -> Option<Vec<SocketAddr>> {
        (2u8..10).find_map(|h| {
            let addrs: Option<Vec<SocketAddr>> = zones
                .iter()
                .map(|z| {
                    let third = u8::try_from(z + 1).ok()?;
                    Some(SocketAddr::from(([127, 0, third, h], port)))
                })
                .collect();
            let addrs = addrs?;
            addrs
                .iter()
                .all(|a| std::net::TcpListener::bind(a).is_ok())
                .then_some(addrs)
        })
    }

    /// A new proxy for listener `l`: one node per zone of its load balancer, on the listener's
    /// port if it is free on every node's address (as root, or where unprivileged ports start
    /// low enough), else on one free port shared by all nodes.
    async fn bind_proxy(&self, l: &ListenerSpec) -> Result<alb::Proxy, alb::Error> {
        let settings = alb::ProxySettings {
            idle_timeout: self.opts.clock.wall(l.idle_timeout),
            connect_timeout: self.opts.clock.wall(aws_model::aws::elb::CONNECT_TIMEOUT),
            seed: self.opts.seed,
            ..alb::ProxySettings::new(l.lb_arn_suffix.clone())
        };
        let zones: Vec<(String, usize)> = l
            .zones
            .iter()
            .filter_map(|(z, _)| Some((z.clone(), self.zone_index(z)?)))
            .collect();
        if zones.is_empty() {
            return alb::Proxy::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), settings).await;
        }
        let indices: Vec<usize> = zones.iter().map(|(_, i)| *i).collect();
        let addrs = self
            .node_addrs(&indices, l.port)
            .or_else(|| self.node_addrs(&indices, 0))
            .unwrap_or_default();
        let nodes: Vec<alb::Node> = zones
            .iter()
            .zip(addrs)
            .map(|((zone, _), addr)| alb::Node {
                zone: zone.clone(),
                addr,
            })
            .collect();
        alb::Proxy::bind_nodes(&nodes, settings).await
    }

    /// One proxy per HTTP listener, fed with its target group; each node reachable as its
    /// subnet's network ACL allows, the zonal shifts applied, and the DNS answers set.
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
                match self.bind_proxy(l).await {
                    Ok(proxy) => {
                        log(format_args!(
                            "ALB {} ({}:{}) listens on {}",
                            l.lb_name,
                            l.dns_name,
                            l.port,
                            proxy
                                .nodes()
                                .iter()
                                .map(|(z, a, _)| if z.is_empty() {
                                    a.to_string()
                                } else {
                                    format!("{a} ({z})")
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
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
            self.sync_nodes(l, world).await;
            let Some(entry) = self.proxies.get_mut(&l.arn) else {
                continue;
            };
            entry.spec = l.clone();
            let shifted: Vec<String> = world
                .zonal_shifts
                .iter()
                .filter(|(r, _)| *r == l.lb_arn)
                .map(|(_, z)| z.clone())
                .collect();
            entry.proxy.set_shifted_zones(shifted);
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
                let clock = self.opts.clock;
                let mut check = health.to_check();
                check.interval = clock.wall(check.interval);
                check.timeout = clock.wall(check.timeout);
                entry.proxy.set_target_group(alb::TargetGroup {
                    health_check: check,
                    deregistration_delay: clock.wall(*deregistration_delay),
                    targets: list,
                });
                entry.pushed = Some(key);
            }
        }
        self.sync_dns(world);
        let endpoints = self.endpoints();
        if self.written_endpoints.as_ref() != Some(&endpoints) {
            if let Some(dir) = &self.opts.state_dir {
                let path = dir.join("sandbox-endpoints.json");
                let file = crate::daemon::EndpointsFile {
                    dns: Some(self.dns.addr()),
                    clock: self.opts.clock,
                    launch: self.opts.launch,
                    load_balancers: endpoints.clone(),
                };
                let text = serde_json::to_string_pretty(&file).unwrap_or_default();
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

    /// Cuts off or restores the nodes of `l` as their subnets' network ACLs say, and keeps
    /// their standing with Route 53 (in the DNS answer or not).
    async fn sync_nodes(&mut self, l: &ListenerSpec, world: &World) {
        let now = Instant::now();
        for (zone, subnet) in &l.zones {
            let reachable = world
                .subnets
                .get(subnet)
                .is_none_or(|s| s.reachable(l.port));
            let key = (l.lb_arn.clone(), zone.clone());
            let node = self.nodes.entry(key.clone()).or_insert(NodeDns {
                reachable: true,
                since: now,
                in_dns: true,
            });
            if node.reachable != reachable {
                node.reachable = reachable;
                node.since = now;
                log(format_args!(
                    "ALB {} node in {zone} {}",
                    l.lb_name,
                    if reachable {
                        "reachable again"
                    } else {
                        "cut off (its subnet's network ACL denies clients)"
                    }
                ));
                if let Some(entry) = self.proxies.get(&l.arn) {
                    entry.proxy.set_node_reachable(zone, reachable).await;
                }
            }
            let delay = self.opts.clock.wall(dns::removal_delay(
                self.opts.seed,
                &format!("{}/{zone}", l.lb_arn),
            ));
            if node.in_dns != node.reachable && now.duration_since(node.since) >= delay {
                node.in_dns = node.reachable;
                log(format_args!(
                    "ALB {} node in {zone} {} the DNS answer (Route 53's health checks)",
                    l.lb_name,
                    if node.in_dns { "back in" } else { "out of" }
                ));
            }
        }
    }

    /// The DNS answer of every load balancer: its nodes in DNS outside shifted zones, or every
    /// node when none would be left.
    fn sync_dns(&self, world: &World) {
        let ttl = dns::ttl(self.opts.clock);
        let mut names = BTreeSet::new();
        for entry in self.proxies.values() {
            let l = &entry.spec;
            let all: Vec<(String, Ipv4Addr)> = entry
                .proxy
                .nodes()
                .into_iter()
                .filter_map(|(zone, addr, _)| match addr.ip() {
                    std::net::IpAddr::V4(ip) => Some((zone, ip)),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect();
            let answered: Vec<Ipv4Addr> = all
                .iter()
                .filter(|(zone, _)| {
                    let shifted = world
                        .zonal_shifts
                        .iter()
                        .any(|(r, z)| *r == l.lb_arn && z == zone);
                    let in_dns = self
                        .nodes
                        .get(&(l.lb_arn.clone(), zone.clone()))
                        .is_none_or(|n| n.in_dns);
                    !shifted && in_dns
                })
                .map(|(_, ip)| *ip)
                .collect();
            let ips = if answered.is_empty() {
                all.iter().map(|(_, ip)| *ip).collect()
            } else {
                answered
            };
            names.insert(l.dns_name.to_ascii_lowercase());
            self.dns.set(&l.dns_name, ips, ttl);
        }
        // The databases' and the caches' endpoints are theirs to set.
        names.extend(
            world
                .databases
                .iter()
                .map(|d| d.endpoint.to_ascii_lowercase()),
        );
        names.extend(world.caches.iter().flat_map(|g| {
            std::iter::once(g.endpoint.to_ascii_lowercase())
                .chain(g.reader_endpoint.as_ref().map(|r| r.to_ascii_lowercase()))
        }));
        self.dns.retain(&names);
    }

    pub(super) fn endpoints(&self) -> Vec<AlbEndpoint> {
        self.proxies
            .values()
            .map(|p| AlbEndpoint {
                name: p.spec.lb_name.clone(),
                dns_name: p.spec.dns_name.clone(),
                port: p.spec.port,
                local_addr: p.proxy.local_addr(),
                nodes: p
                    .proxy
                    .nodes()
                    .into_iter()
                    .map(|(zone, addr, reachable)| NodeEndpoint {
                        in_dns: self
                            .nodes
                            .get(&(p.spec.lb_arn.clone(), zone.clone()))
                            .is_none_or(|n| n.in_dns),
                        zone,
                        addr,
                        reachable,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Takes the proxies' statistics into the report, samples the tasks' CPU, and returns the
    /// requests per target group since the last call.
    pub(super) fn collect_stats(&mut self, now: Instant) -> HashMap<String, u64> {
        let mut requests: HashMap<String, u64> = HashMap::new();
        for p in self.proxies.values() {
            let stats = p.proxy.take_stats();
            if let Some(tg) = &p.spec.target_group {
                let total: u64 = stats.zones.values().map(|z| z.requests).sum();
                *requests.entry(tg.clone()).or_default() += total;
            }
            self.report.add(&p.spec, stats);
        }
        for t in self.tasks.values_mut() {
            t.sample_cpu(now, CPU_WINDOW);
        }
        requests
    }
}
