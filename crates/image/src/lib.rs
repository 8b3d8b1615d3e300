//! OCI images without Docker: a statically linked program on an empty base, assembled in memory
//! (one gzip layer, an image config, an OCI manifest; byte for byte the same for the same
//! program, so a push of an unchanged program uploads nothing), and pushed to a registry over
//! the Distribution HTTP API that ECR and Docker's `registry` speak.
//!
//! ```no_run
//! # async fn demo(program: Vec<u8>) -> Result<(), stackproof_image::Error> {
//! use stackproof_image::{Architecture, Auth, Image, ImageSpec, Reference, Registry};
//!
//! let image = Image::build(&ImageSpec::new(program, "/sample-app", Architecture::Amd64))?;
//! let registry = Registry::new(
//!     Reference::parse("http://127.0.0.1:5000/stackproof/sample-app")?,
//!     Auth::None,
//! )?;
//! let report = registry.push(&image, "latest").await?;
//! println!("pushed {} ({} blobs uploaded)", report.manifest_digest, report.uploaded.len());
//! # Ok(())
//! # }
//! ```

mod error;
mod oci;
mod registry;

pub use error::Error;
pub use oci::{
    Architecture, Blob, Image, ImageSpec, media_type, placeholder_program, sha256_digest,
};
pub use registry::{Auth, PushReport, Reference, Registry, Scheme, check_tag};
