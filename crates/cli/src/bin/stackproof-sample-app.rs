//! `stackproof-sample-app`: the sample-app, installed beside `stackproof` by `cargo install`;
//! the sandbox's data plane runs it as the service's tasks. Same arguments as `sample-app`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sample_app::main_with_args(std::env::args().skip(1)).await
}
