//! Reading what exists: the stack's load balancer and target group, found by the names the
//! stack derives (`{stack}-alb`, `{stack}-tg`) and checked against their identity tags, then the
//! load balancer's listeners and everyone's attributes and tags.

use std::collections::BTreeMap;

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{
    Listener, LoadBalancer as Alb, LoadBalancerAttribute, TargetGroup, TargetGroupAttribute,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::tags;

use crate::error::Error;
use infra::aws;

/// The most resource ARNs one DescribeTags call accepts.
pub(crate) const TAG_BATCH: usize = 20;

/// Everything of the stack's load balancer that exists.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub(crate) lb: Option<Alb>,
    pub(crate) lb_attributes: BTreeMap<String, String>,
    pub(crate) tg: Option<TargetGroup>,
    pub(crate) tg_attributes: BTreeMap<String, String>,
    /// The load balancer's listeners, in port order.
    pub(crate) listeners: Vec<Listener>,
    /// Tags by ARN.
    pub(crate) tags: BTreeMap<String, BTreeMap<String, String>>,
}

impl Observed {
    /// The tags of `arn` (empty when it has none).
    pub(crate) fn tags_of(&self, arn: Option<&str>) -> BTreeMap<String, String> {
        arn.and_then(|a| self.tags.get(a))
            .cloned()
            .unwrap_or_default()
    }

    /// Reads the stack's load balancer: 2 describes by name, then attributes and listeners,
    /// then tags (in batches of [`TAG_BATCH`]); calls in one round run at once.
    pub(crate) async fn read(
        elb: &Client,
        stack: &str,
        lb_name: &str,
        tg_name: &str,
    ) -> Result<Observed, Error> {
        let (lb, tg) = tokio::try_join!(
            async {
                match elb.describe_load_balancers().names(lb_name).send().await {
                    Ok(out) => Ok(out.load_balancers().first().cloned()),
                    Err(e) if e.code() == Some("LoadBalancerNotFound") => Ok(None),
                    Err(e) => Err(aws(
                        "DescribeLoadBalancers",
                        format!("load balancer {lb_name}"),
                    )(e)),
                }
            },
            async {
                match elb.describe_target_groups().names(tg_name).send().await {
                    Ok(out) => Ok(out.target_groups().first().cloned()),
                    Err(e) if e.code() == Some("TargetGroupNotFound") => Ok(None),
                    Err(e) => Err(aws(
                        "DescribeTargetGroups",
                        format!("target group {tg_name}"),
                    )(e)),
                }
            },
        )?;
        let lb_arn = lb.as_ref().and_then(|l| l.load_balancer_arn());
        let tg_arn = tg.as_ref().and_then(|t| t.target_group_arn());
        let (lb_attributes, listeners, tg_attributes) = tokio::try_join!(
            async {
                let Some(arn) = lb_arn else {
                    return Ok(BTreeMap::new());
                };
                let out = elb
                    .describe_load_balancer_attributes()
                    .load_balancer_arn(arn)
                    .send()
                    .await
                    .map_err(aws("DescribeLoadBalancerAttributes", arn))?;
                Ok(lb_attribute_map(out.attributes()))
            },
            async {
                let Some(arn) = lb_arn else {
                    return Ok(Vec::new());
                };
                let out = elb
                    .describe_listeners()
                    .load_balancer_arn(arn)
                    .send()
                    .await
                    .map_err(aws("DescribeListeners", arn))?;
                let mut listeners = out.listeners().to_vec();
                listeners.sort_by_key(|l| l.port());
                Ok::<_, Error>(listeners)
            },
            async {
                let Some(arn) = tg_arn else {
                    return Ok(BTreeMap::new());
                };
                let out = elb
                    .describe_target_group_attributes()
                    .target_group_arn(arn)
                    .send()
                    .await
                    .map_err(aws("DescribeTargetGroupAttributes", arn))?;
                Ok(tg_attribute_map(out.attributes()))
            },
        )?;
        let arns: Vec<String> = lb_arn
            .into_iter()
            .chain(tg_arn)
            .chain(listeners.iter().filter_map(|l| l.listener_arn()))
            .map(str::to_owned)
            .collect();
        let mut tags = BTreeMap::new();
        for batch in arns.chunks(TAG_BATCH) {
            let out = elb
                .describe_tags()
                .set_resource_arns(Some(batch.to_vec()))
                .send()
                .await
                .map_err(aws("DescribeTags", format!("stack {stack}")))?;
            for d in out.tag_descriptions() {
                let map = d
                    .tags()
                    .iter()
                    .map(|t| {
                        (
                            t.key().unwrap_or_default().to_owned(),
                            t.value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect();
                tags.insert(d.resource_arn().unwrap_or_default().to_owned(), map);
            }
        }
        let observed = Observed {
            lb,
            lb_attributes,
            tg,
            tg_attributes,
            listeners,
            tags,
        };
        observed.check_owner(stack)?;
        Ok(observed)
    }

    /// Fails when the load balancer or target group with the stack's name belongs to someone
    /// else: it must be neither changed nor deleted.
    pub(crate) fn check_owner(&self, stack: &str) -> Result<(), Error> {
        let found = [
            (
                "load balancer",
                self.lb.as_ref().and_then(|l| l.load_balancer_name()),
                self.lb.as_ref().and_then(|l| l.load_balancer_arn()),
            ),
            (
                "target group",
                self.tg.as_ref().and_then(|t| t.target_group_name()),
                self.tg.as_ref().and_then(|t| t.target_group_arn()),
            ),
        ];
        for (kind, name, arn) in found {
            let Some(arn) = arn else { continue };
            let owner = self.tags_of(Some(arn)).get(tags::STACK).cloned();
            if owner.as_deref() != Some(stack) {
                return Err(Error::NotOurs {
                    kind,
                    name: name.unwrap_or_default().to_owned(),
                    arn: arn.to_owned(),
                    stack: stack.to_owned(),
                    owner,
                });
            }
        }
        Ok(())
    }
}

fn lb_attribute_map(attributes: &[LoadBalancerAttribute]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|a| {
            Some((
                a.key()?.to_owned(),
                a.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn tg_attribute_map(attributes: &[TargetGroupAttribute]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter_map(|a| {
            Some((
                a.key()?.to_owned(),
                a.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}
