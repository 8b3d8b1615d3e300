//! The README's example, as a user outside this workspace runs it: a project that depends on
//! this crate (and `stackproof-infra` for the context) alone, with the README's `Cargo.toml`
//! dependencies and `src/main.rs`, run with `cargo run` against its own moto server. The test
//! then reads the account: one VPC of the stack with a public and a private subnet per zone.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_ec2::types::Filter;
use sandbox::MotoServer;

/// The fenced block of `lang` that follows the line containing `after` in `text`.
fn block(text: &str, after: &str, lang: &str) -> String {
    let start = text.find(after).expect("the README has the marker line");
    let rest = &text[start..];
    let open = format!("```{lang}\n");
    let body = &rest[rest.find(&open).expect("a fenced block follows") + open.len()..];
    body[..body.find("```").expect("the block is closed")].to_owned()
}

/// A target folder of the user project's own, beside the workspace's (`<target>/readme-demo`):
/// sharing the workspace's would make both rebuild the AWS SDK each time the other builds, as
/// the two resolve different features for it.
fn target_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .unwrap()
            .to_path_buf(),
    };
    target.join("readme-demo")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "compiles the AWS SDK a second time (about 9 minutes on 2 cores); run with --ignored"]
async fn readme_example_builds_a_vpc_from_a_project_outside_the_workspace() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = crate_dir.ancestors().nth(2).unwrap();
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let deps = block(&readme, "`Cargo.toml`:", "toml");
    let main = block(&readme, "`src/main.rs`", "rust");

    // The README's dependencies, with this checkout's crates in place of the published ones.
    let path_of = |name: &str| workspace.join("crates").join(name).display().to_string();
    let mut manifest = String::from(
        "[package]\nname = \"readme-demo\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n",
    );
    let mut replaced = 0;
    for line in deps.lines() {
        let line = match line.split_once(" = \"0.1\"") {
            Some((name, "")) if name.starts_with("stackproof-") => {
                replaced += 1;
                let dir = path_of(name.trim_start_matches("stackproof-"));
                format!("{name} = {{ path = {dir:?} }}")
            }
            _ => line.to_owned(),
        };
        manifest.push_str(&line);
        manifest.push('\n');
    }
    assert_eq!(
        replaced, 2,
        "the README names stackproof-network and stackproof-infra:\n{deps}"
    );
    // A workspace of its own, with this workspace's build settings.
    let workspace_manifest = std::fs::read_to_string(workspace.join("Cargo.toml")).unwrap();
    let profile = &workspace_manifest[workspace_manifest.find("[profile.dev]").unwrap()..];
    manifest.push_str("\n[workspace]\n\n");
    manifest.push_str(profile);

    let project = std::env::temp_dir().join(format!("stackproof-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&project);
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(project.join("src/main.rs"), main).unwrap();
    // The same versions of every dependency as the workspace.
    std::fs::copy(workspace.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();

    let moto = MotoServer::start(&sandbox::python_path().unwrap()).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["run", "--quiet"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_REGION", "eu-west-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README example failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("VPC vpc-"), "{stdout}");

    let sdk = sandbox::sdk_config(moto.endpoint(), "eu-west-1");
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    let of_stack = Filter::builder()
        .name("tag:stackproof:stack")
        .values("demo")
        .build();
    let vpcs = ec2
        .describe_vpcs()
        .filters(of_stack.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "{vpcs:?}");
    let vpc = vpcs.vpcs()[0].vpc_id().unwrap();
    assert!(stdout.contains(&format!("VPC {vpc} across ")), "{stdout}");
    let subnets = ec2
        .describe_subnets()
        .filters(of_stack)
        .send()
        .await
        .unwrap();
    assert_eq!(
        subnets.subnets().len(),
        6,
        "a public and a private subnet in 3 zones"
    );
    let zones: std::collections::BTreeSet<_> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone())
        .collect();
    assert_eq!(zones.len(), 3, "{zones:?}");
    let _ = std::fs::remove_dir_all(&project);
}
