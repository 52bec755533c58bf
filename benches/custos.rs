//! `just bench`: every benchmark in one run, each figure beside a baseline measured in the same
//! run on the same bytes, written to docs/benchmarks.md and docs/benchmarks.json.
//!
//! `--short` (CI) uses small sizes and writes only target/bench-short.json: its numbers prove
//! the harness runs, not what the machine can do.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce};
use custos::archive::Archive;
use custos::audit::{self, Event, merkle};
use custos::crypto::SecretKey;
use custos::keys::Keyring;
use custos::model::DataClass;
use custos::store::Store;
use serde_json::{Value, json};

struct Sizes {
    archive_bytes: usize,
    audit_entries: u64,
    proof_entries: u64,
    sessions: usize,
    /// Sessions synced through the Sessions API.
    sync_sessions: usize,
    /// Subscribers to the monitors stream.
    subscribers: usize,
    /// Webhook deliveries.
    deliveries: usize,
    /// Sessions `custos sync` writes into each target database.
    db_sync_sessions: usize,
}

struct Report {
    rows: Vec<(String, String, String, String)>,
    json: serde_json::Map<String, Value>,
}

impl Report {
    fn add(
        &mut self,
        key: &str,
        what: &str,
        value: String,
        baseline: String,
        ratio: String,
        raw: Value,
    ) {
        println!("{what:<58} {value:>18}   baseline {baseline:>18}   {ratio}");
        self.rows.push((what.into(), value, baseline, ratio));
        self.json.insert(key.into(), raw);
    }
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> (Duration, T)) -> (Duration, T) {
    let mut best = f();
    for _ in 1..n {
        let r = f();
        if r.0 < best.0 {
            best = r;
        }
    }
    best
}

fn raw_aes_gcm(data: &mut [u8]) -> Duration {
    let cipher = Aes256Gcm::new(SecretKey::random().expose().into());
    let t = Instant::now();
    for (i, chunk) in data.chunks_mut(64 * 1024).enumerate() {
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&(i as u64).to_be_bytes());
        let nonce: Nonce<Aes256Gcm> = n.into();
        let tag = cipher
            .encrypt_inout_detached(&nonce, b"", chunk.into())
            .unwrap();
        std::hint::black_box(tag);
    }
    t.elapsed()
}

fn raw_sha256(data: &[u8]) -> Duration {
    let t = Instant::now();
    std::hint::black_box(custos::crypto::sha256(data));
    t.elapsed()
}

fn sha256sum(path: &Path) -> Option<Duration> {
    let t = Instant::now();
    let ok = Command::new("sha256sum")
        .arg(path)
        .output()
        .ok()?
        .status
        .success();
    ok.then(|| t.elapsed())
}

fn bench_archive(dir: &Path, sizes: &Sizes, r: &mut Report) {
    let mut data: Vec<u8> = (0..sizes.archive_bytes)
        .map(|i| (i * 7 + i / 4099) as u8)
        .collect();
    let data_dir = custos::app::DataDir::new(dir.join("archive-bench"));
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

    let (raw, _) = best_of(3, || (raw_aes_gcm(&mut data), ()));
    let (write, id) = best_of(3, || {
        let t = Instant::now();
        let mut w = archive
            .create(&mut store, &keys, None, DataClass::Recording)
            .unwrap();
        // Appends arrive in 16 KiB pieces, as relayed frames would; durable every second.
        for piece in data.chunks(16 * 1024) {
            w.append(piece).unwrap();
            w.sync_if_due(Duration::from_secs(1)).unwrap();
        }
        let id = w.id();
        w.finish(&mut store).unwrap();
        (t.elapsed(), id)
    });
    let (read, _) = best_of(3, || {
        let t = Instant::now();
        let mut rd = archive.open(&mut store, &keys, id).unwrap();
        let mut n = 0;
        while let Some(c) = rd.next_chunk().unwrap() {
            n += c.len();
        }
        assert_eq!(n, data.len());
        (t.elapsed(), ())
    });
    // The disk's own limit: the same bytes written plainly, fdatasync'ed every second.
    let (disk, _) = best_of(3, || {
        use std::io::Write as _;
        let path = dir.join("raw-disk.bin");
        let t = Instant::now();
        let mut f = std::fs::File::create(&path).unwrap();
        let mut last = Instant::now();
        for piece in data.chunks(64 * 1024) {
            f.write_all(piece).unwrap();
            if last.elapsed() >= Duration::from_secs(1) {
                f.sync_data().unwrap();
                last = Instant::now();
            }
        }
        f.sync_all().unwrap();
        let d = t.elapsed();
        let _ = std::fs::remove_file(&path);
        (d, ())
    });
    let n = data.len();
    let raw_mb = mbps(n, raw);
    r.add(
        "disk_write",
        &format!("plain file write, {} MiB, fdatasync every second", n >> 20),
        format!("{:.0} MB/s", mbps(n, disk)),
        String::new(),
        format!(
            "archive write is {:.0}% of it",
            100.0 * mbps(n, write) / mbps(n, disk)
        ),
        json!({ "bytes": n, "mb_s": mbps(n, disk) }),
    );
    r.add(
        "archive_write",
        &format!("archive write, {} MiB, fdatasync every second", n >> 20),
        format!("{:.0} MB/s", mbps(n, write)),
        format!("{raw_mb:.0} MB/s AES-GCM"),
        format!("{:.0}% of raw", 100.0 * mbps(n, write) / raw_mb),
        json!({ "bytes": n, "mb_s": mbps(n, write), "raw_aes_gcm_mb_s": raw_mb }),
    );
    r.add(
        "archive_read",
        &format!("archive read and verify, {} MiB", n >> 20),
        format!("{:.0} MB/s", mbps(n, read)),
        format!("{raw_mb:.0} MB/s AES-GCM"),
        format!("{:.0}% of raw", 100.0 * mbps(n, read) / raw_mb),
        json!({ "bytes": n, "mb_s": mbps(n, read), "raw_aes_gcm_mb_s": raw_mb }),
    );
    let sha = best_of(3, || (raw_sha256(&data), ())).0;
    let file = archive.path_of(id);
    let tool = sha256sum(&file);
    r.add(
        "sha256",
        &format!("SHA-256 (sha2 crate) of {} MiB", n >> 20),
        format!("{:.0} MB/s", mbps(n, sha)),
        tool.map_or("n/a".into(), |d| {
            format!("{:.0} MB/s sha256sum", mbps(n, d))
        }),
        String::new(),
        json!({ "sha2_mb_s": mbps(n, sha), "sha256sum_mb_s": tool.map(|d| mbps(n, d)) }),
    );
}

fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            actor: format!("agent{}", i % 50),
            role: "agent".into(),
            action: "session.message".into(),
            target: format!("session:{}", i / 100),
            outcome: audit::Outcome::Success,
            source: "127.0.0.1".into(),
            details: json!({ "bytes": i % 1000 }),
        })
        .collect()
}

fn bench_audit(dir: &Path, sizes: &Sizes, r: &mut Report) {
    let path = dir.join("audit-bench.db");
    let mut store = Store::open(&path).unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let signer = audit::note::NoteSigner::new("custos/bench", signing);
    let verifier = signer.verifier();
    let batch = 1000u64;
    let all = events(batch);
    let t = Instant::now();
    let mut appended = 0;
    while appended < sizes.audit_entries {
        audit::append(&mut store, &all).unwrap();
        appended += batch;
        if appended % (batch * 20) == 0 {
            audit::checkpoint(&mut store, &signer, "custos/bench").unwrap();
        }
    }
    audit::checkpoint(&mut store, &signer, "custos/bench").unwrap();
    let append = t.elapsed();
    let mut entry_bytes = Vec::new();
    store
        .read(|tx| {
            tx.audit_scan(0, |row| {
                entry_bytes.extend_from_slice(&row.entry);
                Ok(true)
            })
        })
        .unwrap();
    let leaf_baseline = {
        let t = Instant::now();
        let mut f = merkle::Frontier::new();
        for chunk in entry_bytes.chunks(150) {
            f.push(merkle::leaf_hash(chunk));
        }
        std::hint::black_box(f.root());
        t.elapsed()
    };
    let rate = appended as f64 / append.as_secs_f64();
    r.add(
        "audit_append",
        &format!("audit append, {appended} entries in batches of {batch}"),
        format!("{rate:.0} entries/s"),
        format!("{:.0} leaves/s hashing only", appended as f64 / leaf_baseline.as_secs_f64()),
        String::new(),
        json!({ "entries": appended, "entries_s": rate, "hash_only_entries_s": appended as f64 / leaf_baseline.as_secs_f64() }),
    );
    let t = Instant::now();
    let report = audit::verify(&mut store, &verifier, |_, _| {})
        .unwrap()
        .unwrap();
    let verify = t.elapsed();
    assert_eq!(report.entries, appended);
    let sha = raw_sha256(&entry_bytes);
    let n = entry_bytes.len();
    r.add(
        "audit_verify",
        &format!("audit verify, {appended} entries ({} MB)", n / 1_000_000),
        format!("{:.0} entries/s, {:.0} MB/s", appended as f64 / verify.as_secs_f64(), mbps(n, verify)),
        format!("{:.0} MB/s SHA-256", mbps(n, sha)),
        String::new(),
        json!({ "entries_s": appended as f64 / verify.as_secs_f64(), "mb_s": mbps(n, verify), "raw_sha256_mb_s": mbps(n, sha) }),
    );

    // Inclusion proofs in a log of `proof_entries`.
    let path = dir.join("proof-bench.db");
    let mut store = Store::open(&path).unwrap();
    let big = events(10_000);
    let mut size = 0;
    while size < sizes.proof_entries {
        audit::append(&mut store, &big).unwrap();
        size += big.len() as u64;
    }
    let root = store
        .read(|tx| merkle::root(&audit::TreeNodes(tx), size))
        .unwrap();
    let proofs = 1000u64;
    let t = Instant::now();
    let mut bytes = 0;
    store
        .read(|tx| {
            for i in 0..proofs {
                let seq = (i * 7_919_993) % size;
                let p = audit::inclusion_proof(tx, seq, size)?;
                bytes = p.len() * 32;
                let leaf = tx.audit_node(0, seq)?;
                merkle::verify_inclusion(seq, size, &leaf, &p, &root).unwrap();
            }
            Ok(())
        })
        .unwrap();
    let per = t.elapsed() / proofs as u32;
    r.add(
        "inclusion_proof",
        &format!("inclusion proof at {size} entries (make and check)"),
        format!("{:.0} us, {bytes} bytes", per.as_secs_f64() * 1e6),
        String::new(),
        String::new(),
        json!({ "entries": size, "us": per.as_secs_f64() * 1e6, "bytes": bytes }),
    );
}

fn main() {
    let short = std::env::args().any(|a| a == "--short");
    let sizes = if short {
        Sizes {
            archive_bytes: 16 << 20,
            audit_entries: 20_000,
            proof_entries: 50_000,
            sessions: 100,
            sync_sessions: 10_000,
            subscribers: 100,
            deliveries: 200,
            db_sync_sessions: 500,
        }
    } else {
        Sizes {
            archive_bytes: 512 << 20,
            audit_entries: 200_000,
            proof_entries: 1_000_000,
            sessions: 1000,
            sync_sessions: 1_000_000,
            subscribers: 1000,
            deliveries: 2000,
            db_sync_sessions: 20_000,
        }
    };
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut r = Report {
        rows: Vec::new(),
        json: serde_json::Map::new(),
    };
    println!(
        "custos benchmarks ({})",
        if short { "short mode" } else { "full" }
    );
    // `--load-only` runs the load driver alone (`just load`), printing its figures.
    let load_only = std::env::args().any(|a| a == "--load-only");
    let load_plan = if short {
        load::Plan {
            steps: vec![100],
            seconds: 4,
        }
    } else {
        load::Plan {
            steps: vec![500, 1000, 2000, 3500, 5000, 7500, 10_000],
            seconds: 20,
        }
    };
    if load_only {
        load::run(tmp.path(), &load_plan, &mut r);
        return;
    }
    bench_archive(tmp.path(), &sizes, &mut r);
    bench_audit(tmp.path(), &sizes, &mut r);
    sessions::run(tmp.path(), sizes.sessions, &mut r);
    load::run(tmp.path(), &load_plan, &mut r);
    integrations::run(tmp.path(), &sizes, &mut r);
    dbsync::run(tmp.path(), sizes.db_sync_sessions, &mut r);
    remote::run(tmp.path(), short, &mut r);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = custos::model::now_rfc3339();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    r.json.insert(
        "meta".into(),
        json!({ "date": date, "commit": commit, "cpus": cpus, "short": short }),
    );
    let json_text = serde_json::to_string_pretty(&Value::Object(r.json.clone())).unwrap();
    if short {
        std::fs::write(root.join("target").join("bench-short.json"), json_text).unwrap();
        return;
    }
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n").unwrap();
    writeln!(md, "Written by `just bench` (benches/custos.rs) from one run on {date}, commit {commit}, {cpus} CPUs.").unwrap();
    writeln!(md, "Every figure stands beside a baseline measured in the same run on the same bytes; the machine is").unwrap();
    writeln!(md, "shared and noisy, so compare ratios, not absolute numbers, across runs. Raw numbers: benchmarks.json.\n").unwrap();
    writeln!(
        md,
        "| what | measured | baseline (same run) | ratio |\n|---|---|---|---|"
    )
    .unwrap();
    for (what, v, b, ratio) in &r.rows {
        writeln!(md, "| {what} | {v} | {b} | {ratio} |").unwrap();
    }
    writeln!(md, "\nGoals from the issues: archive write and read at least 70% of raw AES-256-GCM on one core while").unwrap();
    writeln!(md, "durable every second. The archive figures include file I/O (page cache plus one fdatasync a second);").unwrap();
    writeln!(
        md,
        "the raw baseline is in-memory encryption with the same `aes-gcm` crate and chunk size."
    )
    .unwrap();
    let aes = r.json["archive_write"]["raw_aes_gcm_mb_s"]
        .as_f64()
        .unwrap_or(0.0);
    let sha = r.json["sha256"]["sha2_mb_s"].as_f64().unwrap_or(0.0);
    if aes > 0.0 && sha > 0.0 {
        let cap = 1.0 / (1.0 / aes + 2.0 / sha);
        writeln!(md, "\nWhy the writer misses the goal: besides encrypting, it computes the SHA-256 of the plaintext and of").unwrap();
        writeln!(md, "the ciphertext (both recorded in the object's metadata and its audit entry). With SHA-256 at {sha:.0} MB/s").unwrap();
        writeln!(md, "and AES-GCM at {aes:.0} MB/s in this run, one core can do all three at no more than {cap:.0} MB/s").unwrap();
        writeln!(md, "({:.0}% of raw) before any I/O. Reading skips the digests (every chunk is authenticated by GCM), so it", 100.0 * cap / aes).unwrap();
        writeln!(
            md,
            "runs close to raw; `custos archive verify` computes them."
        )
        .unwrap();
    }
    if let Some(steps) = r.json["load"]["steps"].as_array() {
        let clean = steps
            .iter()
            .filter(|x| x["errors"] == 0)
            .filter_map(|x| x["sessions"].as_u64())
            .max()
            .unwrap_or(0);
        writeln!(md, "\nLoad (benches/load, `just load`): the count ramps up on one server, and at each step every session").unwrap();
        writeln!(md, "chats for the stated time: the customer writes, the agent sees it (relay), the customer's ack says it").unwrap();
        writeln!(md, "is durable, the agent answers (round trip). The load generator shares the two cores with the server,").unwrap();
        writeln!(md, "which the TLS echo baseline (as many connections, same rate, same process) shows as a floor. The").unwrap();
        writeln!(md, "goal was 5,000 sessions with no errors and a chat p99 under 50 ms; with no errors this run reached {clean}.").unwrap();
        if let Some(b) = steps.iter().find(|x| x["errors"] != 0) {
            writeln!(
                md,
                "At {} sessions it broke: {} errors, the first: `{}`.",
                b["sessions"],
                b["errors"],
                b["first_error"].as_str().unwrap_or("")
            )
            .unwrap();
        }
        writeln!(md, "Each session holds four open files in the server (two sockets, its transcript and events objects), so").unwrap();
        writeln!(md, "a limit of N open files caps it near N/4 sessions: \"Too many open files\" on an archive object leaves a").unwrap();
        writeln!(md, "session relayed but unrecorded (its acks say `recorded: false`). `custos serve` raises its soft limit to").unwrap();
        writeln!(md, "the hard one, and to `fs.nr_open` where it may (`custos supervise` does so as root on the image); the").unwrap();
        writeln!(md, "test machine's containers allow 20,000. A session's first message waits for its archive objects to be").unwrap();
        writeln!(md, "created (a durable database transaction and audit entry each, one writer): when a step adds 1,500").unwrap();
        writeln!(md, "sessions that all start within two seconds, those queue, which is the first-message ack p99.").unwrap();
    }
    if r.json.contains_key("db_sync_sqlite") {
        writeln!(md, "\nWhy `custos sync` is far below a bulk load: it reads each session's detail as a request of its own,").unwrap();
        writeln!(md, "and every read appends its own audit entry in a durable transaction; the baselines load rows the").unwrap();
        writeln!(md, "database already has, with nothing read, checked or audited. Sync counts the session row and its").unwrap();
        writeln!(
            md,
            "form field (two rows a session); the baselines load the session rows alone."
        )
        .unwrap();
    }
    std::fs::write(root.join("docs/benchmarks.md"), md).unwrap();
    std::fs::write(root.join("docs/benchmarks.json"), json_text).unwrap();
    std::io::stdout().flush().unwrap();
    println!("wrote docs/benchmarks.md and docs/benchmarks.json");
}

mod dbsync;
mod integrations;
mod load;
mod remote;

mod sessions {
    //! Sessions through a real server over TLS: queue notification latency, chat round trips
    //! with many concurrent sessions, memory per connected session, file relay throughput.

    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use custos::client::Endpoint;
    use futures_util::{SinkExt, StreamExt};
    use hyper::Method;
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;

    pub struct Server {
        child: Child,
        pub addr: String,
        pub tls: Arc<rustls::ClientConfig>,
        pub fingerprint: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }

    pub fn start(data: &Path) -> (Server, Option<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_custos"))
            .args([
                "--data",
                data.to_str().unwrap(),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .env("CUSTOS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut pw, mut fp) = (None, String::new());
        let addr = loop {
            let line = lines.next().unwrap().unwrap();
            if let Some(p) = line.split("one-time password: ").nth(1) {
                pw = Some(p.trim().to_string());
            }
            if let Some(f) = line.strip_prefix("TLS certificate SHA-256 fingerprint: ") {
                fp = f.to_string();
            }
            if let Some(a) = line.strip_prefix("custos ready https://") {
                break a.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let tls = custos::tls::pinned_client_config(custos::tls::parse_fingerprint(&fp).unwrap())
            .unwrap();
        (
            Server {
                child,
                addr,
                tls,
                fingerprint: fp,
            },
            pw,
        )
    }

    impl Server {
        pub fn ep(&self) -> Endpoint {
            Endpoint::Https {
                addr: self.addr.clone(),
                tls: self.tls.clone(),
            }
        }

        pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Value {
            let r = self
                .ep()
                .request(Method::POST, path, token, Some(&body))
                .await
                .unwrap();
            assert!(r.status < 300, "{path}: {} {}", r.status, r.error_message());
            r.json().unwrap_or(Value::Null)
        }

        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        pub fn rss_kib(&self) -> u64 {
            let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
                .unwrap_or_default();
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        }
    }

    pub type Socket =
        tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

    pub async fn ws(s: &Server, session: &str, auth: String) -> Socket {
        socket(s, &format!("/api/v1/sessions/{session}/ws"), auth).await
    }

    /// The screen socket of a session (remote view).
    pub async fn screen_ws(s: &Server, session: &str, auth: String) -> Socket {
        socket(s, &format!("/api/v1/sessions/{session}/screen"), auth).await
    }

    async fn socket(s: &Server, path: &str, auth: String) -> Socket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut cfg = (*s.tls).clone();
        cfg.alpn_protocols.clear();
        let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let mut req = format!("wss://{}{path}", s.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
        tokio_tungstenite::client_async(req, tls).await.unwrap().0
    }

    pub async fn next_of(sock: &mut Socket, kind: &str) -> Value {
        loop {
            match sock.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == kind {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("socket ended waiting for {kind}: {other:?}"),
            }
        }
    }

    pub fn pct(v: &mut [f64], p: f64) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }

    /// A fresh appliance in `dir/name` where each agent may take 50 sessions, with `agents`
    /// agents (agent0, agent1, …, password [`AGENT_PW`]), started.
    pub fn desk(dir: &Path, name: &str, agents: usize) -> Server {
        let data = dir.join(name);
        let (s, _) = start(&data);
        drop(s);
        let cfg = data.join("custos.toml");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("max_per_agent = 4", "max_per_agent = 50");
        std::fs::write(&cfg, text).unwrap();
        let pwfile = dir.join("agentpw");
        std::fs::write(&pwfile, format!("{AGENT_PW}\n")).unwrap();
        for i in 0..agents {
            let ok = Command::new(env!("CARGO_BIN_EXE_custos"))
                .args([
                    "--data",
                    data.to_str().unwrap(),
                    "user",
                    "add",
                    &format!("agent{i}"),
                    "--role",
                    "agent",
                ])
                .args([
                    "--password-file",
                    pwfile.to_str().unwrap(),
                    "--skills",
                    "support:general",
                ])
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok);
        }
        start(&data).0
    }

    pub const AGENT_PW: &str = "bench agent password";

    /// Logs agent0 … agent(n-1) in and returns their tokens.
    pub async fn agent_tokens(s: &Server, n: usize) -> Vec<String> {
        let mut tokens = Vec::new();
        for i in 0..n {
            let v = s
                .post(
                    "/api/v1/auth/login",
                    None,
                    json!({ "name": format!("agent{i}"), "password": AGENT_PW }),
                )
                .await;
            tokens.push(v["token"].as_str().unwrap().to_string());
        }
        tokens
    }

    pub fn run(dir: &Path, sessions: usize, r: &mut super::Report) {
        // One more agent than needed, for the file relay session.
        let agents = sessions.div_ceil(50) + 1;
        let s = desk(dir, "sessions-bench", agents);
        let (data, pwfile) = (dir.join("sessions-bench"), dir.join("agentpw"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let file_session = rt.block_on(async {
            let tokens = agent_tokens(&s, agents).await;
            // Queue `sessions` requests, then time how fast a new one reaches an agent's console.
            let mut reqs = Vec::new();
            for i in 0..sessions {
                let v = s.post("/api/v1/requests", None, json!({ "portal": "support", "name": format!("c{i}"), "question": "bench" })).await;
                reqs.push((v["request_id"].as_str().unwrap().to_string(), v["customer_token"].as_str().unwrap().to_string()));
            }
            let mut sse = sse_stream(&s, &tokens[0]).await;
            let mut notify = Vec::new();
            for i in 0..50 {
                let t = Instant::now();
                let v = s.post("/api/v1/requests", None, json!({ "portal": "support", "name": format!("late{i}"), "question": "bench" })).await;
                let id = v["request_id"].as_str().unwrap().to_string();
                while !sse.next_event().await.contains(&id) {}
                notify.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            drop(sse);
            let (p50, p99) = (pct(&mut notify, 0.5), pct(&mut notify, 0.99));
            r.add(
                "queue_notify",
                &format!("request to agent console (SSE), {sessions} to {} queued", sessions + 50),
                format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
                String::new(),
                String::new(),
                json!({ "queued": sessions, "p50_ms": p50, "p99_ms": p99 }),
            );

            // Every agent accepts their share, both sides connect.
            for (i, (id, _)) in reqs.iter().enumerate() {
                s.post(&format!("/api/v1/requests/{id}/accept"), Some(&tokens[i / 50]), json!({})).await;
            }
            let rss0 = s.rss_kib();
            let mut pairs = Vec::new();
            for (i, (id, ctok)) in reqs.iter().enumerate() {
                let mut c = ws(&s, id, format!("Customer {ctok}")).await;
                let mut a = ws(&s, id, format!("Bearer {}", tokens[i / 50])).await;
                next_of(&mut c, "hello").await;
                next_of(&mut a, "hello").await;
                pairs.push((c, a));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let rss1 = s.rss_kib();
            let per = (rss1.saturating_sub(rss0)) as f64 / sessions as f64;
            r.add(
                "memory_per_session",
                &format!("server memory per connected session ({sessions}, two sockets each)"),
                format!("{per:.0} KiB"),
                String::new(),
                String::new(),
                json!({ "sessions": sessions, "kib_per_session": per, "rss_before_kib": rss0, "rss_after_kib": rss1 }),
            );

            // Chat round trips, all sessions at once: customer → agent → reply → customer.
            let rounds = 5;
            let mut tasks = Vec::new();
            for (mut c, mut a) in pairs {
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    for k in 0..rounds {
                        let t = Instant::now();
                        c.send(Message::Text(json!({ "type": "chat", "text": format!("ping {k}") }).to_string().into())).await.unwrap();
                        next_of(&mut a, "chat").await;
                        a.send(Message::Text(json!({ "type": "chat", "text": format!("pong {k}") }).to_string().into())).await.unwrap();
                        loop {
                            let v = next_of(&mut c, "chat").await;
                            if v["from"] == "agent" {
                                break;
                            }
                        }
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            let (p50, p99) = (pct(&mut all, 0.5), pct(&mut all, 0.99));
            r.add(
                "chat_rtt",
                &format!("chat round trip through the relay, {sessions} concurrent sessions"),
                format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
                String::new(),
                String::new(),
                json!({ "sessions": sessions, "messages": all.len(), "p50_ms": p50, "p99_ms": p99 }),
            );

            // File relay into the archive against raw loopback TCP on the same bytes.
            let size = 64 << 20;
            let payload = vec![7u8; size];
            let (id, ctok) = {
                let v = s.post("/api/v1/requests", None, json!({ "portal": "support", "name": "f", "question": "bench" })).await;
                (v["request_id"].as_str().unwrap().to_string(), v["customer_token"].as_str().unwrap().to_string())
            };
            s.post(&format!("/api/v1/requests/{id}/accept"), Some(&tokens[agents - 1]), json!({})).await;
            let t = Instant::now();
            upload(&s, &id, &ctok, payload.clone()).await;
            let up = t.elapsed();
            let raw = raw_tcp(&payload).await;
            let (a, b) = (size as f64 / up.as_secs_f64() / 1e6, size as f64 / raw.as_secs_f64() / 1e6);
            r.add(
                "file_relay",
                &format!("file into a session ({} MiB, TLS, encrypted, durable)", size >> 20),
                format!("{a:.0} MB/s"),
                format!("{b:.0} MB/s raw loopback TCP"),
                format!("{:.0}% of raw", 100.0 * a / b),
                json!({ "bytes": size, "mb_s": a, "raw_tcp_mb_s": b }),
            );
            // Exports take ended sessions only.
            s.post(&format!("/api/v1/sessions/{id}/end"), Some(&tokens[agents - 1]), json!({})).await;
            id
        });
        drop(s);
        export_and_verify(dir, &data, &pwfile, &file_session, r);
    }

    /// Export the session holding the big file, verify the bundle, and hash it with sha256sum.
    fn export_and_verify(
        dir: &Path,
        data: &Path,
        pwfile: &Path,
        session: &str,
        r: &mut super::Report,
    ) {
        let custos = |args: &[&str]| {
            let t = Instant::now();
            let ok = Command::new(env!("CARGO_BIN_EXE_custos"))
                .arg("--data")
                .arg(data)
                .args(args)
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "custos {args:?}");
            t.elapsed()
        };
        custos(&[
            "user",
            "add",
            "benchofficer",
            "--role",
            "compliance",
            "--password-file",
            pwfile.to_str().unwrap(),
        ]);
        let bundle = dir.join("bench-export.tar");
        let ex = custos(&[
            "export",
            "--session",
            session,
            "--out",
            bundle.to_str().unwrap(),
            "--reason",
            "benchmark",
            "--user",
            "benchofficer",
            "--password-file",
            pwfile.to_str().unwrap(),
        ]);
        let n = std::fs::metadata(&bundle).unwrap().len() as f64;
        let t = Instant::now();
        let ok = Command::new(env!("CARGO_BIN_EXE_custos"))
            .arg("verify")
            .arg(&bundle)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let ver = t.elapsed();
        let t = Instant::now();
        let ok = Command::new("sha256sum")
            .arg(&bundle)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let sha = ok.then(|| t.elapsed());
        let mb = |d: Duration| n / d.as_secs_f64() / 1e6;
        let base = sha.map_or("n/a".to_string(), |d| {
            format!("{:.0} MB/s sha256sum", mb(d))
        });
        let ratio = |d: Duration| {
            sha.map_or(String::new(), |s| {
                format!("{:.0}% of sha256sum", 100.0 * mb(d) / mb(s))
            })
        };
        r.add(
            "export",
            &format!(
                "custos export, {:.0} MB bundle (decrypt, hash, sign, write)",
                n / 1e6
            ),
            format!("{:.0} MB/s", mb(ex)),
            base.clone(),
            ratio(ex),
            json!({ "bytes": n, "mb_s": mb(ex), "sha256sum_mb_s": sha.map(mb) }),
        );
        r.add(
            "verify",
            &format!("custos verify, {:.0} MB bundle", n / 1e6),
            format!("{:.0} MB/s", mb(ver)),
            base,
            ratio(ver),
            json!({ "bytes": n, "mb_s": mb(ver), "sha256sum_mb_s": sha.map(mb) }),
        );
    }

    async fn upload(s: &Server, id: &str, token: &str, body: Vec<u8>) {
        use http_body_util::{BodyExt, Full};
        let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(s.tls.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method("POST")
            .uri(format!("/api/v1/sessions/{id}/files?name=bench.bin"))
            .header("host", "localhost")
            .header("authorization", format!("Customer {token}"))
            .body(Full::new(hyper::body::Bytes::from(body)))
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.status(), 201);
        let _ = res.into_body().collect().await;
    }

    async fn raw_tcp(data: &[u8]) -> Duration {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let n = data.len();
        let sink = tokio::spawn(async move {
            let (mut c, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < n {
                got += c.read(&mut buf).await.unwrap();
            }
        });
        let t = Instant::now();
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        for chunk in data.chunks(64 * 1024) {
            c.write_all(chunk).await.unwrap();
        }
        sink.await.unwrap();
        t.elapsed()
    }

    pub struct Sse {
        body: hyper::body::Incoming,
        buf: String,
    }

    async fn sse_stream(s: &Server, token: &str) -> Sse {
        sse_at(s, token, "/api/v1/queue/stream").await
    }

    /// An event stream at `path` over its own TLS connection.
    pub async fn sse_at(s: &Server, token: &str, path: &str) -> Sse {
        let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(s.tls.clone())
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .uri(path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        Sse {
            body: res.into_body(),
            buf: String::new(),
        }
    }

    impl Sse {
        /// The data of the next event.
        pub async fn next_event(&mut self) -> String {
            use http_body_util::BodyExt;
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let ev: String = self.buf.drain(..end + 2).collect();
                    return ev;
                }
                let frame = self.body.frame().await.unwrap().unwrap();
                if let Ok(d) = frame.into_data() {
                    self.buf.push_str(&String::from_utf8_lossy(&d));
                }
            }
        }
    }
}
