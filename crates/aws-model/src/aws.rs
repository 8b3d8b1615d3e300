//! AWS's numbers, each named once with its source and a confidence (H, M, L: see the crate
//! documentation). Durations are model time: a faster [`crate::Clock`] divides them all.

use std::time::Duration;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// CloudWatch: how the metrics that target tracking follows are aggregated and published.
pub mod cloudwatch {
    use super::{Duration, secs};

    /// Period of the standard-resolution metrics target tracking follows: AWS/ECS
    /// `CPUUtilization` ("Amazon ECS metric data is automatically sent to CloudWatch in
    /// 1-minute periods", ECS DG `cloudwatch-metrics`) and AWS/ApplicationELB
    /// `RequestCountPerTarget` ("Elastic Load Balancing publishes ... in 60-second intervals",
    /// ALB UG `load-balancer-cloudwatch-metrics`). H.
    pub const STANDARD_PERIOD: Duration = secs(60);

    /// Period of ECS's high-resolution metrics (`ECSServiceAverageCPUUtilizationHighResolution`,
    /// opt-in per service since 2026): 20 seconds. ECS DG "Faster auto scaling with
    /// high-resolution metrics". H.
    pub const HIGH_RESOLUTION_PERIOD: Duration = secs(20);

    /// From the end of a standard-resolution period until the alarm acts on its datapoint
    /// (publishing, ingestion and alarm evaluation). AWS documents no figure. Derived from
    /// AWS's own benchmark in the ECS high-resolution metrics launch post (2026): 363 s from a
    /// load increase to the scale-out trigger with one-minute metrics = 3 datapoints x 60 s +
    /// half a period of alignment on average (30 s) + this lag (153 s). (The minute the load
    /// rose in counts when its average already breaches, so after a large step the model
    /// triggers up to a period sooner than that: 322 s on average for a step to 2.5x the
    /// target.) M (one AWS benchmark, seen through secondary copies).
    pub const STANDARD_LAG: Duration = secs(153);

    /// The same lag for 20-second metrics, from the same benchmark: 86 s to the trigger =
    /// 3 x 20 s + 10 s alignment on average + 16 s. M.
    pub const HIGH_RESOLUTION_LAG: Duration = secs(16);
}

/// Application Auto Scaling target tracking for an ECS service.
pub mod autoscaling {
    use super::{Duration, secs};

    /// The scale-out alarm (`TargetTracking-...-AlarmHigh`) fires after this many consecutive
    /// datapoints above the target value ("3 out of 3 datapoints for scale out",
    /// aws/containers-roadmap#1208; "CPUUtilization > 30 for 3 datapoints within 3 minutes",
    /// AWS Fargate workshop). M (not in AWS's docs; observed the same everywhere).
    pub const SCALE_OUT_DATAPOINTS: usize = 3;

    /// The scale-in alarm (`...-AlarmLow`) fires after this many consecutive datapoints below
    /// its threshold ("15 out of 15 for scale in", same sources). M.
    pub const SCALE_IN_DATAPOINTS: usize = 15;

    /// The scale-in alarm's threshold as a fraction of the target value, as seen for ECS
    /// (target 30 -> `< 27 for 15 datapoints`, AWS Fargate workshop; aws-samples aurora labs
    /// #3). The docs say only "usually more than 10% lower" (App Auto Scaling UG). L-M.
    pub const SCALE_IN_THRESHOLD: f64 = 0.9;

    /// Default scale-out and scale-in cooldowns for ECS services
    /// (`TargetTrackingScalingPolicyConfiguration`, Application Auto Scaling API Reference;
    /// CDK `BaseTargetTrackingProps`: "Duration.seconds(300) for ... ECS services"). H.
    pub const DEFAULT_COOLDOWN: Duration = secs(300);
}

/// ECS and Fargate.
pub mod ecs {
    use super::{Duration, secs};

    /// From a scale-out trigger until ECS has created the new tasks (PROVISIONING). AWS's
    /// benchmark in the high-resolution metrics launch post: trigger at 363 s, tasks
    /// provisioned at 386 s. The sandbox applies it to every task the service scheduler
    /// starts (scale-out, replacement, first deployment). M.
    pub const SCHEDULER_DELAY: Duration = secs(23);

    /// Shortest time from a Fargate task's creation to RUNNING, for the default
    /// distribution. AWS publishes no typical value; users report 20-40 s pulling from ECR
    /// inside the VPC (aws/containers-roadmap#358) and 53-62 s for a 413 MB image through NAT
    /// (elasticscale.com, 2024, 10 runs). M.
    pub const LAUNCH_MIN: Duration = secs(30);

    /// Longest time from creation to RUNNING of the default distribution (see
    /// [`LAUNCH_MIN`]). M.
    pub const LAUNCH_MAX: Duration = secs(60);

    /// Share of a task's start spent pulling the image (PENDING); the rest is provisioning
    /// (PROVISIONING): "image download is 76% of container start time" (AWS News Blog,
    /// "AWS Fargate Enables Faster Container Startup using Seekable OCI", 2023). M.
    pub const PULL_SHARE: f64 = 0.76;

    /// Longest back-off of the service scheduler for tasks that keep stopping before RUNNING:
    /// the retry interval is "incrementally increased up to a maximum of 15 minutes" (ECS DG
    /// `service-throttle-logic`). H. (The first interval is not documented; the sandbox starts
    /// at [`THROTTLE_FIRST`].)
    pub const THROTTLE_MAX: Duration = secs(15 * 60);

    /// First back-off of the service scheduler after a task failed to start. Not documented;
    /// our choice. L.
    pub const THROTTLE_FIRST: Duration = secs(2);

    /// The deployment circuit breaker's failed-task threshold: `0.5 * desired task count`,
    /// at least [`CIRCUIT_BREAKER_MIN_FAILURES`] and at most [`CIRCUIT_BREAKER_MAX_FAILURES`]
    /// (ECS API Reference, `ServiceDeploymentCircuitBreaker.threshold`). H.
    pub const CIRCUIT_BREAKER_FAILURE_SHARE: f64 = 0.5;

    /// See [`CIRCUIT_BREAKER_FAILURE_SHARE`]. H.
    pub const CIRCUIT_BREAKER_MIN_FAILURES: u32 = 3;

    /// See [`CIRCUIT_BREAKER_FAILURE_SHARE`]. H.
    pub const CIRCUIT_BREAKER_MAX_FAILURES: u32 = 200;

    /// Tasks that fail to start before ECS's circuit breaker fails a deployment of `desired`.
    pub fn circuit_breaker_threshold(desired: u32) -> u32 {
        let share = (f64::from(desired) * CIRCUIT_BREAKER_FAILURE_SHARE).ceil();
        // `share` is a non-negative whole number well inside u32 for any u32 desired count.
        let share = if share >= f64::from(CIRCUIT_BREAKER_MAX_FAILURES) {
            CIRCUIT_BREAKER_MAX_FAILURES
        } else {
            share as u32
        };
        share.clamp(CIRCUIT_BREAKER_MIN_FAILURES, CIRCUIT_BREAKER_MAX_FAILURES)
    }

    /// `healthCheckGracePeriodSeconds` when a service does not set it (ECS API CreateService).
    /// H.
    pub const DEFAULT_HEALTH_CHECK_GRACE: Duration = secs(0);
}

/// Elastic Load Balancing (Application Load Balancer).
pub mod elb {
    use super::{Duration, secs};

    /// How long an ALB tries to open a connection to a target before it answers 504
    /// (`TargetConnectionError`): 10 s, not configurable (ALB UG "Troubleshoot": "the load
    /// balancer failed to establish a connection to the target before the connection timeout
    /// expired (10 seconds)"). H.
    pub const CONNECT_TIMEOUT: Duration = secs(10);

    /// How long an ALB waits on a connection to a target that sent nothing back before it
    /// answers 504: the idle timeout, default 60 s ("The load balancer established a connection
    /// to the target but the target did not respond before the idle timeout period elapsed",
    /// ALB UG "Troubleshoot", HTTP 504; default in ALB UG "Connection idle timeout"). A request
    /// the ALB sends over a kept-alive connection to a target that was just cut off waits this
    /// long, not the connect timeout. H.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = secs(60);

    /// TTL of the ALB's DNS records (ALB UG `target-group-health`: "until the TTL in the DNS
    /// record expires (60 seconds)"). H.
    pub const DNS_TTL: Duration = secs(60);

    /// A newly registered target is healthy after this many passing checks, whatever the
    /// healthy threshold: "After your target is registered, it must pass one health check to
    /// be considered healthy" (ALB UG `target-group-health-checks`); the healthy threshold
    /// applies only to an unhealthy target recovering (ECS DG `load-balancer-healthcheck`). H.
    pub const NEW_TARGET_PASSES: u32 = 1;

    /// Default health check interval for ip targets (ALB UG `target-group-health-checks`). H.
    pub const DEFAULT_HEALTH_INTERVAL: Duration = secs(30);
    /// Default health check timeout. H.
    pub const DEFAULT_HEALTH_TIMEOUT: Duration = secs(5);
    /// Default healthy threshold. H.
    pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 5;
    /// Default unhealthy threshold. H.
    pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
    /// Default deregistration delay (ALB UG "Deregistration delay"). H.
    pub const DEFAULT_DEREGISTRATION_DELAY: Duration = secs(300);

    /// How often Route 53 checks a load balancer node, and how many failures in a row take its
    /// address out of the DNS answer. AWS does not document when an impaired node leaves DNS;
    /// Route 53's standard health checks use 30 s and a failure threshold of 3 (AWS News Blog
    /// "Route 53 Health Check Improvements"), and ELB health-checks its nodes with Route 53
    /// (re:Invent 2025 NET311). L (inferred).
    pub const NODE_CHECK_INTERVAL: Duration = secs(30);
    /// See [`NODE_CHECK_INTERVAL`]. L.
    pub const NODE_CHECK_FAILURES: u32 = 3;
}

/// AWS FIS.
pub mod fis {
    use super::{Duration, secs};

    /// Duration of the "Pause-Network-Connectivity" action
    /// (`aws:network:disrupt-connectivity`, scope `all`) in the "AZ Availability: Power
    /// Interruption" scenario template: PT2M (FIS UG scenario library; reproduced in public
    /// copies of the template). M.
    pub const AZ_POWER_NETWORK_PAUSE: Duration = secs(120);
}

/// Amazon RDS: how a Multi-AZ DB instance and a Multi-AZ DB cluster fail over.
pub mod rds {
    use super::{Duration, secs};

    /// A Multi-AZ DB instance's failover "typically completes within 60-120 seconds" (RDS UG
    /// "Failing over a Multi-AZ DB instance"; large transactions or a long recovery add time):
    /// from the primary's loss until the endpoint's DNS names the promoted standby. H.
    pub const INSTANCE_FAILOVER_MIN: Duration = secs(60);
    /// See [`INSTANCE_FAILOVER_MIN`]. H.
    pub const INSTANCE_FAILOVER_MAX: Duration = secs(120);

    /// A Multi-AZ DB cluster's failover: "typically under 35 seconds" (RDS UG "Failing over a
    /// Multi-AZ DB cluster"; it completes once both readers have applied what they received),
    /// H for the upper bound. AWS gives no lower bound: the sandbox draws from 15 s (detection
    /// and promotion take some time; ours, L) to 35 s.
    pub const CLUSTER_FAILOVER_MIN: Duration = secs(15);
    /// See [`CLUSTER_FAILOVER_MIN`]. H.
    pub const CLUSTER_FAILOVER_MAX: Duration = secs(35);

    /// TTL of a DB instance endpoint's DNS record. Aurora documents five seconds ("Aurora DNS
    /// zones use a short TTL of five seconds", Aurora MySQL DBA Handbook); RDS instance
    /// endpoints answer with 5 s in practice, which the RDS UG does not state. M.
    pub const ENDPOINT_TTL: Duration = secs(5);
}

/// ElastiCache (Redis OSS) Multi-AZ replication groups.
pub mod elasticache {
    use super::{Duration, secs};

    /// From a Multi-AZ primary's loss until a replica in another zone is promoted and the
    /// primary endpoint names it: ElastiCache's UG (AutoFailover) says writes "can resume"
    /// after "typically just a few seconds" of promotion; AWS's Database Blog ("Testing
    /// Automatic Failover to a Read Replica on Amazon ElastiCache for Redis") puts the
    /// primary's failure detection and the promotion together at "about 30 seconds". The
    /// sandbox draws from the span between them. M.
    pub const FAILOVER_MIN: Duration = secs(5);
    /// See [`FAILOVER_MIN`]. M.
    pub const FAILOVER_MAX: Duration = secs(30);

    /// TTL of the primary endpoint's DNS record. ElastiCache does not document it; the
    /// sandbox uses RDS's 5 s ([`super::rds::ENDPOINT_TTL`]). L.
    pub const ENDPOINT_TTL: Duration = secs(5);
}
