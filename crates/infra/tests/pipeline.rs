//! The pipeline driver with an account of its own: a module whose "resources" are names in a
//! map. What every module gets from the driver: plan = the diff's steps in order, apply runs them
//! with progress and converges (a second plan is empty), a failed step stops the run and the
//! same apply again resumes, destroy deletes in the teardown's order and says what it keeps.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use stackproof_infra::{
    Action, Change, Context, Event, Module, Pipeline, Plan, Progress, StackName,
};

/// The account: name -> size. `fail` names a resource whose next create fails once.
#[derive(Debug, Default)]
struct Account {
    items: BTreeMap<String, u32>,
    fail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("create {0:?} failed")]
struct Failed(String);

/// Wants every name of `want` with its size; keeps items named `keep-*` on destroy.
struct Toy {
    account: Arc<Mutex<Account>>,
    want: BTreeMap<String, u32>,
}

#[derive(Debug)]
enum Op {
    Create(String, u32),
    Resize(String, u32, u32),
    Wait,
    Delete(String),
}

impl Pipeline for Toy {
    const NAME: &'static str = "toy";
    type Inputs = ();
    type Outputs = Vec<String>;
    type Error = Failed;
    type Observed = BTreeMap<String, u32>;
    type Desired = BTreeMap<String, u32>;
    type Op = Op;
    /// The names made by this run, in order.
    type State = Vec<String>;

    async fn observe(&self, _cx: &Context, _inputs: Option<&()>) -> Result<Self::Observed, Failed> {
        Ok(self.account.lock().unwrap().items.clone())
    }

    async fn desired(
        &self,
        _cx: &Context,
        _inputs: &(),
        _observed: &Self::Observed,
    ) -> Result<Self::Desired, Failed> {
        Ok(self.want.clone())
    }

    fn diff(
        &self,
        _cx: &Context,
        desired: &Self::Desired,
        observed: &Self::Observed,
    ) -> Result<Vec<Op>, Failed> {
        let mut ops = Vec::new();
        for (name, &size) in desired {
            match observed.get(name) {
                None => ops.push(Op::Create(name.clone(), size)),
                Some(&have) if have != size => ops.push(Op::Resize(name.clone(), have, size)),
                Some(_) => {}
            }
        }
        if !ops.is_empty() {
            ops.push(Op::Wait);
        }
        Ok(ops)
    }

    fn teardown(&self, _cx: &Context, observed: &Self::Observed) -> Result<Vec<Op>, Failed> {
        // Reverse order, as dependencies need.
        Ok(observed
            .keys()
            .rev()
            .filter(|n| !n.starts_with("keep-"))
            .map(|n| Op::Delete(n.clone()))
            .collect())
    }

    fn change(&self, _cx: &Context, op: &Op) -> Vec<Change> {
        let c = |action, name: &str| Change::new(action, "toy", "item", name);
        match op {
            Op::Create(n, size) => vec![c(Action::Create, n).detail(format!("size {size}"))],
            Op::Resize(n, from, to) => {
                vec![c(Action::Update, n).field("size", Some(from.to_string()), to.to_string())]
            }
            Op::Wait => Vec::new(),
            Op::Delete(n) => vec![c(Action::Delete, n)],
        }
    }

    fn kept(&self, _cx: &Context, observed: &Self::Observed) -> Vec<Change> {
        observed
            .keys()
            .filter(|n| n.starts_with("keep-"))
            .map(|n| Change::new(Action::Keep, "toy", "item", n).detail("it holds data"))
            .collect()
    }

    fn state(
        &self,
        _cx: &Context,
        _desired: Option<&Self::Desired>,
        _observed: &Self::Observed,
    ) -> Vec<String> {
        Vec::new()
    }

    async fn step(
        &self,
        _cx: &Context,
        op: &Op,
        made: &mut Vec<String>,
    ) -> Result<Option<String>, Failed> {
        let mut account = self.account.lock().unwrap();
        match op {
            Op::Create(n, size) => {
                if account.fail.as_ref() == Some(n) {
                    account.fail = None;
                    return Err(Failed(n.clone()));
                }
                account.items.insert(n.clone(), *size);
                made.push(n.clone());
                Ok(Some(format!("id-{n}")))
            }
            Op::Resize(n, _, size) => {
                account.items.insert(n.clone(), *size);
                Ok(None)
            }
            Op::Wait => Ok(None),
            Op::Delete(n) => {
                account.items.remove(n);
                Ok(None)
            }
        }
    }

    async fn outputs(
        &self,
        _cx: &Context,
        desired: &Self::Desired,
        _made: Vec<String>,
    ) -> Result<Vec<String>, Failed> {
        Ok(desired.keys().cloned().collect())
    }
}

/// Records progress events as `started NAME` / `finished NAME ID`.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress for Recorder {
    fn on(&self, event: &Event<'_>) {
        let line = match event {
            Event::Started(c) => format!("started {}", c.name),
            Event::Finished { change, id, .. } => {
                format!("finished {} {}", change.name, id.unwrap_or("-"))
            }
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

fn context(progress: Arc<Recorder>) -> Context {
    let sdk = SdkConfig::builder()
        .region(Region::new("eu-west-1"))
        .behavior_version(BehaviorVersion::latest())
        .build();
    Context::builder(sdk, StackName::new("demo").unwrap())
        .progress(progress)
        .build()
}

fn toy(account: &Arc<Mutex<Account>>, want: &[(&str, u32)]) -> Toy {
    Toy {
        account: Arc::clone(account),
        want: want.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect(),
    }
}

fn lines(plan: &Plan) -> Vec<String> {
    plan.changes
        .iter()
        .map(|c| format!("{} {}", c.action.symbol(), c.name))
        .collect()
}

#[tokio::test]
async fn apply_runs_the_planned_steps_with_progress_and_converges() {
    let account = Arc::new(Mutex::new(Account::default()));
    account.lock().unwrap().items.insert("b".into(), 1);
    let progress = Arc::new(Recorder::default());
    let cx = context(Arc::clone(&progress));
    let module = toy(&account, &[("a", 1), ("b", 2)]);

    let plan = module.plan(&cx, &()).await.unwrap();
    assert_eq!(lines(&plan), ["+ a", "~ b"]);
    assert!(plan.changes[1].sets("size", "2"));
    assert!(
        progress.0.lock().unwrap().is_empty(),
        "plan never runs a step"
    );

    let outputs = module.apply(&cx, &()).await.unwrap();
    assert_eq!(outputs, ["a", "b"]);
    assert_eq!(
        *progress.0.lock().unwrap(),
        ["started a", "finished a id-a", "started b", "finished b -"],
        "each change reported as started then finished, the wait step not at all"
    );
    assert_eq!(
        account.lock().unwrap().items,
        BTreeMap::from([("a".into(), 1), ("b".into(), 2)])
    );
    assert!(module.plan(&cx, &()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_step_stops_the_run_and_the_same_apply_again_resumes() {
    let account = Arc::new(Mutex::new(Account {
        fail: Some("b".into()),
        ..Account::default()
    }));
    let progress = Arc::new(Recorder::default());
    let cx = context(Arc::clone(&progress));
    let module = toy(&account, &[("a", 1), ("b", 1), ("c", 1)]);

    let err = module.apply(&cx, &()).await.unwrap_err();
    assert_eq!(err.to_string(), "create \"b\" failed");
    assert_eq!(
        account.lock().unwrap().items.keys().collect::<Vec<_>>(),
        ["a"],
        "nothing after the failed step ran"
    );
    assert_eq!(
        progress.0.lock().unwrap().last().map(String::as_str),
        Some("started b"),
        "a failed step is not reported finished"
    );

    assert_eq!(lines(&module.plan(&cx, &()).await.unwrap()), ["+ b", "+ c"]);
    module.apply(&cx, &()).await.unwrap();
    assert_eq!(account.lock().unwrap().items.len(), 3);
}

#[tokio::test]
async fn destroy_deletes_in_teardown_order_and_says_what_it_keeps() {
    let account = Arc::new(Mutex::new(Account::default()));
    let cx = context(Arc::default());
    let module = toy(&account, &[("a", 1), ("b", 1), ("keep-logs", 1)]);
    module.apply(&cx, &()).await.unwrap();

    let preview = module.plan_destroy(&cx).await.unwrap();
    assert_eq!(lines(&preview), ["- b", "- a", "= keep-logs"]);
    let done = module.destroy(&cx).await.unwrap();
    assert_eq!(done, preview, "destroy returns what its preview showed");
    assert_eq!(
        account.lock().unwrap().items.keys().collect::<Vec<_>>(),
        ["keep-logs"]
    );
    let again = module.destroy(&cx).await.unwrap();
    assert_eq!(lines(&again), ["= keep-logs"]);
    assert!(again.is_empty(), "a second destroy changes nothing");
}
