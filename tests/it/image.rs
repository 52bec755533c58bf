//! The appliance image booted for real under QEMU (TCG; KVM is never used here): the ISO through
//! SeaBIOS with a blank data disk, first-boot setup answered on the serial console, the API
//! reached through user-mode networking forwarded to loopback, a support request submitted, a
//! power-off through the ACPI power button, a second boot that finds the request and an intact
//! audit log, and the UEFI disk image through OVMF on the same data disk.
//!
//! Needs `just image` (or image/build.sh) first: the images are build artifacts. Without them,
//! or without qemu-system-x86_64 / OVMF, the test skips loudly; in CI it fails.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use custos::client::Endpoint;
use hyper::Method;
use serde_json::{Value, json};

use crate::util::tool_present;

const ADMIN_PW: &str = "boot-test admin password";
/// Generous: CI machines are noisy and TCG is slow (a boot takes 15-30 s here).
const BOOT_LIMIT: Duration = Duration::from_secs(300);

fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image")
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running VM: its serial console on stdin/stdout, its monitor on a Unix socket.
struct Vm {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
    seen: usize,
    monitor: PathBuf,
    port: u16,
    name: &'static str,
}

impl Vm {
    fn boot(name: &'static str, tmp: &Path, boot: &[&str], data: &Path) -> Vm {
        let port = free_port();
        let monitor = tmp.join(format!("{name}.monitor"));
        let mut args: Vec<String> = [
            "-accel", "tcg", "-smp", "1", "-m", "1024", "-display", "none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(boot.iter().map(|s| s.to_string()));
        args.extend([
            "-drive".into(),
            format!("file={},if=virtio,format=qcow2", data.display()),
            "-netdev".into(),
            format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:443"),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", monitor.display()),
            "-serial".into(),
            "stdio".into(),
        ]);
        let mut child = Command::new("qemu-system-x86_64")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let log_path = tmp.join(format!("{name}.serial.log"));
        std::thread::spawn(move || {
            let mut log = std::fs::File::create(log_path).ok();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(l) = log.as_mut() {
                    let _ = l.write_all(&buf[..n]);
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Vm {
            child,
            stdin,
            out,
            seen: 0,
            monitor,
            port,
            name,
        }
    }

    /// The serial output so far, for failure messages (the last 3000 characters, escapes shown).
    fn tail(&self) -> String {
        let out = self.out.lock().unwrap();
        let text = String::from_utf8_lossy(&out);
        let start = text.len().saturating_sub(3000);
        text[text.floor_char_boundary(start)..]
            .escape_debug()
            .to_string()
    }

    /// Waits until `pat` appears after what was already matched; returns the text up to and
    /// including the line it ends.
    fn wait_for(&mut self, pat: &str, limit: Duration) -> String {
        self.wait(pat, limit, false)
    }

    /// `wait_for`, returning only once the line `pat` is on has ended: the serial output
    /// arrives in pieces, and a line read before its end is cut short.
    fn wait_line(&mut self, pat: &str, limit: Duration) -> String {
        self.wait(pat, limit, true)
    }

    fn wait(&mut self, pat: &str, limit: Duration, whole_line: bool) -> String {
        let start = Instant::now();
        loop {
            {
                let out = self.out.lock().unwrap();
                let rest = &out[self.seen..];
                if let Some(i) = rest.windows(pat.len()).position(|w| w == pat.as_bytes()) {
                    let newline = rest[i..].iter().position(|b| *b == b'\n');
                    if newline.is_some() || !whole_line {
                        let end = newline.map_or(rest.len(), |e| i + e);
                        let found = String::from_utf8_lossy(&rest[..end]).into_owned();
                        self.seen += i + pat.len();
                        return found;
                    }
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{}: QEMU exited ({status}) before {pat:?}:\n{}",
                    self.name,
                    self.tail()
                );
            }
            assert!(
                start.elapsed() < limit,
                "{}: no {pat:?} on the serial console within {} s:\n{}",
                self.name,
                limit.as_secs(),
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_line(&mut self, text: &str) {
        self.stdin
            .write_all(format!("{text}\r").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
    }

    /// Answers a prompt of setup.
    fn answer(&mut self, prompt: &str, text: &str) {
        self.wait_for(prompt, Duration::from_secs(120));
        self.type_line(text);
    }

    /// Waits for the console's ready banner; returns the pinned HTTPS endpoint it names.
    fn ready(&mut self) -> Endpoint {
        let line = self.wait_line("custos ready https://", BOOT_LIMIT);
        assert!(line.contains(":443"), "{line}");
        let fp_line = self.wait_line(
            "TLS certificate SHA-256 fingerprint: ",
            Duration::from_secs(30),
        );
        let fp = fp_line
            .rsplit(' ')
            .next()
            .map(|s| s.trim())
            .and_then(custos::tls::parse_fingerprint)
            .unwrap_or_else(|| panic!("a fingerprint in {fp_line:?}"));
        Endpoint::Https {
            addr: format!("127.0.0.1:{}", self.port),
            tls: custos::tls::pinned_client_config(fp).unwrap(),
        }
    }

    /// Presses the ACPI power button and waits for QEMU to exit after a clean shutdown.
    fn power_off(mut self) {
        let mut mon = std::os::unix::net::UnixStream::connect(&self.monitor).expect("QEMU monitor");
        mon.write_all(b"system_powerdown\n").unwrap();
        self.wait_for("custos: stopped, data disk clean", Duration::from_secs(120));
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{}: QEMU exited with {status}", self.name);
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{}: still running after the power button:\n{}",
                self.name,
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(
    ep: &Endpoint,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> custos::client::Response {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The guest's server may need a moment after the banner under TCG: retry refused connections.
    let start = Instant::now();
    loop {
        match rt.block_on(ep.request(method.clone(), path, token, body.as_ref())) {
            Ok(r) => return r,
            Err(e) if start.elapsed() < Duration::from_secs(60) => {
                eprintln!("{path}: {e}; trying again");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("{path}: {e}"),
        }
    }
}

fn login(ep: &Endpoint) -> String {
    let r = call(
        ep,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({ "name": "admin", "password": ADMIN_PW })),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    r.json().unwrap()["token"].as_str().unwrap().to_string()
}

fn audit_intact(ep: &Endpoint, token: &str) {
    let r = call(
        ep,
        Method::POST,
        "/api/v1/audit/verify",
        Some(token),
        Some(json!({})),
    );
    assert_eq!(r.status, 202, "{}", r.error_message());
    let id = r.json().unwrap()["id"].as_u64().unwrap();
    let start = Instant::now();
    loop {
        let v = call(
            ep,
            Method::GET,
            &format!("/api/v1/audit/verify/{id}"),
            Some(token),
            None,
        )
        .json()
        .unwrap();
        if v["state"] != "running" {
            assert_eq!(v["state"], "intact", "{v}");
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "{v}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn curl_healthz(port: u16) {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "30",
            &format!("https://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"status\":\"ok\""),
        "curl -k /healthz: {body}"
    );
}

#[test]
fn the_image_boots_is_set_up_on_its_console_keeps_its_data_and_powers_off_cleanly() {
    let dir = image_dir();
    let iso = dir.join("custos.iso");
    let disk = dir.join("custos-uefi.qcow2");
    let ovmf = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd");
    let ovmf_vars = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    if !tool_present(
        have("qemu-system-x86_64") && have("qemu-img"),
        "QEMU (qemu-system-x86 and qemu-utils)",
    ) || !tool_present(have("curl"), "curl")
        || !tool_present(ovmf.exists() && ovmf_vars.exists(), "OVMF (package ovmf)")
        || !tool_present(
            iso.exists() && disk.exists(),
            "the appliance images (run `just image` first)",
        )
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data.qcow2");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&data)
        .arg("1G")
        .status()
        .unwrap();
    assert!(ok.success());

    // First boot from the ISO (SeaBIOS): the blank disk is formatted, setup runs on the console.
    let t0 = Instant::now();
    let iso_arg = iso.display().to_string();
    let mut vm = Vm::boot("first", tmp.path(), &["-cdrom", &iso_arg], &data);
    vm.wait_for("formatting the blank disk", BOOT_LIMIT);
    vm.answer("press Enter to begin setup", "");
    // A password the policy refuses is asked again, with the reason.
    vm.answer("Administrator password", "short");
    vm.wait_for(
        "Not usable: a password needs at least 12 characters",
        Duration::from_secs(60),
    );
    vm.answer("Administrator password", ADMIN_PW);
    vm.answer("The same again", ADMIN_PW);
    vm.answer("Unseal mode [1]", "");
    vm.answer("DHCP or static [dhcp]", "");
    vm.answer("Host name [custos]", "vault-1");
    vm.answer("Certificate [1]", "");
    vm.answer("NTP servers", "none");
    vm.answer("Apply these settings", "yes");
    vm.wait_for("Setup complete.", Duration::from_secs(120));
    let ep = vm.ready();
    eprintln!(
        "image: first boot set up and ready in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    curl_healthz(vm.port);
    let r = call(
        &ep,
        Method::POST,
        "/api/v1/requests",
        None,
        Some(json!({
            "portal": "support", "name": "Boot Test", "question": "Does it persist?", "ref": "BOOT-1"
        })),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let request_id = r.json().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The chosen password works at once: setup replaced the one-time password.
    let token = login(&ep);
    audit_intact(&ep, &token);
    let t = Instant::now();
    vm.power_off();
    eprintln!(
        "image: powered off through ACPI in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Second boot from the ISO: no setup, the request and the audit log are still there.
    let t = Instant::now();
    let mut vm = Vm::boot("second", tmp.path(), &["-cdrom", &iso_arg], &data);
    let ep = vm.ready();
    eprintln!(
        "image: second boot ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        !vm.tail().contains("formatting"),
        "the data disk must never be formatted twice"
    );
    // The console on the serial port: Enter opens it, the administrator signs in, Ctrl+C
    // goes back to the status screen.
    vm.wait_for("Press Enter to open the console.", Duration::from_secs(60));
    vm.type_line("");
    // The console draws only the cells that change, moving the cursor over blanks: words arrive
    // one by one, so single words are looked for.
    vm.wait_for("\x1b[?1049h", Duration::from_secs(120));
    vm.wait_for("Sign", Duration::from_secs(120));
    vm.stdin
        .write_all(format!("admin\t{ADMIN_PW}\r").as_bytes())
        .unwrap();
    vm.stdin.flush().unwrap();
    vm.wait_for("alerts", Duration::from_secs(120));
    vm.stdin.write_all(b"\x03").unwrap();
    vm.stdin.flush().unwrap();
    vm.wait_for("\x1b[?1049l", Duration::from_secs(60));
    vm.wait_for("Press Enter to open the console.", Duration::from_secs(60));
    let token = login(&ep);
    let sessions = call(&ep, Method::GET, "/api/v1/sessions", Some(&token), None);
    assert_eq!(sessions.status, 200, "{}", sessions.error_message());
    let text = String::from_utf8_lossy(&sessions.body).into_owned();
    assert!(
        text.contains(&request_id) || text.contains("BOOT-1"),
        "the request after a reboot: {text}"
    );
    audit_intact(&ep, &token);
    vm.power_off();

    // The UEFI disk image through OVMF, on the same data disk (the boot disk is not mistaken
    // for data: it has partitions, and the data disk is found by its label).
    let vars = tmp.path().join("OVMF_VARS.fd");
    std::fs::copy(ovmf_vars, &vars).unwrap();
    let t = Instant::now();
    let code_arg = format!(
        "if=pflash,format=raw,unit=0,readonly=on,file={}",
        ovmf.display()
    );
    let vars_arg = format!("if=pflash,format=raw,unit=1,file={}", vars.display());
    let disk_arg = format!("file={},if=virtio,format=qcow2,snapshot=on", disk.display());
    let mut vm = Vm::boot(
        "uefi",
        tmp.path(),
        &[
            "-machine", "q35", "-drive", &code_arg, "-drive", &vars_arg, "-drive", &disk_arg,
        ],
        &data,
    );
    let ep = vm.ready();
    eprintln!(
        "image: UEFI disk image ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    curl_healthz(vm.port);
    let token = login(&ep);
    audit_intact(&ep, &token);
    vm.power_off();
    eprintln!("image: three boots in {:.1} s", t0.elapsed().as_secs_f64());
}
