//! A small HTTP/1.1 client for the appliance's own API, over HTTPS with a pinned certificate or
//! over the Unix socket in the data directory. The CLI uses it to reach a running server (seal,
//! unseal); tests use it as a real client would.

use std::path::PathBuf;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

/// Responses larger than this are refused.
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("response is not JSON: {0}")]
    NotJson(String),
}

#[derive(Clone)]
pub enum Endpoint {
    /// HTTPS to `addr` (host:port), trusting only the pinned certificate in `tls`.
    Https {
        addr: String,
        tls: Arc<rustls::ClientConfig>,
    },
    /// HTTP over the appliance's Unix socket.
    Unix(PathBuf),
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Result<Value, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::NotJson(e.to_string()))
    }

    /// The contract's error message, or the body as text.
    pub fn error_message(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<Response, ClientError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let (parts, body) = res.into_parts();
    let body = Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes()
        .to_vec();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

impl Endpoint {
    /// Sends one request on a fresh connection.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Response, ClientError> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let body = body.map(|v| {
            (
                "application/json",
                serde_json::to_vec(v).expect("JSON values serialize"),
            )
        });
        self.request_raw(method, path, auth.as_deref(), body).await
    }

    /// Sends one request with any `Authorization` value and a body of any type.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Response, ClientError> {
        let host = match self {
            Endpoint::Https { addr, .. } => addr.clone(),
            Endpoint::Unix(_) => "localhost".to_string(),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        let payload = match body {
            Some((content_type, bytes)) => {
                b = b.header("content-type", content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let req = b
            .body(Full::new(payload))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        match self {
            Endpoint::Https { addr, tls } => {
                let tcp =
                    TcpStream::connect(addr)
                        .await
                        .map_err(|source| ClientError::Connect {
                            target: addr.clone(),
                            source,
                        })?;
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr.as_str(), |(h, _)| h)
                    .trim_matches(['[', ']']);
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| ClientError::Http(e.to_string()))?;
                let stream = TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(ClientError::Tls)?;
                send(TokioIo::new(stream), req).await
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path)
                    .await
                    .map_err(|source| ClientError::Connect {
                        target: path.display().to_string(),
                        source,
                    })?;
                send(TokioIo::new(s), req).await
            }
        }
    }
}

/// Percent-encodes a value for a URL's path or query (everything but unreserved characters).
pub fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
