//! Pushing to a real registry: Docker's distribution server (`docker-registry`) on loopback, a
//! server per test, started as moto is.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

use sandbox::RegistryServer;
use stackproof_image::{
    Architecture, Auth, Image, ImageSpec, Reference, Registry, placeholder_program,
};

fn registry(server: &RegistryServer, repository: &str) -> Registry {
    Registry::new(
        Reference::parse(&format!("{}/{repository}", server.url())).unwrap(),
        Auth::None,
    )
    .unwrap()
}

fn image(extra: &[u8]) -> Image {
    let mut program = placeholder_program(Architecture::Amd64);
    program.extend_from_slice(extra);
    let mut spec = ImageSpec::new(program, "/sample-app", Architecture::Amd64);
    spec.exposed_ports = vec![8080];
    Image::build(&spec).unwrap()
}

#[tokio::test]
async fn a_pushed_image_reads_back_byte_for_byte_and_a_second_push_sends_no_blob() {
    let server = RegistryServer::start().expect("docker-registry starts (run `cargo xtask setup`)");
    let registry = registry(&server, "stackproof/sample-app");
    let built = image(b"v1");
    assert_eq!(registry.manifest_digest("latest").await.unwrap(), None);

    let first = registry.push(&built, "latest").await.unwrap();
    assert_eq!(first.manifest_digest, built.manifest.digest);
    assert_eq!(
        first.uploaded,
        [built.layers[0].digest.clone(), built.config.digest.clone()]
    );
    assert!(first.present.is_empty());
    assert_eq!(
        first.bytes_uploaded,
        (built.layers[0].data.len() + built.config.data.len()) as u64
    );

    // What the registry serves is what was built: the tag names the manifest, the blobs are
    // the bytes.
    assert_eq!(
        registry.manifest_digest("latest").await.unwrap(),
        Some(built.manifest.digest.clone())
    );
    for blob in built.blobs() {
        assert_eq!(
            registry.blob(&blob.digest).await.unwrap(),
            Some(blob.data.clone()),
            "{}",
            blob.digest
        );
    }

    // The same program again: nothing uploaded, same image.
    let again = registry.push(&built, "latest").await.unwrap();
    assert!(again.uploaded.is_empty(), "{again:?}");
    assert_eq!(again.present.len(), 2);
    assert_eq!(again.bytes_uploaded, 0);
    assert_eq!(again.manifest_digest, built.manifest.digest);

    // Another tag of the same image costs no blob either.
    let tagged = registry.push(&built, "v1.0.0").await.unwrap();
    assert!(tagged.uploaded.is_empty());
    assert_eq!(
        registry.manifest_digest("v1.0.0").await.unwrap(),
        Some(built.manifest.digest.clone())
    );

    // A changed program moves the tag: a new layer and config, the old tag elsewhere stays.
    let changed = image(b"v2");
    let moved = registry.push(&changed, "latest").await.unwrap();
    assert_eq!(moved.uploaded.len(), 2);
    assert_eq!(
        registry.manifest_digest("latest").await.unwrap(),
        Some(changed.manifest.digest.clone())
    );
    assert_eq!(
        registry.manifest_digest("v1.0.0").await.unwrap(),
        Some(built.manifest.digest)
    );
}

#[tokio::test]
async fn failures_name_the_request_and_the_registry_s_reason() {
    let server = RegistryServer::start().expect("docker-registry starts (run `cargo xtask setup`)");
    let registry = registry(&server, "stackproof/sample-app");
    // A bad tag is refused before any request.
    let err = registry.push(&image(b""), "-bad").await.unwrap_err();
    assert!(err.to_string().starts_with("tag = \"-bad\":"), "{err}");

    // A manifest naming blobs the registry lacks is refused by the registry, with its code.
    let orphan = image(b"orphan");
    let url = format!("{}/v2/stackproof/sample-app/manifests/orphan", server.url());
    // Push only the config so the layer is missing, then the manifest that names it.
    let config_only = Image {
        layers: Vec::new(),
        config: orphan.config.clone(),
        manifest: orphan.manifest.clone(),
    };
    let err = registry.push(&config_only, "orphan").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("PUT {url}: HTTP 400: ")),
        "{text}"
    );
    assert!(text.contains("MANIFEST_BLOB_UNKNOWN"), "{text}");
    assert_eq!(registry.manifest_digest("orphan").await.unwrap(), None);

    // Nothing listens: the error names the URL.
    let port = server.url().rsplit(':').next().unwrap().to_owned();
    drop(server);
    let gone = Registry::new(
        Reference::parse(&format!("http://127.0.0.1:{port}/stackproof/sample-app")).unwrap(),
        Auth::None,
    )
    .unwrap();
    let err = gone.push(&orphan, "latest").await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "HEAD http://127.0.0.1:{port}/v2/stackproof/sample-app/blobs/sha256:"
        )) && err.ends_with(": cannot connect"),
        "{err}"
    );
}
