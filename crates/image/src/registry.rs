//! Pushing to a registry through the Distribution HTTP API (`/v2/`): what ECR and Docker's
//! `registry` serve. Blobs the registry has are not sent again (`HEAD` first); new ones go up
//! in one `POST` + `PATCH` + `PUT`; the manifest last, under the tag. One connection per request
//! (a push is a handful of them), HTTPS through rustls with the system's roots.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{Error, Image};

/// How long one request may take, upload included.
const REQUEST_DEADLINE: Duration = Duration::from_secs(300);

/// HTTP or HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (a registry on loopback).
    Http,
    /// HTTPS (ECR, any public registry).
    Https,
}

/// A repository in a registry: `https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/web/app`,
/// or the same without a scheme (HTTPS then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// The registry's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The repository's name (`web/app`).
    pub repository: String,
}

impl Reference {
    /// Parses `[http://|https://]host[:port]/repository`.
    pub fn parse(text: &str) -> Result<Reference, Error> {
        let invalid = |why: &str| Error::Invalid {
            field: "registry",
            value: text.to_owned(),
            allowed: format!(
                "[http://|https://]host[:port]/repository, such as \"123456789012.dkr.ecr.eu-west-1.amazonaws.com/web/app\" or \"http://127.0.0.1:5000/web/app\" ({why})"
            ),
        };
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if text.contains("://") {
            return Err(invalid("only http and https"));
        } else {
            (Scheme::Https, text)
        };
        let Some((authority, repository)) = rest.split_once('/') else {
            return Err(invalid("no repository"));
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid("the port is not 1 to 65535"))?,
            ),
            None => (
                authority,
                match scheme {
                    Scheme::Http => 80,
                    Scheme::Https => 443,
                },
            ),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(invalid("the host is not a name or IPv4 address"));
        }
        // Distribution's repository name grammar: lowercase components joined by `/`, each
        // alphanumerics separated by one `.`, `_`, `__` or runs of `-`.
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && !c.contains("..")
                && !c.contains("._")
                && !c.contains("_.")
                && !c.contains("___")
        };
        if repository.len() > 255 || !repository.split('/').all(component_ok) {
            return Err(invalid(
                "the repository is not lowercase path components of a-z, 0-9 and single separators",
            ));
        }
        Ok(Reference {
            scheme,
            host: host.to_owned(),
            port,
            repository: repository.to_owned(),
        })
    }

    fn origin(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.authority())
    }

    /// `host` on the scheme's default port, else `host:port`: the URL's authority and the
    /// `Host` header (the registry builds upload locations from it).
    fn authority(&self) -> String {
        let default = matches!(
            (self.scheme, self.port),
            (Scheme::Http, 80) | (Scheme::Https, 443)
        );
        if default {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.origin(), self.repository)
    }
}

/// How to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Not at all (a registry on loopback).
    None,
    /// HTTP Basic with the base64 of `user:password`, as ECR's `GetAuthorizationToken` returns
    /// it (`authorizationToken`, user `AWS`, valid 12 hours).
    Basic(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic(_) => f.write_str("Basic(..)"),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// Digests of the blobs sent.
    pub uploaded: Vec<String>,
    /// Digests of the blobs the registry had already.
    pub present: Vec<String>,
    /// Bytes sent in blobs.
    pub bytes_uploaded: u64,
    /// The manifest's digest (the image's), as the registry confirmed it.
    pub manifest_digest: String,
}

/// Checks a tag against the registry grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), Error> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "tag",
            value: tag.to_owned(),
            allowed: "1 to 128 of A-Z, a-z, 0-9, _ . -, not starting with . or -".to_owned(),
        })
    }
}

/// One repository of one registry.
#[derive(Debug, Clone)]
pub struct Registry {
    reference: Reference,
    auth: Auth,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An answer: status, the headers it needs, body.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    digest: Option<String>,
    body: Bytes,
}

impl Registry {
    /// A client for `reference`. HTTPS trusts the system's root certificates.
    pub fn new(reference: Reference, auth: Auth) -> Result<Self, Error> {
        let tls = match reference.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A root that does not parse is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Http {
                        method: "TLS".into(),
                        url: reference.origin(),
                        message: e.to_string(),
                    })?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Some(Arc::new(config))
            }
        };
        Ok(Self {
            reference,
            auth,
            tls,
        })
    }

    /// The repository this pushes to.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// Pushes `image` as `tag`: every blob the registry lacks, then the manifest.
    pub async fn push(&self, image: &Image, tag: &str) -> Result<PushReport, Error> {
        check_tag(tag)?;
        let mut report = PushReport {
            uploaded: Vec::new(),
            present: Vec::new(),
            bytes_uploaded: 0,
            manifest_digest: String::new(),
        };
        for blob in image.blobs() {
            if self.has_blob(&blob.digest).await? {
                report.present.push(blob.digest.clone());
                continue;
            }
            self.upload(&blob.digest, blob.data.clone()).await?;
            report.uploaded.push(blob.digest.clone());
            report.bytes_uploaded += blob.data.len() as u64;
        }
        let path = format!("/v2/{}/manifests/{tag}", self.reference.repository);
        let answer = self
            .send(
                Method::PUT,
                &path,
                Some(image.manifest.media_type),
                image.manifest.data.clone(),
            )
            .await?;
        let answer = expect(answer, &[StatusCode::CREATED], "PUT", &self.url(&path))?;
        let confirmed = answer
            .digest
            .unwrap_or_else(|| image.manifest.digest.clone());
        if confirmed != image.manifest.digest {
            return Err(Error::Http {
                method: "PUT".into(),
                url: self.url(&path),
                message: format!(
                    "the registry stored the manifest as {confirmed}, not as {} (it rewrote it)",
                    image.manifest.digest
                ),
            });
        }
        report.manifest_digest = confirmed;
        Ok(report)
    }

    /// The digest of the manifest `tag` names, or `None` when there is no such tag.
    pub async fn manifest_digest(&self, tag: &str) -> Result<Option<String>, Error> {
        check_tag(tag)?;
        let path = format!("/v2/{}/manifests/{tag}", self.reference.repository);
        let answer = self.send(Method::HEAD, &path, None, Bytes::new()).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let answer = expect(answer, &[StatusCode::OK], "HEAD", &self.url(&path))?;
        Ok(answer.digest)
    }

    /// The bytes of the blob `digest`, or `None` when the registry has none.
    pub async fn blob(&self, digest: &str) -> Result<Option<Bytes>, Error> {
        let path = format!("/v2/{}/blobs/{digest}", self.reference.repository);
        let mut answer = self.send(Method::GET, &path, None, Bytes::new()).await?;
        // Registries may redirect blob reads to storage; one hop on the same origin is
        // followed.
        if answer.status.is_redirection()
            && let Some(location) = answer.location.clone()
        {
            let next = self.same_origin_path(&location, "GET")?;
            answer = self.send(Method::GET, &next, None, Bytes::new()).await?;
        }
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(
            expect(answer, &[StatusCode::OK], "GET", &self.url(&path))?.body,
        ))
    }

    async fn has_blob(&self, digest: &str) -> Result<bool, Error> {
        let path = format!("/v2/{}/blobs/{digest}", self.reference.repository);
        let answer = self.send(Method::HEAD, &path, None, Bytes::new()).await?;
        match answer.status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => expect(answer, &[], "HEAD", &self.url(&path)).map(|_| false),
        }
    }

    /// `POST` opens an upload, `PATCH` sends the bytes, `PUT ?digest=` closes it.
    async fn upload(&self, digest: &str, data: Bytes) -> Result<(), Error> {
        let start = format!("/v2/{}/blobs/uploads/", self.reference.repository);
        let answer = self.send(Method::POST, &start, None, Bytes::new()).await?;
        let answer = expect(answer, &[StatusCode::ACCEPTED], "POST", &self.url(&start))?;
        let at = self.location(answer.location, "POST", &start)?;
        let answer = self
            .send(Method::PATCH, &at, Some("application/octet-stream"), data)
            .await?;
        let answer = expect(answer, &[StatusCode::ACCEPTED], "PATCH", &self.url(&at))?;
        let at = self.location(answer.location, "PATCH", &at)?;
        let sep = if at.contains('?') { '&' } else { '?' };
        let close = format!("{at}{sep}digest={digest}");
        let answer = self
            .send(
                Method::PUT,
                &close,
                Some("application/octet-stream"),
                Bytes::new(),
            )
            .await?;
        expect(answer, &[StatusCode::CREATED], "PUT", &self.url(&close))?;
        Ok(())
    }

    fn location(
        &self,
        location: Option<String>,
        method: &str,
        path: &str,
    ) -> Result<String, Error> {
        let location = location.ok_or_else(|| Error::Http {
            method: method.to_owned(),
            url: self.url(path),
            message: "the registry gave no Location for the upload".to_owned(),
        })?;
        self.same_origin_path(&location, method)
    }

    /// The path of `location` (absolute or relative) on this registry's origin; another
    /// origin is refused (the credentials are for this one).
    fn same_origin_path(&self, location: &str, method: &str) -> Result<String, Error> {
        if location.starts_with('/') {
            return Ok(location.to_owned());
        }
        let origin = self.reference.origin();
        match location.strip_prefix(&origin) {
            Some(rest) if rest.starts_with('/') => Ok(rest.to_owned()),
            _ => Err(Error::Http {
                method: method.to_owned(),
                url: location.to_owned(),
                message: format!("the registry sent the upload to another origin than {origin}"),
            }),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.reference.origin())
    }

    /// One request on a connection of its own.
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, Error> {
        let url = self.url(path);
        let name = method.to_string();
        let exchange = self.exchange(method, path, content_type, body, &url);
        match tokio::time::timeout(REQUEST_DEADLINE, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout {
                method: name,
                url,
                seconds: REQUEST_DEADLINE.as_secs(),
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        url: &str,
    ) -> Result<Answer, Error> {
        let name = method.to_string();
        let http_err = |message: String| Error::Http {
            method: name.clone(),
            url: url.to_owned(),
            message,
        };
        let r = &self.reference;
        let tcp = TcpStream::connect((r.host.as_str(), r.port))
            .await
            .map_err(|source| Error::Connect {
                method: name.clone(),
                url: url.to_owned(),
                source,
            })?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, r.authority())
            .header(header::USER_AGENT, "stackproof-image")
            .header(
                header::ACCEPT,
                format!(
                    "{}, application/vnd.docker.distribution.manifest.v2+json",
                    crate::media_type::MANIFEST
                ),
            )
            .header(header::CONTENT_LENGTH, body.len());
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        if let Auth::Basic(token) = &self.auth {
            request = request.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| http_err(format!("building the request: {e}")))?;
        let response = match &self.tls {
            None => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| http_err(e.to_string()))?;
                let driver = tokio::spawn(conn);
                let response = sender.send_request(request).await;
                let response = read(response, &http_err).await;
                driver.abort();
                response?
            }
            Some(config) => {
                let server = rustls::pki_types::ServerName::try_from(r.host.clone())
                    .map_err(|e| http_err(format!("{} is not a server name: {e}", r.host)))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(server, tcp)
                    .await
                    .map_err(|e| http_err(format!("TLS: {e}")))?;
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(|e| http_err(e.to_string()))?;
                let driver = tokio::spawn(conn);
                let response = sender.send_request(request).await;
                let response = read(response, &http_err).await;
                driver.abort();
                response?
            }
        };
        Ok(response)
    }
}

async fn read(
    response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
    http_err: &impl Fn(String) -> Error,
) -> Result<Answer, Error> {
    let response = response.map_err(|e| http_err(e.to_string()))?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let location = header("location");
    let digest = header("docker-content-digest");
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| http_err(format!("reading the answer: {e}")))?
        .to_bytes();
    Ok(Answer {
        status,
        location,
        digest,
        body,
    })
}

/// `answer` when its status is one of `ok`, else the registry's error (its `errors[]` codes
/// and messages when it sent them).
fn expect(answer: Answer, ok: &[StatusCode], method: &str, url: &str) -> Result<Answer, Error> {
    if ok.contains(&answer.status) {
        return Ok(answer);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| {
            let list: Vec<String> = v["errors"]
                .as_array()?
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e["code"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            (!list.is_empty()).then(|| list.join("; "))
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&answer.body);
            let text = text.trim();
            if text.is_empty() {
                answer
                    .status
                    .canonical_reason()
                    .unwrap_or("no reason given")
                    .to_owned()
            } else {
                text.chars().take(300).collect()
            }
        });
    let hint = if answer.status == StatusCode::UNAUTHORIZED {
        " (the registry wants credentials: for ECR, a token from GetAuthorizationToken, valid 12 hours)"
    } else {
        ""
    };
    Err(Error::Registry {
        method: method.to_owned(),
        url: url.to_owned(),
        status: answer.status.as_u16(),
        message: format!("{message}{hint}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_as_registries_name_them() {
        let ecr =
            Reference::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/stackproof/sample-app")
                .unwrap();
        assert_eq!(ecr.scheme, Scheme::Https);
        assert_eq!(ecr.port, 443);
        assert_eq!(ecr.host, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(ecr.repository, "stackproof/sample-app");
        assert_eq!(
            ecr.to_string(),
            "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/stackproof/sample-app"
        );
        let local = Reference::parse("http://127.0.0.1:5000/web/app").unwrap();
        assert_eq!((local.scheme, local.port), (Scheme::Http, 5000));
        assert_eq!(local.to_string(), "http://127.0.0.1:5000/web/app");
        for bad in [
            "ftp://x/y",
            "host-only",
            "http://h:0/r",
            "http://h:99999/r",
            "h/Upper",
            "h/a//b",
            "h/a..b",
            "h/-a",
            "h_x/r",
        ] {
            let err = Reference::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with(&format!("registry = {bad:?}:")), "{err}");
        }
    }

    #[test]
    fn tags_follow_the_registry_grammar() {
        for ok in ["latest", "v1.2.3", "_x", "a-b_c.d", &"x".repeat(128)] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_token_is_never_printed() {
        let auth = Auth::Basic("QVdTOnNlY3JldA==".into());
        assert_eq!(format!("{auth:?}"), "Basic(..)");
    }

    #[test]
    fn upload_locations_stay_on_the_registry() {
        let r = Registry::new(
            Reference::parse("http://127.0.0.1:5000/web/app").unwrap(),
            Auth::None,
        )
        .unwrap();
        assert_eq!(
            r.same_origin_path("/v2/web/app/blobs/uploads/u?x=1", "POST")
                .unwrap(),
            "/v2/web/app/blobs/uploads/u?x=1"
        );
        assert_eq!(
            r.same_origin_path("http://127.0.0.1:5000/v2/web/app/blobs/uploads/u", "POST")
                .unwrap(),
            "/v2/web/app/blobs/uploads/u"
        );
        assert!(
            r.same_origin_path("http://evil.example/v2/x", "POST")
                .is_err()
        );
    }
}
