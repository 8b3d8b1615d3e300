//! TLS for `https://` targets: rustls (aws-lc-rs crypto, the provider the AWS SDK already
//! compiles) over the engine's raw TCP connections, trusting the system's roots plus the
//! certificates of `cacert`. The server name (SNI and certificate check) is always the URL's host,
//! whatever address `resolve` maps it to.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::record::ErrorKind;

/// What validation keeps of the TLS settings: the name to verify and the extra trusted CAs.
#[derive(Clone, Debug)]
pub(crate) struct TlsSpec {
    /// The URL's host: sent as SNI (when it is a DNS name) and checked against the certificate.
    pub(crate) server_name: ServerName<'static>,
    /// Certificates of `cacert`, trusted on top of the system's roots.
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
}

/// Reads a PEM file of CA certificates; the error says what is wrong with it.
pub(crate) fn read_cacert(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("a readable PEM file (cannot read it: {e})"))?;
    let mut certs = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(&text).enumerate() {
        let c = c.map_err(|e| {
            format!(
                "a PEM file of certificates (PEM block {} is broken: {e})",
                i + 1
            )
        })?;
        certs.push(c);
    }
    if certs.is_empty() {
        return Err(
            "a PEM file with at least one certificate (it has no \"BEGIN CERTIFICATE\" block)"
                .into(),
        );
    }
    let mut check = RootCertStore::empty();
    for (i, c) in certs.iter().enumerate() {
        check.add(c.clone()).map_err(|e| {
            format!(
                "a PEM file of X.509 CA certificates (certificate {} is not one: {e})",
                i + 1
            )
        })?;
    }
    Ok(certs)
}

/// The client configuration of a run: system roots (those that parse) plus `extra_roots`,
/// HTTP/1.1 by ALPN, TLS 1.2 and 1.3, session resumption on (a reopened connection resumes).
pub(crate) fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are skipped, like every TLS client does; with no system
    // roots at all only `cacert` is trusted.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for c in extra_roots {
        roots.add(c.clone())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Classifies an error of the TLS handshake: rustls errors (certificate, alert, a peer that does
/// not speak TLS) are `tls`; refused, reset and timeouts keep their kind; the rest is `tls` too.
pub(crate) fn handshake_error(e: &io::Error) -> ErrorKind {
    match ErrorKind::of_io(e) {
        ErrorKind::Other => ErrorKind::Tls,
        k => k,
    }
}

/// Whether an I/O error carries a rustls error (what tokio-rustls returns for TLS failures).
pub(crate) fn is_rustls(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}
