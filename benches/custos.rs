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
    let n = data.len();
    let raw_mb = mbps(n, raw);
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
        }
    } else {
        Sizes {
            archive_bytes: 512 << 20,
            audit_entries: 200_000,
            proof_entries: 1_000_000,
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
    bench_archive(tmp.path(), &sizes, &mut r);
    bench_audit(tmp.path(), &sizes, &mut r);

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
    std::fs::write(root.join("docs/benchmarks.md"), md).unwrap();
    std::fs::write(root.join("docs/benchmarks.json"), json_text).unwrap();
    std::io::stdout().flush().unwrap();
    println!("wrote docs/benchmarks.md and docs/benchmarks.json");
}
