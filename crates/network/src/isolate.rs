//! Cutting one availability zone off and healing it, the way AWS FIS
//! `aws:network:disrupt-connectivity` does: the zone's subnets are moved to a network ACL that
//! denies all traffic, and moved back. The ACL each subnet had is kept in a tag on the subnet,
//! so a restore after a crash puts back exactly what was there.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, NetworkAcl, ResourceType, Subnet, Tag};
use infra::Context;
use serde::Serialize;

use crate::Network;
use crate::desired::ISOLATION_ACL;
use crate::error::Error;
use crate::observe::{name_tag, stack_filter};
use crate::resource::{delete, settle, tag_spec};
use infra::aws;

/// The tag on an isolated subnet that names the network ACL to restore.
pub const RESTORE_ACL_TAG: &str = "stackproof:restore-acl";

/// One zone's isolation state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneIsolation {
    /// The zone.
    pub zone: String,
    /// The subnets of the stack in that zone.
    pub subnet_ids: Vec<String>,
    /// Those of them on the stack's deny-all network ACL ([`Network::isolate_zone`]).
    pub isolated_subnet_ids: Vec<String>,
    /// Those of them on a network ACL of AWS FIS (tagged `managedByFIS=true`): an experiment
    /// of `aws:network:disrupt-connectivity` cuts them off, and FIS restores them.
    pub fis_subnet_ids: Vec<String>,
}

impl ZoneIsolation {
    /// Whether any of the zone's subnets is cut off, by either.
    pub fn is_isolated(&self) -> bool {
        !self.isolated_subnet_ids.is_empty() || !self.fis_subnet_ids.is_empty()
    }
}

/// The tag AWS FIS puts on the network ACLs it creates.
pub const MANAGED_BY_FIS_TAG: &str = "managedByFIS";

struct View {
    vpc: String,
    subnets: Vec<Subnet>,
    acls: Vec<NetworkAcl>,
}

impl View {
    fn zone_subnets(&self, stack: &str, zone: &str) -> Result<Vec<&Subnet>, Error> {
        let found: Vec<&Subnet> = self
            .subnets
            .iter()
            .filter(|s| s.availability_zone() == Some(zone))
            .collect();
        if found.is_empty() {
            let mut zones: Vec<String> = self
                .subnets
                .iter()
                .filter_map(|s| s.availability_zone().map(str::to_owned))
                .collect();
            zones.sort();
            zones.dedup();
            return Err(Error::UnknownZone {
                stack: stack.to_owned(),
                zone: zone.to_owned(),
                zones,
            });
        }
        Ok(found)
    }

    fn isolation_acl(&self, stack: &str) -> Option<&NetworkAcl> {
        self.acls.iter().find(|a| {
            name_tag(a.tags()) == Some(ISOLATION_ACL)
                && a.tags()
                    .iter()
                    .any(|t| t.key() == Some(infra::tags::STACK) && t.value() == Some(stack))
        })
    }

    /// The association of `subnet`: (association id, ACL id).
    fn association(&self, subnet: &str) -> Option<(String, String)> {
        self.acls.iter().find_map(|acl| {
            acl.associations()
                .iter()
                .find(|a| a.subnet_id() == Some(subnet))
                .and_then(|a| {
                    Some((
                        a.network_acl_association_id()?.to_owned(),
                        acl.network_acl_id()?.to_owned(),
                    ))
                })
        })
    }
}

impl Network {
    async fn view(&self, cx: &Context) -> Result<View, Error> {
        let stack = cx.stack().as_str();
        let subnets = self
            .ec2
            .describe_subnets()
            .filters(stack_filter(stack))
            .send()
            .await
            .map_err(aws("DescribeSubnets", format!("stack {stack}")))?
            .subnets()
            .to_vec();
        let Some(vpc) = subnets.first().and_then(|s| s.vpc_id()).map(str::to_owned) else {
            return Err(Error::NotDeployed {
                stack: stack.to_owned(),
            });
        };
        let acls = self
            .ec2
            .describe_network_acls()
            .filters(Filter::builder().name("vpc-id").values(&vpc).build())
            .send()
            .await
            .map_err(aws("DescribeNetworkAcls", &vpc))?
            .network_acls()
            .to_vec();
        Ok(View { vpc, subnets, acls })
    }

    /// Cuts `zone` off: every subnet of the stack there moves to a deny-all network ACL, so new
    /// and existing connections to it hang. Returns the subnets it moved (none when the zone
    /// was isolated already). Undo with [`Network::restore_zone`].
    pub async fn isolate_zone(&self, cx: &Context, zone: &str) -> Result<Vec<String>, Error> {
        let stack = cx.stack().as_str();
        let view = self.view(cx).await?;
        let subnets = view.zone_subnets(stack, zone)?;
        let acl_id = match view.isolation_acl(stack).and_then(|a| a.network_acl_id()) {
            Some(id) => id.to_owned(),
            None => {
                // A new network ACL has only the default deny-all entries. Sent again after an
                // error that hid a success, the token returns the same ACL.
                let token = cx.client_token("network-acl", ISOLATION_ACL);
                let out = settle(
                    cx,
                    "CreateNetworkAcl",
                    &format!("network-acl {ISOLATION_ACL:?}"),
                    || {
                        self.ec2
                            .create_network_acl()
                            .vpc_id(&view.vpc)
                            .client_token(&token)
                            .tag_specifications(tag_spec(
                                cx,
                                ResourceType::NetworkAcl,
                                ISOLATION_ACL,
                            ))
                            .send()
                    },
                )
                .await?;
                out.network_acl()
                    .and_then(|a| a.network_acl_id())
                    .unwrap_or_default()
                    .to_owned()
            }
        };
        let mut moved = Vec::new();
        for subnet in subnets {
            let sid = subnet.subnet_id().unwrap_or_default();
            let Some((assoc, current)) = view.association(sid) else {
                continue;
            };
            if current == acl_id {
                continue;
            }
            // Remember what to restore before moving: a crash in between leaves a subnet that
            // is not isolated but knows its ACL, which is harmless.
            let tag = Tag::builder().key(RESTORE_ACL_TAG).value(&current).build();
            settle(cx, "CreateTags", sid, || {
                self.ec2
                    .create_tags()
                    .resources(sid)
                    .tags(tag.clone())
                    .send()
            })
            .await?;
            settle(cx, "ReplaceNetworkAclAssociation", sid, || {
                self.ec2
                    .replace_network_acl_association()
                    .association_id(&assoc)
                    .network_acl_id(&acl_id)
                    .send()
            })
            .await?;
            moved.push(sid.to_owned());
        }
        Ok(moved)
    }

    /// Heals `zone`: its isolated subnets go back to the network ACL they had (or the VPC's
    /// default one if that is gone), and the deny-all ACL is deleted once nothing uses it.
    /// Returns the subnets it moved back.
    pub async fn restore_zone(&self, cx: &Context, zone: &str) -> Result<Vec<String>, Error> {
        let stack = cx.stack().as_str();
        let view = self.view(cx).await?;
        let subnets = view.zone_subnets(stack, zone)?;
        let Some(isolation) = view
            .isolation_acl(stack)
            .and_then(|a| a.network_acl_id())
            .map(str::to_owned)
        else {
            return Ok(Vec::new());
        };
        let default_acl = view
            .acls
            .iter()
            .find(|a| a.is_default() == Some(true))
            .and_then(|a| a.network_acl_id());
        let mut moved = Vec::new();
        for subnet in subnets {
            let sid = subnet.subnet_id().unwrap_or_default();
            let Some((assoc, current)) = view.association(sid) else {
                continue;
            };
            if current != isolation {
                continue;
            }
            let remembered = subnet
                .tags()
                .iter()
                .find(|t| t.key() == Some(RESTORE_ACL_TAG))
                .and_then(|t| t.value())
                .filter(|id| {
                    *id != isolation && view.acls.iter().any(|a| a.network_acl_id() == Some(*id))
                });
            let Some(target) = remembered.or(default_acl) else {
                return Err(Error::Missing {
                    kind: "network-acl",
                    name: format!("default of {}", view.vpc),
                });
            };
            settle(cx, "ReplaceNetworkAclAssociation", sid, || {
                self.ec2
                    .replace_network_acl_association()
                    .association_id(&assoc)
                    .network_acl_id(target)
                    .send()
            })
            .await?;
            moved.push(sid.to_owned());
        }
        for subnet in view.zone_subnets(stack, zone)? {
            if subnet
                .tags()
                .iter()
                .any(|t| t.key() == Some(RESTORE_ACL_TAG))
            {
                let sid = subnet.subnet_id().unwrap_or_default();
                let tag = Tag::builder().key(RESTORE_ACL_TAG).build();
                settle(cx, "DeleteTags", sid, || {
                    self.ec2
                        .delete_tags()
                        .resources(sid)
                        .tags(tag.clone())
                        .send()
                })
                .await?;
            }
        }
        let still_used = view
            .acls
            .iter()
            .find(|a| a.network_acl_id() == Some(&isolation))
            .is_some_and(|a| {
                a.associations().iter().any(|assoc| {
                    assoc
                        .subnet_id()
                        .is_some_and(|s| !moved.iter().any(|m| m == s))
                })
            });
        if !still_used {
            delete(cx, "DeleteNetworkAcl", &isolation, &[], || {
                self.ec2
                    .delete_network_acl()
                    .network_acl_id(&isolation)
                    .send()
            })
            .await?;
        }
        Ok(moved)
    }

    /// Each zone of the stack with its subnets and which of them are isolated now.
    pub async fn zone_isolation(&self, cx: &Context) -> Result<Vec<ZoneIsolation>, Error> {
        let stack = cx.stack().as_str();
        let view = self.view(cx).await?;
        let isolation = view.isolation_acl(stack);
        let mut zones: BTreeMap<String, ZoneIsolation> = BTreeMap::new();
        for s in &view.subnets {
            let (Some(zone), Some(sid)) = (s.availability_zone(), s.subnet_id()) else {
                continue;
            };
            let entry = zones
                .entry(zone.to_owned())
                .or_insert_with(|| ZoneIsolation {
                    zone: zone.to_owned(),
                    subnet_ids: Vec::new(),
                    isolated_subnet_ids: Vec::new(),
                    fis_subnet_ids: Vec::new(),
                });
            entry.subnet_ids.push(sid.to_owned());
            let on_fis_acl = view.acls.iter().any(|a| {
                a.associations().iter().any(|x| x.subnet_id() == Some(sid))
                    && a.tags()
                        .iter()
                        .any(|t| t.key() == Some(MANAGED_BY_FIS_TAG) && t.value() == Some("true"))
            });
            if on_fis_acl {
                entry.fis_subnet_ids.push(sid.to_owned());
            }
            if isolation
                .is_some_and(|a| a.associations().iter().any(|x| x.subnet_id() == Some(sid)))
            {
                entry.isolated_subnet_ids.push(sid.to_owned());
            }
        }
        Ok(zones.into_values().collect())
    }
}
