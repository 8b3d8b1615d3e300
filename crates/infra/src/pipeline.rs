//! The one pipeline every module follows, in code: observe what the stack has in the account,
//! work out what the configuration wants, diff the two into ordered steps, show the steps as a
//! plan, carry them out one by one with progress.
//!
//! A module implements [`Pipeline`] (its reads, its pure diff, its steps and the AWS calls of
//! each step); the driver here turns that into [`Module`]'s plan, apply, plan-destroy and
//! destroy, the same way for every module. Modules that apply in stages (the network hands its
//! outputs on before its NAT gateways are available) use the same pieces: [`observe`],
//! [`plan`] and [`run`].

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Change, Context, Module, Plan, reported};

/// A module as a pipeline of observe -> desired -> diff -> steps -> exec. Every implementation
/// is a [`Module`] through the driver of this file.
pub trait Pipeline: Sync {
    /// [`Module::NAME`].
    const NAME: &'static str;
    /// [`Module::Inputs`].
    type Inputs: Sync;
    /// [`Module::Outputs`].
    type Outputs: Serialize + DeserializeOwned + Send;
    /// [`Module::Error`].
    type Error: std::error::Error + Send + Sync + 'static;
    /// What the stack has in the account, as read.
    type Observed: Send + Sync;
    /// What the configuration and the inputs want.
    type Desired: Send + Sync;
    /// One step of an apply or destroy, naming resources by their logical names.
    type Op: Send + Sync;
    /// What the steps carry from one to the next: the ids of what exists, found by `observe`
    /// or made by an earlier step.
    type State: Send;

    /// Reads what the stack has: for an apply with `inputs`, for a destroy (everything the
    /// stack's tags name) without. Never writes.
    fn observe(
        &self,
        cx: &Context,
        inputs: Option<&Self::Inputs>,
    ) -> impl Future<Output = Result<Self::Observed, Self::Error>> + Send;

    /// What the configuration wants for `inputs`. May read what the account offers (its
    /// zones), never what the stack has (that is `observed`).
    fn desired(
        &self,
        cx: &Context,
        inputs: &Self::Inputs,
        observed: &Self::Observed,
    ) -> impl Future<Output = Result<Self::Desired, Self::Error>> + Send;

    /// The steps that make `observed` into `desired`, in order. Pure.
    fn diff(
        &self,
        cx: &Context,
        desired: &Self::Desired,
        observed: &Self::Observed,
    ) -> Result<Vec<Self::Op>, Self::Error>;

    /// The steps that delete what `observed` holds, in the order AWS needs. Pure; an error is
    /// a refusal (a bucket that still holds logs), made before anything is deleted.
    fn teardown(
        &self,
        cx: &Context,
        observed: &Self::Observed,
    ) -> Result<Vec<Self::Op>, Self::Error>;

    /// How a step shows in a plan: nothing (a wait), one change, or several.
    fn change(&self, cx: &Context, op: &Self::Op) -> Vec<Change>;

    /// How each of `ops` shows in a plan, one entry per step. By default each step on its own
    /// ([`Pipeline::change`]); a module whose steps read differently together (a policy put on
    /// a role the same run creates is part of creating it) says so here.
    fn changes(&self, cx: &Context, ops: &[Self::Op]) -> Vec<Vec<Change>> {
        ops.iter().map(|op| self.change(cx, op)).collect()
    }

    /// What a destroy deliberately leaves (a log group that holds logs), shown as kept.
    fn kept(&self, _cx: &Context, _observed: &Self::Observed) -> Vec<Change> {
        Vec::new()
    }

    /// The state the first step starts from: what `observed` found (and, for an apply, what
    /// `desired` the steps make).
    fn state(
        &self,
        cx: &Context,
        desired: Option<&Self::Desired>,
        observed: &Self::Observed,
    ) -> Self::State;

    /// Carries out one step; returns the id of the resource it made or changed, when it has
    /// one (for progress).
    fn step<'a>(
        &'a self,
        cx: &'a Context,
        op: &'a Self::Op,
        state: &'a mut Self::State,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send + 'a;

    /// The outputs once every step ran (it may read back what a step made).
    fn outputs(
        &self,
        cx: &Context,
        desired: &Self::Desired,
        state: Self::State,
    ) -> impl Future<Output = Result<Self::Outputs, Self::Error>> + Send;

    /// What exists of the module in `observed` (an apply's read), every resource once as a
    /// destroy names it. By default the teardown's changes; a module whose apply reads less
    /// than its destroy (one revision of many) adds what the destroy would find.
    fn existing(&self, cx: &Context, observed: &Self::Observed) -> Result<Plan, Self::Error> {
        Ok(plan(self, cx, &self.teardown(cx, observed)?))
    }

    /// What `plan_destroy` shows. By default the teardown's steps and what is kept; a module
    /// whose teardown can refuse shows the refusal instead of failing the preview.
    fn preview_destroy(
        &self,
        cx: &Context,
        observed: &Self::Observed,
    ) -> Result<Plan, Self::Error> {
        let mut plan = plan(self, cx, &self.teardown(cx, observed)?);
        plan.changes.extend(self.kept(cx, observed));
        Ok(plan)
    }
}

/// One read of the account for an apply: what exists, what is wanted and the steps between.
#[derive(Debug)]
pub struct Observation<P: Pipeline + ?Sized> {
    /// What the configuration wants.
    pub desired: P::Desired,
    /// What the stack has.
    pub observed: P::Observed,
    /// The steps an apply takes, in order.
    pub ops: Vec<P::Op>,
}

impl<P: Pipeline + ?Sized> Observation<P> {
    /// The plan of the steps.
    pub fn plan(&self, p: &P, cx: &Context) -> Plan {
        plan(p, cx, &self.ops)
    }

    /// The state the first step starts from.
    pub fn state(&self, p: &P, cx: &Context) -> P::State {
        p.state(cx, Some(&self.desired), &self.observed)
    }

    /// What exists of the module, every resource once as a destroy names it: for the summary
    /// of what an apply left unchanged, from this same read. What only a destroy reads (what a
    /// bucket holds, whether a log group holds logs) is not in it: a destroy's preview is
    /// [`Module::plan_destroy`].
    pub fn existing(&self, p: &P, cx: &Context) -> Result<Plan, P::Error> {
        p.existing(cx, &self.observed)
    }
}

/// One read of a module for a deploy's preview: what apply would change, what exists, and
/// the outputs when the module is (fully) deployed.
#[derive(Debug, Clone)]
pub struct Survey<O> {
    /// What apply would change.
    pub plan: Plan,
    /// What exists ([`Observation::existing`]).
    pub existing: Plan,
    /// The outputs, when everything the outputs name exists.
    pub outputs: Option<O>,
}

/// Observes for an apply with `inputs`: reads, works out what is wanted, diffs.
pub async fn observe<P: Pipeline + ?Sized>(
    p: &P,
    cx: &Context,
    inputs: &P::Inputs,
) -> Result<Observation<P>, P::Error> {
    // On the heap: in a debug build the SDK's futures nested this deep outgrow a 2 MiB
    // thread stack.
    let observed = Box::pin(p.observe(cx, Some(inputs))).await?;
    let desired = Box::pin(p.desired(cx, inputs, &observed)).await?;
    let ops = p.diff(cx, &desired, &observed)?;
    Ok(Observation {
        desired,
        observed,
        ops,
    })
}

/// The plan of `ops`: each step's changes, in order.
pub fn plan<P: Pipeline + ?Sized>(p: &P, cx: &Context, ops: &[P::Op]) -> Plan {
    Plan {
        changes: p.changes(cx, ops).into_iter().flatten().collect(),
    }
}

/// Runs `ops` in order from `state`, reporting each step's changes as started and finished to
/// the context's progress sink. Stops at the first failed step (running it again resumes: the
/// next observe finds what was made).
pub async fn run<P: Pipeline + ?Sized>(
    p: &P,
    cx: &Context,
    ops: &[P::Op],
    state: &mut P::State,
) -> Result<(), P::Error> {
    for (op, changes) in ops.iter().zip(p.changes(cx, ops)) {
        // Boxed: the futures of AWS calls are large, and a debug build's stack is small.
        reported(cx.progress(), &changes, Box::pin(p.step(cx, op, state))).await?;
    }
    Ok(())
}

impl<P: Pipeline> Module for P {
    const NAME: &'static str = <P as Pipeline>::NAME;
    type Inputs = <P as Pipeline>::Inputs;
    type Outputs = <P as Pipeline>::Outputs;
    type Error = <P as Pipeline>::Error;

    async fn plan(&self, cx: &Context, inputs: &P::Inputs) -> Result<Plan, P::Error> {
        Ok(observe(self, cx, inputs).await?.plan(self, cx))
    }

    async fn apply(&self, cx: &Context, inputs: &P::Inputs) -> Result<P::Outputs, P::Error> {
        let seen = observe(self, cx, inputs).await?;
        let mut state = seen.state(self, cx);
        run(self, cx, &seen.ops, &mut state).await?;
        self.outputs(cx, &seen.desired, state).await
    }

    async fn plan_destroy(&self, cx: &Context) -> Result<Plan, P::Error> {
        let observed = Box::pin(self.observe(cx, None)).await?;
        self.preview_destroy(cx, &observed)
    }

    async fn destroy(&self, cx: &Context) -> Result<Plan, P::Error> {
        let observed = Box::pin(self.observe(cx, None)).await?;
        let ops = self.teardown(cx, &observed)?;
        let mut state = self.state(cx, None, &observed);
        run(self, cx, &ops, &mut state).await?;
        let mut done = plan(self, cx, &ops);
        done.changes.extend(self.kept(cx, &observed));
        Ok(done)
    }
}
