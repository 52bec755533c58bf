//! The integration APIs under load, each beside a baseline from the same run: Sessions API sync
//! against reading the same rows straight from SQLite, monitors-stream fan-out against writing
//! the same bytes to as many raw loopback TCP sockets, webhook delivery against plain HTTP POSTs
//! of the same bodies to the same receiver.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::sessions::{Server, sse_at, start};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Signs in as the first admin and sets a password: the admin's token.
pub(crate) async fn admin_token(s: &Server, one_time: &str) -> String {
    let v = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({ "name": "admin", "password": one_time }),
        )
        .await;
    let t = v["token"].as_str().unwrap().to_string();
    let v = s
        .post(
            "/api/v1/auth/password",
            Some(&t),
            json!({ "current_password": one_time, "new_password": "bench admin password" }),
        )
        .await;
    v["token"].as_str().unwrap().to_string()
}

pub fn run(dir: &Path, sizes: &super::Sizes, r: &mut super::Report) {
    let data = dir.join("integrations-bench");
    let (s, pw) = start(&data);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(admin_token(&s, pw.as_deref().expect("a fresh appliance")));
    rt.block_on(fan_out(&s, &admin, sizes.subscribers, r));
    let count = Arc::new(AtomicUsize::new(0));
    let addr = rt.block_on(receiver(count.clone()));
    let hook = rt.block_on(webhooks(&s, &admin, addr, &count, sizes.deliveries, r));
    // The outbox alone: deliveries already queued (as after a receiver outage), drained by a
    // fresh start.
    drop(s);
    prefill(&data, hook, sizes.deliveries);
    let before = count.load(Ordering::SeqCst);
    let t = Instant::now();
    let (s, _) = start(&data);
    let started = t.elapsed();
    rt.block_on(async {
        while count.load(Ordering::SeqCst) < before + sizes.deliveries {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let drained = t.elapsed() - started;
    let rate = sizes.deliveries as f64 / drained.as_secs_f64();
    let plain = r.json["webhook_delivery"]["plain_posts_per_s"]
        .as_f64()
        .unwrap_or(0.0);
    r.add(
        "outbox_drain",
        &format!("webhook outbox drained: {} queued deliveries to one receiver", sizes.deliveries),
        format!("{rate:.0} deliveries/s"),
        format!("{plain:.0} POSTs/s plain HTTP"),
        format!("{:.0}% of plain", 100.0 * rate / plain.max(1.0)),
        json!({ "deliveries": sizes.deliveries, "deliveries_per_s": rate, "drain_s": drained.as_secs_f64() }),
    );
    sync(&rt, &s, &admin, &data, sizes.sync_sessions, r);
    console(&rt, &s, &admin, &data, sizes.sync_sessions, r);
}

/// Queues `n` deliveries to webhook `hook` straight into the outbox.
fn prefill(data: &Path, hook: i64, n: usize) {
    let mut store = custos::store::Store::open(&data.join("custos.db")).unwrap();
    let body = json!({ "id": "evt_1_request_created", "type": "request.created", "data": { "portal": "support" } }).to_string();
    let channel = format!("webhook:{hook}");
    let now = custos::integrations::now_ms();
    store
        .write(|tx| {
            for i in 0..n {
                tx.delivery_insert(&custos::store::NewDelivery {
                    channel: &channel,
                    event_id: &format!("evt_bench_{i}"),
                    event: "request.created",
                    body: &body,
                    now_ms: now,
                })?;
            }
            Ok(())
        })
        .unwrap();
}

/// Writes `n` ended sessions straight into the database, as years of use would leave them.
fn fill(data: &Path, n: usize) {
    let mut store = custos::store::Store::open(&data.join("custos.db")).unwrap();
    let hash = [0u8; 32];
    let now = custos::model::now_rfc3339();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(50_000);
        store
            .write(|tx| {
                for i in done..done + batch {
                    let id = format!("sess_{:026}", i);
                    let name = format!("Customer {i}");
                    let r = format!("T-{}", i % 1000);
                    tx.session_insert(&custos::store::NewSession {
                        id: &id,
                        portal: "support",
                        skill: "general",
                        status: "waiting",
                        via: "api",
                        customer_name: &name,
                        customer_email: "",
                        question: "bench",
                        fields: "{}",
                        external_ref: Some(&r),
                        customer_token_hash: &hash,
                        agent_id: None,
                        recording: true,
                        now: &now,
                    })?;
                }
                Ok(())
            })
            .unwrap();
        done += batch;
    }
}

/// Gives every filled session a few words in the transcript index, as the recorder would: three
/// of a 5,000-word vocabulary, so a word matches about one session in 1,700.
fn fill_terms(data: &Path, n: usize) {
    let dir = custos::app::DataDir::new(data.to_path_buf());
    let master = dir.master_files().load_keyfile().unwrap();
    let key = custos::keys::Keyring::new(master).index_key();
    let vocab: Vec<custos::store::Term> = (0..5000)
        .map(|i| custos::session::terms::term(&key, &format!("word{i}")))
        .collect();
    let mut store = custos::store::Store::open(&data.join("custos.db")).unwrap();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(50_000);
        store
            .write(|tx| {
                for i in done..done + batch {
                    let id = format!("sess_{:026}", i);
                    let picks = [
                        vocab[i % 5000],
                        vocab[(i * 7 + 1) % 5000],
                        vocab[(i * 13 + 2) % 5000],
                    ];
                    tx.terms_insert(&id, &picks)?;
                }
                Ok(())
            })
            .unwrap();
        done += batch;
    }
}

/// The console over a million sessions: one page of the sessions screen (fetch and render) and
/// a transcript word search, each timed over repeated runs.
fn console(
    rt: &tokio::runtime::Runtime,
    s: &Server,
    admin: &str,
    data: &Path,
    n: usize,
    r: &mut super::Report,
) {
    fill_terms(data, n);
    let ep = s.ep();
    let runs = 20;
    let (page_ms, search_ms, hits) = rt.block_on(async {
        let mut page = Vec::new();
        let mut search = Vec::new();
        let mut hits = 0;
        for i in 0..runs {
            let t = Instant::now();
            let o = custos::console::client::run(
                &ep,
                Some(admin),
                custos::console::state::Command::LoadSessions {
                    after: None,
                    query: String::new(),
                    reason: None,
                },
            )
            .await;
            let mut c = custos::console::state::Console::default();
            c.screen = Some(custos::console::state::Screen::Sessions);
            c.on_outcome(o);
            let mut term =
                ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 48)).unwrap();
            term.draw(|f| custos::console::ui::draw(f, &c)).unwrap();
            page.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let res = ep
                .request(
                    Method::GET,
                    &format!("/api/v1/sessions/search?words=word{}", i * 37),
                    Some(admin),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(res.status, 200, "{}", res.error_message());
            hits += res.json().unwrap()["sessions"].as_array().unwrap().len();
            search.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        (pct(&mut page, 0.5), pct(&mut search, 0.5), hits / runs)
    });
    r.add(
        "console_sessions_page",
        &format!("console sessions screen: fetch 200 of {n} sessions and draw at 160x48"),
        format!("median {page_ms:.1} ms"),
        String::new(),
        String::new(),
        json!({ "sessions": n, "median_ms": page_ms, "runs": runs }),
    );
    r.add(
        "transcript_search",
        &format!("transcript word search over {n} sessions (blind index), about {hits} hits"),
        format!("median {search_ms:.1} ms"),
        String::new(),
        String::new(),
        json!({ "sessions": n, "median_ms": search_ms, "mean_hits": hits, "runs": runs }),
    );
}

/// Pages through every session with the incremental cursor.
fn sync(
    rt: &tokio::runtime::Runtime,
    s: &Server,
    admin: &str,
    data: &Path,
    n: usize,
    r: &mut super::Report,
) {
    let t = Instant::now();
    fill(data, n);
    let filled = t.elapsed();
    let (rows, api) = rt.block_on(async {
        let ep = s.ep();
        let t = Instant::now();
        let mut cursor: Option<String> = None;
        let mut rows = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/sessions?after={c}&limit=1000"),
                None => "/api/v1/sessions?limit=1000".into(),
            };
            let res = ep
                .request(Method::GET, &path, Some(admin), None)
                .await
                .unwrap();
            assert_eq!(res.status, 200, "{}", res.error_message());
            let v = res.json().unwrap();
            let page = v["sessions"].as_array().unwrap().len();
            if page == 0 {
                break;
            }
            rows += page;
            cursor = Some(v["next_cursor"].as_str().unwrap().to_string());
        }
        (rows, t.elapsed())
    });
    assert!(rows >= n, "synced {rows} of {n}");
    // Baseline: the same rows and columns read straight from SQLite in one pass.
    let conn = rusqlite::Connection::open(data.join("custos.db")).unwrap();
    let t = Instant::now();
    let mut stmt = conn
        .prepare("SELECT s.updated_seq, s.id, s.status, s.via, s.portal, s.skill, s.external_ref, s.requested_at, s.accepted_at, s.ended_at, s.survey_rating FROM sessions s ORDER BY s.updated_seq")
        .unwrap();
    let mut raw_rows = 0usize;
    let mut q = stmt.query([]).unwrap();
    while let Some(row) = q.next().unwrap() {
        let id: String = row.get(1).unwrap();
        raw_rows += usize::from(!id.is_empty());
    }
    let raw = t.elapsed();
    let (a, b) = (
        rows as f64 / api.as_secs_f64(),
        raw_rows as f64 / raw.as_secs_f64(),
    );
    r.add(
        "sessions_sync",
        &format!("Sessions API sync, {rows} sessions, pages of 1000 over TLS"),
        format!("{a:.0} sessions/s"),
        format!("{b:.0} rows/s raw SQLite read"),
        format!("{:.0}% of raw", 100.0 * a / b),
        json!({ "sessions": rows, "api_s": api.as_secs_f64(), "sessions_per_s": a, "raw_rows_per_s": b, "fill_s": filled.as_secs_f64() }),
    );
}

/// How long until every subscriber to the monitors stream sees a change.
async fn fan_out(s: &Server, admin: &str, n: usize, r: &mut super::Report) {
    let ready = Arc::new(tokio::sync::Barrier::new(n + 1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut sse = sse_at(s, admin, "/api/v1/monitors/stream").await;
        let (ready, tx) = (ready.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            sse.next_event().await; // the state before the change
            ready.wait().await;
            loop {
                let ev = sse.next_event().await;
                if ev.contains("\"waiting\":1") {
                    let _ = tx.send(Instant::now());
                    return;
                }
            }
        }));
    }
    ready.wait().await;
    let t0 = Instant::now();
    s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "fan-out", "question": "bench" }),
    )
    .await;
    let mut lat = Vec::new();
    for _ in 0..n {
        let at = rx.recv().await.unwrap();
        lat.push((at - t0).as_secs_f64() * 1000.0);
    }
    for t in tasks {
        t.abort();
    }
    let (p50, p99, max) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99), pct(&mut lat, 1.0));
    // Baseline: one writer sends an event of the same size to `n` raw loopback TCP sockets.
    let (b50, b99) = raw_fan_out(n, 400).await;
    r.add(
        "sse_fan_out",
        &format!("monitors stream: a change reaches {n} SSE subscribers (TLS)"),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
        format!("p50 {b50:.1} ms, p99 {b99:.1} ms raw TCP fan-out"),
        String::new(),
        json!({ "subscribers": n, "p50_ms": p50, "p99_ms": p99, "max_ms": max, "raw_tcp_p50_ms": b50, "raw_tcp_p99_ms": b99 }),
    );
}

async fn raw_fan_out(n: usize, size: usize) -> (f64, f64) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..n {
        clients.push(TcpStream::connect(addr).await.unwrap());
        servers.push(l.accept().await.unwrap().0);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for mut c in clients {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; size];
            c.read_exact(&mut buf).await.unwrap();
            let _ = tx.send(Instant::now());
        }));
    }
    let msg = vec![b'x'; size];
    let t0 = Instant::now();
    for srv in servers.iter_mut() {
        srv.write_all(&msg).await.unwrap();
    }
    let mut lat = Vec::new();
    for _ in 0..n {
        lat.push((rx.recv().await.unwrap() - t0).as_secs_f64() * 1000.0);
    }
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

/// A webhook receiver that answers 200 to every POST and counts them.
async fn receiver(count: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((c, _)) = l.accept().await else { return };
            let count = count.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(c);
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                if r.read_exact(&mut body).await.is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = r
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    addr
}

/// Events from request to delivery at one receiver, against plain POSTs; returns the webhook id.
async fn webhooks(
    s: &Server,
    admin: &str,
    addr: std::net::SocketAddr,
    count: &AtomicUsize,
    n: usize,
    r: &mut super::Report,
) -> i64 {
    let url = format!("http://{addr}/hook");
    let hook = s
        .post(
            "/api/v1/webhooks",
            Some(admin),
            json!({ "url": url, "events": ["request.created"] }),
        )
        .await;
    let t0 = Instant::now();
    for i in 0..n {
        s.post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": format!("w{i}"), "question": "bench" }),
        )
        .await;
    }
    let queued = t0.elapsed();
    while count.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all = t0.elapsed();
    // Baseline: the same number of POSTs with a body of the same size, one connection each, as
    // the outbox sends them.
    let body: Value = json!({ "id": "evt_1_request_created", "type": "request.created", "created_at": "2026-11-28T10:00:00.000Z", "audit_seq": 1, "data": { "portal": "support", "skill": "general", "via": "api", "ref": null, "agent": null, "session": "sess_00000000000000000000000000", "actor": "customer:sess_00000000000000000000000000" } });
    let body = body.to_string();
    let before = count.load(Ordering::SeqCst);
    let t = Instant::now();
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /hook HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let mut sink = Vec::new();
        c.read_to_end(&mut sink).await.unwrap();
    }
    let raw = t.elapsed();
    assert_eq!(count.load(Ordering::SeqCst) - before, n);
    let (a, b) = (n as f64 / all.as_secs_f64(), n as f64 / raw.as_secs_f64());
    r.add(
        "webhook_delivery",
        &format!("webhooks: {n} events from request to delivered (signed, durable outbox)"),
        format!("{a:.0} events/s ({:.0} requests/s created)", n as f64 / queued.as_secs_f64()),
        format!("{b:.0} POSTs/s plain HTTP"),
        format!("{:.0}% of plain", 100.0 * a / b),
        json!({ "events": n, "events_per_s": a, "requests_queued_s": queued.as_secs_f64(), "all_delivered_s": all.as_secs_f64(), "plain_posts_per_s": b }),
    );
    hook["id"].as_i64().unwrap()
}
