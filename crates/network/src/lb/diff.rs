//! What the configuration asks of the load balancer, and the ordered operations that take what
//! exists there. Pure: plan and apply share [`diff`], destroy and its preview share
//! [`teardown`].

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::types::{ActionTypeEnum, Listener};
use infra::{Action, Change, Context, Problems};

use super::resource;
use crate::Error;
use crate::lb::config::{HealthCheckSpec, LoadBalancerSpec};
use crate::lb::observe::Observed;
use crate::lb::{LoadBalancerInputs, lb_name, tg_name};

pub(crate) const MODULE: &str = "load-balancer";
/// Logical names (the `stackproof:name` tags).
pub(crate) const LB: &str = "alb";
pub(crate) const TG: &str = "tg";
pub(crate) const HTTP: &str = "http";
pub(crate) const HTTPS: &str = "https";
/// The TLS policy of the HTTPS listener: TLS 1.3 only.
pub(crate) const TLS_POLICY: &str = "ELBSecurityPolicy-TLS13-1-3-2021-06";
/// The load balancer attribute that blocks deletes.
pub(crate) const PROTECTION: &str = "deletion_protection.enabled";
/// The target group attribute for the deregistration delay.
pub(crate) const DEREGISTRATION: &str = "deregistration_delay.timeout_seconds";

/// What a listener does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Forward to the target group.
    Forward,
    /// Answer 301 with the same URL on HTTPS :443.
    RedirectToHttps,
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerWant {
    pub(crate) name: &'static str,
    pub(crate) port: i32,
    /// HTTPS with this certificate, or HTTP when `None`.
    pub(crate) certificate: Option<String>,
    pub(crate) route: Route,
}

impl ListenerWant {
    pub(crate) fn protocol(&self) -> &'static str {
        if self.certificate.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        }
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("{} :{}", self.protocol(), self.port)];
        if let Some(cert) = &self.certificate {
            lines.push(format!("certificate {cert}"));
            lines.push(format!("TLS policy {TLS_POLICY}"));
        }
        lines.push(match self.route {
            Route::Forward => format!("forward to target group {TG:?}"),
            Route::RedirectToHttps => "redirect (301) to HTTPS :443".to_owned(),
        });
        lines
    }
}

/// The whole load balancer the configuration and the inputs ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub(crate) lb_name: String,
    pub(crate) tg_name: String,
    pub(crate) vpc_id: String,
    /// Sorted.
    pub(crate) subnets: Vec<String>,
    /// Sorted.
    pub(crate) security_groups: Vec<String>,
    pub(crate) lb_attributes: BTreeMap<String, String>,
    pub(crate) target_port: i32,
    pub(crate) health: HealthCheckSpec,
    pub(crate) tg_attributes: BTreeMap<String, String>,
    pub(crate) listeners: Vec<ListenerWant>,
}

/// Checks what the network hands over, before any call. An application load balancer needs
/// subnets in two zones or more; moto would accept one, AWS does not.
pub(crate) fn check_inputs(inputs: &LoadBalancerInputs) -> Result<(), Error> {
    let mut problems = Problems::default();
    let mut zones = inputs.zones.clone();
    zones.sort();
    zones.dedup();
    if zones.len() < 2 {
        problems.add(
            "network.az-count",
            zones.len(),
            format!(
                "2 or more: an application load balancer needs subnets in at least two availability zones (the network has {:?})",
                inputs.zones
            ),
        );
    }
    if inputs.public_subnet_ids.len() != inputs.zones.len() {
        problems.add(
            "load-balancer inputs public-subnet-ids",
            format!("{:?}", inputs.public_subnet_ids),
            format!("one public subnet per zone ({} zones)", inputs.zones.len()),
        );
    }
    if inputs.vpc_id.is_empty() || inputs.security_group_id.is_empty() {
        problems.add(
            "load-balancer inputs",
            format!(
                "vpc {:?}, security group {:?}",
                inputs.vpc_id, inputs.security_group_id
            ),
            "the VPC and load balancer security group from the network's outputs",
        );
    }
    if inputs.target_port == 0 {
        problems.add("network.task-port", 0, "a TCP port from 1 to 65535");
    }
    problems.into_result(()).map_err(Error::Config)
}

impl Desired {
    pub(crate) fn new(spec: &LoadBalancerSpec, stack: &str, inputs: &LoadBalancerInputs) -> Self {
        let mut subnets = inputs.public_subnet_ids.clone();
        subnets.sort();
        let on = |b: bool| if b { "true" } else { "false" }.to_owned();
        let mut lb_attributes = BTreeMap::from([
            (PROTECTION.to_owned(), on(spec.deletion_protection)),
            (
                "idle_timeout.timeout_seconds".to_owned(),
                spec.idle_timeout_seconds.to_string(),
            ),
            (
                "routing.http.drop_invalid_header_fields.enabled".to_owned(),
                on(true),
            ),
            ("zonal_shift.config.enabled".to_owned(), on(true)),
        ]);
        match inputs.access_logs.as_ref().filter(|_| spec.access_logs) {
            Some(logs) => {
                lb_attributes.insert("access_logs.s3.enabled".to_owned(), on(true));
                lb_attributes.insert("access_logs.s3.bucket".to_owned(), logs.bucket.clone());
                lb_attributes.insert("access_logs.s3.prefix".to_owned(), logs.prefix.clone());
            }
            None => {
                lb_attributes.insert("access_logs.s3.enabled".to_owned(), on(false));
            }
        }
        let listeners = match &spec.certificate_arn {
            None => vec![ListenerWant {
                name: HTTP,
                port: 80,
                certificate: None,
                route: Route::Forward,
            }],
            Some(cert) => vec![
                ListenerWant {
                    name: HTTP,
                    port: 80,
                    certificate: None,
                    route: Route::RedirectToHttps,
                },
                ListenerWant {
                    name: HTTPS,
                    port: 443,
                    certificate: Some(cert.clone()),
                    route: Route::Forward,
                },
            ],
        };
        Desired {
            lb_name: lb_name(stack),
            tg_name: tg_name(stack),
            vpc_id: inputs.vpc_id.clone(),
            subnets,
            security_groups: vec![inputs.security_group_id.clone()],
            lb_attributes,
            target_port: i32::from(inputs.target_port),
            health: spec.health_check.clone(),
            tg_attributes: BTreeMap::from([(
                DEREGISTRATION.to_owned(),
                spec.deregistration_delay_seconds.to_string(),
            )]),
            listeners,
        }
    }
}

/// The kind of an ELBv2 resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    LoadBalancer,
    TargetGroup,
    Listener,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::LoadBalancer => "load-balancer",
            Kind::TargetGroup => "target-group",
            Kind::Listener => "listener",
        }
    }
}

/// One setting that changes: `have` is `None` when it is not set at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub(crate) key: String,
    pub(crate) have: Option<String>,
    pub(crate) want: String,
}

/// The change `ch` with every setting of `settings` recorded as a field change.
fn with_settings(ch: Change, settings: &[Setting]) -> Change {
    settings
        .iter()
        .fold(ch, |ch, s| ch.field(&s.key, s.have.as_deref(), &s.want))
}

/// One step of an apply or destroy, in order. Resources created earlier in the same run are
/// looked up by logical name when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create the load balancer with its tags, then set every attribute.
    CreateLoadBalancer {
        name: String,
        subnets: Vec<String>,
        security_groups: Vec<String>,
        attributes: BTreeMap<String, String>,
    },
    SetSubnets {
        arn: String,
        have: Vec<String>,
        want: Vec<String>,
    },
    SetSecurityGroups {
        arn: String,
        have: Vec<String>,
        want: Vec<String>,
    },
    SetLbAttributes {
        arn: String,
        changes: Vec<Setting>,
    },
    /// Create the target group with its tags and health check, then set its attributes.
    CreateTargetGroup {
        name: String,
        vpc_id: String,
        port: i32,
        health: HealthCheckSpec,
        attributes: BTreeMap<String, String>,
    },
    /// Put the whole health check back; `changes` says what differed.
    SetHealthCheck {
        arn: String,
        health: HealthCheckSpec,
        changes: Vec<Setting>,
    },
    SetTgAttributes {
        arn: String,
        changes: Vec<Setting>,
    },
    CreateListener(ListenerWant),
    ModifyListener {
        want: ListenerWant,
        arn: String,
        changes: Vec<String>,
    },
    Retag {
        kind: Kind,
        name: String,
        arn: String,
        tags: BTreeMap<String, String>,
    },
    DeleteListener {
        name: String,
        arn: String,
    },
    /// Turn deletion protection off (destroy only).
    Unprotect {
        arn: String,
    },
    DeleteTargetGroup {
        arn: String,
    },
    /// Delete the load balancer and wait until it is gone.
    DeleteLoadBalancer {
        arn: String,
    },
}

impl Op {
    /// How the step shows in a plan.
    pub(crate) fn change(&self) -> Change {
        let c = |action, kind: Kind, name: &str| Change::new(action, MODULE, kind.as_str(), name);
        let lines = |ch: Change, lines: Vec<String>| Change {
            details: lines,
            ..ch
        };
        match self {
            Op::CreateLoadBalancer {
                name,
                subnets,
                security_groups,
                attributes,
            } => {
                let mut details = vec![
                    format!("internet-facing application load balancer {name}"),
                    format!("subnets {}", subnets.join(", ")),
                    format!("security groups {}", security_groups.join(", ")),
                ];
                details.extend(attributes.iter().map(|(k, v)| format!("{k} = {v}")));
                lines(c(Action::Create, Kind::LoadBalancer, LB), details)
            }
            Op::SetSubnets { arn, have, want } => c(Action::Update, Kind::LoadBalancer, LB)
                .id(arn)
                .detail(format!(
                    "subnets {} -> {}",
                    have.join(", "),
                    want.join(", ")
                )),
            Op::SetSecurityGroups { arn, have, want } => c(Action::Update, Kind::LoadBalancer, LB)
                .id(arn)
                .detail(format!(
                    "security groups {} -> {}",
                    have.join(", "),
                    want.join(", ")
                )),
            Op::SetLbAttributes { arn, changes } => {
                with_settings(c(Action::Update, Kind::LoadBalancer, LB).id(arn), changes)
            }
            Op::CreateTargetGroup {
                name,
                vpc_id,
                port,
                health,
                attributes,
            } => {
                let mut details = vec![
                    format!("{name}: ip targets, HTTP :{port}, in {vpc_id}"),
                    format!(
                        "health check HTTP {} every {} s, timeout {} s, healthy {}, unhealthy {}, codes {}",
                        health.path,
                        health.interval_seconds,
                        health.timeout_seconds,
                        health.healthy_threshold,
                        health.unhealthy_threshold,
                        health.matcher
                    ),
                ];
                details.extend(attributes.iter().map(|(k, v)| format!("{k} = {v}")));
                lines(c(Action::Create, Kind::TargetGroup, TG), details)
            }
            Op::SetHealthCheck { arn, changes, .. } | Op::SetTgAttributes { arn, changes } => {
                with_settings(c(Action::Update, Kind::TargetGroup, TG).id(arn), changes)
            }
            Op::CreateListener(want) => lines(
                c(Action::Create, Kind::Listener, want.name),
                want.describe(),
            ),
            Op::ModifyListener { want, arn, changes } => lines(
                c(Action::Update, Kind::Listener, want.name).id(arn),
                changes.clone(),
            ),
            Op::Retag {
                kind,
                name,
                arn,
                tags,
            } => lines(
                c(Action::Update, *kind, name).id(arn),
                tags.iter()
                    .map(|(k, v)| format!("tag {k} = {v:?}"))
                    .collect(),
            ),
            Op::DeleteListener { name, arn } => c(Action::Delete, Kind::Listener, name).id(arn),
            Op::Unprotect { arn } => c(Action::Update, Kind::LoadBalancer, LB)
                .id(arn)
                .field(PROTECTION, Some("true"), "false")
                .detail("(to allow the delete)"),
            Op::DeleteTargetGroup { arn } => c(Action::Delete, Kind::TargetGroup, TG).id(arn),
            Op::DeleteLoadBalancer { arn } => c(Action::Delete, Kind::LoadBalancer, LB).id(arn),
        }
    }
}

/// The settings in `want` that `have` lacks or holds with another value.
pub(crate) fn settings(
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Vec<Setting> {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| Setting {
            key: k.clone(),
            have: have.get(k).cloned(),
            want: v.clone(),
        })
        .collect()
}

pub(crate) fn retag(
    cx: &Context,
    observed: &Observed,
    kind: Kind,
    name: &str,
    arn: &str,
    ops: &mut Vec<Op>,
) {
    let want = cx.tags(MODULE, name);
    let have = observed.tags_of(Some(arn));
    let missing = infra::tags::missing(&want, &have);
    if !missing.is_empty() {
        ops.push(Op::Retag {
            kind,
            name: name.to_owned(),
            arn: arn.to_owned(),
            tags: missing
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        });
    }
}

pub(crate) fn replacement(resource: String, field: &'static str, have: &str, want: &str) -> Error {
    Error::NeedsReplacement {
        resource,
        field,
        have: have.to_owned(),
        want: want.to_owned(),
    }
}

/// What differs between an existing listener and the one wanted; empty when it matches.
pub(crate) fn listener_changes(
    want: &ListenerWant,
    have: &Listener,
    tg_arn: Option<&str>,
) -> Vec<String> {
    let mut changes = Vec::new();
    let protocol = have.protocol().map(|p| p.as_str()).unwrap_or_default();
    if protocol != want.protocol() {
        changes.push(format!("protocol {protocol} -> {}", want.protocol()));
    }
    if let Some(cert) = &want.certificate {
        let have_cert = have
            .certificates()
            .first()
            .and_then(|c| c.certificate_arn())
            .unwrap_or("(none)");
        if have_cert != cert {
            changes.push(format!("certificate {have_cert} -> {cert}"));
        }
        let policy = have.ssl_policy().unwrap_or("(none)");
        if policy != TLS_POLICY {
            changes.push(format!("TLS policy {policy} -> {TLS_POLICY}"));
        }
    }
    let action = have.default_actions().first();
    let kind = action.and_then(|a| a.r#type());
    let matches = match want.route {
        Route::Forward => {
            kind == Some(&ActionTypeEnum::Forward)
                && tg_arn.is_some()
                && action.is_some_and(|a| {
                    a.target_group_arn() == tg_arn
                        || a.forward_config().is_some_and(|f| {
                            f.target_groups().len() == 1
                                && f.target_groups()[0].target_group_arn() == tg_arn
                        })
                })
        }
        Route::RedirectToHttps => {
            kind == Some(&ActionTypeEnum::Redirect)
                && action.and_then(|a| a.redirect_config()).is_some_and(|r| {
                    r.protocol() == Some("HTTPS")
                        && r.port() == Some("443")
                        && r.status_code().map(|s| s.as_str()) == Some("HTTP_301")
                })
        }
    };
    if have.default_actions().len() != 1 || !matches {
        let was = kind.map(|k| k.as_str()).unwrap_or("(none)");
        let now = match want.route {
            Route::Forward => format!("forward to target group {TG:?}"),
            Route::RedirectToHttps => "redirect (301) to HTTPS :443".to_owned(),
        };
        changes.push(format!("default action {was} -> {now}"));
    }
    changes
}

/// The steps that take `observed` to `desired`. Pure: no AWS call. The load balancer, then
/// its target group, then the listeners that point at it; missing tags are put back last.
pub(crate) fn diff(cx: &Context, desired: &Desired, observed: &Observed) -> Result<Vec<Op>, Error> {
    let mut ops = Vec::new();
    let mut retags = Vec::new();
    resource::load_balancer::steps(cx, desired, observed, &mut ops, &mut retags)?;
    resource::target_group::steps(cx, desired, observed, &mut ops, &mut retags)?;
    resource::listener::steps(cx, desired, observed, &mut ops, &mut retags);
    ops.extend(retags);
    Ok(ops)
}

/// A listener's logical name: its name tag, else its port.
pub(crate) fn listener_name(observed: &Observed, l: &Listener) -> String {
    observed
        .tags_of(l.listener_arn())
        .get(infra::tags::NAME)
        .cloned()
        .unwrap_or_else(|| format!("port-{}", l.port().unwrap_or_default()))
}

/// Everything of the stack's load balancer, in the order AWS lets it go: listeners, the target
/// group, then the load balancer (deletion protection turned off first).
pub(crate) fn teardown(observed: &Observed) -> Vec<Op> {
    let mut ops: Vec<Op> = observed
        .listeners
        .iter()
        .filter_map(|l| {
            Some(Op::DeleteListener {
                name: listener_name(observed, l),
                arn: l.listener_arn()?.to_owned(),
            })
        })
        .collect();
    if let Some(arn) = observed.tg.as_ref().and_then(|t| t.target_group_arn()) {
        ops.push(Op::DeleteTargetGroup {
            arn: arn.to_owned(),
        });
    }
    if let Some(arn) = observed.lb.as_ref().and_then(|l| l.load_balancer_arn()) {
        if observed.lb_attributes.get(PROTECTION).map(String::as_str) == Some("true") {
            ops.push(Op::Unprotect {
                arn: arn.to_owned(),
            });
        }
        ops.push(Op::DeleteLoadBalancer {
            arn: arn.to_owned(),
        });
    }
    ops
}
