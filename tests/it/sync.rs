//! `custos sync` against a running appliance, into SQLite and into a real PostgreSQL server (the
//! one `.ci/run` starts; `CUSTOS_TEST_POSTGRES` names it, and each test makes a database of its
//! own): 10,000 generated sessions and a few real ones land row for row; a sync killed with
//! SIGKILL in the middle resumes with neither duplicates nor gaps; `--follow` brings a new session
//! within a second or so; a database of a newer schema is refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::*;

const PW: &str = "officer password 1";

/// A session id for generated session `i` (`sess_` and 26 characters of base 32).
fn generated_id(i: usize) -> String {
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut id = String::from("sess_");
    let mut v = i;
    for _ in 0..26 {
        id.push(B32[v % 32] as char);
        v /= 32;
    }
    id
}

/// Writes `n` generated sessions straight into the appliance's database (before it serves), as
/// years of use would leave them: ended, some surveyed, some with a reference.
fn generate(dir: &Dir, n: usize) {
    let mut db = raw_db(dir);
    let tx = db.transaction().unwrap();
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO sessions (id, portal, skill, status, via, customer_name, customer_email, question, fields,
                 external_ref, customer_token_hash, recording, requested_at, accepted_at, ended_at, survey_rating, survey_at)
                 VALUES (?1, 'support', 'general', 'ended', 'api', ?2, ?3, 'generated', '{\"plan\":\"gold\"}', ?4, zeroblob(32), 1,
                 ?5, ?6, ?7, ?8, ?9)",
            )
            .unwrap();
        for i in 0..n {
            let day = 1 + i % 28;
            let at = |m: usize| format!("2026-10-{day:02}T{:02}:{:02}:00.000Z", 8 + i % 10, m);
            let rating = (i % 3 == 0).then_some(1 + (i % 5) as i64);
            ins.execute(rusqlite::params![
                generated_id(i),
                format!("Customer {i}"),
                format!("c{i}@example.org"),
                (i % 4 == 0).then(|| format!("T-{i}")),
                at(0),
                at(3),
                at(20),
                rating,
                rating.map(|_| at(21)),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A sync target the test reads back.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(String),
    Mysql(String),
}

static NEXT_DB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Db {
    fn sqlite(dir: &Dir, name: &str) -> Db {
        Db::Sqlite(dir.tmp.path().join(name))
    }

    /// A new, empty database on the PostgreSQL server of `CUSTOS_TEST_POSTGRES`, or None (with a
    /// loud message; a failure in CI) when there is none.
    fn postgres() -> Option<Db> {
        let base = std::env::var("CUSTOS_TEST_POSTGRES").ok();
        if !tool_present(
            base.is_some(),
            "PostgreSQL (CUSTOS_TEST_POSTGRES=postgres://USER:PASSWORD@127.0.0.1/postgres, a role with CREATEDB)",
        ) {
            return None;
        }
        let base = base.unwrap();
        let name = format!(
            "custos_sync_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let create = format!("CREATE DATABASE {name}");
        pg(&base, |c| async move {
            c.batch_execute(&create).await.unwrap();
        });
        let (prefix, _) = base.rsplit_once('/').expect("a database in the URL");
        Some(Db::Postgres(format!("{prefix}/{name}")))
    }

    /// A new, empty database on the MariaDB server of `CUSTOS_TEST_MYSQL`, or None (loudly; a
    /// failure in CI).
    fn mysql() -> Option<Db> {
        let base = std::env::var("CUSTOS_TEST_MYSQL").ok();
        if !tool_present(
            base.is_some(),
            "MariaDB (CUSTOS_TEST_MYSQL=mysql://USER:PASSWORD@127.0.0.1:3306/, a user that may create databases)",
        ) {
            return None;
        }
        let base = base.unwrap();
        let name = format!(
            "custos_sync_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let create = format!("CREATE DATABASE {name} CHARACTER SET utf8mb4");
        my(&base, |mut c| async move {
            use mysql_async::prelude::Queryable;
            c.query_drop(create).await.unwrap();
        });
        let (prefix, _) = base
            .rsplit_once('/')
            .expect("a / before the database in the URL");
        Some(Db::Mysql(format!("{prefix}/{name}")))
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite(p) => format!("sqlite:{}", p.display()),
            Db::Postgres(u) | Db::Mysql(u) => u.clone(),
        }
    }

    /// Rows as text (`CAST(x AS TEXT)` reads the same on both).
    fn rows(&self, sql: &str, arg: Option<&str>) -> Vec<Vec<Option<String>>> {
        match self {
            Db::Sqlite(p) => {
                let c = rusqlite::Connection::open(p).unwrap();
                let mut st = c.prepare(sql).unwrap();
                let n = st.column_count();
                let params: Vec<&str> = arg.into_iter().collect();
                st.query_map(rusqlite::params_from_iter(params), |r| {
                    (0..n).map(|i| r.get::<_, Option<String>>(i)).collect()
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            }
            Db::Mysql(u) => {
                use mysql_async::prelude::Queryable;
                let sql = sql.replace("?1", "?").replace(" AS TEXT)", " AS CHAR)");
                let arg = arg.map(str::to_string);
                my(u, |mut c| async move {
                    let rows: Vec<mysql_async::Row> = match &arg {
                        Some(a) => c.exec(sql, (a.as_str(),)).await,
                        None => c.query(sql).await,
                    }
                    .unwrap();
                    rows.into_iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.get::<Option<String>, _>(i).flatten())
                                .collect()
                        })
                        .collect()
                })
            }
            Db::Postgres(u) => {
                let sql = sql.replace("?1", "$1");
                let arg = arg.map(str::to_string);
                pg(u, |c| async move {
                    let rows = match &arg {
                        Some(a) => c.query(&sql, &[a]).await,
                        None => c.query(&sql, &[]).await,
                    }
                    .unwrap();
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| r.get::<_, Option<String>>(i))
                                .collect()
                        })
                        .collect()
                })
            }
        }
    }

    /// A count, or 0 while the schema does not exist yet.
    fn count(&self, sql: &str, arg: Option<&str>) -> i64 {
        // The sync creates every table in one transaction: one of them tells.
        let exists = match self {
            Db::Sqlite(p) => {
                p.exists()
                    && rusqlite::Connection::open(p)
                        .unwrap()
                        .query_row(
                            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'custos_sync'",
                            [],
                            |r| r.get::<_, i64>(0),
                        )
                        .unwrap()
                        == 1
            }
            Db::Postgres(u) => pg(u, |c| async move {
                c.query_one("SELECT to_regclass('public.custos_sync') IS NOT NULL", &[])
                    .await
                    .unwrap()
                    .get::<_, bool>(0)
            }),
            Db::Mysql(_) => {
                self.rows(
                    "SELECT CAST(COUNT(*) AS TEXT) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'custos_sync'",
                    None,
                )[0][0]
                    .as_deref()
                    == Some("1")
            }
        };
        if !exists {
            return 0;
        }
        let rows = self.rows(&format!("SELECT CAST(({sql}) AS TEXT)"), arg);
        rows[0][0].as_deref().unwrap_or("0").parse().unwrap()
    }

    fn exec(&self, sql: &str) {
        match self {
            Db::Sqlite(p) => {
                rusqlite::Connection::open(p)
                    .unwrap()
                    .execute(sql, [])
                    .unwrap();
            }
            Db::Postgres(u) => {
                let sql = sql.to_string();
                pg(u, |c| async move {
                    c.batch_execute(&sql).await.unwrap();
                });
            }
            Db::Mysql(u) => {
                let sql = sql.to_string();
                my(u, |mut c| async move {
                    use mysql_async::prelude::Queryable;
                    c.query_drop(sql).await.unwrap();
                });
            }
        }
    }
}

/// Runs `f` with a connection to the PostgreSQL database at `url`.
fn pg<T, F: std::future::Future<Output = T>>(
    url: &str,
    f: impl FnOnce(tokio_postgres::Client) -> F,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        tokio::spawn(conn);
        f(client).await
    })
}

/// Runs `f` with a connection to the MariaDB database at `url`.
fn my<T, F: std::future::Future<Output = T>>(
    url: &str,
    f: impl FnOnce(mysql_async::Conn) -> F,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = mysql_async::Opts::from_url(url).unwrap();
        let c = mysql_async::Conn::new(opts)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        f(c).await
    })
}

struct World {
    dir: Dir,
    s: Server,
    token_file: std::path::PathBuf,
    admin: String,
    real: Vec<String>,
}

fn world(generated: usize) -> World {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("pw", PW);
    dir.run(&[
        "user",
        "add",
        "alice",
        "--role",
        "agent",
        "--password-file",
        pw.to_str().unwrap(),
        "--skills",
        "support:general",
    ])
    .ok();
    generate(&dir, generated);
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let alice = s.login("alice", PW).0;
    // A few real sessions with a transcript, a message marked sensitive and a survey.
    let mut real = Vec::new();
    for (name, text) in [("Pia", "printer jams"), ("Raj", "vpn drops")] {
        let r = s.post(
            "/api/v1/requests",
            None,
            json!({ "portal": "support", "name": name, "email": format!("{name}@example.org"), "question": text, "ref": "CRM-1" }),
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        let id = r.json().unwrap()["request_id"]
            .as_str()
            .unwrap()
            .to_string();
        let post = |path: &str, body: serde_json::Value| {
            let r = s.post(path, Some(&alice), body);
            assert_eq!(r.status, 200, "{path}: {}", r.error_message());
            r
        };
        post(&format!("/api/v1/requests/{id}/accept"), json!({}));
        post(
            &format!("/api/v1/sessions/{id}/messages"),
            json!({ "type": "chat", "text": format!("about {text}: card 4111 1111") }),
        );
        post(
            &format!("/api/v1/sessions/{id}/messages"),
            json!({ "type": "url", "url": "https://kb.example.org/42" }),
        );
        real.push(id);
    }
    // A file the customer sent in the first one.
    let r = raw(
        &s,
        hyper::Method::POST,
        &format!("/api/v1/sessions/{}/files?name=vpn.log", real[0]),
        &format!("Bearer {alice}"),
        b"vpn log line 1\n".to_vec(),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let token = s.post(
        "/api/v1/tokens",
        Some(&admin),
        json!({ "user": "admin", "name": "bi-sync", "days": 30, "scopes": ["read_any_session"] }),
    );
    assert_eq!(token.status, 201, "{}", token.error_message());
    let token_file = dir.secret(
        "sync-token",
        token.json().unwrap()["token"].as_str().unwrap(),
    );
    World {
        dir,
        s,
        token_file,
        admin,
        real,
    }
}

fn sync_cmd(w: &World, target: &Db, extra: &[&str]) -> Command {
    let to = target.url();
    let mut args = vec![
        "sync",
        "--to",
        to.as_str(),
        "--token-file",
        w.token_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut c = w.dir.cmd(&args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn run_sync(w: &World, target: &Db, extra: &[&str]) -> Out {
    Out(sync_cmd(w, target, extra).output().unwrap())
}

/// Every session of the appliance's database beside its synced row.
fn compare_sessions(w: &World, target: &Db) -> usize {
    let cols = "id, status, via, portal, skill, customer_name, customer_email, question, external_ref, requested_at, accepted_at, ended_at, CAST(survey_rating AS TEXT), survey_at";
    let src = Db::Sqlite(w.dir.path().join("custos.db"));
    let a = src.rows(&format!("SELECT {cols} FROM sessions ORDER BY id"), None);
    let b = target.rows(
        &format!(
            "SELECT {} FROM sessions ORDER BY session_id",
            cols.replacen("id", "session_id", 1)
        ),
        None,
    );
    assert_eq!(a.len(), b.len(), "every session, once");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "a synced row differs from the appliance's");
    }
    // Form fields, row for row.
    let fields = target.count(
        "SELECT COUNT(*) FROM request_fields WHERE name = 'plan' AND value = 'gold'",
        None,
    );
    assert_eq!(fields as usize + w.real.len(), a.len());
    a.len()
}

#[test]
fn ten_thousand_sessions_sync_into_sqlite_row_for_row_and_a_killed_sync_resumes() {
    let w = world(10_000);
    let target = Db::sqlite(&w.dir, "bi.db");
    ten_thousand(&w, &target);
}

#[test]
fn ten_thousand_sessions_sync_into_postgresql_row_for_row_and_a_killed_sync_resumes() {
    let Some(target) = Db::postgres() else { return };
    let w = world(10_000);
    ten_thousand(&w, &target);
}

#[test]
fn ten_thousand_sessions_sync_into_mariadb_row_for_row_and_a_killed_sync_resumes() {
    let Some(target) = Db::mysql() else { return };
    let w = world(10_000);
    ten_thousand(&w, &target);
}

fn ten_thousand(w: &World, target: &Db) {
    // Refusals first: no token, a bad target, a wrong token.
    let r = w.dir.run(&["sync", "--to", &target.url()]);
    r.fails();
    assert!(r.all().contains("CUSTOS_TOKEN"), "{}", r.all());
    let r = run_sync(w, &Db::Sqlite(std::path::PathBuf::new()), &[]);
    r.fails();
    let bad = w.dir.secret("bad-token", "not-a-token");
    let r = w.dir.run(&[
        "sync",
        "--to",
        "oracle://localhost/x",
        "--token-file",
        bad.to_str().unwrap(),
    ]);
    r.fails();
    assert!(r.all().contains("give sqlite:PATH"), "{}", r.all());
    let r = w.dir.run(&[
        "sync",
        "--to",
        &target.url(),
        "--token-file",
        bad.to_str().unwrap(),
    ]);
    r.fails();
    assert!(r.all().contains("401"), "{}", r.all());

    // Killed with SIGKILL once some pages are committed, then run again to the end.
    let mut child = sync_cmd(w, target, &[]).spawn().unwrap();
    let start = Instant::now();
    loop {
        let committed = target.count("SELECT COUNT(*) FROM sessions", None);
        if committed >= 1000 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the sync committed no pages"
        );
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the sync ended before it was killed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(child.id(), "KILL");
    child.wait().unwrap();
    let out = run_sync(w, target, &[]);
    out.ok();
    assert!(out.stdout().contains("up to date"), "{}", out.all());
    let n = compare_sessions(w, target);
    assert_eq!(n, 10_000 + w.real.len());

    // The real sessions' transcripts: in order, the sensitive text left behind, links kept.
    let chat = target.rows(
        "SELECT type, text, url FROM chat_messages WHERE session_id = ?1 ORDER BY position",
        Some(&w.real[0]),
    );
    assert_eq!(chat.len(), 2, "{chat:?}");
    assert_eq!(
        chat[0][1].as_deref(),
        Some("about printer jams: card 4111 1111")
    );
    assert_eq!(chat[1][2].as_deref(), Some("https://kb.example.org/42"));
    let participants = target.count(
        "SELECT COUNT(*) FROM participants WHERE session_id = ?1",
        Some(&w.real[1]),
    );
    assert!(participants >= 2, "customer and agent");

    // Running again finds nothing new and changes nothing.
    let again = run_sync(w, target, &[]);
    again.ok();
    assert!(
        again.stdout().contains("0 sessions written"),
        "{}",
        again.all()
    );
    // A database of schema version 1 (before the indexes) is migrated in place, rows intact.
    let names = "('sessions_requested_at', 'sessions_agent', 'sessions_portal')";
    let index_sql = match target {
        Db::Sqlite(_) => {
            format!("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN {names}")
        }
        Db::Postgres(_) => format!("SELECT COUNT(*) FROM pg_indexes WHERE indexname IN {names}"),
        Db::Mysql(_) => format!(
            "SELECT COUNT(DISTINCT index_name) FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name IN {names}"
        ),
    };
    let index_sql = index_sql.as_str();
    assert_eq!(target.count(index_sql, None), 3, "version 2's indexes");
    for idx in ["sessions_requested_at", "sessions_agent", "sessions_portal"] {
        target.exec(&match target {
            Db::Mysql(_) => format!("DROP INDEX {idx} ON sessions"),
            _ => format!("DROP INDEX {idx}"),
        });
    }
    target.exec("UPDATE custos_schema SET version = 1");
    assert_eq!(target.count(index_sql, None), 0);
    run_sync(w, target, &[]).ok();
    assert_eq!(
        target.rows("SELECT CAST(version AS TEXT) FROM custos_schema", None),
        vec![vec![Some("2".to_string())]]
    );
    assert_eq!(target.count(index_sql, None), 3, "migrated to version 2");
    assert_eq!(compare_sessions(w, target), n);

    // Every content read was audited, under the token's user, with the sync's reason.
    let log =
        w.s.get(
            &format!(
                "/api/v1/audit/entries?action=session.read&target=session:{}",
                w.real[0]
            ),
            Some(&w.admin),
        )
        .json()
        .unwrap();
    let reads = log["entries"].as_array().unwrap();
    assert!(!reads.is_empty(), "{log}");
    assert!(
        reads
            .iter()
            .all(|e| e["actor"] == "admin" && e["details"]["reason"] == "database sync"),
        "{log}"
    );
}

#[test]
fn follow_into_sqlite_brings_a_new_session_and_a_newer_schema_is_refused() {
    let w = world(50);
    let target = Db::sqlite(&w.dir, "live.db");
    follow(&w, &target);
}

#[test]
fn follow_into_postgresql_brings_a_new_session_and_a_newer_schema_is_refused() {
    let Some(target) = Db::postgres() else { return };
    let w = world(50);
    follow(&w, &target);
}

#[test]
fn follow_into_mariadb_brings_a_new_session_and_a_newer_schema_is_refused() {
    let Some(target) = Db::mysql() else { return };
    let w = world(50);
    follow(&w, &target);
}

fn follow(w: &World, target: &Db) {
    let mut follower = sync_cmd(w, target, &["--follow"]).spawn().unwrap();
    let count = |id: &str| -> i64 {
        target.count(
            "SELECT COUNT(*) FROM sessions WHERE session_id = ?1",
            Some(id),
        )
    };
    let wait_for = |id: &str, what: &str| {
        let start = Instant::now();
        while count(id) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what} did not arrive"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    };
    wait_for(&w.real[1], "the initial sync");
    let r = w.s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Zoe", "question": "new one" }),
    );
    let id = r.json().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let took = wait_for(&id, "the new session");
    eprintln!("follow: a new session reached the database after {took:?}");
    // An ended session's new status arrives too.
    let ended = w.real[0].clone();
    let alice = w.s.login("alice", PW).0;
    assert_eq!(
        w.s.post(
            &format!("/api/v1/sessions/{ended}/end"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    let start = Instant::now();
    loop {
        let status = target.rows(
            "SELECT status FROM sessions WHERE session_id = ?1",
            Some(&ended),
        );
        if status[0][0].as_deref() == Some("ended") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the end did not arrive"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(follower.id(), "KILL");
    follower.wait().unwrap();

    // A database written by a newer custos is left alone.
    target.exec("UPDATE custos_schema SET version = 99");
    let r = run_sync(w, target, &[]);
    r.fails();
    assert!(r.all().contains("newer than this custos"), "{}", r.all());
}

#[test]
fn the_appliance_runs_a_configured_sync_and_a_bad_one_is_refused_at_start() {
    let w = world(20);
    let mut s = w.s;
    s.stop();
    let target = w.dir.tmp.path().join("scheduled.db");
    let config = w.dir.path().join("custos.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    let with = |schedule: &str| {
        std::fs::write(
            &config,
            format!(
                "{base}\n[[sync]]\nto = \"sqlite:{}\"\ntoken_file = \"{}\"\nschedule = \"{schedule}\"\n",
                target.display(),
                w.token_file.display()
            ),
        )
        .unwrap();
    };
    // Refused at start, naming the line: a bad schedule.
    with("hourly");
    let r = w.dir.run(&["serve", "--listen", "127.0.0.1:0"]);
    r.fails();
    assert!(
        r.all().contains("custos.toml") && r.all().contains("sync.schedule"),
        "{}",
        r.all()
    );

    with("every 1s");
    let s = w.dir.serve();
    let db = Db::Sqlite(target.clone());
    let wait_for = |id: &str, what: &str| {
        let start = Instant::now();
        while db.count(
            "SELECT COUNT(*) FROM sessions WHERE session_id = ?1",
            Some(id),
        ) == 0
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what} did not arrive"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&w.real[0], "the first scheduled run");
    assert_eq!(db.count("SELECT COUNT(*) FROM sessions", None), 22);
    let r = s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Una", "question": "later" }),
    );
    let id = r.json().unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(&id, "a session created after the first run");
}

#[test]
fn files_are_copied_when_asked_and_checked() {
    let w = world(5);
    let target = Db::sqlite(&w.dir, "files.db");
    let files = w.dir.tmp.path().join("files");
    let out = run_sync(&w, &target, &["--files-dir", files.to_str().unwrap()]);
    out.ok();
    let fid = target.rows(
        "SELECT file_id, name FROM files WHERE session_id = ?1",
        Some(&w.real[0]),
    );
    assert_eq!(fid.len(), 1, "{fid:?}");
    let path = files
        .join(&w.real[0])
        .join(format!("{}-vpn.log", fid[0][0].as_deref().unwrap()));
    assert_eq!(std::fs::read(&path).unwrap(), b"vpn log line 1\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The copy was an audited read of the file.
    let log =
        w.s.get(
            "/api/v1/audit/entries?action=session.file.read",
            Some(&w.admin),
        )
        .json()
        .unwrap();
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["reason"] == "database sync"),
        "{log}"
    );
}

#[test]
fn screen_recordings_are_copied_decrypted_when_asked() {
    use custos::remote::{Codec, MAX_MESSAGE, UpdateBuilder};
    let w = world(2);
    let target = Db::sqlite(&w.dir, "recordings.db");
    let out_dir = w.dir.tmp.path().join("recordings");
    // A session whose customer's client shared a screen.
    let agent = w.s.login("alice", PW).0;
    let code =
        w.s.post("/api/v1/codes", Some(&agent), json!({}))
            .json()
            .unwrap()["code"]
            .as_str()
            .unwrap()
            .replace(' ', "");
    let v =
        w.s.post(&format!("/api/v1/codes/{code}/redeem"), None, json!({}))
            .json()
            .unwrap();
    let (id, token) = (
        v["session_id"].as_str().unwrap().to_string(),
        v["customer_token"].as_str().unwrap().to_string(),
    );
    let mut sharer = w.s.screen_ws(&id, &format!("Customer {token}"));
    sharer.expect("hello");
    let mut viewer = w.s.screen_ws(&id, &format!("Bearer {agent}"));
    viewer.expect("hello");
    sharer.send(&json!({"type": "consent", "view": true, "control": false, "files": false, "diagnostics": false, "reboot": false}));
    viewer.expect("consent");
    let mut b = UpdateBuilder::new(1, 32, 16, true, MAX_MESSAGE);
    b.push(0, 0, 32, 16, Codec::Raw, &vec![0x42; 32 * 16 * 3]);
    let frame = b.finish().remove(0);
    sharer.send_binary(frame.clone());
    assert_eq!(viewer.recv_binary().unwrap(), frame);
    let r = w.s.post(
        &format!("/api/v1/sessions/{id}/end"),
        Some(&agent),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    drop((sharer, viewer));

    run_sync(
        &w,
        &target,
        &["--recordings-dir", out_dir.to_str().unwrap()],
    )
    .ok();
    let dir = out_dir.join(&id);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The record stream: a header, then (among the events) the frame byte for byte.
    let data = std::fs::read(&files[0]).unwrap();
    let mut at = 0;
    let mut kinds = Vec::new();
    let mut frames = Vec::new();
    while at < data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let kind = data[at + 12];
        kinds.push(kind);
        if kind == 1 {
            frames.push(data[at + 13..at + 4 + len].to_vec());
        }
        at += 4 + len;
    }
    assert_eq!(at, data.len());
    assert_eq!(kinds[0], 0, "the header first");
    assert!(String::from_utf8_lossy(&data[13..]).contains("custos-recording"));
    assert_eq!(frames, vec![frame]);
    let log =
        w.s.get(
            "/api/v1/audit/entries?action=recording.view",
            Some(&w.admin),
        )
        .json()
        .unwrap();
    assert!(
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["reason"] == "database sync"),
        "{log}"
    );
    // A second run copies nothing again (and opens nothing).
    run_sync(
        &w,
        &target,
        &["--recordings-dir", out_dir.to_str().unwrap()],
    )
    .ok();
    let again =
        w.s.get(
            "/api/v1/audit/entries?action=recording.view",
            Some(&w.admin),
        )
        .json()
        .unwrap();
    assert_eq!(
        again["entries"].as_array().unwrap().len(),
        log["entries"].as_array().unwrap().len()
    );
}
