//! Destroy against moto is all or nothing: its preflight finds everything that would stop it
//! part way (deletion protection, a bucket that holds logs) before the first delete, names
//! each once, and deletes nothing; with both allowed it deletes everything.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod common;

use infra::{Action, Context, StackName};
use stackproof_stack::{Blocker, Error, StackConfig};

fn context() -> Context {
    let moto = sandbox::MotoServer::shared().expect("moto starts (run `cargo xtask setup` first)");
    moto.context(StackName::new("allornothing").unwrap(), "eu-west-1")
        .interceptor(moto.fresh_account())
        .waits(sandbox::TEST_WAITS)
        .build()
}

fn stack(extra: &str) -> stackproof_stack::Stack {
    StackConfig::from_toml(&format!("name = \"allornothing\"\n{extra}"), "stack.toml")
        .unwrap()
        .validate()
        .unwrap()
}

fn deletes(plan: &infra::Plan) -> usize {
    plan.changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .count()
}

#[test]
fn destroy_deletes_nothing_when_something_would_stop_it_then_everything() {
    common::on_a_big_stack(all_or_nothing);
}

async fn all_or_nothing() {
    let cx = context();
    let protected = stack("[load-balancer]\ndeletion-protection = true\n");
    let outputs = protected.apply(&cx).await.unwrap();
    // An access log in the bucket, as the load balancer delivers them.
    let s3: aws_sdk_s3::Client = infra::client!(&cx, aws_sdk_s3);
    s3.put_object()
        .bucket(&outputs.storage.log_bucket)
        .key(format!("{}/AWSLogs/log.gz", outputs.storage.log_prefix))
        .body(
            b"h2 2026-12-06T00:00:00Z app/x 1.2.3.4:5 - 0 0 0 200"
                .to_vec()
                .into(),
        )
        .send()
        .await
        .unwrap();
    let before = deletes(&protected.plan_destroy(&cx).await.unwrap());
    assert!(before >= 30, "{before}");

    let err = protected.destroy(&cx, false).await.unwrap_err();
    let Error::Preflight(blockers) = &err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(
            blockers.as_slice(),
            [Blocker::DeletionProtected, Blocker::Storage(_)]
        ),
        "{blockers:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("nothing was deleted: destroy would stop part way\n  - the load balancer has deletion protection on"),
        "{text}"
    );
    assert_eq!(text.matches("is not empty").count(), 1, "{text}");
    // Nothing was deleted.
    assert_eq!(deletes(&protected.plan_destroy(&cx).await.unwrap()), before);

    // Protection overridden: the bucket alone still stops it, before the first delete.
    let err = protected.destroy(&cx, true).await.unwrap_err().to_string();
    assert!(
        err.starts_with("nothing was deleted: destroy would stop part way: bucket \""),
        "{err}"
    );
    assert_eq!(deletes(&protected.plan_destroy(&cx).await.unwrap()), before);

    // Both allowed: everything goes.
    let forced =
        stack("[load-balancer]\ndeletion-protection = true\n[storage]\nforce-destroy = true\n");
    forced.destroy(&cx, true).await.unwrap();
    assert_eq!(deletes(&forced.plan_destroy(&cx).await.unwrap()), 0);
}
