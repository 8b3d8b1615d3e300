//! The steps of an apply or destroy and how each shows in a plan.

use infra::{Action, Change};

use super::*;
/// What kind of resource a delete removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vpc,
    Subnet,
    InternetGateway,
    RouteTable,
    ElasticIp,
    NatGateway,
    SecurityGroup,
    NetworkAcl,
    VpcEndpoint,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Vpc => "vpc",
            Kind::Subnet => "subnet",
            Kind::InternetGateway => "internet-gateway",
            Kind::RouteTable => "route-table",
            Kind::ElasticIp => "elastic-ip",
            Kind::NatGateway => "nat-gateway",
            Kind::SecurityGroup => "security-group",
            Kind::NetworkAcl => "network-acl",
            Kind::VpcEndpoint => "vpc-endpoint",
        }
    }
}

/// What a default route change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOp {
    Create,
    Replace,
    Delete,
}

/// One step of an apply or destroy, in order. Resources are named, not identified: ids of
/// resources created earlier in the same apply are looked up when the step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    CreateVpc {
        cidr: String,
    },
    SetDns {
        was: (bool, bool),
    },
    CreateSubnet(SubnetWant),
    CreateIgw,
    AttachIgw,
    AllocateEip {
        name: String,
    },
    CreateNat {
        nat: NatWant,
        generation: usize,
    },
    CreateGroup {
        name: String,
        description: String,
    },
    Authorize {
        group: String,
        rules: Vec<Rule>,
    },
    Revoke {
        group: String,
        id: String,
        rules: Vec<Rule>,
    },
    CreateTable {
        name: String,
    },
    Associate {
        table: String,
        subnet: String,
        replace: Option<String>,
    },
    WaitNats,
    Route {
        table: String,
        op: RouteOp,
        target: Option<Target>,
    },
    CreateEndpoint(EndpointWant),
    /// Route tables (gateway) or subnets (interface) to add, by logical name, and to remove,
    /// by id.
    ModifyEndpoint {
        name: String,
        id: String,
        gateway: bool,
        add: Vec<String>,
        remove: Vec<String>,
    },
    Retag {
        kind: Kind,
        name: String,
        id: String,
        tags: BTreeMap<String, String>,
    },
    /// `related`: the VPCs an internet gateway is attached to; a route table's or network ACL's
    /// associations. `duplicate`: set when the resource is an extra with the name of one that is
    /// kept, saying which and why.
    Delete {
        kind: Kind,
        name: String,
        id: String,
        related: Vec<String>,
        duplicate: Option<String>,
    },
}

impl Op {
    /// How the step shows in a plan; `None` for steps that change nothing (waits).
    pub(crate) fn change(&self) -> Option<Change> {
        let c = |action, kind: &str, name: &str| Change::new(action, MODULE, kind, name);
        Some(match self {
            Op::CreateVpc { cidr } => c(Action::Create, "vpc", VPC)
                .detail(format!("cidr {cidr}, DNS support and hostnames on")),
            Op::SetDns { was } => c(Action::Update, "vpc", VPC).detail(format!(
                "enable-dns-support {} -> true, enable-dns-hostnames {} -> true",
                was.0, was.1
            )),
            Op::CreateSubnet(s) => c(Action::Create, "subnet", &s.name).detail(format!(
                "{} {} in {}",
                if s.public { "public" } else { "private" },
                s.cidr,
                s.zone
            )),
            Op::CreateIgw => {
                c(Action::Create, "internet-gateway", IGW).detail("attached to the VPC")
            }
            Op::AttachIgw => c(Action::Update, "internet-gateway", IGW).detail("attach to the VPC"),
            Op::AllocateEip { name } => c(Action::Create, "elastic-ip", name),
            Op::CreateNat { nat, .. } => c(Action::Create, "nat-gateway", &nat.name)
                .detail(format!("in subnet {:?}", nat.subnet)),
            Op::CreateGroup { name, .. } => c(Action::Create, "security-group", name),
            Op::Authorize { group, rules } => {
                let mut ch = c(Action::Create, "security-group-rule", group);
                ch.details = rules.iter().map(|r| format!("ingress {r}")).collect();
                ch
            }
            Op::Revoke { group, id, rules } => {
                let mut ch = c(Action::Delete, "security-group-rule", group).id(id);
                ch.details = rules.iter().map(|r| format!("ingress {r}")).collect();
                ch
            }
            Op::CreateTable { name } => c(Action::Create, "route-table", name),
            Op::Associate {
                table,
                subnet,
                replace,
            } => {
                let action = if replace.is_some() {
                    Action::Update
                } else {
                    Action::Create
                };
                c(action, "route-table-association", subnet)
                    .detail(format!("with route table {table:?}"))
            }
            Op::WaitNats => return None,
            Op::Route { table, op, target } => {
                let name = format!("{table} {DEFAULT_ROUTE}");
                let via = target
                    .as_ref()
                    .map(|t| format!("via {t}"))
                    .unwrap_or_default();
                match op {
                    RouteOp::Create => c(Action::Create, "route", &name).detail(via),
                    RouteOp::Replace => c(Action::Update, "route", &name).detail(via),
                    RouteOp::Delete => c(Action::Delete, "route", &name),
                }
            }
            Op::CreateEndpoint(e) => {
                c(Action::Create, "vpc-endpoint", &e.name).detail(if e.gateway {
                    format!("gateway {} on route tables {}", e.service, e.attach.join(", "))
                } else {
                    format!(
                        "interface {} with private DNS in subnets {}, security group {ENDPOINT_GROUP:?}",
                        e.service,
                        e.attach.join(", ")
                    )
                })
            }
            Op::ModifyEndpoint {
                name,
                id,
                gateway,
                add,
                remove,
            } => {
                let what = if *gateway { "route tables" } else { "subnets" };
                let mut ch = c(Action::Update, "vpc-endpoint", name).id(id);
                ch.details = add
                    .iter()
                    .map(|n| format!("{what} + {n}"))
                    .chain(remove.iter().map(|i| format!("{what} - {i}")))
                    .collect();
                ch
            }
            Op::Retag {
                kind,
                name,
                id,
                tags,
            } => {
                let mut ch = c(Action::Update, kind.as_str(), name).id(id);
                ch.details = tags
                    .iter()
                    .map(|(k, v)| format!("tag {k} = {v:?}"))
                    .collect();
                ch
            }
            Op::Delete {
                kind,
                name,
                id,
                duplicate,
                ..
            } => {
                let ch = c(Action::Delete, kind.as_str(), name).id(id);
                match duplicate {
                    Some(why) => ch.detail(why.clone()),
                    None => ch,
                }
            }
        })
    }
}
