//! What the configuration asks for, and the ordered operations that take what exists there.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use infra::Context;

use crate::config::{NatMode, NetworkSpec};

mod dedup;
mod diff;
mod op;

pub(crate) use dedup::{dedup, keep_vpc};
pub(crate) use diff::{diff, observed_rules, one, retag, teardown};
pub(crate) use op::{Kind, Op, RouteOp};

pub(crate) const MODULE: &str = "network";
pub(crate) const VPC: &str = "vpc";
pub(crate) const IGW: &str = "igw";
pub(crate) const PUBLIC_TABLE: &str = "public";
pub(crate) const LB_GROUP: &str = "load-balancer";
pub(crate) const TASK_GROUP: &str = "tasks";
pub(crate) const ISOLATION_ACL: &str = "isolation";
pub(crate) const ENDPOINT_GROUP: &str = "endpoints";
pub(crate) const DEFAULT_ROUTE: &str = "0.0.0.0/0";

/// One subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetWant {
    pub(crate) name: String,
    pub(crate) zone: String,
    pub(crate) cidr: String,
    pub(crate) public: bool,
}

/// Where a default route goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Igw,
    Nat(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Igw => write!(f, "internet gateway {IGW:?}"),
            Target::Nat(name) => write!(f, "NAT gateway {name:?}"),
        }
    }
}

/// One route table and the subnets it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableWant {
    pub(crate) name: String,
    pub(crate) subnets: Vec<String>,
    pub(crate) default_route: Option<Target>,
}

/// One NAT gateway (and its Elastic IP, which has the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatWant {
    pub(crate) name: String,
    pub(crate) subnet: String,
}

/// The source of an ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    Ipv4(String),
    Ipv6(String),
    /// Another security group: its logical name in what we want, its id in what exists.
    Group(String),
}

/// One ingress rule, flattened: a protocol, a port range, one source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub(crate) protocol: String,
    pub(crate) from: i32,
    pub(crate) to: i32,
    pub(crate) source: Source,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = if self.from == self.to {
            self.from.to_string()
        } else {
            format!("{}-{}", self.from, self.to)
        };
        let proto = if self.protocol == "-1" {
            "all".to_owned()
        } else {
            format!("{} {ports}", self.protocol)
        };
        match &self.source {
            Source::Ipv4(c) | Source::Ipv6(c) => write!(f, "{proto} from {c}"),
            Source::Group(g) => write!(f, "{proto} from security group {g}"),
        }
    }
}

/// One security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupWant {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) rules: BTreeSet<Rule>,
}

/// One VPC endpoint: a gateway endpoint (S3) on the private route tables, or an interface
/// endpoint in the private subnets behind the endpoints' security group, with private DNS so
/// the service's usual name resolves to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointWant {
    /// `endpoint-{service}` (`endpoint-ecr.api`).
    pub(crate) name: String,
    /// `com.amazonaws.{region}.{service}`.
    pub(crate) service: String,
    pub(crate) gateway: bool,
    /// The route tables (gateway) or subnets (interface) it is in, by logical name.
    pub(crate) attach: Vec<String>,
}

/// The whole network the configuration asks for, with zones resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub(crate) zones: Vec<String>,
    pub(crate) vpc_cidr: String,
    pub(crate) subnets: Vec<SubnetWant>,
    pub(crate) tables: Vec<TableWant>,
    pub(crate) nats: Vec<NatWant>,
    pub(crate) groups: Vec<GroupWant>,
    pub(crate) endpoints: Vec<EndpointWant>,
}

/// The short name of a zone inside its region (`a` for `eu-west-1a`).
pub(crate) fn zone_suffix(region: &str, zone: &str, index: usize) -> String {
    match zone.strip_prefix(region) {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => ((b'a' + (index % 26) as u8) as char).to_string(),
    }
}

/// The load balancer group's ingress: each port from each source.
fn lb_rules(spec: &NetworkSpec) -> BTreeSet<Rule> {
    let mut lb_rules = BTreeSet::new();
    for port in &spec.lb_ports {
        let port = i32::from(*port);
        let rule = |source| Rule {
            protocol: "tcp".to_owned(),
            from: port,
            to: port,
            source,
        };
        lb_rules.extend(
            spec.lb_ipv4
                .iter()
                .map(|c| rule(Source::Ipv4(c.to_string()))),
        );
        lb_rules.extend(
            spec.lb_ipv6
                .iter()
                .map(|c| rule(Source::Ipv6(c.to_string()))),
        );
    }
    lb_rules
}

impl Desired {
    pub(crate) fn new(spec: &NetworkSpec, region: &str, zones: Vec<String>) -> Desired {
        let mut subnets = Vec::new();
        let mut tables = vec![TableWant {
            name: PUBLIC_TABLE.to_owned(),
            subnets: Vec::new(),
            default_route: Some(Target::Igw),
        }];
        let mut nats = Vec::new();
        let suffixes: Vec<String> = zones
            .iter()
            .enumerate()
            .map(|(i, z)| zone_suffix(region, z, i))
            .collect();
        for (i, zone) in zones.iter().enumerate() {
            let s = &suffixes[i];
            let (public, private) = (format!("public-{s}"), format!("private-{s}"));
            subnets.push(SubnetWant {
                name: public.clone(),
                zone: zone.clone(),
                cidr: spec.public_cidrs[i].to_string(),
                public: true,
            });
            subnets.push(SubnetWant {
                name: private.clone(),
                zone: zone.clone(),
                cidr: spec.private_cidrs[i].to_string(),
                public: false,
            });
            tables[0].subnets.push(public.clone());
            let nat_here = match spec.nat {
                NatMode::PerAz => true,
                NatMode::Single => i == 0,
                NatMode::None => false,
            };
            if nat_here {
                nats.push(NatWant {
                    name: format!("nat-{s}"),
                    subnet: public,
                });
            }
            let route = match spec.nat {
                NatMode::PerAz => Some(Target::Nat(format!("nat-{s}"))),
                NatMode::Single => Some(Target::Nat(format!("nat-{}", suffixes[0]))),
                NatMode::None => None,
            };
            tables.push(TableWant {
                name: private.clone(),
                subnets: vec![private],
                default_route: route,
            });
        }
        let lb_rules = lb_rules(spec);
        let port = i32::from(spec.task_port);
        let task_rules = BTreeSet::from([Rule {
            protocol: "tcp".to_owned(),
            from: port,
            to: port,
            source: Source::Group(LB_GROUP.to_owned()),
        }]);
        let private = |table: bool| -> Vec<String> {
            subnets
                .iter()
                .filter(|s| !s.public)
                .map(|s| s.name.clone())
                .filter(|n| !table || tables.iter().any(|t| t.name == *n))
                .collect()
        };
        let endpoints: Vec<EndpointWant> = spec
            .endpoints
            .iter()
            .map(|service| {
                let gateway = service == "s3";
                EndpointWant {
                    name: format!("endpoint-{service}"),
                    service: format!("com.amazonaws.{region}.{service}"),
                    gateway,
                    attach: private(gateway),
                }
            })
            .collect();
        let mut groups = vec![
            GroupWant {
                name: LB_GROUP.to_owned(),
                description: "stackproof load balancer".to_owned(),
                rules: lb_rules,
            },
            GroupWant {
                name: TASK_GROUP.to_owned(),
                description: "stackproof tasks: only from the load balancer".to_owned(),
                rules: task_rules,
            },
        ];
        if endpoints.iter().any(|e| !e.gateway) {
            groups.push(GroupWant {
                name: ENDPOINT_GROUP.to_owned(),
                description: "stackproof VPC endpoints: HTTPS from the VPC".to_owned(),
                rules: BTreeSet::from([Rule {
                    protocol: "tcp".to_owned(),
                    from: 443,
                    to: 443,
                    source: Source::Ipv4(spec.vpc_cidr.to_string()),
                }]),
            });
        }
        Desired {
            zones,
            vpc_cidr: spec.vpc_cidr.to_string(),
            subnets,
            tables,
            nats,
            groups,
            endpoints,
        }
    }
}
