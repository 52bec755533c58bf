//! HTTP: the listeners, the router, and the JSON API. Wire types live here and nowhere else;
//! `ApiError` maps every failure to a status code and the contract's error body
//! `{"error": {"code": "...", "message": "..."}}` in one place.
//!
//! Two surfaces share one router: HTTPS on the configured address, and a Unix socket in the
//! data directory (mode 0600, peers checked to be the service's own user or root). Only the
//! socket offers the key-custody endpoints (seal, unseal).

mod api;
mod compliance;
mod diagnostics;
mod error;
mod integrations;
mod pages;
mod reports;
mod review;
mod screen;
mod sessions;
mod system;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::{App, AppError, Source};
pub use error::ApiError;
pub use reports::range as report_range;

/// Connections served at once; more are refused at accept.
const MAX_CONNECTIONS: usize = 8192;
/// Connections on the Unix socket served at once.
const LOCAL_CONNECTIONS: usize = 64;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Which listener a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Https,
    Local,
}

/// Builds the router for one surface.
pub fn router(app: Arc<App>, surface: Surface) -> Router {
    let mut r = api::routes()
        .merge(sessions::routes(&app))
        .merge(pages::routes())
        .merge(compliance::routes())
        .merge(review::routes())
        .merge(integrations::routes())
        .merge(diagnostics::routes())
        .merge(reports::routes())
        .merge(system::routes());
    if surface == Surface::Local {
        r = r.merge(api::local_routes());
    }
    r.fallback(api::not_found)
        .layer(middleware::from_fn_with_state(app.clone(), sealed_gate))
        .layer(middleware::from_fn(drain_unread))
        .layer(middleware::from_fn(security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BODY))
        .with_state(app)
}

/// While sealed, only `/healthz` (and, on the socket, unseal) answer. Every response is counted
/// for `/metrics`.
async fn sealed_gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let res = if app.is_sealed()
        && path != "/healthz"
        && path != "/api/v1/system/unseal"
        && path != "/api/v1/system/seal"
    {
        ApiError::sealed().into_response_value()
    } else {
        next.run(req).await
    };
    app.metrics.response(res.status().as_u16());
    res
}

/// A request body the handler and this layer share, so that what the handler left unread can be
/// read after it answered.
struct SharedBody(Arc<std::sync::Mutex<Option<axum::body::Body>>>);

impl hyper::body::Body for SharedBody {
    type Data = hyper::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let mut inner = self.0.lock().expect("body");
        match inner.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .expect("body")
            .as_ref()
            .is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0
            .lock()
            .expect("body")
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_default()
    }
}

/// Bytes of an unread request body read (and dropped) after an early answer.
const DRAIN_LIMIT: usize = 8 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// When a handler answers before reading the whole request body (a refused login, a body over
/// the limit), closing the connection at once makes the peer's TCP stack reset it while the
/// client is still sending, and many clients then lose the answer. So what was left unread is
/// read and dropped first, up to 8 MiB and 5 seconds; a longer body still gets the reset.
async fn drain_unread(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let shared = Arc::new(std::sync::Mutex::new(Some(body)));
    let req = Request::from_parts(parts, axum::body::Body::new(SharedBody(shared.clone())));
    let res = next.run(req).await;
    let rest = shared.lock().expect("body").take();
    if let Some(b) = rest
        && !hyper::body::Body::is_end_stream(&b)
    {
        use http_body_util::BodyExt;
        let drain = http_body_util::Limited::new(b, DRAIN_LIMIT).collect();
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    res
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    // Rejections produced inside axum (a body over the limit, a malformed query string) come as
    // plain text; every error leaves in the contract's JSON form.
    // Pages that answer with their own HTML (a form shown again with its errors) keep it.
    let is_json = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
    });
    let upgrade = res.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS;
    if res.status().as_u16() >= 400 && !is_json && !upgrade {
        let status = res.status();
        let body = axum::body::to_bytes(std::mem::take(res.body_mut()), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        };
        let code = match status.as_u16() {
            413 => "too_large",
            415 => "unsupported_media_type",
            405 => "method_not_allowed",
            400 | 422 => "bad_request",
            _ => "error",
        };
        let retry = res.headers().get(header::RETRY_AFTER).cloned();
        res = ApiError::new(status, code, message).into_response_value();
        if let Some(r) = retry {
            res.headers_mut().insert(header::RETRY_AFTER, r);
        }
    }
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(h, "strict-transport-security", "max-age=63072000");
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(
        h,
        "content-security-policy",
        "default-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    );
    set(h, "cross-origin-opener-policy", "same-origin");
    // Event streams carry what their subscriber may see: axum's `Sse` says no-cache, which
    // still lets a cache store it.
    let stream = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if stream || !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Serves one connection; when `stop` fires, the request in flight finishes and the connection
/// closes.
async fn serve_conn<I>(io: I, router: Router, source: Source, mut stop: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(source.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { drop(stop.wait_for(|s| *s).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accepts on both listeners until `stop`, then lets open requests finish (bounded).
pub async fn run(
    app: Arc<App>,
    tcp: TcpListener,
    unix: UnixListener,
    tls: Arc<rustls::ServerConfig>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AppError> {
    let https = router(app.clone(), Surface::Https);
    let local = router(app.clone(), Surface::Local);
    let acceptor = TlsAcceptor::from(tls);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // The socket has its own small allowance, so a flood of network connections can never lock
    // the administrator out of seal and unseal.
    let local_limit = Arc::new(Semaphore::new(LOCAL_CONNECTIONS));
    let owner_uid = std::fs::metadata(app.dir.root())
        .map(|m| m.uid())
        .unwrap_or(0);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = tcp.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else { continue };
                let _ = stream.set_nodelay(true);
                let (acceptor, router, conn_stop) = (acceptor.clone(), https.clone(), stop.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => serve_conn(TokioIo::new(tls), router, Source::Net(peer), conn_stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            accepted = unix.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let uid = stream.peer_cred().map(|c| c.uid()).ok();
                if uid != Some(owner_uid) && uid != Some(0) {
                    tracing::warn!(?uid, "refused a socket connection from another user");
                    continue;
                }
                let Ok(permit) = local_limit.clone().try_acquire_owned() else { continue };
                let (router, conn_stop) = (local.clone(), stop.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    serve_conn(TokioIo::new(stream), router, Source::Local, conn_stop).await
                });
            }
        }
    }
    drop(tcp);
    drop(unix);
    // Every connection holds a permit; when all are back, every connection has closed.
    let all = tokio::time::timeout(Duration::from_secs(10), async {
        let _net = limit.acquire_many(MAX_CONNECTIONS as u32).await;
        let _local = local_limit.acquire_many(LOCAL_CONNECTIONS as u32).await;
    })
    .await;
    if all.is_err() {
        tracing::warn!("requests still running after 10 s");
    }
    Ok(())
}
