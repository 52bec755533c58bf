//! Support sessions through the API and the relay socket, as a customer's program and an
//! agent's console speak them: request, queue, accept, chat, files, transfer, end, survey; and
//! every kind of bad input.

use hyper::Method;
use serde_json::{Value, json};

use crate::util::*;

const AGENT_PW: &str = "agent password 123";

/// A running appliance with an admin token and agents alice and bob in support/general and
/// carl in another portal.
struct Desk {
    dir: Dir,
    s: Server,
    admin: String,
}

fn desk() -> Desk {
    let dir = Dir::new();
    let one_time = dir.init();
    let cfg = dir.path().join("custos.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        r#"
[[portal]]
name = "billing"
title = "Billing"
skills = ["invoices", "refunds"]

[[portal.field]]
name = "account"
label = "Account number"
kind = "number"
required = true

[[portal.field]]
name = "serial"
label = "Device serial"
hidden = true
"#,
    );
    std::fs::write(&cfg, text).unwrap();
    let pw = dir.secret("agentpw", AGENT_PW);
    for (name, skills) in [
        ("alice", "support:general"),
        ("bob", "support:general,billing:invoices"),
        ("carl", "billing:refunds"),
    ] {
        dir.run(&[
            "user",
            "add",
            name,
            "--role",
            "agent",
            "--password-file",
            pw.to_str().unwrap(),
            "--skills",
            skills,
        ])
        .ok();
    }
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    Desk { dir, s, admin }
}

fn request(s: &Server, body: Value) -> Value {
    let r = s.post("/api/v1/requests", None, body);
    assert_eq!(r.status, 201, "{}", r.error_message());
    r.json().unwrap()
}

fn agent(s: &Server, name: &str) -> String {
    s.login(name, AGENT_PW).0
}

#[test]
fn a_request_goes_through_queue_chat_files_transfer_end_and_survey() {
    let d = desk();
    let s = &d.s;
    let req = request(
        s,
        json!({ "portal": "support", "name": "Dana Patient", "email": "dana@example.org", "question": "My screen is blank", "ref": "TICKET-7" }),
    );
    let id = req["request_id"].as_str().unwrap().to_string();
    let ctoken = req["customer_token"].as_str().unwrap().to_string();
    assert_eq!(req["queue_position"], 1);
    let mut cust = s.ws(&id, &format!("Customer {ctoken}"));
    let hello = cust.expect("hello");
    assert_eq!(hello["role"], "customer");
    assert_eq!(hello["session"]["status"], "waiting");
    assert_eq!(cust.expect("queue")["position"], 1);

    let alice = agent(s, "alice");
    let q = s.get("/api/v1/queue", Some(&alice)).json().unwrap();
    assert_eq!(q["waiting"][0]["request_id"], id.as_str());
    assert_eq!(q["waiting"][0]["ref"], "TICKET-7");
    // carl works another portal and may not take it.
    let carl = agent(s, "carl");
    assert_eq!(
        s.get("/api/v1/queue", Some(&carl)).json().unwrap()["waiting"],
        json!([])
    );
    assert_eq!(
        s.post(
            &format!("/api/v1/requests/{id}/accept"),
            Some(&carl),
            json!({})
        )
        .status,
        403
    );
    // Chat before an agent is there is refused, without harm.
    cust.send(&json!({ "type": "chat", "text": "hello?" }));
    assert_eq!(cust.expect("error")["code"], "not_active");

    let r = s.post(
        &format!("/api/v1/requests/{id}/accept"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.json().unwrap()["session_id"], id.as_str());
    assert_eq!(cust.expect("accepted")["agent"], "alice");
    assert_eq!(
        s.post(
            &format!("/api/v1/requests/{id}/accept"),
            Some(&alice),
            json!({})
        )
        .status,
        409
    );

    let mut al = s.ws(&id, &format!("Bearer {alice}"));
    assert_eq!(al.expect("hello")["role"], "agent");
    cust.send(&json!({ "type": "chat", "text": "Hello, my screen is blank", "id": "c1" }));
    let got = al.expect("chat");
    assert_eq!(
        (got["text"].as_str(), got["from"].as_str()),
        (Some("Hello, my screen is blank"), Some("customer"))
    );
    let ack = cust.expect("ack");
    assert_eq!(
        (ack["id"].as_str(), ack["recorded"].as_bool()),
        (Some("c1"), Some(true)),
        "acked once durable: {ack}"
    );
    al.send(&json!({ "type": "chat", "text": "Let me look — ünïcödé ok", "id": "a1" }));
    assert_eq!(cust.expect("chat")["text"], "Let me look — ünïcödé ok");
    al.send(&json!({ "type": "note", "text": "customer sounds stressed" }));
    assert_eq!(al.expect("note")["text"], "customer sounds stressed");
    al.send(&json!({ "type": "url", "url": "https://kb.example.org/blank-screen" }));
    assert_eq!(
        cust.expect("url")["url"],
        "https://kb.example.org/blank-screen"
    );
    // Bad messages get errors; the session goes on.
    cust.send(&json!({ "type": "url", "url": "https://evil.example" }));
    assert_eq!(cust.expect("error")["code"], "forbidden");
    assert!(cust.send_raw("{not json".into()));
    assert_eq!(cust.expect("error")["code"], "bad_message");

    // Files both ways.
    let cfile: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let r = upload(
        s,
        &id,
        &format!("Customer {ctoken}"),
        "log.bin",
        cfile.clone(),
    );
    assert_eq!(r["size"], 200_000);
    assert_eq!(al.expect("file")["file_id"], r["file_id"]);
    let afile = b"#!/bin/sh\necho fixed\n".to_vec();
    let r2 = upload(s, &id, &format!("Bearer {alice}"), "fix.sh", afile.clone());
    // Each side also hears of its own files; the customer's own came first.
    assert_eq!(cust.expect("file")["name"], "log.bin");
    assert_eq!(cust.expect("file")["name"], "fix.sh");
    assert_eq!(
        download(
            s,
            &id,
            r["file_id"].as_str().unwrap(),
            &format!("Bearer {alice}")
        ),
        cfile
    );
    assert_eq!(
        download(
            s,
            &id,
            r2["file_id"].as_str().unwrap(),
            &format!("Customer {ctoken}")
        ),
        afile
    );

    // Transfer to bob, who takes over.
    let r = s.post(
        &format!("/api/v1/sessions/{id}/transfer"),
        Some(&alice),
        json!({ "to_agent": "bob", "note": "needs a driver expert" }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(al.expect("transferred")["to"], "bob");
    assert_eq!(cust.expect("transferred")["to"], "bob");
    let bob = agent(s, "bob");
    let mut b = s.ws(&id, &format!("Bearer {bob}"));
    let hello = b.expect("hello");
    assert!(
        hello["history"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "Hello, my screen is blank"),
        "bob sees the history"
    );
    assert_eq!(
        hello["session"]["transfer_note"], "needs a driver expert",
        "the note is for the next agent"
    );
    let monitors = s
        .get("/api/v1/monitors/queues", Some(&d.admin))
        .json()
        .unwrap();
    assert!(
        monitors["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["portal"] == "support" && q["skill"] == "general")
    );
    assert_eq!(s.get("/api/v1/monitors/agents", Some(&bob)).status, 403);
    b.send(&json!({ "type": "chat", "text": "Bob here, try the new driver", "id": "b1" }));
    assert_eq!(cust.expect("chat")["name"], "bob");
    assert_eq!(b.expect("ack")["id"], "b1");
    // alice no longer may act on it.
    assert_eq!(
        s.post(
            &format!("/api/v1/sessions/{id}/end"),
            Some(&alice),
            json!({})
        )
        .status,
        403
    );

    // A survey before the end is refused; after it, accepted once.
    let survey = json!({ "rating": 5, "comment": "Bob fixed it" });
    assert_eq!(
        s.call(
            Method::POST,
            &format!("/api/v1/sessions/{id}/survey"),
            None,
            Some(survey.clone())
        )
        .status,
        401
    );
    let r = s.post(&format!("/api/v1/sessions/{id}/end"), Some(&bob), json!({}));
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(cust.expect("ended")["by"], "bob");
    let r = customer_post(
        s,
        &format!("/api/v1/sessions/{id}/survey"),
        &ctoken,
        survey.clone(),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert_eq!(
        customer_post(s, &format!("/api/v1/sessions/{id}/survey"), &ctoken, survey).status,
        409
    );

    // Everything reads back from the archive exactly.
    let detail = s.get(
        &format!("/api/v1/sessions/{id}?reason=test"),
        Some(&d.admin),
    );
    assert_eq!(detail.status, 200, "{}", detail.error_message());
    let v = detail.json().unwrap();
    let texts: Vec<&str> = v["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "Hello, my screen is blank",
            "Let me look — ünïcödé ok",
            "customer sounds stressed",
            "Bob here, try the new driver"
        ]
    );
    assert!(
        v["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["url"] == "https://kb.example.org/blank-screen")
    );
    assert_eq!(v["ref"], "TICKET-7");
    assert_eq!(v["survey"]["rating"], 5);
    assert_eq!(v["files"].as_array().unwrap().len(), 2);
    let agents: Vec<&str> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "agent")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["alice", "bob"]);
    assert!(v["timings"]["handle_s"].is_number());
    // carl never handled it and may not read it.
    assert_eq!(
        s.get(&format!("/api/v1/sessions/{id}"), Some(&carl)).status,
        403
    );

    let audit = d
        .dir
        .run(&["audit", "show", "--last", "200", "--json"])
        .stdout();
    for action in [
        "request.created",
        "request.accepted",
        "session.transferred",
        "session.ended",
        "session.file.sent",
        "session.file.read",
        "survey.submitted",
        "session.read",
    ] {
        assert!(
            audit.contains(&format!("\"{action}\"")),
            "no {action} in the audit log"
        );
    }
    drop((cust, al, b));
    d.dir.run(&["audit", "verify"]).ok();
}

fn upload(s: &Server, id: &str, auth: &str, name: &str, data: Vec<u8>) -> Value {
    let r = raw(
        s,
        Method::POST,
        &format!("/api/v1/sessions/{id}/files?name={name}"),
        auth,
        data,
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    r.json().unwrap()
}

fn download(s: &Server, id: &str, file_id: &str, auth: &str) -> Vec<u8> {
    let r = raw(
        s,
        Method::GET,
        &format!("/api/v1/sessions/{id}/files/{file_id}"),
        auth,
        Vec::new(),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    r.body
}

#[test]
fn request_validation_names_every_problem_and_changes_nothing() {
    let d = desk();
    let s = &d.s;
    let before = raw_db(&d.dir)
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get::<_, i64>(0))
        .unwrap();
    for (body, needle) in [
        (
            json!({ "portal": "nope", "name": "x", "question": "q" }),
            "no portal",
        ),
        (
            json!({ "portal": "support", "question": "q" }),
            "missing field `name`",
        ),
        (
            json!({ "portal": "support", "name": "", "question": "q" }),
            "Your name is required",
        ),
        (
            json!({ "portal": "support", "name": "x", "question": "q", "skill": "billing" }),
            "no skill",
        ),
        (
            json!({ "portal": "support", "name": "x", "question": "q", "email": "not-an-address" }),
            "E-mail is not a valid address",
        ),
        (
            json!({ "portal": "billing", "name": "x", "question": "q" }),
            "Account number is required",
        ),
        (
            json!({ "portal": "billing", "name": "x", "question": "q", "fields": { "account": "abc" } }),
            "account number is not a valid",
        ),
        (
            json!({ "portal": "billing", "name": "x", "question": "q", "fields": { "account": "12", "color": "red" } }),
            "no field \"color\"",
        ),
        (
            json!({ "portal": "support", "name": "x", "question": "q".repeat(2001) }),
            "too long",
        ),
    ] {
        let r = s.post("/api/v1/requests", None, body.clone());
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.error_message().contains(needle),
            "{body}: {}",
            r.error_message()
        );
    }
    let after = raw_db(&d.dir)
        .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(before, after);
    // Hidden fields and an external ref ride along, with no browser at all.
    let v = request(
        s,
        json!({ "portal": "billing", "skill": "invoices", "name": "Eve", "question": "Invoice 42", "fields": { "account": "1234", "serial": "SN-9" }, "ref": "CRM-1" }),
    );
    let id = v["request_id"].as_str().unwrap();
    let detail = s
        .get(&format!("/api/v1/sessions/{id}"), Some(&d.admin))
        .json()
        .unwrap();
    assert_eq!(
        detail["fields"],
        json!({ "account": "1234", "serial": "SN-9" })
    );
    assert_eq!(detail["ref"], "CRM-1");
}

#[test]
fn tokens_never_cross_sessions() {
    let d = desk();
    let s = &d.s;
    let a = request(
        s,
        json!({ "portal": "support", "name": "A", "question": "a" }),
    );
    let b = request(
        s,
        json!({ "portal": "support", "name": "B", "question": "b" }),
    );
    let (aid, atok) = (
        a["request_id"].as_str().unwrap(),
        a["customer_token"].as_str().unwrap(),
    );
    // Files wait until an agent has the session.
    let r = raw(
        s,
        Method::POST,
        &format!("/api/v1/sessions/{aid}/files?name=x.txt"),
        &format!("Customer {atok}"),
        b"early".to_vec(),
    );
    assert_eq!(r.status, 409, "{}", r.error_message());
    let bid = b["request_id"].as_str().unwrap();
    let r = customer_post(
        s,
        &format!("/api/v1/requests/{bid}/cancel"),
        atok,
        json!({}),
    );
    assert_eq!(r.status, 403, "{}", r.error_message());
    let r = raw(
        s,
        Method::GET,
        &format!("/api/v1/sessions/{bid}/customer"),
        &format!("Customer {atok}"),
        vec![],
    );
    assert_eq!(r.status, 403);
    // A's own view works; cancelling takes it out of the queue.
    let r = raw(
        s,
        Method::GET,
        &format!("/api/v1/sessions/{aid}/customer"),
        &format!("Customer {atok}"),
        vec![],
    );
    assert_eq!(r.json().unwrap()["position"], 1);
    assert_eq!(
        customer_post(
            s,
            &format!("/api/v1/requests/{aid}/cancel"),
            atok,
            json!({})
        )
        .status,
        200
    );
    let alice = agent(s, "alice");
    let q = s.get("/api/v1/queue", Some(&alice)).json().unwrap();
    assert_eq!(q["waiting"].as_array().unwrap().len(), 1);
    assert_eq!(q["waiting"][0]["request_id"], bid);
    // Ending a request that is still waiting cancels it, and the answer says so.
    let btok = b["customer_token"].as_str().unwrap();
    let r = customer_post(s, &format!("/api/v1/sessions/{bid}/end"), btok, json!({}));
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.json().unwrap()["status"], "cancelled");
}

#[test]
fn connection_codes_join_the_agent_directly_and_resist_guessing() {
    let d = desk();
    let s = &d.s;
    let alice = agent(s, "alice");
    let r = s.post(
        "/api/v1/codes",
        Some(&alice),
        json!({ "ref": "CASE-55", "ttl_s": 300 }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let code = r.json().unwrap()["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 11, "nine digits in groups of three: {code}");
    let r = s.post(
        &format!("/api/v1/codes/{}/redeem", code.replace(' ', "")),
        None,
        json!({ "name": "Frank" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let v = r.json().unwrap();
    let id = v["session_id"].as_str().unwrap();
    let q = s.get("/api/v1/queue", Some(&alice)).json().unwrap();
    assert_eq!(q["sessions"][0]["session_id"], id);
    let mut al = s.ws(id, &format!("Bearer {alice}"));
    assert_eq!(al.expect("hello")["session"]["ref"], "CASE-55");
    // Used codes, cancelled codes and nonsense are refused.
    assert_eq!(
        s.post(
            &format!("/api/v1/codes/{}/redeem", code.replace(' ', "")),
            None,
            json!({})
        )
        .status,
        404
    );
    let r2 = s.post("/api/v1/codes", Some(&alice), json!({}));
    let c2 = r2.json().unwrap()["code"]
        .as_str()
        .unwrap()
        .replace(' ', "");
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/api/v1/codes/{c2}"),
            Some(&alice),
            None
        )
        .status,
        204
    );
    assert_eq!(
        s.call(
            Method::DELETE,
            &format!("/api/v1/codes/{c2}"),
            Some(&alice),
            None
        )
        .status,
        404,
        "a cancelled code cannot be cancelled again"
    );
    assert_eq!(
        s.post(&format!("/api/v1/codes/{c2}/redeem"), None, json!({}))
            .status,
        404
    );
    assert_eq!(
        s.post("/api/v1/codes/12ab/redeem", None, json!({})).status,
        400
    );
    // The CLI issues codes too.
    let out = d
        .dir
        .run(&["code", "new", "--agent", "bob", "--ref", "T-1"]);
    let cli_code = out.ok().stdout().trim().replace(' ', "");
    assert_eq!(cli_code.len(), 9);
    // Guessing: after a few misses from one address, everything is refused for a while, even a
    // valid code.
    let mut statuses = Vec::new();
    for i in 0..14 {
        statuses.push(
            s.post(
                &format!("/api/v1/codes/{:09}/redeem", 100_000_000 + i),
                None,
                json!({}),
            )
            .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        s.post(&format!("/api/v1/codes/{cli_code}/redeem"), None, json!({}))
            .status,
        429
    );
    let audit = d
        .dir
        .run(&["audit", "show", "--last", "100", "--json"])
        .stdout();
    assert!(
        audit
            .lines()
            .filter(|l| l.contains("\"code.rejected\""))
            .count()
            >= 10,
        "{audit}"
    );
    assert!(audit.contains("\"code.redeemed\""));
    drop(al);
}

#[test]
fn oversized_frames_and_floods_hurt_only_their_sender() {
    let d = desk();
    let s = &d.s;
    let alice = agent(s, "alice");
    let mut ids = Vec::new();
    let mut custs = Vec::new();
    for n in ["One", "Two"] {
        let v = request(
            s,
            json!({ "portal": "support", "name": n, "question": "q" }),
        );
        let id = v["request_id"].as_str().unwrap().to_string();
        assert_eq!(
            s.post(
                &format!("/api/v1/requests/{id}/accept"),
                Some(&alice),
                json!({})
            )
            .status,
            200
        );
        let mut c = s.ws(
            &id,
            &format!("Customer {}", v["customer_token"].as_str().unwrap()),
        );
        c.expect("hello");
        custs.push(c);
        ids.push(id);
    }
    let mut a1 = s.ws(&ids[0], &format!("Bearer {alice}"));
    a1.expect("hello");
    let mut a2 = s.ws(&ids[1], &format!("Bearer {alice}"));
    a2.expect("hello");
    // A frame over 64 KiB closes that one connection.
    let huge = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(70_000));
    custs[0].send_raw(huge);
    assert!(
        custs[0].recv().is_none_or(|v| v["type"] == "participant"),
        "the oversized sender is cut off"
    );
    // The other session is unaffected.
    custs[1].send(&json!({ "type": "chat", "text": "still here" }));
    assert_eq!(a2.expect("chat")["text"], "still here");
    // A flood gets rate-limited errors, not a crash.
    for _ in 0..80 {
        custs[1].send(&json!({ "type": "typing", "on": true }));
    }
    assert_eq!(custs[1].expect("error")["code"], "rate_limited");
    drop(a1);
}

#[test]
fn kill_9_of_the_server_mid_session_keeps_every_acknowledged_message() {
    let mut d = desk();
    let req = request(
        &d.s,
        json!({ "portal": "support", "name": "Ivy", "question": "crash test" }),
    );
    let id = req["request_id"].as_str().unwrap().to_string();
    let ctok = req["customer_token"].as_str().unwrap().to_string();
    let alice = agent(&d.s, "alice");
    assert_eq!(
        d.s.post(
            &format!("/api/v1/requests/{id}/accept"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    let mut cust = d.s.ws(&id, &format!("Customer {ctok}"));
    cust.expect("hello");
    let mut acked = Vec::new();
    for i in 0..30 {
        let text = format!("message {i} before the crash");
        cust.send(&json!({ "type": "chat", "text": text, "id": format!("m{i}") }));
        let ack = cust.expect("ack");
        assert_eq!(ack["recorded"], true);
        acked.push(text);
    }
    d.s.kill9();
    drop(cust);
    // The restart recovers the open transcript; the session is still there, with every
    // acknowledged message.
    d.s = d.dir.serve();
    let admin = d.s.login("admin", "admin password long").0;
    let v =
        d.s.get(&format!("/api/v1/sessions/{id}"), Some(&admin))
            .json()
            .unwrap();
    assert_eq!(v["status"], "active");
    let texts: Vec<&str> = v["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(texts, acked.iter().map(String::as_str).collect::<Vec<_>>());
    // The session carries on in new objects after the restart.
    let alice = agent(&d.s, "alice");
    let mut al = d.s.ws(&id, &format!("Bearer {alice}"));
    al.expect("hello");
    al.send(&json!({ "type": "chat", "text": "back after the crash", "id": "x" }));
    al.expect("ack");
    let v =
        d.s.get(&format!("/api/v1/sessions/{id}"), Some(&admin))
            .json()
            .unwrap();
    assert_eq!(
        v["transcript"].as_array().unwrap().last().unwrap()["text"],
        "back after the crash"
    );
    let audit = d
        .dir
        .run(&["audit", "show", "--last", "100", "--json"])
        .stdout();
    assert!(audit.contains("\"archive.object.recovered\""), "{audit}");
    drop(al);
    d.s.stop();
    d.dir.run(&["archive", "verify"]).ok();
    d.dir.run(&["audit", "verify"]).ok();
    let integrity: String = raw_db(&d.dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn the_form_works_without_javascript_and_shows_errors_in_place() {
    let d = desk();
    let s = &d.s;
    let form = |body: &str| raw_form(s, "/p/billing", body);
    // Missing name and a bad account number: the form comes back as HTML, values kept, errors
    // next to their fields, nothing created.
    let r = form("skill=invoices&name=&question=help&field.account=abc&field.serial=SN-1");
    assert_eq!(r.status, 400);
    let html = String::from_utf8_lossy(&r.body);
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(
        html.contains("Your name is required") && html.contains("id=\"err-name\""),
        "{html}"
    );
    assert!(
        html.contains("aria-describedby=\"err-field-account\""),
        "{html}"
    );
    assert!(html.contains("value=\"SN-1\""), "hidden values are kept");
    // A good post lands in the waiting room with the customer cookie set.
    let r = form("skill=invoices&name=Jo&question=help&field.account=42&field.serial=SN-1&ref=T-9");
    assert_eq!(r.status, 303);
    let location = r.headers["location"].to_str().unwrap();
    assert!(location.starts_with("/s/sess_"), "{location}");
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("custos_customer=ctk_")
    );
}

#[test]
fn cookie_changes_need_the_csrf_header_and_sockets_refuse_other_origins() {
    let d = desk();
    let s = &d.s;
    let alice = agent(s, "alice");
    let cookie = format!("custos_session={alice}");
    // With the session cookie but without the header, a change is refused; with it, it works.
    let r = raw_with(
        s,
        Method::POST,
        "/api/v1/agent/presence",
        &[("cookie", &cookie)],
        br#"{"status":"away"}"#.to_vec(),
    );
    assert_eq!(r.status, 403, "{}", r.error_message());
    assert!(r.error_message().contains("X-Custos-CSRF"));
    let r = raw_with(
        s,
        Method::POST,
        "/api/v1/agent/presence",
        &[("cookie", &cookie), ("x-custos-csrf", "1")],
        br#"{"status":"away"}"#.to_vec(),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    // Reads need no header.
    assert_eq!(
        raw_with(
            s,
            Method::GET,
            "/api/v1/queue",
            &[("cookie", &cookie)],
            vec![]
        )
        .status,
        200
    );
    // A WebSocket upgrade from a page of another origin is refused.
    let v = request(
        s,
        json!({ "portal": "support", "name": "K", "question": "q" }),
    );
    let id = v["request_id"].as_str().unwrap();
    let r = raw_with(
        s,
        Method::GET,
        &format!("/api/v1/sessions/{id}/ws"),
        &[
            ("cookie", &cookie),
            ("origin", "https://evil.example"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        vec![],
    );
    assert_eq!(r.status, 403, "{}", r.error_message());
}

fn raw_form(s: &Server, path: &str, body: &str) -> custos::client::Response {
    raw_with(
        s,
        Method::POST,
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes().to_vec(),
    )
}

/// A request with arbitrary headers.
fn raw_with(
    s: &Server,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
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
    let path = path.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let res = send
            .send_request(
                req.body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
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

#[test]
fn card_numbers_are_masked_before_relay_and_storage_and_agents_mark_messages_sensitive() {
    let d = desk();
    let s = &d.s;
    let v = request(
        s,
        json!({ "portal": "support", "name": "Lee", "question": "billing" }),
    );
    let id = v["request_id"].as_str().unwrap().to_string();
    let alice = agent(s, "alice");
    assert_eq!(
        s.post(
            &format!("/api/v1/requests/{id}/accept"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    let mut cust = s.ws(
        &id,
        &format!("Customer {}", v["customer_token"].as_str().unwrap()),
    );
    cust.expect("hello");
    let mut al = s.ws(&id, &format!("Bearer {alice}"));
    al.expect("hello");
    cust.send(&json!({ "type": "chat", "text": "card 4111 1111 1111 1111 and ssn 078-05-1120", "id": "c" }));
    let got = al.expect("chat");
    assert_eq!(
        got["text"],
        "card [card number removed] and ssn [national id removed]"
    );
    assert_eq!(
        cust.expect("chat")["text"],
        got["text"],
        "the sender sees what was kept"
    );
    cust.send(&json!({ "type": "chat", "text": "my diagnosis is private", "id": "d" }));
    let private = al.expect("chat");
    al.send(&json!({ "type": "sensitive", "seq": private["seq"] }));
    assert_eq!(cust.expect("sensitive")["target"], private["seq"]);
    cust.send(&json!({ "type": "sensitive", "seq": 1 }));
    assert_eq!(cust.expect("error")["code"], "forbidden");
    // The marking is relayed at once and recorded within the recorder's next flush.
    let want = [
        "card [card number removed] and ssn [national id removed]",
        "[marked sensitive]",
    ];
    let start = std::time::Instant::now();
    loop {
        let detail = s
            .get(&format!("/api/v1/sessions/{id}"), Some(&alice))
            .json()
            .unwrap();
        let texts: Vec<String> = detail["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "chat")
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect();
        if texts == want {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(15),
            "the transcript shows {texts:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The number never reached the disk in any form.
    let mut stack = vec![d.dir.path()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else if let Ok(b) = std::fs::read(&e) {
                assert!(
                    !b.windows(19).any(|w| w == b"4111 1111 1111 1111"),
                    "card number in {}",
                    e.display()
                );
            }
        }
    }
    // With a reason, a role that may read any session sees the marked message.
    let full = s
        .get(
            &format!("/api/v1/sessions/{id}?include_sensitive=true&reason=complaint%20review"),
            Some(&d.admin),
        )
        .json()
        .unwrap();
    assert!(
        full["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["text"] == "my diagnosis is private" && m["sensitive"] == true)
    );
    assert_eq!(
        s.get(
            &format!("/api/v1/sessions/{id}?include_sensitive=true"),
            Some(&alice)
        )
        .status,
        403
    );
}

#[test]
fn the_command_api_sends_chat_links_and_notes_as_the_agent() {
    let d = desk();
    let s = &d.s;
    let req = request(
        s,
        json!({ "portal": "support", "name": "Fay Caller", "question": "VPN drops", "ref": "CRM-42" }),
    );
    let id = req["request_id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/sessions/{id}/messages");
    let chat = json!({ "type": "chat", "text": "Hello from the CRM" });
    let (alice, bob) = (agent(s, "alice"), agent(s, "bob"));

    // Refusals first, and none of them reaches the customer or the transcript.
    assert_eq!(s.post(&path, None, chat.clone()).status, 401);
    let r = s.post(&path, Some(&alice), chat.clone());
    assert_eq!(
        r.status,
        403,
        "a waiting session is nobody's: {}",
        r.error_message()
    );
    assert_eq!(
        s.post(
            "/api/v1/sessions/nosuchsession/messages",
            Some(&alice),
            chat.clone()
        )
        .status,
        404
    );
    let mut cust = s.ws(
        &id,
        &format!("Customer {}", req["customer_token"].as_str().unwrap()),
    );
    cust.expect("hello");
    let r = s.post(
        &format!("/api/v1/requests/{id}/accept"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    cust.expect("accepted");
    let r = s.post(&path, Some(&bob), chat.clone());
    assert_eq!(r.status, 403, "{}", r.error_message());
    assert!(
        r.error_message().contains("not yours"),
        "{}",
        r.error_message()
    );
    let admin_reads = s.post(&path, Some(&d.admin), chat.clone());
    assert_eq!(
        admin_reads.status, 403,
        "the admin is not this session's agent"
    );
    for (body, needle) in [
        (json!({ "type": "typing", "on": true }), "only chat, url"),
        (
            json!({ "type": "url", "url": "javascript:alert(1)" }),
            "url",
        ),
        (json!({ "type": "chat", "text": "" }), "chat text"),
        (
            json!({ "type": "chat", "text": "x", "extra": 1 }),
            "unknown field",
        ),
        (json!({ "type": "shout", "text": "x" }), "unknown variant"),
    ] {
        let r = s.post(&path, Some(&alice), body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.error_message());
        assert!(
            r.error_message().contains(needle),
            "{body}: {}",
            r.error_message()
        );
    }

    // Chat: returned once recorded, seen by the customer as the agent's.
    let r = s.post(&path, Some(&alice), chat.clone());
    assert_eq!(r.status, 200, "{}", r.error_message());
    let sent = r.json().unwrap();
    assert_eq!(sent["type"], "chat");
    assert_eq!(sent["from"], "agent");
    assert_eq!(sent["name"], "alice");
    assert_eq!(sent["recorded"], true);
    let seen = cust.expect("chat");
    assert_eq!(seen["text"], "Hello from the CRM");
    assert_eq!(seen["seq"], sent["seq"]);
    // A link reaches the customer; a note does not, but is in the transcript.
    let r = s.post(
        &path,
        Some(&alice),
        json!({ "type": "url", "url": "https://kb.example.org/vpn", "title": "VPN guide" }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(cust.expect("url")["url"], "https://kb.example.org/vpn");
    let r = s.post(
        &path,
        Some(&alice),
        json!({ "type": "note", "text": "customer on old client" }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    cust.send(&json!({ "type": "chat", "text": "thanks" }));
    loop {
        let m = cust.recv().expect("the customer's own chat comes back");
        assert!(
            m["type"] != "note" && !m.to_string().contains("old client"),
            "the note reached the customer: {m}"
        );
        if m["type"] == "chat" && m["text"] == "thanks" {
            break;
        }
    }

    let r = s.post(
        &format!("/api/v1/sessions/{id}/end"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(s.post(&path, Some(&alice), chat).status, 404);
    let detail = s
        .get(&format!("/api/v1/sessions/{id}"), Some(&alice))
        .json()
        .unwrap();
    let transcript = detail["transcript"].to_string();
    for text in [
        "Hello from the CRM",
        "kb.example.org/vpn",
        "customer on old client",
    ] {
        assert!(
            transcript.contains(text),
            "{text} missing from {transcript}"
        );
    }
}
