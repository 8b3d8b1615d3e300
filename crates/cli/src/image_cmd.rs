//! `image`: the service's image without Docker. Builds the sample-app as a static
//! binary (or takes `--binary`), assembles the OCI image in memory (`crates/image`) and pushes
//! it to the stack's ECR repository with ECR's authorization token, or to `--registry`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use image::{Architecture, Auth, Image, ImageSpec, Reference, Registry};

use crate::target::{EXIT_USAGE, Exit};
use crate::{StackArgs, Target};

/// Where the program goes in the image: the task definition's health check runs
/// `/sample-app health`.
const PROGRAM_PATH: &str = "/sample-app";

/// `image` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ImageArgs {
    /// A statically linked program to put in the image instead of the sample-app (it must
    /// answer `PROGRAM health` as the container health check does, or turn that off).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    /// The tag to push. The task definition names `latest` unless `[service] image` says
    /// otherwise.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// Push here instead of the stack's ECR repository: `[http://|https://]host[:port]/name`
    /// (no credentials are sent). Needed in the sandbox, whose ECR (moto) stores no images.
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
}

pub(crate) async fn run(stack_args: &StackArgs, args: &ImageArgs) -> anyhow::Result<()> {
    // Every input is checked before anything is built or sent.
    let usage = |e: image::Error| Exit {
        code: EXIT_USAGE,
        message: format!("error: {e}"),
    };
    image::check_tag(&args.tag).map_err(usage)?;
    let explicit = args
        .registry
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(usage)?;
    if explicit.is_none() && stack_args.target == Target::Sandbox {
        return Err(Exit {
            code: EXIT_USAGE,
            message: "error: the sandbox's ECR (moto) stores no images: its data plane runs the sample-app binary itself. Pass --registry URL to push to a registry of your own, or --target aws for the stack's ECR repository".to_owned(),
        }
        .into());
    }
    let stack = crate::deploy::load(stack_args).await?;
    let built = build(&stack, args.binary.as_deref())?;
    let registry = match explicit {
        Some(reference) => Registry::new(reference, Auth::None)?,
        None => {
            let cx = crate::deploy::context(stack_args, &stack).await?;
            let outputs = stack
                .outputs(&cx)
                .await
                .context("reading the deployed stack")?
                .ok_or_else(|| Exit {
                    code: crate::target::EXIT_NOT_DEPLOYED,
                    message: format!(
                        "stack {} is not deployed: run `{} deploy --target aws` first (it creates the repository and pushes the image)",
                        stack.name(),
                        crate::program()
                    ),
                })?;
            ecr_registry(&cx, &outputs.storage.repository_uri).await?
        }
    };
    push(&registry, &built, &args.tag).await
}

/// What deploy does for `--target aws` once the repository exists: when the repository lacks
/// the tag the task definition names, builds the sample-app's image and pushes it; a tag that
/// is there is left alone (it may be the user's own image). Nothing for an image elsewhere.
pub(crate) async fn ensure_pushed(
    stack: &stack::Stack,
    cx: &infra::Context,
    repository_uri: &str,
) -> anyhow::Result<()> {
    let Some(tag) = stack.own_image_tag(repository_uri) else {
        return Ok(());
    };
    let registry = ecr_registry(cx, repository_uri).await?;
    let reference = format!("{}:{tag}", registry.reference());
    if let Some(digest) = registry
        .manifest_digest(&tag)
        .await
        .with_context(|| format!("looking up {reference}"))?
    {
        println!("Image {reference} is in the repository ({digest}); not pushed");
        return Ok(());
    }
    println!("Image {reference} is missing: building the sample-app's image");
    let built = build(stack, None)?;
    push(&registry, &built, &tag).await
}

/// The image of `binary`, or of the sample-app built statically.
fn build(stack: &stack::Stack, binary: Option<&Path>) -> anyhow::Result<Image> {
    let architecture = match stack.cpu_architecture() {
        compute::CpuArchitecture::X86_64 => Architecture::Amd64,
        compute::CpuArchitecture::Arm64 => Architecture::Arm64,
    };
    let path = match binary {
        Some(path) => path.to_owned(),
        None => build_static_sample_app(architecture)?,
    };
    let program = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut spec = ImageSpec::new(program, PROGRAM_PATH, architecture);
    spec.exposed_ports = vec![stack.task_port()];
    let built = Image::build(&spec).map_err(|e| match e {
        image::Error::Invalid { .. } => anyhow::Error::new(Exit {
            code: EXIT_USAGE,
            message: format!("error: {e}"),
        }),
        other => anyhow::Error::new(other),
    })?;
    println!(
        "Image {} for {} ({} bytes compressed)",
        built.manifest.digest,
        architecture.as_oci(),
        built.layers.iter().map(|l| l.data.len()).sum::<usize>()
    );
    Ok(built)
}

async fn push(registry: &Registry, built: &Image, tag: &str) -> anyhow::Result<()> {
    let report = registry
        .push(built, tag)
        .await
        .with_context(|| format!("pushing to {}", registry.reference()))?;
    println!(
        "Pushed {}:{tag} ({}): {} blobs uploaded ({} bytes), {} already there",
        registry.reference(),
        report.manifest_digest,
        report.uploaded.len(),
        report.bytes_uploaded,
        report.present.len()
    );
    Ok(())
}

/// The registry ECR's API stands in front of is replaced by this one when set, keeping the
/// repository's path: a registry of your own for ECR's, as `AWS_ENDPOINT_URL` replaces its API
/// (the tests point it at a loopback registry next to moto, whose ECR stores no images).
pub(crate) const REGISTRY_URL_ENV: &str = "STACKPROOF_ECR_REGISTRY_URL";

/// The stack's ECR repository with a token from `GetAuthorizationToken` (valid 12 hours).
async fn ecr_registry(cx: &infra::Context, repository_uri: &str) -> anyhow::Result<Registry> {
    let reference = match std::env::var(REGISTRY_URL_ENV) {
        Ok(origin) => {
            let path = repository_uri
                .split_once('/')
                .map(|(_, path)| path)
                .with_context(|| format!("repository URI {repository_uri:?} has no path"))?;
            Reference::parse(&format!("{}/{path}", origin.trim_end_matches('/')))
                .with_context(|| format!("{REGISTRY_URL_ENV}={origin:?}"))?
        }
        Err(_) => Reference::parse(repository_uri)?,
    };
    let ecr: aws_sdk_ecr::Client = infra::client!(cx, aws_sdk_ecr);
    let token = ecr
        .get_authorization_token()
        .send()
        .await
        .context("ECR GetAuthorizationToken")?;
    let token = token
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .context("ECR GetAuthorizationToken returned no token")?;
    Ok(Registry::new(reference, Auth::Basic(token.to_owned()))?)
}

/// Builds the sample-app statically linked (glibc's static libraries, `+crt-static`) in a
/// target directory of its own, so the flags never invalidate the workspace's build; returns
/// the binary.
fn build_static_sample_app(architecture: Architecture) -> anyhow::Result<PathBuf> {
    let triple = match (architecture, std::env::consts::ARCH) {
        (Architecture::Amd64, "x86_64") => "x86_64-unknown-linux-gnu",
        (Architecture::Arm64, "aarch64") => "aarch64-unknown-linux-gnu",
        (wanted, host) => bail!(
            "building the sample-app for {} on a {host} machine needs a cross toolchain; build it yourself (statically linked) and pass --binary",
            wanted.as_oci()
        ),
    };
    let Some(root) = crate::home().checkout.clone() else {
        bail!(
            "building the sample-app's image needs the stackproof source checkout, and this {} has none; build your program statically linked and pass --binary",
            crate::program()
        );
    };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("image-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("image: building the sample-app, statically linked for {triple}");
    // An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--package",
            "stackproof-sample-app",
            "--bin",
            "sample-app",
            "--target",
            triple,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(&root)
        .status()
        .context("running cargo build for the static sample-app")?;
    if !status.success() {
        bail!("building the static sample-app failed ({status})");
    }
    Ok(binary_path(&target_dir, triple))
}

fn binary_path(target_dir: &Path, triple: &str) -> PathBuf {
    target_dir.join(triple).join("release").join("sample-app")
}
