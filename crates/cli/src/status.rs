//! `status`: what exists of the stack, its outputs, and whether it drifted. Reads
//! only: what exists is what destroy would delete (found by the stack's tags), drift is what
//! deploy would change.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Context as _;
use infra::{Action, Change, Plan};
use serde_json::{Value, json};
use stack::StackOutputs;

use crate::target::{EXIT_CHANGES, EXIT_NOT_DEPLOYED, Exit};
use crate::{StackArgs, Target};

/// Where the stack stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Every module exists and deploy would change nothing.
    Deployed,
    /// Every module exists, and deploy would change something.
    Drifted,
    /// Some of the stack exists, not all of it.
    Partial,
    /// Nothing tagged with the stack exists.
    NotDeployed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Deployed => "deployed",
            State::Drifted => "drifted",
            State::Partial => "partial",
            State::NotDeployed => "not-deployed",
        }
    }

    fn exit_code(self) -> u8 {
        match self {
            State::Deployed => 0,
            State::Drifted | State::Partial => EXIT_CHANGES,
            State::NotDeployed => EXIT_NOT_DEPLOYED,
        }
    }
}

/// What status found.
struct Found {
    /// Every resource tagged with the stack, modules in deploy order.
    modules: Vec<(String, Vec<Change>)>,
    outputs: Option<StackOutputs>,
    /// What deploy would change.
    pending: Plan,
    state: State,
    /// Zones cut off from the network (a loadtest's fault left in place); deploy restores them.
    isolated: Vec<network::ZoneIsolation>,
    /// The stack's AWS FIS experiments that have not ended (a loadtest's fault FIS undoes
    /// when its duration is up; deploy stops it at once).
    experiments: Vec<stack::fault::FaultExperiment>,
    /// The stack's lock, when a run holds it (or a killed run left it).
    lock: Option<stack::lock::LockInfo>,
}

/// Groups the resources destroy would delete by module, in deploy order (destroy's reversed).
fn by_module(existing: &Plan) -> Vec<(String, Vec<Change>)> {
    let mut modules: Vec<(String, Vec<Change>)> = Vec::new();
    // Destroy also plans updates (turning deletion protection off); only deletes are resources,
    // and what destroy keeps (a log group that holds logs).
    for change in existing
        .changes
        .iter()
        .rev()
        .filter(|c| matches!(c.action, Action::Delete | Action::Keep))
    {
        match modules.iter_mut().find(|(m, _)| *m == change.module) {
            Some((_, list)) => list.push(change.clone()),
            None => modules.push((change.module.clone(), vec![change.clone()])),
        }
    }
    modules
}

/// `kind N, kind N` in order of first appearance.
fn kinds(resources: &[Change]) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in resources {
        match counts.iter_mut().find(|(k, _)| *k == r.kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.kind.clone(), 1)),
        }
    }
    counts
}

fn state(
    modules: &[(String, Vec<Change>)],
    outputs: Option<&StackOutputs>,
    pending: &Plan,
) -> State {
    // What destroy keeps is data left on purpose, not a deployed stack.
    if modules
        .iter()
        .all(|(_, list)| list.iter().all(|c| c.action == Action::Keep))
    {
        State::NotDeployed
    } else if outputs.is_none() {
        State::Partial
    } else if pending.is_empty() {
        State::Deployed
    } else {
        State::Drifted
    }
}

pub(crate) async fn run(args: &StackArgs, json: bool) -> anyhow::Result<()> {
    let stack = crate::deploy::load(args).await?;
    let where_ = match args.target {
        Target::Sandbox => format!("the local sandbox ({})", stack.region()),
        Target::Aws => format!("AWS region {}", stack.region()),
    };
    // A sandbox that is not running holds nothing; status does not start one.
    if args.target == Target::Sandbox && crate::sandbox_cmd::current().is_none() {
        return Err(not_running(&stack, json)?);
    }
    let cx = crate::deploy::context(args, &stack).await?;
    let started = Instant::now();
    let found = read(&stack, &cx).await?;
    let calls = cx.calls().snapshot();
    if json {
        let status = to_json(&stack, args.target, &found, &calls);
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", text(stack.name().as_str(), &where_, &found));
        crate::deploy::report_calls(args, &cx, started);
    }
    match found.state.exit_code() {
        0 => Ok(()),
        code => Err(Exit {
            code,
            message: String::new(),
        }
        .into()),
    }
}

/// Status of a stack whose sandbox is not running: nothing deployed (printed as JSON when
/// asked for); the error carries the exit code.
fn not_running(stack: &stack::Stack, json: bool) -> anyhow::Result<anyhow::Error> {
    let message = format!(
        "stack {}: not deployed (the local sandbox is not running; `{} deploy` starts it)",
        stack.name(),
        crate::program()
    );
    if json {
        let status = json!({
            "stack": stack.name().as_str(),
            "region": stack.region(),
            "target": "sandbox",
            "state": State::NotDeployed.as_str(),
            "modules": {},
            "outputs": Value::Null,
            "drift": { "changes": 0 },
            "calls": { "total": 0, "writes": 0 },
        });
        println!("{}", serde_json::to_string_pretty(&status)?);
    }
    Ok(Exit {
        code: EXIT_NOT_DEPLOYED,
        message,
    }
    .into())
}

/// Everything status shows, from one read of each module and of the lock.
async fn read(stack: &stack::Stack, cx: &infra::Context) -> anyhow::Result<Found> {
    let (existing, outputs, pending) =
        tokio::try_join!(stack.plan_destroy(cx), stack.outputs(cx), stack.plan(cx),)
            .context("reading the stack")?;
    let modules = by_module(&existing);
    // A zone a loadtest cut off and did not restore (killed): the service runs degraded.
    let has_subnets = modules
        .iter()
        .any(|(_, list)| list.iter().any(|c| c.kind == "subnet"));
    let isolated: Vec<network::ZoneIsolation> = if has_subnets {
        stack
            .zone_isolation(cx)
            .await
            .context("reading which zones are isolated")?
            .into_iter()
            .filter(network::ZoneIsolation::is_isolated)
            .collect()
    } else {
        Vec::new()
    };
    let experiments = if has_subnets {
        stack
            .fault_experiments(cx)
            .await
            .context("reading the stack's AWS FIS experiments")?
    } else {
        Vec::new()
    };
    let lock = stack::lock::LockStore::new(cx)
        .await
        .context("reading the stack's lock")?
        .read()
        .await
        .context("reading the stack's lock")?;
    let mut state = state(&modules, outputs.as_ref(), &pending);
    if state == State::Deployed && !(isolated.is_empty() && experiments.is_empty()) {
        state = State::Drifted;
    }
    Ok(Found {
        modules,
        outputs,
        pending,
        state,
        isolated,
        experiments,
        lock,
    })
}

/// The JSON form.
fn to_json(
    stack: &stack::Stack,
    target: Target,
    found: &Found,
    calls: &infra::CallCounts,
) -> Value {
    let modules: serde_json::Map<String, Value> = found
        .modules
        .iter()
        .map(|(module, resources)| {
            let list: Vec<Value> = resources
                .iter()
                .map(|r| json!({ "kind": r.kind, "name": r.name, "id": r.id }))
                .collect();
            let counts: serde_json::Map<String, Value> = kinds(resources)
                .into_iter()
                .map(|(k, n)| (k, json!(n)))
                .collect();
            (
                module.clone(),
                json!({ "count": resources.len(), "kinds": counts, "resources": list }),
            )
        })
        .collect();
    let c = found.pending.counts();
    json!({
        "stack": stack.name().as_str(),
        "region": stack.region(),
        "target": match target { Target::Sandbox => "sandbox", Target::Aws => "aws" },
        "state": found.state.as_str(),
        "modules": modules,
        "outputs": found.outputs,
        "drift": {
            "changes": found.pending.changes.len(),
            "create": c.create,
            "update": c.update,
            "delete": c.delete,
            "plan": found.pending.changes,
        },
        "isolated_zones": found.isolated.iter().map(|z| json!({
            "zone": z.zone,
            "isolated_subnet_ids": z.isolated_subnet_ids,
            "fis_subnet_ids": z.fis_subnet_ids,
        })).collect::<Vec<_>>(),
        "fault_experiments": found.experiments,
        "lock": found.lock.as_ref().map(|l| json!({
            "command": l.command,
            "holder": l.holder,
            "pid": l.pid,
            "started": l.started,
            "id": l.id,
            "holder_gone_from_this_host": l.holder_is_gone_from_this_host(),
        })),
        "calls": { "total": calls.total(), "writes": calls.writes() },
    })
}

/// The human form.
fn text(name: &str, where_: &str, found: &Found) -> String {
    let mut out = String::new();
    let c = found.pending.counts();
    let pending = format!(
        "{} changes pending ({} to create, {} to update, {} to delete; `{program} plan` shows them, `{program} deploy` makes them)",
        found.pending.changes.len(),
        c.create,
        c.update,
        c.delete,
        program = crate::program()
    );
    let headline = match found.state {
        State::Deployed => "deployed, no drift (deploy would change nothing)".to_owned(),
        State::Drifted => format!("deployed, DRIFTED: {pending}"),
        State::Partial => format!("PARTLY deployed: {pending}"),
        State::NotDeployed if found.modules.is_empty() => {
            "not deployed (nothing is tagged with the stack)".to_owned()
        }
        State::NotDeployed => {
            "not deployed (only what destroy keeps is left; the next deploy takes it over)"
                .to_owned()
        }
    };
    let _ = writeln!(out, "Stack {name} in {where_}: {headline}");
    faults(&mut out, found);
    let total: usize = found.modules.iter().map(|(_, r)| r.len()).sum();
    if total > 0 {
        let _ = writeln!(out, "Resources ({total}):");
    }
    for (module, resources) in &found.modules {
        let kinds: Vec<String> = kinds(resources)
            .into_iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "  {module} ({}): {}",
            resources.len(),
            kinds.join(", ")
        );
        for r in resources {
            let _ = writeln!(
                out,
                "    {} {:?}{}",
                r.kind,
                r.name,
                // Resources AWS knows by name have no other id.
                r.id.as_ref().map(|id| format!(" {id}")).unwrap_or_default()
            );
        }
    }
    outputs(&mut out, found);
    out
}

/// The lock, isolated zones and fault experiments a killed run may have left.
fn faults(out: &mut String, found: &Found) {
    if let Some(l) = &found.lock {
        let age = stack::lock::human(l.age(std::time::SystemTime::now()));
        let _ = if l.holder_is_gone_from_this_host() {
            writeln!(
                out,
                "Locked: {l} ({age} ago); process {} no longer runs on this host: that run was killed. The next deploy, destroy or loadtest needs --force-unlock {}",
                l.pid, l.id
            )
        } else {
            writeln!(
                out,
                "Locked: {l} ({age} ago), lock id {}: a run is in progress, or was killed on another machine (then --force-unlock {} lets the next one go on)",
                l.id, l.id
            )
        };
    }
    for z in &found.isolated {
        if !z.isolated_subnet_ids.is_empty() {
            let _ = writeln!(
                out,
                "Zone {} ISOLATED: {} of its {} subnets are on the stack's deny-all network ACL (a loadtest's fault that was not undone); `{} deploy` restores it",
                z.zone,
                z.isolated_subnet_ids.len(),
                z.subnet_ids.len(),
                crate::program()
            );
        }
        if !z.fis_subnet_ids.is_empty() {
            let _ = writeln!(
                out,
                "Zone {} ISOLATED: {} of its {} subnets are on AWS FIS's deny-all network ACLs (an experiment's fault); FIS restores them when the experiment ends, `{} deploy` stops it now",
                z.zone,
                z.fis_subnet_ids.len(),
                z.subnet_ids.len(),
                crate::program()
            );
        }
    }
    for e in &found.experiments {
        let since = e
            .started_unix_s
            .map(|s| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                format!(", started {} s ago", (now - s).max(0))
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "Fault experiment {} ({}) {} on zone {}{since}: a loadtest's fault; FIS ends it when its duration is up, `{} deploy` stops it now",
            e.id,
            stack::fault::DISRUPT_CONNECTIVITY,
            e.status.to_uppercase(),
            e.zone,
            crate::program()
        );
    }
}

/// The outputs, one per line.
fn outputs(out: &mut String, found: &Found) {
    if let Some(o) = &found.outputs {
        let _ = writeln!(out, "Outputs:");
        let rows = [
            (
                "load balancer",
                format!("http://{}/", o.load_balancer.dns_name),
            ),
            ("vpc", o.network.vpc_id.clone()),
            ("zones", o.network.zones.join(", ")),
            (
                "service",
                format!(
                    "{} in cluster {}",
                    o.compute.service_name, o.compute.cluster_name
                ),
            ),
            ("task def", o.compute.task_definition_arn.clone()),
            ("log bucket", o.storage.log_bucket.clone()),
            ("repository", o.storage.repository_uri.clone()),
            ("dashboard", o.observability.dashboard_name.clone()),
            ("alarms", o.observability.alarm_names.join(", ")),
        ];
        for (what, value) in rows {
            let _ = writeln!(out, "  {what:<14}{value}");
        }
    }
}
