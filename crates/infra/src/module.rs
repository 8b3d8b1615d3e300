//! The one trait every slice of the stack implements.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Context, Plan};

/// One slice of the stack: a set of AWS resources that are planned, applied and destroyed
/// together.
///
/// Implementations find their resources by the tags in [`crate::tags`], never by ids kept
/// elsewhere: `apply` after a crash resumes, and `destroy` works from the stack name alone.
pub trait Module {
    /// Short name, also the value of the `stackproof:module` tag.
    const NAME: &'static str;
    /// What the module needs from upstream modules (for example subnet ids).
    type Inputs: Sync;
    /// What the module gives downstream modules and the user.
    type Outputs: Serialize + DeserializeOwned + Send;
    /// The module crate's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the account and says what `apply` would change. Never writes.
    fn plan(
        &self,
        cx: &Context,
        inputs: &Self::Inputs,
    ) -> impl Future<Output = Result<Plan, Self::Error>> + Send;

    /// Converges: creates what is missing, repairs what drifted, leaves what matches.
    /// Applying twice makes no change the second time.
    fn apply(
        &self,
        cx: &Context,
        inputs: &Self::Inputs,
    ) -> impl Future<Output = Result<Self::Outputs, Self::Error>> + Send;

    /// Reads the account and says what `destroy` would delete. Never writes.
    fn plan_destroy(&self, cx: &Context) -> impl Future<Output = Result<Plan, Self::Error>> + Send;

    /// Deletes everything of this module that carries the stack's tags, in the order AWS needs,
    /// and returns what it removed.
    fn destroy(&self, cx: &Context) -> impl Future<Output = Result<Plan, Self::Error>> + Send;
}
