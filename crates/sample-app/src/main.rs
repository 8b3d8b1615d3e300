//! `sample-app`: serve (default) or `sample-app health` (exit 0 when the local server is healthy).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    stackproof_sample_app::main_with_args(std::env::args().skip(1)).await
}
