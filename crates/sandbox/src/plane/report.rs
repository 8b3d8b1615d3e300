//! What the ALB and ECS would report: CloudWatch metrics (`AWS/ApplicationELB` per load
//! balancer, target group and zone; `AWS/ECS` CPU and memory per service) put into the control
//! plane every metrics period, and the proxy's access log lines written as gzip objects under
//! the load balancer's access-log bucket and prefix, with the key layout AWS uses.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_smithy_types::error::display::DisplayErrorContext;

use super::alb::ProxyStats;
use super::observe::{ListenerSpec, World};
use super::{Clients, log};

#[derive(Debug, Default, Clone)]
struct Acc {
    requests: u64,
    t2xx: u64,
    t4xx: u64,
    t5xx: u64,
    elb5xx: u64,
    rt_sum: Duration,
    rt_count: u64,
}

#[derive(Debug, Default)]
struct LogBuf {
    bucket: String,
    prefix: String,
    lb_name: String,
    lb_id: String,
    account: String,
    lines: Vec<String>,
}

/// Counters and log lines since the last publication.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// (load balancer suffix, target group ARN, zone) -> counters.
    zones: BTreeMap<(String, String, String), Acc>,
    /// Load balancer suffix -> 503s with no healthy target.
    no_target: BTreeMap<String, u64>,
    /// Load balancer suffix -> access log lines.
    logs: BTreeMap<String, LogBuf>,
}

/// Most buffered access-log lines per load balancer (older ones are dropped).
const MAX_LOG_LINES: usize = 200_000;

impl Report {
    /// Adds what a listener's proxy saw.
    pub(crate) fn add(&mut self, spec: &ListenerSpec, stats: ProxyStats) {
        let tg = spec.target_group.clone().unwrap_or_default();
        for (zone, z) in stats.zones {
            let a = self
                .zones
                .entry((spec.lb_arn_suffix.clone(), tg.clone(), zone))
                .or_default();
            a.requests += z.requests;
            a.t2xx += z.target_2xx;
            a.t4xx += z.target_4xx;
            a.t5xx += z.target_5xx;
            a.elb5xx += z.elb_5xx;
            a.rt_sum += z.response_time_sum;
            a.rt_count += z.response_time_count;
        }
        if stats.elb_5xx_no_target > 0 {
            *self
                .no_target
                .entry(spec.lb_arn_suffix.clone())
                .or_default() += stats.elb_5xx_no_target;
        }
        if let Some((bucket, prefix)) = &spec.access_logs {
            let buf = self.logs.entry(spec.lb_arn_suffix.clone()).or_default();
            buf.bucket.clone_from(bucket);
            buf.prefix.clone_from(prefix);
            buf.lb_name.clone_from(&spec.lb_name);
            buf.lb_id = spec
                .lb_arn_suffix
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            buf.account = spec.arn.split(':').nth(4).unwrap_or_default().to_owned();
            buf.lines.extend(stats.access_log);
            if buf.lines.len() > MAX_LOG_LINES {
                let extra = buf.lines.len() - MAX_LOG_LINES;
                buf.lines.drain(..extra);
            }
        }
    }
}

fn dims(pairs: &[(&str, &str)]) -> Vec<Dimension> {
    pairs
        .iter()
        .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
        .collect()
}

fn datum(
    name: &str,
    value: f64,
    unit: StandardUnit,
    d: Vec<Dimension>,
    at: DateTime,
) -> MetricDatum {
    MetricDatum::builder()
        .metric_name(name)
        .value(value)
        .unit(unit)
        .timestamp(at)
        .set_dimensions(Some(d))
        .build()
}

/// Memory use of `pid` in percent of `memory_mib`.
pub(crate) fn memory_percent(pid: u32, memory_mib: u32) -> Option<f64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let bytes = pages * 4096.0;
    Some(100.0 * bytes / (f64::from(memory_mib.max(1)) * 1024.0 * 1024.0))
}

/// Puts the metrics and writes the access logs gathered since the last call.
pub(crate) async fn publish(
    c: &Clients,
    region: &str,
    report: &mut Report,
    world: &World,
    health: &HashMap<(String, String), (u32, u32)>,
    usage: &BTreeMap<(String, String), (f64, f64)>,
) {
    let now = DateTime::from(SystemTime::now());
    let tg_suffix = |arn: &str| {
        world
            .target_groups
            .get(arn)
            .map_or_else(|| arn.to_owned(), |t| t.arn_suffix.clone())
    };
    let mut elb = Vec::new();
    let mut per_lb: BTreeMap<String, Acc> = BTreeMap::new();
    for ((lb, tg, zone), a) in std::mem::take(&mut report.zones) {
        let tg = tg_suffix(&tg);
        let sets = [
            dims(&[
                ("LoadBalancer", &lb),
                ("TargetGroup", &tg),
                ("AvailabilityZone", &zone),
            ]),
            dims(&[("LoadBalancer", &lb), ("AvailabilityZone", &zone)]),
            dims(&[("LoadBalancer", &lb), ("TargetGroup", &tg)]),
        ];
        for d in sets {
            push_counts(&mut elb, &a, &d, now);
        }
        let total = per_lb.entry(lb).or_default();
        total.requests += a.requests;
        total.t2xx += a.t2xx;
        total.t4xx += a.t4xx;
        total.t5xx += a.t5xx;
        total.elb5xx += a.elb5xx;
        total.rt_sum += a.rt_sum;
        total.rt_count += a.rt_count;
    }
    for (lb, n) in std::mem::take(&mut report.no_target) {
        per_lb.entry(lb).or_default().elb5xx += n;
    }
    for (lb, a) in &per_lb {
        push_counts(&mut elb, a, &dims(&[("LoadBalancer", lb)]), now);
    }
    for ((tg_arn, zone), (healthy, unhealthy)) in health {
        let tg = tg_suffix(tg_arn);
        for l in world
            .listeners
            .iter()
            .filter(|l| l.target_group.as_deref() == Some(tg_arn.as_str()))
        {
            let d = dims(&[
                ("LoadBalancer", &l.lb_arn_suffix),
                ("TargetGroup", &tg),
                ("AvailabilityZone", zone),
            ]);
            elb.push(datum(
                "HealthyHostCount",
                f64::from(*healthy),
                StandardUnit::Count,
                d.clone(),
                now,
            ));
            elb.push(datum(
                "UnHealthyHostCount",
                f64::from(*unhealthy),
                StandardUnit::Count,
                d,
                now,
            ));
        }
    }
    put(c, "AWS/ApplicationELB", elb).await;

    let mut ecs = Vec::new();
    for ((cluster, service), (cpu, mem)) in usage {
        let d = dims(&[("ClusterName", cluster), ("ServiceName", service)]);
        ecs.push(datum(
            "CPUUtilization",
            *cpu,
            StandardUnit::Percent,
            d.clone(),
            now,
        ));
        ecs.push(datum(
            "MemoryUtilization",
            *mem,
            StandardUnit::Percent,
            d,
            now,
        ));
    }
    put(c, "AWS/ECS", ecs).await;

    for buf in report.logs.values_mut() {
        if buf.lines.is_empty() {
            continue;
        }
        let lines = std::mem::take(&mut buf.lines);
        write_log(c, region, buf, &lines).await;
    }
}

fn push_counts(out: &mut Vec<MetricDatum>, a: &Acc, d: &[Dimension], at: DateTime) {
    let counts = [
        ("RequestCount", a.requests),
        ("HTTPCode_Target_2XX_Count", a.t2xx),
        ("HTTPCode_Target_4XX_Count", a.t4xx),
        ("HTTPCode_Target_5XX_Count", a.t5xx),
        ("HTTPCode_ELB_5XX_Count", a.elb5xx),
    ];
    for (name, n) in counts {
        if n > 0 || name == "RequestCount" {
            out.push(datum(name, n as f64, StandardUnit::Count, d.to_vec(), at));
        }
    }
    if a.rt_count > 0 {
        let avg = a.rt_sum.as_secs_f64() / a.rt_count as f64;
        out.push(datum(
            "TargetResponseTime",
            avg,
            StandardUnit::Seconds,
            d.to_vec(),
            at,
        ));
    }
}

async fn put(c: &Clients, namespace: &str, data: Vec<MetricDatum>) {
    for chunk in data.chunks(500) {
        if let Err(e) =
            c.cw.put_metric_data()
                .namespace(namespace)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
        {
            log(format_args!(
                "PutMetricData {namespace}: {}",
                DisplayErrorContext(&e)
            ));
        }
    }
}

/// The S3 key of an access-log object, as AWS names them.
pub(crate) fn log_key(
    prefix: &str,
    account: &str,
    region: &str,
    lb_name: &str,
    lb_id: &str,
    secs: u64,
    n: u64,
) -> String {
    let infra::UtcTime {
        year: y,
        month: m,
        day: d,
        hour: hh,
        minute: mm,
        ..
    } = infra::UtcTime::from_unix(secs);
    let base = format!(
        "AWSLogs/{account}/elasticloadbalancing/{region}/{y:04}/{m:02}/{d:02}/{account}_elasticloadbalancing_{region}_app.{lb_name}.{lb_id}_{y:04}{m:02}{d:02}T{hh:02}{mm:02}Z_127.0.0.1_{n:08x}.log.gz"
    );
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        base
    } else {
        format!("{prefix}/{base}")
    }
}

async fn write_log(c: &Clients, region: &str, buf: &LogBuf, lines: &[String]) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in lines {
        if gz
            .write_all(line.as_bytes())
            .and_then(|()| gz.write_all(b"\n"))
            .is_err()
        {
            return;
        }
    }
    let Ok(body) = gz.finish() else { return };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let key = log_key(
        &buf.prefix,
        &buf.account,
        region,
        &buf.lb_name,
        &buf.lb_id,
        now.as_secs(),
        u64::from(now.subsec_nanos()),
    );
    if let Err(e) =
        c.s3.put_object()
            .bucket(&buf.bucket)
            .key(&key)
            .body(body.into())
            .send()
            .await
    {
        log(format_args!(
            "access log s3://{}/{key}: {}",
            buf.bucket,
            DisplayErrorContext(&e)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_keys_follow_the_aws_layout() {
        // 2026-11-23 14:32:00 UTC
        let key = log_key(
            "/logs/",
            "123456789012",
            "eu-west-1",
            "web",
            "abc",
            1_795_444_320,
            1,
        );
        assert_eq!(
            key,
            "logs/AWSLogs/123456789012/elasticloadbalancing/eu-west-1/2026/11/23/123456789012_elasticloadbalancing_eu-west-1_app.web.abc_20261123T1432Z_127.0.0.1_00000001.log.gz"
        );
        assert!(
            log_key("", "1", "r", "n", "i", 0, 0)
                .starts_with("AWSLogs/1/elasticloadbalancing/r/1970/01/01/")
        );
    }
}
