//! What the stack's test binaries share.

/// Runs `test` on a multi-threaded runtime in a thread with a 64 MiB stack: the whole stack's
/// futures are larger than a test thread's stack in debug builds. A panic in `test` fails the
/// calling test.
#[allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.
pub(crate) fn on_a_big_stack<F>(test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()>,
{
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(test());
        })
        .unwrap()
        .join()
        .unwrap();
}
