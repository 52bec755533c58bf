//! Export bundles: a round trip, the standard-tool checks from the auditor guide, and every kind
//! of tampering named by `custos verify`.

use std::io::Read;
use std::process::Command;

use custos::export::tar::{Member, Reader, Writer};
use serde_json::json;

use crate::util::*;

const PW: &str = "officer password 1";

/// Two ended sessions with chat, a file and a survey; the server stopped, so the newest
/// checkpoint stays put and exports are reproducible.
fn world() -> (Dir, Vec<String>) {
    let dir = Dir::new();
    let one_time = dir.init();
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
    let mut s = dir.serve();
    s.admin(&one_time, "admin password long");
    let (alice, _) = s.login("alice", PW);
    let mut ids = Vec::new();
    for (i, r) in ["T-100", "T-200"].iter().enumerate() {
        let v = s.post("/api/v1/requests", None, json!({ "portal": "support", "name": format!("Cust {i}"), "question": "help", "ref": r })).json().unwrap();
        let id = v["request_id"].as_str().unwrap().to_string();
        let token = v["customer_token"].as_str().unwrap().to_string();
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
        ws.send(&json!({ "type": "chat", "text": format!("hello number {i}"), "id": "a" }));
        ws.expect("ack");
        if i == 0 {
            // The customer's client shares a (tiny, grey) screen: the session has a recording.
            use custos::remote::{Codec, MAX_MESSAGE, UpdateBuilder};
            let mut sharer = s.screen_ws(&id, &format!("Customer {token}"));
            sharer.expect("hello");
            let mut viewer = s.screen_ws(&id, &format!("Bearer {alice}"));
            viewer.expect("hello");
            sharer.send(&json!({"type": "consent", "view": true, "control": false, "files": false, "diagnostics": false, "reboot": false}));
            viewer.expect("consent");
            let mut b = UpdateBuilder::new(1, 32, 16, true, MAX_MESSAGE);
            b.push(0, 0, 32, 16, Codec::Raw, &vec![0x42; 32 * 16 * 3]);
            let frame = b.finish().remove(0);
            sharer.send_binary(frame.clone());
            assert_eq!(viewer.recv_binary().unwrap(), frame);
        }
        let diag = json!({ "v": 1, "collected_at": "2026-11-28T10:00:00Z", "os": { "name": "Debian GNU/Linux", "kernel": format!("6.1.0-{i}") } });
        let r = customer_post(
            &s,
            &format!("/api/v1/sessions/{id}/diagnostics"),
            &token,
            diag,
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        assert_eq!(
            s.post(
                &format!("/api/v1/sessions/{id}/end"),
                Some(&alice),
                json!({})
            )
            .status,
            200
        );
        let r = s.call(
            hyper::Method::POST,
            &format!("/api/v1/sessions/{id}/survey"),
            Some(&alice),
            Some(json!({ "rating": 4, "comment": "ok" })),
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        drop(token);
        ids.push(id);
    }
    s.stop();
    (dir, ids)
}

fn export(dir: &Dir, args: &[&str], out: &std::path::Path) -> Out {
    let pw = dir.secret("pw2", PW);
    let mut all = vec!["export"];
    all.extend_from_slice(args);
    all.extend([
        "--out",
        out.to_str().unwrap(),
        "--reason",
        "audit 2026-Q4",
        "--user",
        "officer1",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    dir.run(&all)
}

/// Rewrites a bundle member by member.
fn rewrite(
    tar: &[u8],
    mut f: impl FnMut(&str, Vec<u8>) -> Option<(String, Vec<u8>)>,
    extra: &[(&str, &[u8])],
) -> Vec<u8> {
    let mut r = Reader::new(tar);
    let mut w = Writer::new(Vec::new(), 0);
    while let Some(m) = r.next_member().unwrap() {
        match m {
            Member::Dir(d) => w.dir(&d).unwrap(),
            Member::File { name, mut data, .. } => {
                let mut v = Vec::new();
                data.read_to_end(&mut v).unwrap();
                if let Some((n, d)) = f(&name, v) {
                    w.file(&n, &d).unwrap();
                }
            }
        }
    }
    for (n, d) in extra {
        w.file(n, d).unwrap();
    }
    w.finish().unwrap()
}

fn verify(dir: &Dir, bundle: &[u8], name: &str, trust: Option<&std::path::Path>) -> Out {
    let p = dir.tmp.path().join(name);
    std::fs::write(&p, bundle).unwrap();
    let mut c = Command::new(bin());
    c.arg("verify").arg(&p).env("CUSTOS_DATA", "/nonexistent");
    if let Some(t) = trust {
        c.arg("--trust").arg(t);
    }
    Out(c.output().unwrap())
}

#[test]
fn an_export_round_trips_is_deterministic_and_verifies_with_standard_tools() {
    let (dir, ids) = world();
    let a = dir.tmp.path().join("a.tar");
    let out = export(&dir, &["--session", &ids[0], "--session", &ids[1]], &a);
    assert!(out.ok().stdout().contains("2 sessions"), "{}", out.stdout());
    let b = dir.tmp.path().join("b.tar");
    export(&dir, &["--ref", "T-100", "--session", &ids[1]], &b).fails();
    export(&dir, &["--session", &ids[1], "--session", &ids[0]], &b).ok();
    let digest =
        |p: &std::path::Path| hex::encode(custos::crypto::sha256(&std::fs::read(p).unwrap()));
    assert_eq!(
        digest(&a),
        digest(&b),
        "same selection and state, same bytes"
    );
    let v = Command::new(bin())
        .args(["verify", a.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success() && text.contains("bundle verified"),
        "{text}"
    );
    let audit = dir
        .run(&["audit", "show", "--last", "20", "--json"])
        .stdout();
    assert!(audit.contains("\"export.created\"") && audit.contains("manifest_sha256"));

    // The auditor guide's commands, with standard tools alone.
    let x = dir.tmp.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(&a)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap()
            .success()
    );
    let bag = std::fs::read_dir(&x)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let sh = |cmd: &str| {
        let o = Command::new("bash")
            .arg("-ec")
            .arg(cmd)
            .current_dir(&bag)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{cmd}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    sh("sha256sum -c --quiet manifest-sha256.txt");
    sh("sha256sum -c --quiet tagmanifest-sha256.txt");
    let id = sh("sed -n 's/^Appliance-Id: //p' bag-info.txt")
        .trim()
        .to_string();
    sh(&format!(
        "ssh-keygen -Y verify -f allowed_signers -I custos-export@{id} -n custos-export -s signature.sshsig < tagmanifest-sha256.txt"
    ));
    sh(
        "openssl pkeyutl -verify -pubin -inkey appliance.pem -rawin -in tagmanifest-sha256.txt -sigfile signature.ed25519",
    );
    let transcript =
        std::fs::read_to_string(bag.join(format!("data/sessions/{}/transcript.txt", ids[0])))
            .unwrap();
    assert!(transcript.contains("hello number 0"), "{transcript}");
    let diag =
        std::fs::read_to_string(bag.join(format!("data/sessions/{}/diagnostics.jsonl", ids[0])))
            .unwrap();
    assert!(diag.contains("\"kernel\":\"6.1.0-0\""), "{diag}");
}

#[test]
fn every_kind_of_tampering_is_named() {
    let (dir, ids) = world();
    let a = dir.tmp.path().join("a.tar");
    export(&dir, &["--session", &ids[0]], &a).ok();
    let good = std::fs::read(&a).unwrap();
    let transcript = format!("data/sessions/{}/transcript.jsonl", ids[0]);
    let check = |name: &str, bundle: Vec<u8>, needle: &str| {
        let out = verify(&dir, &bundle, name, None);
        assert_eq!(out.code(), 1, "{name}: {}", out.all());
        assert!(
            out.stdout().contains(needle),
            "{name}: expected {needle:?} in {}",
            out.stdout()
        );
    };
    check(
        "payload",
        rewrite(
            &good,
            |n, mut d| {
                if n.ends_with(&transcript) {
                    d[5] ^= 1;
                }
                Some((n.to_string(), d))
            },
            &[],
        ),
        "does not match the manifest",
    );
    check(
        "manifest",
        rewrite(
            &good,
            |n, mut d| {
                if n.ends_with("/manifest-sha256.txt") {
                    d[0] ^= 1;
                }
                Some((n.to_string(), d))
            },
            &[],
        ),
        "manifest-sha256.txt does not match its hash",
    );
    check(
        "signature",
        rewrite(
            &good,
            |n, mut d| {
                if n.ends_with("/signature.ed25519") {
                    d[3] ^= 1;
                }
                Some((n.to_string(), d))
            },
            &[],
        ),
        "signature.ed25519 does not verify",
    );
    let root = {
        let mut r = Reader::new(&good[..]);
        match r.next_member().unwrap().unwrap() {
            Member::Dir(d) => d,
            _ => unreachable!(),
        }
    };
    check(
        "added",
        rewrite(
            &good,
            |n, d| Some((n.to_string(), d)),
            &[(&format!("{root}/data/extra.txt"), b"x")],
        ),
        "data/extra.txt: not in manifest",
    );
    check(
        "removed",
        rewrite(
            &good,
            |n, d| {
                if n.ends_with(&transcript) {
                    None
                } else {
                    Some((n.to_string(), d))
                }
            },
            &[],
        ),
        "missing from the bundle",
    );
    check(
        "renamed",
        rewrite(
            &good,
            |n, d| Some((n.replace("transcript.jsonl", "transcript2.jsonl"), d)),
            &[],
        ),
        "not in manifest",
    );
    check("truncated", good[..good.len() / 2].to_vec(), "truncated");
    check(
        "dotdot",
        rewrite(
            &good,
            |n, d| Some((n.to_string(), d)),
            &[(&format!("{root}/../evil"), b"x")],
        ),
        "unsafe",
    );
    let mut link = good.clone();
    // Turn the first regular file's header into a symlink header (type '2'), fixing its checksum.
    let h = &mut link[512..1024];
    h[156] = b'2';
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    check("symlink", link, "link");
    // A valid bundle from another appliance, against the key the auditor trusts.
    let (other, oids) = world();
    let b = other.tmp.path().join("b.tar");
    export(&other, &["--session", &oids[0]], &b).ok();
    let trusted = dir.tmp.path().join("trusted.pub");
    let x = dir.tmp.path().join("x");
    std::fs::create_dir_all(&x).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(&a)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap()
            .success()
    );
    std::fs::copy(x.join(&root).join("appliance.pub"), &trusted).unwrap();
    let out = verify(
        &dir,
        &std::fs::read(&b).unwrap(),
        "other.tar",
        Some(&trusted),
    );
    assert!(
        out.fails().stdout().contains("signed by another appliance"),
        "{}",
        out.stdout()
    );
    verify(&dir, &good, "good.tar", Some(&trusted)).ok();
    // An unencrypted export needs a compliance officer and a reason.
    let pw = dir.secret("pw3", PW);
    let c = dir.tmp.path().join("c.tar");
    let r = dir.run(&[
        "export",
        "--session",
        &ids[0],
        "--out",
        c.to_str().unwrap(),
        "--reason",
        "",
        "--user",
        "officer1",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(r.fails().stderr().contains("reason"));
    let r = dir.run(&[
        "export",
        "--session",
        &ids[0],
        "--out",
        c.to_str().unwrap(),
        "--reason",
        "x",
        "--user",
        "alice",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert!(r.fails().stderr().contains("not a compliance officer"));
}

fn extract(dir: &Dir, tar: &std::path::Path, into: &str) -> std::path::PathBuf {
    let x = dir.tmp.path().join(into);
    std::fs::create_dir_all(&x).unwrap();
    assert!(
        Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap()
            .success()
    );
    std::fs::read_dir(&x)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

#[test]
fn the_offline_viewer_opens_from_disk_and_shows_the_transcript() {
    if !crate::webdriver::available() {
        return;
    }
    let (dir, ids) = world();
    let a = dir.tmp.path().join("a.tar");
    export(&dir, &["--session", &ids[0]], &a).ok();
    let bag = extract(&dir, &a, "x");
    let driver = crate::webdriver::Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let b = driver.browser(profiles.path().join("auditor"));
    b.goto(&format!("file://{}", bag.join("data/index.html").display()));
    b.wait_text("ol.transcript", "hello number 0");
    b.wait_text("#about", "officer1");
    // The recording plays from the unpacked folder, without a server.
    let recs: Vec<_> = std::fs::read_dir(bag.join(format!("data/sessions/{}/recordings", ids[0])))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(recs.len(), 1, "{recs:?}");
    b.type_into(".rec-file", recs[0].to_str().unwrap());
    b.click(".rec-end");
    b.wait_text(".rec-status", "Done: 1 screen messages");
    let px = b.js(
        "const c = document.querySelector('.rec-canvas');
         return [c.width, c.height, ...c.getContext('2d').getImageData(5, 5, 1, 1).data];",
        json!([]),
    );
    assert_eq!(px, json!([32, 16, 0x42, 0x42, 0x42, 255]));
}

#[test]
fn an_export_encrypted_to_auditors_decrypts_with_the_age_tool() {
    let (dir, ids) = world();
    let key = dir.tmp.path().join("auditor.key");
    let made = Command::new("age-keygen").arg("-o").arg(&key).output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        assert!(std::env::var("CI").is_err(), "age-keygen is required in CI");
        eprintln!("\n*** SKIPPED: age is not installed ***\n");
        return;
    }
    let text = std::fs::read_to_string(&key).unwrap();
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .trim()
        .to_string();
    let a = dir.tmp.path().join("enc.tar");
    export(&dir, &["--session", &ids[0], "--recipient", &recipient], &a).ok();
    let bytes = std::fs::read(&a).unwrap();
    assert!(
        !bytes.windows(14).any(|w| w == b"hello number 0"),
        "no plaintext in an encrypted bundle"
    );
    assert!(
        Command::new(bin())
            .args(["verify", a.to_str().unwrap()])
            .output()
            .unwrap()
            .status
            .success()
    );
    let bag = extract(&dir, &a, "e");
    let f = bag.join(format!("data/sessions/{}/transcript.jsonl.age", ids[0]));
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key)
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello number 0"));
    let o = Command::new("bash")
        .arg("-ec")
        .arg("sha256sum -c --quiet manifest-sha256.txt")
        .current_dir(&bag)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the manifest covers the encrypted files as stored"
    );
}

#[test]
fn an_older_bundle_presented_as_current_is_caught_by_the_auditors_checkpoint() {
    let (dir, ids) = world();
    let old = dir.tmp.path().join("old.tar");
    export(&dir, &["--session", &ids[0]], &old).ok();
    let old_cp = extract(&dir, &old, "o").join("data/checkpoint.txt");
    // More happens on the appliance; a newer checkpoint is signed.
    let mut s = dir.serve();
    s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Later", "question": "q" }),
    );
    s.stop();
    let new = dir.tmp.path().join("new.tar");
    export(
        &dir,
        &[
            "--session",
            &ids[0],
            "--since-checkpoint",
            old_cp.to_str().unwrap(),
        ],
        &new,
    )
    .ok();
    let new_cp = extract(&dir, &new, "n").join("data/checkpoint.txt");
    let ok = Command::new(bin())
        .args([
            "verify",
            new.to_str().unwrap(),
            "--since-checkpoint",
            old_cp.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let stale = Command::new(bin())
        .args([
            "verify",
            old.to_str().unwrap(),
            "--since-checkpoint",
            new_cp.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stdout).contains("older bundle presented as current"),
        "{}",
        String::from_utf8_lossy(&stale.stdout)
    );
}

/// The fenced blocks of the auditor guide that follow a `<!-- test: NAME -->` marker.
fn guide() -> std::collections::HashMap<String, String> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/auditor-guide.md"
    ))
    .unwrap();
    let mut out = std::collections::HashMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("<!-- test: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        lines.next();
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        out.insert(name.to_string(), body.join("\n"));
    }
    out
}

#[test]
fn the_auditor_guide_commands_work_as_written() {
    let g = guide();
    let (dir, ids) = world();
    let plain = dir.tmp.path().join("plain.tar");
    export(&dir, &["--session", &ids[0]], &plain).ok();
    let key = dir.tmp.path().join("auditor.key");
    let have_age = Command::new("age-keygen")
        .arg("-o")
        .arg(&key)
        .output()
        .is_ok_and(|o| o.status.success());
    let run = |workdir: &std::path::Path, script: String| {
        std::fs::create_dir_all(workdir).unwrap();
        let o = Command::new("bash")
            .arg("-ec")
            .arg(&script)
            .current_dir(workdir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script}\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let subst = |s: &str, bundle: &std::path::Path| {
        s.replace("BUNDLE.tar", bundle.to_str().unwrap())
            .replace("~/auditor.key", key.to_str().unwrap())
            .replace("custos verify", &format!("{} verify", bin().display()))
            .replace("OLD-CHECKPOINT.txt", "data/checkpoint.txt")
    };
    let script = ["unpack", "hashes", "signatures", "custos-verify"]
        .iter()
        .map(|k| subst(&g[*k], &plain))
        .collect::<Vec<_>>()
        .join("\n");
    let out = run(&dir.tmp.path().join("w1"), script);
    assert!(
        out.contains("Good \"custos-export\" signature") || out.contains("bundle verified"),
        "{out}"
    );
    if !have_age {
        assert!(std::env::var("CI").is_err(), "age is required in CI");
        return;
    }
    let recipient = std::fs::read_to_string(&key)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    let enc = dir.tmp.path().join("enc.tar");
    export(
        &dir,
        &["--session", &ids[0], "--recipient", recipient.trim()],
        &enc,
    )
    .ok();
    let script = ["unpack", "hashes", "signatures", "decrypt"]
        .iter()
        .map(|k| subst(&g[*k], &enc))
        .collect::<Vec<_>>()
        .join("\n");
    run(
        &dir.tmp.path().join("w2"),
        format!("{script}\ngrep -q 'hello number 0' data/sessions/*/transcript.jsonl"),
    );
}

#[test]
fn exports_over_the_api_need_a_reason_and_the_compliance_role_unless_encrypted() {
    let (dir, ids) = world();
    let s = dir.serve();
    let officer = s.login("officer1", PW).0;
    let alice = s.login("alice", PW).0;
    let admin = s.login("admin", "admin password long").0;
    let body = |reason: &str, recipients: serde_json::Value| json!({ "sessions": ids, "reason": reason, "recipients": recipients });
    // Refusals first.
    assert_eq!(
        s.post("/api/v1/exports", Some(&alice), body("r", json!([])))
            .status,
        403,
        "agents do not export"
    );
    let r = s.post("/api/v1/exports", Some(&admin), body("audit", json!([])));
    assert_eq!(r.status, 403, "an admin may not take content out in clear");
    assert!(
        r.error_message().contains("compliance"),
        "{}",
        r.error_message()
    );
    assert_eq!(
        s.post("/api/v1/exports", Some(&officer), body("  ", json!([])))
            .status,
        400
    );
    let r = s.post(
        "/api/v1/exports",
        Some(&officer),
        body("audit", json!(["age1notakey"])),
    );
    assert_eq!(r.status, 400, "{}", r.error_message());
    let r = s.post(
        "/api/v1/exports",
        Some(&officer),
        json!({ "ref": "NO-SUCH-REF", "reason": "audit" }),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error_message().contains("no session"),
        "{}",
        r.error_message()
    );

    // A live session is refused by id, and left out of a selection by ref.
    let r = s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Live", "question": "q", "ref": "T-100" }),
    );
    let live = r.json().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.post(
        "/api/v1/exports",
        Some(&officer),
        json!({ "sessions": [live], "reason": "audit" }),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.error_message().contains("still waiting"),
        "{}",
        r.error_message()
    );

    // The officer's bundle verifies offline, and the export is audited.
    let r = s.post(
        "/api/v1/exports",
        Some(&officer),
        json!({ "ref": "T-100", "reason": "court order 17" }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.headers.get("content-type").unwrap(), "application/x-tar");
    let id = r
        .headers
        .get("custos-export-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("b.tar");
    std::fs::write(&bundle, &r.body).unwrap();
    dir.run(&["verify", bundle.to_str().unwrap()]).ok();
    let audit = s
        .get("/api/v1/audit/entries?limit=100", Some(&admin))
        .json()
        .unwrap();
    let created = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "export.created")
        .unwrap()
        .clone();
    assert_eq!(created["target"], format!("export:{id}"));
    assert_eq!(created["actor"], "officer1");
    assert_eq!(created["details"]["reason"], "court order 17");
    assert_eq!(created["details"]["sessions"], json!([ids[0]]));
}

#[test]
fn an_export_job_reports_progress_and_hands_its_bundle_to_its_starter_once() {
    let (dir, ids) = world();
    let s = dir.serve();
    let officer = s.login("officer1", PW).0;
    let admin = s.login("admin", "admin password long").0;
    // Refused before any job starts: the same checks as the synchronous export.
    let r = s.post(
        "/api/v1/exports/jobs",
        Some(&officer),
        json!({ "sessions": ids, "reason": " " }),
    );
    assert_eq!(r.status, 400, "{}", r.error_message());
    let r = s.post(
        "/api/v1/exports/jobs",
        Some(&officer),
        json!({ "ref": "NO-SUCH-REF", "reason": "audit" }),
    );
    assert_eq!(r.status, 400, "{}", r.error_message());
    assert_eq!(
        s.get("/api/v1/exports/jobs/x", Some(&officer)).status,
        400,
        "a job id is a number"
    );
    assert_eq!(s.get("/api/v1/exports/jobs/99", Some(&officer)).status, 404);

    let r = s.post(
        "/api/v1/exports/jobs",
        Some(&officer),
        json!({ "sessions": ids, "reason": "records request 9" }),
    );
    assert_eq!(r.status, 202, "{}", r.error_message());
    let job = r.json().unwrap();
    let jid = job["id"].as_u64().unwrap();
    assert_eq!(job["total"], ids.len());
    let path = format!("/api/v1/exports/jobs/{jid}");
    assert_eq!(
        s.get(&path, Some(&admin)).status,
        404,
        "another user does not see the job"
    );
    let start = std::time::Instant::now();
    let done = loop {
        let v = s.get(&path, Some(&officer)).json().unwrap();
        assert!(v["done"].as_u64().unwrap() <= v["total"].as_u64().unwrap());
        if v["state"] != "running" {
            break v;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the job did not finish: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(done["state"], "ready", "{done}");
    assert_eq!(done["done"], ids.len());
    let bundle_path = format!("{path}/bundle");
    assert_eq!(s.get(&bundle_path, Some(&admin)).status, 404);
    let r = s.get(&bundle_path, Some(&officer));
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(r.headers.get("content-type").unwrap(), "application/x-tar");
    assert_eq!(r.body.len() as u64, done["bytes"].as_u64().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("job.tar");
    std::fs::write(&bundle, &r.body).unwrap();
    dir.run(&["verify", bundle.to_str().unwrap()]).ok();
    let again = s.get(&bundle_path, Some(&officer));
    assert_eq!(again.status, 409, "handed over once");
    assert!(
        again.error_message().contains("collected"),
        "{}",
        again.error_message()
    );
    assert_eq!(
        s.get(&path, Some(&officer)).json().unwrap()["state"],
        "collected"
    );
    // Audited like any export, under the officer's name.
    let log = s
        .get(
            "/api/v1/audit/entries?action=export.created&actor=officer1",
            Some(&admin),
        )
        .json()
        .unwrap();
    let created = log["entries"].as_array().unwrap();
    assert_eq!(created.len(), 1, "{log}");
    assert_eq!(
        created[0]["target"],
        format!("export:{}", done["export_id"].as_str().unwrap())
    );
    assert_eq!(created[0]["details"]["reason"], "records request 9");
}
