//! Webhooks from the durable outbox, alerts by webhook, e-mail (a real SMTP server, aiosmtpd)
//! and syslog, and audit forwarding to a SIEM over TCP and TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use hyper::Method;
use serde_json::{Value, json};

use crate::util::*;

const AGENT_PW: &str = "agent password 123";

/// One request as received: its headers (lower-case names) and body.
type Received = (Vec<(String, String)>, String);

/// A webhook receiver on loopback: records every request and answers with `status` after
/// `delay_ms`.
pub struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Receiver {
    pub fn start() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (g, st, d) = (got.clone(), status.clone(), delay_ms.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (g, st, d) = (g.clone(), st.clone(), d.clone());
                std::thread::spawn(move || serve_one(conn, &g, &st, &d));
            }
        });
        Receiver {
            port,
            got,
            status,
            delay_ms,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The `i`-th request exactly as received.
    pub fn raw(&self, i: usize) -> Received {
        self.got.lock().unwrap()[i].clone()
    }

    fn bodies(&self) -> Vec<(Vec<(String, String)>, Value)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(h, b)| (h.clone(), serde_json::from_str(b).unwrap()))
            .collect()
    }

    /// Waits (bounded) until `pred` holds for what was received.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[(Vec<(String, String)>, Value)]) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if pred(&self.bodies()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("waited 60 s for {what}; received {:#?}", self.bodies());
    }
}

fn serve_one(conn: TcpStream, got: &Mutex<Vec<Received>>, status: &AtomicU16, delay: &AtomicU64) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut headers = Vec::new();
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
    let code = status.load(Ordering::SeqCst);
    got.lock()
        .unwrap()
        .push((headers, String::from_utf8(body).unwrap()));
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

pub fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Checks `Custos-Signature` the way a receiver would.
fn signature_ok(secret: &str, h: &[(String, String)], body: &Value) -> bool {
    let sig = header(h, "custos-signature");
    let Some((t, v1)) = sig
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
    else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", body).as_bytes());
    hex::encode(mac.finalize().into_bytes()) == v1
}

/// An appliance with agent alice and extra configuration.
fn appliance(extra: &str) -> (Dir, Server, String) {
    let dir = Dir::new();
    let one_time = dir.init();
    let cfg = dir.path().join("custos.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(extra);
    std::fs::write(&cfg, text).unwrap();
    let pw = dir.secret("agentpw", AGENT_PW);
    dir.run(&[
        "user",
        "add",
        "alice",
        "--role",
        "agent",
        "--password-file",
        pw.to_str().unwrap(),
        "--skills",
        "support:general",
    ])
    .ok();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    (dir, s, admin)
}

fn new_request(s: &Server, name: &str) -> (String, String) {
    let r = s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": name, "question": "VPN drops", "ref": "CRM-7" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let v = r.json().unwrap();
    (
        v["request_id"].as_str().unwrap().to_string(),
        v["customer_token"].as_str().unwrap().to_string(),
    )
}

fn deliveries(s: &Server, admin: &str, query: &str) -> Vec<Value> {
    let r = s.get(&format!("/api/v1/deliveries?{query}"), Some(admin));
    assert_eq!(r.status, 200, "{}", r.error_message());
    r.json().unwrap()["deliveries"].as_array().unwrap().clone()
}

#[test]
fn webhooks_are_validated_signed_and_cover_a_session_from_request_to_survey() {
    let (_dir, s, admin) = appliance("");
    let rx = Receiver::start();
    let alice = s.login("alice", AGENT_PW).0;

    // Refusals first: none of them creates an endpoint.
    let good = json!({ "url": rx.url(), "events": ["*"] });
    assert_eq!(s.post("/api/v1/webhooks", None, good.clone()).status, 401);
    assert_eq!(
        s.post("/api/v1/webhooks", Some(&alice), good.clone())
            .status,
        403
    );
    for (body, needle) in [
        (
            json!({ "url": "ftp://example.org/x", "events": ["*"] }),
            "https://",
        ),
        (json!({ "url": "not a url", "events": ["*"] }), "URL"),
        (json!({ "url": rx.url(), "events": [] }), "at least one"),
        (
            json!({ "url": rx.url(), "events": ["session.exploded"] }),
            "unknown event",
        ),
        (
            json!({ "url": rx.url(), "events": ["*"], "colour": 1 }),
            "unknown field",
        ),
    ] {
        let r = s.post("/api/v1/webhooks", Some(&admin), body.clone());
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.error_message().contains(needle),
            "{body}: {}",
            r.error_message()
        );
    }
    let r = raw(
        &s,
        Method::POST,
        "/api/v1/webhooks",
        &format!("Bearer {admin}"),
        b"{not json".to_vec(),
    );
    assert_eq!(r.status, 400);
    let list = s.get("/api/v1/webhooks", Some(&admin)).json().unwrap();
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 0);

    let r = s.post("/api/v1/webhooks", Some(&admin), good);
    assert_eq!(r.status, 201, "{}", r.error_message());
    let hook = r.json().unwrap();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let list = s.get("/api/v1/webhooks", Some(&admin)).json().unwrap();
    assert!(
        list["webhooks"][0].get("secret").is_none(),
        "the secret is shown once only"
    );

    // A session's whole life.
    let (id, cust_token) = new_request(&s, "Gus Caller");
    s.post(
        "/api/v1/agent/presence",
        Some(&alice),
        json!({ "status": "available" }),
    );
    let r = s.post(
        &format!("/api/v1/requests/{id}/accept"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = s.post(
        &format!("/api/v1/sessions/{id}/messages"),
        Some(&alice),
        json!({ "type": "chat", "text": "private words 8675309" }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = s.post(
        &format!("/api/v1/sessions/{id}/transfer"),
        Some(&alice),
        json!({ "to_queue": true }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = s.post(
        &format!("/api/v1/requests/{id}/accept"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = s.post(
        &format!("/api/v1/sessions/{id}/end"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let r = customer_post(
        &s,
        &format!("/api/v1/sessions/{id}/survey"),
        &cust_token,
        json!({ "rating": 2, "comment": "slow and secret comment" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());

    let wanted = [
        "request.created",
        "session.started",
        "session.transferred",
        "session.started",
        "session.ended",
        "recording.sealed",
        "survey.submitted",
    ];
    rx.wait_for("the session's events", |got| got.len() >= wanted.len());
    let got = rx.bodies();
    let mut kinds: Vec<&str> = got
        .iter()
        .map(|(_, b)| b["type"].as_str().unwrap())
        .collect();
    let mut sorted_wanted = wanted.to_vec();
    kinds.sort();
    sorted_wanted.sort();
    assert_eq!(kinds, sorted_wanted);
    for (h, b) in &got {
        assert!(signature_ok(&secret, h, b), "signature of {b}");
        assert!(!signature_ok("whsec_wrong", h, b));
        assert_eq!(header(h, "custos-event"), b["type"].as_str().unwrap());
        assert_eq!(header(h, "custos-event-id"), b["id"].as_str().unwrap());
        assert_eq!(b["data"]["session"], id.as_str());
        let text = b.to_string();
        assert!(
            !text.contains("8675309") && !text.contains("secret comment"),
            "no session content in {text}"
        );
    }
    let survey = got
        .iter()
        .find(|(_, b)| b["type"] == "survey.submitted")
        .unwrap();
    assert_eq!(survey.1["data"]["rating"], 2);
    let created = got
        .iter()
        .find(|(_, b)| b["type"] == "request.created")
        .unwrap();
    assert_eq!(created.1["data"]["ref"], "CRM-7");
    let sealed = got
        .iter()
        .find(|(_, b)| b["type"] == "recording.sealed")
        .unwrap();
    assert!(
        sealed.1["data"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["class"] == "transcript")
    );

    // The delivery log shows each, delivered on the first attempt; deleting the endpoint stops
    // further deliveries.
    let log = deliveries(&s, &admin, &format!("webhook={}", hook["id"]));
    assert_eq!(log.len(), wanted.len());
    assert!(
        log.iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1 && d["last_status"] == 200),
        "{log:#?}"
    );
    for q in ["state=lost", "webhook=abc", "limit=0", "channel=sms"] {
        assert_eq!(
            s.get(&format!("/api/v1/deliveries?{q}"), Some(&admin))
                .status,
            400,
            "{q}"
        );
    }
    assert_eq!(s.get("/api/v1/deliveries", Some(&alice)).status, 403);
    let del = s.call(
        Method::DELETE,
        &format!("/api/v1/webhooks/{}", hook["id"]),
        Some(&admin),
        None,
    );
    assert_eq!(del.status, 204);
    let again = s.call(
        Method::DELETE,
        &format!("/api/v1/webhooks/{}", hook["id"]),
        Some(&admin),
        None,
    );
    assert_eq!(again.status, 404);
    new_request(&s, "After deletion");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        rx.bodies().len(),
        wanted.len(),
        "a deleted endpoint gets nothing"
    );
}

#[test]
fn deliveries_survive_a_dead_receiver_and_a_restart_and_a_slow_one_delays_only_itself() {
    let (dir, mut s, admin) =
        appliance("\n[delivery]\ninitial_backoff_ms = 200\nmax_backoff_s = 1\ntimeout_s = 2\n");
    // A receiver that is down: nothing listens on its port yet.
    let parked = TcpListener::bind("127.0.0.1:0").unwrap();
    let down_port = parked.local_addr().unwrap().port();
    drop(parked);
    let failing = Receiver::start();
    failing.status.store(503, Ordering::SeqCst);
    let slow = Receiver::start();
    slow.delay_ms.store(5000, Ordering::SeqCst);
    let fast = Receiver::start();
    let mut hooks = Vec::new();
    for url in [
        format!("http://127.0.0.1:{down_port}/hook"),
        failing.url(),
        slow.url(),
        fast.url(),
    ] {
        let r = s.post(
            "/api/v1/webhooks",
            Some(&admin),
            json!({ "url": url, "events": ["request.created"] }),
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        hooks.push(r.json().unwrap()["id"].as_i64().unwrap());
    }
    for i in 0..5 {
        new_request(&s, &format!("caller {i}"));
    }
    // The fast receiver gets all five while the slow one is still on its first.
    fast.wait_for("five events at the fast receiver", |g| g.len() == 5);
    assert!(
        slow.bodies().len() <= 1,
        "the slow receiver got {}",
        slow.bodies().len()
    );
    failing.wait_for("retries at the failing receiver", |g| g.len() >= 10);
    let log = deliveries(&s, &admin, &format!("webhook={}", hooks[0]));
    assert_eq!(log.len(), 5);
    assert!(
        log.iter()
            .all(|d| d["state"] == "pending" && d["attempts"].as_i64().unwrap() >= 1),
        "{log:#?}"
    );
    assert!(
        log[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{log:#?}"
    );
    let log = deliveries(&s, &admin, &format!("webhook={}", hooks[1]));
    assert!(
        log.iter()
            .all(|d| d["state"] == "pending" && d["last_status"] == 503),
        "{log:#?}"
    );

    // Restart with everything still queued; the receivers come back.
    s.stop();
    failing.status.store(200, Ordering::SeqCst);
    let revived = Receiver::on(TcpListener::bind(("127.0.0.1", down_port)).unwrap());
    let s = dir.serve();
    let admin = s.login("admin", "admin password long").0;
    revived.wait_for("five events after the restart", |g| g.len() == 5);
    let start = Instant::now();
    loop {
        let log = deliveries(&s, &admin, "");
        let per: Vec<Vec<&Value>> = hooks
            .iter()
            .map(|h| {
                log.iter()
                    .filter(|d| d["channel"] == format!("webhook:{h}").as_str())
                    .collect()
            })
            .collect();
        if per[..2]
            .iter()
            .all(|l| l.len() == 5 && l.iter().all(|d| d["state"] == "delivered"))
        {
            assert!(per[0].iter().all(|d| d["attempts"].as_i64().unwrap() >= 2));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not all delivered: {log:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ids: std::collections::HashSet<String> = revived
        .bodies()
        .iter()
        .map(|(_, b)| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "each event once");

    // An admin can send one again at once.
    let one = deliveries(&s, &admin, &format!("webhook={}", hooks[3]))[0]["id"]
        .as_i64()
        .unwrap();
    let r = s.post(
        &format!("/api/v1/deliveries/{one}/retry"),
        Some(&admin),
        json!({}),
    );
    assert_eq!(
        r.status,
        404,
        "a delivered one is not retried: {}",
        r.error_message()
    );
    let pending = deliveries(&s, &admin, &format!("webhook={}&state=delivered", hooks[1]))[0]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        s.post(
            &format!("/api/v1/deliveries/{pending}/retry"),
            Some(&admin),
            json!({})
        )
        .status,
        404
    );
    assert_eq!(
        s.post("/api/v1/deliveries/999999/retry", Some(&admin), json!({}))
            .status,
        404
    );
}

/// A real SMTP server (aiosmtpd, from Debian's python3-aiosmtpd) writing to a Maildir.
struct Smtp {
    child: std::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_server(dir: &std::path::Path) -> Option<Smtp> {
    let has = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !tool_present(
        has,
        "python3-aiosmtpd (the SMTP server the alert test sends to)",
    ) {
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let maildir = dir.join("maildir");
    let child = std::process::Command::new("/usr/bin/python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(&maildir)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "aiosmtpd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Smtp {
        child,
        port,
        maildir,
    })
}

fn mails(maildir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(maildir.join(sub)) {
            for e in rd.flatten() {
                out.push(std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out
}

/// A syslog collector: octet-counted frames over TCP, or over TLS with its own certificate.
struct Collector {
    port: u16,
    got: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<String>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (g, tls) = (g.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => read_frames(conn, &g),
                    Some(cfg) => {
                        let sc = rustls::ServerConnection::new(cfg).unwrap();
                        read_frames(rustls::StreamOwned::new(sc, conn), &g)
                    }
                });
            }
        });
        Collector { port, got }
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&[String]) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if pred(&self.messages()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "waited 60 s for {what}; the collector has {:#?}",
            self.messages()
        );
    }
}

fn read_frames(conn: impl Read, got: &Mutex<Vec<String>>) {
    let mut r = BufReader::new(conn);
    loop {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
            return;
        }
        let n: usize = std::str::from_utf8(&len[..len.len() - 1])
            .unwrap()
            .parse()
            .expect("octet count");
        let mut msg = vec![0; n];
        if r.read_exact(&mut msg).is_err() {
            return;
        }
        got.lock().unwrap().push(String::from_utf8(msg).unwrap());
    }
}

/// The seq parameter of an audit message.
fn seq_of(m: &str) -> Option<u64> {
    m.split(" seq=\"").nth(1)?.split('"').next()?.parse().ok()
}

#[test]
fn alerts_reach_email_syslog_and_webhooks_and_the_audit_log_reaches_the_siem() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(smtp) = smtp_server(tmp.path()) else {
        return;
    };
    let plain = Collector::start(None);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca = tmp.path().join("siem-ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let tls_cfg = rustls::ServerConfig::builder_with_provider(custos::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .unwrap();
    let secure = Collector::start(Some(Arc::new(tls_cfg)));
    let extra = format!(
        r#"
[alerts]
survey_rating_at_or_below = 2
queue_length_above = 1
agents_on_duty = ["alice"]
agent_offline_after_s = 0
business_hours = "Mon-Sun 00:00-24:00"
email_to = ["oncall@example.org", "lead@example.org"]

[smtp]
server = "127.0.0.1:{}"
from = "custos@example.org"

[[syslog]]
name = "siem"
address = "127.0.0.1:{}"
transport = "tcp"
forward = ["audit", "checkpoints"]

[[syslog]]
name = "siem-alerts"
address = "127.0.0.1:{}"
transport = "tls"
server_name = "localhost"
ca_file = "{}"
forward = ["alerts"]
"#,
        smtp.port,
        plain.port,
        secure.port,
        ca.display()
    );
    let (dir, mut s, admin) = appliance(&extra);
    let hook_rx = Receiver::start();
    let r = s.post(
        "/api/v1/webhooks",
        Some(&admin),
        json!({ "url": hook_rx.url(), "events": ["alert"] }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());

    // A session that ends with a bad survey; then two waiting customers, a queue longer than 1.
    let alice = s.login("alice", AGENT_PW).0;
    s.post(
        "/api/v1/agent/presence",
        Some(&alice),
        json!({ "status": "available" }),
    );
    let (id, cust_token) = new_request(&s, "First");
    assert_eq!(
        s.post(
            &format!("/api/v1/requests/{id}/accept"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    assert_eq!(
        s.post(
            &format!("/api/v1/sessions/{id}/end"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    let r = customer_post(
        &s,
        &format!("/api/v1/sessions/{id}/survey"),
        &cust_token,
        json!({ "rating": 1 }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    new_request(&s, "Second");
    new_request(&s, "Third");

    // alice was offline at the start, before this webhook existed: that alert goes by e-mail and
    // syslog only.
    let kinds = ["queue.length", "survey.low", "agent.offline"];
    hook_rx.wait_for("two alerts by webhook", |g| {
        kinds[..2]
            .iter()
            .all(|k| g.iter().any(|(_, b)| b["data"]["kind"] == *k))
    });
    let start = Instant::now();
    let subjects = loop {
        let m = mails(&smtp.maildir);
        let subjects: Vec<String> = m
            .iter()
            .filter_map(|t| {
                t.lines()
                    .find(|l| l.starts_with("Subject: "))
                    .map(String::from)
            })
            .collect();
        if subjects.len() >= 3 {
            break subjects;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "mail so far: {m:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for needle in [
        "customers waiting in support/general",
        "Survey rated 1 of 5",
        "Agent alice is offline",
    ] {
        assert!(
            subjects.iter().any(|s| s.contains(needle)),
            "{needle} in {subjects:#?}"
        );
    }
    let one = mails(&smtp.maildir)
        .into_iter()
        .find(|m| m.contains("Survey rated"))
        .unwrap();
    assert!(
        one.contains("To: oncall@example.org, lead@example.org"),
        "{one}"
    );
    assert!(one.contains("From: Custos <custos@example.org>"));
    secure.wait_for("three alerts over TLS syslog", |m| {
        kinds
            .iter()
            .all(|k| m.iter().any(|x| x.contains(&format!("\"kind\":\"{k}\""))))
    });
    for m in secure.messages() {
        assert!(
            m.starts_with("<116>1 "),
            "facility log alert, severity warning: {m}"
        );
        assert!(m.contains(" alert [custos@32473 seq=\""), "{m}");
    }
    // A persisting condition is not raised again within the repeat time.
    std::thread::sleep(Duration::from_secs(3));
    let queue_alerts = hook_rx
        .bodies()
        .iter()
        .filter(|(_, b)| b["data"]["kind"] == "queue.length")
        .count();
    assert_eq!(queue_alerts, 1);

    // The SIEM gets the whole audit log from the first entry, and checkpoints.
    plain.wait_for("audit entries and a checkpoint", |m| {
        m.iter().any(|x| x.contains(" checkpoint "))
            && m.iter().any(|x| x.contains("action=\"alert.raised\""))
    });
    let seqs = |m: &[String]| -> Vec<u64> { m.iter().filter_map(|x| seq_of(x)).collect() };
    let before = seqs(&plain.messages());
    assert_eq!(before[0], 0);
    assert!(
        before.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gaps: {before:?}"
    );
    let cp = plain
        .messages()
        .into_iter()
        .find(|x| x.contains(" checkpoint "))
        .unwrap();
    assert!(cp.starts_with("<109>1 "), "{cp}");
    assert!(
        cp.contains("\u{feff}custos/"),
        "the signed note itself: {cp}"
    );

    // After a restart the cursor resumes: no gaps, and nothing from the start again.
    s.stop();
    let s = dir.serve();
    s.login("admin", "admin password long");
    plain.wait_for("entries after the restart", |m| {
        seqs(m).len() > before.len() + 1
    });
    let all = seqs(&plain.messages());
    let mut uniq = all.clone();
    uniq.dedup();
    assert!(
        uniq.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps across the restart: {all:?}"
    );
    assert_eq!(
        all.iter().filter(|x| **x == 0).count(),
        1,
        "not sent from the start again"
    );
}
