//! Carrying out the steps of a plan against CloudWatch and SNS.

use aws_sdk_cloudwatch::operation::put_metric_alarm::builders::PutMetricAlarmFluentBuilder;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use infra::{Backoff, Context};

use crate::MODULE;
use crate::TOPIC;
use crate::alarms::{AlarmDef, sdk_dims};
use crate::desired::{NEW_TOPIC, Op};
use crate::error::{Error, build};
use crate::observe::Subscription;
use infra::{aws, waited};

/// AWS's limit of alarm names per `DeleteAlarms` call.
pub(crate) const DELETE_BATCH: usize = 100;

/// The clients a run needs.
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub(crate) cw: aws_sdk_cloudwatch::Client,
    pub(crate) sns: aws_sdk_sns::Client,
}

/// Carries out one step; `topic` is the topic's ARN once one exists.
pub(crate) async fn step(
    clients: &Clients,
    cx: &Context,
    op: &Op,
    topic: &mut Option<String>,
) -> Result<Option<String>, Error> {
    let Clients { cw, sns } = clients;
    match op {
        Op::CreateTopic { name } => {
            let tags = sns_tags(cx)?;
            let out = sns
                .create_topic()
                .name(name)
                .set_tags(Some(tags))
                .send()
                .await
                .map_err(aws("CreateTopic", format!("topic {name:?}")))?;
            let arn = out.topic_arn().unwrap_or_default().to_owned();
            *topic = Some(arn.clone());
            Ok(Some(arn))
        }
        Op::RetagTopic { arn } => {
            sns.tag_resource()
                .resource_arn(arn)
                .set_tags(Some(sns_tags(cx)?))
                .send()
                .await
                .map_err(aws("TagResource", format!("topic {arn}")))?;
            *topic = Some(arn.clone());
            Ok(None)
        }
        Op::Subscribe { email } => {
            let arn = need_topic(topic)?;
            // A topic made a moment ago may not be visible yet.
            let out = Backoff::consistency(cx.waits())
                .retry_codes(
                    format!("Subscribe {email} to {arn}"),
                    &["NotFound", "NotFoundException"],
                    || {
                        sns.subscribe()
                            .topic_arn(&arn)
                            .protocol("email")
                            .endpoint(email)
                            .send()
                    },
                )
                .await
                .map_err(waited("Subscribe", format!("email {email} to topic {arn}")))?;
            Ok(out.subscription_arn().map(str::to_owned))
        }
        Op::Unsubscribe { sub } => {
            unsubscribe(sns, sub).await?;
            Ok(None)
        }
        Op::PutAlarm { alarm, .. } => {
            put_alarm(cw, cx, alarm, topic.as_deref()).await?;
            Ok(None)
        }
        Op::DeleteAlarms { names } => {
            for batch in names.chunks(DELETE_BATCH) {
                cw.delete_alarms()
                    .set_alarm_names(Some(batch.to_vec()))
                    .send()
                    .await
                    .map_err(aws("DeleteAlarms", format!("alarms {batch:?}")))?;
            }
            Ok(None)
        }
        Op::PutDashboard { name, body, .. } => {
            let text = body
                .to_json()
                .map_err(build(format!("dashboard body {name:?}")))?;
            cw.put_dashboard()
                .dashboard_name(name)
                .dashboard_body(text)
                .send()
                .await
                .map_err(aws("PutDashboard", format!("dashboard {name:?}")))?;
            Ok(None)
        }
        Op::DeleteDashboard { name } => {
            match cw.delete_dashboards().dashboard_names(name).send().await {
                Ok(_) => Ok(None),
                // Already gone.
                Err(e) if e.code() == Some("ResourceNotFound") => Ok(None),
                Err(e) => Err(aws("DeleteDashboards", format!("dashboard {name:?}"))(e).into()),
            }
        }
        Op::DeleteTopic { arn, subscriptions } => {
            for sub in subscriptions.iter().filter(|s| !s.pending()) {
                unsubscribe(sns, sub).await?;
            }
            // DeleteTopic succeeds for a topic that is already gone.
            sns.delete_topic()
                .topic_arn(arn)
                .send()
                .await
                .map_err(aws("DeleteTopic", format!("topic {arn}")))?;
            if topic.as_deref() == Some(arn) {
                *topic = None;
            }
            Ok(None)
        }
    }
}

fn need_topic(topic: &Option<String>) -> Result<String, Error> {
    topic.clone().ok_or_else(|| Error::Missing {
        kind: "sns-topic",
        name: TOPIC.to_owned(),
    })
}

async fn unsubscribe(sns: &aws_sdk_sns::Client, sub: &Subscription) -> Result<(), Error> {
    match sns.unsubscribe().subscription_arn(&sub.arn).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("NotFound") => Ok(()),
        Err(e) => Err(aws("Unsubscribe", format!("subscription {}", sub.arn))(e).into()),
    }
}

fn sns_tags(cx: &Context) -> Result<Vec<aws_sdk_sns::types::Tag>, Error> {
    cx.tags(MODULE, TOPIC)
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_sns::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(build("SNS topic tags"))
        })
        .collect()
}

/// The `PutMetricAlarm` request for `alarm` (tags apply when it creates the alarm; AWS ignores
/// them on updates). Actions naming the topic this apply creates get its real ARN.
pub(crate) fn put_request(
    cw: &aws_sdk_cloudwatch::Client,
    cx: &Context,
    alarm: &AlarmDef,
    topic: Option<&str>,
) -> Result<PutMetricAlarmFluentBuilder, Error> {
    let resolve = |actions: &[String]| -> Result<Vec<String>, Error> {
        actions
            .iter()
            .map(|a| {
                if a == NEW_TOPIC {
                    topic.map(str::to_owned).ok_or_else(|| Error::Missing {
                        kind: "sns-topic",
                        name: TOPIC.to_owned(),
                    })
                } else {
                    Ok(a.clone())
                }
            })
            .collect()
    };
    let tags = cx
        .tags(MODULE, &alarm.logical)
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_cloudwatch::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        })
        .collect();
    let metrics = alarm.queries();
    Ok(cw
        .put_metric_alarm()
        .alarm_name(&alarm.name)
        .set_alarm_description(alarm.description.clone())
        .actions_enabled(alarm.actions_enabled)
        .set_alarm_actions(Some(resolve(&alarm.alarm_actions)?))
        .set_ok_actions(Some(resolve(&alarm.ok_actions)?))
        .set_namespace(alarm.namespace.clone())
        .set_metric_name(alarm.metric.clone())
        .set_dimensions((!alarm.dimensions.is_empty()).then(|| sdk_dims(&alarm.dimensions)))
        .set_statistic(alarm.statistic.as_deref().map(Into::into))
        .set_extended_statistic(alarm.extended_statistic.clone())
        .set_period(alarm.period)
        .set_metrics((!metrics.is_empty()).then_some(metrics))
        .evaluation_periods(alarm.evaluation_periods)
        .set_datapoints_to_alarm(alarm.datapoints_to_alarm)
        .threshold(alarm.threshold)
        .comparison_operator(alarm.comparison.as_str().into())
        .set_treat_missing_data(alarm.treat_missing_data.clone())
        .set_tags(Some(tags)))
}

async fn put_alarm(
    cw: &aws_sdk_cloudwatch::Client,
    cx: &Context,
    alarm: &AlarmDef,
    topic: Option<&str>,
) -> Result<(), Error> {
    put_request(cw, cx, alarm, topic)?
        .send()
        .await
        .map_err(aws("PutMetricAlarm", format!("alarm {:?}", alarm.name)))?;
    Ok(())
}
