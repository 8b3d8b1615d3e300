//! The README's example as a user runs it: `examples/readme.rs` is the README's `src/main.rs`
//! word for word (after a line that names the infra crate as a user's project does), built by
//! `cargo test` with the other targets; this test checks it is still the README's and runs it
//! against a moto server of its own, with the environment a user sets. Then it reads the
//! account: one VPC of the stack with a public and a private subnet in each of the default 2 zones.

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

/// The example's binary, beside this test binary (`<target>/debug/deps/it-...`).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(2)
        .unwrap()
        .join("examples")
        .join("readme")
}

#[test]
fn the_example_is_the_readme_word_for_word() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let example = std::fs::read_to_string(dir.join("examples/readme.rs")).unwrap();
    let main = block(&readme, "`src/main.rs`", "rust");
    let (_, code) = example
        .split_once("extern crate infra as stackproof_infra;\n\n")
        .expect("the example names the infra crate first");
    assert_eq!(
        code, main,
        "examples/readme.rs differs from the README's src/main.rs"
    );
    let deps = block(&readme, "`Cargo.toml`:", "toml");
    for dependency in [
        "stackproof-network = ",
        "stackproof-infra = ",
        "aws-config = ",
        "tokio = ",
    ] {
        assert!(deps.contains(dependency), "{dependency} missing:\n{deps}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_example_builds_a_vpc_in_moto() {
    let program = example_binary();
    assert!(
        program.exists(),
        "no {}: `cargo test --workspace` builds it (or `cargo build --workspace --examples`)",
        program.display()
    );
    let moto = MotoServer::start(&sandbox::python_path().unwrap()).unwrap();
    let out = Command::new(&program)
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
        4,
        "a public and a private subnet in each of the default 2 zones"
    );
    let zones: std::collections::BTreeSet<_> = subnets
        .subnets()
        .iter()
        .filter_map(|s| s.availability_zone())
        .collect();
    assert_eq!(zones.len(), 2, "{zones:?}");
}
