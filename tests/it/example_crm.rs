//! The example integration in examples/mock-crm, end to end: it registers its webhook, opens
//! tickets from portal requests, starts sessions with codes tagged by ticket id, and pulls each
//! session's record back into its ticket.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

const AGENT_PW: &str = "agent password 123";

struct Crm {
    child: std::process::Child,
    url: String,
}

impl Drop for Crm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain-HTTP JSON call to the CRM (loopback).
fn crm_call(url: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let json = out.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

fn wait_ticket(url: &str, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (_, t) = crm_call(url, "GET", &format!("/tickets/{id}"), None);
        if pred(&t) {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited 60 s for {what}: {t:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_example_crm_opens_tickets_starts_sessions_and_pulls_records() {
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !tool_present(python.is_some(), "python3 (runs the example CRM)") {
        return;
    }
    let dir = Dir::new();
    let one_time = dir.init();
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
    // The integration's tokens: one to register its webhook, one acting for the agent.
    let token = |user: &str, scopes: Value| -> String {
        let r = s.post(
            "/api/v1/tokens",
            Some(&admin),
            json!({ "user": user, "name": "mock CRM", "days": 30, "scopes": scopes }),
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        r.json().unwrap()["token"].as_str().unwrap().to_string()
    };
    let admin_token = token("admin", json!(["manage_integrations"]));
    let agent_token = token("alice", json!(["handle_sessions"]));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/mock-crm/crm.py");
    let mut child = Command::new(python.unwrap())
        .arg(script)
        .args(["--custos", &format!("https://{}", s.addr)])
        .arg("--cafile")
        .arg(dir.path().join("tls/cert.pem"))
        .args([
            "--admin-token",
            &admin_token,
            "--agent-token",
            &agent_token,
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("crm listening on ")
        .unwrap_or_else(|| panic!("crm said {line:?}"))
        .to_string();
    let crm = Crm { child, url };

    // A CRM user opens a case: the ticket gets a code tagged with its id.
    let (status, t) = crm_call(
        &crm.url,
        "POST",
        "/tickets",
        Some(json!({ "subject": "Laptop will not print" })),
    );
    assert_eq!(status, 201, "{t}");
    let tid = t["id"].as_str().unwrap().to_string();
    let code = t["code"].as_str().unwrap().to_string();
    assert!(
        t["invite_url"].as_str().unwrap().contains("/code?code="),
        "{t}"
    );
    let listed = s.get("/api/v1/codes", Some(&admin)).json().unwrap();
    assert!(
        listed.to_string().contains(&tid),
        "the code carries the ticket id: {listed}"
    );

    // The customer joins with the code; alice helps and ends; the customer rates.
    s.post(
        "/api/v1/agent/presence",
        Some(&s.login("alice", AGENT_PW).0),
        json!({ "status": "available" }),
    );
    let digits: String = code.chars().filter(char::is_ascii_digit).collect();
    let r = s.post(
        &format!("/api/v1/codes/{digits}/redeem"),
        None,
        json!({ "name": "Lena" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let joined = r.json().unwrap();
    let sid = joined["session_id"].as_str().unwrap().to_string();
    let ctoken = joined["customer_token"].as_str().unwrap().to_string();
    wait_ticket(&crm.url, &tid, "the join", |t| t["session"] == sid.as_str());
    let mut cust = s.ws(&sid, &format!("Customer {ctoken}"));
    cust.expect("hello");
    cust.send(&json!({ "type": "chat", "text": "The printer queue is stuck" }));
    cust.expect("chat");
    let alice = s.login("alice", AGENT_PW).0;
    let r = s.post(
        &format!("/api/v1/sessions/{sid}/messages"),
        Some(&alice),
        json!({ "type": "chat", "text": "Cleared it, try again" }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(
        s.post(
            &format!("/api/v1/sessions/{sid}/end"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    let t = wait_ticket(&crm.url, &tid, "the record", |t| t["status"] == "resolved");
    let texts: Vec<&str> = t["record"]["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["The printer queue is stuck", "Cleared it, try again"],
        "{t:#}"
    );
    assert_eq!(t["record"]["agent"], "alice");
    let r = customer_post(
        &s,
        &format!("/api/v1/sessions/{sid}/survey"),
        &ctoken,
        json!({ "rating": 5 }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    wait_ticket(&crm.url, &tid, "the survey", |t| {
        t["record"]["survey"]["rating"] == 5
    });

    // A request from the portal, with no ticket yet, opens one.
    let r = s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Max", "question": "Password reset" }),
    );
    let rid = r.json().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = Instant::now();
    loop {
        let (_, all) = crm_call(&crm.url, "GET", "/tickets", None);
        if all["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["session"] == rid.as_str() && t["source"] == "portal")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no ticket for the portal request: {all:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every delivery to the CRM was accepted on its first attempt (its signature checks passed).
    let log = s.get("/api/v1/deliveries", Some(&admin)).json().unwrap();
    let log = log["deliveries"].as_array().unwrap();
    assert!(log.len() >= 4, "{log:#?}");
    assert!(
        log.iter()
            .all(|d| d["state"] == "delivered" && d["attempts"] == 1),
        "{log:#?}"
    );
}
