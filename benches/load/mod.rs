//! The load driver: N concurrent support sessions, each a customer and an agent on their own TLS
//! WebSockets to a real server on loopback, chatting at a steady rate. The count ramps up in
//! steps on one server; at each step every session chats for a bounded time, and the step
//! reports relay and durable-ack latency percentiles, errors, and the server's CPU and memory.
//! The ramp stops at the first step that breaks (any error, or a p99 over a second). Beside it, a
//! TLS-only echo with as many connections at the same rate, in the same run: the floor that TLS,
//! the kernel and this load generator (which shares the two cores) put under any relay.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::sessions::{Server, Socket, agent_tokens, desk, pct, ws};

/// Each session sends a chat message this often (customer and agent take turns answering).
const INTERVAL: Duration = Duration::from_secs(2);
/// A wait this long for a message is an error.
const PATIENCE: Duration = Duration::from_secs(10);
/// Sockets opened at once while ramping up.
const CONNECTING: usize = 32;

pub struct Plan {
    pub steps: Vec<usize>,
    /// How long every session chats at each step.
    pub seconds: u64,
}

#[derive(Default)]
struct Samples {
    relay_ms: Vec<f64>,
    /// Acks of a session's first message, which opens its archive objects (a durable database
    /// transaction and audit entry each), and of the messages after it.
    first_ack_ms: Vec<f64>,
    ack_ms: Vec<f64>,
    rtt_ms: Vec<f64>,
    errors: Vec<String>,
}

/// User and system CPU seconds the process has used.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// One session's customer and agent sockets.
struct Pair {
    c: Socket,
    a: Socket,
}

async fn until(sock: &mut Socket, pred: impl Fn(&Value) -> bool) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(PATIENCE, sock.next()).await {
            Err(_) => return Err("no answer within 10 s".into()),
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["type"] == "error" {
                    return Err(format!("refused: {v}"));
                }
                if pred(&v) {
                    return Ok(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => return Err(format!("socket ended: {other:?}")),
        }
    }
}

fn ack_of(s: &mut Samples, k: u64) -> &mut Vec<f64> {
    if k == 0 {
        &mut s.first_ack_ms
    } else {
        &mut s.ack_ms
    }
}

/// One round: the customer writes, the agent sees it (relay), the customer's ack says it is
/// durable (ack), the agent answers and the customer sees the answer (round trip).
async fn round(p: &mut Pair, k: u64, s: &mut Samples) -> Result<(), String> {
    let id = format!("m{k}");
    let t = Instant::now();
    let text = json!({ "type": "chat", "text": format!("load {k}"), "id": id });
    p.c.send(Message::Text(text.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    until(&mut p.a, |v| v["type"] == "chat" && v["from"] == "customer").await?;
    s.relay_ms.push(t.elapsed().as_secs_f64() * 1e3);
    let reply = json!({ "type": "chat", "text": format!("answer {k}") });
    p.a.send(Message::Text(reply.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let (mut acked, mut answered) = (false, false);
    while !(acked && answered) {
        let v = until(&mut p.c, |v| {
            (!acked && v["type"] == "ack" && v["id"] == id.as_str())
                || (!answered && v["type"] == "chat" && v["from"] == "agent")
        })
        .await?;
        if v["type"] == "ack" {
            if v["recorded"] != true {
                return Err(format!("not recorded: {v}"));
            }
            ack_of(s, k).push(t.elapsed().as_secs_f64() * 1e3);
            acked = true;
        } else {
            s.rtt_ms.push(t.elapsed().as_secs_f64() * 1e3);
            answered = true;
        }
    }
    Ok(())
}

/// Every pair chats for `seconds`, starting at evenly spread moments. Returns the pairs that
/// are still healthy and the samples.
async fn chat_phase(pairs: Vec<Pair>, seconds: u64) -> (Vec<Pair>, Samples) {
    let n = pairs.len().max(1);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, mut p) in pairs.into_iter().enumerate() {
        let offset = INTERVAL.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            tokio::time::sleep(offset).await;
            let mut next = Instant::now();
            let mut k = 0;
            while next < end {
                if let Err(e) = round(&mut p, k, &mut s).await {
                    s.errors.push(e);
                    return (None, s);
                }
                k += 1;
                next += INTERVAL;
                tokio::time::sleep_until(next.into()).await;
            }
            (Some(p), s)
        }));
    }
    let mut all = Samples::default();
    let mut alive = Vec::new();
    for t in tasks {
        let (p, s) = t.await.expect("a session task panicked");
        alive.extend(p);
        all.relay_ms.extend(s.relay_ms);
        all.ack_ms.extend(s.ack_ms);
        all.first_ack_ms.extend(s.first_ack_ms);
        all.rtt_ms.extend(s.rtt_ms);
        all.errors.extend(s.errors);
    }
    (alive, all)
}

/// Opens `n` more sessions: requests, accepted by agents 50 at a time, both sockets connected.
async fn open_sessions(
    s: &Arc<Server>,
    tokens: &[String],
    from: usize,
    n: usize,
) -> (Vec<Pair>, Vec<String>) {
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut tasks = Vec::new();
    for i in from..from + n {
        let (s, gate, token) = (s.clone(), gate.clone(), tokens[i / 50].clone());
        tasks.push(tokio::spawn(async move {
            let _slot = gate.acquire().await.unwrap();
            let r = s.ep().request(hyper::Method::POST, "/api/v1/requests", None, Some(&json!({ "portal": "support", "name": format!("c{i}"), "question": "load" }))).await.map_err(|e| e.to_string())?;
            if r.status != 201 {
                return Err(format!("request: {} {}", r.status, r.error_message()));
            }
            let v = r.json().map_err(|e| e.to_string())?;
            let (id, ctok) = (v["request_id"].as_str().unwrap_or_default().to_string(), v["customer_token"].as_str().unwrap_or_default().to_string());
            let r = s.ep().request(hyper::Method::POST, &format!("/api/v1/requests/{id}/accept"), Some(&token), Some(&json!({}))).await.map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!("accept: {} {}", r.status, r.error_message()));
            }
            let mut c = ws(&s, &id, format!("Customer {ctok}")).await;
            let mut a = ws(&s, &id, format!("Bearer {token}")).await;
            until(&mut c, |v| v["type"] == "hello").await?;
            until(&mut a, |v| v["type"] == "hello").await?;
            Ok(Pair { c, a })
        }));
    }
    let (mut pairs, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await {
            Ok(Ok(p)) => pairs.push(p),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("connecting panicked: {e}")),
        }
    }
    (pairs, errors)
}

/// The baseline: `n` TLS connections to an echo server in this process, one 100-byte message
/// each per interval, for `seconds`. Returns round-trip times.
async fn tls_echo(dir: &Path, n: usize, seconds: u64) -> (Vec<f64>, usize) {
    // The appliance's own TLS configuration (suites, versions) on a certificate like its own.
    let g = custos::tls::generate_self_signed(&[]).unwrap();
    let (cert, key) = (dir.join("echo-cert.pem"), dir.join("echo-key.pem"));
    std::fs::write(&cert, &g.cert_pem).unwrap();
    std::fs::write(&key, &g.key_pem).unwrap();
    let server = custos::tls::server_config(&cert, &key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 256];
                while let Ok(k) = tls.read(&mut buf).await {
                    if k == 0 || tls.write_all(&buf[..k]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let fp = custos::tls::parse_fingerprint(&g.fingerprint).unwrap();
    let client = custos::tls::pinned_client_config(fp).unwrap();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut conns = Vec::new();
    for _ in 0..n {
        let (client, gate) = (client.clone(), gate.clone());
        conns.push(tokio::spawn(async move {
            let _slot = gate.acquire().await.unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            tokio_rustls::TlsConnector::from(client)
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .ok()
        }));
    }
    let mut streams = Vec::new();
    let mut failed = 0;
    for c in conns {
        match c.await.unwrap() {
            Some(s) => streams.push(s),
            None => failed += 1,
        }
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let total = streams.len().max(1);
    let mut tasks = Vec::new();
    for (i, mut st) in streams.into_iter().enumerate() {
        let offset = INTERVAL.mul_f64(i as f64 / total as f64);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            tokio::time::sleep(offset).await;
            let mut next = Instant::now();
            let msg = [b'x'; 100];
            let mut buf = [0u8; 100];
            while next < end {
                let t = Instant::now();
                if st.write_all(&msg).await.is_err() || st.read_exact(&mut buf).await.is_err() {
                    return (out, 1);
                }
                out.push(t.elapsed().as_secs_f64() * 1e3);
                next += INTERVAL;
                tokio::time::sleep_until(next.into()).await;
            }
            (out, 0)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let (v, e) = t.await.unwrap();
        all.extend(v);
        failed += e;
    }
    srv.abort();
    (all, failed)
}

pub fn run(dir: &Path, plan: &Plan, r: &mut super::Report) {
    let max = *plan.steps.iter().max().unwrap_or(&0);
    let limit = custos::app::raise_open_file_limit();
    println!("load: up to {max} sessions, open-file limit {limit}");
    let s = Arc::new(desk(dir, "load-bench", max.div_ceil(50)));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pid = s.pid();
    let mut steps = Vec::new();
    rt.block_on(async {
        let tokens = agent_tokens(&s, max.div_ceil(50)).await;
        let mut pairs: Vec<Pair> = Vec::new();
        let mut opened = 0;
        for &n in &plan.steps {
            let t = Instant::now();
            let (more, mut errors) = open_sessions(&s, &tokens, opened, n - opened).await;
            let ramp_s = t.elapsed().as_secs_f64();
            opened = n;
            pairs.extend(more);
            let connected = pairs.len();
            let (cpu0, t0) = (cpu_s(pid), Instant::now());
            let (alive, mut smp) = chat_phase(std::mem::take(&mut pairs), plan.seconds).await;
            let cpu = (cpu_s(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
            pairs = alive;
            errors.append(&mut smp.errors);
            let rss_mib = s.rss_kib() as f64 / 1024.0;
            let (echo, echo_errors) = tls_echo(dir, n, plan.seconds.min(10)).await;
            let mut echo = echo;
            let q = |v: &mut Vec<f64>, p| if v.is_empty() { f64::NAN } else { pct(v, p) };
            let row = json!({
                "sessions": n, "connected": connected, "ramp_s": ramp_s,
                "messages": smp.relay_ms.len(),
                "relay_p50_ms": q(&mut smp.relay_ms, 0.5), "relay_p99_ms": q(&mut smp.relay_ms, 0.99),
                "relay_max_ms": smp.relay_ms.last().copied().unwrap_or(f64::NAN),
                "ack_p50_ms": q(&mut smp.ack_ms, 0.5), "ack_p99_ms": q(&mut smp.ack_ms, 0.99),
                "first_ack_p50_ms": q(&mut smp.first_ack_ms, 0.5), "first_ack_p99_ms": q(&mut smp.first_ack_ms, 0.99),
                "rtt_p50_ms": q(&mut smp.rtt_ms, 0.5), "rtt_p99_ms": q(&mut smp.rtt_ms, 0.99),
                "errors": errors.len(), "first_error": errors.first(),
                "server_cpu_pct": cpu, "server_rss_mib": rss_mib,
                "tls_echo_p50_ms": q(&mut echo, 0.5), "tls_echo_p99_ms": q(&mut echo, 0.99),
                "tls_echo_errors": echo_errors,
            });
            println!("load step: {row}");
            let broke = !errors.is_empty() || row["relay_p99_ms"].as_f64().is_none_or(|p| p > 1000.0);
            steps.push(row);
            if broke {
                break;
            }
        }
        drop(pairs);
    });
    for row in &steps {
        let n = row["sessions"].as_u64().unwrap_or(0);
        let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
        let errors = row["errors"].as_u64().unwrap_or(0);
        r.add(
            &format!("load_{n}"),
            &format!("load: {n} concurrent sessions (customer and agent on TLS WebSockets), a message every 2 s each, {} s", plan.seconds),
            format!(
                "chat relay p50 {:.1} ms, p99 {:.1} ms; durable ack p99 {:.1} ms (a session's first message {:.0} ms); {errors} errors; server CPU {:.0}%, RSS {:.0} MiB",
                f("relay_p50_ms"), f("relay_p99_ms"), f("ack_p99_ms"), f("first_ack_p99_ms"), f("server_cpu_pct"), f("server_rss_mib")
            ),
            format!("TLS echo p50 {:.2} ms, p99 {:.2} ms", f("tls_echo_p50_ms"), f("tls_echo_p99_ms")),
            String::new(),
            row.clone(),
        );
    }
    r.json.insert(
        "load".into(),
        json!({ "interval_s": INTERVAL.as_secs(), "seconds": plan.seconds, "steps": steps }),
    );
    drop(rt);
    match Arc::try_unwrap(s) {
        Ok(s) => drop(s),
        Err(_) => panic!("the server is still shared"),
    }
}
