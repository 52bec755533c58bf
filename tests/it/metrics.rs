//! `/metrics` as a Prometheus scraper sees it: guarded like the system status, in a text format
//! that the Prometheus project's own parser (python3-prometheus-client) reads, and with numbers
//! that follow what happens on the appliance.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::json;

use crate::util::*;

/// Parses the text format strictly: every family has HELP then TYPE before its samples, every
/// sample belongs to the family just declared, and no series appears twice. Returns each
/// series (name and labels as written) with its value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut series = BTreeMap::new();
    let mut family: Option<(String, bool)> = None;
    let mut help: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            help = Some(name.to_string());
            family = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(
                help.as_deref(),
                Some(name),
                "TYPE {name} without HELP first"
            );
            assert!(["counter", "gauge"].contains(&kind), "type {kind}");
            family = Some((name.to_string(), kind == "counter"));
        } else {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            let name = key.split('{').next().unwrap();
            let (fam, counter) = family.as_ref().expect("a sample before any TYPE");
            assert_eq!(name, fam, "sample {key} outside its family");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "metric name {name}"
            );
            assert_eq!(*counter, name.ends_with("_total"), "{name} suffix and type");
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            assert!(v >= 0.0, "{line}");
            assert!(series.insert(key.to_string(), v).is_none(), "{key} twice");
        }
    }
    series
}

fn scrape(s: &Server, token: &str) -> (String, BTreeMap<String, f64>) {
    let r = s.get("/metrics", Some(token));
    assert_eq!(r.status, 200, "{}", r.error_message());
    let ct = r.headers["content-type"].to_str().unwrap();
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let text = String::from_utf8(r.body).unwrap();
    let series = parse(&text);
    (text, series)
}

/// The Prometheus client library's parser, run on the page: the number of samples it finds.
fn prometheus_parser(text: &str) -> Option<usize> {
    let script = "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as p\nprint(sum(len(f.samples) for f in p(sys.stdin.read())))";
    // The Debian package installs into the system Python, which need not be first on PATH.
    let run = |python: &str| {
        Command::new(python)
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(text.as_bytes())?;
                c.wait_with_output()
            })
            .ok()
            .filter(|o| !String::from_utf8_lossy(&o.stderr).contains("No module named"))
    };
    let out = run("/usr/bin/python3").or_else(|| run("python3"));
    let Some(o) = out else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("python3-prometheus-client is required in CI");
        }
        eprintln!("\n*** SKIPPED: python3 with prometheus_client is not installed ***\n");
        return None;
    };
    assert!(
        o.status.success(),
        "the Prometheus parser rejected the page: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8_lossy(&o.stdout).trim().parse().unwrap())
}

#[test]
fn metrics_are_guarded_parse_and_follow_the_appliance() {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", "agent password 1234");
    dir.run(&[
        "user",
        "add",
        "alice",
        "--role",
        "agent",
        "--skills",
        "support:general",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .ok();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");

    // Refusals first: nobody, an agent, a token scoped for something else.
    let r = s.get("/metrics", None);
    assert_eq!(r.status, 401, "{}", r.error_message());
    let alice = s.login("alice", "agent password 1234").0;
    assert_eq!(s.get("/metrics", Some(&alice)).status, 403);
    let token = |scopes: serde_json::Value| {
        let r = s.post(
            "/api/v1/tokens",
            Some(&admin),
            json!({ "user": "admin", "name": "scraper", "scopes": scopes, "days": 1 }),
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        r.json().unwrap()["token"].as_str().unwrap().to_string()
    };
    let wrong = token(json!(["read_audit"]));
    let r = s.get("/metrics", Some(&wrong));
    assert_eq!(r.status, 403);
    assert!(
        r.error_message().contains("read_system"),
        "{}",
        r.error_message()
    );
    let scraper = token(json!(["read_system"]));

    let (text, before) = scrape(&s, &scraper);
    if let Some(n) = prometheus_parser(&text) {
        assert_eq!(n, before.len(), "the Prometheus parser found other samples");
    }
    assert_eq!(before["custos_sessions{status=\"waiting\"}"], 0.0);
    assert_eq!(
        before["custos_queue_waiting{portal=\"support\",skill=\"general\"}"],
        0.0
    );
    assert!(before["custos_audit_entries"] > 0.0);
    assert!(before["custos_kek_epoch"] >= 1.0);
    assert!(before["custos_http_responses_total{class=\"4xx\"}"] >= 3.0);
    // Nothing in it names a person or a session.
    assert!(!text.contains("alice") && !text.contains("admin"), "{text}");

    // A failed login, a request waiting, a customer connected and chatting.
    let r = s.post(
        "/api/v1/auth/login",
        None,
        json!({ "name": "alice", "password": "wrong password here" }),
    );
    assert_eq!(r.status, 401);
    let req = s
        .post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": "Erin Example", "question": "printer" }),
        )
        .json()
        .unwrap();
    let id = req["request_id"].as_str().unwrap();
    let mut cust = s.ws(
        id,
        &format!("Customer {}", req["customer_token"].as_str().unwrap()),
    );
    cust.expect("hello");
    cust.send(&json!({ "type": "chat", "text": "anyone?" }));
    assert_eq!(cust.expect("error")["code"], "not_active");
    cust.send_raw("{not json".into());
    cust.expect("error");

    let (text, after) = scrape(&s, &scraper);
    assert!(!text.contains("Erin") && !text.contains(id), "{text}");
    let grew = |k: &str| after[k] - before[k];
    assert_eq!(grew("custos_logins_total{result=\"denied\"}"), 1.0);
    assert_eq!(after["custos_sessions{status=\"waiting\"}"], 1.0);
    assert_eq!(
        after["custos_queue_waiting{portal=\"support\",skill=\"general\"}"],
        1.0
    );
    assert_eq!(after["custos_relay_connections"], 1.0);
    assert_eq!(grew("custos_relay_messages_total{result=\"refused\"}"), 2.0);
    assert!(grew("custos_relay_received_bytes_total") > 0.0);
    assert!(grew("custos_audit_entries") >= 2.0);

    drop(cust);
    // The connection's end is seen by the server shortly after the socket closes.
    let mut open = 1.0;
    for _ in 0..100 {
        open = scrape(&s, &scraper).1["custos_relay_connections"];
        if open == 0.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(open, 0.0, "a closed relay connection is still counted");
}
