//! `loadtest --workers N`: the load from N ECS tasks (see `proof::distributed`), and
//! `loadgen`, what each of those tasks runs.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use loadtest::Stripe;
use proof::distributed::{self, Distributed, Fleet, Outcome, WorkerOptions};

use crate::target::{Deployed, EXIT_FAILED, Exit};

/// Exit code of a distributed run that is invalid: a generator died, failed, did not start or
/// paced late. The load was not delivered as scheduled, so nothing was judged.
pub(crate) const EXIT_INVALID: u8 = 6;

/// What a distributed run needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) workers: u32,
    pub(crate) rps: f64,
    pub(crate) duration: Duration,
    pub(crate) p99: Duration,
    pub(crate) max_error_rate: f64,
    pub(crate) connections: Option<usize>,
    pub(crate) timeout: Option<Duration>,
}

/// Options of `loadgen`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenArgs {
    /// The run's bucket.
    #[arg(long)]
    bucket: String,
    /// The run's folder in the bucket (`loadtest/{run-id}`).
    #[arg(long)]
    prefix: String,
    /// This generator's share: INDEX/OF.
    #[arg(long, value_name = "INDEX/OF")]
    worker: Stripe,
    /// How long to wait for the start object.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = loadtest::parse_duration)]
    wait: Duration,
}

/// `loadgen`: one generator of a distributed run, as its ECS task runs it. AWS credentials,
/// region and endpoint come from the environment (the task role on AWS; the sandbox sets
/// them for its tasks).
pub(crate) async fn loadgen(args: &LoadgenArgs) -> anyhow::Result<()> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
    if sdk.endpoint_url().is_some() {
        s3 = s3.force_path_style(true);
    }
    let s3 = aws_sdk_s3::Client::from_conf(s3.build());
    let (zone, task_arn) = distributed::task_identity()
        .await
        .unwrap_or_else(|| ("unknown".to_owned(), "not-a-task".to_owned()));
    let opts = WorkerOptions {
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        stripe: args.worker,
        wait: args.wait,
        zone,
        task_arn,
    };
    distributed::work(s3, &opts, &|line| eprintln!("loadgen: {line}"))
        .await
        .context("the load generator failed")?;
    Ok(())
}

/// Runs the distributed load against the deployed stack and writes the reports to `out`.
pub(crate) async fn run(deployed: Deployed, request: &Request, out: &Path) -> anyhow::Result<()> {
    let cx = &deployed.cx;
    let outputs = &deployed.outputs;
    let ecs: aws_sdk_ecs::Client = infra::client!(cx, aws_sdk_ecs);
    let s3 = storage::s3_client(cx);
    let registry = outputs
        .storage
        .repository_uri
        .split('/')
        .next()
        .unwrap_or_default();
    let iam: aws_sdk_iam::Client = infra::client!(cx, aws_sdk_iam);
    let role = compute::loadgen::ensure_role(
        &iam,
        cx,
        &outputs.storage.account_id,
        &outputs.storage.log_bucket,
    )
    .await
    .context("making the load generators' task role")?;
    let task = compute::loadgen::LoadgenTask::for_stack(cx, &outputs.compute, registry, &role);
    let task_definition = compute::loadgen::ensure(&ecs, cx, &task)
        .await
        .context("registering the load generators' task definition")?;
    let run_id = format!(
        "run-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let fleet = Fleet {
        cluster: outputs.compute.cluster_name.clone(),
        task_definition,
        container: compute::loadgen::CONTAINER.to_owned(),
        subnets: outputs.network.private_subnet_ids.clone(),
        security_groups: vec![outputs.network.task_security_group_id.clone()],
        bucket: outputs.storage.log_bucket.clone(),
        prefix: format!("loadtest/{run_id}"),
    };
    let config = schedule(&deployed, request);
    let launch_timeout = distributed::launch_timeout(deployed.clock, deployed.launch);
    let run = Distributed::new(request.workers, config, launch_timeout);
    println!(
        "Distributed load on stack {}: {} generators x {:.0} requests/s for {:?} at {} ({}, {}); run {}",
        outputs.stack,
        request.workers,
        request.rps / f64::from(request.workers),
        request.duration,
        deployed.target.url,
        deployed.target.kind,
        deployed.clock,
        fleet.prefix
    );
    let outcome = distributed::coordinate(ecs, s3, &fleet, &run, &|p| {
        println!("  {}", p.line());
    })
    .await
    .context("the distributed run failed")?;
    write_reports(&outcome, out)?;
    verdict(&outcome, &run.config.slo)
}

/// The whole schedule: a constant `rps` for `duration` at the stack's address, with the
/// proof's connection and timeout defaults split over the generators.
fn schedule(deployed: &Deployed, r: &Request) -> loadtest::Config {
    let target = &deployed.target;
    // A request timeout of the load balancer's 10 s connect timeout + 5 s (AWS time), as the
    // proof's; connections: one timeout's worth of requests at the rate, 256 to 8000, shared.
    let timeout = r
        .timeout
        .unwrap_or_else(|| deployed.clock.wall(Duration::from_secs(15)));
    let total = r
        .connections
        .unwrap_or_else(|| ((r.rps * timeout.as_secs_f64()).ceil() as usize).clamp(256, 8000));
    loadtest::Config {
        url: target.url.clone(),
        rate: r.rps,
        duration: r.duration.as_secs_f64(),
        connections: total.div_ceil(r.workers as usize).max(16),
        timeout: timeout.as_secs_f64(),
        dns_server: target.dns_server.map(|a| a.to_string()),
        resolve: target
            .connect_to
            .iter()
            .map(|c| format!("{}:{}:{}", c.host, c.port, c.addr.ip()))
            .collect(),
        slo: loadtest::Slo {
            p99_ms: Some(r.p99.as_secs_f64() * 1000.0),
            max_error_rate: Some(r.max_error_rate),
            ..loadtest::Slo::default()
        },
        ..loadtest::Config::default()
    }
}

fn write_reports(outcome: &Outcome, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let run = out.join("distributed.json");
    let json = serde_json::to_string_pretty(outcome).context("encoding the outcome")?;
    std::fs::write(&run, json).with_context(|| format!("writing {}", run.display()))?;
    if let Some(report) = &outcome.report {
        println!("\n{}", report.summary());
        let path = out.join("report.json");
        std::fs::write(&path, report.to_json())
            .with_context(|| format!("writing {}", path.display()))?;
        let hlog = out.join("latency.hlog");
        let mut file =
            std::fs::File::create(&hlog).with_context(|| format!("writing {}", hlog.display()))?;
        report
            .write_interval_log(&mut file)
            .with_context(|| format!("writing {}", hlog.display()))?;
        // Each generator's own log too: `loadtest --merge` adds them to the same numbers.
        for w in &outcome.workers {
            let Some(r) = &w.report else { continue };
            let path = out.join(format!("worker-{}.hlog", w.index));
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            r.write_interval_log(&mut file)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        println!(
            "Report: {} (merged, the loadtest schema), {} (and worker-N.hlog, each generator's) and {}",
            path.display(),
            hlog.display(),
            run.display()
        );
    } else {
        println!("Report: {}", run.display());
    }
    println!("Generators:\n{}", outcome.summary());
    Ok(())
}

fn verdict(outcome: &Outcome, slo: &loadtest::Slo) -> anyhow::Result<()> {
    match outcome.verdict(slo) {
        None => Err(Exit {
            code: EXIT_INVALID,
            message: format!(
                "Verdict: INVALID, the load was not delivered as scheduled, so the system was not judged:\n  {}",
                outcome.invalid.join("\n  ")
            ),
        }
        .into()),
        Some(v) if v.passed => {
            println!("Verdict: {v}");
            Ok(())
        }
        Some(v) => Err(Exit {
            code: EXIT_FAILED,
            message: format!("Verdict: {v}"),
        }
        .into()),
    }
}
