//! `cargo xtask plan | deploy | destroy`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use infra::{Context, Event, Plan, Progress};
use stack::{Stack, StackConfig};

use crate::{StackArgs, Target};

/// Prints one line per finished change, and waits as they happen.
#[derive(Debug)]
struct Lines;

impl Progress for Lines {
    fn on(&self, event: &Event<'_>) {
        match event {
            Event::Finished {
                change,
                id,
                elapsed,
            } => {
                let id = id.map(|i| format!(" -> {i}")).unwrap_or_default();
                println!(
                    "  done {} {} {} {:?}{id} ({:.2}s)",
                    symbol(change),
                    change.module,
                    change.kind,
                    change.name,
                    elapsed.as_secs_f64()
                );
            }
            Event::Waiting { change, waited } => {
                println!(
                    "  waiting for {} {} ({:.0}s so far)",
                    change.kind,
                    change.name,
                    waited.as_secs_f64()
                );
            }
            _ => {}
        }
    }
}

fn symbol(change: &infra::Change) -> char {
    match change.action {
        infra::Action::Create => '+',
        infra::Action::Update => '~',
        infra::Action::Delete => '-',
    }
}

fn load(args: &StackArgs) -> anyhow::Result<Stack> {
    let default = crate::project_root().join("stack.toml");
    let mut config = match &args.config {
        Some(path) => StackConfig::load(path)?,
        None if default.exists() => StackConfig::load(&default)?,
        None => StackConfig::default(),
    };
    if let Some(region) = &args.region {
        config.region = region.clone();
    }
    Ok(config.validate()?)
}

async fn context(args: &StackArgs, stack: &Stack) -> anyhow::Result<Context> {
    let sdk = match args.target {
        Target::Sandbox => {
            let running = crate::sandbox_cmd::ensure(0)?;
            sandbox::sdk_config(&running.endpoint, stack.region())
        }
        Target::Aws => {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(stack.region().to_owned()));
            if let Some(profile) = &args.profile {
                loader = loader.profile_name(profile);
            }
            loader.load().await
        }
    };
    Ok(Context::builder(sdk, stack.name().clone())
        .user_tags(stack.tags().clone())
        .progress(Arc::new(Lines))
        .build())
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

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question}: no terminal to ask on; pass --yes to proceed without asking");
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn report_calls(args: &StackArgs, cx: &Context, started: Instant) {
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

pub(crate) async fn plan(args: &StackArgs, json: bool) -> anyhow::Result<()> {
    let stack = load(args)?;
    let cx = context(args, &stack).await?;
    let started = Instant::now();
    let plan = stack.plan(&cx).await.context("planning")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        println!("Plan for {}:\n{plan}", where_(args, &stack));
        report_calls(args, &cx, started);
    }
    Ok(())
}

pub(crate) async fn deploy(args: &StackArgs, yes: bool) -> anyhow::Result<()> {
    let stack = load(args)?;
    let cx = context(args, &stack).await?;
    let started = Instant::now();
    let plan: Plan = stack.plan(&cx).await.context("planning")?;
    println!("Deploying {}:\n{plan}", where_(args, &stack));
    if !plan.is_empty()
        && args.target == Target::Aws
        && !yes
        && !confirm("Apply these changes to AWS?")?
    {
        bail!("cancelled; nothing was changed");
    }
    let outputs = stack
        .apply(&cx)
        .await
        .context("deploy stopped part way; run the same command again to resume (it finds what exists by its tags)")?;
    println!("Outputs:\n{}", serde_json::to_string_pretty(&outputs)?);
    report_calls(args, &cx, started);
    Ok(())
}

pub(crate) async fn destroy(args: &StackArgs, yes: bool) -> anyhow::Result<()> {
    let stack = load(args)?;
    let cx = context(args, &stack).await?;
    let started = Instant::now();
    let plan = stack
        .plan_destroy(&cx)
        .await
        .context("reading what to destroy")?;
    if plan.is_empty() {
        println!("Nothing tagged with {} exists.", where_(args, &stack));
        return Ok(());
    }
    println!("Destroying {}:\n{plan}", where_(args, &stack));
    if !yes && !confirm("Delete all of this?")? {
        bail!("cancelled; nothing was deleted");
    }
    stack
        .destroy(&cx)
        .await
        .context("destroy stopped part way; run the same command again to finish (it finds what is left by its tags)")?;
    println!("Destroyed.");
    report_calls(args, &cx, started);
    Ok(())
}
