//! The deploy graph against moto: every module waits for what it needs and for nothing else.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use infra::{Context, Event, Progress, StackName, WaitPolicy};
use stackproof_stack::StackConfig;

/// One progress event: started or finished, module, kind, name.
#[derive(Debug, Clone)]
struct Seen {
    finished: bool,
    module: String,
    kind: String,
    name: String,
}

/// Records every event in the order the modules emit them.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Seen>>);

impl Progress for Recorder {
    fn on(&self, event: &Event<'_>) {
        let (finished, change) = match event {
            Event::Started(change) => (false, *change),
            Event::Finished { change, .. } => (true, *change),
            _ => return,
        };
        self.0.lock().unwrap().push(Seen {
            finished,
            module: change.module.clone(),
            kind: change.kind.clone(),
            name: change.name.clone(),
        });
    }
}

fn context(progress: Arc<Recorder>) -> Context {
    let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    moto.context(StackName::new("graph").unwrap(), "eu-west-1")
        .waits(WaitPolicy {
            resource_state: Duration::from_secs(20),
            ..sandbox::TEST_WAITS
        })
        .progress(progress)
        .build()
}

/// Position of the first event matching `f`, with the events for the failure message.
fn first(events: &[Seen], f: impl Fn(&Seen) -> bool) -> usize {
    events
        .iter()
        .position(f)
        .unwrap_or_else(|| panic!("no such event in {events:#?}"))
}

/// Position of the last event matching `f`.
fn last(events: &[Seen], f: impl Fn(&Seen) -> bool) -> usize {
    events
        .iter()
        .rposition(f)
        .unwrap_or_else(|| panic!("no such event in {events:#?}"))
}

#[tokio::test]
async fn each_module_waits_for_what_it_needs_and_nothing_else() {
    let recorder = Arc::new(Recorder::default());
    let cx = context(recorder.clone());
    let stack = StackConfig::from_toml("name = \"graph\"\n", "stack.toml")
        .unwrap()
        .validate()
        .unwrap();
    // Warm moto up first. On a cold moto each service loads on its first call (about 1.2 s
    // each here), and compute's foundation reads IAM, CloudWatch Logs and ECS one after the
    // other while the network needs only EC2: once CI saw the whole network built before
    // compute's first change. The order below must be the graph's, not moto's start-up. A plan
    // reads from every module's services and changes nothing.
    assert!(!stack.plan(&cx).await.unwrap().is_empty());
    recorder.0.lock().unwrap().clear();
    let outputs = stack.apply(&cx).await.unwrap();
    assert!(outputs.load_balancer.dns_name.contains("graph"));
    let events = recorder.0.lock().unwrap().clone();
    let started = |module: &'static str, kind: &'static str| {
        move |e: &Seen| !e.finished && e.module == module && e.kind == kind
    };
    let finished = |module: &'static str, kind: &'static str| {
        move |e: &Seen| e.finished && e.module == module && e.kind == kind
    };

    // What each module needs is there before it starts.
    let lb_starts = first(&events, |e| e.module == "load-balancer");
    for kind in ["vpc", "subnet", "security-group"] {
        assert!(
            last(&events, finished("network", kind)) < lb_starts,
            "the load balancer started before every network {kind} existed: {events:#?}"
        );
    }
    assert!(last(&events, |e| e.finished && e.module == "storage") < lb_starts);
    let service_starts = first(&events, started("compute", "ecs-service"));
    for (module, kind) in [
        ("network", "route"),
        ("load-balancer", "target-group"),
        ("storage", "repository"),
    ] {
        assert!(
            last(&events, finished(module, kind)) < service_starts,
            "the service started before every {module} {kind} existed: {events:#?}"
        );
    }
    assert!(
        last(&events, finished("load-balancer", "load-balancer"))
            < first(&events, |e| e.module == "observability")
    );

    // ... and nothing more: compute's roles, log group and cluster need none of it, so they
    // are made while the network is still being built.
    let network_done = last(&events, |e| e.finished && e.module == "network");
    for kind in ["iam-role", "log-group", "ecs-cluster"] {
        assert!(
            first(&events, started("compute", kind)) < network_done,
            "compute's {kind} waited for the network: {events:#?}"
        );
    }

    // Every resource started was finished, once.
    let starts = events.iter().filter(|e| !e.finished).count();
    let ends = events.iter().filter(|e| e.finished).count();
    assert_eq!(starts, ends, "{events:#?}");
    let names: Vec<_> = events
        .iter()
        .filter(|e| e.module == "compute" && e.kind == "ecs-service")
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(names, ["graph", "graph"]);

    // The graph converges like the chain did: a second apply changes nothing.
    assert!(stack.plan(&cx).await.unwrap().is_empty());
}
