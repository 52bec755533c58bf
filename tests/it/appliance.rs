//! The appliance image's own commands, run on this machine as the image runs them: first-boot
//! setup answered on standard input, the supervisor with crash restarts and signed updates that
//! are committed or rolled back, and the SNTP client against a time server on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos::client::Endpoint;
use hyper::Method;
use serde_json::{Value, json};

use crate::util::{Dir, bin, signal, wait_timeout};

const ADMIN_PW: &str = "appliance admin password";

/// Runs `custos setup` with `answers` on its standard input.
fn setup(data: &Path, system: &Path, answers: &str) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(["setup", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--system")
        .arg(system)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Setup may refuse before it reads anything (set up already): then the pipe is closed.
    let _ = child.stdin.take().unwrap().write_all(answers.as_bytes());
    child.wait_with_output().unwrap()
}

fn key_file_answers() -> String {
    format!("{ADMIN_PW}\n{ADMIN_PW}\n1\ndhcp\nvault-2\n1\nnone\nyes\n")
}

#[test]
fn setup_answers_end_early_or_badly_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let (data, system) = (d.path().join("data"), d.path().join("system"));
    let out = setup(&data, &system, &format!("{ADMIN_PW}\n{ADMIN_PW}\n2\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the answers ended before setup was complete; nothing was changed"),
        "{err}"
    );
    assert!(!data.exists() && !system.exists(), "nothing written");

    // A certificate and a key that do not belong together are refused, and asked for again.
    let a = custos::tls::generate_self_signed(&[]).unwrap();
    let b = custos::tls::generate_self_signed(&[]).unwrap();
    let answers = format!(
        "{ADMIN_PW}\n{ADMIN_PW}\n1\ndhcp\nvault-3\n2\n{}{}{}{}none\nyes\n",
        a.cert_pem, b.key_pem, a.cert_pem, a.key_pem
    );
    let out = setup(&data, &system, &answers);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("the private key does not belong to the certificate"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "TLS certificate SHA-256 fingerprint: {}",
            a.fingerprint
        )),
        "{text}"
    );

    // Set up once: a second run refuses and changes nothing.
    let before = std::fs::read(system.join("appliance.conf")).unwrap();
    let out = setup(&data, &system, &key_file_answers());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("set up already"));
    assert_eq!(
        std::fs::read(system.join("appliance.conf")).unwrap(),
        before
    );
}

#[test]
fn setup_chooses_the_password_the_unseal_mode_and_the_certificate_the_server_uses() {
    let d = Dir::new();
    let system = d.path().join("system");
    let out = setup(&d.path(), &system, &key_file_answers());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conf = std::fs::read_to_string(system.join("appliance.conf")).unwrap();
    assert!(
        conf.contains("hostname=vault-2\nnet=dhcp\n") && conf.contains("ntp=\n"),
        "{conf}"
    );
    let s = d.serve();
    assert!(
        s.admin_password.is_none(),
        "no one-time password after setup"
    );
    assert!(
        text.contains(&format!("fingerprint: {}", s.fingerprint)),
        "{text}"
    );
    let (_, v) = s.login("admin", ADMIN_PW);
    assert_eq!(v["password_change_required"], json!(false), "{v}");

    // Passphrase mode: the server starts sealed and opens with the passphrase.
    let d = Dir::new();
    let system = d.path().join("system");
    let pass = "sealed passphrase 42";
    let answers =
        format!("{ADMIN_PW}\n{ADMIN_PW}\n2\n{pass}\n{pass}\ndhcp\nvault-4\n1\nnone\nyes\n");
    let out = setup(&d.path(), &system, &answers);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !d.path().join("keys/master.key").exists(),
        "no key file in passphrase mode"
    );
    let s = d.serve();
    assert_eq!(
        s.get("/healthz", None).status,
        503,
        "sealed until the passphrase is given"
    );
    let pf = d.secret("pass", pass);
    d.run(&["unseal", "--passphrase-file", pf.to_str().unwrap()])
        .ok();
    assert_eq!(s.get("/healthz", None).status, 200);
    s.login("admin", ADMIN_PW);
}

/// A running `custos supervise`.
struct Supervisor {
    child: Child,
    log: PathBuf,
    ready: PathBuf,
    /// Where this run's part of the log begins.
    from: usize,
}

impl Supervisor {
    fn start(d: &Dir, system: &Path, trust: &Path, health_timeout: u64) -> Supervisor {
        let run = d.path().join("run");
        let log = d.path().join("log/custos.log");
        let from = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let child = Command::new(bin())
            .arg("--data")
            .arg(d.path())
            .arg("supervise")
            .arg("--system")
            .arg(system)
            .arg("--log")
            .arg(&log)
            .arg("--run")
            .arg(&run)
            .arg("--trust")
            .arg(trust)
            .args(["--health-timeout", &health_timeout.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Supervisor {
            child,
            log,
            ready: run.join("ready"),
            from,
        }
    }

    /// This run's part of the log.
    fn log_text(&self) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&all[self.from.min(all.len())..]).into_owned()
    }

    /// Waits until the log has `pat` (`count` times).
    fn wait_log(&self, pat: &str, count: usize) {
        let start = Instant::now();
        while self.log_text().matches(pat).count() < count {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no {pat:?} in the supervisor's log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server process the supervisor runs now.
    fn server_pid(&self) -> u32 {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            let after = stat.rsplit(") ").next().unwrap_or("");
            let ppid: u32 = after
                .split(' ')
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if ppid == self.child.id() {
                return e.file_name().to_str().unwrap().parse().unwrap();
            }
        }
        panic!("the supervisor runs no server");
    }

    fn stop(mut self) {
        signal(self.child.id(), "TERM");
        let status =
            wait_timeout(&mut self.child, Duration::from_secs(60)).expect("supervise stops");
        assert!(status.success(), "{status}");
        assert!(!self.ready.exists(), "the ready file goes with the server");
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pinned endpoint the supervisor's ready file names.
fn endpoint_from_ready(ready: &Path) -> Endpoint {
    endpoint_from_ready_when(ready, |_| true)
}

fn endpoint_from_ready_when(ready: &Path, ok: impl Fn(&str) -> bool) -> Endpoint {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && ok(&text)
            && let (Some(addr), Some(fp)) = (
                text.lines()
                    .find_map(|l| l.strip_prefix("custos ready https://")),
                text.lines()
                    .find_map(|l| l.strip_prefix("TLS certificate SHA-256 fingerprint: ")),
            )
        {
            return Endpoint::Https {
                addr: addr.trim().to_string(),
                tls: custos::tls::pinned_client_config(
                    custos::tls::parse_fingerprint(fp.trim()).unwrap(),
                )
                .unwrap(),
            };
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no ready file");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn call(
    ep: &Endpoint,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> custos::client::Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let auth = token.map(|t| format!("Bearer {t}"));
    rt.block_on(ep.request_raw(
        method,
        path,
        auth.as_deref(),
        body.map(|b| ("application/octet-stream", b)),
    ))
    .expect("request")
}

fn login(ep: &Endpoint) -> String {
    let body = serde_json::to_vec(&json!({ "name": "admin", "password": ADMIN_PW })).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(ep.request_raw(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(("application/json", body)),
        ))
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.error_message());
    r.json().unwrap()["token"].as_str().unwrap().to_string()
}

fn update_state(system: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(system.join("update/state.json")).unwrap()).unwrap()
}

#[test]
fn the_supervisor_restarts_the_server_commits_a_healthy_update_and_rolls_back_a_bad_one() {
    let d = Dir::new();
    let system = d.path().join("system");
    assert!(
        setup(&d.path(), &system, &key_file_answers())
            .status
            .success()
    );
    let k = d.path().join("vendor");
    d.run(&["update", "keygen", "--out", k.to_str().unwrap()])
        .ok();
    let (key, trust) = (k.with_extension("key"), k.with_extension("pub"));
    let sign = |binary: &Path, version: &str| -> PathBuf {
        let out = d.path().join(format!("custos-{version}.bundle"));
        d.run(&[
            "update",
            "sign",
            "--key",
            key.to_str().unwrap(),
            "--binary",
            binary.to_str().unwrap(),
            "--version",
            version,
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
        out
    };
    let apply = |bundle: &Path| {
        d.run(&[
            "update",
            "apply",
            bundle.to_str().unwrap(),
            "--system",
            system.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ])
    };

    // Refused before anything is staged: a tampered bundle, and one no newer than what runs.
    let good = sign(&bin(), "0.1.0");
    let e = apply(&good).fails().stderr();
    assert!(e.contains("not newer than 0.1.0"), "{e}");
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0xff;
    let tampered = d.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let e = apply(&tampered).fails().stderr();
    assert!(e.contains("does not match the signed manifest"), "{e}");
    assert!(!system.join("update/state.json").exists(), "nothing staged");

    // The image's binary runs; killed, it is started again.
    let sup = Supervisor::start(&d, &system, &trust, 60);
    sup.wait_log("is healthy", 1);
    assert!(
        std::fs::read_to_string(&sup.ready)
            .unwrap()
            .contains("custos ready https://127.0.0.1:")
    );
    signal(sup.server_pid(), "KILL");
    sup.wait_log("restarting in 1 s", 1);
    sup.wait_log("is healthy", 2);
    sup.stop();

    // A bad build (exits at once) is tried once and rolled back; the image's binary serves.
    let script = d.path().join("bad.sh");
    std::fs::write(&script, "#!/bin/sh\necho 'bad build starting'\nexit 3\n").unwrap();
    apply(&sign(&script, "0.1.1")).ok();
    let sup = Supervisor::start(&d, &system, &trust, 60);
    sup.wait_log(
        "update 0.1.1 failed: it exited (exit status: 3) before it was healthy; rolled back",
        1,
    );
    sup.wait_log("is healthy", 1);
    let s = update_state(&system);
    assert_eq!(s["trial"], Value::Null, "{s}");
    assert_eq!(s["committed"], Value::Null, "{s}");
    assert_eq!(
        s["history"].as_array().unwrap().last().unwrap()["event"],
        "rolled back"
    );
    sup.stop();

    // A good build is committed once healthy, and runs again at the next start.
    apply(&sign(&bin(), "0.1.2")).ok();
    let sup = Supervisor::start(&d, &system, &trust, 60);
    sup.wait_log("update 0.1.2 committed", 1);
    let s = update_state(&system);
    assert_eq!(s["committed"]["version"], "0.1.2", "{s}");
    assert_eq!(s["trial"], Value::Null);
    sup.stop();

    // One that never becomes healthy is stopped at the health timeout and rolled back to 0.1.2.
    let hang = d.path().join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 600\n").unwrap();
    apply(&sign(&hang, "0.1.3")).ok();
    let sup = Supervisor::start(&d, &system, &trust, 3);
    sup.wait_log(
        "update 0.1.3 failed: it did not become healthy within 3 s; rolled back",
        1,
    );
    sup.wait_log("starting custos 0.1.2 (committed update)", 1);
    sup.wait_log("is healthy", 1);
    assert_eq!(update_state(&system)["committed"]["version"], "0.1.2");
    sup.stop();

    // Through the API, as an administrator does on the appliance: a damaged bundle is refused
    // with the reason (and audited), a good one staged, and the server restarts into it.
    let sup = Supervisor::start(&d, &system, &trust, 60);
    sup.wait_log("is healthy", 1);
    let ep = endpoint_from_ready(&sup.ready);
    let token = login(&ep);
    let r = call(
        &ep,
        Method::POST,
        "/api/v1/system/update",
        Some(&token),
        Some(std::fs::read(&tampered).unwrap()),
    );
    assert_eq!(r.status, 422, "{}", r.error_message());
    assert!(
        r.error_message()
            .contains("does not match the signed manifest"),
        "{}",
        r.error_message()
    );
    let r = call(
        &ep,
        Method::POST,
        "/api/v1/system/update",
        None,
        Some(b"x".to_vec()),
    );
    assert_eq!(r.status, 401);
    let r = call(
        &ep,
        Method::POST,
        "/api/v1/system/update",
        Some(&token),
        Some(std::fs::read(sign(&bin(), "0.1.4")).unwrap()),
    );
    assert_eq!(r.status, 202, "{}", r.error_message());
    sup.wait_log("starting custos 0.1.4 (update on trial)", 1);
    sup.wait_log("update 0.1.4 committed", 1);
    let ep = endpoint_from_ready_when(&sup.ready, |_| true);
    let token = login(&ep);
    let v = call(
        &ep,
        Method::GET,
        "/api/v1/system/update",
        Some(&token),
        None,
    )
    .json()
    .unwrap();
    assert_eq!(v["state"]["committed"]["version"], "0.1.4", "{v}");
    assert_eq!(v["updates_available"], true);
    sup.stop();
    d.run(&["audit", "verify"]).ok();
    let audit = d.run(&["audit", "show", "--last", "500"]).ok().stdout();
    assert!(
        audit.contains("system.update_refused") && audit.contains("system.update_staged"),
        "{audit}"
    );

    // The server owns the update area; it cannot bring back an older signed build by editing
    // the state: the supervisor's floor (the newest version committed) refuses it.
    let mut s = update_state(&system);
    s["committed"] = json!({ "slot": "a", "version": "0.1.2" });
    std::fs::write(system.join("update/state.json"), s.to_string()).unwrap();
    let sup = Supervisor::start(&d, &system, &trust, 60);
    sup.wait_log("not running update 0.1.2: it is older than 0.1.4", 1);
    sup.wait_log("is healthy", 1);
    sup.stop();

    // A committed bundle altered on disk is not run: the image's binary is.
    let mut s = update_state(&system);
    s["committed"] = json!({ "slot": "b", "version": "0.1.4" });
    std::fs::write(system.join("update/state.json"), s.to_string()).unwrap();
    let slot = system.join("update/slot-b.bundle");
    let mut bytes = std::fs::read(&slot).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&slot, &bytes).unwrap();
    let sup = Supervisor::start(&d, &system, &trust, 60);
    sup.wait_log("not running update 0.1.4: the binary does not match", 1);
    sup.wait_log("starting custos 0.1.0 (the image's binary)", 1);
    sup.wait_log("is healthy", 1);
    sup.stop();
}

/// A time server on loopback answering each request with `reply(request)`.
fn time_server(reply: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static) -> String {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if let Some(r) = reply(&buf[..n]) {
                let _ = sock.send_to(&r, from);
            }
        }
    });
    addr
}

fn ntp_now(ahead: f64) -> [u8; 8] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + ahead
        + 2_208_988_800.0;
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&(t as u32).to_be_bytes());
    b[4..].copy_from_slice(&(((t - t.floor()) * 4_294_967_296.0) as u32).to_be_bytes());
    b
}

#[test]
fn timesync_believes_a_real_answer_and_nothing_else() {
    let d = Dir::new();
    let good = time_server(|req| {
        let mut r = vec![0u8; 48];
        r[0] = 0x24;
        r[1] = 2;
        r[24..32].copy_from_slice(&req[40..48]);
        r[32..40].copy_from_slice(&ntp_now(1000.0));
        r[40..48].copy_from_slice(&ntp_now(1000.0));
        Some(r)
    });
    let out = d.run(&["timesync", &good]).ok().stdout();
    assert!(
        out.contains(&format!("{good}: offset +100")) && out.contains("stratum 2"),
        "{out}"
    );

    // Echoes a client packet back: not an answer.
    let echo = time_server(|req| Some(req.to_vec()));
    let e = d.run(&["timesync", &echo]).fails().stderr();
    assert!(
        e.contains("not from a server (mode 3)") && e.contains("the clock is unchanged"),
        "{e}"
    );
    // Answers someone else's request.
    let stale = time_server(|_| {
        let mut r = vec![0u8; 48];
        r[0] = 0x24;
        r[1] = 2;
        r[40..48].copy_from_slice(&ntp_now(0.0));
        Some(r)
    });
    let e = d.run(&["timesync", &stale]).fails().stderr();
    assert!(e.contains("does not answer our request"), "{e}");
    // Silent: after the timeout, the next server is asked, and the good one wins.
    let silent = time_server(|_| None);
    let out = d.run(&["timesync", &silent, &good]);
    out.ok();
    assert!(out.stderr().contains("no answer"), "{}", out.stderr());
    assert!(out.stdout().contains(&good), "{}", out.stdout());
}
