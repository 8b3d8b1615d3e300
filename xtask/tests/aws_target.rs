//! `--target aws` guard rails, with moto standing in for AWS through `AWS_ENDPOINT_URL`: the
//! run names the account, identity and region first; it asks before changing anything; it
//! stops early and clearly without credentials; and it never prints a credential.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{temp_dir, text};

const KEY_ID: &str = "AKIAGUARDRAILTESTKEY";
const SECRET: &str = "guard-rail-test-secret-must-never-be-printed";

/// Runs xtask against "AWS" at `endpoint`, with credentials only when `credentials` is true.
/// No profile, no shared files, no instance metadata: nothing but what this sets.
fn xtask_aws(state: &Path, endpoint: &str, credentials: bool, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .env("STACKPROOF_STATE_DIR", state)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", state.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", state.join("no-credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if credentials {
        cmd.env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET);
    } else {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY");
    }
    cmd.output().expect("xtask runs")
}

#[test]
fn aws_target_names_the_account_asks_first_and_never_prints_credentials() {
    let dir = temp_dir("aws-target");
    let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let endpoint = moto.endpoint().to_owned();
    let config = dir.0.join("stack.toml");
    std::fs::write(&config, "name = \"guarded\"\n").unwrap();
    let config = config.to_str().unwrap();

    // plan names who and where before the plan, and changes nothing.
    let out = xtask_aws(
        &dir.0,
        &endpoint,
        true,
        &["plan", "--target", "aws", "--config", config],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AWS account 123456789012 as arn:aws:"),
        "{shown}"
    );
    assert!(stderr.contains("region eu-west-1"), "{shown}");
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        plan.contains("stack guarded in AWS region eu-west-1"),
        "{shown}"
    );
    assert!(plan.contains("to create"), "{shown}");

    // deploy without --yes and without a terminal refuses before any change...
    let out = xtask_aws(
        &dir.0,
        &endpoint,
        true,
        &["deploy", "--target", "aws", "--config", config],
    );
    let refused = text(&out);
    assert_eq!(out.status.code(), Some(1), "{refused}");
    assert!(
        refused.contains("no terminal to ask on; pass --yes to proceed without asking"),
        "{refused}"
    );
    assert!(refused.contains("AWS account 123456789012"), "{refused}");
    // ... so the plan is still the whole stack, and the lock was released (plan exits 2, not 4).
    let out = xtask_aws(
        &dir.0,
        &endpoint,
        true,
        &[
            "plan",
            "--target",
            "aws",
            "--config",
            config,
            "--detailed-exitcode",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("to create"))
            .collect::<Vec<_>>(),
        plan.lines()
            .filter(|l| l.contains("to create"))
            .collect::<Vec<_>>()
    );

    // Without credentials: a clear stop, before anything is read.
    let out = xtask_aws(
        &dir.0,
        &endpoint,
        false,
        &["plan", "--target", "aws", "--config", config],
    );
    let none = text(&out);
    assert_eq!(out.status.code(), Some(1), "{none}");
    assert!(
        none.contains("cannot tell which AWS account this would change"),
        "{none}"
    );
    assert!(none.contains("leave out --target aws"), "{none}");

    // Never a credential in anything printed.
    for shown in [&shown, &refused, &none] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(KEY_ID), "{shown}");
    }
}
