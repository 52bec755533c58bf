//! `custos console` in a real terminal (tmux), against a running appliance: a compliance officer
//! logs in, finds a session by a word in its transcript, reads it with a reason, places a hold on
//! it, sees the hold and the read in the audit tail, and runs the audit verification; an
//! administrator rotates the keys, seals and unseals the appliance from the System screen and from
//! the sign-in form.

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

/// Starts `custos console` on the data directory's socket in a detached tmux session of 100x30,
/// working in `work`.
fn start_console(dir: &Dir, work: &std::path::Path, tag: &str) -> Tmux {
    let t = Tmux {
        name: format!("custos-console-{tag}-{}", std::process::id()),
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
            "-c",
        ])
        .arg(work)
        .arg(&console)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t
}

fn has_tmux() -> bool {
    let has = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    tool_present(has, "tmux (drives the console in a real terminal)")
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-session", "-t", &self.name]);
    }
}

#[test]
fn an_officer_finds_a_session_reads_it_and_places_a_hold_in_a_real_terminal() {
    if !has_tmux() {
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

    let work = tempfile::tempdir().unwrap();
    let t = start_console(&dir, work.path(), "officer");
    t.wait_for("Sign in to Custos");
    t.text("olga");
    t.keys(&["Enter"]);
    t.text("officer password 1");
    t.keys(&["Enter"]);
    t.wait_for("olga (compliance)");
    t.wait_for("support/general");
    // Today's counts: the one request, accepted and ended.
    t.wait_for("Requests 1  accepted 1  ended 1");
    t.wait_for("14 days (max 1/day)");

    t.keys(&["2"]);
    t.wait_for("Sessions, page 1");
    // Sessions: find it by a word its transcript holds (the officer says why, once).
    t.keys(&["/"]);
    t.wait_for("Search: words in transcripts");
    t.text("tray");
    t.keys(&["Enter"]);
    t.wait_for("Why do you search transcripts?");
    t.text("complaint 88");
    t.keys(&["Enter"]);
    t.wait_for("Sessions matching \"tray\"");
    t.wait_for("CRM-4711");
    t.keys(&["Enter"]);
    t.wait_for("Why do you read this session?");
    t.text("audit of case 12");
    t.keys(&["Enter"]);
    let screen = t.wait_for("Open tray two and pull gently");
    assert!(screen.contains("Pia"), "{screen}");
    // Its retention (no policy is installed) and its timeline.
    assert!(screen.contains("transcript kept (no policy)"), "{screen}");
    t.keys(&["t"]);
    let screen = t.wait_for("accepted by alice");
    assert!(screen.contains("chat from alice"), "{screen}");
    assert!(screen.contains("session ended"), "{screen}");

    // Policies: none installed; a directory of policy files is checked before installing.
    t.keys(&["Escape", "3"]);
    t.wait_for("Active policies (0)");
    t.keys(&["c"]);
    t.wait_for("Check policy files");
    t.keys(&["Enter"]);
    let screen = t.wait_for("Policy check: errors");
    assert!(screen.contains("cannot read the directory"), "{screen}");
    t.keys(&["Escape"]);

    // Holds: place one on the session.
    t.keys(&["4"]);
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
    // Filtered to holds: the read drops out of the tail.
    t.keys(&["/"]);
    t.wait_for("Filter the audit log");
    t.text("hold.");
    t.keys(&["Enter"]);
    t.wait_for("filter \"hold.\"");
    let start = Instant::now();
    while t.screen().contains("session.read") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the filter did not apply:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(t.screen().contains("hold.placed"));

    // Back on the sessions it found: a signed export of them, saved where the console runs.
    t.keys(&["2"]);
    t.wait_for("CRM-4711");
    t.keys(&["e"]);
    t.wait_for("Export the 1 sessions listed");
    t.text("records request 5");
    t.keys(&["Enter", "Enter", "Enter"]);
    t.wait_for("wrote export");
    let bundle = work.path().join("custos-export.tar");
    dir.run(&["verify", bundle.to_str().unwrap()]).ok();
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
    let r = s.get(
        "/api/v1/audit/entries?from=18446744073709551615",
        Some(&admin),
    );
    assert_eq!(
        r.status, 400,
        "a from beyond i64 must not wrap around to the start"
    );

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

#[test]
fn transcript_words_find_sessions_through_the_blind_index_only() {
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
    let admin = s.admin(&one_time, "admin password long");
    let alice = s.login("alice", "officer password 1").0;
    let mut ids = Vec::new();
    for (name, text) in [
        ("Xena", "The toner cartridge leaks"),
        ("Yuri", "My toner is empty and the drum squeaks"),
    ] {
        let r = s.post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": name, "question": "q" }),
        );
        let id = r.json().unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_string();
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
                &format!("/api/v1/sessions/{id}/messages"),
                Some(&alice),
                json!({ "type": "chat", "text": text })
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
        ids.push(id);
    }
    let found = |q: &str, token: &str| -> Vec<String> {
        let r = s.get(&format!("/api/v1/sessions/search?{q}"), Some(token));
        assert_eq!(r.status, 200, "{q}: {}", r.error_message());
        r.json().unwrap()["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["session_id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut both = found("words=TONER", &admin);
    both.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(both, want);
    assert_eq!(
        found("words=toner+drum", &admin),
        [ids[1].clone()],
        "every word must match"
    );
    assert!(found("words=printer", &admin).is_empty());
    assert_eq!(found("words=toner&agent=alice&limit=1", &admin).len(), 1);
    // With the listing's filters: the customer (without case) and the time range.
    assert_eq!(found("words=toner&customer=yURI", &admin), [ids[1].clone()]);
    assert_eq!(
        found("words=toner&since=2020-01-01&until=2999-12-31", &admin).len(),
        2
    );
    assert!(found("words=toner&until=2020-01-01", &admin).is_empty());
    assert_eq!(
        s.get(
            "/api/v1/sessions/search?words=toner&since=yesterday",
            Some(&admin)
        )
        .status,
        400
    );
    let listed = s
        .get("/api/v1/sessions?customer=xena", Some(&admin))
        .json()
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["sessions"][0]["session_id"], ids[0].as_str());
    // Refusals: the agent role, a compliance officer without a reason, nothing to search for.
    assert_eq!(
        s.get("/api/v1/sessions/search?words=toner", Some(&alice))
            .status,
        403
    );
    let olga = s.login("olga", "officer password 1").0;
    assert_eq!(
        s.get("/api/v1/sessions/search?words=toner", Some(&olga))
            .status,
        400
    );
    assert_eq!(found("words=toner&reason=complaint+88", &olga).len(), 2);
    assert_eq!(
        s.get("/api/v1/sessions/search?words=a+b", Some(&admin))
            .status,
        400
    );
    assert_eq!(s.get("/api/v1/sessions/search", Some(&admin)).status, 400);
    // The database holds no word of the transcripts: only 16-byte terms.
    let db = raw_db(&dir);
    let (n, bad): (i64, i64) = db
        .query_row(
            "SELECT COUNT(*), SUM(length(term) != 16) FROM transcript_terms",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(n >= 8 && bad == 0, "{n} terms, {bad} not 16 bytes");
    for f in ["custos.db", "custos.db-wal"] {
        let raw = std::fs::read(dir.path().join(f)).unwrap_or_default();
        assert!(
            !raw.windows(6).any(|w| w == b"squeak"),
            "a transcript word reached {f}"
        );
    }
    // The audit log says a search happened, not what was searched for.
    let audit = s
        .get("/api/v1/audit/entries?limit=50", Some(&admin))
        .json()
        .unwrap();
    let searches: Vec<&serde_json::Value> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "sessions.searched")
        .collect();
    assert!(!searches.is_empty());
    assert!(
        !audit.to_string().contains("toner"),
        "search words in the audit log"
    );
}

#[test]
fn an_admin_rotates_seals_and_unseals_from_the_console() {
    if !has_tmux() {
        return;
    }
    let dir = Dir::new();
    let one_time = dir.init();
    let s = dir.serve();
    s.admin(&one_time, "admin password long");
    let work = tempfile::tempdir().unwrap();
    let sign_in = |t: &Tmux| {
        t.wait_for("Sign in to Custos");
        t.text("admin");
        t.keys(&["Enter"]);
        t.text("admin password long");
        t.keys(&["Enter"]);
    };
    let admin = s.login("admin", "admin password long").0;
    let t = start_console(&dir, work.path(), "admin");
    sign_in(&t);
    t.wait_for("admin (admin)");
    // Users: create one (its one-time password shown once), then disable it.
    t.keys(&["6"]);
    t.wait_for("Users (1)");
    t.keys(&["n"]);
    t.wait_for("New user");
    t.text("carl");
    t.keys(&["Enter"]);
    t.text("agent");
    t.keys(&["Enter"]);
    t.wait_for("user carl (agent) created; one-time password");
    t.wait_for("Users (2)");
    t.keys(&["Down", "d"]);
    t.wait_for("Disable carl");
    t.text("carl");
    t.keys(&["Enter"]);
    t.wait_for("user carl disabled");
    let users = s.get("/api/v1/users", Some(&admin)).json().unwrap();
    let carl = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "carl")
        .unwrap()
        .clone();
    assert_eq!(carl["disabled"], true, "{users}");

    t.keys(&["7"]);
    t.wait_for("key-encryption epoch 1");
    t.keys(&["k"]);
    t.wait_for("Type yes to rotate");
    t.text("yes");
    t.keys(&["Enter"]);
    t.wait_for("key epoch 2 is current");
    t.wait_for("key-encryption epoch 2");

    // Sealing a key-file appliance takes a passphrase that protects the key from then on.
    t.keys(&["s"]);
    t.wait_for("Seal the appliance");
    t.text("a long seal passphrase");
    t.keys(&["Enter"]);
    t.wait_for("SEALED");
    assert_eq!(
        s.get("/api/v1/system", Some(&admin)).status,
        503,
        "sealed: the API refuses"
    );
    t.keys(&["u"]);
    t.wait_for("Unseal the appliance");
    t.text("a long seal passphrase");
    t.keys(&["Enter"]);
    t.wait_for("unsealed, serving");

    // Sealed again, a fresh console is offered the unseal form before it can sign in.
    t.keys(&["s"]);
    t.wait_for("Seal the appliance");
    t.keys(&["Enter"]);
    t.wait_for("SEALED");
    t.keys(&["q"]);
    drop(t);
    let t = start_console(&dir, work.path(), "admin2");
    sign_in(&t);
    t.wait_for("unseal it to sign in");
    t.text("not the passphrase");
    t.keys(&["Enter"]);
    // Refused: back to signing in, which offers the unseal form again.
    t.wait_for("wrong passphrase");
    sign_in(&t);
    t.wait_for("unseal it to sign in");
    t.text("a long seal passphrase");
    t.keys(&["Enter"]);
    t.wait_for("the appliance is unsealed");
    sign_in(&t);
    t.wait_for("admin (admin)");

    // Each act is in the audit log under the admin's name.
    let log = s
        .get("/api/v1/audit/entries?action=keys.&limit=20", Some(&admin))
        .json()
        .unwrap();
    let acts: Vec<(String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        acts.contains(&("keys.rotated".into(), "admin".into())),
        "{acts:?}"
    );
    assert!(acts.iter().any(|(a, _)| a == "keys.sealed"), "{acts:?}");
}

#[test]
fn the_status_counts_today_measures_storage_and_the_audit_tail_filters() {
    let dir = Dir::new();
    let one_time = dir.init();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    for (i, name) in ["Ann", "Ben"].iter().enumerate() {
        let r = s.post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": name, "question": "q", "ref": format!("T-{i}") }),
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
    }
    let v = s.get("/api/v1/system", Some(&admin)).json().unwrap();
    let today = &v["today"]["sessions"];
    assert_eq!(today["requested"], 2, "{v}");
    assert_eq!(today["accepted"], 0, "{v}");
    assert!(today["survey_average"].is_null(), "{v}");
    let storage = &v["storage"];
    assert!(storage["database_bytes"].as_u64().unwrap() > 0, "{v}");
    let disk = &storage["disk"];
    assert!(
        disk["free_bytes"].as_u64().unwrap() <= disk["total_bytes"].as_u64().unwrap(),
        "{v}"
    );
    assert!(
        v["latest_checkpoint"]["vkey"]
            .as_str()
            .is_some_and(|k| k.starts_with("custos/") && k.splitn(3, '+').count() == 3),
        "{v}"
    );

    let services = v["services"].as_array().unwrap();
    let state = |name: &str| {
        services
            .iter()
            .find(|x| x["name"] == name)
            .map(|x| x["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state("https").as_deref(), Some("running"), "{v}");
    assert_eq!(state("checkpoints").as_deref(), Some("running"), "{v}");
    assert_eq!(state("webhooks").as_deref(), Some("off"), "no webhook: {v}");
    assert_eq!(state("e-mail").as_deref(), Some("off"), "{v}");

    // The audit tail, filtered by action prefix, actor and target.
    let entries = |q: &str| -> Vec<serde_json::Value> {
        let r = s.get(&format!("/api/v1/audit/entries?{q}"), Some(&admin));
        assert_eq!(r.status, 200, "{q}: {}", r.error_message());
        r.json().unwrap()["entries"].as_array().unwrap().clone()
    };
    let created = entries("action=request.&limit=10");
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|e| e["action"] == "request.created"));
    assert!(
        created[0]["seq"].as_u64() < created[1]["seq"].as_u64(),
        "oldest first"
    );
    let target = created[1]["target"].as_str().unwrap().to_string();
    let about = entries(&format!("target={target}"));
    assert_eq!(about.len(), 1);
    assert_eq!(about[0]["seq"], created[1]["seq"]);
    assert!(
        entries("actor=admin&action=auth.login")
            .iter()
            .all(|e| e["actor"] == "admin")
    );
    assert!(entries("action=no.such.action").is_empty());
    let r = s.get("/api/v1/audit/entries?from=1&action=auth.", Some(&admin));
    assert_eq!(r.status, 400);
    assert!(
        r.error_message().contains("cannot be combined with from"),
        "{}",
        r.error_message()
    );
}
