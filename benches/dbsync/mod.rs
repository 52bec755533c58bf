//! `custos sync` into each target database, beside a bulk load of the same session rows with that
//! database's own tool in the same run: `psql \copy` (COPY) for PostgreSQL, `mariadb` LOAD DATA
//! LOCAL INFILE for MariaDB, and one prepared-statement transaction for SQLite. The servers are
//! the ones `CUSTOS_TEST_POSTGRES` and `CUSTOS_TEST_MYSQL` name (.ci/run starts them); in CI a
//! missing one fails the run, elsewhere it is skipped with a message.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::json;

use crate::sessions::start;

/// Ended sessions with a form field and a survey, written straight into the appliance's database.
fn generate(data: &Path, n: usize) {
    let mut db = rusqlite::Connection::open(data.join("custos.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(30)).unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO sessions (id, portal, skill, status, via, customer_name, customer_email, question, fields,
                 external_ref, customer_token_hash, recording, requested_at, accepted_at, ended_at, survey_rating, survey_at)
                 VALUES (?1, 'support', 'general', 'ended', 'api', ?2, ?3, 'generated', '{\"plan\":\"gold\"}', ?4, zeroblob(32), 1,
                 '2026-10-01T08:00:00.000Z', '2026-10-01T08:01:00.000Z', '2026-10-01T08:20:00.000Z', ?5, '2026-10-01T08:21:00.000Z')",
            )
            .unwrap();
        const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        for i in 0..n {
            let mut id = String::from("sess_");
            let mut v = i;
            for _ in 0..26 {
                id.push(B32[v % 32] as char);
                v /= 32;
            }
            ins.execute(rusqlite::params![
                id,
                format!("Customer {i}"),
                format!("c{i}@example.org"),
                format!("T-{i}"),
                1 + (i % 5) as i64
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// A target to measure: its name and URL.
struct Db {
    name: &'static str,
    url: String,
}

fn fresh_name(tag: &str) -> String {
    format!("custos_bench_{tag}_{}", std::process::id())
}

fn server_db(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) => Some(u),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{what} is required in CI: set {var}")
        }
        Err(_) => {
            eprintln!("SKIPPED: the {what} sync benchmark (set {var})");
            None
        }
    }
}

fn run_tool(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd.output().expect("run the database tool");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

/// The columns the baseline loads: the sessions table, as sync wrote it.
const COLS: &str = "session_id, status, via, portal, skill, agent, customer_name, customer_email, question, external_ref, requested_at, accepted_at, ended_at, wait_s, handle_s, survey_rating, survey_at, synced_at";

pub fn run(dir: &Path, n: usize, r: &mut super::Report) {
    let data = dir.join("dbsync-bench");
    let (s, pw) = start(&data);
    generate(&data, n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin = rt.block_on(crate::integrations::admin_token(
        &s,
        pw.as_deref().expect("a fresh appliance"),
    ));

    let mut dbs = vec![Db {
        name: "SQLite",
        url: format!("sqlite:{}", dir.join("dbsync-target.db").display()),
    }];
    if let Some(base) = server_db("CUSTOS_TEST_POSTGRES", "PostgreSQL") {
        let name = fresh_name("pg");
        let out = Command::new("psql")
            .args([base.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (prefix, _) = base.rsplit_once('/').unwrap();
        dbs.push(Db {
            name: "PostgreSQL",
            url: format!("{prefix}/{name}"),
        });
    }
    let mysql = server_db("CUSTOS_TEST_MYSQL", "MariaDB");
    if let Some(base) = &mysql {
        let name = fresh_name("my");
        let u = parse_mysql(base);
        let out = Command::new("mariadb")
            .args(u.args())
            .args([
                "-e",
                &format!("CREATE DATABASE {name} CHARACTER SET utf8mb4"),
            ])
            .output()
            .expect("mariadb");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (prefix, _) = base.rsplit_once('/').unwrap();
        dbs.push(Db {
            name: "MariaDB",
            url: format!("{prefix}/{name}"),
        });
    }

    let csv = dir.join("dbsync-sessions.csv");
    for db in &dbs {
        let t = Instant::now();
        let report = rt.block_on(async {
            let mut target = custos::sync::Target::open(&db.url).await.unwrap();
            custos::sync::run(
                &s.ep(),
                &admin,
                &mut target,
                &custos::sync::Options {
                    since: None,
                    until: None,
                    follow: false,
                    files_dir: None,
                    recordings_dir: None,
                    max_pages: None,
                },
                |_| {},
            )
            .await
            .unwrap()
        });
        let took = t.elapsed().as_secs_f64();
        assert_eq!(report.sessions as usize, n);
        // Rows written: each session's row and its form field.
        let rows = 2 * n;
        let sync_rate = rows as f64 / took;
        // The baseline: the same session rows, bulk-loaded by the database's own tool.
        let base_s = match db.name {
            "SQLite" => sqlite_bulk(&db.url, dir, n),
            "PostgreSQL" => {
                export_csv(dir, &csv);
                run_tool(Command::new("psql").args([
                    db.url.as_str(),
                    "-qc",
                    "CREATE TABLE sessions_bulk (LIKE sessions INCLUDING ALL)",
                ]));
                run_tool(Command::new("psql").args([
                    db.url.as_str(),
                    "-qc",
                    &format!(
                        "\\copy sessions_bulk ({COLS}) FROM '{}' WITH (FORMAT csv, NULL '\\N')",
                        csv.display()
                    ),
                ]))
            }
            _ => {
                export_csv(dir, &csv);
                let u = parse_mysql(&db.url);
                run_tool(
                    Command::new("mariadb")
                        .args(u.args())
                        .args(["-e", "CREATE TABLE sessions_bulk LIKE sessions"]),
                );
                run_tool(Command::new("mariadb").args(u.args()).args([
                    "--local-infile=1",
                    "-e",
                    &format!(
                        "LOAD DATA LOCAL INFILE '{}' INTO TABLE sessions_bulk FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' LINES TERMINATED BY '\\n' ({COLS})",
                        csv.display()
                    ),
                ]))
            }
        };
        let base_rate = n as f64 / base_s;
        let tool = match db.name {
            "SQLite" => "one prepared-statement transaction",
            "PostgreSQL" => "psql \\copy (COPY)",
            _ => "mariadb LOAD DATA LOCAL INFILE",
        };
        r.add(
            &format!("db_sync_{}", db.name.to_lowercase()),
            &format!(
                "custos sync into {}, {n} sessions over TLS (each detail read and audited)",
                db.name
            ),
            format!("{sync_rate:.0} rows/s"),
            format!("{base_rate:.0} rows/s {tool}"),
            format!("{:.1}% of bulk", 100.0 * sync_rate / base_rate),
            json!({ "sessions": n, "rows": rows, "sync_s": took, "rows_per_s": sync_rate, "bulk_rows_per_s": base_rate, "bulk_s": base_s }),
        );
    }
}

/// The sessions table of a target as CSV (`\N` for NULL), for the bulk loads.
fn export_csv(dir: &Path, csv: &Path) {
    if csv.exists() {
        return;
    }
    // Written once, from the SQLite target (the first measured): every target holds the same rows.
    let src = dir.join("dbsync-target.db");
    let c = rusqlite::Connection::open(src).unwrap();
    let mut st = c
        .prepare(&format!("SELECT {COLS} FROM sessions ORDER BY session_id"))
        .unwrap();
    let n = st.column_count();
    let mut out = String::new();
    let mut q = st.query([]).unwrap();
    while let Some(row) = q.next().unwrap() {
        let cells: Vec<String> = (0..n)
            .map(|i| match row.get::<_, rusqlite::types::Value>(i).unwrap() {
                rusqlite::types::Value::Null => "\\N".to_string(),
                rusqlite::types::Value::Integer(v) => v.to_string(),
                rusqlite::types::Value::Text(t) => format!("\"{}\"", t.replace('"', "\"\"")),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    std::fs::write(csv, out).unwrap();
}

/// The same rows inserted by SQLite itself: one transaction, one prepared statement.
fn sqlite_bulk(url: &str, dir: &Path, n: usize) -> f64 {
    let src = rusqlite::Connection::open(url.trim_start_matches("sqlite:")).unwrap();
    let rows: Vec<Vec<rusqlite::types::Value>> = {
        let mut st = src
            .prepare(&format!("SELECT {COLS} FROM sessions"))
            .unwrap();
        let k = st.column_count();
        st.query_map([], |r| (0..k).map(|i| r.get(i)).collect())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(rows.len(), n);
    let path = dir.join("dbsync-bulk.db");
    let _ = std::fs::remove_file(&path);
    let mut dst = rusqlite::Connection::open(&path).unwrap();
    dst.pragma_update(None, "journal_mode", "WAL").unwrap();
    dst.pragma_update(None, "synchronous", "FULL").unwrap();
    dst.execute_batch(
        "CREATE TABLE sessions (session_id TEXT NOT NULL PRIMARY KEY, status TEXT, via TEXT, portal TEXT, skill TEXT, agent TEXT,
         customer_name TEXT, customer_email TEXT, question TEXT, external_ref TEXT, requested_at TEXT, accepted_at TEXT,
         ended_at TEXT, wait_s INTEGER, handle_s INTEGER, survey_rating INTEGER, survey_at TEXT, synced_at TEXT)",
    )
    .unwrap();
    let t = Instant::now();
    let tx = dst.transaction().unwrap();
    {
        let marks: Vec<String> = (1..=18).map(|i| format!("?{i}")).collect();
        let mut ins = tx
            .prepare(&format!(
                "INSERT INTO sessions ({COLS}) VALUES ({})",
                marks.join(", ")
            ))
            .unwrap();
        for row in &rows {
            ins.execute(rusqlite::params_from_iter(row.iter())).unwrap();
        }
    }
    tx.commit().unwrap();
    t.elapsed().as_secs_f64()
}

struct MyUrl {
    user: String,
    password: String,
    host: String,
    port: String,
    db: String,
}

impl MyUrl {
    fn args(&self) -> Vec<String> {
        let mut a = vec![
            format!("--host={}", self.host),
            format!("--port={}", self.port),
            format!("--user={}", self.user),
            format!("--password={}", self.password),
        ];
        if !self.db.is_empty() {
            a.push(format!("--database={}", self.db));
        }
        a
    }
}

fn parse_mysql(url: &str) -> MyUrl {
    let rest = url.split_once("://").unwrap().1;
    let (auth, hostpart) = rest.rsplit_once('@').unwrap();
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    MyUrl {
        user: user.into(),
        password: password.into(),
        host: host.into(),
        port: port.into(),
        db: db.into(),
    }
}
