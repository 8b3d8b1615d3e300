//! Reading the desired state from the control plane (moto, or AWS) with the SDK: ECS services
//! and their task definitions, the subnets they use with their zones and network ACLs, target
//! groups, load balancers with their HTTP listeners, and Application Auto Scaling targets and
//! target-tracking policies. Every listing is paginated with a bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_applicationautoscaling::types::ServiceNamespace;
use aws_sdk_ec2::types::NetworkAcl;
use aws_smithy_types::error::display::DisplayErrorContext;

use aws_model::aws::autoscaling::DEFAULT_COOLDOWN;
use aws_model::tracking::{Metric, Policy};

use super::Clients;
use super::alb::HealthCheck;
use super::database::DbSpec;
use super::nacl;
use crate::Error;

/// Most pages read from one listing per iteration.
pub(crate) const MAX_PAGES: usize = 20;

pub(crate) fn aws<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    resource: impl Into<String>,
) -> impl FnOnce(aws_sdk_ecs::error::SdkError<E>) -> Error {
    let resource = resource.into();
    move |e| Error::Aws {
        operation,
        resource,
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// One ECS service.
#[derive(Debug, Clone)]
pub(crate) struct ServiceSpec {
    pub(crate) cluster: String,
    pub(crate) name: String,
    pub(crate) desired: i32,
    pub(crate) task_definition: String,
    pub(crate) subnets: Vec<String>,
    pub(crate) security_groups: Vec<String>,
    pub(crate) max_percent: i32,
    pub(crate) min_healthy_percent: i32,
    /// (target group ARN, container port)
    pub(crate) load_balancers: Vec<(String, Option<u16>)>,
    pub(crate) deployment_id: String,
    /// `healthCheckGracePeriodSeconds`: how long after a task's start its load balancer
    /// health is ignored (zero when unset).
    pub(crate) health_check_grace: Duration,
    /// A deployment is in progress (more than one deployment): target tracking does not scale
    /// in meanwhile.
    pub(crate) deploying: bool,
}

impl ServiceSpec {
    /// `cluster/name`, the key of a service and its scalable target.
    pub(crate) fn key(&self) -> String {
        format!("{}/{}", self.cluster, self.name)
    }
}

/// One task definition (immutable, cached).
#[derive(Debug, Clone)]
pub(crate) struct TaskDefSpec {
    pub(crate) family: String,
    pub(crate) revision: i32,
    pub(crate) image: String,
    pub(crate) container_name: String,
    pub(crate) container_port: Option<u16>,
    /// CPU units of the task (1024 = one vCPU).
    pub(crate) cpu_units: u32,
    /// Memory of the task in MiB.
    pub(crate) memory_mib: u32,
    /// The container's environment, as the task definition gives it.
    pub(crate) environment: Vec<(String, String)>,
    /// The container's secrets: variable name and `valueFrom`.
    pub(crate) secrets: Vec<(String, String)>,
    /// The container's command (the arguments of its image's entry point).
    pub(crate) command: Vec<String>,
}

/// What a task's image runs in the sandbox, by the last part of its repository path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    /// `.../sample-app`: the sample-app, the service's program.
    SampleApp,
    /// `.../loadgen`: the stackproof command line, a load generator of a distributed run.
    Loadgen,
}

impl Program {
    /// The repository names the sandbox runs, for messages.
    pub(crate) const KNOWN: &'static str = "sample-app (the service) or loadgen (load generators)";
}

impl TaskDefSpec {
    /// What the sandbox runs for it: by its image's repository path's last part; `None` when
    /// the sandbox cannot run the image.
    pub(crate) fn program(&self) -> Option<Program> {
        let without_digest = self.image.split('@').next().unwrap_or_default();
        let last = without_digest.rsplit('/').next().unwrap_or_default();
        match last.split(':').next().unwrap_or_default() {
            "sample-app" => Some(Program::SampleApp),
            "loadgen" => Some(Program::Loadgen),
            _ => None,
        }
    }

    /// Whether the sandbox runs it as a service's task: its image is the sample-app.
    pub(crate) fn runnable(&self) -> bool {
        self.program() == Some(Program::SampleApp)
    }
}

/// A task started with RunTask outside any service (a standalone task, such as a load
/// generator of a distributed run), still wanted RUNNING.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    pub(crate) arn: String,
    pub(crate) cluster: String,
    pub(crate) task_definition: String,
    /// The subnet of its network interface.
    pub(crate) subnet: Option<String>,
    /// The container override's command, when given.
    pub(crate) command: Option<Vec<String>>,
    /// The container override's environment.
    pub(crate) environment: Vec<(String, String)>,
}

/// A subnet: its zone, whether its network ACL admits TCP on a port, and whether it has a way
/// to the registry.
#[derive(Debug, Clone)]
pub(crate) struct SubnetSpec {
    pub(crate) zone: String,
    pub(crate) acl: Option<NetworkAcl>,
    /// Its VPC: where [`reaches_registry`] looks for its way out.
    pub(crate) vpc: String,
}

impl SubnetSpec {
    /// Whether traffic from anywhere reaches `port` in this subnet.
    pub(crate) fn reachable(&self, port: u16) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| nacl::admits_tcp(acl, port))
    }

    /// Whether its network ACL lets a task pull its image: HTTPS out and answers back in.
    pub(crate) fn acl_admits_pull(&self) -> bool {
        self.acl.as_ref().is_none_or(nacl::admits_pull)
    }
}

/// A target group's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TargetGroupSpec {
    pub(crate) arn_suffix: String,
    pub(crate) health: HealthKey,
    pub(crate) deregistration_delay: Duration,
}

/// Health check settings, comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthKey {
    pub(crate) path: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) healthy: u32,
    pub(crate) unhealthy: u32,
    pub(crate) matcher: String,
}

impl HealthKey {
    pub(crate) fn to_check(&self) -> HealthCheck {
        HealthCheck {
            path: self.path.clone(),
            interval: self.interval,
            timeout: self.timeout,
            healthy_threshold: self.healthy,
            unhealthy_threshold: self.unhealthy,
            matcher: self.matcher.clone(),
        }
    }
}

/// One HTTP listener of a load balancer that forwards to a target group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenerSpec {
    pub(crate) arn: String,
    pub(crate) lb_arn: String,
    pub(crate) lb_name: String,
    /// The load balancer's zones with their subnet: one node in each.
    pub(crate) zones: Vec<(String, String)>,
    pub(crate) lb_arn_suffix: String,
    pub(crate) dns_name: String,
    pub(crate) port: u16,
    pub(crate) target_group: Option<String>,
    pub(crate) idle_timeout: Duration,
    /// (bucket, prefix) when access logs are enabled.
    pub(crate) access_logs: Option<(String, String)>,
}

/// A scalable ECS service with its target-tracking policies.
#[derive(Debug, Clone)]
pub(crate) struct ScalingSpec {
    pub(crate) min: i32,
    pub(crate) max: i32,
    pub(crate) policies: Vec<Policy>,
}

/// Everything read in one iteration.
#[derive(Debug, Default)]
pub(crate) struct World {
    pub(crate) services: Vec<ServiceSpec>,
    pub(crate) subnets: HashMap<String, SubnetSpec>,
    pub(crate) target_groups: HashMap<String, TargetGroupSpec>,
    pub(crate) listeners: Vec<ListenerSpec>,
    /// By `cluster/service`.
    pub(crate) scaling: BTreeMap<String, ScalingSpec>,
    /// Active zonal shifts: (resource ARN, zone name moved away from).
    pub(crate) zonal_shifts: Vec<(String, String)>,
    /// Standalone tasks wanted RUNNING.
    pub(crate) jobs: Vec<JobSpec>,
    /// RDS DB instances that are available.
    pub(crate) databases: Vec<DbSpec>,
    /// ElastiCache replication groups that are available.
    pub(crate) caches: Vec<super::cache::GroupSpec>,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    v.and_then(|v| u64::try_from(v).ok())
        .map_or(Duration::from_secs(default), Duration::from_secs)
}

pub(crate) fn port(v: Option<i32>) -> Option<u16> {
    v.and_then(|v| u16::try_from(v).ok())
}

fn name_of(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_owned()
}

/// Reads the ECS services of every cluster.
pub(crate) async fn services(c: &Clients) -> Result<Vec<ServiceSpec>, Error> {
    let mut specs = Vec::new();
    for cluster in clusters(c).await? {
        let mut arns = Vec::new();
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let out = c
                .ecs
                .list_services()
                .cluster(&cluster)
                .set_next_token(token)
                .send()
                .await
                .map_err(aws("ListServices", &cluster))?;
            arns.extend(out.service_arns().iter().cloned());
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for chunk in arns.chunks(10) {
            let out = c
                .ecs
                .describe_services()
                .cluster(&cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws("DescribeServices", &cluster))?;
            for s in out.services() {
                if s.status() != Some("ACTIVE") {
                    continue;
                }
                let net = s
                    .network_configuration()
                    .and_then(|n| n.awsvpc_configuration());
                let dc = s.deployment_configuration();
                let primary = s
                    .deployments()
                    .iter()
                    .find(|d| d.status() == Some("PRIMARY"))
                    .and_then(|d| d.id())
                    .map(str::to_owned);
                let name = s.service_name().unwrap_or_default().to_owned();
                specs.push(ServiceSpec {
                    deploying: s.deployments().len() > 1,
                    cluster: cluster.clone(),
                    deployment_id: primary.unwrap_or_else(|| format!("ecs-svc/{name}")),
                    health_check_grace: Duration::from_secs(
                        s.health_check_grace_period_seconds()
                            .and_then(|g| u64::try_from(g).ok())
                            .unwrap_or(0),
                    ),
                    name,
                    desired: s.desired_count(),
                    task_definition: s.task_definition().unwrap_or_default().to_owned(),
                    subnets: net.map(|n| n.subnets().to_vec()).unwrap_or_default(),
                    security_groups: net
                        .map(|n| n.security_groups().to_vec())
                        .unwrap_or_default(),
                    max_percent: dc.and_then(|d| d.maximum_percent()).unwrap_or(200),
                    min_healthy_percent: dc
                        .and_then(|d| d.minimum_healthy_percent())
                        .unwrap_or(100),
                    load_balancers: s
                        .load_balancers()
                        .iter()
                        .filter_map(|lb| {
                            Some((lb.target_group_arn()?.to_owned(), port(lb.container_port())))
                        })
                        .collect(),
                });
            }
        }
    }
    Ok(specs)
}

/// Reads one task definition.
pub(crate) async fn task_definition(c: &Clients, arn: &str) -> Result<TaskDefSpec, Error> {
    let out = c
        .ecs
        .describe_task_definition()
        .task_definition(arn)
        .send()
        .await
        .map_err(aws("DescribeTaskDefinition", arn))?;
    let Some(td) = out.task_definition() else {
        return Err(Error::Aws {
            operation: "DescribeTaskDefinition",
            resource: arn.to_owned(),
            message: "no task definition in the answer".to_owned(),
        });
    };
    let container = td.container_definitions().first();
    let cpu_units = td
        .cpu()
        .and_then(|c| c.trim().parse::<u32>().ok())
        .or_else(|| {
            container
                .and_then(|c| u32::try_from(c.cpu()).ok())
                .filter(|c| *c > 0)
        })
        .unwrap_or(256);
    Ok(TaskDefSpec {
        family: td.family().unwrap_or_default().to_owned(),
        revision: td.revision(),
        image: container
            .and_then(|c| c.image())
            .unwrap_or_default()
            .to_owned(),
        container_name: container.and_then(|c| c.name()).unwrap_or("app").to_owned(),
        container_port: container
            .and_then(|c| c.port_mappings().first())
            .and_then(|p| port(p.container_port())),
        cpu_units,
        memory_mib: td
            .memory()
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(512),
        environment: container
            .map(|c| {
                c.environment()
                    .iter()
                    .filter_map(|kv| {
                        Some((
                            kv.name()?.to_owned(),
                            kv.value().unwrap_or_default().to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        secrets: container
            .map(|c| {
                c.secrets()
                    .iter()
                    .map(|s| (s.name().to_owned(), s.value_from().to_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        command: container.map(|c| c.command().to_vec()).unwrap_or_default(),
    })
}

/// The clusters of the region, by name.
async fn clusters(c: &Clients) -> Result<Vec<String>, Error> {
    let mut clusters = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .ecs
            .list_clusters()
            .set_next_token(token)
            .send()
            .await
            .map_err(aws("ListClusters", "*"))?;
        clusters.extend(out.cluster_arns().iter().map(|a| name_of(a)));
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(clusters)
}

/// Reads the standalone tasks of every cluster that are wanted RUNNING: tasks whose group is
/// not a service's (`service:NAME`), as RunTask gives them (`family:NAME` or the caller's).
pub(crate) async fn jobs(c: &Clients) -> Result<Vec<JobSpec>, Error> {
    let mut jobs = Vec::new();
    for cluster in clusters(c).await? {
        let mut arns = Vec::new();
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let out = c
                .ecs
                .list_tasks()
                .cluster(&cluster)
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
                .set_next_token(token)
                .send()
                .await
                .map_err(aws("ListTasks", &cluster))?;
            arns.extend(out.task_arns().iter().cloned());
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        for chunk in arns.chunks(100) {
            let out = c
                .ecs
                .describe_tasks()
                .cluster(&cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(aws("DescribeTasks", &cluster))?;
            for t in out.tasks() {
                let standalone = !t.group().unwrap_or_default().starts_with("service:");
                if !standalone || t.desired_status() != Some("RUNNING") {
                    continue;
                }
                let subnet = t
                    .attachments()
                    .iter()
                    .flat_map(|a| a.details())
                    .find(|d| d.name() == Some("subnetId"))
                    .and_then(|d| d.value())
                    .map(str::to_owned);
                let container = t.overrides().and_then(|o| o.container_overrides().first());
                jobs.push(JobSpec {
                    arn: t.task_arn().unwrap_or_default().to_owned(),
                    cluster: cluster.clone(),
                    task_definition: t.task_definition_arn().unwrap_or_default().to_owned(),
                    subnet,
                    command: container
                        .map(|c| c.command().to_vec())
                        .filter(|c| !c.is_empty()),
                    environment: container
                        .map(|c| {
                            c.environment()
                                .iter()
                                .filter_map(|kv| {
                                    Some((
                                        kv.name()?.to_owned(),
                                        kv.value().unwrap_or_default().to_owned(),
                                    ))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
    Ok(jobs)
}

/// Reads the subnets with their zones and network ACLs.
pub(crate) async fn subnets(
    c: &Clients,
    ids: &[String],
) -> Result<HashMap<String, SubnetSpec>, Error> {
    let mut map = HashMap::new();
    if ids.is_empty() {
        return Ok(map);
    }
    let out = c
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| Error::Aws {
            operation: "DescribeSubnets",
            resource: ids.join(","),
            message: DisplayErrorContext(&e).to_string(),
        })?;
    // Every ACL of the subnets' VPCs, matched to subnets here: moto's `association.subnet-id`
    // filter compares only an ACL's first association, so a zone whose public and private
    // subnets share the deny-all ACL looked unfiltered (and reachable).
    let vpcs: BTreeSet<String> = out
        .subnets()
        .iter()
        .filter_map(|s| s.vpc_id().map(str::to_owned))
        .collect();
    let mut acls = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let page = c
            .ec2
            .describe_network_acls()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("vpc-id")
                    .set_values(Some(vpcs.iter().cloned().collect()))
                    .build(),
            )
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| Error::Aws {
                operation: "DescribeNetworkAcls",
                resource: ids.join(","),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        acls.extend(page.network_acls().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    for s in out.subnets() {
        let Some(id) = s.subnet_id() else { continue };
        let acl = acls
            .iter()
            .find(|a| a.associations().iter().any(|x| x.subnet_id() == Some(id)))
            .cloned();
        map.insert(
            id.to_owned(),
            SubnetSpec {
                zone: s.availability_zone().unwrap_or_default().to_owned(),
                acl,
                vpc: s.vpc_id().unwrap_or_default().to_owned(),
            },
        );
    }
    Ok(map)
}

/// Whether a task in `subnet` of `vpc` has a way to ECR: a default route to a NAT or internet
/// gateway, or ECR's endpoints in the VPC (`ecr.api` and `ecr.dkr` interface endpoints, an
/// `s3` gateway endpoint on the subnet's route table, where the layers are). Read when a task's
/// pull is due, not on every read of the world: tasks start seldom, reads come every second.
pub(crate) async fn reaches_registry(c: &Clients, subnet: &str, vpc: &str) -> Result<bool, Error> {
    let paths = RegistryPaths::read(c, &BTreeSet::from([vpc.to_owned()])).await?;
    Ok(paths.reach(subnet, vpc))
}

/// The route tables and VPC endpoints of some VPCs: which subnets reach ECR.
struct RegistryPaths {
    tables: Vec<aws_sdk_ec2::types::RouteTable>,
    endpoints: Vec<aws_sdk_ec2::types::VpcEndpoint>,
}

impl RegistryPaths {
    async fn read(c: &Clients, vpcs: &BTreeSet<String>) -> Result<RegistryPaths, Error> {
        let in_vpcs = || {
            aws_sdk_ec2::types::Filter::builder()
                .name("vpc-id")
                .set_values(Some(vpcs.iter().cloned().collect()))
                .build()
        };
        let aws = |operation: &'static str| {
            move |e: &dyn std::error::Error| Error::Aws {
                operation,
                resource: "the tasks' VPCs".to_owned(),
                message: DisplayErrorContext(e).to_string(),
            }
        };
        let tables = c
            .ec2
            .describe_route_tables()
            .filters(in_vpcs())
            .send()
            .await
            .map_err(|e| aws("DescribeRouteTables")(&e))?;
        let endpoints = c
            .ec2
            .describe_vpc_endpoints()
            .filters(in_vpcs())
            .send()
            .await
            .map_err(|e| aws("DescribeVpcEndpoints")(&e))?;
        Ok(RegistryPaths {
            tables: tables.route_tables().to_vec(),
            endpoints: endpoints
                .vpc_endpoints()
                .iter()
                .filter(|e| {
                    e.vpc_id().is_some_and(|v| vpcs.contains(v))
                        // EC2 says `available`; the SDK's enum spells `Available`.
                        && e.state()
                            .is_some_and(|s| s.as_str().eq_ignore_ascii_case("available"))
                })
                .cloned()
                .collect(),
        })
    }

    /// Whether subnet `id` of `vpc` reaches ECR (see [`reaches_registry`]).
    fn reach(&self, id: &str, vpc: &str) -> bool {
        let in_vpc = |t: &&aws_sdk_ec2::types::RouteTable| t.vpc_id() == Some(vpc);
        // Its explicit route table, else the VPC's main one.
        let table = self
            .tables
            .iter()
            .filter(in_vpc)
            .find(|t| t.associations().iter().any(|a| a.subnet_id() == Some(id)))
            .or_else(|| {
                self.tables
                    .iter()
                    .filter(in_vpc)
                    .find(|t| t.associations().iter().any(|a| a.main() == Some(true)))
            });
        let Some(table) = table else { return false };
        let out = table.routes().iter().any(|r| {
            r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.state() != Some(&aws_sdk_ec2::types::RouteState::Blackhole)
                && (r.nat_gateway_id().is_some()
                    || r.gateway_id().is_some_and(|g| g.starts_with("igw-")))
        });
        let has = |service: &str, gateway: bool| {
            self.endpoints.iter().any(|e| {
                e.vpc_id() == Some(vpc)
                    && e.service_name().is_some_and(|s| s.ends_with(service))
                    && (!gateway
                        || e.route_table_ids()
                            .iter()
                            .any(|t| Some(t.as_str()) == table.route_table_id()))
            })
        };
        out || (has(".ecr.api", false) && has(".ecr.dkr", false) && has(".s3", true))
    }
}

/// Reads target groups' health checks and deregistration delays.
pub(crate) async fn target_groups(
    c: &Clients,
    arns: &[String],
) -> Result<HashMap<String, TargetGroupSpec>, Error> {
    let mut map = HashMap::new();
    for arn in arns {
        let out = c
            .elb
            .describe_target_groups()
            .target_group_arns(arn)
            .send()
            .await
            .map_err(aws("DescribeTargetGroups", arn))?;
        let Some(tg) = out.target_groups().first() else {
            continue;
        };
        let attrs = c
            .elb
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(aws("DescribeTargetGroupAttributes", arn))?;
        let delay = attrs
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(300);
        let suffix = arn
            .find("targetgroup/")
            .map_or_else(|| arn.clone(), |i| arn[i..].to_owned());
        map.insert(
            arn.clone(),
            TargetGroupSpec {
                arn_suffix: suffix,
                health: HealthKey {
                    path: tg.health_check_path().unwrap_or("/").to_owned(),
                    interval: secs(tg.health_check_interval_seconds(), 30),
                    timeout: secs(tg.health_check_timeout_seconds(), 5),
                    healthy: tg
                        .healthy_threshold_count()
                        .and_then(|v| u32::try_from(v).ok())
                        .unwrap_or(5),
                    unhealthy: tg
                        .unhealthy_threshold_count()
                        .and_then(|v| u32::try_from(v).ok())
                        .unwrap_or(2),
                    matcher: tg
                        .matcher()
                        .and_then(|m| m.http_code())
                        .unwrap_or("200")
                        .to_owned(),
                },
                deregistration_delay: Duration::from_secs(delay),
            },
        );
    }
    Ok(map)
}

/// Reads load balancers and their HTTP listeners.
pub(crate) async fn listeners(c: &Clients) -> Result<Vec<ListenerSpec>, Error> {
    let mut lbs = Vec::new();
    let mut marker = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .elb
            .describe_load_balancers()
            .set_marker(marker)
            .send()
            .await
            .map_err(aws("DescribeLoadBalancers", "*"))?;
        lbs.extend(out.load_balancers().iter().cloned());
        marker = out.next_marker().map(str::to_owned);
        if marker.is_none() {
            break;
        }
    }
    let mut specs = Vec::new();
    for lb in lbs {
        let Some(lb_arn) = lb.load_balancer_arn() else {
            continue;
        };
        let attrs = c
            .elb
            .describe_load_balancer_attributes()
            .load_balancer_arn(lb_arn)
            .send()
            .await
            .map_err(aws("DescribeLoadBalancerAttributes", lb_arn))?;
        let attr = |key: &str| {
            attrs
                .attributes()
                .iter()
                .find(|a| a.key() == Some(key))
                .and_then(|a| a.value())
                .map(str::to_owned)
        };
        let access_logs = (attr("access_logs.s3.enabled").as_deref() == Some("true"))
            .then(|| {
                Some((
                    attr("access_logs.s3.bucket").filter(|b| !b.is_empty())?,
                    attr("access_logs.s3.prefix").unwrap_or_default(),
                ))
            })
            .flatten();
        let idle = attr("idle_timeout.timeout_seconds")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(60);
        let out = c
            .elb
            .describe_listeners()
            .load_balancer_arn(lb_arn)
            .send()
            .await
            .map_err(aws("DescribeListeners", lb_arn))?;
        let suffix = lb_arn
            .find("app/")
            .map_or_else(|| lb_arn.to_owned(), |i| lb_arn[i..].to_owned());
        for l in out.listeners() {
            let http = l.protocol().is_some_and(|p| p.as_str() == "HTTP");
            let (Some(arn), Some(port), true) = (l.listener_arn(), port(l.port()), http) else {
                continue;
            };
            let target_group = l.default_actions().iter().find_map(|a| {
                a.target_group_arn().map(str::to_owned).or_else(|| {
                    a.forward_config()
                        .and_then(|f| f.target_groups().first())
                        .and_then(|t| t.target_group_arn())
                        .map(str::to_owned)
                })
            });
            specs.push(ListenerSpec {
                arn: arn.to_owned(),
                lb_arn: lb_arn.to_owned(),
                zones: lb
                    .availability_zones()
                    .iter()
                    .filter_map(|z| Some((z.zone_name()?.to_owned(), z.subnet_id()?.to_owned())))
                    .collect(),
                lb_name: lb.load_balancer_name().unwrap_or_default().to_owned(),
                lb_arn_suffix: suffix.clone(),
                dns_name: lb.dns_name().unwrap_or_default().to_owned(),
                port,
                target_group,
                idle_timeout: Duration::from_secs(idle),
                access_logs: access_logs.clone(),
            });
        }
    }
    Ok(specs)
}

/// Reads the ECS scalable targets and their target-tracking policies, by `cluster/service`.
pub(crate) async fn scaling(c: &Clients) -> Result<BTreeMap<String, ScalingSpec>, Error> {
    let mut map = BTreeMap::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .aas
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Ecs)
            .set_next_token(token)
            .send()
            .await
            .map_err(aws("DescribeScalableTargets", "ecs"))?;
        for t in out.scalable_targets() {
            if t.scalable_dimension().as_str() != "ecs:service:DesiredCount" {
                continue;
            }
            let Some(key) = t.resource_id().strip_prefix("service/") else {
                continue;
            };
            map.insert(
                key.to_owned(),
                ScalingSpec {
                    min: t.min_capacity(),
                    max: t.max_capacity(),
                    policies: Vec::new(),
                },
            );
        }
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .aas
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Ecs)
            .set_next_token(token)
            .send()
            .await
            .map_err(aws("DescribeScalingPolicies", "ecs"))?;
        for p in out.scaling_policies() {
            let Some(key) = p.resource_id().strip_prefix("service/") else {
                continue;
            };
            let Some(spec) = map.get_mut(key) else {
                continue;
            };
            let Some(tt) = p.target_tracking_scaling_policy_configuration() else {
                continue;
            };
            let Some(metric) = tt
                .predefined_metric_specification()
                .and_then(|m| Metric::from_predefined(m.predefined_metric_type().as_str()))
            else {
                continue;
            };
            let cooldown = |v: Option<i32>| secs(v, DEFAULT_COOLDOWN.as_secs()).as_secs_f64();
            spec.policies.push(Policy {
                name: p.policy_name().to_owned(),
                metric,
                target: tt.target_value(),
                scale_out_cooldown: cooldown(tt.scale_out_cooldown()),
                scale_in_cooldown: cooldown(tt.scale_in_cooldown()),
                disable_scale_in: tt.disable_scale_in().unwrap_or(false),
            });
        }
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(map)
}

/// The region's zones: their names, sorted, and zone id -> name.
pub(crate) async fn zones(
    c: &Clients,
    region: &str,
) -> Result<(Vec<String>, HashMap<String, String>), Error> {
    let out = c
        .ec2
        .describe_availability_zones()
        .send()
        .await
        .map_err(|e| Error::Aws {
            operation: "DescribeAvailabilityZones",
            resource: region.to_owned(),
            message: DisplayErrorContext(&e).to_string(),
        })?;
    let mut names = Vec::new();
    let mut ids = HashMap::new();
    for z in out.availability_zones() {
        let Some(name) = z.zone_name() else { continue };
        names.push(name.to_owned());
        if let Some(id) = z.zone_id() {
            ids.insert(id.to_owned(), name.to_owned());
        }
    }
    names.sort();
    Ok((names, ids))
}

/// The active zonal shifts: (resource ARN, zone id moved away from).
pub(crate) async fn zonal_shifts(c: &Clients) -> Result<Vec<(String, String)>, Error> {
    let mut shifts = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let out = c
            .arc
            .list_zonal_shifts()
            .status(aws_sdk_arczonalshift::types::ZonalShiftStatus::Active)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| Error::Aws {
                operation: "ListZonalShifts",
                resource: "*".to_owned(),
                message: DisplayErrorContext(&e).to_string(),
            })?;
        for s in out.items() {
            shifts.push((s.resource_identifier().to_owned(), s.away_from().to_owned()));
        }
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(shifts)
}
