//! The CLI as a user types it.

use serde_json::json;

use crate::util::*;

#[test]
fn first_start_initializes_once_and_prints_a_one_time_admin_password() {
    let dir = Dir::new();
    let mut s = dir.serve();
    let pw = s.admin_password.clone().expect("one-time password printed");
    assert_eq!(pw.len(), 24);
    assert_eq!(
        s.fingerprint.split(':').count(),
        32,
        "SHA-256 fingerprint printed"
    );
    s.stop();
    // The password is stored only as an argon2id hash.
    let hash: String = raw_db(&dir)
        .query_row(
            "SELECT password_hash FROM users WHERE name = 'admin'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(
        !std::fs::read(dir.path().join("custos.db"))
            .unwrap()
            .windows(pw.len())
            .any(|w| w == pw.as_bytes())
    );
    // A second start does not initialize again or print a password.
    let mut s = dir.serve();
    assert!(s.admin_password.is_none());
    s.stop();
    let mode = std::fs::metadata(dir.path().join("keys/master.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
    let out = dir.run(&["audit", "show", "--last", "100"]);
    let text = out.ok().stdout();
    for action in [
        "appliance.initialized",
        "user.created",
        "server.start",
        "keys.unseal",
        "server.stop",
    ] {
        assert!(text.contains(action), "audit lacks {action}:\n{text}");
    }
}

#[test]
fn a_damaged_config_stops_serve_with_file_and_line_and_changes_nothing() {
    let dir = Dir::new();
    dir.init();
    let cfg = dir.path().join("custos.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:8443\"\n\n[archive]\nsync_interval_ms = 99999\n",
    )
    .unwrap();
    let before = raw_db(&dir)
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get::<_, i64>(0))
        .unwrap();
    let out = dir.run(&["serve", "--listen", "127.0.0.1:0"]);
    out.fails();
    assert!(
        out.stderr()
            .contains("custos.toml:5: archive.sync_interval_ms = 99999 is out of range"),
        "{}",
        out.stderr()
    );
    let after = raw_db(&dir)
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get::<_, i64>(0))
        .unwrap();
    assert_eq!(before, after, "a refused start must not write anything");
    std::fs::write(&cfg, "[server\n").unwrap();
    let out = dir.run(&["serve"]);
    out.fails();
    assert!(out.stderr().contains("custos.toml:1:"), "{}", out.stderr());
}

#[test]
fn user_add_list_disable() {
    let dir = Dir::new();
    dir.init();
    let pwf = dir.secret("pw", "a long agent password");
    dir.run(&[
        "user",
        "add",
        "alice",
        "--role",
        "agent",
        "--password-file",
        pwf.to_str().unwrap(),
    ])
    .ok();
    let out = dir.run(&["user", "add", "carol", "--role", "compliance"]);
    assert!(out.ok().stdout().contains("one-time password: "));
    // Bad input: unknown role, bad name, weak password, duplicate.
    assert!(
        dir.run(&["user", "add", "bob", "--role", "root"])
            .fails()
            .stderr()
            .contains("role \"root\" is not valid")
    );
    assert!(
        dir.run(&["user", "add", "b b", "--role", "agent"])
            .fails()
            .stderr()
            .contains("user name")
    );
    let weak = dir.secret("weak", "short");
    assert!(
        dir.run(&[
            "user",
            "add",
            "bob",
            "--role",
            "agent",
            "--password-file",
            weak.to_str().unwrap()
        ])
        .fails()
        .stderr()
        .contains("at least 12")
    );
    assert!(
        dir.run(&["user", "add", "alice", "--role", "agent"])
            .fails()
            .stderr()
            .contains("already exists")
    );
    let list = dir.run(&["user", "list"]);
    let text = list.ok().stdout();
    assert!(
        text.contains("alice")
            && text.contains("agent")
            && text.contains("carol")
            && !text.contains("bob"),
        "{text}"
    );
    dir.run(&["user", "disable", "alice"]).ok();
    assert!(
        dir.run(&["user", "list"])
            .stdout()
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("disabled"))
    );
    assert!(
        dir.run(&["user", "disable", "admin"])
            .fails()
            .stderr()
            .contains("last enabled admin")
    );
    let audit = dir.run(&["audit", "show", "--last", "50"]).stdout();
    assert!(
        audit.contains("user.created")
            && audit.contains("user:alice")
            && audit.contains("user.disabled")
    );
    dir.run(&["audit", "verify"]).ok();
}

#[test]
fn commands_on_a_missing_data_dir_say_so() {
    let dir = Dir::new();
    let out = dir.run(&["user", "list"]);
    assert!(
        out.fails()
            .stderr()
            .contains("not an initialized Custos data directory"),
        "{}",
        out.stderr()
    );
    assert!(
        !dir.path().exists(),
        "a read command must not create the data directory"
    );
}

#[test]
fn seal_and_unseal_a_running_server_and_start_sealed() {
    let dir = Dir::new();
    let one_time = dir.init();
    let mut s = dir.serve();
    let token = s.admin(&one_time, "the admin's new password");
    let pass = dir.secret("pass", "correct horse battery staple");
    let short = dir.secret("short", "too short");
    assert!(
        dir.run(&["seal", "--passphrase-file", short.to_str().unwrap()])
            .fails()
            .stderr()
            .contains("at least 12")
    );
    dir.run(&["seal", "--passphrase-file", pass.to_str().unwrap()])
        .ok();
    assert!(!dir.path().join("keys/master.key").exists());
    assert_eq!(s.get("/healthz", None).status, 503);
    let r = s.get("/api/v1/me", Some(&token));
    assert_eq!(
        (r.status, r.json().unwrap()["error"]["code"].as_str()),
        (503, Some("sealed"))
    );
    let wrong = dir.secret("wrong", "this is not the passphrase");
    let out = dir.run(&["unseal", "--passphrase-file", wrong.to_str().unwrap()]);
    assert!(
        out.fails().stderr().contains("wrong passphrase"),
        "{}",
        out.all()
    );
    assert_eq!(s.get("/healthz", None).status, 503);
    dir.run(&["unseal", "--passphrase-file", pass.to_str().unwrap()])
        .ok();
    assert_eq!(s.get("/healthz", None).status, 200);
    assert_eq!(s.get("/api/v1/me", Some(&token)).status, 200);
    s.stop();
    // The next start waits sealed until unsealed.
    let mut s = dir.serve();
    assert_eq!(s.get("/healthz", None).status, 503);
    assert!(
        dir.run(&["unseal", "--passphrase-file", wrong.to_str().unwrap()])
            .fails()
            .stderr()
            .contains("wrong passphrase")
    );
    dir.run(&["unseal", "--passphrase-file", pass.to_str().unwrap()])
        .ok();
    assert_eq!(
        s.get("/healthz", None).json().unwrap(),
        json!({ "status": "ok", "sealed": false })
    );
    s.stop();
    // CLI commands that need keys ask for the passphrase and refuse a wrong one.
    assert!(
        dir.run(&[
            "key",
            "rotate",
            "--passphrase-file",
            wrong.to_str().unwrap()
        ])
        .fails()
        .stderr()
        .contains("wrong passphrase")
    );
    dir.run(&["key", "rotate", "--passphrase-file", pass.to_str().unwrap()])
        .ok();
    let audit = dir
        .run(&["audit", "show", "--last", "100", "--json"])
        .stdout();
    assert!(audit.contains("\"keys.sealed\""));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"keys.unseal\"") && l.contains("\"denied\"")),
        "failed unseal attempts are audited"
    );
    dir.run(&["audit", "verify"]).ok();
}

#[test]
fn key_rotation_rewraps_every_data_key_and_keeps_objects_readable() {
    use custos::keys::Keyring;
    use custos::model::DataClass;
    let dir = Dir::new();
    dir.init();
    let data = custos::app::DataDir::new(dir.path());
    let mut store = data.open_store().unwrap();
    let keys = Keyring::new(data.master_files().load_keyfile().unwrap());
    let archive = data.archive();
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let mut w = archive
            .create(&mut store, &keys, Some("s1"), DataClass::Transcript)
            .unwrap();
        w.append(&vec![i; 70_000]).unwrap();
        ids.push(w.id());
        w.finish(&mut store).unwrap();
    }
    drop(store);
    let out = dir.run(&["key", "rotate"]);
    assert!(
        out.ok()
            .stdout()
            .contains("key epoch 2 is current: 5 data keys re-wrapped, 1 old epochs retired"),
        "{}",
        out.stdout()
    );
    dir.run(&["key", "rotate"]).ok();
    let epochs: Vec<i64> = raw_db(&dir)
        .prepare("SELECT DISTINCT epoch FROM object_keys")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(epochs, vec![3]);
    let keks: i64 = raw_db(&dir)
        .query_row("SELECT COUNT(*) FROM keks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(keks, 1, "old epochs are destroyed once unused");
    let mut store = data.open_store().unwrap();
    let keys = Keyring::new(data.master_files().load_keyfile().unwrap());
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            &archive.read_all(&mut store, &keys, *id).unwrap()[..],
            &vec![i as u8; 70_000][..]
        );
    }
    dir.run(&["archive", "verify"]).ok();
    assert!(
        dir.run(&["audit", "show"])
            .stdout()
            .contains("keys.rotated")
    );
}

#[test]
fn a_rotation_cut_short_leaves_every_object_readable() {
    use custos::keys::Keyring;
    use custos::model::DataClass;
    let dir = Dir::new();
    dir.init();
    let data = custos::app::DataDir::new(dir.path());
    let mut store = data.open_store().unwrap();
    let keys = Keyring::new(data.master_files().load_keyfile().unwrap());
    let archive = data.archive();
    for i in 0..3u8 {
        let mut w = archive
            .create(&mut store, &keys, None, DataClass::File)
            .unwrap();
        w.append(&[i; 10]).unwrap();
        w.finish(&mut store).unwrap();
    }
    drop(store);
    // Simulate a crash after the new epoch was created and one key re-wrapped: do it by hand
    // with the library's own pieces, as the rotation does.
    let conn = raw_db(&dir);
    let master = data.master_files().load_keyfile().unwrap();
    let kek2 = custos::crypto::SecretKey::random();
    conn.execute(
        "INSERT INTO keks (epoch, wrapped, created_at) VALUES (2, ?1, 'now')",
        [&custos::crypto::wrap_key(&master, &kek2)[..]],
    )
    .unwrap();
    let (id, wrapped): (String, Vec<u8>) = conn
        .query_row(
            "SELECT object_id, wrapped FROM object_keys LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let kek1w: Vec<u8> = conn
        .query_row("SELECT wrapped FROM keks WHERE epoch = 1", [], |r| r.get(0))
        .unwrap();
    let kek1 = custos::crypto::unwrap_key(&master, &kek1w).unwrap();
    let dk = custos::crypto::unwrap_key(&kek1, &wrapped).unwrap();
    conn.execute(
        "UPDATE object_keys SET epoch = 2, wrapped = ?2 WHERE object_id = ?1",
        rusqlite::params![id, &custos::crypto::wrap_key(&kek2, &dk)[..]],
    )
    .unwrap();
    drop(conn);
    dir.run(&["archive", "verify"]).ok();
    let out = dir.run(&["key", "rotate"]);
    assert!(
        out.ok()
            .stdout()
            .contains("key epoch 3 is current: 3 data keys re-wrapped, 2 old epochs retired"),
        "{}",
        out.stdout()
    );
    dir.run(&["archive", "verify"]).ok();
}

#[test]
fn the_recovery_identity_reads_objects_without_the_master_key() {
    use custos::keys::Keyring;
    use custos::model::DataClass;
    let dir = Dir::new();
    dir.init();
    let data = custos::app::DataDir::new(dir.path());
    // One object from before a recovery key was configured.
    let mut store = data.open_store().unwrap();
    let keys = Keyring::new(data.master_files().load_keyfile().unwrap());
    let mut w = data
        .archive()
        .create(&mut store, &keys, None, DataClass::File)
        .unwrap();
    w.append(b"written before the recovery key").unwrap();
    let old = w.id();
    w.finish(&mut store).unwrap();
    drop(store);

    let identity = custos::age::Identity::generate();
    let id_file = dir.secret("recovery.key", &identity.to_secret_string());
    let cfg = dir.path().join("custos.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "# recovery_recipient = \"age1...\"",
        &format!("recovery_recipient = \"{}\"", identity.recipient()),
    );
    std::fs::write(&cfg, text).unwrap();
    let config = custos::config::Config::load(dir.path().as_path()).unwrap();
    assert!(config.recovery_recipient.is_some());

    let mut store = data.open_store().unwrap();
    let keys = Keyring::new(data.master_files().load_keyfile().unwrap())
        .with_recovery(config.recovery_recipient.clone());
    let mut w = data
        .archive()
        .create(&mut store, &keys, Some("s1"), DataClass::Transcript)
        .unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 200) as u8).collect();
    w.append(&body).unwrap();
    let new = w.id();
    w.finish(&mut store).unwrap();
    drop(store);

    let out = dir.tmp.path().join("recovered.bin");
    let run = |obj: custos::model::ObjectId, out: &std::path::Path| {
        dir.run(&[
            "key",
            "recover",
            "--identity",
            id_file.to_str().unwrap(),
            "--object",
            &obj.to_string(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    run(new, &out).ok();
    assert_eq!(std::fs::read(&out).unwrap(), body);
    // The older object has no wrap until a rotation adds it.
    let out2 = dir.tmp.path().join("old.bin");
    assert!(
        run(old, &out2)
            .fails()
            .stderr()
            .contains("no recovery wrap")
    );
    dir.run(&["key", "rotate"]).ok();
    run(old, &out2).ok();
    assert_eq!(
        std::fs::read(&out2).unwrap(),
        b"written before the recovery key"
    );
    // Another identity reads nothing; the read is audited.
    let other = dir.secret(
        "other.key",
        &custos::age::Identity::generate().to_secret_string(),
    );
    let out3 = dir.tmp.path().join("nope.bin");
    let r = dir.run(&[
        "key",
        "recover",
        "--identity",
        other.to_str().unwrap(),
        "--object",
        &new.to_string(),
        "--out",
        out3.to_str().unwrap(),
    ]);
    assert!(
        r.fails().stderr().contains("no identity matches"),
        "{}",
        r.stderr()
    );
    assert!(!out3.exists());
    assert!(
        dir.run(&["audit", "show"])
            .stdout()
            .contains("archive.object.read_with_recovery_key")
    );
    // A bad recipient in the configuration names its line.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&identity.recipient().to_string(), "age1notakey");
    std::fs::write(&cfg, text).unwrap();
    let r = dir.run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(
        r.fails().stderr().contains("keys.recovery_recipient"),
        "{}",
        r.stderr()
    );
}
