//! The audit log: the RFC 6962 vectors, tampering of every kind, two processes appending.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use custos::audit::merkle;
use serde_json::Value;

use crate::util::*;

fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap())
        .unwrap_or_else(|_| b"not base64".to_vec())
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

#[test]
fn rfc6962_vectors_from_shared_testdata() {
    let Some(root) = shared("testdata/rfc6962") else {
        return;
    };
    let tree: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("tree.json")).unwrap()).unwrap();
    let leaves: Vec<[u8; 32]> = tree["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| merkle::leaf_hash(&hex::decode(h.as_str().unwrap()).unwrap()))
        .collect();
    for (n, want) in tree["root_hex_by_size"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let t = merkle::MemTree::from_leaf_hashes(leaves[..n].to_vec());
        assert_eq!(
            hex::encode(merkle::root(&t, n as u64).unwrap()),
            want.as_str().unwrap(),
            "root of size {n}"
        );
    }
    let mut files = Vec::new();
    walk(&root.join("inclusion"), &mut files);
    let inclusion = files.len();
    walk(&root.join("consistency"), &mut files);
    assert!(
        files.len() > 100,
        "expected the full vector set, found {}",
        files.len()
    );
    for (i, f) in files.iter().enumerate() {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = v["proof"]
            .as_array()
            .map(|a| a.iter().map(b64).collect())
            .unwrap_or_default();
        let got = if i < inclusion {
            merkle::verify_inclusion(
                v["leafIdx"].as_u64().unwrap(),
                v["treeSize"].as_u64().unwrap(),
                &b64(&v["leafHash"]),
                &proof,
                &b64(&v["root"]),
            )
            .map_err(|e| e.to_string())
        } else {
            merkle::verify_consistency(
                v["size1"].as_u64().unwrap(),
                v["size2"].as_u64().unwrap(),
                &b64(&v["root1"]),
                &b64(&v["root2"]),
                &proof,
            )
            .map_err(|e| e.to_string())
        };
        let want_err = v["wantErr"].as_bool().unwrap();
        assert_eq!(got.is_err(), want_err, "{}: {:?}", f.display(), got);
    }
}

/// A data directory with a few dozen entries and several checkpoints.
fn populated() -> Dir {
    let dir = Dir::new();
    dir.init();
    for i in 0..6 {
        dir.run(&["user", "add", &format!("agent{i}"), "--role", "agent"])
            .ok();
        if i % 2 == 1 {
            // A server start writes a checkpoint over everything so far.
            dir.serve().stop();
        }
    }
    dir.run(&["audit", "verify"]).ok();
    dir
}

fn verify_fails_with(dir: &Dir, needle: &str) {
    let out = dir.run(&["audit", "verify"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(
        out.stdout().contains(needle),
        "expected {needle:?} in:\n{}",
        out.stdout()
    );
}

#[test]
fn an_edited_entry_is_named() {
    let dir = populated();
    raw_db(&dir)
        .execute("UPDATE audit_log SET entry = CAST(replace(CAST(entry AS TEXT), 'agent2', 'agent9') AS BLOB) WHERE target = 'user:agent2'", [])
        .unwrap();
    let seq: i64 = raw_db(&dir)
        .query_row(
            "SELECT seq FROM audit_log WHERE target = 'user:agent2'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    verify_fails_with(
        &dir,
        &format!("entry #{seq} is altered: its content no longer matches its leaf hash"),
    );
}

#[test]
fn an_edit_with_forged_hashes_is_caught_by_the_signed_checkpoint() {
    let dir = populated();
    let conn = raw_db(&dir);
    let (seq, entry): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT seq, entry FROM audit_log WHERE target = 'user:agent1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let forged = String::from_utf8(entry)
        .unwrap()
        .replace("agent1", "agent7")
        .into_bytes();
    let leaf = merkle::leaf_hash(&forged);
    conn.execute(
        "UPDATE audit_log SET entry = ?2, leaf_hash = ?3 WHERE seq = ?1",
        rusqlite::params![seq, forged, &leaf[..]],
    )
    .unwrap();
    conn.execute(
        "UPDATE audit_tree SET hash = ?2 WHERE level = 0 AND idx = ?1",
        rusqlite::params![seq, &leaf[..]],
    )
    .unwrap();
    let out = dir.run(&["audit", "verify"]);
    assert_eq!(out.code(), 1, "{}", out.all());
    let text = out.stdout();
    assert!(
        text.contains("do not match the signed checkpoint"),
        "{text}"
    );
    // The range named contains the forged entry.
    let range = text.split("entries #").nth(1).unwrap();
    let (from, rest) = range.split_once("..#").unwrap();
    let to: i64 = rest.split_whitespace().next().unwrap().parse().unwrap();
    assert!((from.parse::<i64>().unwrap()..=to).contains(&seq), "{text}");
}

#[test]
fn a_deleted_entry_is_named() {
    let dir = populated();
    raw_db(&dir)
        .execute("DELETE FROM audit_log WHERE seq = 4", [])
        .unwrap();
    verify_fails_with(&dir, "entry #4 is missing");
}

#[test]
fn an_inserted_entry_is_named() {
    let dir = populated();
    let conn = raw_db(&dir);
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    // Shift everything from #3 up by one and put a forged entry at #3.
    for seq in (3..n).rev() {
        conn.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq = ?1", [seq])
            .unwrap();
    }
    let entry = br#"{"v":1,"seq":3,"time":"2026-01-01T00:00:00.000Z","actor":"mallory","role":"admin","action":"user.created","target":"user:mallory","outcome":"success","source":"local","details":{}}"#;
    conn.execute("INSERT INTO audit_log (seq, entry, leaf_hash, time, actor, action, target) VALUES (3, ?1, ?2, '', '', '', '')", rusqlite::params![&entry[..], &merkle::leaf_hash(entry)[..]]).unwrap();
    verify_fails_with(&dir, "entry #3 is altered");
}

#[test]
fn deleting_the_newest_signed_entries_is_caught() {
    let dir = populated();
    let conn = raw_db(&dir);
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    conn.execute("DELETE FROM audit_log WHERE seq >= ?1", [n - 2])
        .unwrap();
    verify_fails_with(
        &dir,
        &format!("the log holds {} entries but the checkpoint at size", n - 2),
    );
}

#[test]
fn a_tampered_or_foreign_checkpoint_is_caught() {
    let dir = populated();
    let conn = raw_db(&dir);
    let (size, note): (i64, String) = conn
        .query_row(
            "SELECT size, note FROM checkpoints ORDER BY size LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut lines: Vec<&str> = note.lines().collect();
    let fake_root = B64.encode([0u8; 32]);
    lines[2] = &fake_root;
    conn.execute(
        "UPDATE checkpoints SET note = ?2 WHERE size = ?1",
        rusqlite::params![size, lines.join("\n") + "\n"],
    )
    .unwrap();
    verify_fails_with(
        &dir,
        &format!("checkpoint at size {size}: signature by key"),
    );
    // A verifier key from somewhere else does not accept this appliance's checkpoints.
    let dir = populated();
    let other = populated();
    let out = dir.run(&[
        "audit",
        "verify",
        "--key",
        other.path().join("keys/checkpoint.vkey").to_str().unwrap(),
    ]);
    assert_eq!(out.code(), 1, "{}", out.all());
    assert!(
        out.stdout().contains("carries no signature by key"),
        "{}",
        out.stdout()
    );
}

#[test]
fn two_processes_appending_at_once_serialize() {
    let dir = Dir::new();
    dir.init();
    let mut s = dir.serve();
    let before: i64 = raw_db(&dir)
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    let run = |prefix: &'static str| {
        let path = dir.path();
        std::thread::spawn(move || {
            for i in 0..25 {
                let out = std::process::Command::new(bin())
                    .args([
                        "--data",
                        path.to_str().unwrap(),
                        "user",
                        "add",
                        &format!("{prefix}{i}"),
                        "--role",
                        "agent",
                    ])
                    .env("CUSTOS_LOG", "warn")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        })
    };
    let (a, b) = (run("a"), run("b"));
    // The server appends too, at the same time, while it writes checkpoints.
    for _ in 0..20 {
        assert_eq!(
            s.post(
                "/api/v1/auth/login",
                None,
                serde_json::json!({ "name": "nobody", "password": "x" })
            )
            .status
                / 100,
            4
        );
    }
    a.join().unwrap();
    b.join().unwrap();
    s.stop();
    let after: i64 = raw_db(&dir)
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    // 50 users created, 5 failed logins and one lock-out refusal, plus the server's own entries.
    assert!(after >= before + 50 + 6, "before {before}, after {after}");
    let out = dir.run(&["audit", "verify"]);
    assert!(
        out.ok()
            .stdout()
            .contains(&format!("audit log intact: {after} entries")),
        "{}",
        out.stdout()
    );
}
