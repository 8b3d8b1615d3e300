//! The request path: pick a target, forward on a pooled keep-alive connection, stream the
//! answer back, and record the outcome; or answer like an ALB (502, 503, 504).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::node::NodeState;
use crate::stats::Pending;
use crate::target::{Member, Shared};
use crate::{MAX_IDLE_PER_TARGET, lock};

/// The response body: a target's streamed body, or a load balancer page.
pub(crate) type ProxyBody = Either<TargetBody, Full<Bytes>>;

pub(crate) const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        // Headers named by `Connection` are hop-by-hop too.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Decrements a target's in-flight count when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Member>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A target's response body, streamed; records the request and returns the connection to the
/// pool when it ends.
#[derive(Debug)]
pub(crate) struct TargetBody {
    pub(crate) inner: Incoming,
    pub(crate) conn: Option<SendRequest<Incoming>>,
    pub(crate) pending: Option<Pending>,
    pub(crate) sent: u64,
    pub(crate) _in_flight: InFlight,
}

impl TargetBody {
    fn finish(&mut self, complete: bool) {
        if let Some(conn) = self.conn.take()
            && complete
            && self._in_flight.0.reachable.load(Ordering::Relaxed)
        {
            let mut pool = lock(&self._in_flight.0.pool);
            if pool.len() < MAX_IDLE_PER_TARGET {
                pool.push(conn);
            }
        }
        if let Some(pending) = self.pending.take() {
            pending.record(self.sent);
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
            }
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TargetBody {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

pub(crate) fn elb_page(status: StatusCode) -> Response<ProxyBody> {
    let body: &'static [u8] = match status.as_u16() {
        502 => b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
        503 => b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n",
        _ => b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n",
    };
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("awselb/2.0"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    response
}

/// Why a request got no target response.
pub(crate) enum Failure {
    /// 502.
    Refused,
    /// 504.
    Timeout,
}

/// A cut-off node never answers: the request waits until the client gives up (and closes the
/// connection, which drops this future).
async fn unanswered(node: &NodeState) {
    if !node.is_reachable() {
        std::future::pending::<()>().await;
    }
}

pub(crate) async fn forward(
    shared: Arc<Shared>,
    node: Arc<NodeState>,
    request: Request<Incoming>,
    client: SocketAddr,
    client_ip: HeaderValue,
) -> Response<ProxyBody> {
    unanswered(&node).await;
    let response = route(shared, request, client, client_ip).await;
    // Cut off while the target answered: the answer does not reach the client either.
    unanswered(&node).await;
    response
}

async fn route(
    shared: Arc<Shared>,
    mut request: Request<Incoming>,
    client: SocketAddr,
    client_ip: HeaderValue,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let created = SystemTime::now();
    let (request_line, user_agent, received_bytes) = access_log_fields(&shared, &request);
    let member = {
        let routing = shared.routing.load();
        if routing.targets.is_empty() {
            None
        } else {
            let i = shared.next.fetch_add(1, Ordering::Relaxed) % routing.targets.len();
            Some(routing.targets[i].clone())
        }
    };
    let mut pending = Pending {
        shared: shared.clone(),
        member: member.clone(),
        client,
        start,
        created,
        request_line,
        user_agent,
        received_bytes,
        request_processing: None,
        target_processing: None,
        target_status: None,
        elb_status: 503,
        header_bytes: 0,
        error_reason: None,
    };
    let Some(member) = member else {
        let response = elb_page(StatusCode::SERVICE_UNAVAILABLE);
        pending.header_bytes = 120;
        let len = response.body().size_hint().exact().unwrap_or(0);
        pending.record(len);
        return response;
    };
    member.in_flight.fetch_add(1, Ordering::AcqRel);
    let in_flight = InFlight(member.clone());

    // Headers the target sees.
    forwarding_headers(&shared, request.headers_mut(), client_ip);

    match send(&shared, &member, request, &mut pending).await {
        Ok((mut response, conn)) => {
            pending.target_processing = pending
                .request_processing
                .map(|sent| start.elapsed().saturating_sub(sent));
            pending.target_status = Some(response.status().as_u16());
            pending.elb_status = response.status().as_u16();
            strip_hop_by_hop(response.headers_mut());
            pending.header_bytes = 17
                + response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
                    .sum::<u64>();
            let (parts, body) = response.into_parts();
            let body = TargetBody {
                inner: body,
                conn: Some(conn),
                pending: Some(pending),
                sent: 0,
                _in_flight: in_flight,
            };
            Response::from_parts(parts, Either::Left(body))
        }
        Err(failure) => {
            drop(in_flight);
            let status = match failure {
                Failure::Refused => StatusCode::BAD_GATEWAY,
                Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            };
            pending.elb_status = status.as_u16();
            let response = elb_page(status);
            pending.header_bytes = 120;
            let len = response.body().size_hint().exact().unwrap_or(0);
            pending.record(len);
            response
        }
    }
}

/// The access log's request line, user agent and received bytes of `request`.
fn access_log_fields(shared: &Shared, request: &Request<Incoming>) -> (String, String, u64) {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
        .unwrap_or("-");
    let request_line = format!(
        "{} http://{}:{}{} {:?}",
        request.method(),
        host,
        shared.forwarded_port.to_str().unwrap_or("80"),
        request.uri().path_and_query().map_or("/", |p| p.as_str()),
        request.version(),
    );
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let received_bytes = request_line.len() as u64
        + request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
            .sum::<u64>()
        + request.body().size_hint().exact().unwrap_or(0);
    (request_line, user_agent, received_bytes)
}

/// What a target sees of the client and the listener, as ELB sends it: hop-by-hop headers
/// removed, `X-Forwarded-For` (appended to), `-Proto` and `-Port`.
fn forwarding_headers(shared: &Shared, headers: &mut HeaderMap, client_ip: HeaderValue) {
    strip_hop_by_hop(headers);
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(existing) => HeaderValue::from_str(&format!(
            "{existing}, {}",
            client_ip.to_str().unwrap_or("-")
        ))
        .unwrap_or(client_ip),
        None => client_ip,
    };
    headers.insert(HeaderName::from_static("x-forwarded-for"), xff);
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-port"),
        shared.forwarded_port.clone(),
    );
}

/// Sends `request` to `member` on a pooled or new connection. Sets `request_processing` (time
/// until the request could be sent).
pub(crate) async fn send(
    shared: &Shared,
    member: &Member,
    request: Request<Incoming>,
    pending: &mut Pending,
) -> Result<(Response<Incoming>, SendRequest<Incoming>), Failure> {
    let idle = shared.idle_timeout;
    let mut request = request;
    for attempt in 0..2 {
        if !member.reachable.load(Ordering::Relaxed) {
            // Partitioned: SYNs (or data on an open connection) go unanswered.
            tokio::time::sleep(shared.connect_timeout.min(idle)).await;
            pending.error_reason = Some("TargetConnectionError");
            return Err(Failure::Timeout);
        }
        let mut conn = match pooled(member) {
            Some(conn) => conn,
            None => match connect(member.addr, shared.connect_timeout).await {
                Ok(conn) => conn,
                Err(failure) => {
                    pending.error_reason = Some("TargetConnectionError");
                    return Err(failure);
                }
            },
        };
        if conn.ready().await.is_err() {
            continue;
        }
        pending.request_processing = Some(pending.start.elapsed());
        let sent_at = Instant::now();
        let cut = member.cut.notified();
        tokio::pin!(cut);
        cut.as_mut().enable();
        let sent = tokio::select! {
            sent = tokio::time::timeout(idle, conn.try_send_request(request)) => sent,
            () = cut => {
                drop(conn);
                if member.gone.load(Ordering::Acquire) {
                    // The deregistration delay ended: ALB closes the connection.
                    pending.error_reason = Some("TargetConnectionError");
                    return Err(Failure::Refused);
                }
                // Partitioned mid-request: the answer never arrives; wait out the idle timeout.
                tokio::time::sleep_until(sent_at + idle).await;
                pending.error_reason = Some("TargetIdleTimeout");
                return Err(Failure::Timeout);
            }
        };
        match sent {
            Ok(Ok(response)) => return Ok((response, conn)),
            Ok(Err(mut err)) => match err.take_message() {
                // The connection closed before the request went out: retry once on a new one.
                Some(unsent) if attempt == 0 => {
                    request = unsent;
                    lock(&member.pool).clear();
                }
                _ => {
                    pending.error_reason = Some("TargetResponseError");
                    return Err(Failure::Refused);
                }
            },
            Err(_) => {
                pending.error_reason = Some("TargetIdleTimeout");
                return Err(Failure::Timeout);
            }
        }
    }
    pending.error_reason = Some("TargetConnectionError");
    Err(Failure::Refused)
}

/// An idle pooled connection that is still open.
pub(crate) fn pooled(member: &Member) -> Option<SendRequest<Incoming>> {
    let mut pool = lock(&member.pool);
    while let Some(conn) = pool.pop() {
        if !conn.is_closed() {
            return Some(conn);
        }
    }
    None
}

pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: std::time::Duration,
) -> Result<SendRequest<Incoming>, Failure> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err(Failure::Refused),
        Err(_) => return Err(Failure::Timeout),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Refused)?;
    tokio::spawn(conn);
    Ok(sender)
}
