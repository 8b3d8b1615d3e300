//! `cargo xtask image` against a real registry on loopback (Docker's distribution server, as
//! ECR's endpoint speaks the same API): the sample-app built statically and pushed, a second
//! push that sends nothing, and inputs refused before anything is built or sent.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod common;

use common::{temp_dir, text, xtask};
use sandbox::RegistryServer;

#[test]
fn the_static_sample_app_is_pushed_once_and_then_found_there() {
    let dir = temp_dir("image");
    let state = dir.0.as_path();
    let server = RegistryServer::start().expect("docker-registry starts (run `cargo xtask setup`)");
    let repository = format!("{}/stackproof/sample-app", server.url());

    // No --binary: the sample-app, built statically linked (the image has no libc).
    let out = xtask(state, &["image", "--registry", &repository]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("for amd64"), "{shown}");
    assert!(
        shown.contains(&format!("Pushed {repository}:latest (sha256:"))
            && shown.contains("): 2 blobs uploaded ("),
        "{shown}"
    );
    let digest = shown
        .split("Pushed ")
        .nth(1)
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|rest| rest.split(')').next())
        .unwrap()
        .to_owned();

    // Unchanged program, same image: nothing uploaded, the same digest.
    let out = xtask(state, &["image", "--registry", &repository]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(&format!(
            "Pushed {repository}:latest ({digest}): 0 blobs uploaded (0 bytes), 2 already there"
        )),
        "{shown}"
    );

    // What the registry holds under the tag is that image.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = image::Registry::new(
        image::Reference::parse(&repository).unwrap(),
        image::Auth::None,
    )
    .unwrap();
    assert_eq!(
        runtime
            .block_on(registry.manifest_digest("latest"))
            .unwrap(),
        Some(digest)
    );
}

#[test]
fn bad_inputs_are_refused_before_anything_is_built_or_sent() {
    let dir = temp_dir("image-usage");
    let state = dir.0.as_path();
    let placeholder = state.join("program");
    std::fs::write(
        &placeholder,
        image::placeholder_program(image::Architecture::Amd64),
    )
    .unwrap();
    let placeholder = placeholder.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["image", "--tag=-x", "--registry", "http://127.0.0.1:9/a"],
            "error: tag = \"-x\": 1 to 128 of",
        ),
        (
            &["image", "--registry", "ftp://127.0.0.1/a"],
            "error: registry = \"ftp://127.0.0.1/a\":",
        ),
        (
            &["image", "--binary", placeholder],
            "error: the sandbox's ECR (moto) stores no images",
        ),
        // A dynamically linked program would not start in an image without libc.
        (
            &[
                "image",
                "--binary",
                "/bin/sh",
                "--registry",
                "http://127.0.0.1:9/a",
            ],
            "needs the loader /lib",
        ),
    ];
    for (args, expected) in cases {
        let out = xtask(state, args);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {shown}");
        assert!(shown.contains(expected), "{args:?}: {shown}");
        assert!(!shown.contains("Pushed"), "{args:?}: {shown}");
    }
    // Nothing listens on the port: the error names the request.
    let out = xtask(
        state,
        &[
            "image",
            "--binary",
            placeholder,
            "--registry",
            "http://127.0.0.1:9/a",
        ],
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(
            "pushing to http://127.0.0.1:9/a: HEAD http://127.0.0.1:9/v2/a/blobs/sha256:"
        ),
        "{shown}"
    );
}
