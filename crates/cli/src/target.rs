//! The deployed stack a load command works on: its configuration, a context, its outputs, and
//! where its load balancer answers.

use std::fmt;

use anyhow::Context as _;
use infra::Context;
use stack::{Stack, StackOutputs};

use crate::{StackArgs, Target};

/// An error that sets the process's exit code (see `main`).
#[derive(Debug)]
pub(crate) struct Exit {
    /// The exit code.
    pub(crate) code: u8,
    /// What to print.
    pub(crate) message: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Exit code of `loadtest` and `check` when the verdict is FAIL.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit code when there is nothing to test: no deployed stack, or its address is unknown.
pub(crate) const EXIT_NOT_DEPLOYED: u8 = 3;
/// Exit code of `plan --detailed-exitcode` with changes pending, and of `status` when the stack
/// drifted or is partly deployed (as `terraform plan -detailed-exitcode`).
pub(crate) const EXIT_CHANGES: u8 = 2;
/// Exit code of `deploy` and `destroy` when another run holds the stack's lock.
pub(crate) const EXIT_LOCKED: u8 = 4;
/// Exit code of `deploy` when the stack is deployed but its service did not become steady
/// (tasks running, targets healthy in every zone) in time, or cannot (tasks keep stopping).
pub(crate) const EXIT_NOT_STEADY: u8 = 5;
/// Exit code of `deploy` and `destroy` stopped by Ctrl-C or SIGTERM (the lock is released).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;
/// Exit code of bad usage (clap's own).
pub(crate) const EXIT_USAGE: u8 = 2;

/// A stack that is deployed, with what it takes to send it load.
pub(crate) struct Deployed {
    pub(crate) stack: Stack,
    pub(crate) cx: Context,
    pub(crate) outputs: StackOutputs,
    pub(crate) target: proof::Target,
    /// The clock the stack runs on: the sandbox's, or AWS's.
    pub(crate) clock: sandbox::Clock,
    /// The Fargate launch latency the sandbox draws from (AWS's typical range on AWS).
    pub(crate) launch: sandbox::LaunchLatency,
}

/// Loads the stack of `args`, checks it is deployed and finds its load balancer's address:
/// `url` if given, else `http://{dns}/`; in the sandbox the DNS name is mapped to the loopback
/// address the data plane serves it on.
pub(crate) async fn deployed(args: &StackArgs, url: Option<&str>) -> anyhow::Result<Deployed> {
    let stack = crate::deploy::load(args).await?;
    let cx = crate::deploy::context(args, &stack).await?;
    let outputs = stack
        .outputs(&cx)
        .await
        .context("reading the deployed stack")?
        .ok_or_else(|| Exit {
            code: EXIT_NOT_DEPLOYED,
            message: format!(
                "stack {} is not deployed ({}): run `{} deploy` first",
                stack.name(),
                match args.target {
                    Target::Sandbox => "local sandbox",
                    Target::Aws => "AWS",
                },
                crate::program()
            ),
        })?;
    let dns = outputs.load_balancer.dns_name.clone();
    let mut url = url.map_or_else(|| format!("http://{dns}/"), str::to_owned);
    let mut dns_server = None;
    let mut nodes = Vec::new();
    let mut clock = sandbox::Clock::AWS;
    let mut launch = sandbox::LaunchLatency::default();
    let kind = match args.target {
        Target::Sandbox => {
            let dir = crate::state_dir();
            let mut found = None;
            // The data plane starts serving a new listener within a reconciliation or two.
            for _ in 0..50 {
                found = sandbox::daemon::endpoint_for(&dir, &dns, 80);
                if found.is_some() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            let sandbox::daemon::SandboxEndpoint {
                endpoint,
                dns: server,
                clock: c,
                launch: l,
            } = found.ok_or_else(|| Exit {
                code: EXIT_NOT_DEPLOYED,
                message: format!(
                    "the sandbox does not serve {dns}:80 (see `{program} sandbox status`)",
                    program = crate::program()
                ),
            })?;
            // The nodes listen on the listener's port when they can (root), else on another
            // one they share: the URL names it.
            let port = endpoint.local_addr.port();
            if port != 80 && url == format!("http://{dns}/") {
                url = format!("http://{dns}:{port}/");
            }
            dns_server = server;
            nodes = endpoint
                .nodes
                .iter()
                .map(|n| (n.addr, n.zone.clone()))
                .collect();
            clock = c;
            launch = l;
            "sandbox"
        }
        Target::Aws => "aws",
    };
    Ok(Deployed {
        stack,
        cx,
        outputs,
        target: proof::Target {
            url,
            connect_to: Vec::new(),
            dns_server,
            nodes,
            kind: kind.to_owned(),
        },
        clock,
        launch,
    })
}
