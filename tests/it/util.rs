//! Helpers shared by the integration tests: a data directory with the real `custos` binary, a
//! running server on a loopback port, and a pinned HTTPS client.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use custos::client::{Endpoint, Response};
use hyper::Method;
use serde_json::{Value, json};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_custos"))
}

/// `../shared/<rel>`, or `None` (announced loudly) when it is absent outside CI. In CI a missing
/// directory fails the test.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
        .join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing, and CI=true: shared test data is required in CI",
            p.display()
        );
    }
    eprintln!(
        "\n*** SKIPPED: {} is absent (not in CI, so this is a skip, not a failure) ***\n",
        p.display()
    );
    None
}

pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--data")
            .arg(self.path())
            .args(args)
            .env(
                "CUSTOS_LOG",
                std::env::var("CUSTOS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        c
    }

    /// Runs `custos --data DIR ARGS...` to completion.
    pub fn run(&self, args: &[&str]) -> Out {
        Out(self.cmd(args).output().expect("run custos"))
    }

    /// Writes a secret file and returns its path.
    pub fn secret(&self, name: &str, value: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, format!("{value}\n")).unwrap();
        p
    }

    /// Starts a server, waits for its ready line, and returns it.
    pub fn serve(&self) -> Server {
        Server::start(self)
    }

    /// Initializes the directory by starting and stopping a server; returns the admin password.
    pub fn init(&self) -> String {
        let mut s = self.serve();
        let pw = s
            .admin_password
            .clone()
            .expect("first start prints the admin password");
        s.stop();
        pw
    }
}

pub struct Out(pub Output);

impl Out {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code(),
            0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }
    #[track_caller]
    pub fn fails(&self) -> &Self {
        assert_ne!(
            self.code(),
            0,
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }
}

pub struct Server {
    pub child: Child,
    pub addr: String,
    pub fingerprint: String,
    pub admin_password: Option<String>,
    /// Kept so that the thread draining the server's stdout never blocks it.
    _lines: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(dir: &Dir) -> Self {
        let mut child = dir
            .cmd(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn custos serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut admin_password = None;
        let mut fingerprint = String::new();
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("custos serve printed no ready line within 60 s");
            };
            if let Some(p) = line.split("one-time password: ").nth(1) {
                admin_password = Some(p.trim().to_string());
            }
            if let Some(f) = line.strip_prefix("TLS certificate SHA-256 fingerprint: ") {
                fingerprint = f.trim().to_string();
            }
            if let Some(url) = line.strip_prefix("custos ready https://") {
                return Server {
                    child,
                    addr: url.trim().to_string(),
                    fingerprint,
                    admin_password,
                    _lines: rx,
                };
            }
        }
    }

    /// An HTTPS client that trusts only this server's certificate.
    pub fn endpoint(&self) -> Endpoint {
        let fp = custos::tls::parse_fingerprint(&self.fingerprint).expect("fingerprint printed");
        Endpoint::Https {
            addr: self.addr.clone(),
            tls: custos::tls::pinned_client_config(fp).unwrap(),
        }
    }

    pub fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(self.endpoint().request(method, path, token, body.as_ref()))
            .expect("request")
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.call(Method::GET, path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> Response {
        self.call(Method::POST, path, token, Some(body))
    }

    /// Logs in and returns the token; panics on failure.
    pub fn login(&self, name: &str, password: &str) -> (String, Value) {
        let r = self.post(
            "/api/v1/auth/login",
            None,
            json!({ "name": name, "password": password }),
        );
        assert_eq!(r.status, 200, "login as {name}: {}", r.error_message());
        let v = r.json().unwrap();
        (v["token"].as_str().unwrap().to_string(), v)
    }

    /// Logs in as the first admin and replaces the one-time password; returns a token.
    pub fn admin(&self, one_time: &str, new_password: &str) -> String {
        let (t, _) = self.login("admin", one_time);
        let r = self.post(
            "/api/v1/auth/password",
            Some(&t),
            json!({ "current_password": one_time, "new_password": new_password }),
        );
        assert_eq!(r.status, 200, "{}", r.error_message());
        r.json().unwrap()["token"].as_str().unwrap().to_string()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        signal(self.child.id(), "TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(30))
            .expect("server did not stop within 30 s of SIGTERM");
        assert!(
            status.success(),
            "server exited with {status} after SIGTERM"
        );
    }
}

impl Server {
    /// kill -9: no shutdown at all, as after a power cut.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Opens the data directory's database directly, as an attacker with file access would.
pub fn raw_db(dir: &Dir) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.path().join("custos.db")).unwrap()
}

/// A WebSocket client speaking to a running server over the pinned TLS connection.
pub struct Ws {
    rt: tokio::runtime::Runtime,
    inner:
        tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl Server {
    /// Opens the relay socket of a session with the given `Authorization` header value.
    pub fn ws(&self, session: &str, authorization: &str) -> Ws {
        self.socket(session, authorization, "ws")
    }

    /// Opens the screen socket (remote view and control) of a session.
    pub fn screen_ws(&self, session: &str, authorization: &str) -> Ws {
        self.socket(session, authorization, "screen")
    }

    /// Opens the screen socket authenticated by a query string alone (a resume token).
    pub fn screen_ws_query(&self, session: &str, query: &str) -> Ws {
        self.socket_at(&format!("/api/v1/sessions/{session}/screen?{query}"), None)
    }

    /// The HTTP status a screen socket handshake with this query gets (101 when it opens).
    pub fn screen_ws_status(&self, session: &str, query: &str) -> u16 {
        use tokio_tungstenite::tungstenite::Error;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (addr, cfg) = (self.addr.clone(), self.ws_tls());
        let url = format!("wss://{addr}/api/v1/sessions/{session}/screen?{query}");
        rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .unwrap();
            match tokio_tungstenite::client_async(url, tls).await {
                Ok(_) => 101,
                Err(Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("handshake failed without a status: {e}"),
            }
        })
    }

    /// The pinned TLS 1.3 configuration WebSocket clients use (no ALPN).
    pub fn ws_tls(&self) -> std::sync::Arc<rustls::ClientConfig> {
        let fp = custos::tls::parse_fingerprint(&self.fingerprint).unwrap();
        let cfg = custos::tls::pinned_client_config_with(fp, &[&rustls::version::TLS13]).unwrap();
        let mut cfg = (*cfg).clone();
        cfg.alpn_protocols.clear();
        std::sync::Arc::new(cfg)
    }

    fn socket(&self, session: &str, authorization: &str, which: &str) -> Ws {
        self.socket_at(
            &format!("/api/v1/sessions/{session}/{which}"),
            Some(authorization),
        )
    }

    fn socket_at(&self, path: &str, authorization: Option<&str>) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = self.ws_tls();
        let addr = self.addr.clone();
        let url = format!("wss://{addr}{path}");
        let auth = authorization.map(str::to_string);
        let inner = rt.block_on(async move {
            let tls = tls_to(&addr, cfg).await;
            let mut req = url.into_client_request().unwrap();
            if let Some(auth) = auth {
                req.headers_mut()
                    .insert("authorization", auth.parse().unwrap());
            }
            let (ws, _) = tokio_tungstenite::client_async(req, tls)
                .await
                .expect("websocket handshake");
            ws
        });
        Ws { rt, inner }
    }
}

impl Ws {
    pub fn send(&mut self, v: &Value) {
        use futures_util::SinkExt;
        let msg = tokio_tungstenite::tungstenite::Message::Text(v.to_string().into());
        self.rt.block_on(self.inner.send(msg)).unwrap();
    }

    pub fn send_raw(&mut self, text: String) -> bool {
        use futures_util::SinkExt;
        self.rt
            .block_on(
                self.inner
                    .send(tokio_tungstenite::tungstenite::Message::Text(text.into())),
            )
            .is_ok()
    }

    pub fn send_binary(&mut self, data: Vec<u8>) {
        use futures_util::SinkExt;
        let msg = tokio_tungstenite::tungstenite::Message::Binary(data.into());
        self.rt.block_on(self.inner.send(msg)).unwrap();
    }

    /// Sends a binary message; false if the socket is gone.
    pub fn try_send_binary(&mut self, data: Vec<u8>) -> bool {
        use futures_util::SinkExt;
        let msg = tokio_tungstenite::tungstenite::Message::Binary(data.into());
        self.rt.block_on(self.inner.send(msg)).is_ok()
    }

    /// The next binary message, skipping text; `None` if the socket closed or nothing came
    /// for 10 s.
    pub fn recv_binary(&mut self) -> Option<Vec<u8>> {
        use futures_util::StreamExt;
        loop {
            let next = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), self.inner.next()).await
            });
            match next {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) => {
                    return Some(b.to_vec());
                }
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(_)))) => continue,
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))))
                | Ok(Some(Err(_)))
                | Ok(None)
                | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next JSON message, or `None` if the socket closed (or nothing came for 10 s).
    pub fn recv(&mut self) -> Option<Value> {
        use futures_util::StreamExt;
        loop {
            let next = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), self.inner.next()).await
            });
            match next {
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                    return Some(serde_json::from_str(&t).unwrap());
                }
                Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))))
                | Ok(Some(Err(_)))
                | Ok(None)
                | Err(_) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Reads messages until one of type `kind` arrives; panics if the socket closes first.
    pub fn expect(&mut self, kind: &str) -> Value {
        loop {
            match self.recv() {
                Some(v) if v["type"] == kind => return v,
                Some(_) => continue,
                None => panic!("socket closed while waiting for a {kind:?} message"),
            }
        }
    }
}

pub fn customer_post(s: &Server, path: &str, token: &str, body: Value) -> custos::client::Response {
    raw(
        s,
        Method::POST,
        path,
        &format!("Customer {token}"),
        serde_json::to_vec(&body).unwrap(),
    )
}

/// A request with an arbitrary Authorization header and body.
pub fn raw(
    s: &Server,
    method: Method,
    path: &str,
    auth: &str,
    body: Vec<u8>,
) -> custos::client::Response {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fp = custos::tls::parse_fingerprint(&s.fingerprint).unwrap();
    let cfg = custos::tls::pinned_client_config(fp).unwrap();
    let addr = s.addr.clone();
    let (auth, path) = (auth.to_string(), path.to_string());
    rt.block_on(async move {
        let tls = tls_to(&addr, cfg).await;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("authorization", auth)
            .header("content-type", "application/octet-stream")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
        custos::client::Response {
            status,
            headers,
            body,
        }
    })
}

/// A TLS connection to `addr` (as `localhost`) with a pinned client configuration.
pub async fn tls_to(
    addr: &str,
    cfg: std::sync::Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Whether a tool a test needs is here. Outside CI a missing tool is a loud skip; in CI
/// (`CI=true`) it is a failure.
pub fn tool_present(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} is required in CI");
    }
    eprintln!("\n*** SKIPPED: {what} is not installed ***\n");
    false
}

/// src/web/*.rs by file name.
pub fn web_sources() -> Vec<(String, String)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/web");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, std::fs::read_to_string(p).unwrap()));
    }
    out.sort();
    out
}

/// (method, path, handler) of every `.route(...)` call in `src` (the OpenAPI check and the web
/// security scan read the router this way).
pub fn route_calls(src: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        // The call's text, up to its closing parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i)
            .unwrap();
        let call = &rest[..end];
        let path = call.split('"').nth(1).unwrap().to_string();
        for m in ["get", "post", "put", "delete"] {
            let open = format!("{m}(");
            for (i, _) in call.match_indices(&open) {
                let standalone = i == 0
                    || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && call.as_bytes()[i - 1] != b'_';
                if !standalone {
                    continue;
                }
                let handler: String = call[i + open.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                out.push((m.to_string(), path.clone(), handler));
            }
        }
    }
    out
}
