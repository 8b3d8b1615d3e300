//! The stack as a product, from the command line, against a sandbox of its own: `init`,
//! `plan --detailed-exitcode`, `status`, and destroy's typed confirmation.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;

use common::{temp_dir, text};

fn xtask(state: &Path, args: &[&str]) -> Output {
    xtask_with_stdin(state, args, "")
}

/// Runs xtask with `input` piped to its stdin (not a terminal).
fn xtask_with_stdin(state: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("STACKPROOF_STATE_DIR", state)
        // The built-in defaults, not the checkout's stack.toml (the seeds' stack).
        .env("STACKPROOF_CONFIG_DIR", state)
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xtask runs");
    // A command that does not read may have exited already: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// Runs xtask on a terminal (a pseudo-terminal from util-linux `script`), typing `typed`.
fn xtask_on_terminal(state: &Path, args: &str, typed: &str) -> Output {
    let command = format!("'{}' {args}", env!("CARGO_BIN_EXE_xtask"));
    let mut child = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("STACKPROOF_STATE_DIR", state)
        // The built-in defaults, not the checkout's stack.toml (the seeds' stack).
        .env("STACKPROOF_CONFIG_DIR", state)
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs (it gives the command a terminal)");
    let _ = child.stdin.take().unwrap().write_all(typed.as_bytes());
    child.wait_with_output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// Deletes the stack's dashboard behind the tool's back, through the AWS SDK.
fn delete_dashboard(state: &Path, name: &str) {
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    let endpoint = saved["endpoint"].as_str().unwrap().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cw = aws_sdk_cloudwatch::Client::new(&sandbox::sdk_config(&endpoint, "eu-west-1"));
        cw.delete_dashboards()
            .dashboard_names(name)
            .send()
            .await
            .unwrap();
    });
}

/// Cuts `zone` of the default stack off as the proof's fault does, and leaves it so.
fn isolate_zone(state: &Path, zone: &str) {
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    let endpoint = saved["endpoint"].as_str().unwrap().to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stack = stack::StackConfig::default().validate().unwrap();
        let cx = infra::Context::builder(
            sandbox::sdk_config(&endpoint, "eu-west-1"),
            stack.name().clone(),
        )
        .build();
        stack.isolate_zone(&cx, zone).await.unwrap();
    });
}

#[test]
fn init_writes_the_commented_defaults_and_never_overwrites_unasked() {
    let dir = temp_dir("init");
    let path = dir.0.join("stack.toml");
    let config = path.to_str().unwrap();

    let out = xtask(&dir.0, &["init", "--config", config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("Wrote {config}")),
        "{}",
        text(&out)
    );
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(written, stack::example_toml());
    // Every key with its default value: the same checked stack as no file at all.
    let parsed = stack::StackConfig::from_toml(&written, config).unwrap();
    assert_eq!(parsed, stack::StackConfig::default());
    assert_eq!(
        format!("{:?}", parsed.validate().unwrap()),
        format!("{:?}", stack::StackConfig::default().validate().unwrap())
    );
    assert!(
        written
            .contains("\n# The VPC's IPv4 CIDR block, /16 to /28.\nvpc-cidr = \"10.0.0.0/16\"\n")
    );

    // An existing file is kept, and the error names it.
    std::fs::write(&path, "name = \"mine\"\n").unwrap();
    let out = xtask(&dir.0, &["init", "--config", config]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{config} exists already; nothing was written. Pass --force"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "name = \"mine\"\n");

    let out = xtask(&dir.0, &["init", "--force", "--config", config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        stack::example_toml()
    );

    // A folder that does not exist: an error naming the path, exit 1.
    let missing = dir.0.join("no-such-dir/stack.toml");
    let out = xtask(&dir.0, &["init", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("no-such-dir/stack.toml"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_usage_with_detailed_exitcode_is_an_error_not_changes() {
    let dir = temp_dir("usage");
    let out = xtask(&dir.0, &["plan", "--detailed-exitcode", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = xtask(&dir.0, &["plan", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A bad configuration is an error too.
    // (Not named stack.toml: the state folder is the test's configuration folder too.)
    let config = dir.0.join("bad.toml");
    std::fs::write(&config, "name = \"Bad Name\"\n").unwrap();
    let out = xtask(
        &dir.0,
        &[
            "plan",
            "--detailed-exitcode",
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Status with no sandbox running: nothing deployed, and no sandbox started for asking.
    let out = xtask(&dir.0, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(json(&out)["state"], "not-deployed");
    assert!(!dir.0.join("sandbox.json").exists());
    // Destroy without --yes and without a terminal: bad usage, before anything starts.
    let out = xtask_with_stdin(&dir.0, &["destroy"], "stackproof\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "stdin is not a terminal; pass --yes to destroy without asking. Nothing was deleted."
        ),
        "{}",
        text(&out)
    );
    assert!(!dir.0.join("sandbox.json").exists());
}

#[test]
fn detailed_exitcode_status_and_typed_destroy_against_the_sandbox() {
    let dir = temp_dir("product");
    let state = dir.0.as_path();
    let out = xtask(state, &["sandbox", "start"]);
    assert!(out.status.success(), "{}", text(&out));

    // Nothing deployed: status says so (exit 3) without writing; plan has changes (exit 2).
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status = json(&out);
    assert_eq!(status["state"], "not-deployed", "{status}");
    assert_eq!(status["calls"]["writes"], 0, "{status}");
    assert!(status["calls"]["total"].as_u64().unwrap() > 0, "{status}");

    let out = xtask(state, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("Plan: 46 to create, 0 to update, 0 to delete."),
        "{}",
        text(&out)
    );
    let out = xtask(state, &["plan", "--detailed-exitcode", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let plan = json(&out);
    assert_eq!(plan["changes"].as_array().unwrap().len(), 46);
    let out = xtask(state, &["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The stack.toml init writes plans exactly what the built-in defaults plan.
    let config = state.join("stack.toml");
    let out = xtask(state, &["init", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = xtask(
        state,
        &["plan", "--json", "--config", config.to_str().unwrap()],
    );
    assert_eq!(json(&out), plan);

    let out = xtask(state, &["deploy", "--yes", "--no-wait"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    // The summary: every change of the plan created, nothing existed before. Not on a
    // terminal: plain lines, no escape codes.
    let to_add = plan["changes"].as_array().unwrap().len();
    assert!(
        shown.contains(&format!(
            "\nApply complete: {to_add} created, 0 updated, 0 replaced, 0 deleted, 0 unchanged, in "
        )),
        "{shown}"
    );
    assert!(!shown.contains('\x1b'), "{shown}");

    // Deployed, no drift.
    let out = xtask(state, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = xtask(state, &["plan", "--detailed-exitcode", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["changes"].as_array().unwrap().len(), 0);
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = json(&out);
    assert_eq!(status["state"], "deployed", "{status}");
    assert_eq!(status["drift"]["changes"], 0, "{status}");
    assert_eq!(status["calls"]["writes"], 0, "{status}");
    assert_eq!(
        status["outputs"]["load_balancer"]["dns_name"],
        "stackproof-alb-1.eu-west-1.elb.amazonaws.com"
    );
    let network = &status["modules"]["network"];
    assert_eq!(network["kinds"]["vpc"], 1, "{status}");
    assert_eq!(network["kinds"]["subnet"], 4, "{status}");
    let vpc = network["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "vpc")
        .unwrap();
    assert_eq!(
        vpc["id"], status["outputs"]["network"]["vpc_id"],
        "{status}"
    );
    let total: u64 = status["modules"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["count"].as_u64().unwrap())
        .sum();
    // Every resource of the default stack (plan counts 46 changes: routes and rules are parts).
    assert_eq!(total, 35, "{status}");
    // A second deploy creates nothing, writes nothing, and every resource status lists is
    // unchanged (routes, rules and associations are parts of them, counted only as changes).
    let out = xtask(state, &["deploy", "--yes", "--no-wait"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains(&format!(
            "\nApply complete: 0 created, 0 updated, 0 replaced, 0 deleted, {total} unchanged, in "
        )),
        "{shown}"
    );
    assert!(shown.contains(" AWS calls (0 writes)"), "{shown}");
    assert!(!shown.contains('\x1b'), "{shown}");
    assert_eq!(
        status["modules"]["observability"]["kinds"]["dashboard"], 1,
        "{status}"
    );
    let out = xtask(state, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains("Stack stackproof in the local sandbox (eu-west-1): deployed, no drift"),
        "{shown}"
    );
    assert!(
        shown.contains("  load balancer http://stackproof-alb-1.eu-west-1.elb.amazonaws.com/"),
        "{shown}"
    );
    assert!(shown.contains(" AWS calls (0 writes)"), "{shown}");

    // A zone a loadtest cut off and never restored (killed before its undo): status shows it,
    // deploy restores it.
    isolate_zone(state, "eu-west-1a");
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let status = json(&out);
    assert_eq!(status["state"], "drifted", "{status}");
    assert_eq!(
        status["isolated_zones"][0]["zone"], "eu-west-1a",
        "{status}"
    );
    assert_eq!(
        status["isolated_zones"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    let out = xtask(state, &["status"]);
    assert!(
        text(&out).contains(
            "Zone eu-west-1a ISOLATED: 2 of its 2 subnets are on the stack's deny-all network ACL"
        ),
        "{}",
        text(&out)
    );
    let out = xtask(state, &["deploy", "--yes", "--no-wait"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(
            "Restored zone eu-west-1a: 2 subnets were on the stack's deny-all network ACL"
        ),
        "{}",
        text(&out)
    );
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = json(&out);
    assert_eq!(status["state"], "deployed", "{status}");
    assert_eq!(
        status["isolated_zones"].as_array().unwrap().len(),
        0,
        "{status}"
    );

    // The dashboard deleted behind the tool's back: drift.
    delete_dashboard(state, "stackproof");
    let out = xtask(state, &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("+ create observability dashboard \"stackproof\""),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("Plan: 1 to create, 0 to update, 0 to delete."),
        "{}",
        text(&out)
    );
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let status = json(&out);
    assert_eq!(status["state"], "drifted", "{status}");
    assert_eq!(status["drift"]["changes"], 1, "{status}");
    assert_eq!(status["drift"]["create"], 1, "{status}");
    assert_eq!(status["calls"]["writes"], 0, "{status}");
    assert!(
        status["modules"]["observability"]["kinds"]
            .get("dashboard")
            .is_none(),
        "{status}"
    );
    let out = xtask(state, &["status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(
            "deployed, DRIFTED: 1 changes pending (1 to create, 0 to update, 0 to delete;"
        ),
        "{}",
        text(&out)
    );

    // Destroy: the right name piped in is not an answer (no terminal); nothing is deleted.
    let out = xtask_with_stdin(state, &["destroy"], "stackproof\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("stdin is not a terminal"),
        "{}",
        text(&out)
    );
    // On a terminal, y and the wrong name cancel; nothing is deleted.
    for wrong in ["y\n", "stackproof-prod\n"] {
        let out = xtask_on_terminal(state, "destroy", wrong);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(1), "{shown}");
        assert!(
            shown.contains("Type the stack name (stackproof) to delete all of this:"),
            "{shown}"
        );
        assert!(
            shown.contains("is not the stack name \"stackproof\"; nothing was deleted"),
            "{shown}"
        );
    }
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(json(&out)["state"], "drifted");

    // The stack's name typed on the terminal destroys it.
    let out = xtask_on_terminal(state, "destroy", "stackproof\n");
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("Destroyed."), "{shown}");
    // Every resource but the dashboard deleted; on a terminal, the block of what was in flight
    // was redrawn (cursor up, clear line).
    assert!(
        shown.contains("Destroy complete: 34 deleted in "),
        "{shown}"
    );
    assert!(shown.contains("\x1b[1A\x1b[2K"), "{shown}");
    let out = xtask(state, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status = json(&out);
    assert_eq!(status["state"], "not-deployed", "{status}");
    assert_eq!(status["modules"].as_object().unwrap().len(), 0, "{status}");
    let out = xtask(state, &["status"]);
    assert!(
        text(&out).contains("Stack stackproof in the local sandbox (eu-west-1): not deployed"),
        "{}",
        text(&out)
    );

    let out = xtask(state, &["sandbox", "stop"]);
    assert!(out.status.success(), "{}", text(&out));
}
