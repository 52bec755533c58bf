//! The permission matrix: the table in docs/security.md is the one `auth::allowed` enforces, and
//! every guarded endpoint answers each role accordingly.

use custos::auth::{Permission, allowed};
use custos::model::Role;
use hyper::Method;
use serde_json::json;

use crate::util::*;

const ALL: [(Permission, &str); 9] = [
    (Permission::ManageUsers, "ManageUsers"),
    (Permission::ReadAudit, "ReadAudit"),
    (Permission::ReadSystem, "ReadSystem"),
    (Permission::ReadMonitors, "ReadMonitors"),
    (Permission::ManageHolds, "ManageHolds"),
    (Permission::ReadCompliance, "ReadCompliance"),
    (Permission::HandleSessions, "HandleSessions"),
    (Permission::ReadAnySession, "ReadAnySession"),
    (Permission::ManageIntegrations, "ManageIntegrations"),
];

#[test]
fn the_matrix_in_security_md_is_the_enforced_one() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).unwrap();
    for (perm, name) in ALL {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("{name} is missing from the table"));
        let cells: Vec<&str> = row
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        for (i, role) in [Role::Admin, Role::Agent, Role::Compliance, Role::Auditor]
            .into_iter()
            .enumerate()
        {
            let says = cells[1 + i] == "yes";
            assert_eq!(
                says,
                allowed(role, perm),
                "docs/security.md says {name} for {role} is {}",
                cells[1 + i]
            );
        }
    }
}

#[test]
fn every_endpoint_for_every_role() {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", "role password 123");
    for role in ["agent", "compliance", "auditor"] {
        let mut args = vec![
            "user",
            "add",
            role,
            "--role",
            role,
            "--password-file",
            pw.to_str().unwrap(),
        ];
        if role == "agent" {
            args.extend(["--skills", "support:general"]);
        }
        dir.run(&args).ok();
    }
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let req = s
        .post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": "x", "question": "q" }),
        )
        .json()
        .unwrap();
    let sid = req["request_id"].as_str().unwrap().to_string();
    let mut tokens = vec![(Role::Admin, admin)];
    for (role, name) in [
        (Role::Agent, "agent"),
        (Role::Compliance, "compliance"),
        (Role::Auditor, "auditor"),
    ] {
        tokens.push((role, s.login(name, "role password 123").0));
    }
    // (method, path, body, permission). Bodies are chosen so that an allowed call cannot change
    // anything important (invalid names, unknown ids): only the refusals matter here.
    let endpoints: Vec<(Method, String, Option<serde_json::Value>, Permission)> = vec![
        (
            Method::GET,
            "/api/v1/users".into(),
            None,
            Permission::ManageUsers,
        ),
        (
            Method::POST,
            "/api/v1/users".into(),
            Some(json!({ "name": "bad name", "role": "agent" })),
            Permission::ManageUsers,
        ),
        (
            Method::POST,
            "/api/v1/users/nobody/disable".into(),
            Some(json!({})),
            Permission::ManageUsers,
        ),
        (
            Method::PUT,
            "/api/v1/users/nobody/skills".into(),
            Some(json!({ "skills": [] })),
            Permission::ManageUsers,
        ),
        (
            Method::GET,
            "/api/v1/audit/entries".into(),
            None,
            Permission::ReadAudit,
        ),
        (
            Method::GET,
            "/api/v1/audit/checkpoint".into(),
            None,
            Permission::ReadAudit,
        ),
        (
            Method::GET,
            "/api/v1/audit/proof?seq=0".into(),
            None,
            Permission::ReadAudit,
        ),
        (
            Method::GET,
            "/api/v1/system".into(),
            None,
            Permission::ReadSystem,
        ),
        (Method::GET, "/metrics".into(), None, Permission::ReadSystem),
        (
            Method::GET,
            "/api/v1/monitors/agents".into(),
            None,
            Permission::ReadMonitors,
        ),
        (
            Method::GET,
            "/api/v1/monitors/queues".into(),
            None,
            Permission::ReadMonitors,
        ),
        (
            Method::GET,
            "/api/v1/queue".into(),
            None,
            Permission::HandleSessions,
        ),
        (
            Method::POST,
            "/api/v1/agent/presence".into(),
            Some(json!({ "status": "away" })),
            Permission::HandleSessions,
        ),
        (
            Method::POST,
            "/api/v1/codes".into(),
            Some(json!({ "ttl_s": 5 })),
            Permission::HandleSessions,
        ),
        (
            Method::GET,
            "/api/v1/holds".into(),
            None,
            Permission::ReadCompliance,
        ),
        (
            Method::GET,
            "/api/v1/retention/plan".into(),
            None,
            Permission::ReadCompliance,
        ),
        (
            Method::GET,
            format!("/api/v1/sessions/{sid}/access"),
            None,
            Permission::ReadCompliance,
        ),
        (
            Method::POST,
            "/api/v1/holds".into(),
            Some(json!({ "ref": "r", "reason": "", "case": "c" })),
            Permission::ManageHolds,
        ),
        (
            Method::POST,
            "/api/v1/holds/999/release".into(),
            Some(json!({ "reason": "r" })),
            Permission::ManageHolds,
        ),
        (
            Method::GET,
            format!("/api/v1/sessions/{sid}?reason=permission%20walk"),
            None,
            Permission::ReadAnySession,
        ),
        (
            Method::POST,
            "/api/v1/requests/sess_aaaaaaaaaaaaaaaaaaaaaaaaaa/accept".into(),
            Some(json!({})),
            Permission::HandleSessions,
        ),
        (
            Method::POST,
            "/api/v1/sessions/sess_aaaaaaaaaaaaaaaaaaaaaaaaaa/transfer".into(),
            Some(json!({ "to_queue": true })),
            Permission::HandleSessions,
        ),
        (
            Method::POST,
            "/api/v1/sessions/sess_aaaaaaaaaaaaaaaaaaaaaaaaaa/messages".into(),
            Some(json!({ "type": "chat", "text": "walk" })),
            Permission::HandleSessions,
        ),
        (
            Method::GET,
            "/api/v1/webhooks".into(),
            None,
            Permission::ManageIntegrations,
        ),
        (
            Method::POST,
            "/api/v1/webhooks".into(),
            Some(json!({ "url": "ftp://x", "events": [] })),
            Permission::ManageIntegrations,
        ),
        (
            Method::DELETE,
            "/api/v1/webhooks/999999".into(),
            None,
            Permission::ManageIntegrations,
        ),
        (
            Method::GET,
            "/api/v1/deliveries".into(),
            None,
            Permission::ManageIntegrations,
        ),
        (
            Method::POST,
            "/api/v1/deliveries/999999/retry".into(),
            Some(json!({})),
            Permission::ManageIntegrations,
        ),
        (
            Method::PUT,
            "/api/v1/kb/articles/Bad%20Slug".into(),
            Some(json!({ "title": "t", "body": "b" })),
            Permission::ManageIntegrations,
        ),
        (
            Method::DELETE,
            "/api/v1/kb/articles/no-such-article".into(),
            None,
            Permission::ManageIntegrations,
        ),
        (
            Method::GET,
            "/api/v1/kb/articles".into(),
            None,
            Permission::HandleSessions,
        ),
        (
            Method::GET,
            "/api/v1/kb/articles/no-such-article".into(),
            None,
            Permission::HandleSessions,
        ),
        (
            Method::GET,
            "/api/v1/kb/search?q=printer".into(),
            None,
            Permission::HandleSessions,
        ),
        (
            Method::GET,
            "/api/v1/sessions/sess_aaaaaaaaaaaaaaaaaaaaaaaaaa/suggestions".into(),
            None,
            Permission::HandleSessions,
        ),
        (
            Method::POST,
            "/api/v1/sessions/sess_aaaaaaaaaaaaaaaaaaaaaaaaaa/kb/no-such-article/push".into(),
            Some(json!({})),
            Permission::HandleSessions,
        ),
        (
            Method::GET,
            format!("/api/v1/sessions/{sid}/diagnostics?reason=permission%20walk"),
            None,
            Permission::ReadAnySession,
        ),
        (
            Method::POST,
            "/api/v1/sessions/sess_aaaaaaaaaaaaaaaaaaaaaaaaaa/diagnostics/request".into(),
            Some(json!({})),
            Permission::HandleSessions,
        ),
        (
            Method::POST,
            "/api/v1/audit/verify".into(),
            Some(json!({})),
            Permission::ReadAudit,
        ),
        (
            Method::GET,
            "/api/v1/audit/verify/1".into(),
            None,
            Permission::ReadAudit,
        ),
        (
            Method::GET,
            "/api/v1/sessions/search?words=printer&reason=permission%20walk".into(),
            None,
            Permission::ReadAnySession,
        ),
        (
            Method::POST,
            "/api/v1/exports".into(),
            Some(json!({ "sessions": [], "reason": "" })),
            Permission::ReadAnySession,
        ),
        (
            Method::POST,
            "/api/v1/exports/jobs".into(),
            Some(json!({ "sessions": [], "reason": "" })),
            Permission::ReadAnySession,
        ),
        (
            Method::GET,
            "/api/v1/exports/jobs/1".into(),
            None,
            Permission::ReadAnySession,
        ),
        (
            Method::GET,
            "/api/v1/exports/jobs/1/bundle".into(),
            None,
            Permission::ReadAnySession,
        ),
        (
            Method::GET,
            "/api/v1/reports/sessions".into(),
            None,
            Permission::ReadMonitors,
        ),
        (
            Method::GET,
            "/api/v1/policies".into(),
            None,
            Permission::ReadCompliance,
        ),
        (
            Method::POST,
            "/api/v1/system/rotate".into(),
            None,
            Permission::ManageKeys,
        ),
        (
            Method::GET,
            "/api/v1/system/update".into(),
            None,
            Permission::ManageSystem,
        ),
        // Last: for the agent this takes the waiting request.
        (
            Method::POST,
            "/api/v1/queue/next".into(),
            Some(json!({})),
            Permission::HandleSessions,
        ),
    ];
    for (method, path, body, perm) in &endpoints {
        let anon = s.call(method.clone(), path, None, body.clone());
        assert_eq!(anon.status, 401, "{method} {path} without a token");
        for (role, token) in &tokens {
            let r = s.call(method.clone(), path, Some(token), body.clone());
            if allowed(*role, *perm) {
                assert!(
                    r.status != 403 && r.status != 401,
                    "{method} {path} as {role}: {} {}",
                    r.status,
                    r.error_message()
                );
            } else {
                assert_eq!(
                    r.status,
                    403,
                    "{method} {path} as {role} must be refused: {}",
                    r.error_message()
                );
            }
        }
    }
    // Compliance and auditor roles read content only with a stated reason.
    let (_, comp) = &tokens[2];
    let r = s.get(&format!("/api/v1/sessions/{sid}"), Some(comp));
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("reason"));
    let history = s
        .get(&format!("/api/v1/sessions/{sid}/access"), Some(comp))
        .json()
        .unwrap();
    let actors: Vec<&str> = history["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["actor"].as_str().unwrap())
        .collect();
    assert!(
        actors.contains(&"compliance") && actors.contains(&"auditor") && actors.contains(&"agent"),
        "access history: {actors:?}"
    );
    dir.run(&["audit", "verify"]).ok();
}
