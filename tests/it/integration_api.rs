//! The integration APIs: incremental session sync with a stable cursor, live monitors, codes.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::util::*;

fn sync_all(
    s: &Server,
    token: &str,
    mut cursor: Option<String>,
    limit: u32,
) -> (Vec<Value>, String) {
    let mut out = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/sessions?after={c}&limit={limit}"),
            None => format!("/api/v1/sessions?limit={limit}"),
        };
        let r = s.get(&path, Some(token));
        assert_eq!(r.status, 200, "{}", r.error_message());
        let v = r.json().unwrap();
        let page = v["sessions"].as_array().unwrap().clone();
        cursor = Some(v["next_cursor"].as_str().unwrap().to_string());
        if page.is_empty() {
            return (out, cursor.unwrap());
        }
        out.extend(page);
    }
}

#[test]
fn session_sync_has_no_gaps_or_duplicates_while_sessions_are_written() {
    let dir = Dir::new();
    let one_time = dir.init();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    for i in 0..30 {
        s.post("/api/v1/requests", None, json!({ "portal": "support", "name": format!("n{i}"), "question": "q", "ref": format!("R{}", i % 3) }));
    }
    // A writer keeps creating sessions while the reader pages with a small limit.
    let addr = s.addr.clone();
    let fp = s.fingerprint.clone();
    let writer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ep = custos::client::Endpoint::Https {
            addr,
            tls: custos::tls::pinned_client_config(custos::tls::parse_fingerprint(&fp).unwrap())
                .unwrap(),
        };
        for i in 0..40 {
            let body = json!({ "portal": "support", "name": format!("w{i}"), "question": "q" });
            rt.block_on(ep.request(hyper::Method::POST, "/api/v1/requests", None, Some(&body)))
                .unwrap();
        }
    });
    let (mut seen, mut cursor) = sync_all(&s, &admin, None, 7);
    writer.join().unwrap();
    let (more, last) = sync_all(&s, &admin, Some(cursor.clone()), 7);
    seen.extend(more);
    cursor = last;
    let ids: Vec<&str> = seen
        .iter()
        .map(|v| v["session_id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), 70, "every session exactly once");
    assert_eq!(ids.len(), 70, "no duplicates");
    let changes: Vec<i64> = seen.iter().map(|v| v["change"].as_i64().unwrap()).collect();
    assert!(changes.windows(2).all(|w| w[0] < w[1]), "in change order");
    // After the last cursor, only what changed since comes back.
    let tok = {
        let r = s.post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": "late", "question": "q" }),
        );
        r.json().unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (tail, _) = sync_all(&s, &admin, Some(cursor.clone()), 100);
    assert_eq!(tail.len(), 1, "only the new session");
    assert_eq!(tail[0]["session_id"], tok.as_str());
    // Filters, and a tampered cursor.
    let r = s
        .get("/api/v1/sessions?ref=R1&limit=1000", Some(&admin))
        .json()
        .unwrap();
    assert_eq!(r["sessions"].as_array().unwrap().len(), 10);
    let mut bad = cursor.clone();
    bad.replace_range(5..6, if &cursor[5..6] == "A" { "B" } else { "A" });
    let r = s.get(&format!("/api/v1/sessions?after={bad}"), Some(&admin));
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("cursor"));
}

#[test]
fn monitors_stream_live_and_codes_are_listed() {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", "agent password 123");
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
    let (alice, _) = s.login("alice", "agent password 123");
    assert_eq!(
        s.post(
            "/api/v1/agent/presence",
            Some(&alice),
            json!({ "status": "available" })
        )
        .status,
        200
    );
    s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "x", "question": "q" }),
    );
    let first = first_sse_event(&s, "/api/v1/monitors/stream", &admin);
    let v: Value = serde_json::from_str(
        first
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(v["agents"][0]["name"], "alice");
    assert_eq!(v["agents"][0]["status"], "available");
    assert_eq!(v["queues"][0]["waiting"], 1);
    let code = s
        .post("/api/v1/codes", Some(&alice), json!({ "ref": "T-5" }))
        .json()
        .unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    let list = s.get("/api/v1/codes", Some(&alice)).json().unwrap();
    assert_eq!(list["codes"][0]["code"], code.as_str());
    assert_eq!(list["codes"][0]["ref"], "T-5");
}

/// Reads the first event of a Server-Sent Events stream, then hangs up.
fn first_sse_event(s: &Server, path: &str, token: &str) -> String {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg =
        custos::tls::pinned_client_config(custos::tls::parse_fingerprint(&s.fingerprint).unwrap())
            .unwrap();
    let (addr, path, token) = (s.addr.clone(), path.to_string(), token.to_string());
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let mut body = send.send_request(req).await.unwrap().into_body();
        let mut buf = String::new();
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Ok(d) = frame.into_data() {
                buf.push_str(&String::from_utf8_lossy(&d));
            }
            if let Some(end) = buf.find("\n\n") {
                return buf[..end].to_string();
            }
        }
    })
}

#[test]
fn api_tokens_are_limited_to_their_scopes_and_revocable() {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", "integration password 1");
    dir.run(&[
        "user",
        "add",
        "crm",
        "--role",
        "admin",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .ok();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let r = s.post(
        "/api/v1/tokens",
        Some(&admin),
        json!({ "user": "crm", "name": "CRM sync", "scopes": ["read_any_session"], "days": 30 }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let v = r.json().unwrap();
    let (token, id) = (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(s.get("/api/v1/sessions", Some(&token)).status, 200);
    let r = s.get("/api/v1/monitors/agents", Some(&token));
    assert_eq!(r.status, 403);
    assert!(
        r.error_message().contains("not scoped for read_monitors"),
        "{}",
        r.error_message()
    );
    assert_eq!(s.get("/api/v1/users", Some(&token)).status, 403);
    let list = s.get("/api/v1/tokens", Some(&admin)).json().unwrap();
    assert_eq!(list["tokens"][0]["name"], "CRM sync");
    assert!(
        s.post(
            "/api/v1/tokens",
            Some(&admin),
            json!({ "user": "crm", "name": "x", "scopes": ["everything"] })
        )
        .error_message()
        .contains("unknown scope")
    );
    assert_eq!(
        s.call(
            hyper::Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None
        )
        .status,
        204
    );
    assert_eq!(s.get("/api/v1/sessions", Some(&token)).status, 401);
    let audit = dir.run(&["audit", "show", "--json"]).stdout();
    assert!(audit.contains("\"token.issued\"") && audit.contains("\"token.revoked\""));
    assert!(!audit.contains(&token), "tokens never reach the log");
}
