//! The listeners: HTTP forwarding (or redirecting to HTTPS when there is a certificate) and
//! HTTPS with the TLS 1.3 policy.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Certificate, ProtocolEnum, RedirectActionConfig,
    RedirectActionStatusCodeEnum,
};
use infra::Context;

use super::{Ids, missing, settle, tags};
use crate::error::Error;
use crate::lb::diff::{
    Desired, Kind, LB, ListenerWant, Op, Route, TG, TLS_POLICY, listener_changes, listener_name,
    retag,
};
use crate::lb::observe::Observed;
use crate::resource::delete;

pub(super) async fn create(
    elb: &Client,
    cx: &Context,
    want: &ListenerWant,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    let lb = ids
        .lb
        .as_ref()
        .ok_or_else(|| missing("load-balancer", LB))?
        .arn
        .clone();
    let actions = listener_actions(want, ids.tg.as_deref())?;
    let out = settle(
        cx,
        "CreateListener",
        &format!("listener {:?} on {lb}", want.name),
        || {
            elb.create_listener()
                .load_balancer_arn(&lb)
                .protocol(protocol(want))
                .port(want.port)
                .set_certificates(certificates(want))
                .set_ssl_policy(want.certificate.as_ref().map(|_| TLS_POLICY.to_owned()))
                .set_default_actions(Some(actions.clone()))
                .set_tags(Some(tags(cx, want.name)))
                .send()
        },
    )
    .await?;
    let arn = out
        .listeners()
        .first()
        .and_then(|l| l.listener_arn())
        .ok_or_else(|| missing("listener", want.name))?
        .to_owned();
    ids.listeners.insert(want.port, arn.clone());
    Ok(Some(arn))
}

pub(super) async fn modify(
    elb: &Client,
    cx: &Context,
    want: &ListenerWant,
    arn: &str,
    ids: &Ids,
) -> Result<Option<String>, Error> {
    let actions = listener_actions(want, ids.tg.as_deref())?;
    settle(
        cx,
        "ModifyListener",
        &format!("listener {:?} ({arn})", want.name),
        || {
            elb.modify_listener()
                .listener_arn(arn)
                .protocol(protocol(want))
                .port(want.port)
                .set_certificates(certificates(want))
                .set_ssl_policy(want.certificate.as_ref().map(|_| TLS_POLICY.to_owned()))
                .set_default_actions(Some(actions.clone()))
                .send()
        },
    )
    .await?;
    Ok(Some(arn.to_owned()))
}

pub(super) async fn remove(
    elb: &Client,
    cx: &Context,
    name: &str,
    arn: &str,
    ids: &mut Ids,
) -> Result<Option<String>, Error> {
    delete(
        cx,
        "DeleteListener",
        &format!("listener {name:?} ({arn})"),
        &[],
        || elb.delete_listener().listener_arn(arn).send(),
    )
    .await?;
    ids.listeners.retain(|_, a| a != arn);
    Ok(Some(arn.to_owned()))
}

fn certificates(want: &ListenerWant) -> Option<Vec<Certificate>> {
    want.certificate
        .as_ref()
        .map(|c| vec![Certificate::builder().certificate_arn(c).build()])
}

fn listener_actions(want: &ListenerWant, tg: Option<&str>) -> Result<Vec<Action>, Error> {
    Ok(vec![match want.route {
        Route::Forward => Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(tg.ok_or_else(|| missing("target-group", TG))?)
            .build(),
        Route::RedirectToHttps => Action::builder()
            .r#type(ActionTypeEnum::Redirect)
            .redirect_config(
                RedirectActionConfig::builder()
                    .protocol("HTTPS")
                    .port("443")
                    .host("#{host}")
                    .path("/#{path}")
                    .query("#{query}")
                    .status_code(RedirectActionStatusCodeEnum::Http301)
                    .build(),
            )
            .build(),
    }])
}

fn protocol(want: &ListenerWant) -> ProtocolEnum {
    if want.certificate.is_some() {
        ProtocolEnum::Https
    } else {
        ProtocolEnum::Http
    }
}

// The diff: the steps that take what exists to what is wanted. Pure: no AWS call.

/// Listeners, by port: missing ones created, drifted ones modified, others deleted.
pub(crate) fn steps(
    cx: &Context,
    desired: &Desired,
    observed: &Observed,
    ops: &mut Vec<Op>,
    retags: &mut Vec<Op>,
) {
    let tg_arn = observed.tg.as_ref().and_then(|t| t.target_group_arn());
    for want in &desired.listeners {
        match observed
            .listeners
            .iter()
            .find(|l| l.port() == Some(want.port))
        {
            None => ops.push(Op::CreateListener(want.clone())),
            Some(have) => {
                let arn = have.listener_arn().unwrap_or_default();
                let changes = listener_changes(want, have, tg_arn);
                if !changes.is_empty() {
                    ops.push(Op::ModifyListener {
                        want: want.clone(),
                        arn: arn.to_owned(),
                        changes,
                    });
                }
                retag(cx, observed, Kind::Listener, want.name, arn, retags);
            }
        }
    }
    for have in &observed.listeners {
        if !desired
            .listeners
            .iter()
            .any(|w| Some(w.port) == have.port())
        {
            ops.push(Op::DeleteListener {
                name: listener_name(observed, have),
                arn: have.listener_arn().unwrap_or_default().to_owned(),
            });
        }
    }
}
