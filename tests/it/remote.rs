//! Remote view and control: the screen relay at its socket (bad frames, input without control,
//! consent and its revocation, the recording), and the whole loop with real parts: an Xvfb
//! desktop with an xterm, the native client `custos-client` joining by code, and the agent in
//! headless Chromium who sees the screen, takes control and types a command that runs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser::{AGENT_PW, agent_login, panel, stage};
use crate::util::*;
use crate::webdriver::{Driver, available};
use custos::remote::{Codec, MAX_MESSAGE, UpdateBuilder};

/// A session joined by a connection code: (session id, customer token).
pub(crate) fn code_session(s: &Server, agent: &str) -> (String, String) {
    let r = s.post("/api/v1/codes", Some(agent), json!({}));
    assert_eq!(r.status, 201, "{}", r.error_message());
    let code = r.json().unwrap()["code"].as_str().unwrap().replace(' ', "");
    let r = s.post(
        &format!("/api/v1/codes/{code}/redeem"),
        None,
        json!({"name": "Ines"}),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let v = r.json().unwrap();
    (
        v["session_id"].as_str().unwrap().to_string(),
        v["customer_token"].as_str().unwrap().to_string(),
    )
}

fn consent(view: bool, control: bool) -> Value {
    json!({"type": "consent", "view": view, "control": control, "files": false, "diagnostics": false, "reboot": false})
}

fn expect_error(ws: &mut Ws, code: &str) -> String {
    let e = ws.expect("error");
    assert_eq!(e["code"], code, "{e}");
    e["message"].as_str().unwrap().to_string()
}

/// A 64x32 screen's keyframe: one raw tile.
fn keyframe() -> Vec<u8> {
    let mut b = UpdateBuilder::new(1, 64, 32, true, MAX_MESSAGE);
    b.push(0, 0, 64, 32, Codec::Raw, &vec![0x55; 64 * 32 * 3]);
    b.finish().remove(0)
}

#[test]
fn the_screen_relay_refuses_bad_frames_and_input_without_control_and_records_the_stream() {
    let st = stage();
    let s = &st.s;
    let alice = s.login("alice", AGENT_PW).0;
    let bob = s.login("bob", AGENT_PW).0;
    let (id, token) = code_session(s, &alice);

    let mut sharer = s.screen_ws(&id, &format!("Customer {token}"));
    let sharer_hello = sharer.expect("hello");
    assert_eq!(
        (sharer_hello["role"].clone(), sharer_hello["viewer"].clone()),
        (json!("sharer"), json!(false))
    );
    // Another agent may not watch a session that is not theirs.
    let mut stranger = s.screen_ws(&id, &format!("Bearer {bob}"));
    assert!(expect_error(&mut stranger, "refused").contains("not yours"));
    let mut viewer = s.screen_ws(&id, &format!("Bearer {alice}"));
    let hello = viewer.expect("hello");
    assert_eq!(hello["sharer"], true);
    assert_eq!(hello["consent"]["view"], false);
    assert_eq!(sharer.expect("viewer")["on"], true);

    // Nothing is relayed before the user allows viewing.
    sharer.send_binary(keyframe());
    expect_error(&mut sharer, "not_consented");
    sharer.send(&consent(true, false));
    assert_eq!(viewer.expect("consent")["consent"]["view"], true);

    // Malformed frames are refused with what is wrong, and the socket stays usable.
    let good = keyframe();
    let mut absurd = good.clone();
    absurd[8..10].copy_from_slice(&60000u16.to_le_bytes());
    let mut outside = good.clone();
    outside[14..16].copy_from_slice(&10u16.to_le_bytes());
    let mut version = good.clone();
    version[0] = 9;
    let mut lying = good.clone();
    lying[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    for (bytes, needle) in [
        (vec![1u8, 1, 0], "truncated"),
        (absurd, "60000x32 is out of range"),
        (outside, "outside the 64x32 screen"),
        (version, "version 9"),
        (lying, "truncated"),
        (custos::remote::cursor_message(64, 0), "outside the screen"),
    ] {
        sharer.send_binary(bytes);
        let m = expect_error(&mut sharer, "bad_frame");
        assert!(m.contains(needle), "{m} (wanted {needle})");
    }
    sharer.send_binary(good.clone());
    assert_eq!(viewer.recv_binary().unwrap(), good, "relayed byte for byte");

    // The agent's input is refused (and audited) until the user grants control.
    viewer.send(&json!({"type": "input", "e": "move", "x": 1, "y": 1}));
    expect_error(&mut viewer, "control_not_granted");
    viewer.send_binary(good.clone());
    expect_error(&mut viewer, "bad_message");
    viewer.send(&json!({"type": "control", "on": true}));
    assert_eq!(sharer.expect("control_request")["by"], "alice");
    sharer.send(&consent(true, true));
    assert_eq!(sharer.expect("control")["on"], true);
    let c = viewer.expect("consent");
    assert_eq!(c["control"], true, "{c}");
    viewer.send(&json!({"type": "input", "e": "move", "x": 64, "y": 0}));
    assert!(expect_error(&mut viewer, "bad_input").contains("outside the 64x32 screen"));
    viewer.send(&json!({"type": "input", "e": "key", "key": "NoSuchKey", "down": true}));
    assert!(expect_error(&mut viewer, "bad_input").contains("unknown key"));
    viewer.send(&json!({"type": "input", "e": "key", "key": "a", "down": true}));
    let i = sharer.expect("input");
    assert_eq!(
        (i["e"].clone(), i["key"].clone()),
        (json!("key"), json!("a"))
    );
    viewer
        .send(&json!({"type": "input", "e": "button", "button": 1, "down": true, "x": 3, "y": 4}));
    assert_eq!(sharer.expect("input")["x"], 3);

    // The user takes control back: input is refused again at once.
    sharer.send(&consent(true, false));
    assert_eq!(sharer.expect("control")["on"], false);
    viewer.send(&json!({"type": "input", "e": "move", "x": 1, "y": 1}));
    expect_error(&mut viewer, "control_not_granted");
    viewer.send(&json!({"type": "telepathy"}));
    assert!(expect_error(&mut viewer, "bad_message").contains("telepathy"));

    // Diagnostics travel on the same socket, with their own consent.
    let doc = json!({"v": 1, "collected_at": "2026-12-06T10:00:00Z", "os": {"name": "Debian GNU/Linux", "kernel": "6.1.0"},
                     "packages": {"manager": "dpkg", "list": [{"name": "openvpn", "version": "2.5.1-3"}]}});
    sharer.send(&json!({"type": "diagnostics", "document": doc}));
    expect_error(&mut sharer, "not_consented");
    let mut with_diag = consent(true, false);
    with_diag["diagnostics"] = json!(true);
    sharer.send(&with_diag);
    viewer.expect("consent");
    let mut bad = doc.clone();
    bad["os"]["name"] = json!("");
    sharer.send(&json!({"type": "diagnostics", "document": bad}));
    assert!(expect_error(&mut sharer, "bad_diagnostics").contains("os.name"));
    let mut chat = s.ws(&id, &format!("Bearer {alice}"));
    chat.expect("hello");
    sharer.send(&json!({"type": "diagnostics", "document": doc}));
    assert!(sharer.expect("diagnostics_received")["object"].is_string());
    assert_eq!(
        chat.expect("diagnostics")["summary"]["os"],
        "Debian GNU/Linux"
    );
    let r = s.post(
        &format!("/api/v1/sessions/{id}/diagnostics/request"),
        Some(&alice),
        json!({}),
    );
    assert!(r.status < 300, "{}", r.error_message());
    assert_eq!(sharer.expect("diagnostics_request")["by"], "alice");
    drop(chat);

    // Restart and rejoin: only with the user's consent, and only with this session's current
    // resume token, once.
    let first_token = sharer_hello["resume_token"].as_str().unwrap().to_string();
    assert!(first_token.starts_with("rtk_"));
    viewer.send(&json!({"type": "reboot"}));
    expect_error(&mut viewer, "not_consented");
    let mut with_reboot = consent(true, false);
    with_reboot["reboot"] = json!(true);
    sharer.send(&with_reboot);
    viewer.expect("consent");
    viewer.send(&json!({"type": "reboot"}));
    assert_eq!(sharer.expect("reboot_request")["by"], "alice");
    sharer.send(&json!({"type": "rebooting"}));
    drop(sharer);
    let gone = viewer.expect("sharer");
    assert_eq!(
        (gone["on"].clone(), gone["rebooting"].clone()),
        (json!(false), json!(true))
    );
    // A token from another session is refused (and audited), so is a made-up one.
    let (other, other_token) = code_session(s, &alice);
    let mut other_sharer = s.screen_ws(&other, &format!("Customer {other_token}"));
    let other_resume = other_sharer.expect("hello")["resume_token"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [other_resume.as_str(), "rtk_made_up"] {
        assert_eq!(s.screen_ws_status(&id, &format!("resume_token={bad}")), 403);
    }
    let mut sharer = s.screen_ws_query(&id, &format!("resume_token={first_token}"));
    let again = sharer.expect("hello");
    assert_ne!(
        again["resume_token"],
        first_token.as_str(),
        "a new token each time"
    );
    let back = viewer.expect("sharer");
    assert_eq!(
        (back["on"].clone(), back["resumed"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(
        s.screen_ws_status(&id, &format!("resume_token={first_token}")),
        403,
        "a used resume token is spent"
    );

    // Files: the agent's reach the client, which fetches them (and sends its own) with its
    // current resume token; a spent or made-up one is refused.
    let current = again["resume_token"].as_str().unwrap().to_string();
    let r = raw(
        s,
        hyper::Method::POST,
        &format!("/api/v1/sessions/{id}/files?name=fix.sh"),
        &format!("Bearer {alice}"),
        b"echo fixed\n".to_vec(),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let offer = sharer.expect("file");
    assert_eq!(offer["name"], "fix.sh");
    let path = format!(
        "/api/v1/sessions/{id}/files/{}",
        offer["file_id"].as_str().unwrap()
    );
    let got = raw(
        s,
        hyper::Method::GET,
        &path,
        &format!("Resume {current}"),
        vec![],
    );
    assert_eq!(
        (got.status, got.body.as_slice()),
        (200, b"echo fixed\n".as_slice())
    );
    for bad in [first_token.as_str(), "rtk_made_up"] {
        assert_eq!(
            raw(
                s,
                hyper::Method::GET,
                &path,
                &format!("Resume {bad}"),
                vec![]
            )
            .status,
            403
        );
    }
    let mut chat = s.ws(&id, &format!("Bearer {alice}"));
    chat.expect("hello");
    let r = raw(
        s,
        hyper::Method::POST,
        &format!("/api/v1/sessions/{id}/files?name=log.txt"),
        &format!("Resume {current}"),
        b"the log".to_vec(),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert_eq!(chat.expect("file")["name"], "log.txt");
    drop(chat);
    drop(other_sharer);

    let r = s.post(
        &format!("/api/v1/sessions/{id}/end"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    while sharer.recv().is_some() {}

    let audit = st
        .dir
        .run(&["audit", "show", "--last", "200", "--json"])
        .stdout();
    let entries: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |action: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    let refused = find("remote.input_refused");
    assert!(!refused.is_empty(), "{audit}");
    assert_eq!(refused[0]["outcome"], "denied");
    let control = find("remote.control");
    assert_eq!(control.len(), 2, "on, then off: {audit}");
    assert_eq!(find("remote.consent").len(), 5, "{audit}");
    assert_eq!(find("session.diagnostics.received").len(), 1, "{audit}");
    assert_eq!(find("remote.reboot").len(), 1, "{audit}");
    assert_eq!(find("remote.resume_refused").len(), 3, "{audit}");

    // The relayed stream is the recording: one sealed recording object with its keyframe
    // indexed, and the sealed object verifies.
    let db = raw_db(&st.dir);
    let (object, state): (String, String) = db
        .query_row(
            "SELECT id, state FROM objects WHERE session_id = ?1 AND class = 'recording'",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(state, "sealed");
    let keyframes: i64 = db
        .query_row(
            "SELECT count(*) FROM recording_keyframes WHERE object_id = ?1",
            [&object],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(keyframes, 1);
    st.dir.run(&["archive", "verify"]).ok();
    // No screen pixels in plain text on disk.
    for entry in walk(&st.dir.path()) {
        let data = std::fs::read(&entry).unwrap();
        assert!(
            !data.windows(64).any(|w| w.iter().all(|b| *b == 0x55)),
            "plaintext screen pixels in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// An Xvfb display, stopped when dropped.
struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start(w: u32, h: u32) -> Xvfb {
        let n = (90..200)
            .find(|n| !Path::new(&format!("/tmp/.X{n}-lock")).exists())
            .expect("a free display number");
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([
                display.as_str(),
                "-screen",
                "0",
                &format!("{w}x{h}x24"),
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Xvfb");
        let start = Instant::now();
        while !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "Xvfb did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Xvfb { child, display }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn x_tools() -> bool {
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    tool_present(
        have("Xvfb") && have("xterm"),
        "Xvfb and xterm (Debian xvfb, xterm)",
    )
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_agent_sees_an_xterm_in_chromium_takes_control_and_types_a_command_that_runs() {
    if !x_tools() || !available() {
        return;
    }
    let st = stage();
    let base = format!("https://{}", st.s.addr);
    let x = Xvfb::start(800, 600);
    let x_display = x.display.clone();
    let work = tempfile::tempdir().unwrap();
    // The xterm covers the screen; with no window manager, keys go to the window under the
    // pointer.
    let _xterm = Killed(
        Command::new("xterm")
            .args([
                "-geometry",
                "200x80+0+0",
                "-bg",
                "white",
                "-fg",
                "black",
                "-e",
                "sh",
            ])
            .env("DISPLAY", &x.display)
            .current_dir(work.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start xterm"),
    );
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let agent = driver.browser(profiles.path().join("alice"));
    agent_login(&agent, &base, "alice");
    agent.click("#code-new");
    agent.wait_text("#code-value", " ");
    let code = agent.text("#code-value");

    let home = tempfile::tempdir().unwrap();
    let resume_file = home.path().join("resume.json");
    let downloads = home.path().join("downloads");
    let client_cmd = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_custos-client"))
            .args(args)
            .args(["--resume-file", resume_file.to_str().unwrap(), "--no-ask"])
            .args(["--download-dir", downloads.to_str().unwrap()])
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start custos-client")
    };
    let mut client = Killed(client_cmd(&[
        "--server",
        &st.s.addr,
        "--code",
        &code,
        "--fingerprint",
        &st.s.fingerprint,
        "--allow",
        "view,control,reboot,diagnostics,files",
        "--display",
        &x.display,
        "--name",
        "Ines",
        // Stands in for the restart: the test restarts the client itself.
        "--reboot-command",
        "true",
    ]));
    agent.find(".session-panel");
    let id = agent
        .js(
            "return document.querySelector('.session-panel').dataset.sessionId;",
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string();
    let p = panel(&id);
    let canvas = format!("{p} .screen-canvas");
    // The first picture arrives and shows the xterm's white background.
    wait_for("the first frame", Duration::from_secs(30), || {
        agent
            .js(
                "const c = document.querySelector(arguments[0]);
                 if (!c || !(Number(c.dataset.frames) > 0)) return false;
                 const d = c.getContext('2d').getImageData(400, 300, 1, 1).data;
                 return c.width === 800 && c.height === 600 && d[0] > 200 && d[1] > 200 && d[2] > 200;",
                json!([canvas]),
            )
            .as_bool()
            .unwrap_or(false)
    });
    agent.click(&format!("{p} .screen-control"));
    agent.wait_text(&format!("{p} .screen-status"), "You control");
    // The customer's screen says so: the indicator strip turns red.
    wait_for("the control indicator", Duration::from_secs(20), || {
        pixels_of(&x_display, [0xb3, 0x26, 0x1e]) > 1000
    });
    agent.click_at(&canvas, 0, 0);
    agent.keys("touch made-by-agent\u{E007}");
    let made = work.path().join("made-by-agent");
    wait_for("the typed command to run", Duration::from_secs(30), || {
        made.exists()
    });
    // What the agent typed shows on their canvas too: the screen keeps streaming.
    wait_for("frames after typing", Duration::from_secs(20), || {
        agent
            .js(
                "return Number(document.querySelector(arguments[0]).dataset.frames);",
                json!([canvas]),
            )
            .as_i64()
            .is_some_and(|n| n >= 2)
    });

    // The agent restarts the customer's computer: the client saves its resume token, arranges
    // to start again, and goes; started again, it rejoins the same session by itself.
    agent.click(&format!("{p} .screen-reboot"));
    let status =
        wait_timeout(&mut client.0, Duration::from_secs(20)).expect("the client exits to restart");
    assert!(status.success(), "{status:?}");
    agent.wait_text(&format!("{p} .screen-status"), "restarting");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&resume_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the resume token is private");
    let autostart = home
        .path()
        .join(".config/autostart/custos-client-resume.desktop");
    assert!(
        std::fs::read_to_string(&autostart)
            .unwrap()
            .contains("--resume")
    );
    let frames_before = agent
        .js(
            "return Number(document.querySelector(arguments[0]).dataset.frames);",
            json!([canvas]),
        )
        .as_i64()
        .unwrap();
    client = Killed(client_cmd(&["--resume"]));
    agent.wait_text(&format!("{p} .screen-status"), "back after its restart");
    wait_for("frames after the restart", Duration::from_secs(20), || {
        agent
            .js(
                "return Number(document.querySelector(arguments[0]).dataset.frames);",
                json!([canvas]),
            )
            .as_i64()
            .is_some_and(|n| n > frames_before)
    });
    assert!(
        !resume_file.exists() && !autostart.exists(),
        "used once, then removed"
    );
    assert_eq!(
        agent.js(
            "return document.querySelector('.session-panel').dataset.sessionId;",
            json!([])
        ),
        json!(id),
        "the same session"
    );

    // The agent draws on the customer's screen: the stroke shows on the customer's desktop (and
    // so in the stream), without taking their input; then it is cleared.
    agent.click(&format!("{p} .screen-draw"));
    agent.drag(&canvas, (-200, -100), (200, -100));
    let red = || red_pixels(&x_display);
    wait_for(
        "the stroke on the customer's screen",
        Duration::from_secs(20),
        || red() > 100,
    );
    agent.click(&format!("{p} .screen-clear"));
    wait_for("the stroke cleared", Duration::from_secs(20), || red() == 0);
    agent.click(&format!("{p} .screen-draw"));

    // A screenshot goes into the session's files, for the agent only.
    agent.click(&format!("{p} .screen-shot"));
    agent.wait_text(&format!("{p} .screen-status"), "Screenshot saved");
    agent.wait_text(&format!("{p} .messages"), "screenshot-");

    // A file from the agent lands in the client's download folder, checked.
    let alice = st.s.login("alice", AGENT_PW).0;
    let r = raw(
        &st.s,
        hyper::Method::POST,
        &format!("/api/v1/sessions/{id}/files?name=fix.sh"),
        &format!("Bearer {alice}"),
        b"echo fixed\n".to_vec(),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let saved = downloads.join("fix.sh");
    wait_for(
        "the file in the download folder",
        Duration::from_secs(20),
        || std::fs::read(&saved).is_ok_and(|b| b == b"echo fixed\n"),
    );

    // The agent asks for diagnostics: the client (allowed at start) collects and sends them.
    agent.click(&format!("{p} .diag-ask"));
    agent.wait_text(&format!("{p} .messages"), "Diagnostics received");

    // The screen as it is now, captured here; then the session ends.
    std::thread::sleep(Duration::from_millis(1500));
    let expected = screen_sha256(&x.display);
    std::thread::sleep(Duration::from_millis(500));
    drop(client);
    let r = st.s.post(
        &format!("/api/v1/sessions/{id}/end"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());

    // An administrator plays the recording in /review: its last frame is that screen.
    let admin = driver.browser(profiles.path().join("admin"));
    admin.goto(&format!("{base}/review?session={id}"));
    admin.type_into("#login-name", "admin");
    admin.type_into("#login-password", "admin password long");
    admin.click("#login-submit");
    admin.type_into("#reason", "check the remote fix");
    admin.click("#open");
    admin.wait_text("#player-status", "recording part");
    admin.click("#to-end");
    wait_for("the last frame", Duration::from_secs(30), || {
        admin
            .js(
                "const c = document.getElementById('canvas');
                 return c.dataset.ready === 'true' && c.dataset.position === document.getElementById('position').max;",
                json!([]),
            )
            .as_bool()
            .unwrap_or(false)
    });
    admin.js(
        "window.__hash = null;
         const c = document.getElementById('canvas');
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
         const rgb = new Uint8Array(c.width * c.height * 3);
         for (let s = 0, o = 0; s < d.length; s += 4, o += 3) { rgb[o] = d[s]; rgb[o + 1] = d[s + 1]; rgb[o + 2] = d[s + 2]; }
         crypto.subtle.digest('SHA-256', rgb).then((h) => {
           window.__hash = Array.from(new Uint8Array(h)).map((b) => b.toString(16).padStart(2, '0')).join('');
         });
         return true;",
        json!([]),
    );
    let mut played = String::new();
    wait_for("the canvas digest", Duration::from_secs(10), || {
        played = admin
            .js("return window.__hash;", json!([]))
            .as_str()
            .unwrap_or("")
            .to_string();
        !played.is_empty()
    });
    assert_eq!(
        played, expected,
        "the recording's last frame is the screen as captured"
    );
    admin.wait_text("#timeline", "Control granted");
    admin.wait_text("#timeline", "screenshot");
    let detail =
        st.s.get(&format!("/api/v1/sessions/{id}"), Some(&alice))
            .json()
            .unwrap();
    let shot = detail["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str().unwrap().starts_with("screenshot-"))
        .expect("the screenshot is among the session's files")
        .clone();
    let png = st.s.get(
        &format!(
            "/api/v1/sessions/{id}/files/{}",
            shot["file_id"].as_str().unwrap()
        ),
        Some(&alice),
    );
    assert!(png.body.starts_with(b"\x89PNG"), "a PNG");
    let audit = st
        .dir
        .run(&["audit", "show", "--last", "50", "--json"])
        .stdout();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"recording.view\"") && l.contains("check the remote fix")),
        "{audit}"
    );
}

/// How many pixels of the display are the annotation red (#e00000); nothing else on the test
/// desktop is.
fn red_pixels(display: &str) -> usize {
    pixels_of(display, [0xe0, 0, 0])
}

/// How many pixels of the display have this RGB colour.
fn pixels_of(display: &str, rgb: [u8; 3]) -> usize {
    use custos::remote::platform::Platform;
    let mut xs = custos::remote::x11::X11::open(Some(display)).unwrap();
    let f = xs.capture().unwrap();
    f.pixels
        .chunks_exact(4)
        .filter(|p| [p[2], p[1], p[0]] == rgb)
        .count()
}

/// SHA-256 of the display's pixels as RGB, captured through the client's own X11 backend.
fn screen_sha256(display: &str) -> String {
    use custos::remote::platform::Platform;
    use sha2::Digest;
    let mut x = custos::remote::x11::X11::open(Some(display)).unwrap();
    let f = x.capture().unwrap();
    let mut h = sha2::Sha256::new();
    for y in 0..usize::from(f.height) {
        let row = &f.pixels[y * f.stride..][..usize::from(f.width) * 4];
        for p in row.chunks_exact(4) {
            h.update([p[2], p[1], p[0]]);
        }
    }
    hex::encode(h.finalize())
}

#[test]
fn a_customer_shares_a_tab_from_the_browser_and_the_agent_watches_it_live_and_in_review() {
    if !available() {
        return;
    }
    let st = stage();
    let base = format!("https://{}", st.s.addr);
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let agent = driver.browser(profiles.path().join("alice"));
    let cust = driver.browser_with(
        profiles.path().join("customer"),
        &["--auto-accept-this-tab-capture"],
    );
    agent_login(&agent, &base, "alice");
    the_painter_draws_jpeg_then_the_lossless_refresh(&agent);
    agent.click("#code-new");
    agent.wait_text("#code-value", " ");
    let code = agent.text("#code-value");
    cust.goto(&format!("{base}/code"));
    cust.type_into("#code", &code);
    cust.type_into("#name", "Jo");
    cust.click("#submit");
    cust.find("#chat-input");
    let id = cust.url().rsplit('/').next().unwrap().to_string();
    let p = panel(&id);
    agent.find(&p);
    // A real click (user activation) starts the share; the tab is accepted by the switch.
    cust.click("#share");
    cust.wait_text("#share-status", "shared");
    let video = format!("{p} .screen-video");
    wait_for(
        "the shared tab on the agent's screen",
        Duration::from_secs(30),
        || {
            agent
                .js(
                    "const v = document.querySelector(arguments[0]);
                 return !!v && !v.hidden && v.videoWidth > 0 && v.currentTime > 0;",
                    json!([video]),
                )
                .as_bool()
                .unwrap_or(false)
        },
    );
    cust.click("#share-stop");
    cust.wait_text("#share-status", "stopped");
    let alice = st.s.login("alice", AGENT_PW).0;
    let r = st.s.post(
        &format!("/api/v1/sessions/{id}/end"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());

    // The WebM stream is the recording, with its start indexed; it plays in /review.
    let db = raw_db(&st.dir);
    let keyframes: i64 = db
        .query_row(
            "SELECT count(*) FROM recording_keyframes k JOIN objects o ON o.id = k.object_id WHERE o.session_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(keyframes >= 1);
    agent.goto(&format!("{base}/review?session={id}"));
    agent.click("#open");
    agent.wait_text("#player-status", "recording part");
    agent.click("#play");
    wait_for(
        "the recorded share playing",
        Duration::from_secs(30),
        || {
            agent
                .js(
                    "const v = document.getElementById('video');
                 return !v.hidden && v.videoWidth > 0;",
                    json!([]),
                )
                .as_bool()
                .unwrap_or(false)
        },
    );
}

/// The agent page's painter decodes a photo-like change (a JPEG) and then the lossless refresh
/// the encoder sends once the region is still, ending exactly on the screen's pixels.
fn the_painter_draws_jpeg_then_the_lossless_refresh(agent: &crate::webdriver::Browser<'_>) {
    use base64::Engine;
    use custos::remote::encode::Encoder;
    use custos::remote::platform::Frame;
    use sha2::Digest;
    let (w, h) = (256usize, 256usize);
    let white = vec![0xffu8; w * h * 4];
    let mut photo = white.clone();
    let mut x = 0x9e37_79b9u32;
    for p in photo.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *p = x as u8;
    }
    let mut enc = Encoder::new();
    fn frame(p: &[u8]) -> Frame<'_> {
        Frame {
            width: 256,
            height: 256,
            stride: 256 * 4,
            pixels: p,
        }
    }
    let steps: Vec<(bool, Vec<Vec<u8>>)> = {
        let a = enc.encode(&frame(&white), false);
        let b = enc.encode(&frame(&photo), false);
        assert!(b.jpeg);
        let c = enc.encode(&frame(&photo), false);
        vec![
            (a.jpeg, a.messages),
            (b.jpeg, b.messages),
            (c.jpeg, c.messages),
        ]
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let js_steps: Vec<Vec<String>> = steps
        .iter()
        .map(|(_, ms)| ms.iter().map(|m| b64.encode(m)).collect())
        .collect();
    agent.js(
        "window.__paint = null;
         const steps = arguments[0];
         const c = document.createElement('canvas');
         const painter = new window.CustosPainter(c);
         const buf = (s) => Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0)).buffer;
         const rgb = () => {
           const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
           const out = new Uint8Array(c.width * c.height * 3);
           for (let s = 0, o = 0; s < d.length; s += 4, o += 3) { out[o] = d[s]; out[o + 1] = d[s + 1]; out[o + 2] = d[s + 2]; }
           return out;
         };
         (async () => {
           const notWhite = [];
           for (const step of steps) {
             for (const m of step) await painter.apply(buf(m));
             notWhite.push(rgb().filter((v) => v !== 255).length);
           }
           const h = await crypto.subtle.digest('SHA-256', rgb());
           window.__paint = { notWhite, hash: Array.from(new Uint8Array(h)).map((b) => b.toString(16).padStart(2, '0')).join('') };
         })().catch((e) => { window.__paint = { error: String(e) }; });
         return true;",
        json!([js_steps]),
    );
    let mut result = Value::Null;
    wait_for("the painter", Duration::from_secs(10), || {
        result = agent.js("return window.__paint;", json!([]));
        !result.is_null()
    });
    assert!(result["error"].is_null(), "{result}");
    let not_white = result["notWhite"].as_array().unwrap();
    assert_eq!(not_white[0], 0, "the white keyframe");
    assert!(
        not_white[1].as_u64().unwrap() > (w * h) as u64,
        "the JPEG was drawn: {result}"
    );
    let exact: Vec<u8> = photo
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    assert_eq!(
        result["hash"],
        hex::encode(sha2::Sha256::digest(&exact)),
        "exact after the refresh"
    );
}
