//! `custos console` in a real terminal (tmux), against a running appliance: a compliance officer
//! logs in, finds a session by its reference, reads it with a reason, places a hold on it and sees
//! the hold and the read in the audit tail.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

struct Tmux {
    name: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.cmd(&["send-keys", "-t", &self.name, k]);
        }
    }

    fn text(&self, s: &str) {
        self.cmd(&["send-keys", "-t", &self.name, "-l", s]);
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", &self.name])
    }

    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if s.contains(needle) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waited 30 s for {needle:?}; the screen shows:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-session", "-t", &self.name]);
    }
}

#[test]
fn an_officer_finds_a_session_reads_it_and_places_a_hold_in_a_real_terminal() {
    let has = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tool_present(has, "tmux (drives the console in a real terminal)") {
        return;
    }
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", "officer password 1");
    dir.run(&[
        "user",
        "add",
        "olga",
        "--role",
        "compliance",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .ok();
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
    s.admin(&one_time, "admin password long");
    // A finished session with a transcript, tagged CRM-4711.
    let r = s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Pia", "question": "Printer jam", "ref": "CRM-4711" }),
    );
    let id = r.json().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let alice = s.login("alice", "officer password 1").0;
    assert_eq!(
        s.post(
            &format!("/api/v1/requests/{id}/accept"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    let r = s.post(
        &format!("/api/v1/sessions/{id}/messages"),
        Some(&alice),
        json!({ "type": "chat", "text": "Open tray two and pull gently" }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(
        s.post(
            &format!("/api/v1/sessions/{id}/end"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );

    let t = Tmux {
        name: format!("custos-console-{}", std::process::id()),
    };
    let console = format!(
        "{} --data {} console",
        bin().display(),
        dir.path().display()
    );
    let out = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &t.name,
            "-x",
            "100",
            "-y",
            "30",
            &console,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.wait_for("Sign in to Custos");
    t.text("olga");
    t.keys(&["Enter"]);
    t.text("officer password 1");
    t.keys(&["Enter"]);
    t.wait_for("olga (compliance)");
    t.wait_for("support/general");

    // Sessions: search by the reference, open with a reason.
    t.keys(&["2"]);
    t.wait_for("Sessions, page 1");
    t.keys(&["/"]);
    t.wait_for("Search sessions");
    t.text("ref:CRM-4711");
    t.keys(&["Enter"]);
    t.wait_for("Sessions matching \"ref:CRM-4711\"");
    t.wait_for("CRM-4711");
    t.keys(&["Enter"]);
    t.wait_for("Why do you read this session?");
    t.text("audit of case 12");
    t.keys(&["Enter"]);
    let screen = t.wait_for("Open tray two and pull gently");
    assert!(screen.contains("Pia"), "{screen}");

    // Holds: place one on the session.
    t.keys(&["Escape", "4"]);
    t.wait_for("Legal holds in force (0)");
    t.keys(&["n"]);
    t.wait_for("Place a legal hold");
    t.text(&id);
    t.keys(&["Enter"]);
    t.text("pending litigation");
    t.keys(&["Enter"]);
    t.text("LIT-12");
    t.keys(&["Enter"]);
    t.wait_for("Legal holds in force (1)");
    t.wait_for("LIT-12");

    // The audit tail shows the read and the hold.
    t.keys(&["5"]);
    let screen = t.wait_for("hold.placed");
    assert!(screen.contains("session.read"), "{screen}");
    // And the appliance verifies the whole log for the officer.
    t.keys(&["v"]);
    t.wait_for("Audit log intact");
    t.keys(&["q"]);
    let start = Instant::now();
    while Command::new("tmux")
        .args(["has-session", "-t", &t.name])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(start.elapsed() < Duration::from_secs(10), "q did not quit");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What the console did is in the log under the officer's name.
    let holds = s
        .get(
            "/api/v1/holds",
            Some(&s.login("olga", "officer password 1").0),
        )
        .json()
        .unwrap();
    assert_eq!(holds["holds"][0]["case_id"], "LIT-12");
    assert_eq!(holds["holds"][0]["placed_by"], "olga");
}

#[test]
fn the_verification_api_reports_progress_and_names_a_tampered_entry() {
    let dir = Dir::new();
    let one_time = dir.init();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let poll = |id: u64| -> serde_json::Value {
        let start = Instant::now();
        loop {
            let r = s.get(&format!("/api/v1/audit/verify/{id}"), Some(&admin));
            assert_eq!(r.status, 200, "{}", r.error_message());
            let v = r.json().unwrap();
            if v["state"] != "running" {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "still running: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let r = s.post("/api/v1/audit/verify", Some(&admin), json!({}));
    assert_eq!(r.status, 202, "{}", r.error_message());
    let id = r.json().unwrap()["id"].as_u64().unwrap();
    let v = poll(id);
    assert_eq!(v["state"], "intact", "{v}");
    assert!(v["result"]["entries"].as_u64().unwrap() > 0);
    assert_eq!(v["checked"], v["total"]);
    assert_eq!(s.get("/api/v1/audit/verify/999", Some(&admin)).status, 404);
    assert_eq!(s.get("/api/v1/audit/verify/abc", Some(&admin)).status, 400);
    assert_eq!(s.post("/api/v1/audit/verify", None, json!({})).status, 401);

    // Someone with the database file changes an entry's text (and its stored leaf hash).
    let db = raw_db(&dir);
    let entry: Vec<u8> = db
        .query_row("SELECT entry FROM audit_log WHERE seq = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let forged = String::from_utf8(entry)
        .unwrap()
        .replace("\"success\"", "\"denied\"");
    db.execute(
        "UPDATE audit_log SET entry = ?1 WHERE seq = 1",
        [forged.as_bytes()],
    )
    .unwrap();
    let r = s.post("/api/v1/audit/verify", Some(&admin), json!({}));
    let v = poll(r.json().unwrap()["id"].as_u64().unwrap());
    assert_eq!(v["state"], "broken", "{v}");
    assert!(
        v["result"]["problem"].as_str().unwrap().contains("#1"),
        "{v}"
    );
}
