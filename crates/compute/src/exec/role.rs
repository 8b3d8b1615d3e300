//! IAM roles: create with their trust policy and tags, keep the trust, managed and inline
//! policies and tags as desired, and delete (policies first, as IAM requires).

use std::collections::BTreeMap;

use infra::{Context, aws, built};

use super::{Ids, delete};
use crate::desired::{Desired, RoleKind};
use crate::error::Error;

fn iam_tags(
    tags: impl IntoIterator<Item = (String, String)>,
    operation: &'static str,
    what: &str,
) -> Result<Vec<aws_sdk_iam::types::Tag>, Error> {
    let mut list = Vec::new();
    for (k, v) in tags {
        list.push(
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(built(operation, what))?,
        );
    }
    Ok(list)
}

/// Creates the role of `kind`, tagged in the same call; returns its ARN.
pub(super) async fn create(
    iam: &aws_sdk_iam::Client,
    d: &Desired,
    kind: RoleKind,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    let what = format!("IAM role {name}");
    let tags = iam_tags(d.tags(kind.logical()), "CreateRole", &what)?;
    let out = iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(d.trust(kind).to_string())
        .description(kind.description())
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(aws("CreateRole", &what))?;
    let arn = out.role().map(|r| r.arn().to_owned()).unwrap_or_default();
    *ids.role_mut(kind) = Some(arn.clone());
    Ok(Some(arn))
}

pub(super) async fn update_trust(
    iam: &aws_sdk_iam::Client,
    d: &Desired,
    kind: RoleKind,
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    iam.update_assume_role_policy()
        .role_name(name)
        .policy_document(d.trust(kind).to_string())
        .send()
        .await
        .map_err(aws("UpdateAssumeRolePolicy", format!("IAM role {name}")))?;
    Ok(None)
}

pub(super) async fn attach(
    iam: &aws_sdk_iam::Client,
    d: &Desired,
    kind: RoleKind,
    arn: &str,
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    iam.attach_role_policy()
        .role_name(name)
        .policy_arn(arn)
        .send()
        .await
        .map_err(aws("AttachRolePolicy", format!("IAM role {name}")))?;
    Ok(None)
}

pub(super) async fn detach(
    iam: &aws_sdk_iam::Client,
    d: &Desired,
    kind: RoleKind,
    arn: &str,
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    iam.detach_role_policy()
        .role_name(name)
        .policy_arn(arn)
        .send()
        .await
        .map_err(aws("DetachRolePolicy", format!("IAM role {name}")))?;
    Ok(None)
}

/// Puts the inline policy `policy` of the role of `kind` as desired.
pub(super) async fn put_inline(
    iam: &aws_sdk_iam::Client,
    d: &Desired,
    kind: RoleKind,
    policy: &str,
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    let doc = d
        .roles
        .iter()
        .find(|r| r.kind == kind)
        .and_then(|r| r.inline.get(policy))
        .ok_or_else(|| Error::Missing {
            kind: "inline policy",
            name: policy.to_owned(),
        })?;
    iam.put_role_policy()
        .role_name(name)
        .policy_name(policy)
        .policy_document(doc.to_string())
        .send()
        .await
        .map_err(aws("PutRolePolicy", format!("IAM role {name}")))?;
    Ok(None)
}

pub(super) async fn delete_inline(
    iam: &aws_sdk_iam::Client,
    d: &Desired,
    kind: RoleKind,
    policy: &str,
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    iam.delete_role_policy()
        .role_name(name)
        .policy_name(policy)
        .send()
        .await
        .map_err(aws("DeleteRolePolicy", format!("IAM role {name}")))?;
    Ok(None)
}

pub(super) async fn tag(
    iam: &aws_sdk_iam::Client,
    d: &Desired,
    kind: RoleKind,
    tags: &BTreeMap<String, String>,
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    let what = format!("IAM role {name}");
    let list = iam_tags(tags.clone(), "TagRole", &what)?;
    iam.tag_role()
        .role_name(name)
        .set_tags(Some(list))
        .send()
        .await
        .map_err(aws("TagRole", &what))?;
    Ok(None)
}

/// Detaches `managed`, deletes `inline`, then deletes the role (each gone already counts as
/// done; a role still in use is retried).
pub(super) async fn delete_role(
    iam: &aws_sdk_iam::Client,
    cx: &Context,
    d: &Desired,
    kind: RoleKind,
    managed: &[String],
    inline: &[String],
) -> Result<Option<String>, Error> {
    let name = d.names.role(kind);
    let what = format!("IAM role {name}");
    for arn in managed {
        delete(
            cx,
            "DetachRolePolicy",
            &what,
            &["NoSuchEntity"],
            &[],
            || {
                iam.detach_role_policy()
                    .role_name(name)
                    .policy_arn(arn)
                    .send()
            },
        )
        .await?;
    }
    for policy in inline {
        delete(
            cx,
            "DeleteRolePolicy",
            &what,
            &["NoSuchEntity"],
            &[],
            || {
                iam.delete_role_policy()
                    .role_name(name)
                    .policy_name(policy)
                    .send()
            },
        )
        .await?;
    }
    delete(
        cx,
        "DeleteRole",
        &what,
        &["NoSuchEntity"],
        &["DeleteConflict"],
        || iam.delete_role().role_name(name).send(),
    )
    .await?;
    Ok(None)
}
