//! The command line end to end, against a sandbox of its own: start it, deploy, plan, destroy,
//! stop it, as a user would.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod common;

use common::{temp_dir, text, xtask};

/// One `GET /` through the sandbox load balancer at `addr`; the `x-az` header of a 200 answer.
fn get_zone(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: stackproof-alb-1.eu-west-1.elb.amazonaws.com\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    if !answer.starts_with("HTTP/1.1 200") {
        return None;
    }
    answer
        .lines()
        .find_map(|l| l.strip_prefix("x-az: "))
        .map(|z| z.trim().to_owned())
}

/// Whether `pid` runs. A zombie does not count: the daemon outlives `xtask sandbox start`, so
/// whoever adopts it (init, or a CI runner's subreaper) reaps it when it likes.
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Writes one log event into `group` of the running sandbox's moto.
fn write_task_log(state: &std::path::Path, group: &str) {
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    let sdk = sandbox::sdk_config(saved["endpoint"].as_str().unwrap(), "eu-west-1");
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let stream = "app/app/0123456789abcdef";
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            logs.create_log_stream()
                .log_group_name(group)
                .log_stream_name(stream)
                .send()
                .await
                .unwrap();
            logs.put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .log_events(
                    aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(now_ms)
                        .message("listening on 0.0.0.0:8080")
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        });
}

#[test]
fn sandbox_deploy_plan_destroy_stop() {
    let dir = temp_dir("cli");
    let state = dir.0.as_path();

    // The fast clock: the same model of AWS, every duration divided by 10 (tasks start in
    // seconds, not a minute).
    let out = xtask(state, &["sandbox", "start", "--clock", "fast"]);
    assert!(out.status.success(), "{}", text(&out));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    let pid = saved["pid"].as_u64().unwrap();
    assert!(alive(pid));
    assert!(
        saved["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );

    let out = xtask(state, &["deploy", "--yes"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("Plan: 46 to create, 0 to update, 0 to delete."),
        "{shown}"
    );
    assert!(
        shown.contains("done + network vpc \"vpc\" -> vpc-"),
        "{shown}"
    );
    let json_start = shown.find("Outputs:\n").unwrap() + "Outputs:\n".len();
    let json_end = shown[json_start..].find("\n}\n").unwrap() + json_start + 2;
    let outputs: serde_json::Value = serde_json::from_str(&shown[json_start..json_end]).unwrap();
    assert_eq!(
        outputs["network"]["private_subnet_ids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    assert_eq!(
        outputs["load_balancer"]["dns_name"].as_str().unwrap(),
        "stackproof-alb-1.eu-west-1.elb.amazonaws.com"
    );
    // The sandbox serves the load balancer with a node in each zone: real requests reach
    // tasks in both zones through either.
    let node = |zone: &str| {
        shown
            .split(&format!("node in {zone}: "))
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_else(|| panic!("no node in {zone} in: {shown}"))
            .to_owned()
    };
    let local = node("eu-west-1a");
    assert_ne!(local, node("eu-west-1b"), "one node per zone");
    let mut zones = std::collections::BTreeSet::new();
    for _ in 0..60 {
        if let Some(zone) = get_zone(&local) {
            zones.insert(zone);
        }
        if zones.len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(
        zones.into_iter().collect::<Vec<_>>(),
        ["eu-west-1a", "eu-west-1b"]
    );
    // Deploy returned once the service served: both tasks running, a healthy target per zone.
    assert!(
        shown.contains(
            "Service steady: 2/2 tasks running, 2/2 targets healthy (eu-west-1a 1, eu-west-1b 1), after "
        ),
        "{shown}"
    );

    // The availability check passes against the deployed stack, writes its JSON and JUnit XML
    // and publishes its metrics.
    let json_path = state.join("check.json");
    let junit_path = state.join("check.xml");
    let out = xtask(
        state,
        &[
            "check",
            "--duration",
            "3s",
            "--rps",
            "10",
            "--json",
            json_path.to_str().unwrap(),
            "--junit",
            junit_path.to_str().unwrap(),
        ],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("30 requests in "), "{shown}");
    assert!(shown.contains("PASS"), "{shown}");
    assert!(
        shown.contains(
            "Published SuccessPercent, LatencyP99 and RequestCount to stackproof/stackproof."
        ),
        "{shown}"
    );
    let check: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(check["passed"], true, "{check}");
    assert_eq!(check["requests"], 30, "{check}");
    assert_eq!(check["success_percent"], 100.0, "{check}");
    assert_eq!(
        check["url"],
        "http://stackproof-alb-1.eu-west-1.elb.amazonaws.com/"
    );
    let zones = check["zones"].as_object().unwrap();
    assert_eq!(
        zones.keys().collect::<Vec<_>>(),
        ["eu-west-1a", "eu-west-1b"],
        "{check}"
    );
    let junit = std::fs::read_to_string(&junit_path).unwrap();
    assert!(
        junit.contains("<testsuite name=\"stackproof-check\" tests=\"3\" failures=\"0\""),
        "{junit}"
    );
    assert!(!junit.contains("<failure"), "{junit}");

    let out = xtask(state, &["plan"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("No changes: the stack matches its configuration."),
        "{}",
        text(&out)
    );
    let out = xtask(state, &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["changes"].as_array().unwrap().len(), 0);

    // A stack whose tasks cannot start: deploy applies it, then says why the service cannot
    // serve and exits 5 (deployed, not steady) once as many tasks stopped as ECS's circuit
    // breaker tolerates, not at its deadline. --no-wait returns after the apply.
    let nopull = state.join("nopull.toml");
    std::fs::write(
        &nopull,
        "name = \"nopull\"\n[service]\nimage = \"public.ecr.aws/nginx/nginx:1.27\"\n",
    )
    .unwrap();
    let nopull = nopull.to_str().unwrap();
    let out = xtask(state, &["deploy", "--yes", "--config", nopull]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(5), "{shown}");
    assert!(shown.contains("Apply complete: "), "{shown}");
    assert!(
        shown.contains("error: the service cannot become steady: ")
            && shown.contains(
                " tasks stopped before serving (ECS's circuit breaker fails a deployment of 2 at 3): stopped task x"
            )
            && shown.contains(
                "CannotPullContainerError: the sandbox runs only images whose repository ends in sample-app, not public.ecr.aws/nginx/nginx:1.27"
            ),
        "{shown}"
    );
    assert!(!shown.contains("Service steady"), "{shown}");
    let out = xtask(state, &["deploy", "--yes", "--no-wait", "--config", nopull]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(!shown.contains("Waiting for a steady service"), "{shown}");
    let out = xtask(state, &["destroy", "--yes", "--config", nopull]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // A task's log line in the log group, as the awslogs driver writes on AWS (the sandbox's
    // plane writes task output to files): logs are data, so destroy keeps the group.
    write_task_log(state, "/ecs/stackproof");

    // The load balancer's access logs are in the log bucket by now (delivered every 5 minutes
    // of the clock): destroy deletes a bucket with data only with `force-destroy`.
    // Without force-destroy, destroy's preflight finds that bucket before the first delete:
    // it says so once and deletes nothing (all or nothing), so the stack is still whole.
    let out = xtask(state, &["destroy", "--yes"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("is not empty").count(), 1, "{shown}");
    assert!(
        stderr.contains(
            "nothing was deleted: destroy would stop part way: bucket \"stackproof-alb-logs-"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("destroy will refuse: bucket \"stackproof-alb-logs-"),
        "{shown}"
    );
    assert!(
        shown.contains("set `force-destroy = true` in the [storage] table"),
        "{shown}"
    );
    assert!(!shown.contains("done - "), "{shown}");
    let out = xtask(state, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = xtask(state, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let forced = state.join("forced.toml");
    std::fs::write(&forced, "[storage]\nforce-destroy = true\n").unwrap();
    let forced = forced.to_str().unwrap();
    let out = xtask(state, &["destroy", "--yes", "--config", forced]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("Destroyed."), "{shown}");
    // Said in the preflight and again at the end.
    assert!(
        shown.contains("= keep compute log-group \"/ecs/stackproof\""),
        "{shown}"
    );
    assert!(shown.contains(", 1 kept."), "{shown}");
    assert!(
        shown.contains("Kept log-group \"/ecs/stackproof\": it holds logs"),
        "{shown}"
    );
    let out = xtask(state, &["destroy", "--yes", "--config", forced]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "Nothing to destroy in stack stackproof in the local sandbox (eu-west-1); destroy keeps:"
        ),
        "{}",
        text(&out)
    );
    // Kept data is not a deployed stack.
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "not-deployed", "{status}");
    assert_eq!(status["modules"]["compute"]["count"], 1, "{status}");
    // The next deploy would take the group over: everything else is created.
    let out = xtask(state, &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["changes"].as_array().unwrap().len(), 45);

    // force-destroy in [service] deletes it, logs and all.
    std::fs::write(
        state.join("forced.toml"),
        "[storage]\nforce-destroy = true\n[service]\nforce-destroy = true\n",
    )
    .unwrap();
    let out = xtask(state, &["destroy", "--yes", "--config", forced]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("- delete compute log-group \"/ecs/stackproof\""),
        "{}",
        text(&out)
    );
    let out = xtask(state, &["destroy", "--yes", "--config", forced]);
    assert!(
        text(&out).contains(
            "Nothing tagged with stack stackproof in the local sandbox (eu-west-1) exists."
        ),
        "{}",
        text(&out)
    );
    let out = xtask(state, &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every module finds nothing tagged with the stack any more: all of it would be created.
    assert_eq!(plan["changes"].as_array().unwrap().len(), 46);

    let out = xtask(state, &["sandbox", "stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!alive(pid), "the sandbox daemon (pid {pid}) still runs");
    assert!(!state.join("sandbox.json").exists());
    let out = xtask(state, &["sandbox", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn bad_configuration_fails_before_anything_starts() {
    let dir = temp_dir("bad-config");
    let config = dir.0.join("stack.toml");
    std::fs::write(
        &config,
        "name = \"Bad Name\"\n[network]\nvpc-cidr = \"10.0.0.0/12\"\naz-count = 4\n",
    )
    .unwrap();
    let out = xtask(
        &dir.0,
        &["deploy", "--yes", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out);
    assert!(shown.contains("3 configuration problems"), "{shown}");
    assert!(
        shown.contains("network.vpc-cidr = \"10.0.0.0/12\""),
        "{shown}"
    );
    assert!(
        shown.contains("network.az-count = 4: 1 to 3 (eu-west-1 has 3 availability zones)"),
        "{shown}"
    );
    // Validation came first: no sandbox was started.
    assert!(!dir.0.join("sandbox.json").exists());

    std::fs::write(&config, "[network]\nnat-mode = \"single\"\n").unwrap();
    let out = xtask(&dir.0, &["plan", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("unknown field `nat-mode`"),
        "{}",
        text(&out)
    );
}
