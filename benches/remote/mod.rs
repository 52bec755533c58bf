//! Remote view: capture and encode at 1920x1080 (static screen, typing, scrolling, a photo), the
//! agent's click to the injected event through the real relay and client, bandwidth of a typical
//! minute, and seeking in a one-hour recording.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use custos::archive::Archive;
use custos::crypto::SecretKey;
use custos::keys::Keyring;
use custos::model::DataClass;
use custos::remote::encode::Encoder;
use custos::remote::platform::{Frame, Platform};
use custos::session::screen::{REC_SCREEN, read_records, write_record};
use custos::store::Store;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const W: usize = 1920;
const H: usize = 1080;

fn frame(p: &[u8]) -> Frame<'_> {
    Frame {
        width: W as u16,
        height: H as u16,
        stride: W * 4,
        pixels: p,
    }
}

/// A terminal-like screen: dark glyph patterns in 8x16 cells on white; `shift` scrolls it by
/// whole text rows.
fn text_screen(shift: usize) -> Vec<u8> {
    let mut p = vec![0xffu8; W * H * 4];
    for cy in 0..H / 16 {
        for cx in 0..W / 8 {
            let seed = ((cy + shift) * 7919 + cx * 104_729) % 97;
            if seed.is_multiple_of(3) || cx > 100 + seed {
                continue;
            }
            glyph(&mut p, cx, cy, seed);
        }
    }
    p
}

fn glyph(p: &mut [u8], cx: usize, cy: usize, seed: usize) {
    for y in 2..14 {
        for x in 1..7 {
            let on = (x * 3 + y * seed) % 5 < 2;
            let i = ((cy * 16 + y) * W + cx * 8 + x) * 4;
            let v = if on { 0x20 } else { 0xff };
            p[i..i + 3].copy_from_slice(&[v, v, v]);
        }
    }
}

fn noise(p: &mut [u8], seed: u32) {
    let mut x = seed | 1;
    for y in 100..700 {
        for b in &mut p[(y * W + 100) * 4..(y * W + 900) * 4] {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Xvfb(Child, String);

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn xvfb() -> Option<Xvfb> {
    let n = (150..250).find(|n| !Path::new(&format!("/tmp/.X{n}-lock")).exists())?;
    let display = format!(":{n}");
    let child = Command::new("Xvfb")
        .args([
            display.as_str(),
            "-screen",
            "0",
            "1920x1080x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    while !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists() {
        if start.elapsed() > Duration::from_secs(20) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Xvfb(child, display))
}

pub fn run(dir: &Path, short: bool, r: &mut super::Report) {
    let frames = if short { 8 } else { 60 };
    let x = xvfb();
    if x.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Xvfb is required in CI for the remote view benchmark"
        );
        println!("*** remote view: Xvfb is not installed; capture and click latency skipped ***");
    }
    // Capture: MIT-SHM at 1920x1080.
    let capture_ms = x.as_ref().map(|x| {
        let mut p = custos::remote::x11::X11::open(Some(&x.1)).unwrap();
        assert!(p.uses_shm(), "Xvfb offers MIT-SHM");
        p.capture().unwrap();
        let t = Instant::now();
        for _ in 0..frames {
            p.capture().unwrap();
        }
        ms(t.elapsed()) / frames as f64
    });

    let raw_frame = (W * H * 3) as f64;
    let base = text_screen(0);
    let scenarios: [(&str, &str); 4] = [
        ("static", "static screen"),
        ("typing", "typing"),
        ("scrolling", "scrolling a terminal"),
        ("photo", "a photo changing every frame"),
    ];
    for (key, what) in scenarios {
        let mut enc = Encoder::new();
        enc.encode(&frame(&base), true);
        let inputs: Vec<Vec<u8>> = (1..=frames)
            .map(|i| match key {
                "static" => base.clone(),
                "typing" => {
                    let mut p = base.clone();
                    for k in 0..i {
                        glyph(&mut p, 2 + k % 150, 40, 11);
                    }
                    p
                }
                "scrolling" => text_screen(i),
                _ => {
                    let mut p = base.clone();
                    noise(&mut p, i as u32 * 7919);
                    p
                }
            })
            .collect();
        let t = Instant::now();
        let mut bytes = 0usize;
        for p in &inputs {
            let e = enc.encode(&frame(p), false);
            bytes += e.messages.iter().map(Vec::len).sum::<usize>();
        }
        let encode_ms = ms(t.elapsed()) / frames as f64;
        let per_frame = bytes as f64 / frames as f64;
        let total_ms = encode_ms + capture_ms.unwrap_or(0.0);
        r.add(
            &format!("remote_{key}"),
            &format!("Remote view 1920x1080, {what}: capture + encode"),
            format!(
                "{:.0} fps, {:.1} KB/frame",
                1000.0 / total_ms.max(0.001),
                per_frame / 1000.0
            ),
            format!("raw frame {:.0} KB", raw_frame / 1000.0),
            format!(
                "{:.4}x size; capture {} ms + encode {:.2} ms",
                per_frame / raw_frame,
                capture_ms.map_or("n/a".into(), |c| format!("{c:.2}")),
                encode_ms
            ),
            json!({ "capture_ms": capture_ms, "encode_ms": encode_ms, "bytes_per_frame": per_frame,
                    "raw_frame_bytes": raw_frame, "frames": frames }),
        );
    }

    bandwidth(short, r);
    seek(dir, short, r);
    if let Some(x) = &x {
        click_latency(dir, &x.1, short, r);
    }
}

/// A typical minute at 15 frames a second: reading (still), typing, a few scrolls, a photo.
fn bandwidth(short: bool, r: &mut super::Report) {
    let seconds = if short { 10 } else { 60 };
    let fps = 15;
    let mut enc = Encoder::new();
    let mut screen = text_screen(0);
    let mut bytes = 0usize;
    let mut shift = 0;
    let t = Instant::now();
    for f in 0..seconds * fps {
        let s = f / fps;
        match s % 60 {
            // Typing: a character every 200 ms.
            0..=29 if f % 3 == 0 => glyph(&mut screen, 2 + (f / 3) % 150, 60, 13),
            // Scrolling: a line every 500 ms.
            30..=44 if f % 7 == 0 => {
                shift += 1;
                screen = text_screen(shift);
            }
            // A photo shown for a second, then still.
            50 if f % fps == 0 => noise(&mut screen, f as u32),
            _ => {}
        }
        let e = enc.encode(&frame(&screen), f == 0);
        bytes += e.messages.iter().map(Vec::len).sum::<usize>();
    }
    let per_min = bytes as f64 * 60.0 / seconds as f64;
    let raw = (W * H * 3 * fps * 60) as f64;
    r.add(
        "remote_bandwidth",
        "Remote view: bandwidth of a typical minute (synthetic: typing, scrolling, a photo)",
        format!("{:.1} MB/min", per_min / 1e6),
        format!("raw frames {:.0} MB/min", raw / 1e6),
        format!(
            "{:.5}x; encoding took {:.1}% of real time",
            per_min / raw,
            t.elapsed().as_secs_f64() / seconds as f64 * 100.0
        ),
        json!({ "bytes_per_minute": per_min, "raw_bytes_per_minute": raw, "seconds_simulated": seconds }),
    );
}

/// An hour of recording (keyframes every 10 s, typing at 15 frames a second between them),
/// written through the archive; then seeks to random moments, each reading from the keyframe
/// before it, against reading the whole recording.
fn seek(dir: &Path, short: bool, r: &mut super::Report) {
    let seconds: u64 = if short { 120 } else { 3600 };
    let data_dir = custos::app::DataDir::new(dir.join("recording-bench"));
    std::fs::create_dir_all(data_dir.root()).unwrap();
    let mut store = Store::open(&data_dir.db_path()).unwrap();
    let keys = Keyring::new(SecretKey::random());
    store
        .write(|tx| {
            keys.initialize(tx, "now")
                .map(|_| ())
                .map_err(|e| custos::store::StoreError::Corrupt(e.to_string()))
        })
        .unwrap();
    let archive = Archive::new(&data_dir.archive_dir());
    std::fs::create_dir_all(archive.root()).unwrap();
    let mut w = archive
        .create(&mut store, &keys, None, DataClass::Recording)
        .unwrap();
    let mut enc = Encoder::new();
    let mut screen = text_screen(0);
    let mut index = Vec::new();
    let t0 = 1_700_000_000_000_000u64;
    for f in 0..seconds * 15 {
        let at = t0 + f * 1_000_000 / 15;
        let key = f % 150 == 0;
        if f % 3 == 0 {
            glyph(
                &mut screen,
                2 + (f as usize / 3) % 150,
                20 + (f as usize / 450) % 40,
                5,
            );
        }
        let e = enc.encode(&frame(&screen), key);
        for (i, m) in e.messages.iter().enumerate() {
            if key && i == 0 {
                index.push((at / 1000, w.plain_len()));
            }
            write_record(&mut w, at, REC_SCREEN, m).unwrap();
        }
        w.sync_if_due(Duration::from_secs(1)).unwrap();
    }
    let id = w.id();
    let len = w.plain_len();
    w.finish(&mut store).unwrap();

    // Reading it all, as a player without an index would.
    let t = Instant::now();
    let mut whole = archive.open(&mut store, &keys, id).unwrap();
    let mut n = 0;
    while let Some(c) = whole.next_chunk().unwrap() {
        n += c.len();
    }
    assert_eq!(n as u64, len);
    let full_ms = ms(t.elapsed());

    let seeks = if short { 5 } else { 20 };
    let mut times = Vec::new();
    let mut x = 12345u64;
    for _ in 0..seeks {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let target = t0 / 1000 + (x >> 33) % (seconds * 1000);
        let t = Instant::now();
        let mut rd = archive.open_seekable(&mut store, &keys, id).unwrap();
        let (_, off) = index
            .iter()
            .rev()
            .find(|(at, _)| *at <= target)
            .copied()
            .unwrap_or((0, 0));
        // Records from the keyframe up to the target, in the player's 1 MiB pieces.
        let mut at = off;
        'read: loop {
            let (buf, next) = read_records(&mut rd, at, 1 << 20).unwrap();
            let mut i = 0;
            while i + 13 <= buf.len() {
                let l = u32::from_le_bytes(buf[i..i + 4].try_into().unwrap()) as usize;
                let when = u64::from_le_bytes(buf[i + 4..i + 12].try_into().unwrap()) / 1000;
                if when > target {
                    break 'read;
                }
                i += 4 + l;
            }
            if next >= len || next == at {
                break;
            }
            at = next;
        }
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let worst = times[times.len() - 1];
    r.add(
        "recording_seek",
        &format!(
            "Seek in a {}-minute recording ({:.0} MB)",
            seconds / 60,
            len as f64 / 1e6
        ),
        format!("{median:.1} ms median, {worst:.1} ms worst"),
        format!("reading it all {full_ms:.0} ms"),
        format!("{:.1}x faster", full_ms / median),
        json!({ "seek_ms_median": median, "seek_ms_worst": worst, "full_read_ms": full_ms,
                "bytes": len, "seconds": seconds, "keyframes": index.len() }),
    );
}

/// The agent's pointer move, from the viewer's socket through the relay and the client to the X
/// server, timed until the X server reports the pointer there.
fn click_latency(dir: &Path, display: &str, short: bool, r: &mut super::Report) {
    let data = dir.join("remote-bench");
    let (s, pw) = super::sessions::start(&data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(super::integrations::admin_token(&s, &pw.unwrap()));
    let code = rt.block_on(s.post("/api/v1/codes", Some(&admin), json!({})))["code"]
        .as_str()
        .unwrap()
        .replace(' ', "");
    let fingerprint = s.fingerprint.clone();
    let mut client = Command::new(env!("CARGO_BIN_EXE_custos-client"))
        .args([
            "--server",
            &s.addr,
            "--code",
            &code,
            "--fingerprint",
            &fingerprint,
            "--allow",
            "view,control",
            "--no-ask",
            "--display",
            display,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let session = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let q = rt.block_on(async {
                s.ep()
                    .request(hyper::Method::GET, "/api/v1/queue", Some(&admin), None)
                    .await
                    .unwrap()
                    .json()
                    .unwrap()
            });
            if let Some(id) = q["sessions"][0]["session_id"].as_str() {
                break id.to_string();
            }
            assert!(Instant::now() < deadline, "the client never joined");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut pointer = custos::remote::x11::X11::open(Some(display)).unwrap();
    let n = if short { 10 } else { 100 };
    let mut times = rt.block_on(async {
        let mut ws = super::sessions::screen_ws(&s, &session, format!("Bearer {admin}")).await;
        let hello = loop {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                break serde_json::from_str::<Value>(&t).unwrap();
            }
        };
        if hello["sharer"] != true {
            until(&mut ws, "sharer", |v| v["on"] == true).await;
        }
        ws.send(Message::Text(
            json!({"type": "control", "on": true}).to_string().into(),
        ))
        .await
        .unwrap();
        until(&mut ws, "control", |v| v["on"] == true).await;
        // Input needs the screen's size: wait for the first picture.
        while !matches!(ws.next().await, Some(Ok(Message::Binary(_))) | None) {}
        // Keep draining frames in the background so the relay never stalls on this viewer.
        let (mut sink, mut stream) = ws.split();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m
                    && t.contains("\"error\"")
                {
                    eprintln!("remote benchmark: the relay refused: {t}");
                }
            }
        });
        let mut times = Vec::new();
        for i in 0..n {
            let (x, y) = (100 + (i % 2) * 500, 100 + (i % 3) * 200);
            let msg = json!({"type": "input", "e": "move", "x": x, "y": y}).to_string();
            let t = Instant::now();
            sink.send(Message::Text(msg.into())).await.unwrap();
            loop {
                if pointer.pointer().unwrap() == (x as u16, y as u16) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(5),
                    "the move never arrived"
                );
                tokio::task::yield_now().await;
            }
            times.push(ms(t.elapsed()));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times
    });
    let _ = client.kill();
    let _ = client.wait();
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let p99 = times[(times.len() as f64 * 0.99) as usize].max(p50);
    let rtt = rt.block_on(loopback_rtt_ms());
    r.add(
        "remote_input_latency",
        "Remote view: agent input to injected event (relay, client, XTEST)",
        format!("{p50:.2} ms p50, {p99:.2} ms p99"),
        format!("raw loopback TCP round trip {rtt:.3} ms"),
        format!("{:.0}x", p50 / rtt.max(0.001)),
        json!({ "p50_ms": p50, "p99_ms": p99, "samples": times.len(), "loopback_rtt_ms": rtt }),
    );
}

/// Waits (up to 20 s) for a message of type `kind` that satisfies `pred`.
async fn until(ws: &mut super::sessions::Socket, kind: &str, pred: fn(&Value) -> bool) {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == kind && pred(&v) {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("screen socket ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("no {kind} message within 20 s"));
}

/// The median round trip of a small message over raw loopback TCP.
async fn loopback_rtt_ms() -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = [0u8; 64];
        while let Ok(n) = s.read(&mut b).await {
            if n == 0 || s.write_all(&b[..n]).await.is_err() {
                break;
            }
        }
    });
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let mut b = [0u8; 64];
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        c.write_all(&[7u8; 64]).await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
