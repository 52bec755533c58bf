//! Retention policies, legal holds and the sweeper, through the CLI as an officer types it.

use serde_json::json;

use crate::util::*;

const PW: &str = "officer password 1";

fn policy_dir(dir: &Dir, name: &str, body: &str) -> std::path::PathBuf {
    let d = dir.tmp.path().join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("p.toml"), body).unwrap();
    d
}

const THIRTY_DAYS: &str = "[[policy]]\nname = \"thirty-days\"\nclasses = [\"transcript\", \"events\", \"file\", \"survey\", \"metadata\"]\nretain_days = 30\naction = \"shred\"\nmode = \"governance\"\n";

/// An appliance with officers, an agent, and three ended sessions (the second tagged CASE-B),
/// each with a transcript, events and a file.
fn world() -> (Dir, Vec<String>) {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", PW);
    for (name, role) in [
        ("officer1", "compliance"),
        ("officer2", "compliance"),
        ("alice", "agent"),
    ] {
        let mut args = vec![
            "user",
            "add",
            name,
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
    s.admin(&one_time, "admin password long");
    let (alice, _) = s.login("alice", PW);
    let mut ids = Vec::new();
    for (i, r) in ["CASE-A", "CASE-B", "CASE-C"].iter().enumerate() {
        let v = s.post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": format!("c{i}"), "question": "q", "ref": r }),
        );
        let id = v.json().unwrap()["request_id"]
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
        let mut ws = s.ws(&id, &format!("Bearer {alice}"));
        ws.expect("hello");
        ws.send(&json!({ "type": "chat", "text": format!("secret {i}"), "id": "a" }));
        ws.expect("ack");
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
    let mut s = s;
    s.stop();
    (dir, ids)
}

fn objects_of(dir: &Dir, session: &str) -> Vec<(String, String)> {
    let conn = raw_db(dir);
    let mut stmt = conn
        .prepare("SELECT id, state FROM objects WHERE session_id = ?1")
        .unwrap();
    stmt.query_map([session], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn age_sessions(dir: &Dir) {
    raw_db(dir)
        .execute(
            "UPDATE sessions SET ended_at = '2020-01-01T00:00:00.000Z'",
            [],
        )
        .unwrap();
}

#[test]
fn the_shipped_policies_are_valid_and_bad_files_name_their_line() {
    let dir = Dir::new();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let out = dir.run(&["policy", "check", shipped.to_str().unwrap()]);
    let text = out.ok().stdout();
    for name in [
        "default-one-year",
        "hipaa-six-years",
        "sox-seven-years",
        "glba-two-years",
        "pci-dss-minimize",
        "sec-17a-4-three-years",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    for f in ["default", "hipaa", "sox", "glba", "pci-dss", "sec-17a-4"] {
        let body = std::fs::read_to_string(shipped.join(format!("{f}.toml"))).unwrap();
        assert!(
            body.starts_with('#'),
            "{f}.toml opens with a comment citing its rule"
        );
    }
    let bad = policy_dir(
        &dir,
        "bad",
        &THIRTY_DAYS.replace("retain_days = 30", "retain_days = \"forever\""),
    );
    let out = dir.run(&["policy", "check", bad.to_str().unwrap()]);
    assert!(
        out.fails().stderr().contains("p.toml:4:"),
        "{}",
        out.stderr()
    );
    let bad = policy_dir(
        &dir,
        "bad2",
        &THIRTY_DAYS.replace("\"events\"", "\"everything\""),
    );
    assert!(
        dir.run(&["policy", "check", bad.to_str().unwrap()])
            .fails()
            .stderr()
            .contains("everything")
    );
}

#[test]
fn sweep_shreds_what_expired_never_what_is_held_and_releasing_takes_four_eyes() {
    let (dir, ids) = world();
    let pwf = dir.secret("opw", PW);
    let p = policy_dir(&dir, "pol", THIRTY_DAYS);
    dir.run(&["policy", "install", p.to_str().unwrap()]).ok();
    assert!(
        dir.run(&["audit", "show", "--json"])
            .stdout()
            .contains("\"policy.installed\"")
    );
    // Nothing is due yet; at a date 31 days after the sessions ended, all are.
    assert!(dir.run(&["policy", "plan"]).ok().stdout().contains("0 of"));
    age_sessions(&dir);
    let hold = dir.run(&[
        "hold",
        "add",
        "--ref",
        "CASE-B",
        "--reason",
        "litigation",
        "--case",
        "2026-CV-1",
        "--user",
        "officer1",
        "--password-file",
        pwf.to_str().unwrap(),
    ]);
    assert!(hold.ok().stdout().contains("hold 1 placed"));
    assert!(
        dir.run(&[
            "hold",
            "add",
            "--ref",
            "X",
            "--reason",
            "",
            "--case",
            "c",
            "--user",
            "officer1",
            "--password-file",
            pwf.to_str().unwrap()
        ])
        .fails()
        .stderr()
        .contains("reason")
    );
    let plan = dir.run(&["policy", "plan"]).ok().stdout();
    assert!(
        plan.contains("held (hold 1)") && plan.contains("due: shred"),
        "{plan}"
    );

    let before_b = objects_of(&dir, &ids[1]);
    let out = dir.run(&["sweep"]);
    assert!(
        out.ok().stdout().contains("expired but held"),
        "{}",
        out.stdout()
    );
    for (i, id) in ids.iter().enumerate() {
        for (obj, state) in objects_of(&dir, id) {
            let path = dir
                .path()
                .join("archive")
                .join(&obj[..2])
                .join(format!("{obj}.obj"));
            if i == 1 {
                assert_ne!(state, "shredded", "held session B was touched");
                assert!(path.exists());
            } else {
                assert_eq!(state, "shredded");
                assert!(!path.exists(), "ciphertext of {obj} is gone");
                let keys: i64 = raw_db(&dir)
                    .query_row(
                        "SELECT COUNT(*) FROM object_keys WHERE object_id = ?1",
                        [&obj],
                        |r| r.get(0),
                    )
                    .unwrap();
                assert_eq!(keys, 0, "the data key of {obj} is destroyed");
            }
        }
    }
    assert_eq!(objects_of(&dir, &ids[1]), before_b);
    // The expired session records lost their personal details; the held one kept them.
    let names: Vec<String> = ids
        .iter()
        .map(|id| {
            raw_db(&dir)
                .query_row(
                    "SELECT customer_name FROM sessions WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["", "c1", ""]);
    // No path reads shredded content any more.
    let data = custos::app::DataDir::new(dir.path());
    let mut store = data.open_store().unwrap();
    let keys = custos::keys::Keyring::new(data.master_files().load_keyfile().unwrap());
    let (obj, _) = &objects_of(&dir, &ids[0])[0];
    let err = data
        .archive()
        .read_all(&mut store, &keys, obj.parse().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("shredded"), "{err}");
    drop(store);
    let audit = dir
        .run(&["audit", "show", "--last", "100", "--json"])
        .stdout();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"archive.object.shredded\"") && l.contains("thirty-days")),
        "{audit}"
    );
    dir.run(&["audit", "verify"]).ok();
    dir.run(&["archive", "verify"]).ok();

    // The officer who placed the hold may not release it; a second one may.
    let r = dir.run(&[
        "hold",
        "release",
        "1",
        "--reason",
        "case closed",
        "--user",
        "officer1",
        "--password-file",
        pwf.to_str().unwrap(),
    ]);
    assert!(
        r.fails()
            .stderr()
            .contains("second, different compliance officer"),
        "{}",
        r.stderr()
    );
    let wrong = dir.secret("wrongpw", "not the password");
    assert!(
        dir.run(&[
            "hold",
            "release",
            "1",
            "--reason",
            "x",
            "--user",
            "officer2",
            "--password-file",
            wrong.to_str().unwrap()
        ])
        .fails()
        .stderr()
        .contains("wrong password")
    );
    dir.run(&[
        "hold",
        "release",
        "1",
        "--reason",
        "case closed",
        "--user",
        "officer2",
        "--password-file",
        pwf.to_str().unwrap(),
    ])
    .ok();
    assert!(
        dir.run(&["hold", "list", "--all"])
            .stdout()
            .contains("released by officer2")
    );
    dir.run(&["sweep"]).ok();
    assert!(
        objects_of(&dir, &ids[1])
            .iter()
            .all(|(_, s)| s == "shredded")
    );
    dir.run(&["audit", "verify"]).ok();
}

#[test]
fn new_sessions_matching_an_open_hold_are_held_from_the_start() {
    let dir = Dir::new();
    dir.init();
    let pw = dir.secret("pw", PW);
    dir.run(&[
        "user",
        "add",
        "officer1",
        "--role",
        "compliance",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .ok();
    dir.run(&[
        "hold",
        "add",
        "--email",
        "Dana@Example.org",
        "--reason",
        "subpoena",
        "--case",
        "C-9",
        "--user",
        "officer1",
        "--password-file",
        pw.to_str().unwrap(),
    ])
    .ok();
    let p = policy_dir(&dir, "pol", THIRTY_DAYS);
    dir.run(&["policy", "install", p.to_str().unwrap()]).ok();
    let s = dir.serve();
    let v = s.post("/api/v1/requests", None, json!({ "portal": "support", "name": "Dana", "email": "dana@example.org", "question": "q" })).json().unwrap();
    let id = v["request_id"].as_str().unwrap().to_string();
    let ctok = v["customer_token"].as_str().unwrap().to_string();
    // The installed policy, and this session's retention: held from the start.
    let officer = s.login("officer1", PW).0;
    let installed = s.get("/api/v1/policies", Some(&officer)).json().unwrap();
    assert_eq!(
        installed["policies"][0]["name"], "thirty-days",
        "{installed}"
    );
    assert_eq!(installed["policies"][0]["retain_days"], 30);
    let plan = s
        .get(
            &format!("/api/v1/retention/plan?session={id}"),
            Some(&officer),
        )
        .json()
        .unwrap();
    let objects = plan["objects"].as_array().unwrap();
    assert!(!objects.is_empty(), "{plan}");
    assert!(
        objects
            .iter()
            .all(|o| o["session"] == id.as_str() && o["holds"] == serde_json::json!([1])),
        "{plan}"
    );
    assert_eq!(
        s.get("/api/v1/retention/plan?session=x%27", Some(&officer))
            .status,
        400
    );
    let mut s = s;
    drop(ctok);
    s.stop();
    age_sessions(&dir);
    let plan = dir.run(&["policy", "plan", "--all"]).ok().stdout();
    assert!(
        plan.lines()
            .filter(|l| l.contains(&id))
            .all(|l| l.contains("held (hold 1)")),
        "{plan}"
    );
    dir.run(&["sweep"]).ok();
    assert!(objects_of(&dir, &id).iter().all(|(_, s)| s != "shredded"));
}

#[test]
fn a_sweep_with_the_clock_set_forward_is_refused_and_deletes_nothing() {
    let (dir, ids) = world();
    let p = policy_dir(&dir, "pol", THIRTY_DAYS);
    dir.run(&["policy", "install", p.to_str().unwrap()]).ok();
    age_sessions(&dir);
    // The last trusted time is a month ago: to the sweeper, the clock has jumped forward.
    raw_db(&dir).execute("INSERT INTO meta (key, value) VALUES ('trusted_time', '2020-01-02T00:00:00.000Z') ON CONFLICT (key) DO UPDATE SET value = excluded.value", []).unwrap();
    let out = dir.run(&["sweep"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("moved forward") && out.stderr().contains("--trust-clock"),
        "{}",
        out.stderr()
    );
    assert!(
        ids.iter()
            .flat_map(|id| objects_of(&dir, id))
            .all(|(_, s)| s != "shredded"),
        "nothing was shredded"
    );
    assert!(
        dir.run(&["audit", "show", "--json"])
            .stdout()
            .lines()
            .any(|l| l.contains("\"retention.sweep\"") && l.contains("\"denied\""))
    );
    // An administrator who checked the time source confirms it.
    dir.run(&["sweep", "--trust-clock"]).ok();
    assert!(
        ids.iter()
            .flat_map(|id| objects_of(&dir, id))
            .all(|(_, s)| s == "shredded")
    );
    dir.run(&["audit", "verify"]).ok();
}

#[test]
fn compliance_policies_only_lengthen_and_governance_changes_need_a_reason() {
    let dir = Dir::new();
    dir.init();
    let comp = THIRTY_DAYS
        .replace("governance", "compliance")
        .replace("retain_days = 30", "retain_days = 100");
    dir.run(&[
        "policy",
        "install",
        policy_dir(&dir, "c1", &comp).to_str().unwrap(),
    ])
    .ok();
    let shorter = comp.replace("retain_days = 100", "retain_days = 50");
    let out = dir.run(&[
        "policy",
        "install",
        policy_dir(&dir, "c2", &shorter).to_str().unwrap(),
    ]);
    assert!(
        out.fails()
            .stderr()
            .contains("cannot go from 100 down to 50"),
        "{}",
        out.stderr()
    );
    let other = THIRTY_DAYS.replace("thirty-days", "another");
    let out = dir.run(&[
        "policy",
        "install",
        policy_dir(&dir, "c3", &other).to_str().unwrap(),
    ]);
    assert!(
        out.fails().stderr().contains("cannot be removed"),
        "{}",
        out.stderr()
    );
    let longer = comp.replace("retain_days = 100", "retain_days = 200");
    dir.run(&[
        "policy",
        "install",
        policy_dir(&dir, "c4", &longer).to_str().unwrap(),
    ])
    .ok();

    let dir = Dir::new();
    dir.init();
    dir.run(&[
        "policy",
        "install",
        policy_dir(&dir, "g1", &THIRTY_DAYS.replace("30", "90"))
            .to_str()
            .unwrap(),
    ])
    .ok();
    let g2 = policy_dir(&dir, "g2", THIRTY_DAYS);
    assert!(
        dir.run(&["policy", "install", g2.to_str().unwrap()])
            .fails()
            .stderr()
            .contains("give a reason")
    );
    dir.run(&[
        "policy",
        "install",
        g2.to_str().unwrap(),
        "--reason",
        "legal approved shorter retention",
    ])
    .ok();
    assert!(
        dir.run(&["audit", "show", "--json"])
            .stdout()
            .contains("legal approved shorter retention")
    );
}

#[test]
fn an_interrupted_sweep_is_finished_by_the_next() {
    let (dir, ids) = world();
    dir.run(&[
        "policy",
        "install",
        policy_dir(&dir, "pol", THIRTY_DAYS).to_str().unwrap(),
    ])
    .ok();
    age_sessions(&dir);
    let (obj, _) = objects_of(&dir, &ids[0])[0].clone();
    let path = dir
        .path()
        .join("archive")
        .join(&obj[..2])
        .join(format!("{obj}.obj"));
    let saved = std::fs::read(&path).unwrap();
    dir.run(&["sweep"]).ok();
    // As if the sweep had died after committing the shred but before removing the file.
    std::fs::write(&path, saved).unwrap();
    let out = dir.run(&["archive", "verify"]);
    assert!(
        out.fails().stdout().contains("still on disk"),
        "{}",
        out.stdout()
    );
    assert!(
        dir.run(&["sweep"])
            .ok()
            .stdout()
            .contains("1 leftover files removed")
    );
    dir.run(&["archive", "verify"]).ok();
    dir.run(&["audit", "verify"]).ok();
}

#[test]
fn review_before_shred_waits_for_an_officer() {
    let (dir, ids) = world();
    let review = THIRTY_DAYS.replace("\"shred\"", "\"review\"");
    dir.run(&[
        "policy",
        "install",
        policy_dir(&dir, "rev", &review).to_str().unwrap(),
    ])
    .ok();
    age_sessions(&dir);
    let out = dir.run(&["sweep"]);
    assert!(
        out.ok().stdout().contains("0 objects shredded"),
        "{}",
        out.stdout()
    );
    assert!(
        !out.stdout().contains(" 0 awaiting review"),
        "{}",
        out.stdout()
    );
    let plan = dir.run(&["policy", "plan"]).ok().stdout();
    assert!(plan.contains("due: review"), "{plan}");
    let (obj, _) = objects_of(&dir, &ids[0])[0].clone();
    let pw = dir.secret("opw", PW);
    let r = dir.run(&[
        "policy",
        "approve",
        &obj,
        "--user",
        "officer1",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(
        r.ok().stdout().contains("1 objects shredded after review"),
        "{}",
        r.stdout()
    );
    assert!(
        objects_of(&dir, &ids[0])
            .iter()
            .any(|(o, s)| *o == obj && s == "shredded")
    );
    let again = dir.run(&[
        "policy",
        "approve",
        &obj,
        "--user",
        "officer1",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(again.fails().stderr().contains("not awaiting review"));
    let audit = dir
        .run(&["audit", "show", "--last", "30", "--json"])
        .stdout();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"archive.object.shredded\"")
                && l.contains("\"approved_by\":\"officer1\"")),
        "{audit}"
    );
}
