//! The account is read once per run: the CLI reads it (STS GetCallerIdentity) to say where it
//! acts and puts it in the context; then neither the lock nor the storage module asks STS
//! again, and the names derived from the account use that one.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use infra::{Context, StackName};
use sandbox::MotoServer;
use stackproof_stack::StackConfig;
use stackproof_stack::lock::{LockStore, caller_account};

const REGION: &str = "eu-west-1";

/// GetCallerIdentity calls counted by `cx`.
fn identity_calls(cx: &Context) -> u64 {
    cx.calls()
        .snapshot()
        .by_operation
        .iter()
        .filter(|((_, operation), _)| operation == "GetCallerIdentity")
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_known_account_is_not_read_again_by_the_lock_or_the_modules() {
    let moto = MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    let in_account = moto.fresh_account();
    let builder = || {
        Context::builder(
            sandbox::sdk_config(moto.endpoint(), REGION),
            StackName::new("acct").unwrap(),
        )
        .interceptor(in_account.clone())
        .waits(sandbox::TEST_WAITS)
    };
    let stack = StackConfig::from_toml("name = \"acct\"\n", "stack.toml")
        .unwrap()
        .validate()
        .unwrap();

    // Not told: the lock and the storage module (no repository yet names it) each ask.
    let unknown = builder().build();
    LockStore::new(&unknown).await.unwrap();
    stack.plan(&unknown).await.unwrap();
    assert!(
        identity_calls(&unknown) >= 2,
        "{:?}",
        unknown.calls().snapshot()
    );

    // Told once: nobody asks, and the bucket names are the account's.
    let account = caller_account(&unknown).await.unwrap();
    let known = builder().account(&account).build();
    assert_eq!(known.account(), Some(account.as_str()));
    let lock = LockStore::new(&known).await.unwrap();
    assert_eq!(lock.account(), account);
    assert!(lock.bucket().contains(&account), "{}", lock.bucket());
    let plan = stack.plan(&known).await.unwrap();
    assert_eq!(identity_calls(&known), 0, "{:?}", known.calls().snapshot());
    let text = plan.to_string();
    assert!(
        text.contains(&format!("acct-alb-logs-{account}-{REGION}")),
        "{text}"
    );
}
