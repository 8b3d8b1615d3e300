//! Reading what exists: every resource of the stack, found by its tags, in one call per kind.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    Address, Filter, InternetGateway, NatGateway, NatGatewayState, NetworkAcl, RouteTable,
    SecurityGroup, Subnet, Tag, Vpc, VpcAttributeName, VpcEndpoint,
};
use infra::tags;

use crate::error::Error;
use infra::aws;

/// The tags of an EC2 resource as a map.
pub(crate) fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// A VPC endpoint's state in lower case: EC2 answers `available` where the SDK's `State`
/// enum spells `Available`, so the enum's variants do not match what AWS (or moto) sends.
pub(crate) fn endpoint_state(e: &VpcEndpoint) -> String {
    e.state()
        .map(|s| s.as_str().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The logical name of a resource: its `stackproof:name` tag.
pub(crate) fn name_tag(tags: &[Tag]) -> Option<&str> {
    tags.iter()
        .find(|t| t.key() == Some(tags::NAME))
        .and_then(Tag::value)
}

/// The filter that selects the stack's resources.
pub(crate) fn stack_filter(stack: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", tags::STACK))
        .values(stack)
        .build()
}

/// Everything of the stack's network that exists.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub(crate) vpcs: Vec<Vpc>,
    /// `(enable-dns-support, enable-dns-hostnames)` of the VPC (the one kept, when there are two).
    pub(crate) dns: Option<(bool, bool)>,
    pub(crate) subnets: Vec<Subnet>,
    pub(crate) igws: Vec<InternetGateway>,
    pub(crate) route_tables: Vec<RouteTable>,
    pub(crate) addresses: Vec<Address>,
    /// NAT gateways that are pending or available (deleted and failed ones are history).
    pub(crate) nats: Vec<NatGateway>,
    /// NAT gateways that failed or were deleted, per name: they make client tokens unique.
    pub(crate) dead_nats: BTreeMap<String, usize>,
    pub(crate) security_groups: Vec<SecurityGroup>,
    pub(crate) network_acls: Vec<NetworkAcl>,
    /// VPC endpoints that exist or are being made (deleted, failed and rejected ones are not).
    pub(crate) endpoints: Vec<VpcEndpoint>,
    /// Network interfaces per VPC id, read only when the stack has more than one VPC: the one
    /// in use is kept (see `desired::dedup`).
    pub(crate) enis: BTreeMap<String, usize>,
}

impl Observed {
    /// Reads the stack's network with one describe call per kind, all at once.
    pub(crate) async fn read(ec2: &Client, stack: &str) -> Result<Observed, Error> {
        let f = || stack_filter(stack);
        let res = format!("stack {stack}");
        let (vpcs, subnets, igws, route_tables, addresses, nats, sgs, nacls, endpoints) = tokio::try_join!(
            async {
                ec2.describe_vpcs()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeVpcs", &res))
            },
            async {
                ec2.describe_subnets()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeSubnets", &res))
            },
            async {
                ec2.describe_internet_gateways()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeInternetGateways", &res))
            },
            async {
                ec2.describe_route_tables()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeRouteTables", &res))
            },
            async {
                ec2.describe_addresses()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeAddresses", &res))
            },
            async {
                ec2.describe_nat_gateways()
                    .filter(f())
                    .send()
                    .await
                    .map_err(aws("DescribeNatGateways", &res))
            },
            async {
                ec2.describe_security_groups()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeSecurityGroups", &res))
            },
            async {
                ec2.describe_network_acls()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeNetworkAcls", &res))
            },
            async {
                ec2.describe_vpc_endpoints()
                    .filters(f())
                    .send()
                    .await
                    .map_err(aws("DescribeVpcEndpoints", &res))
            },
        )?;
        let mut observed = Observed {
            vpcs: vpcs.vpcs().to_vec(),
            subnets: subnets.subnets().to_vec(),
            igws: igws.internet_gateways().to_vec(),
            route_tables: route_tables.route_tables().to_vec(),
            addresses: addresses.addresses().to_vec(),
            security_groups: sgs.security_groups().to_vec(),
            network_acls: nacls.network_acls().to_vec(),
            // Checked again here as for NAT gateways: the tag filter is the truth.
            endpoints: endpoints
                .vpc_endpoints()
                .iter()
                .filter(|e| {
                    e.tags()
                        .iter()
                        .any(|t| t.key() == Some(tags::STACK) && t.value() == Some(stack))
                        && !matches!(
                            endpoint_state(e).as_str(),
                            "deleted" | "deleting" | "failed" | "rejected" | "expired"
                        )
                })
                .cloned()
                .collect(),
            ..Observed::default()
        };
        observed.sort_nats(stack, nats.nat_gateways());
        if observed.vpcs.len() > 1 {
            observed.count_interfaces(ec2, &res).await?;
        }
        observed.read_dns(ec2).await?;
        Ok(observed)
    }

    /// Keeps the stack's pending and available NAT gateways, counting the failed and deleted
    /// ones per name.
    fn sort_nats(&mut self, stack: &str, nats: &[NatGateway]) {
        for nat in nats {
            // The tag filter is the truth, and checked again here: moto's DescribeNatGateways
            // ignores tag filters and returns every stack's gateways, and a gateway of another
            // stack taken for ours would be "updated" by its deploy and deleted by its destroy.
            let ours = nat
                .tags()
                .iter()
                .any(|t| t.key() == Some(tags::STACK) && t.value() == Some(stack));
            if !ours {
                continue;
            }
            match nat.state() {
                Some(NatGatewayState::Pending | NatGatewayState::Available) | None => {
                    self.nats.push(nat.clone())
                }
                Some(_) => {
                    let name = name_tag(nat.tags()).unwrap_or_default().to_owned();
                    *self.dead_nats.entry(name).or_default() += 1;
                }
            }
        }
    }

    /// Counts the network interfaces of each VPC (the one in use is kept among duplicates).
    async fn count_interfaces(&mut self, ec2: &Client, res: &str) -> Result<(), Error> {
        let ids: Vec<String> = self
            .vpcs
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_owned))
            .collect();
        let mut pages = ec2
            .describe_network_interfaces()
            .filters(
                Filter::builder()
                    .name("vpc-id")
                    .set_values(Some(ids))
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        while let Some(eni) = pages.next().await {
            let eni = eni.map_err(aws("DescribeNetworkInterfaces", res))?;
            if let Some(vpc) = eni.vpc_id() {
                *self.enis.entry(vpc.to_owned()).or_default() += 1;
            }
        }
        Ok(())
    }

    /// Reads the DNS settings of the VPC an apply keeps.
    async fn read_dns(&mut self, ec2: &Client) -> Result<(), Error> {
        let kept = crate::desired::keep_vpc(self)
            .and_then(|v| v.vpc_id())
            .map(str::to_owned);
        if let Some(id) = kept.as_deref() {
            let attr =
                |a: VpcAttributeName| ec2.describe_vpc_attribute().vpc_id(id).attribute(a).send();
            let (support, hostnames) = tokio::try_join!(
                async {
                    attr(VpcAttributeName::EnableDnsSupport)
                        .await
                        .map_err(aws("DescribeVpcAttribute", id))
                },
                async {
                    attr(VpcAttributeName::EnableDnsHostnames)
                        .await
                        .map_err(aws("DescribeVpcAttribute", id))
                },
            )?;
            self.dns = Some((
                support
                    .enable_dns_support()
                    .and_then(|v| v.value())
                    .unwrap_or(false),
                hostnames
                    .enable_dns_hostnames()
                    .and_then(|v| v.value())
                    .unwrap_or(false),
            ));
        }
        Ok(())
    }
}
