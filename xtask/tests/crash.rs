//! One writer per stack, and crash safety, from the command line against a sandbox of its own:
//! the stack's lock (held by another run, `--force-unlock`, released after deploy and
//! destroy), and deploy / destroy killed with SIGKILL at several points: each time the next run
//! converges with no duplicate resource, and destroy leaves nothing tagged with the stack. A
//! loadtest killed while its zone is failed: status reports it, deploy repairs it.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use aws_sdk_ec2::types::Filter;

mod common;

use common::{TempDir, temp_dir, text, xtask};

/// One sandbox at a time: each test runs a whole stack (moto, a data plane, its tasks).
static ONE_SANDBOX: Mutex<()> = Mutex::new(());

const STACK: &str = "stackproof";
const REGION: &str = "eu-west-1";
/// moto's default account, which the sandbox serves.
const ACCOUNT: &str = "123456789012";

/// A state folder with its own sandbox, stopped at the end (then, should that fail, by its
/// recorded pid) and removed.
struct Sandbox(TempDir);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = xtask(&self.0.0, &["sandbox", "stop"]);
    }
}
fn sandbox(name: &str) -> Sandbox {
    sandbox_with(name, &[])
}

/// [`sandbox`] started with `args` added (`--clock fast`).
fn sandbox_with(name: &str, args: &[&str]) -> Sandbox {
    let sandbox = Sandbox(temp_dir(name));
    let out = xtask(&sandbox.0.0, &[&["sandbox", "start"], args].concat());
    assert!(out.status.success(), "{}", text(&out));
    sandbox
}

fn sdk(state: &Path) -> aws_config::SdkConfig {
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    sandbox::sdk_config(saved["endpoint"].as_str().unwrap(), REGION)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn s3(state: &Path) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk(state))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The stack's lock object as JSON, if there is one.
fn lock_object(state: &Path) -> Option<serde_json::Value> {
    runtime().block_on(async {
        let got = s3(state)
            .get_object()
            .bucket(stack::lock::state_bucket_name(ACCOUNT, REGION))
            .key(stack::lock::lock_key(STACK))
            .send()
            .await
            .ok()?;
        let bytes = got.body.collect().await.unwrap().into_bytes();
        Some(serde_json::from_slice(&bytes).unwrap())
    })
}

/// Puts the lock of another run (ana's, on another machine, taken at `started`), creating the
/// state bucket if needed.
fn put_lock(state: &Path, started: u64) {
    runtime().block_on(async {
        let s3 = s3(state);
        let _ = s3
            .create_bucket()
            .bucket(stack::lock::state_bucket_name(ACCOUNT, REGION))
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(REGION.into())
                    .build(),
            )
            .send()
            .await;
        let lock = serde_json::json!({
            "holder": "ana@ci-runner-7", "pid": 4242, "command": "deploy",
            "started": started, "id": "ana-1",
        });
        s3.put_object()
            .bucket(stack::lock::state_bucket_name(ACCOUNT, REGION))
            .key(stack::lock::lock_key(STACK))
            .body(lock.to_string().into_bytes().into())
            .send()
            .await
            .unwrap();
    });
}

#[test]
fn a_held_lock_stops_deploy_until_force_unlock() {
    let _one = ONE_SANDBOX.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = sandbox("lock");
    let state = sandbox.0.0.as_path();

    // Another run (on another machine) holds the lock: five minutes ago.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 300;
    put_lock(state, started);

    for command in [&["deploy", "--yes", "--no-wait"][..], &["destroy", "--yes"]] {
        let out = xtask(state, command);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(4), "{shown}");
        assert!(
            shown.contains(
                "stack stackproof is locked: `deploy` by ana@ci-runner-7 (pid 4242) since "
            ),
            "{shown}"
        );
        assert!(shown.contains(" (5m "), "the lock's age: {shown}");
        assert!(shown.contains("nothing was changed"), "{shown}");
        assert!(shown.contains("lock id ana-1,"), "{shown}");
        assert!(shown.contains("--force-unlock ana-1"), "{shown}");
        assert!(
            !shown.contains("+ create"),
            "no plan under another's lock: {shown}"
        );
    }
    assert_eq!(lock_object(state).unwrap()["holder"], "ana@ci-runner-7");

    // --force-unlock without the id removes nothing and says the id; with another id (a
    // lock someone took since) it removes nothing either.
    let out = xtask(state, &["deploy", "--yes", "--no-wait", "--force-unlock"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("--force-unlock needs the id") && shown.contains("--force-unlock ana-1"),
        "{shown}"
    );
    let out = xtask(
        state,
        &["deploy", "--yes", "--no-wait", "--force-unlock", "bob-2"],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(
        shown.contains("is not bob-2") && shown.contains("nothing was removed"),
        "{shown}"
    );
    assert_eq!(lock_object(state).unwrap()["id"], "ana-1");

    // --force-unlock ID says whose lock it removed and what that risks, then deploys.
    let out = xtask(
        state,
        &["deploy", "--yes", "--no-wait", "--force-unlock", "ana-1"],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("warning: --force-unlock removed the lock of stack stackproof: `deploy` by ana@ci-runner-7 (pid 4242)"),
        "{shown}"
    );
    assert!(
        shown.contains("two writers may now interleave and leave duplicate resources; running deploy again afterwards converges"),
        "{shown}"
    );
    assert_eq!(lock_object(state), None, "deploy released its lock");
    let out = xtask(state, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // loadtest holds the lock too (a deploy meanwhile would undo its fault): under another's
    // lock it proves nothing; its own is in place while it runs, and SIGHUP (the terminal
    // closed) stops it with 130 and releases it.
    put_lock(state, started);
    let short = [
        "loadtest",
        "--scenario",
        "baseline",
        "--warmup",
        "1s",
        "--baseline",
        "30s",
    ];
    let out = xtask(state, &short);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(
        shown.contains("is locked: `deploy` by ana@ci-runner-7"),
        "{shown}"
    );
    assert!(!shown.contains("Proving stack"), "{shown}");
    let out = xtask(
        state,
        &["deploy", "--yes", "--no-wait", "--force-unlock", "ana-1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut loadtest = spawn(state, &short, Stdio::piped());
    let mut lines = BufReader::new(loadtest.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("Proving stack") {
            break;
        }
    }
    assert_eq!(lock_object(state).unwrap()["command"], "loadtest");
    signal(loadtest.id(), "HUP");
    lines.for_each(drop);
    let out = loadtest.wait_with_output().unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(130), "{shown}");
    assert!(shown.contains("interrupted"), "{shown}");
    assert_eq!(lock_object(state), None, "loadtest released its lock");

    // Two writers: a deploy started while a destroy runs (paused with SIGSTOP after its first
    // change, so it surely still holds the lock) changes nothing and names the destroy.
    let mut destroy = spawn(state, &["destroy", "--yes"], Stdio::null());
    let pid = destroy.id().to_string();
    let mut lines = BufReader::new(destroy.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("  done ") {
            break;
        }
    }
    signal(destroy.id(), "STOP");
    let out = xtask(state, &["deploy", "--yes", "--no-wait"]);
    let shown = text(&out);
    signal(destroy.id(), "CONT");
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(
        shown.contains("is locked: `destroy` by ") && shown.contains(&format!("(pid {pid})")),
        "{shown}"
    );
    assert!(!shown.contains("no longer runs on this host"), "{shown}");
    let printed: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(destroy.wait().unwrap().success(), "{printed:?}");
    assert!(printed.iter().any(|l| l == "Destroyed."), "{printed:?}");
    assert_eq!(lock_object(state), None, "destroy released its lock");
    assert_stack_gone(state);

    // Destroy with nothing left still takes and releases the lock.
    let out = xtask(state, &["destroy", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("Nothing tagged with"), "{}", text(&out));
    assert_eq!(lock_object(state), None, "destroy released its lock");

    // SIGTERM (as Ctrl-C) and SIGHUP (the terminal closed) stop a deploy part way: exit 130,
    // and the lock is released.
    for (signal, said) in [
        ("-TERM", "terminated (SIGTERM)"),
        ("-HUP", "hung up (SIGHUP)"),
    ] {
        let mut deploy = spawn(state, &["deploy", "--yes", "--no-wait"], Stdio::piped());
        let pid = deploy.id().to_string();
        let mut lines = BufReader::new(deploy.stdout.take().unwrap()).lines();
        let mut done = 0;
        for line in lines.by_ref() {
            if line.unwrap().starts_with("  done ") {
                done += 1;
                if done == 3 {
                    break;
                }
            }
        }
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        lines.for_each(drop);
        let out = deploy.wait_with_output().unwrap();
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(130), "{signal}: {shown}");
        assert!(
            shown.contains(&format!("{said}: stopped part way; the lock is released")),
            "{shown}"
        );
        assert_eq!(
            lock_object(state),
            None,
            "the deploy stopped by {said} released its lock"
        );
    }
    let out = xtask(state, &["destroy", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_stack_gone(state);
}

/// Starts xtask `args` with `state` as its state folder, stdout piped.
fn spawn(state: &Path, args: &[&str], stderr: Stdio) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("STACKPROOF_STATE_DIR", state)
        // The built-in defaults, not the checkout's stack.toml (the seeds' stack).
        .env("STACKPROOF_CONFIG_DIR", state)
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Starts `args` and SIGKILLs it right after its `k`th progress line (`  done ...`). Returns
/// its pid and the lines it printed. Fails when it ends before printing `k` of them.
fn kill_after(state: &Path, args: &[&str], k: usize) -> (u32, Vec<String>) {
    let mut child = spawn(state, args, Stdio::null());
    let pid = child.id();
    let mut lines = Vec::new();
    let mut done = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let progress = line.starts_with("  done ");
        lines.push(line);
        if progress {
            done += 1;
            if done == k {
                child.kill().unwrap(); // SIGKILL: no cleanup runs.
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        done,
        k,
        "{args:?} ended ({status}) after {done} progress lines, before line {k}:\n{}",
        lines.join("\n")
    );
    (pid, lines)
}

/// The next run fails on the killed run's lock, naming it; `--force-unlock` then runs `args`.
fn rerun_after_kill(state: &Path, args: &[&str], killed: u32, command: &str) -> Output {
    let out = xtask(state, args);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(
        shown.contains(&format!("is locked: `{command}` by ")),
        "{shown}"
    );
    assert!(shown.contains(&format!("(pid {killed})")), "{shown}");
    assert!(
        shown.contains(&format!(
            "Process {killed} no longer runs on this host: that run was killed."
        )),
        "{shown}"
    );
    let id = lock_object(state).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(shown.contains(&format!("--force-unlock {id}")), "{shown}");
    let mut forced = args.to_vec();
    forced.push("--force-unlock");
    forced.push(&id);
    let out = xtask(state, &forced);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lock_object(state), None, "{args:?} released its lock");
    out
}

/// How many of each kind of resource the stack has, by tag (EC2) or in the account (ELBv2 and
/// ECS: the sandbox's moto holds this stack only).
fn census(state: &Path) -> Vec<(&'static str, usize)> {
    let sdk = sdk(state);
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let tagged = Filter::builder()
            .name("tag:stackproof:stack")
            .values(STACK)
            .build();
        let vpcs = ec2.describe_vpcs().filters(tagged.clone()).send().await;
        let subnets = ec2.describe_subnets().filters(tagged.clone()).send().await;
        let igws = ec2
            .describe_internet_gateways()
            .filters(tagged.clone())
            .send()
            .await;
        let nats = ec2
            .describe_nat_gateways()
            .filter(tagged.clone())
            .filter(
                Filter::builder()
                    .name("state")
                    .values("pending")
                    .values("available")
                    .build(),
            )
            .send()
            .await;
        let eips = ec2
            .describe_addresses()
            .filters(tagged.clone())
            .send()
            .await;
        let sgs = ec2
            .describe_security_groups()
            .filters(tagged.clone())
            .send()
            .await;
        let rts = ec2
            .describe_route_tables()
            .filters(tagged.clone())
            .send()
            .await;
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let lbs = elb.describe_load_balancers().send().await.unwrap();
        let tgs = elb.describe_target_groups().send().await.unwrap();
        let ecs = aws_sdk_ecs::Client::new(&sdk);
        let clusters = ecs.list_clusters().send().await.unwrap();
        let mut services = 0;
        let mut active_clusters = 0;
        if !clusters.cluster_arns().is_empty() {
            let described = ecs
                .describe_clusters()
                .set_clusters(Some(clusters.cluster_arns().to_vec()))
                .send()
                .await
                .unwrap();
            for cluster in described.clusters() {
                if cluster.status() != Some("ACTIVE") {
                    continue;
                }
                active_clusters += 1;
                let arns = ecs
                    .list_services()
                    .cluster(cluster.cluster_arn().unwrap())
                    .send()
                    .await
                    .unwrap();
                if arns.service_arns().is_empty() {
                    continue;
                }
                let described = ecs
                    .describe_services()
                    .cluster(cluster.cluster_arn().unwrap())
                    .set_services(Some(arns.service_arns().to_vec()))
                    .send()
                    .await
                    .unwrap();
                services += described
                    .services()
                    .iter()
                    .filter(|s| s.status() == Some("ACTIVE"))
                    .count();
            }
        }
        vec![
            ("vpc", vpcs.unwrap().vpcs().len()),
            ("subnet", subnets.unwrap().subnets().len()),
            ("internet-gateway", igws.unwrap().internet_gateways().len()),
            ("nat-gateway", nats.unwrap().nat_gateways().len()),
            ("elastic-ip", eips.unwrap().addresses().len()),
            ("security-group", sgs.unwrap().security_groups().len()),
            ("route-table", rts.unwrap().route_tables().len()),
            ("load-balancer", lbs.load_balancers().len()),
            ("target-group", tgs.target_groups().len()),
            ("ecs-cluster", active_clusters),
            ("ecs-service", services),
        ]
    })
}

/// The ARNs the Resource Groups Tagging API lists with the stack's tag that are live: without
/// resources AWS keeps visible once deleted (NAT gateways in state `deleted`, ECS clusters,
/// services and task definitions that are `INACTIVE`), which are checked by their describe
/// calls. moto does not check signatures, so the request is sent unsigned, over plain HTTP.
fn tagged_live(state: &Path) -> Vec<String> {
    use std::io::{Read, Write};
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    let endpoint = saved["endpoint"].as_str().unwrap();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut arns = Vec::new();
    let mut token = String::new();
    for _ in 0..20 {
        let body = serde_json::json!({
            "TagFilters": [{"Key": "stackproof:stack", "Values": [STACK]}],
            "PaginationToken": token,
        })
        .to_string();
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             X-Amz-Target: ResourceGroupsTaggingAPI_20170126.GetResources\r\n\
             Content-Type: application/x-amz-json-1.1\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=stackproof/20260101/{REGION}/tagging/aws4_request, SignedHeaders=host, Signature=0\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, json) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{response}");
        let page: serde_json::Value = serde_json::from_str(json).unwrap();
        for mapping in page["ResourceTagMappingList"].as_array().unwrap() {
            arns.push(mapping["ResourceARN"].as_str().unwrap().to_owned());
        }
        token = page["PaginationToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if token.is_empty() {
            break;
        }
    }
    let sdk = sdk(state);
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let ecs = aws_sdk_ecs::Client::new(&sdk);
        let mut live = Vec::new();
        for arn in arns {
            let resource = arn.splitn(6, ':').nth(5).unwrap_or_default();
            let gone = if let Some(id) = resource.strip_prefix("natgateway/") {
                let nat = ec2
                    .describe_nat_gateways()
                    .nat_gateway_ids(id)
                    .send()
                    .await
                    .unwrap();
                nat.nat_gateways()
                    .iter()
                    .all(|n| n.state().map(|s| s.as_str()) == Some("deleted"))
            } else if arn.contains(":ecs:") && resource.starts_with("cluster/") {
                let got = ecs.describe_clusters().clusters(&arn).send().await.unwrap();
                got.clusters()
                    .iter()
                    .all(|c| c.status() == Some("INACTIVE"))
            } else if arn.contains(":ecs:") && resource.starts_with("service/") {
                let cluster = resource.split('/').nth(1).unwrap_or_default();
                let got = ecs
                    .describe_services()
                    .cluster(cluster)
                    .services(&arn)
                    .send()
                    .await
                    .unwrap();
                got.services()
                    .iter()
                    .all(|s| s.status() == Some("INACTIVE"))
            } else if arn.contains(":ecs:") && resource.starts_with("task-definition/") {
                let got = ecs
                    .describe_task_definition()
                    .task_definition(&arn)
                    .send()
                    .await
                    .unwrap();
                got.task_definition()
                    .and_then(|t| t.status())
                    .map(|s| s.as_str())
                    == Some("INACTIVE")
            } else {
                false
            };
            if !gone {
                live.push(arn);
            }
        }
        live.sort();
        live
    })
}

/// The default stack, once each: two zones, a NAT gateway per zone.
const DEPLOYED: [(&str, usize); 11] = [
    ("vpc", 1),
    ("subnet", 4),
    ("internet-gateway", 1),
    ("nat-gateway", 2),
    ("elastic-ip", 2),
    ("security-group", 2),
    ("route-table", 3),
    ("load-balancer", 1),
    ("target-group", 1),
    ("ecs-cluster", 1),
    ("ecs-service", 1),
];

/// What the tagging API lists for the default stack deployed once (moto's coverage: VPC,
/// subnets, route tables, security groups, internet and NAT gateways, the log bucket, the load
/// balancer and target group, the ECS cluster, service and task definition, the log group, the
/// four alarms).
const TAGGED_LIVE: usize = 24;

/// Nothing tagged with the stack remains: status (which reads every module by tag) finds
/// nothing, and neither do the describe calls nor the tagging API.
fn assert_stack_gone(state: &Path) {
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "not-deployed", "{status}");
    let left: Vec<_> = census(state).into_iter().filter(|(_, n)| *n > 0).collect();
    assert!(left.is_empty(), "left after destroy: {left:?}");
    let tagged = tagged_live(state);
    assert!(
        tagged.is_empty(),
        "tagged with the stack after destroy: {tagged:#?}"
    );
}

#[test]
fn deploy_and_destroy_killed_at_any_point_converge_without_duplicates() {
    let _one = ONE_SANDBOX.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = sandbox("crash");
    let state = sandbox.0.0.as_path();

    // Kill points, in progress lines: the default stack deploys in 46 changes and destroys in
    // a few more than its 34 deletes, so these fall in storage and network, the load balancer,
    // compute and observability.
    let deploy_kills = [1, 4, 9, 14, 19, 24, 29, 34, 39, 43];
    let destroy_kills = [1, 4, 8, 12, 16, 20, 24, 28, 31, 34];
    for (k, m) in deploy_kills.into_iter().zip(destroy_kills) {
        let (pid, lines) = kill_after(state, &["deploy", "--yes", "--no-wait"], k);
        assert!(
            lines.iter().any(|l| l.starts_with("Deploying ")),
            "{lines:?}"
        );
        let out = rerun_after_kill(state, &["deploy", "--yes", "--no-wait"], pid, "deploy");
        assert!(text(&out).contains("Outputs:"), "{}", text(&out));
        let out = xtask(state, &["plan", "--detailed-exitcode"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "deploy killed after change {k}, then run again, left changes:\n{}",
            text(&out)
        );
        assert_eq!(
            census(state),
            DEPLOYED,
            "deploy killed after change {k}, then run again"
        );
        // Every kind the tagging API knows, once each: as many live tagged resources as a
        // deploy that was never killed makes.
        let tagged = tagged_live(state);
        assert_eq!(
            tagged.len(),
            TAGGED_LIVE,
            "deploy killed after change {k}, then run again: {tagged:#?}"
        );

        let (pid, _) = kill_after(state, &["destroy", "--yes"], m);
        let out = rerun_after_kill(state, &["destroy", "--yes"], pid, "destroy");
        // Killed after its last delete had gone out, the run may have deleted everything
        // already: then the rerun finds nothing left, which is as good.
        let shown = text(&out);
        assert!(
            shown.contains("Destroyed.") || shown.contains("Nothing tagged with"),
            "{shown}"
        );
        assert_stack_gone(state);
    }
}

/// Sends `signal` (`STOP`, `CONT`) to `pid` with kill(1).
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Two writers at once: deploy A is stopped (SIGSTOP) in the middle of building the network,
/// holding its lock and its plan; deploy B takes the stack with `--force-unlock` and builds all
/// of it; A goes on (SIGCONT) with what it planned before B ran: it makes a second of what it
/// creates next, or fails on what B made first (which of the two depends on whether A's next
/// create had gone out when it was stopped; the network crate's
/// `two_interleaved_writers_leave_duplicates_that_the_next_apply_deletes` makes duplicates of
/// everything deterministically). Either way one more deploy keeps one of each and deletes the
/// rest: no duplicate is left, and destroy leaves nothing.
#[test]
fn two_writers_interleaved_by_force_unlock_converge_on_the_next_deploy() {
    let _one = ONE_SANDBOX.lock().unwrap_or_else(|e| e.into_inner());
    let sandbox = sandbox("writers");
    let state = sandbox.0.0.as_path();
    // A is stopped after one of these changes: the NAT gateways' Elastic IPs and NAT gateways
    // come one after another, so A's stale plan makes the second ones again after B.
    for after in ["elastic-ip \"nat-a\"", "nat-gateway \"nat-a\""] {
        interleave(state, after);
    }
}

fn interleave(state: &Path, after: &str) {
    let mut a = spawn(state, &["deploy", "--yes", "--no-wait"], Stdio::piped());
    let pid = a.id();
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let Some(line) = lines.next() else {
            panic!("deploy A ended before {after}:\n{}", seen.join("\n"));
        };
        let line = line.unwrap();
        let there = line.starts_with("  done ") && line.contains(after);
        seen.push(line);
        if there {
            signal(pid, "STOP");
            break;
        }
    }

    let out = xtask(state, &["deploy", "--yes", "--no-wait"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let id = lock_object(state).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text(&out).contains(&format!("(pid {pid})")),
        "{}",
        text(&out)
    );
    let out = xtask(
        state,
        &["deploy", "--yes", "--no-wait", "--force-unlock", &id],
    );
    assert_eq!(out.status.code(), Some(0), "deploy B: {}", text(&out));

    signal(pid, "CONT");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let a_out = a.wait_with_output().unwrap();
    let status = a_out.status;
    let twice: std::collections::BTreeMap<_, _> = census(state).into_iter().collect();
    let made_twice = twice["elastic-ip"] > 2 || twice["nat-gateway"] > 2;
    eprintln!(
        "A stopped after {after}, then B, then A ({status}): {twice:?}\n{}\n{}",
        rest.join("\n"),
        String::from_utf8_lossy(&a_out.stderr)
    );

    let out = xtask(state, &["deploy", "--yes", "--no-wait"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    if made_twice {
        assert!(
            shown.contains("a duplicate; ") && shown.contains(" is kept ("),
            "the plan deletes the duplicates, saying which one is kept:\n{shown}"
        );
    }
    let out = xtask(state, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        census(state),
        DEPLOYED,
        "A stopped after {after}, B, A ({status}), and one more deploy"
    );
    let tagged = tagged_live(state);
    assert_eq!(tagged.len(), TAGGED_LIVE, "{tagged:#?}");

    let out = xtask(state, &["destroy", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_stack_gone(state);
}

/// A loadtest killed with SIGKILL while its zone is failed cannot undo anything: the AWS FIS
/// experiment that cuts the zone off runs on (FIS would end it when its duration is up) and
/// the lock stays. `status` says so (exit 2, the experiment RUNNING, the zone ISOLATED on
/// FIS's ACLs), deploy names the dead holder and, with `--force-unlock ID`, stops the
/// experiment and restores the zone; then the stack is as deployed.
#[test]
fn an_az_failover_killed_mid_fault_is_reported_by_status_and_repaired_by_deploy() {
    let _one = ONE_SANDBOX.lock().unwrap_or_else(|e| e.into_inner());
    // The fast clock: the service is steady in seconds, the fault comes seconds after.
    let sandbox = sandbox_with("killed-failover", &["--clock", "fast"]);
    let state = sandbox.0.0.as_path();
    let out = xtask(state, &["deploy", "--yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let report = state.join("report");
    let mut loadtest = spawn(
        state,
        &[
            "loadtest",
            "--scenario",
            "az-failover",
            "--rps",
            "20",
            "--before",
            "2s",
            // FIS's own end (the limit and a minute: 66 s on this clock) after deploy's.
            "--fault-max",
            "600s",
            "--out",
            report.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    let mut lines = BufReader::new(loadtest.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let failed = line.contains("az-failover: ") && line.contains(" failed at ");
        seen.push(line);
        if failed {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains(" failed at ")),
        "the fault never started: {seen:#?}"
    );
    signal(loadtest.id(), "KILL");
    loadtest.wait().unwrap();
    drop(lines);

    let out = xtask(state, &["status"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains(" ISOLATED: 2 of its 2 subnets are on AWS FIS's deny-all network ACLs"),
        "{shown}"
    );
    assert!(
        shown.contains("Fault experiment ")
            && shown.contains("(aws:network:disrupt-connectivity) RUNNING on zone ")
            && shown.contains("`cargo xtask deploy` stops it now"),
        "{shown}"
    );
    let lock = lock_object(state).expect("the killed run's lock stays");
    assert_eq!(lock["command"], "loadtest");
    let id = lock["id"].as_str().unwrap();
    assert!(
        shown.contains("Locked: `loadtest` by ")
            && shown.contains("that run was killed")
            && shown.contains(&format!("needs --force-unlock {id}")),
        "{shown}"
    );

    let out = xtask(state, &["deploy", "--yes", "--no-wait"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(
        shown.contains("no longer runs on this host: that run was killed"),
        "{shown}"
    );
    assert!(shown.contains(&format!("--force-unlock {id}")), "{shown}");
    let out = xtask(state, &["deploy", "--yes", "--force-unlock", id]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("Restored zone ")
            && shown.contains(": stopped AWS FIS experiment ")
            && shown.contains("(2 subnets were on FIS's deny-all network ACLs)"),
        "{shown}"
    );
    let out = xtask(state, &["status"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        !shown.contains("ISOLATED")
            && !shown.contains("Fault experiment")
            && !shown.contains("Locked"),
        "{shown}"
    );

    // A stop condition in ALARM keeps a loadtest from starting (exit 1, the alarm named);
    // without stop conditions it runs.
    runtime().block_on(async {
        aws_sdk_cloudwatch::Client::new(&sdk(state))
            .set_alarm_state()
            .alarm_name("stackproof-5xx-rate")
            .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
            .state_reason("set by the test")
            .send()
            .await
            .unwrap();
    });
    let short = [
        "loadtest",
        "--scenario",
        "baseline",
        "--rps",
        "20",
        "--warmup",
        "1s",
        "--baseline",
        "2s",
    ];
    let out = xtask(state, &short);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("Verdict: FAIL (stopped: stop condition alarm stackproof-5xx-rate is in ALARM (set by the test); the run did not start)"),
        "{shown}"
    );
    // Without stop conditions it runs to a verdict (which one is not this test's business).
    let out = xtask(state, &[&short[..], &["--no-stop-conditions"]].concat());
    let shown = text(&out);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{shown}");
    assert!(
        shown.contains("Verdict: ") && !shown.contains("stopped: stop condition"),
        "{shown}"
    );

    // Destroy after a loadtest: the load balancer's access logs are in the bucket, so without
    // force-destroy it stops before the first delete, and with it removes everything.
    let out = xtask(state, &["destroy", "--yes"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("nothing was deleted: destroy would stop part way")
            && shown.contains("is not empty"),
        "{shown}"
    );
    assert_eq!(xtask(state, &["status"]).status.code(), Some(0));
    let config = state.join("stack.toml");
    std::fs::write(&config, "[storage]\nforce-destroy = true\n").unwrap();
    let config = config.to_str().unwrap();
    let out = xtask(state, &["destroy", "--yes", "--config", config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_stack_gone(state);
}
