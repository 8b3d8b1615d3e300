//! `plan | deploy | destroy`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use infra::{Context, Plan, Progress};
use stack::lock::{self, LockError, LockStore};
use stack::{Stack, StackConfig};

use crate::progress::{ApplySummary, Live};
use crate::target::{
    EXIT_CHANGES, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_NOT_STEADY, EXIT_USAGE, Exit,
};
use crate::{StackArgs, Target};

pub(crate) async fn load(args: &StackArgs) -> anyhow::Result<Stack> {
    let default = crate::config_root().join("stack.toml");
    let (mut config, file) = match &args.config {
        Some(path) => (StackConfig::load(path)?, path.display().to_string()),
        None if default.exists() => (StackConfig::load(&default)?, "stack.toml".to_owned()),
        None => (StackConfig::default(), String::new()),
    };
    let (region, from) = region(args, config.region.as_deref(), &file).await;
    if args.target == Target::Aws {
        // Before anything else on AWS: where this acts, and why there.
        eprintln!("Region {region} (from {from})");
    }
    config.region = Some(region);
    Ok(config.validate()?)
}

/// The region a command acts in, and where it came from: `--region`, else the configuration's
/// `region`, else (on AWS) the SDK's environment and profile, else the built-in default. The
/// instance metadata service is not asked: off EC2 its lookup is a wait, and on EC2
/// `AWS_REGION` says the same.
async fn region(args: &StackArgs, configured: Option<&str>, file: &str) -> (String, String) {
    if let Some(r) = &args.region {
        return (r.clone(), "--region".to_owned());
    }
    if let Some(r) = configured {
        return (r.to_owned(), format!("`region` in {file}"));
    }
    if args.target == Target::Aws {
        for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if let Ok(r) = std::env::var(var)
                && !r.trim().is_empty()
            {
                return (r.trim().to_owned(), var.to_owned());
            }
        }
        let profile = args
            .profile
            .clone()
            .or_else(|| std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()))
            .unwrap_or_else(|| "default".to_owned());
        use aws_config::meta::region::ProvideRegion as _;
        let from_profile = aws_config::profile::ProfileFileRegionProvider::builder()
            .profile_name(&profile)
            .build()
            .region()
            .await;
        if let Some(r) = from_profile {
            return (
                r.to_string(),
                format!("profile {profile} of the AWS config file"),
            );
        }
    }
    (
        stack::DEFAULT_REGION.to_owned(),
        "the built-in default; set --region, `region` in stack.toml or AWS_REGION".to_owned(),
    )
}

/// The context of a command that changes nothing: what it would print of progress goes to
/// stdout as lines.
pub(crate) async fn context(args: &StackArgs, stack: &Stack) -> anyhow::Result<Context> {
    context_with(args, stack, Arc::new(Live::stdout())).await
}

/// The context for `stack` on the target `args` names, reporting progress to `progress`.
async fn context_with(
    args: &StackArgs,
    stack: &Stack,
    progress: Arc<dyn Progress>,
) -> anyhow::Result<Context> {
    let (sdk, account) = match args.target {
        Target::Sandbox => {
            ensure_sample_app()?;
            let running = crate::sandbox_cmd::ensure_in(
                0,
                stack.region(),
                &crate::sandbox_cmd::ModelArgs::default(),
            )?;
            let sdk = sandbox::sdk_config(&running.endpoint, stack.region());
            // Read once here for every module and the lock; if moto does not answer, the
            // first call that needs it says so.
            let account = aws_sdk_sts::Client::new(&sdk)
                .get_caller_identity()
                .send()
                .await
                .ok()
                .and_then(|me| me.account().map(str::to_owned));
            (sdk, account)
        }
        Target::Aws => {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(stack.region().to_owned()));
            if let Some(profile) = &args.profile {
                loader = loader.profile_name(profile);
            }
            let sdk = loader.load().await;
            let account = announce_identity(&sdk, stack.region()).await?;
            (sdk, Some(account))
        }
    };
    let mut builder = Context::builder(sdk, stack.name().clone())
        .user_tags(stack.tags().clone())
        .progress(progress);
    if let Some(account) = account {
        builder = builder.account(account);
    }
    Ok(builder.build())
}

/// On AWS, says on stderr (stdout may be JSON) which account, identity and region the run
/// acts in, before anything is read or changed; without usable credentials it stops here with
/// what to do. Prints no credential: the account id and the identity's ARN only. Returns the
/// account, which every module and the lock then use without asking again.
async fn announce_identity(sdk: &aws_config::SdkConfig, region: &str) -> anyhow::Result<String> {
    let me = aws_sdk_sts::Client::new(sdk)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot tell which AWS account this would change (STS GetCallerIdentity: {}). Configure credentials (--profile or AWS_PROFILE, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance or SSO role), or leave out --target aws to use the local sandbox. Nothing was read or changed.",
                aws_sdk_sts::error::DisplayErrorContext(&e)
            )
        })?;
    eprintln!(
        "AWS account {} as {}, region {region}",
        me.account().unwrap_or("(unknown)"),
        me.arn().unwrap_or("(unknown identity)")
    );
    me.account().map(str::to_owned).ok_or_else(|| {
        anyhow::anyhow!(
            "STS GetCallerIdentity answered without an account id; nothing was read or changed"
        )
    })
}

/// Builds the sample-app binary the sandbox runs as the default image, unless it exists.
fn ensure_sample_app() -> anyhow::Result<()> {
    let path = sandbox::daemon::sample_app_path();
    if path.exists() || std::env::var_os("STACKPROOF_SAMPLE_APP").is_some() {
        return Ok(());
    }
    let Some(checkout) = &crate::home().checkout else {
        bail!(
            "the sandbox runs the sample-app as the service's program, and there is none at {}: `cargo install --locked --path crates/cli` installs it beside stackproof (as stackproof-sample-app); or set STACKPROOF_SAMPLE_APP to a sample-app binary",
            path.display()
        );
    };
    eprintln!("sandbox: building the sample-app (the default image's program)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .current_dir(checkout)
        .args([
            "build",
            "--package",
            "stackproof-sample-app",
            "--bin",
            "sample-app",
        ])
        .status()
        .context("running cargo build for the sample-app")?;
    if !status.success() {
        bail!("building the sample-app failed ({status})");
    }
    Ok(())
}

/// Prints where the sandbox serves the load balancer: one node per zone on loopback, and the
/// sandbox's DNS server, which answers for its name with those nodes (the system's resolver
/// does not know it). Returns the data plane's clock and launch latency when it serves it.
async fn print_sandbox_address(dns_name: &str) -> Option<Timing> {
    let dir = crate::state_dir();
    for _ in 0..50 {
        if let Some(sandbox::daemon::SandboxEndpoint {
            endpoint: e,
            dns,
            clock,
            launch,
        }) = sandbox::daemon::endpoint_for(&dir, dns_name, 80)
        {
            let port = e.local_addr.port();
            let url = if port == 80 {
                format!("http://{dns_name}/")
            } else {
                format!("http://{dns_name}:{port}/")
            };
            println!("Load balancer: {url}");
            for n in &e.nodes {
                println!("  node in {}: {}", n.zone, n.addr);
            }
            if let Some(dns) = dns {
                println!(
                    "  the sandbox's DNS server {dns} answers for {dns_name} (TTL as AWS's, on the {clock}); try: dig @{} -p {} {dns_name}, or curl --connect-to {dns_name}:{port}:{} {url}",
                    dns.ip(),
                    dns.port(),
                    e.local_addr
                );
            }
            // The data plane's address plan: a zone's nodes and tasks share `127.0.{z+1}.`.
            let address_zones = e
                .nodes
                .iter()
                .filter_map(|n| {
                    let ip = n.addr.ip().to_string();
                    let prefix = &ip[..=ip.rfind('.')?];
                    Some((prefix.to_owned(), n.zone.clone()))
                })
                .collect();
            return Some(Timing {
                clock,
                launch,
                address_zones,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    println!(
        "Load balancer: http://{dns_name}/ (the sandbox has not started serving it yet; `{program} sandbox status` shows it)",
        program = crate::program()
    );
    None
}

fn where_(args: &StackArgs, stack: &Stack) -> String {
    match args.target {
        Target::Sandbox => format!(
            "stack {} in the local sandbox ({})",
            stack.name(),
            stack.region()
        ),
        Target::Aws => format!(
            "stack {} in AWS region {}{}",
            stack.name(),
            stack.region(),
            args.profile
                .as_ref()
                .map(|p| format!(" (profile {p})"))
                .unwrap_or_default()
        ),
    }
}

/// Reads one line from stdin on a thread of its own, so that Ctrl-C at a prompt still ends
/// the run (and releases the stack's lock) while the read waits; the thread dies with the
/// process.
pub(crate) async fn read_answer() -> anyhow::Result<String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut answer = String::new();
        let read = std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map(|_| answer);
        let _ = tx.send(read);
    });
    Ok(rx.await.context("reading the answer")??)
}

async fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question}: no terminal to ask on; pass --yes to proceed without asking");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let answer = read_answer().await?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Checks, before anything else, that destroy can ask: without `--yes` it needs a terminal.
/// Input piped to stdin is never taken as the answer (a script must say `--yes`).
fn check_can_ask(yes: bool) -> anyhow::Result<()> {
    if yes || std::io::stdin().is_terminal() {
        return Ok(());
    }
    Err(Exit {
        code: EXIT_USAGE,
        message: "error: destroy asks you to type the stack name, but stdin is not a terminal; \
                  pass --yes to destroy without asking. Nothing was deleted."
            .to_owned(),
    }
    .into())
}

/// Asks on the terminal for the stack name; anything else cancels.
async fn confirm_name(stack: &str) -> anyhow::Result<()> {
    print!("Type the stack name ({stack}) to delete all of this: ");
    std::io::stdout().flush()?;
    let answer = read_answer().await.context("reading the confirmation")?;
    typed_name_matches(&answer, stack)
}

/// Whether `answer` (a line read from the terminal) is the stack name.
fn typed_name_matches(answer: &str, stack: &str) -> anyhow::Result<()> {
    let typed = answer.trim();
    if typed == stack {
        return Ok(());
    }
    bail!("cancelled: {typed:?} is not the stack name {stack:?}; nothing was deleted")
}

pub(crate) fn report_calls(args: &StackArgs, cx: &Context, started: Instant) {
    let calls = cx.calls().snapshot();
    println!(
        "{:.2}s, {} AWS calls ({} writes)",
        started.elapsed().as_secs_f64(),
        calls.total(),
        calls.writes()
    );
    if args.verbose {
        print!("{calls}");
    }
}

pub(crate) async fn plan(
    args: &StackArgs,
    json: bool,
    detailed_exitcode: bool,
) -> anyhow::Result<()> {
    let stack = load(args).await?;
    let cx = context(args, &stack).await?;
    let started = Instant::now();
    let plan = stack.plan(&cx).await.context("planning")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!("Plan for {}:\n{plan}", where_(args, &stack));
        report_calls(args, &cx, started);
    }
    if detailed_exitcode && !plan.is_empty() {
        return Err(Exit {
            code: EXIT_CHANGES,
            message: String::new(),
        }
        .into());
    }
    Ok(())
}

/// Takes the stack's lock for `command` (after `--force-unlock ID` removed a stale one).
/// Another run's lock is exit 4 with what to do.
pub(crate) async fn acquire(
    cx: &Context,
    command: &str,
    force_unlock: Option<&str>,
) -> anyhow::Result<lock::HeldLock> {
    // The lock's calls go through a context of their own: the stack's counts stay its own.
    let mut lock_cx = Context::builder(cx.sdk_config().clone(), cx.stack().clone());
    if let Some(account) = cx.account() {
        lock_cx = lock_cx.account(account);
    }
    let lock_cx = lock_cx.build();
    let store = LockStore::new(&lock_cx)
        .await
        .context("reading the stack's lock")?;
    let stack = cx.stack();
    match force_unlock {
        // `--force-unlock` without the id: say which lock there is and change nothing.
        Some("") => {
            let there = store.read().await.context("reading the stack's lock")?;
            return Err(Exit {
                code: EXIT_USAGE,
                message: match there {
                    Some(info) => format!(
                        "error: --force-unlock needs the id of the lock to remove, so that a lock another run took since is never removed: the lock of stack {stack} is {info} ({} ago); to remove it: --force-unlock {}",
                        lock::human(info.age(std::time::SystemTime::now())),
                        info.id
                    ),
                    None => format!(
                        "error: --force-unlock needs the id of the lock to remove (printed when the lock was found); stack {stack} is not locked now"
                    ),
                },
            }
            .into());
        }
        Some(id) => match store.force_unlock(id).await {
            Ok(Some(info)) => eprintln!(
                "warning: --force-unlock removed the lock of stack {stack}: {info} ({} ago). If that run is still going, two writers may now interleave and leave duplicate resources; running deploy again afterwards converges (it finds resources by their tags).",
                lock::human(info.age(std::time::SystemTime::now()))
            ),
            Ok(None) => eprintln!("--force-unlock: stack {stack} was not locked"),
            Err(e @ LockError::NotThatLock { .. }) => {
                return Err(Exit {
                    code: EXIT_LOCKED,
                    message: format!("error: --force-unlock {id}: {e}"),
                }
                .into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("--force-unlock")),
        },
        None => {}
    }
    match store.acquire(command).await {
        Ok(held) => Ok(held),
        Err(e @ LockError::Held { .. }) => {
            let (gone, id) = match &e {
                LockError::Held { info, .. } => (
                    if info.holder_is_gone_from_this_host() {
                        format!(
                            " Process {} no longer runs on this host: that run was killed.",
                            info.pid
                        )
                    } else {
                        String::new()
                    },
                    info.id.clone(),
                ),
                _ => (String::new(), String::new()),
            };
            Err(Exit {
                code: EXIT_LOCKED,
                message: format!(
                    "error: {e}. Another run (deploy, destroy or loadtest) of this stack holds it; nothing was changed.{gone} If that run is no longer running (killed, machine lost), run the command again with --force-unlock {id}: if it is in fact still running, two writers may interleave and leave duplicate resources (running deploy again converges)."
                ),
            }
            .into())
        }
        Err(e) => Err(anyhow::Error::new(e).context("taking the stack's lock")),
    }
}

/// Takes the stack's lock (see [`acquire`]), runs `work`, and releases the lock whether `work`
/// succeeds, fails, panics or is interrupted (Ctrl-C, SIGTERM, SIGHUP).
async fn locked<F>(
    cx: &Context,
    command: &str,
    force_unlock: Option<&str>,
    work: F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let held = acquire(cx, command, force_unlock).await?;
    let result = tokio::select! {
        result = CatchUnwind(Box::pin(work)) => result,
        signal = interrupted() => Ok(Err(Exit {
            code: EXIT_INTERRUPTED,
            message: format!("{signal}: stopped part way; the lock is released; run the same command again to resume (it finds what exists by its tags)"),
        }
        .into())),
    };
    release(held, cx, result).await
}

/// Runs `work` with the lock `held` and releases it whether `work` succeeds, fails or
/// panics. Signals are `work`'s to handle (the proof undoes its fault first).
pub(crate) async fn with_lock<T>(
    held: lock::HeldLock,
    cx: &Context,
    work: impl std::future::Future<Output = T>,
) -> T {
    let result = CatchUnwind(Box::pin(work)).await;
    release(held, cx, result).await
}

/// Releases `held`, then returns `result` or goes on with its panic.
async fn release<T>(held: lock::HeldLock, cx: &Context, result: std::thread::Result<T>) -> T {
    if let Err(e) = held.release().await {
        eprintln!(
            "warning: could not release the lock of stack {} ({e}); the next run will need --force-unlock",
            cx.stack()
        );
    }
    match result {
        Ok(result) => result,
        // The lock is released: the panic goes on as it would have.
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A future's output, or the panic it raised while polled (so that a lock can be released
/// before the panic goes on).
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(out)) => std::task::Poll::Ready(Ok(out)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// Waits for Ctrl-C, SIGTERM or SIGHUP (the terminal closed); says which. The handlers are
/// installed when this is called, not when the future is first polled: a signal that comes
/// in between is caught, never the process's death with a lock held or a fault in place.
pub(crate) fn interrupted() -> impl std::future::Future<Output = &'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    async move {
        tokio::select! {
            () = recv(int.as_mut()) => "interrupted (Ctrl-C)",
            () = recv(term.as_mut()) => "terminated (SIGTERM)",
            () = recv(hup.as_mut()) => "hung up (SIGHUP)",
        }
    }
}

/// What deploy would change, and, from the same read, every resource of the stack that
/// exists: the summary's "unchanged" are those the apply did not touch. Both only read.
pub async fn plan_and_existing(stack: &Stack, cx: &Context) -> anyhow::Result<(Plan, Plan)> {
    // Boxed: the modules' futures are too large for the main thread's stack in debug builds
    // (`bench deploy` overflowed it).
    Box::pin(stack.plan_and_existing(cx))
        .await
        .context("planning")
}

pub(crate) async fn deploy(
    args: &StackArgs,
    yes: bool,
    force_unlock: Option<&str>,
    wait: Wait,
) -> anyhow::Result<()> {
    let stack = load(args).await?;
    let live = Arc::new(Live::stdout());
    let cx = context_with(args, &stack, live.clone()).await?;
    locked(
        &cx,
        "deploy",
        force_unlock,
        deploy_locked(args, &stack, &cx, &live, yes, wait),
    )
    .await
}

async fn deploy_locked(
    args: &StackArgs,
    stack: &Stack,
    cx: &Context,
    live: &Arc<Live>,
    yes: bool,
    wait: Wait,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let since = std::time::SystemTime::now();
    let (plan, existing) = plan_and_existing(stack, cx).await?;
    println!("Deploying {}:\n{plan}", where_(args, stack));
    if !plan.is_empty()
        && args.target == Target::Aws
        && !yes
        && !confirm("Apply these changes to AWS?").await?
    {
        bail!("cancelled; nothing was changed");
    }
    let ticker = live.start_ticker();
    let applied = stack.apply(cx).await;
    ticker.stop().await;
    let outputs = applied.context("deploy stopped part way; run the same command again to resume (it finds what exists by its tags)")?;
    // On AWS the task definition names an image the repository must hold; the sandbox's data
    // plane runs the sample-app binary itself.
    if args.target == Target::Aws {
        crate::image_cmd::ensure_pushed(stack, cx, &outputs.storage.repository_uri)
            .await
            .with_context(|| format!("pushing the service's image (the stack is deployed; run deploy again, or `{} image --target aws`)", crate::program()))?;
    }
    // A zone a loadtest cut off and could not restore (killed) is drift deploy repairs: its
    // own deny-all ACL, or an AWS FIS experiment still running.
    let mut zones: BTreeMap<String, (usize, usize)> = stack
        .zone_isolation(cx)
        .await
        .context("reading which zones are isolated")?
        .into_iter()
        .filter(network::ZoneIsolation::is_isolated)
        .map(|z| {
            (
                z.zone,
                (z.isolated_subnet_ids.len(), z.fis_subnet_ids.len()),
            )
        })
        .collect();
    for e in stack
        .fault_experiments(cx)
        .await
        .context("reading the stack's AWS FIS experiments")?
    {
        zones.entry(e.zone).or_default();
    }
    for (zone, (own, fis)) in zones {
        let stopped = stack.restore_zone(cx, &zone).await.with_context(|| {
            format!(
                "restoring zone {zone} (left isolated by a loadtest); run deploy again to retry"
            )
        })?;
        if own > 0 {
            println!(
                "Restored zone {zone}: {own} subnets were on the stack's deny-all network ACL, a loadtest's fault that was not undone"
            );
        }
        if !stopped.is_empty() || fis > 0 {
            println!(
                "Restored zone {zone}: stopped AWS FIS experiment {} ({fis} subnets were on FIS's deny-all network ACLs), a loadtest's fault that was not undone",
                if stopped.is_empty() {
                    "(none running)".to_owned()
                } else {
                    stopped.join(", ")
                }
            );
        }
    }
    println!(
        "{}",
        ApplySummary::new(&live.tally(), &existing, started.elapsed())
    );
    println!("Outputs:\n{}", serde_json::to_string_pretty(&outputs)?);
    report_calls(args, cx, started);
    let timing = match args.target {
        Target::Sandbox => print_sandbox_address(&outputs.load_balancer.dns_name).await,
        Target::Aws => {
            println!("Load balancer: http://{}/", outputs.load_balancer.dns_name);
            Some(Timing {
                clock: sandbox::Clock::AWS,
                launch: sandbox::LaunchLatency::default(),
                address_zones: Vec::new(),
            })
        }
    };
    match (wait, timing) {
        (Wait::No, _) => Ok(()),
        (Wait::Steady { timeout }, Some(t)) => {
            crate::steady::wait(
                cx,
                &outputs,
                t.clock,
                t.launch,
                timeout,
                since,
                &t.address_zones,
            )
            .await
        }
        // No data plane serves the stack: nothing would ever become steady.
        (Wait::Steady { .. }, None) => Err(Exit {
            code: EXIT_NOT_STEADY,
            message: format!("error: the sandbox does not serve the load balancer, so the service cannot become steady; see `{} sandbox status`", crate::program()),
        }
        .into()),
    }
}

/// What the wait for a steady service needs to know of where the stack runs.
struct Timing {
    /// The sandbox's clock, or AWS's.
    clock: sandbox::Clock,
    /// The Fargate launch latency (the data plane's draw, AWS's typical range on AWS).
    launch: sandbox::LaunchLatency,
    /// Target address prefixes and their zones (the sandbox's loopback plan; none on AWS).
    address_zones: Vec<(String, String)>,
}

/// Whether deploy waits for a steady service after the apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wait {
    /// Return once the apply is complete (Terraform's default for ECS services).
    No,
    /// Wait, at most `timeout` (wall time), else the model's derived deadline.
    Steady {
        /// `--wait-timeout`.
        timeout: Option<std::time::Duration>,
    },
}

pub(crate) async fn destroy(
    args: &StackArgs,
    yes: bool,
    override_protection: bool,
    force_unlock: Option<&str>,
) -> anyhow::Result<()> {
    let stack = load(args).await?;
    check_can_ask(yes)?;
    let live = Arc::new(Live::stdout());
    let cx = context_with(args, &stack, live.clone()).await?;
    locked(
        &cx,
        "destroy",
        force_unlock,
        destroy_locked(args, &stack, &cx, &live, yes, override_protection),
    )
    .await
}

async fn destroy_locked(
    args: &StackArgs,
    stack: &Stack,
    cx: &Context,
    live: &Arc<Live>,
    yes: bool,
    override_protection: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = stack
        .plan_destroy(cx)
        .await
        .context("reading what to destroy")?;
    if plan.changes.is_empty() {
        println!("Nothing tagged with {} exists.", where_(args, stack));
        return Ok(());
    }
    if plan.is_empty() {
        println!(
            "Nothing to destroy in {}; destroy keeps:\n{plan}",
            where_(args, stack)
        );
        return Ok(());
    }
    println!("Destroying {}:\n{plan}", where_(args, stack));
    // Whatever would stop destroy part way stops it here, before the question and the first
    // delete.
    stack
        .destroy_preflight(cx, override_protection)
        .await
        .map_err(|e| match e {
            stack::Error::Preflight(_) => anyhow::Error::new(e),
            other => anyhow::Error::new(other).context("reading what could stop destroy"),
        })?;
    if !yes {
        confirm_name(stack.name().as_str()).await?;
    }
    let ticker = live.start_ticker();
    let destroyed = stack.destroy(cx, override_protection).await;
    ticker.stop().await;
    destroyed.map_err(|e| match e {
        stack::Error::Preflight(_) => anyhow::Error::new(e),
        other => anyhow::Error::new(other).context(
            "destroy stopped part way; run the same command again to finish (it finds what is left by its tags)",
        ),
    })?;
    println!("Destroyed.");
    println!(
        "{}",
        crate::progress::destroy_summary(&live.tally(), started.elapsed())
    );
    for kept in plan.kept() {
        println!(
            "Kept {} {:?}: {}",
            kept.kind,
            kept.name,
            kept.details.join("; ")
        );
    }
    report_calls(args, cx, started);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_stack_name_confirms() {
        assert!(typed_name_matches("web\n", "web").is_ok());
        assert!(typed_name_matches("  web \r\n", "web").is_ok());
        for wrong in ["", "\n", "y\n", "yes\n", "Web\n", "web2\n"] {
            let err = typed_name_matches(wrong, "web").unwrap_err().to_string();
            assert!(
                err.ends_with("is not the stack name \"web\"; nothing was deleted"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_panic_under_the_lock_releases_it_and_goes_on() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup`)");
        // The lock's calls go through the context's SDK config only (its own context): moto's
        // default account, as in the sandbox.
        let cx = Context::builder(
            sandbox::sdk_config(moto.endpoint(), "eu-west-1"),
            infra::StackName::new("panics-under-lock").unwrap(),
        )
        .build();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(locked(&cx, "deploy", None, async {
                tokio::task::yield_now().await;
                panic!("a bug part way");
            }))
        }));
        let payload = panicked.expect_err("the panic goes on after the release");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"a bug part way"));
        let store = runtime.block_on(LockStore::new(&cx)).unwrap();
        assert_eq!(
            runtime.block_on(store.read()).unwrap(),
            None,
            "the lock was released"
        );
    }
}
