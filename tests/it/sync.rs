//! `custos sync --to sqlite:PATH` against a running appliance: 10,000 generated sessions and a few
//! real ones land row for row; a sync killed with SIGKILL in the middle resumes with neither
//! duplicates nor gaps; `--follow` brings a new session within a second or so; a database of a
//! newer schema is refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

const PW: &str = "officer password 1";

/// A session id for generated session `i` (`sess_` and 26 characters of base 32).
fn generated_id(i: usize) -> String {
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut id = String::from("sess_");
    let mut v = i;
    for _ in 0..26 {
        id.push(B32[v % 32] as char);
        v /= 32;
    }
    id
}

/// Writes `n` generated sessions straight into the appliance's database (before it serves), as
/// years of use would leave them: ended, some surveyed, some with a reference.
fn generate(dir: &Dir, n: usize) {
    let mut db = raw_db(dir);
    let tx = db.transaction().unwrap();
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO sessions (id, portal, skill, status, via, customer_name, customer_email, question, fields,
                 external_ref, customer_token_hash, recording, requested_at, accepted_at, ended_at, survey_rating, survey_at)
                 VALUES (?1, 'support', 'general', 'ended', 'api', ?2, ?3, 'generated', '{\"plan\":\"gold\"}', ?4, zeroblob(32), 1,
                 ?5, ?6, ?7, ?8, ?9)",
            )
            .unwrap();
        for i in 0..n {
            let day = 1 + i % 28;
            let at = |m: usize| format!("2026-10-{day:02}T{:02}:{:02}:00.000Z", 8 + i % 10, m);
            let rating = (i % 3 == 0).then_some(1 + (i % 5) as i64);
            ins.execute(rusqlite::params![
                generated_id(i),
                format!("Customer {i}"),
                format!("c{i}@example.org"),
                (i % 4 == 0).then(|| format!("T-{i}")),
                at(0),
                at(3),
                at(20),
                rating,
                rating.map(|_| at(21)),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

struct World {
    dir: Dir,
    s: Server,
    token_file: std::path::PathBuf,
    admin: String,
    real: Vec<String>,
}

fn world(generated: usize) -> World {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", PW);
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
    generate(&dir, generated);
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let alice = s.login("alice", PW).0;
    // A few real sessions with a transcript, a message marked sensitive and a survey.
    let mut real = Vec::new();
    for (name, text) in [("Pia", "printer jams"), ("Raj", "vpn drops")] {
        let r = s.post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": name, "email": format!("{name}@example.org"), "question": text, "ref": "CRM-1" }),
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        let id = r.json().unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        let post = |path: &str, body: serde_json::Value| {
            let r = s.post(path, Some(&alice), body);
            assert_eq!(r.status, 200, "{path}: {}", r.error_message());
            r
        };
        post(&format!("/api/v1/requests/{id}/accept"), json!({}));
        post(
            &format!("/api/v1/sessions/{id}/messages"),
            json!({ "type": "chat", "text": format!("about {text}: card 4111 1111") }),
        );
        post(
            &format!("/api/v1/sessions/{id}/messages"),
            json!({ "type": "url", "url": "https://kb.example.org/42" }),
        );
        real.push(id);
    }
    let token = s.post(
        "/api/v1/tokens",
        Some(&admin),
        json!({ "user": "admin", "name": "bi-sync", "days": 30, "scopes": ["read_any_session"] }),
    );
    assert_eq!(token.status, 201, "{}", token.error_message());
    let token_file = dir.secret(
        "sync-token",
        token.json().unwrap()["token"].as_str().unwrap(),
    );
    World {
        dir,
        s,
        token_file,
        admin,
        real,
    }
}

fn sync_cmd(w: &World, target: &std::path::Path, extra: &[&str]) -> Command {
    let to = format!("sqlite:{}", target.display());
    let mut args = vec![
        "sync",
        "--to",
        to.as_str(),
        "--token-file",
        w.token_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut c = w.dir.cmd(&args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run_sync(w: &World, target: &std::path::Path, extra: &[&str]) -> Out {
    Out(sync_cmd(w, target, extra).output().unwrap())
}

/// Every session of the appliance's database beside its synced row.
fn compare_sessions(w: &World, target: &std::path::Path) -> usize {
    let src = raw_db(&w.dir);
    let dst = rusqlite::Connection::open(target).unwrap();
    let cols = "id, status, via, portal, skill, customer_name, customer_email, question, external_ref, requested_at, accepted_at, ended_at, survey_rating, survey_at";
    let read = |c: &rusqlite::Connection, sql: &str| -> Vec<Vec<rusqlite::types::Value>> {
        let mut st = c.prepare(sql).unwrap();
        let n = st.column_count();
        st.query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, rusqlite::types::Value>(i))
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let a = read(&src, &format!("SELECT {cols} FROM sessions ORDER BY id"));
    let b = read(
        &dst,
        &format!(
            "SELECT {} FROM sessions ORDER BY session_id",
            cols.replacen("id", "session_id", 1)
        ),
    );
    assert_eq!(a.len(), b.len(), "every session, once");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "a synced row differs from the appliance's");
    }
    // Form fields, row for row.
    let fields: i64 = dst
        .query_row(
            "SELECT COUNT(*) FROM request_fields WHERE name = 'plan' AND value = 'gold'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fields as usize + w.real.len(), a.len());
    a.len()
}

#[test]
fn ten_thousand_sessions_sync_row_for_row_and_a_killed_sync_resumes() {
    let w = world(10_000);
    let target = w.dir.tmp.path().join("bi.db");
    // Refusals first: no token, a bad target, a wrong token.
    let r = w
        .dir
        .run(&["sync", "--to", &format!("sqlite:{}", target.display())]);
    r.fails();
    assert!(r.all().contains("CUSTOS_TOKEN"), "{}", r.all());
    let r = run_sync(&w, std::path::Path::new(""), &[]);
    r.fails();
    let bad = w.dir.secret("bad-token", "not-a-token");
    let r = w.dir.run(&[
        "sync",
        "--to",
        "postgres://localhost/x",
        "--token-file",
        bad.to_str().unwrap(),
    ]);
    r.fails();
    assert!(r.all().contains("not built yet"), "{}", r.all());
    let r = w.dir.run(&[
        "sync",
        "--to",
        &format!("sqlite:{}", target.display()),
        "--token-file",
        bad.to_str().unwrap(),
    ]);
    r.fails();
    assert!(r.all().contains("401"), "{}", r.all());

    // Killed with SIGKILL once some pages are committed, then run again to the end.
    let mut child = sync_cmd(&w, &target, &[]).spawn().unwrap();
    let start = Instant::now();
    loop {
        let committed = rusqlite::Connection::open(&target)
            .ok()
            .and_then(|c| {
                c.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get::<_, i64>(0))
                    .ok()
            })
            .unwrap_or(0);
        if committed >= 1000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sync committed no pages"
        );
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the sync ended before it was killed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(child.id(), "KILL");
    child.wait().unwrap();
    let out = run_sync(&w, &target, &[]);
    out.ok();
    assert!(out.stdout().contains("up to date"), "{}", out.all());
    let n = compare_sessions(&w, &target);
    assert_eq!(n, 10_000 + w.real.len());

    // The real sessions' transcripts: in order, the sensitive text left behind, links kept.
    let dst = rusqlite::Connection::open(&target).unwrap();
    let chat: Vec<(String, Option<String>, Option<String>)> = dst
        .prepare(
            "SELECT type, text, url FROM chat_messages WHERE session_id = ?1 ORDER BY position",
        )
        .unwrap()
        .query_map([&w.real[0]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chat.len(), 2, "{chat:?}");
    assert_eq!(
        chat[0].1.as_deref(),
        Some("about printer jams: card 4111 1111")
    );
    assert_eq!(chat[1].2.as_deref(), Some("https://kb.example.org/42"));
    let participants: i64 = dst
        .query_row(
            "SELECT COUNT(*) FROM participants WHERE session_id = ?1",
            [&w.real[1]],
            |r| r.get(0),
        )
        .unwrap();
    assert!(participants >= 2, "customer and agent");

    // Running again finds nothing new and changes nothing.
    let again = run_sync(&w, &target, &[]);
    again.ok();
    assert!(
        again.stdout().contains("0 sessions written"),
        "{}",
        again.all()
    );
    // Every content read was audited, under the token's user, with the sync's reason.
    let log =
        w.s.get(
            &format!(
                "/api/v1/audit/entries?action=session.read&target=session:{}",
                w.real[0]
            ),
            Some(&w.admin),
        )
        .json()
        .unwrap();
    let reads = log["entries"].as_array().unwrap();
    assert!(!reads.is_empty(), "{log}");
    assert!(
        reads
            .iter()
            .all(|e| e["actor"] == "admin" && e["details"]["reason"] == "database sync"),
        "{log}"
    );
}

#[test]
fn follow_brings_a_new_session_and_a_newer_schema_is_refused() {
    let w = world(50);
    let target = w.dir.tmp.path().join("live.db");
    let mut follower = sync_cmd(&w, &target, &["--follow"]).spawn().unwrap();
    let count = |id: &str| -> i64 {
        rusqlite::Connection::open(&target)
            .ok()
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM sessions WHERE session_id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .ok()
            })
            .unwrap_or(0)
    };
    let wait_for = |id: &str, what: &str| {
        let start = Instant::now();
        while count(id) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what} did not arrive"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    };
    wait_for(&w.real[1], "the initial sync");
    let r = w.s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Zoe", "question": "new one" }),
    );
    let id = r.json().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let took = wait_for(&id, "the new session");
    eprintln!("follow: a new session reached the database after {took:?}");
    // An ended session's new status arrives too.
    let ended = w.real[0].clone();
    let alice = w.s.login("alice", PW).0;
    assert_eq!(
        w.s.post(
            &format!("/api/v1/sessions/{ended}/end"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    let start = Instant::now();
    loop {
        let status: String = rusqlite::Connection::open(&target)
            .unwrap()
            .query_row(
                "SELECT status FROM sessions WHERE session_id = ?1",
                [&ended],
                |r| r.get(0),
            )
            .unwrap();
        if status == "ended" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the end did not arrive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(follower.id(), "KILL");
    follower.wait().unwrap();

    // A database written by a newer custos is left alone.
    rusqlite::Connection::open(&target)
        .unwrap()
        .execute("UPDATE custos_schema SET version = 99", [])
        .unwrap();
    let r = run_sync(&w, &target, &[]);
    r.fails();
    assert!(r.all().contains("newer than this custos"), "{}", r.all());
}
