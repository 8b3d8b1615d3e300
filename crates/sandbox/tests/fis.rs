//! The sandbox's AWS FIS executor against moto: an experiment of
//! `aws:network:disrupt-connectivity` started with the FIS API, as a user (or the proof)
//! starts one, cuts its subnets off with FIS's own network ACLs, and FIS (the plane) undoes it
//! when its duration is up on the sandbox's clock, when it is stopped, or when a stop-condition
//! alarm goes into ALARM; what the sandbox cannot run fails with FIS's reason.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use aws_sdk_ec2::types::Filter;
use aws_sdk_fis::types::{
    CreateExperimentTemplateActionInput, CreateExperimentTemplateStopConditionInput,
    CreateExperimentTemplateTargetInput, ExperimentStatus,
};
use stackproof_sandbox::{Clock, DataPlane, MotoServer, PlaneOptions};

const REGION: &str = "eu-west-1";
/// 30 times AWS's clock: PT1M takes 2 s.
const SCALE: f64 = 30.0;

macro_rules! client {
    ($sdk:expr, $acct:expr, $krate:ident) => {{
        $krate::Client::from_conf(
            $krate::config::Builder::from($sdk)
                .interceptor($acct.clone())
                .build(),
        )
    }};
}

struct World {
    ec2: aws_sdk_ec2::Client,
    fis: aws_sdk_fis::Client,
    cw: aws_sdk_cloudwatch::Client,
    /// Subnet ids: two in zone a, one in zone b.
    subnets: Vec<String>,
    /// The ACL the subnets start on.
    own_acl: String,
    plane: DataPlane,
}

async fn world() -> World {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let sdk = stackproof_sandbox::sdk_config(moto.endpoint(), REGION);
    let account = moto.fresh_account();
    let ec2 = client!(&sdk, account, aws_sdk_ec2);
    let fis = client!(&sdk, account, aws_sdk_fis);
    let cw = client!(&sdk, account, aws_sdk_cloudwatch);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let own_acl = ec2
        .create_network_acl()
        .vpc_id(&vpc)
        .send()
        .await
        .unwrap()
        .network_acl()
        .unwrap()
        .network_acl_id()
        .unwrap()
        .to_owned();
    let mut subnets = Vec::new();
    for (cidr, zone) in [
        ("10.0.1.0/24", "eu-west-1a"),
        ("10.0.2.0/24", "eu-west-1a"),
        ("10.0.3.0/24", "eu-west-1b"),
    ] {
        let id = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(zone)
            .send()
            .await
            .unwrap()
            .subnet()
            .unwrap()
            .subnet_id()
            .unwrap()
            .to_owned();
        let (assoc, _) = association(&ec2, &id).await;
        ec2.replace_network_acl_association()
            .association_id(assoc)
            .network_acl_id(&own_acl)
            .send()
            .await
            .unwrap();
        subnets.push(id);
    }
    let mut options = PlaneOptions::new(PathBuf::from("/nonexistent/sample-app"))
        .interceptor(account.clone())
        .clock(Clock::scaled(SCALE).unwrap());
    options.interval = Duration::from_millis(200);
    let plane = DataPlane::start(sdk.clone(), options).await.unwrap();
    World {
        ec2,
        fis,
        cw,
        subnets,
        own_acl,
        plane,
    }
}

/// (association id, ACL id with its tags) of `subnet`.
async fn association(
    ec2: &aws_sdk_ec2::Client,
    subnet: &str,
) -> (String, aws_sdk_ec2::types::NetworkAcl) {
    let out = ec2
        .describe_network_acls()
        .filters(
            Filter::builder()
                .name("association.subnet-id")
                .values(subnet)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let acl = out.network_acls()[0].clone();
    let assoc = acl
        .associations()
        .iter()
        .find(|a| a.subnet_id() == Some(subnet))
        .unwrap()
        .network_acl_association_id()
        .unwrap()
        .to_owned();
    (assoc, acl)
}

fn managed_by_fis(acl: &aws_sdk_ec2::types::NetworkAcl) -> bool {
    acl.tags()
        .iter()
        .any(|t| t.key() == Some("managedByFIS") && t.value() == Some("true"))
}

impl World {
    async fn start(
        &self,
        subnets: &[String],
        scope: &str,
        duration: &str,
        alarm: Option<&str>,
    ) -> String {
        let arns = subnets
            .iter()
            .map(|s| format!("arn:aws:ec2:{REGION}:123456789012:subnet/{s}"))
            .collect();
        let stop = match alarm {
            Some(name) => CreateExperimentTemplateStopConditionInput::builder()
                .source("aws:cloudwatch:alarm")
                .value(format!(
                    "arn:aws:cloudwatch:{REGION}:123456789012:alarm:{name}"
                ))
                .build()
                .unwrap(),
            None => CreateExperimentTemplateStopConditionInput::builder()
                .source("none")
                .build()
                .unwrap(),
        };
        let template = self
            .fis
            .create_experiment_template()
            .client_token(format!("t-{scope}-{duration}-{alarm:?}"))
            .description("cut a zone off")
            .role_arn("arn:aws:iam::123456789012:role/web-fis")
            .targets(
                "zone",
                CreateExperimentTemplateTargetInput::builder()
                    .resource_type("aws:ec2:subnet")
                    .set_resource_arns(Some(arns))
                    .selection_mode("ALL")
                    .build()
                    .unwrap(),
            )
            .actions(
                "cut",
                CreateExperimentTemplateActionInput::builder()
                    .action_id("aws:network:disrupt-connectivity")
                    .parameters("duration", duration)
                    .parameters("scope", scope)
                    .targets("Subnets", "zone")
                    .build()
                    .unwrap(),
            )
            .stop_conditions(stop)
            .send()
            .await
            .unwrap();
        let id = template.experiment_template().unwrap().id().unwrap();
        self.fis
            .start_experiment()
            .client_token(format!("e-{id}"))
            .experiment_template_id(id)
            .send()
            .await
            .unwrap()
            .experiment()
            .unwrap()
            .id()
            .unwrap()
            .to_owned()
    }

    /// The experiment's (status, reason).
    async fn state(&self, id: &str) -> (ExperimentStatus, String) {
        let out = self.fis.get_experiment().id(id).send().await.unwrap();
        let state = out.experiment().unwrap().state().unwrap();
        (
            state.status().unwrap().clone(),
            state.reason().unwrap_or_default().to_owned(),
        )
    }

    /// Waits (bounded) until the experiment's status is `want`; returns its reason.
    async fn wait(&self, id: &str, want: ExperimentStatus, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (status, reason) = self.state(id).await;
            if status == want {
                return reason;
            }
            assert!(
                Instant::now() < deadline,
                "experiment {id}: {status:?} ({reason}) after {within:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether each subnet is on an ACL of FIS's.
    async fn cut_off(&self) -> Vec<bool> {
        let mut out = Vec::new();
        for s in &self.subnets {
            out.push(managed_by_fis(&association(&self.ec2, s).await.1));
        }
        out
    }

    /// Asserts every subnet is back on the ACL it had and no ACL of FIS's is left.
    async fn assert_restored(&self) {
        for s in &self.subnets {
            let (_, acl) = association(&self.ec2, s).await;
            assert_eq!(acl.network_acl_id(), Some(self.own_acl.as_str()), "{s}");
        }
        let left = self
            .ec2
            .describe_network_acls()
            .filters(
                Filter::builder()
                    .name("tag:managedByFIS")
                    .values("true")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        assert!(left.network_acls().is_empty(), "{:?}", left.network_acls());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fis_cuts_subnets_off_and_undoes_it_itself() {
    let w = world().await;
    let zone_a = w.subnets[..2].to_vec();

    // Runs, then ends by itself when PT1M is up (2 s on this clock).
    let started = Instant::now();
    let id = w.start(&zone_a, "all", "PT1M", None).await;
    w.wait(&id, ExperimentStatus::Running, Duration::from_secs(10))
        .await;
    assert_eq!(w.cut_off().await, [true, true, false], "zone a only");
    // FIS's ACL lets traffic within the subnet through and nothing else.
    let (_, acl) = association(&w.ec2, &w.subnets[0]).await;
    let allows: Vec<_> = acl
        .entries()
        .iter()
        .filter(|e| e.rule_action() == Some(&aws_sdk_ec2::types::RuleAction::Allow))
        .map(|e| e.cidr_block().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(allows, ["10.0.1.0/24", "10.0.1.0/24"], "{acl:?}");
    w.wait(&id, ExperimentStatus::Completed, Duration::from_secs(15))
        .await;
    assert!(
        started.elapsed() >= Duration::from_secs_f64(60.0 / SCALE),
        "not before its duration: {:?}",
        started.elapsed()
    );
    w.assert_restored().await;

    // StopExperiment: stopped, restored, long before its hour.
    let id = w.start(&zone_a, "all", "PT1H", None).await;
    w.wait(&id, ExperimentStatus::Running, Duration::from_secs(10))
        .await;
    assert_eq!(w.cut_off().await, [true, true, false]);
    w.fis.stop_experiment().id(&id).send().await.unwrap();
    w.wait(&id, ExperimentStatus::Stopped, Duration::from_secs(10))
        .await;
    w.assert_restored().await;

    // A stop condition: the alarm goes into ALARM, FIS stops the experiment and says why.
    w.cw.put_metric_alarm()
        .alarm_name("web-5xx-rate")
        .namespace("AWS/ApplicationELB")
        .metric_name("HTTPCode_ELB_5XX_Count")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    let id = w
        .start(&w.subnets[2..], "all", "PT1H", Some("web-5xx-rate"))
        .await;
    w.wait(&id, ExperimentStatus::Running, Duration::from_secs(10))
        .await;
    assert_eq!(w.cut_off().await, [false, false, true]);
    w.cw.set_alarm_state()
        .alarm_name("web-5xx-rate")
        .state_value(StateValue::Alarm)
        .state_reason("errors")
        .send()
        .await
        .unwrap();
    let reason = w
        .wait(&id, ExperimentStatus::Stopped, Duration::from_secs(10))
        .await;
    assert!(reason.contains("stop condition"), "{reason}");
    assert!(reason.contains("web-5xx-rate"), "{reason}");
    w.assert_restored().await;

    // What the sandbox cannot run fails with the reason, and touches nothing.
    let id = w.start(&zone_a, "s3", "PT1M", None).await;
    let reason = w
        .wait(&id, ExperimentStatus::Failed, Duration::from_secs(10))
        .await;
    assert!(reason.contains("scope \"s3\""), "{reason}");
    w.assert_restored().await;
    w.plane.stop().await;
}
