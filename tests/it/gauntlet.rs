//! The reliability gauntlet (docs/reliability.md, `just gauntlet`): kill -9 at random moments
//! while many recorded sessions chat and stream their screens; after every restart, nothing
//! acknowledged is lost, every recording reads to its last durable chunk, and `custos audit
//! verify`, `custos archive verify` and SQLite's integrity check pass.
//!
//! CI runs a short gauntlet (3 rounds); `just gauntlet` runs 100. `CUSTOS_GAUNTLET_ROUNDS`,
//! `CUSTOS_GAUNTLET_SESSIONS` and `CUSTOS_GAUNTLET_SEED` (to replay a run) set it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::remote::code_session;
use crate::util::*;
use custos::remote::{Codec, MAX_MESSAGE, UpdateBuilder};

const AGENT_PW: &str = "gauntlet agent password";
const ADMIN_PW: &str = "gauntlet admin password";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let s = env_num("CUSTOS_GAUNTLET_SEED", 0);
    if s != 0 {
        return s;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

/// A data directory with one agent who may take `per_agent` sessions at once.
fn appliance(per_agent: u64) -> (Dir, String) {
    let dir = Dir::new();
    let one_time = prepare(
        &dir,
        "max_per_agent = 4",
        &format!("max_per_agent = {per_agent}"),
    );
    (dir, one_time)
}

/// Initializes `dir`, replaces `from` with `to` in its custos.toml and adds the agent gina;
/// returns the one-time admin password.
fn prepare(dir: &Dir, from: &str, to: &str) -> String {
    let one_time = dir.init();
    let cfg = dir.path().join("custos.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(from, to);
    std::fs::write(&cfg, text).unwrap();
    let pw = dir.secret("agentpw", AGENT_PW);
    dir.run(&[
        "user",
        "add",
        "gina",
        "--role",
        "agent",
        "--password-file",
        pw.to_str().unwrap(),
        "--skills",
        "support:general",
    ])
    .ok();
    one_time
}

/// A 64x32 screen: a keyframe every 20 frames, a small changed tile in between.
fn frame(n: u32) -> Vec<u8> {
    let key = n.is_multiple_of(20);
    let mut b = UpdateBuilder::new(n, 64, 32, key, MAX_MESSAGE);
    if key {
        b.push(
            0,
            0,
            64,
            32,
            Codec::Raw,
            &vec![(n % 251) as u8; 64 * 32 * 3],
        );
    } else {
        let x = (n % 8) as u16 * 8;
        b.push(x, 8, 8, 8, Codec::Raw, &[(n % 251) as u8; 8 * 8 * 3]);
    }
    b.finish().remove(0)
}

/// One customer: chats (each message waits for its ack, about 15 a second) and streams screen frames until the
/// server goes away or `stop` is set. Returns the texts acknowledged as recorded.
fn customer(
    round: u64,
    n: usize,
    mut chat: Ws,
    mut screen: Ws,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut acked = Vec::new();
    if chat.recv().is_none() || screen.recv().is_none() {
        return acked;
    }
    let consent = json!({"type": "consent", "view": true, "control": false, "files": false, "diagnostics": false, "reboot": false});
    if !screen.send_raw(consent.to_string()) {
        return acked;
    }
    let mut k = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if !screen.try_send_binary(frame(k)) {
            break;
        }
        let text = format!("round {round} session {n} message {k}");
        let id = format!("m{k}");
        if !chat.send_raw(json!({ "type": "chat", "text": text, "id": id }).to_string()) {
            break;
        }
        let ack = loop {
            match chat.recv() {
                Some(v) if v["type"] == "ack" && v["id"] == id.as_str() => break Some(v),
                Some(v) if v["type"] == "error" => panic!("chat refused: {v}"),
                Some(_) => continue,
                None => break None,
            }
        };
        let Some(ack) = ack else { break };
        assert_eq!(ack["recorded"], true, "{ack}");
        acked.push(text);
        k += 1;
        // A lively customer, under the relay's limit of 20 messages a second.
        std::thread::sleep(Duration::from_millis(60));
    }
    acked
}

/// What one restart found.
#[derive(Default)]
struct Found {
    recovered: usize,
    recording_bytes: u64,
}

/// After a restart: every acknowledged message is in its session's transcript, and every
/// recording part reads through the player's API from its start to its end.
fn check_sessions(s: &Server, admin: &str, sessions: &[(String, Vec<String>)]) -> Found {
    let mut found = Found::default();
    for (id, acked) in sessions {
        let v = s
            .get(&format!("/api/v1/sessions/{id}"), Some(admin))
            .json()
            .unwrap();
        let texts: Vec<&str> = v["transcript"]
            .as_array()
            .unwrap_or_else(|| panic!("no transcript in {v}"))
            .iter()
            .filter(|m| m["type"] == "chat")
            .filter_map(|m| m["text"].as_str())
            .collect();
        // Every acknowledged message, in order; a message sent but not yet acknowledged when the
        // server died may be there too, after them.
        assert!(
            texts.len() >= acked.len() && texts[..acked.len()] == acked[..],
            "session {id}: {} acknowledged, transcript has {:?}",
            acked.len(),
            texts
        );
        let r = s.get(
            &format!("/api/v1/sessions/{id}/recording?reason=gauntlet%20check"),
            Some(admin),
        );
        assert_eq!(r.status, 200, "{}", r.error_message());
        let index = r.json().unwrap();
        let ticket = index["ticket"].as_str().unwrap();
        for o in index["objects"].as_array().unwrap() {
            let state = o["state"].as_str().unwrap();
            assert_ne!(state, "open", "an object left open after the restart: {o}");
            found.recovered += usize::from(state == "truncated");
            let object = o["object"].as_str().unwrap();
            let mut offset = 0u64;
            loop {
                let r = s.get(
                    &format!(
                        "/api/v1/sessions/{id}/recording/{object}/data?offset={offset}&ticket={ticket}"
                    ),
                    Some(admin),
                );
                assert_eq!(
                    r.status,
                    200,
                    "recording {object} at {offset}: {}",
                    r.error_message()
                );
                let header = |h: &str| -> u64 { r.headers[h].to_str().unwrap().parse().unwrap() };
                let (next, total) = (header("x-custos-next-offset"), header("x-custos-length"));
                assert!(next > offset || next == total, "no progress at {offset}");
                found.recording_bytes += next - offset;
                offset = next;
                if offset == total {
                    break;
                }
            }
        }
    }
    found
}

/// The offline checks after a clean stop: audit, archive and SQLite.
fn check_offline(dir: &Dir) {
    dir.run(&["audit", "verify"]).ok();
    dir.run(&["archive", "verify"]).ok();
    let integrity: String = raw_db(dir)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged_and_everything_verifies() {
    let rounds = env_num("CUSTOS_GAUNTLET_ROUNDS", 3);
    let sessions = env_num("CUSTOS_GAUNTLET_SESSIONS", 50) as usize;
    let seed = seed();
    eprintln!(
        "gauntlet: {rounds} rounds of {sessions} sessions, seed {seed} (CUSTOS_GAUNTLET_SEED replays it)"
    );
    let mut rng = Rng(seed);
    let (dir, one_time) = appliance(sessions as u64);
    let mut s = dir.serve();
    s.admin(&one_time, ADMIN_PW);
    let started = Instant::now();
    let (mut acked_total, mut recovered_total, mut bytes_total) = (0usize, 0usize, 0u64);
    for round in 0..rounds {
        let agent = s.login("gina", AGENT_PW).0;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut ids = Vec::new();
        for n in 0..sessions {
            let (id, token) = code_session(&s, &agent);
            let chat = s.ws(&id, &format!("Customer {token}"));
            let screen = s.screen_ws(&id, &format!("Customer {token}"));
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                customer(round, n, chat, screen, stop)
            }));
            ids.push(id);
        }
        // The moment of the crash: anywhere from just after the sessions start to 3 s in.
        let wait = Duration::from_millis(50 + rng.below(3000));
        std::thread::sleep(wait);
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        let done: Vec<(String, Vec<String>)> = ids
            .into_iter()
            .zip(threads)
            .map(|(id, t)| (id, t.join().expect("a customer thread panicked")))
            .collect();
        let acked: usize = done.iter().map(|(_, a)| a.len()).sum();

        s = dir.serve();
        let admin = s.login("admin", ADMIN_PW).0;
        let found = check_sessions(&s, &admin, &done);
        // The sessions end after the crash, sealing what they write from now on.
        let agent = s.login("gina", AGENT_PW).0;
        for (id, _) in &done {
            let r = s.post(
                &format!("/api/v1/sessions/{id}/end"),
                Some(&agent),
                json!({}),
            );
            assert_eq!(r.status, 200, "end {id}: {}", r.error_message());
        }
        s.stop();
        check_offline(&dir);
        eprintln!(
            "gauntlet round {round}: killed after {} ms, {acked} messages acknowledged and found, {} recording parts recovered, {} recording bytes read",
            wait.as_millis(),
            found.recovered,
            found.recording_bytes
        );
        acked_total += acked;
        recovered_total += found.recovered;
        bytes_total += found.recording_bytes;
        s = dir.serve();
    }
    s.stop();
    let db = raw_db(&dir);
    let objects: i64 = db
        .query_row("SELECT count(*) FROM objects", [], |r| r.get(0))
        .unwrap();
    let audit: i64 = db
        .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
        .unwrap_or(-1);
    eprintln!(
        "gauntlet: {rounds} kills in {:.0} s; {acked_total} acknowledged messages, all found; {recovered_total} recording parts recovered as truncated; {bytes_total} recording bytes read back; {objects} archive objects and {audit} audit entries verify",
        started.elapsed().as_secs_f64()
    );
}

/// A tmpfs of its own, unmounted (lazily) when dropped.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    /// Mounts a tmpfs of `mib` MiB at `at`; `None` (a loud skip, a failure in CI) without root.
    fn mount(at: &std::path::Path, mib: u64) -> Option<SmallFs> {
        let root = rustix::process::geteuid().is_root();
        if !tool_present(root, "root, to mount a small file system of its own") {
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700")])
            .arg("custos-gauntlet")
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a {mib} MiB tmpfs at {}", at.display());
        Some(SmallFs(at.to_path_buf()))
    }

    fn free(&self) -> u64 {
        let v = rustix::fs::statvfs(&self.0).unwrap();
        v.f_bavail * v.f_frsize
    }

    /// A file taking `bytes` of the file system.
    fn fill(&self, name: &str, bytes: u64) {
        let ok = std::process::Command::new("fallocate")
            .args(["-l", &bytes.to_string()])
            .arg(self.0.join(name))
            .status()
            .unwrap()
            .success();
        assert!(ok, "fallocate {bytes} bytes");
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Sends a chat message and returns its ack.
fn chat(ws: &mut Ws, text: &str) -> serde_json::Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!("c{}", NEXT.fetch_add(1, Ordering::Relaxed));
    ws.send(&json!({ "type": "chat", "text": text, "id": id }));
    loop {
        let v = ws.recv().expect("the socket stays open");
        if v["type"] == "ack" && v["id"] == id.as_str() {
            return v;
        }
        assert_ne!(v["type"], "error", "{v}");
    }
}

fn transcript(s: &Server, admin: &str, id: &str) -> Vec<String> {
    let v = s
        .get(&format!("/api/v1/sessions/{id}"), Some(admin))
        .json()
        .unwrap();
    v["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "chat")
        .filter_map(|m| Some(m["text"].as_str()?.to_string()))
        .collect()
}

fn new_request(s: &Server) -> custos::client::Response {
    s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Fay", "question": "is there room?" }),
    )
}

#[test]
fn a_full_disk_refuses_new_sessions_keeps_everything_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Dir { tmp };
    let Some(fs) = SmallFs::mount(&dir.path(), 48) else {
        return;
    };
    let one_time = prepare(&dir, "min_free_mb = 256", "min_free_mb = 8");
    let mut s = dir.serve();
    let admin = s.admin(&one_time, ADMIN_PW);
    let agent = s.login("gina", AGENT_PW).0;
    let (id, token) = code_session(&s, &agent);
    let mut ws = s.ws(&id, &format!("Customer {token}"));
    ws.expect("hello");
    let mut kept = Vec::new();
    for i in 0..5 {
        let text = format!("before the disk filled {i}");
        assert_eq!(chat(&mut ws, &text)["recorded"], true);
        kept.push(text);
    }

    // Below the reserve: new sessions are refused with a clear error; the running one goes on.
    fs.fill("filler-1", fs.free() - (4 << 20));
    let r = new_request(&s);
    assert_eq!(r.status, 507, "{}", r.error_message());
    let e = r.json().unwrap();
    assert_eq!(e["error"]["code"], "storage_full");
    let m = e["error"]["message"].as_str().unwrap();
    assert!(m.contains("MiB free") && m.contains("8 MiB needed"), "{m}");
    let code = s.post("/api/v1/codes", Some(&agent), json!({}));
    assert_eq!(code.status, 201, "{}", code.error_message());
    let code = code.json().unwrap()["code"]
        .as_str()
        .unwrap()
        .replace(' ', "");
    let r = s.post(
        &format!("/api/v1/codes/{code}/redeem"),
        None,
        json!({"name": "Fay"}),
    );
    assert_eq!(r.status, 507, "{}", r.error_message());
    for i in 0..3 {
        let text = format!("in the reserve {i}");
        assert_eq!(chat(&mut ws, &text)["recorded"], true);
        kept.push(text);
    }

    // Completely full: a message is relayed but says it was not recorded; nothing acknowledged as
    // recorded is lost.
    fs.fill("filler-2", fs.free());
    let mut unrecorded = 0;
    for i in 0..20 {
        let text = format!("on a full disk {i} {}", "x".repeat(2000));
        let ack = chat(&mut ws, &text);
        if ack["recorded"] == true {
            kept.push(text);
        } else {
            unrecorded += 1;
        }
    }
    assert!(unrecorded > 0, "a full disk went unnoticed");
    let r = new_request(&s);
    assert_eq!(r.status, 507, "{}", r.error_message());

    // Space frees: recording resumes and new sessions are accepted again.
    std::fs::remove_file(dir.path().join("filler-1")).unwrap();
    std::fs::remove_file(dir.path().join("filler-2")).unwrap();
    for i in 0..3 {
        let text = format!("after space freed {i}");
        assert_eq!(chat(&mut ws, &text)["recorded"], true);
        kept.push(text);
    }
    let r = new_request(&s);
    assert_eq!(r.status, 201, "{}", r.error_message());
    drop(ws);
    s.stop();

    // Everything stored is intact, and every message acknowledged as recorded is there.
    let mut s = dir.serve();
    let admin2 = s.login("admin", ADMIN_PW).0;
    let texts = transcript(&s, &admin2, &id);
    for k in &kept {
        assert!(texts.contains(k), "lost {k:?}: {texts:?}");
    }
    let _ = admin;
    s.stop();
    check_offline(&dir);
    eprintln!(
        "full disk: {} messages recorded, {unrecorded} refused as unrecorded while full, none lost",
        kept.len()
    );
    drop(dir);
    drop(fs);
}

/// strace attached to a running process (every thread), failing the named system calls with
/// `errno` until dropped; strace then detaches and the process runs on untouched.
struct Faults(std::process::Child);

impl Faults {
    fn inject(pid: u32, calls: &str, errno: &str) -> Faults {
        use std::io::BufRead;
        let mut child = std::process::Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e"])
            .arg(format!("trace={calls}"))
            .arg("-e")
            .arg(format!("inject={calls}:error={errno}"))
            .arg("-p")
            .arg(pid.to_string())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run strace");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("strace attaches or says why not")
                .unwrap();
            if line.contains("attached") {
                break;
            }
            assert!(!line.contains("attach: "), "strace: {line}");
        }
        std::thread::spawn(move || for _ in lines {});
        Faults(child)
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        signal(self.0.id(), "INT");
        let _ = self.0.wait();
    }
}

fn strace_present() -> bool {
    let root = rustix::process::geteuid().is_root();
    let strace = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    tool_present(root && strace, "strace and root, to inject I/O errors")
}

#[test]
fn injected_io_errors_on_write_fsync_and_rename_give_clear_errors_and_never_corruption() {
    if !strace_present() {
        return;
    }
    let (dir, one_time) = appliance(4);
    let mut s = dir.serve();
    s.admin(&one_time, ADMIN_PW);
    let agent = s.login("gina", AGENT_PW).0;
    let (id, token) = code_session(&s, &agent);
    let mut ws = s.ws(&id, &format!("Customer {token}"));
    ws.expect("hello");
    let mut kept = Vec::new();
    for i in 0..3 {
        let text = format!("before the faults {i}");
        assert_eq!(chat(&mut ws, &text)["recorded"], true);
        kept.push(text);
    }
    // fsync and fdatasync (the archive's and SQLite's durability), SQLite's writes (pwrite64)
    // failing with EIO, then with ENOSPC. The archive's own writes meet a real ENOSPC in the
    // full-disk test above.
    for (calls, errno, status, code) in [
        ("fsync,fdatasync", "EIO", 503, "storage_error"),
        ("pwrite64", "EIO", 503, "storage_error"),
        ("pwrite64", "ENOSPC", 507, "storage_full"),
    ] {
        let faults = Faults::inject(s.child.id(), calls, errno);
        let mut unrecorded = 0;
        for i in 0..5 {
            let text = format!("while {calls} fails with {errno} {i}");
            if chat(&mut ws, &text)["recorded"] == true {
                kept.push(text);
            } else {
                unrecorded += 1;
            }
        }
        if calls.contains("fsync") {
            assert_eq!(unrecorded, 5, "nothing durable while fsync fails");
        }
        let r = new_request(&s);
        assert_eq!(
            (r.status, r.json().unwrap()["error"]["code"].clone()),
            (status, json!(code)),
            "{calls} {errno}: {}",
            r.error_message()
        );
        assert!(r.error_message().contains("nothing was changed"));
        drop(faults);
        eprintln!(
            "{calls} failing with {errno}: {unrecorded} of 5 messages unrecorded, a new session refused with {status} {code}"
        );
        // The faults gone, the same server records again and accepts new sessions.
        let text = format!("after {calls} {errno}");
        assert_eq!(chat(&mut ws, &text)["recorded"], true);
        kept.push(text);
        assert_eq!(new_request(&s).status, 201);
    }
    drop(ws);
    // A crash on top of it all, then a clean stop: nothing recorded is lost, everything verifies.
    s.kill9();
    let mut s = dir.serve();
    let admin = s.login("admin", ADMIN_PW).0;
    let texts = transcript(&s, &admin, &id);
    for k in &kept {
        assert!(texts.contains(k), "lost {k:?}: {texts:?}");
    }
    s.stop();
    check_offline(&dir);

    // rename: sealing the master key with a passphrase fails cleanly, leaving the key file and
    // nothing else; the appliance starts as before, and a second try succeeds.
    let pass = dir.secret("pass", "correct horse battery staple");
    let out = std::process::Command::new("strace")
        .args([
            "-f",
            "-o",
            "/dev/null",
            "-e",
            "trace=rename,renameat,renameat2",
        ])
        .args(["-e", "inject=rename,renameat,renameat2:error=EIO"])
        .arg(bin())
        .arg("--data")
        .arg(dir.path())
        .args(["seal", "--passphrase-file"])
        .arg(&pass)
        .env("CUSTOS_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("master.sealed") && err.contains("Input/output error"),
        "{err}"
    );
    let mut keys: Vec<String> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["checkpoint.vkey", "master.key"], "left behind");
    let mut s = dir.serve();
    let admin = s.login("admin", ADMIN_PW).0;
    assert_eq!(transcript(&s, &admin, &id).len(), texts.len());
    s.stop();
    dir.run(&["seal", "--passphrase-file", pass.to_str().unwrap()])
        .ok();
    assert!(!dir.path().join("keys/master.key").exists());
}
