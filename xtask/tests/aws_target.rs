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
    xtask_aws_env(state, endpoint, credentials, args, &[])
}

/// [`xtask_aws`] with `env` set on top (region variables, a config file).
fn xtask_aws_env(
    state: &Path,
    endpoint: &str,
    credentials: bool,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .env("STACKPROOF_STATE_DIR", state)
        // The built-in defaults, not the checkout's stack.toml (the seeds' stack).
        .env("STACKPROOF_CONFIG_DIR", state)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", state.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", state.join("no-credentials"))
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
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
    cmd.envs(env.iter().copied());
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

/// The region comes from `--region`, else stack.toml, else `AWS_REGION`, else the profile, else
/// the built-in default; the first line on stderr says which and why.
#[test]
fn the_region_follows_flag_then_file_then_environment_then_profile() {
    let dir = temp_dir("aws-region");
    let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let endpoint = moto.endpoint().to_owned();
    let plain = dir.0.join("plain.toml");
    std::fs::write(&plain, "name = \"where\"\n").unwrap();
    let pinned = dir.0.join("pinned.toml");
    std::fs::write(&pinned, "name = \"where\"\nregion = \"eu-central-1\"\n").unwrap();
    let profiles = dir.0.join("aws-config");
    std::fs::write(&profiles, "[profile ops]\nregion = sa-east-1\n").unwrap();
    let (plain, pinned, profiles) = (
        plain.to_str().unwrap(),
        pinned.to_str().unwrap(),
        profiles.to_str().unwrap(),
    );
    // (extra arguments, extra environment, the region, where it came from)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case<'_>] = &[
        (
            &["--config", plain],
            &[],
            "eu-west-1",
            "the built-in default",
        ),
        (
            &["--config", plain],
            &[("AWS_REGION", "us-east-2")],
            "us-east-2",
            "AWS_REGION",
        ),
        (
            &["--config", plain, "--profile", "ops"],
            &[("AWS_CONFIG_FILE", profiles)],
            "sa-east-1",
            "profile ops of the AWS config file",
        ),
        (
            &["--config", plain, "--profile", "ops"],
            &[("AWS_CONFIG_FILE", profiles), ("AWS_REGION", "us-east-2")],
            "us-east-2",
            "AWS_REGION",
        ),
        (
            &["--config", pinned],
            &[("AWS_REGION", "us-east-2")],
            "eu-central-1",
            "`region` in ",
        ),
        (
            &["--config", pinned, "--region", "ap-southeast-2"],
            &[("AWS_REGION", "us-east-2")],
            "ap-southeast-2",
            "--region",
        ),
    ];
    for (extra, env, region, from) in cases {
        let mut args = vec!["plan", "--target", "aws"];
        args.extend_from_slice(extra);
        let out = xtask_aws_env(&dir.0, &endpoint, true, &args, env);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?} {env:?}: {shown}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("Region {region} (from {from}")),
            "{args:?} {env:?}: {shown}"
        );
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("stack where in AWS region {region}")),
            "{args:?} {env:?}: {shown}"
        );
    }
}

/// Deploy to "AWS" (moto for the API, Docker's registry on loopback for ECR's registry): the
/// region is printed first, the repository lacks the task definition's tag so deploy builds
/// and pushes the sample-app's image; the next deploy finds it and pushes nothing; a tag the
/// user pushed is never overwritten.
#[test]
fn deploy_pushes_the_image_the_repository_lacks_and_only_then() {
    let dir = temp_dir("aws-image");
    let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let endpoint = moto.endpoint().to_owned();
    let registry =
        sandbox::RegistryServer::start().expect("docker-registry starts (run `cargo xtask setup`)");
    let config = dir.0.join("stack.toml");
    std::fs::write(&config, "name = \"pushed\"\n").unwrap();
    let config = config.to_str().unwrap();
    let env = [("STACKPROOF_ECR_REGISTRY_URL", registry.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let deploy = [
        "deploy",
        "--target",
        "aws",
        "--yes",
        "--no-wait",
        "--config",
        config,
    ];

    let out = xtask_aws_env(&dir.0, &endpoint, true, &deploy, &env);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with("Region eu-west-1 (from the built-in default"),
        "{shown}"
    );
    // moto's repository URI is ACCOUNT.dkr.ecr.REGION.amazonaws.com/pushed/sample-app; the
    // path is kept, the origin is the loopback registry's.
    let repository = format!("{}/pushed/sample-app", registry.url());
    assert!(
        shown.contains(&format!(
            "Image {repository}:latest is missing: building the sample-app's image"
        )),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("Pushed {repository}:latest (sha256:"))
            && shown.contains("): 2 blobs uploaded ("),
        "{shown}"
    );
    let client = image::Registry::new(
        image::Reference::parse(&repository).unwrap(),
        image::Auth::None,
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pushed = runtime
        .block_on(client.manifest_digest("latest"))
        .unwrap()
        .expect("the tag is in the registry");

    // The tag is there: the next deploy leaves it, whoever pushed it.
    let out = xtask_aws_env(&dir.0, &endpoint, true, &deploy, &env);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(&format!(
            "Image {repository}:latest is in the repository ({pushed}); not pushed"
        )),
        "{shown}"
    );
    assert!(!shown.contains("Pushed"), "{shown}");

    let out = xtask_aws_env(
        &dir.0,
        &endpoint,
        true,
        &["destroy", "--target", "aws", "--yes", "--config", config],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// On AWS, az-failover fails a zone of a real account: without --yes and without a terminal
/// to type the stack name on, loadtest stops before anything is read (no credentials needed
/// to see it); runs without a fault do not ask.
#[test]
fn loadtest_on_aws_asks_before_it_fails_a_zone() {
    let dir = temp_dir("aws-loadtest");
    let endpoint = "http://127.0.0.1:9"; // never reached
    let out = xtask_aws(&dir.0, endpoint, false, &["loadtest", "--target", "aws"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("fails an availability zone of the account (az-failover)")
            && shown.contains("pass --yes")
            && shown.contains("Nothing was read or changed"),
        "{shown}"
    );
    assert!(!shown.contains("cannot tell which AWS account"), "{shown}");

    // Without the fault nothing to confirm: it goes on (and stops at the missing credentials).
    let out = xtask_aws(
        &dir.0,
        endpoint,
        false,
        &[
            "loadtest",
            "--target",
            "aws",
            "--scenario",
            "baseline",
            "--scenario",
            "scaling",
        ],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("cannot tell which AWS account"), "{shown}");
    // --yes is the answer for scripts: also past the question.
    let out = xtask_aws(
        &dir.0,
        endpoint,
        false,
        &["loadtest", "--target", "aws", "--yes"],
    );
    assert!(
        text(&out).contains("cannot tell which AWS account"),
        "{}",
        text(&out)
    );
}
