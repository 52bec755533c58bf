//! Reports against figures computed by hand: four sessions with known timings and ratings, grouped
//! by day, agent and portal, over the API (JSON and CSV) and the CLI.

use serde_json::json;

use crate::util::*;

const PW: &str = "officer password 1";

/// A session written straight into the database: id, portal, status, agent, requested, accepted,
/// ended, rating.
type Generated<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<i64>,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
);

#[test]
fn reports_match_hand_computed_figures() {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", PW);
    for name in ["alice", "bob"] {
        dir.run(&[
            "user",
            "add",
            name,
            "--role",
            "agent",
            "--password-file",
            pw.to_str().unwrap(),
        ])
        .ok();
    }
    {
        let db = raw_db(&dir);
        let id = |name: &str| -> i64 {
            db.query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
                .unwrap()
        };
        let (alice, bob) = (id("alice"), id("bob"));
        let rows: [Generated; 4] = [
            (
                "sess_aaaaaaaaaaaaaaaaaaaaaaaaaa",
                "support",
                "ended",
                Some(alice),
                "2026-10-01T08:00:00.000Z",
                Some("2026-10-01T08:01:00.000Z"),
                Some("2026-10-01T08:11:00.000Z"),
                Some(5),
            ),
            (
                "sess_bbbbbbbbbbbbbbbbbbbbbbbbbb",
                "support",
                "ended",
                Some(bob),
                "2026-10-01T09:00:00.000Z",
                Some("2026-10-01T09:03:00.000Z"),
                Some("2026-10-01T09:08:00.000Z"),
                Some(1),
            ),
            (
                "sess_cccccccccccccccccccccccccc",
                "support",
                "cancelled",
                None,
                "2026-10-01T10:00:00.000Z",
                None,
                Some("2026-10-01T10:05:00.000Z"),
                None,
            ),
            (
                "sess_dddddddddddddddddddddddddd",
                "billing",
                "ended",
                Some(alice),
                "2026-10-02T08:00:00.000Z",
                Some("2026-10-02T08:00:30.000Z"),
                Some("2026-10-02T08:20:30.000Z"),
                Some(2),
            ),
        ];
        for (sid, portal, status, agent, req, acc, end, rating) in rows {
            db.execute(
                "INSERT INTO sessions (id, portal, skill, status, via, customer_name, customer_email, question, fields,
                 customer_token_hash, agent_id, recording, requested_at, accepted_at, ended_at, survey_rating, survey_at)
                 VALUES (?1, ?2, 'general', ?3, 'api', 'c', '', 'q', '{}', zeroblob(32), ?4, 1, ?5, ?6, ?7, ?8, ?7)",
                rusqlite::params![sid, portal, status, agent, req, acc, end, rating],
            )
            .unwrap();
        }
    }
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let report = |q: &str| -> Vec<serde_json::Value> {
        let r = s.get(&format!("/api/v1/reports/sessions?{q}"), Some(&admin));
        assert_eq!(r.status, 200, "{q}: {}", r.error_message());
        r.json().unwrap()["rows"].as_array().unwrap().clone()
    };
    // Refusals first.
    let alice = s.login("alice", PW).0;
    assert_eq!(
        s.get("/api/v1/reports/sessions", Some(&alice)).status,
        403,
        "agents do not read reports"
    );
    for bad in ["by=week", "format=xml", "since=yesterday", "colour=red"] {
        let r = s.get(&format!("/api/v1/reports/sessions?{bad}"), Some(&admin));
        assert_eq!(r.status, 400, "{bad}");
    }

    let by_day = report("by=day&since=2026-10-01&until=2026-10-31");
    assert_eq!(
        by_day,
        vec![
            json!({ "key": "2026-10-01", "sessions": 3, "accepted": 2, "ended": 2, "cancelled": 1,
                    "avg_wait_s": 120, "max_wait_s": 180, "avg_handle_s": 450,
                    "surveys": 2, "avg_rating": 3.0, "negative": 1 }),
            json!({ "key": "2026-10-02", "sessions": 1, "accepted": 1, "ended": 1, "cancelled": 0,
                    "avg_wait_s": 30, "max_wait_s": 30, "avg_handle_s": 1200,
                    "surveys": 1, "avg_rating": 2.0, "negative": 1 }),
        ]
    );
    let by_agent = report("by=agent&since=2026-10-01&until=2026-10-31");
    assert_eq!(
        by_agent,
        vec![
            json!({ "key": "", "sessions": 1, "accepted": 0, "ended": 0, "cancelled": 1,
                    "avg_wait_s": null, "max_wait_s": null, "avg_handle_s": null,
                    "surveys": 0, "avg_rating": null, "negative": 0 }),
            json!({ "key": "alice", "sessions": 2, "accepted": 2, "ended": 2, "cancelled": 0,
                    "avg_wait_s": 45, "max_wait_s": 60, "avg_handle_s": 900,
                    "surveys": 2, "avg_rating": 3.5, "negative": 1 }),
            json!({ "key": "bob", "sessions": 1, "accepted": 1, "ended": 1, "cancelled": 0,
                    "avg_wait_s": 180, "max_wait_s": 180, "avg_handle_s": 300,
                    "surveys": 1, "avg_rating": 1.0, "negative": 1 }),
        ]
    );
    // The range bounds: only the second day.
    let second = report("by=portal&since=2026-10-02");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["key"], "billing");

    // CSV, from the API and from the CLI, the same text.
    let r = s.get(
        "/api/v1/reports/sessions?by=portal&since=2026-10-01&until=2026-10-31&format=csv",
        Some(&admin),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "text/csv; charset=utf-8"
    );
    let csv = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!(
        csv,
        "key,sessions,accepted,ended,cancelled,avg_wait_s,max_wait_s,avg_handle_s,surveys,avg_rating,negative\r\n\
         billing,1,1,1,0,30,30,1200,1,2.00,1\r\n\
         support,3,2,2,1,120,180,450,2,3.00,1\r\n"
    );
    let cli = dir.run(&[
        "report",
        "--by",
        "portal",
        "--since",
        "2026-10-01",
        "--until",
        "2026-10-31",
    ]);
    cli.ok();
    assert_eq!(cli.stdout(), csv);
    dir.run(&["report", "--by", "week"]).fails();
}
