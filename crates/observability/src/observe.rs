//! Reading what exists: the stack's alarms (one `DescribeAlarms` by name prefix, tags read
//! only for alarms whose name alone does not prove they are ours), its dashboard, and its SNS
//! topic with tags and subscriptions.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_cloudwatch::types::MetricAlarm;
use infra::tags;

use crate::error::Error;
use crate::{MODULE, TOPIC};
use infra::aws;

/// A bound on pages read from any list call: 100 pages of 100 items are far more than one
/// stack has, and a misbehaving endpoint cannot keep us looping.
pub(crate) const MAX_PAGES: usize = 100;

/// One subscription of the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The ARN, or `PendingConfirmation` until the recipient confirms (such subscriptions
    /// cannot be removed; AWS drops them after three days, or with the topic).
    pub(crate) arn: String,
    pub(crate) protocol: String,
    pub(crate) endpoint: String,
}

impl Subscription {
    /// True until the recipient confirms.
    pub(crate) fn pending(&self) -> bool {
        !self.arn.starts_with("arn:")
    }
}

/// The topic `{stack}-alarms`, when it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Topic {
    pub(crate) arn: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) subscriptions: Vec<Subscription>,
}

impl Topic {
    /// True when the topic carries the stack's identity tags.
    pub(crate) fn is_ours(&self, stack: &str) -> bool {
        self.tags.get(tags::STACK).map(String::as_str) == Some(stack)
            && self.tags.get(tags::MODULE).map(String::as_str) == Some(MODULE)
    }
}

/// Everything of the stack's observability that exists.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// The stack's alarms by alarm name.
    pub(crate) alarms: BTreeMap<String, MetricAlarm>,
    /// The dashboard body, when the dashboard exists.
    pub(crate) dashboard: Option<String>,
    /// The topic, when it exists (ours or not: see [`Topic::is_ours`]).
    pub(crate) topic: Option<Topic>,
}

impl Observed {
    /// True when nothing of the stack exists.
    pub(crate) fn is_empty(&self, stack: &str) -> bool {
        self.alarms.is_empty()
            && self.dashboard.is_none()
            && !self.topic.as_ref().is_some_and(|t| t.is_ours(stack))
    }

    /// Reads the stack's resources. Alarms named in `known` are the stack's by name; other
    /// alarms with the prefix `{stack}-` (another stack's `{stack}-x-...`, or one of ours no
    /// longer wanted) are the stack's only when their tags say so.
    pub(crate) async fn read(
        cw: &aws_sdk_cloudwatch::Client,
        sns: &aws_sdk_sns::Client,
        stack: &str,
        dashboard: &str,
        known: &BTreeSet<String>,
    ) -> Result<Observed, Error> {
        let (alarms, dashboard, topic) = tokio::try_join!(
            read_alarms(cw, stack, known),
            read_dashboard(cw, dashboard),
            read_topic(sns, stack),
        )?;
        Ok(Observed {
            alarms,
            dashboard,
            topic,
        })
    }
}

async fn read_alarms(
    cw: &aws_sdk_cloudwatch::Client,
    stack: &str,
    known: &BTreeSet<String>,
) -> Result<BTreeMap<String, MetricAlarm>, Error> {
    let prefix = format!("{stack}-");
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let out = cw
            .describe_alarms()
            .alarm_name_prefix(&prefix)
            .alarm_types(aws_sdk_cloudwatch::types::AlarmType::MetricAlarm)
            .max_records(100)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(aws("DescribeAlarms", format!("alarms {prefix}*")))?;
        all.extend(out.metric_alarms().iter().cloned());
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    let mut ours = BTreeMap::new();
    for alarm in all {
        let name = alarm.alarm_name().unwrap_or_default().to_owned();
        if known.contains(&name) {
            ours.insert(name, alarm);
            continue;
        }
        let arn = alarm.alarm_arn().unwrap_or_default();
        let out = cw
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(aws("ListTagsForResource", format!("alarm {name:?}")))?;
        let tag = |key: &str| {
            out.tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
        };
        if tag(tags::STACK) == Some(stack) && tag(tags::MODULE) == Some(MODULE) {
            ours.insert(name, alarm);
        }
    }
    Ok(ours)
}

async fn read_dashboard(
    cw: &aws_sdk_cloudwatch::Client,
    name: &str,
) -> Result<Option<String>, Error> {
    // One call: a dashboard that does not exist answers ResourceNotFound.
    match cw.get_dashboard().dashboard_name(name).send().await {
        Ok(out) => Ok(Some(out.dashboard_body().unwrap_or_default().to_owned())),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_dashboard_not_found_error()) =>
        {
            Ok(None)
        }
        Err(e) => Err(aws("GetDashboard", format!("dashboard {name:?}"))(e).into()),
    }
}

/// The name of the stack's topic.
pub(crate) fn topic_name(stack: &str) -> String {
    format!("{stack}-{TOPIC}")
}

async fn read_topic(sns: &aws_sdk_sns::Client, stack: &str) -> Result<Option<Topic>, Error> {
    let name = topic_name(stack);
    let suffix = format!(":{name}");
    let mut found = None;
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let out = sns
            .list_topics()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(aws("ListTopics", format!("topic {name:?}")))?;
        found = out
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .find(|arn| arn.ends_with(&suffix))
            .map(str::to_owned);
        match (&found, out.next_token()) {
            (None, Some(t)) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    let Some(arn) = found else {
        return Ok(None);
    };
    let (tag_list, subscriptions) = tokio::try_join!(
        async {
            sns.list_tags_for_resource()
                .resource_arn(&arn)
                .send()
                .await
                .map_err(|e| Error::from(aws("ListTagsForResource", format!("topic {arn}"))(e)))
        },
        read_subscriptions(sns, &arn),
    )?;
    Ok(Some(Topic {
        tags: tag_list
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect(),
        arn,
        subscriptions,
    }))
}

async fn read_subscriptions(
    sns: &aws_sdk_sns::Client,
    arn: &str,
) -> Result<Vec<Subscription>, Error> {
    let mut subs = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let out = sns
            .list_subscriptions_by_topic()
            .topic_arn(arn)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(aws("ListSubscriptionsByTopic", format!("topic {arn}")))?;
        subs.extend(out.subscriptions().iter().map(|s| Subscription {
            arn: s.subscription_arn().unwrap_or_default().to_owned(),
            protocol: s.protocol().unwrap_or_default().to_owned(),
            endpoint: s.endpoint().unwrap_or_default().to_owned(),
        }));
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    Ok(subs)
}
