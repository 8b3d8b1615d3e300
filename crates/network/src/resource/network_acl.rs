//! Network ACLs: the stack's are the deny-all ones of a zone isolation (`isolate.rs`); destroy
//! deletes any still there, handing their subnets back to the VPC's default ACL first.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use infra::{Context, aws};

use super::{delete, settle};
use crate::error::Error;

pub(super) async fn remove(
    ec2: &Client,
    cx: &Context,
    id: &str,
    what: &str,
    associations: &[String],
) -> Result<(), Error> {
    if !associations.is_empty() {
        let acls = ec2
            .describe_network_acls()
            .network_acl_ids(id)
            .send()
            .await
            .map_err(aws("DescribeNetworkAcls", what))?;
        let vpc = acls
            .network_acls()
            .first()
            .and_then(|a| a.vpc_id())
            .unwrap_or_default()
            .to_owned();
        let default = ec2
            .describe_network_acls()
            .filters(Filter::builder().name("vpc-id").values(&vpc).build())
            .filters(Filter::builder().name("default").values("true").build())
            .send()
            .await
            .map_err(aws("DescribeNetworkAcls", &vpc))?;
        if let Some(default) = default
            .network_acls()
            .first()
            .and_then(|a| a.network_acl_id())
        {
            for assoc in associations {
                settle(cx, "ReplaceNetworkAclAssociation", what, || {
                    ec2.replace_network_acl_association()
                        .association_id(assoc)
                        .network_acl_id(default)
                        .send()
                })
                .await?;
            }
        }
    }
    delete(cx, "DeleteNetworkAcl", what, &[], || {
        ec2.delete_network_acl().network_acl_id(id).send()
    })
    .await
}
