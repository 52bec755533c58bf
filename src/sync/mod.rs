//! `custos sync`: keeps a customer's own database current with the appliance's session records,
//! in the documented schema (docs/database-schema.md).
//!
//! The source is always the Sessions API, over the appliance's Unix socket or pinned HTTPS with an
//! API token, so a sync inside the appliance and one on another host behave alike and every read
//! of content is authorized and audited like any other. Pages come in change order from the
//! cursor; each page's rows and the cursor after it are committed in one transaction of the
//! target, so a crash (even `kill -9`) loses nothing and duplicates nothing: the next run starts
//! from the last committed cursor and upserts again what it had not committed.
//!
//! `--follow` keeps going: an empty page is asked again with `wait`, which the appliance answers
//! as soon as anything changes (a long poll), so changes arrive within a second.

pub mod mysql;
pub mod postgres;
pub mod service;
pub mod sqlite;

use serde_json::Value;

use crate::client::{Endpoint, percent_encode as enc};
use crate::export::safe_name;

/// The target schema version this build writes (docs/database-schema.md).
pub const SCHEMA_VERSION: i64 = 2;

/// Indexes version 2 added for the usual BI questions (by time, agent, portal): (name, table,
/// column).
pub const INDEXES: [(&str, &str, &str); 3] = [
    ("sessions_requested_at", "sessions", "requested_at"),
    ("sessions_agent", "sessions", "agent"),
    ("sessions_portal", "sessions", "portal"),
];

/// Sessions per page.
const PAGE: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the appliance: {0}")]
    Source(String),
    #[error("the target database: {0}")]
    Target(String),
    #[error("{0}")]
    Usage(String),
}

/// A value bound into a target statement; nulls keep their type, which typed drivers need.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Text(Option<String>),
    Int(Option<i64>),
}

/// A table of the target schema: its name, its columns (the key columns first) and their types.
pub struct Table {
    pub name: &'static str,
    /// Columns that identify a row (the first is always `session_id`).
    pub key: &'static [&'static str],
    pub columns: &'static [(&'static str, Type)],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Text,
    Int,
}

use Type::{Int, Text};

pub const SESSIONS: Table = Table {
    name: "sessions",
    key: &["session_id"],
    columns: &[
        ("session_id", Text),
        ("status", Text),
        ("via", Text),
        ("portal", Text),
        ("skill", Text),
        ("agent", Text),
        ("customer_name", Text),
        ("customer_email", Text),
        ("question", Text),
        ("external_ref", Text),
        ("requested_at", Text),
        ("accepted_at", Text),
        ("ended_at", Text),
        ("wait_s", Int),
        ("handle_s", Int),
        ("survey_rating", Int),
        ("survey_at", Text),
        ("synced_at", Text),
    ],
};

/// The tables holding a session's parts: rewritten whole with the session.
pub const PARTS: [Table; 6] = [
    Table {
        name: "request_fields",
        key: &["session_id", "name"],
        columns: &[("session_id", Text), ("name", Text), ("value", Text)],
    },
    Table {
        name: "participants",
        key: &["session_id", "position"],
        columns: &[
            ("session_id", Text),
            ("position", Int),
            ("kind", Text),
            ("name", Text),
            ("joined_at", Text),
            ("left_at", Text),
        ],
    },
    Table {
        name: "chat_messages",
        key: &["session_id", "position"],
        columns: &[
            ("session_id", Text),
            ("position", Int),
            ("at", Text),
            ("type", Text),
            ("sender", Text),
            ("sender_name", Text),
            ("text", Text),
            ("url", Text),
        ],
    },
    Table {
        name: "files",
        key: &["session_id", "file_id"],
        columns: &[
            ("session_id", Text),
            ("file_id", Text),
            ("name", Text),
            ("size", Int),
            ("sha256", Text),
            ("sender", Text),
            ("sent_at", Text),
        ],
    },
    Table {
        name: "diagnostics",
        key: &["session_id", "position"],
        columns: &[
            ("session_id", Text),
            ("position", Int),
            ("collected_at", Text),
            ("os_name", Text),
            ("os_version", Text),
            ("kernel", Text),
            ("hostname", Text),
            ("document", Text),
        ],
    },
    Table {
        name: "recordings",
        key: &["session_id", "object_id"],
        columns: &[
            ("session_id", Text),
            ("object_id", Text),
            ("class", Text),
            ("state", Text),
            ("created_at", Text),
            ("closed_at", Text),
            ("bytes", Int),
            ("sha256", Text),
        ],
    },
];

/// One session as the target stores it: its row and its parts' rows, per table.
#[derive(Debug, PartialEq)]
pub struct SessionRows {
    pub id: String,
    pub session: Vec<Val>,
    /// Rows of each of `PARTS`, in order.
    pub parts: Vec<Vec<Vec<Val>>>,
}

fn text(v: &Value) -> Val {
    Val::Text(match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    })
}

fn int(v: &Value) -> Val {
    Val::Int(v.as_i64())
}

/// Maps a session's detail (`GET /api/v1/sessions/ID`) to its rows.
pub fn rows(d: &Value, synced_at: &str) -> Result<SessionRows, SyncError> {
    let id = d["session_id"]
        .as_str()
        .ok_or_else(|| SyncError::Source("a session detail without session_id".into()))?
        .to_string();
    let t = &d["timings"];
    let session = vec![
        text(&d["session_id"]),
        text(&d["status"]),
        text(&d["via"]),
        text(&d["portal"]),
        text(&d["skill"]),
        text(&d["agent"]),
        text(&d["request"]["name"]),
        text(&d["request"]["email"]),
        text(&d["request"]["question"]),
        text(&d["ref"]),
        text(&t["requested_at"]),
        text(&t["accepted_at"]),
        text(&t["ended_at"]),
        int(&t["wait_s"]),
        int(&t["handle_s"]),
        int(&d["survey"]["rating"]),
        text(&d["survey"]["at"]),
        Val::Text(Some(synced_at.to_string())),
    ];
    let sid = || Val::Text(Some(id.clone()));
    let pos = |i: usize| Val::Int(Some(i as i64));
    let list = |k: &str| d[k].as_array().cloned().unwrap_or_default();
    let fields = d["fields"]
        .as_object()
        .map(|f| {
            f.iter()
                .map(|(k, v)| vec![sid(), Val::Text(Some(k.clone())), text(v)])
                .collect()
        })
        .unwrap_or_default();
    let participants = list("participants")
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                sid(),
                pos(i),
                text(&p["kind"]),
                text(&p["name"]),
                text(&p["joined_at"]),
                text(&p["left_at"]),
            ]
        })
        .collect();
    let chat = list("transcript")
        .iter()
        .enumerate()
        .map(|(i, m)| {
            // A message marked sensitive keeps its place but not its text.
            let body = if m["sensitive"] == true {
                Val::Text(None)
            } else {
                text(&m["text"])
            };
            vec![
                sid(),
                pos(i),
                text(&m["at"]),
                text(&m["type"]),
                text(&m["from"]),
                text(&m["name"]),
                body,
                text(&m["url"]),
            ]
        })
        .collect();
    let files = list("files")
        .iter()
        .map(|f| {
            vec![
                sid(),
                text(&f["file_id"]),
                text(&f["name"]),
                int(&f["size"]),
                text(&f["sha256"]),
                text(&f["from"]),
                text(&f["at"]),
            ]
        })
        .collect();
    let diagnostics = list("diagnostics")
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let os = &g["os"];
            vec![
                sid(),
                pos(i),
                text(&g["collected_at"]),
                text(&os["name"]),
                text(&os["version"]),
                text(&os["kernel"]),
                text(&os["hostname"]),
                Val::Text(Some(g.to_string())),
            ]
        })
        .collect();
    let recordings = list("recordings")
        .iter()
        .map(|r| {
            vec![
                sid(),
                text(&r["object"]),
                text(&r["class"]),
                text(&r["state"]),
                text(&r["created_at"]),
                text(&r["closed_at"]),
                int(&r["bytes"]),
                text(&r["sha256"]),
            ]
        })
        .collect();
    Ok(SessionRows {
        id,
        session,
        parts: vec![fields, participants, chat, files, diagnostics, recordings],
    })
}

/// Where the rows go: a database of the customer's, in the schema of docs/database-schema.md.
pub enum Target {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
    Mysql(mysql::Mysql),
}

impl Target {
    /// Opens a target from its URL: `sqlite:PATH`, `postgres://…` (`postgresql://…`) or
    /// `mysql://…` (MariaDB too).
    pub async fn open(url: &str) -> Result<Self, SyncError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            return Ok(Target::Sqlite(sqlite::Sqlite::open(path)?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(postgres::Postgres::connect(url).await?));
        }
        if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            return Ok(Target::Mysql(mysql::Mysql::connect(url).await?));
        }
        Err(SyncError::Usage(format!(
            "{}: give sqlite:PATH, postgres://USER:PASSWORD@HOST/DB or mysql://USER:PASSWORD@HOST/DB",
            url.split_once("://").map_or(url, |(scheme, _)| scheme)
        )))
    }

    /// Creates the schema, or migrates it to `SCHEMA_VERSION`; refuses a newer one.
    pub async fn prepare(&mut self) -> Result<(), SyncError> {
        match self {
            Target::Sqlite(t) => t.prepare(),
            Target::Postgres(t) => t.prepare().await,
            Target::Mysql(t) => t.prepare().await,
        }
    }

    /// The cursor of the last committed page of this appliance's stream.
    pub async fn cursor(
        &mut self,
        appliance: &str,
        stream: &str,
    ) -> Result<Option<String>, SyncError> {
        match self {
            Target::Sqlite(t) => t.cursor(appliance, stream),
            Target::Postgres(t) => t.cursor(appliance, stream).await,
            Target::Mysql(t) => t.cursor(appliance, stream).await,
        }
    }

    /// Writes a page's sessions and the cursor after it, in one transaction.
    pub async fn apply(
        &mut self,
        appliance: &str,
        stream: &str,
        sessions: &[SessionRows],
        cursor: &str,
    ) -> Result<(), SyncError> {
        match self {
            Target::Sqlite(t) => t.apply(appliance, stream, sessions, cursor),
            Target::Postgres(t) => t.apply(appliance, stream, sessions, cursor).await,
            Target::Mysql(t) => t.apply(appliance, stream, sessions, cursor).await,
        }
    }
}

/// How a target says "insert, or update the row with this key".
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// SQLite and PostgreSQL: `ON CONFLICT (key) DO UPDATE SET c = excluded.c`.
    OnConflict,
    /// MariaDB and MySQL: `ON DUPLICATE KEY UPDATE c = VALUES(c)`.
    OnDuplicateKey,
}

/// The statements every target runs, with its own parameter marks (`?1`, `$1` or `?`).
pub(crate) struct Statements {
    pub upsert_session: String,
    /// Per part table: delete a session's rows, insert one row.
    pub parts: Vec<(String, String)>,
}

impl Statements {
    pub fn new(mark: impl Fn(usize) -> String, upsert: Upsert) -> Self {
        let insert = |t: &Table| {
            let cols: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
            let marks: Vec<String> = (1..=cols.len()).map(&mark).collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                t.name,
                cols.join(", "),
                marks.join(", ")
            )
        };
        let updates: Vec<String> = SESSIONS
            .columns
            .iter()
            .skip(1)
            .map(|(c, _)| match upsert {
                Upsert::OnConflict => format!("{c} = excluded.{c}"),
                Upsert::OnDuplicateKey => format!("{c} = VALUES({c})"),
            })
            .collect();
        let clause = match upsert {
            Upsert::OnConflict => "ON CONFLICT (session_id) DO UPDATE SET",
            Upsert::OnDuplicateKey => "ON DUPLICATE KEY UPDATE",
        };
        Statements {
            upsert_session: format!("{} {clause} {}", insert(&SESSIONS), updates.join(", ")),
            parts: PARTS
                .iter()
                .map(|t| {
                    (
                        format!("DELETE FROM {} WHERE session_id = {}", t.name, mark(1)),
                        insert(t),
                    )
                })
                .collect(),
        }
    }
}

/// A target's column types: text in a key, other text, integers.
pub(crate) struct Types {
    pub key_text: &'static str,
    pub text: &'static str,
    pub int: &'static str,
}

/// `CREATE TABLE IF NOT EXISTS` for a table of the schema, in the target's types.
pub(crate) fn create_sql(t: &Table, types: &Types) -> String {
    let cols: Vec<String> = t
        .columns
        .iter()
        .map(|(name, ty)| {
            let ty = match ty {
                Type::Text if t.key.contains(name) => types.key_text,
                Type::Text => types.text,
                Type::Int => types.int,
            };
            let not_null = if t.key.contains(name) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{name} {ty}{not_null}")
        })
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))",
        t.name,
        cols.join(", "),
        t.key.join(", ")
    )
}

/// The refusal of a database a newer custos wrote.
pub(crate) fn newer(v: i64) -> SyncError {
    SyncError::Target(format!(
        "the database holds schema version {v}, newer than this custos writes ({SCHEMA_VERSION}); upgrade custos"
    ))
}

/// What to sync.
pub struct Options {
    pub since: Option<String>,
    pub until: Option<String>,
    pub follow: bool,
    /// Also copy each session's files here (`SESSION/FILE_ID-NAME`), each read audited.
    pub files_dir: Option<std::path::PathBuf>,
    /// Also copy each session's screen recordings here, decrypted (`SESSION/OBJECT.rec`, the
    /// record stream of docs/formats/recording.md), each opening audited.
    pub recordings_dir: Option<std::path::PathBuf>,
    /// Stop after this many pages (for tests and measured runs); none: until caught up.
    pub max_pages: Option<u64>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub pages: u64,
    pub sessions: u64,
}

async fn get(ep: &Endpoint, token: &str, path: &str) -> Result<Value, SyncError> {
    let r = ep
        .request(hyper::Method::GET, path, Some(token), None)
        .await
        .map_err(|e| SyncError::Source(format!("cannot reach the appliance: {e}")))?;
    if r.status >= 400 {
        return Err(SyncError::Source(format!(
            "GET {}: {} {}",
            path.split('?').next().unwrap_or(path),
            r.status,
            r.error_message()
        )));
    }
    r.json()
        .map_err(|e| SyncError::Source(format!("GET {path}: {e}")))
}

/// Copies a session's files into `dir/SESSION/` (owner-only), skipping those already there whole;
/// each copy is checked against the SHA-256 the appliance recorded.
async fn copy_files(
    ep: &Endpoint,
    token: &str,
    dir: &std::path::Path,
    sid: &str,
    detail: &Value,
) -> Result<(), SyncError> {
    let files = detail["files"].as_array().cloned().unwrap_or_default();
    if files.is_empty() {
        return Ok(());
    }
    let sdir = session_dir(dir, sid)?;
    for f in files {
        let (Some(fid), Some(want)) = (f["file_id"].as_str(), f["sha256"].as_str()) else {
            continue;
        };
        let path = sdir.join(format!(
            "{}-{}",
            safe_name(fid),
            safe_name(&s_of(&f["name"]))
        ));
        if std::fs::metadata(&path).is_ok_and(|m| Some(m.len()) == f["size"].as_u64()) {
            continue;
        }
        let r = fetch(
            ep,
            token,
            &format!(
                "/api/v1/sessions/{}/files/{}?reason=database%20sync",
                enc(sid),
                enc(fid)
            ),
            &format!("file {fid} of {sid}"),
        )
        .await?;
        if hex::encode(crate::crypto::sha256(&r.body)) != want {
            return Err(SyncError::Source(format!(
                "file {fid} of {sid} does not match its recorded SHA-256"
            )));
        }
        write_private(&path, &r.body)?;
    }
    Ok(())
}

/// A GET whose error names `what`.
async fn fetch(
    ep: &Endpoint,
    token: &str,
    path: &str,
    what: &str,
) -> Result<crate::client::Response, SyncError> {
    let r = ep
        .request(hyper::Method::GET, path, Some(token), None)
        .await
        .map_err(|e| SyncError::Source(format!("cannot reach the appliance: {e}")))?;
    if r.status >= 400 {
        return Err(SyncError::Source(format!(
            "{what}: {} {}",
            r.status,
            r.error_message()
        )));
    }
    Ok(r)
}

/// A directory for one session's copies, owner-only.
fn session_dir(dir: &std::path::Path, sid: &str) -> Result<std::path::PathBuf, SyncError> {
    use std::os::unix::fs::DirBuilderExt;
    let sdir = dir.join(sid);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&sdir)
        .map_err(|e| SyncError::Target(format!("{}: {e}", sdir.display())))?;
    Ok(sdir)
}

/// Writes a copy (mode 0600) through a temporary file, synced, then renamed into place.
fn write_private(path: &std::path::Path, data: &[u8]) -> Result<(), SyncError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let local = |e: std::io::Error, what: &std::path::Path| {
        SyncError::Target(format!("{}: {e}", what.display()))
    };
    let tmp = path.with_extension("partial");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| local(e, &tmp))?;
    out.write_all(data)
        .and_then(|()| out.sync_all())
        .map_err(|e| local(e, &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| local(e, path))
}

/// Copies a session's sealed screen recordings, decrypted, checked against their SHA-256. One
/// audited `recording.view` (reason "database sync") per session that has any.
async fn copy_recordings(
    ep: &Endpoint,
    token: &str,
    dir: &std::path::Path,
    sid: &str,
    detail: &Value,
) -> Result<(), SyncError> {
    let wanted: Vec<&Value> = detail["recordings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["class"] == "recording" && o["state"] != "open" && o["state"] != "shredded")
        .collect();
    let sdir = dir.join(sid);
    let missing: Vec<&Value> = wanted
        .into_iter()
        .filter(|o| {
            let path = sdir.join(format!("{}.rec", safe_name(&s_of(&o["object"]))));
            !std::fs::metadata(&path).is_ok_and(|m| Some(m.len()) == o["bytes"].as_u64())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let sdir = session_dir(dir, sid)?;
    let index = get(
        ep,
        token,
        &format!(
            "/api/v1/sessions/{}/recording?reason=database%20sync",
            enc(sid)
        ),
    )
    .await?;
    let ticket = s_of(&index["ticket"]);
    for o in missing {
        let object = s_of(&o["object"]);
        let mut data = Vec::new();
        loop {
            let r = fetch(
                ep,
                token,
                &format!(
                    "/api/v1/sessions/{}/recording/{}/data?offset={}&ticket={}",
                    enc(sid),
                    enc(&object),
                    data.len(),
                    enc(&ticket)
                ),
                &format!("recording {object} of {sid}"),
            )
            .await?;
            let header = |name: &str| {
                r.headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<usize>().ok())
            };
            let (next, total) = (header("x-custos-next-offset"), header("x-custos-length"));
            data.extend_from_slice(&r.body);
            match (next, total) {
                (Some(n), Some(t)) if n == data.len() && n < t && !r.body.is_empty() => continue,
                (Some(n), Some(t)) if n == data.len() && n == t => break,
                _ => {
                    return Err(SyncError::Source(format!(
                        "recording {object} of {sid}: the appliance's pieces do not add up"
                    )));
                }
            }
        }
        if o["sha256"].as_str() != Some(hex::encode(crate::crypto::sha256(&data)).as_str()) {
            return Err(SyncError::Source(format!(
                "recording {object} of {sid} does not match its recorded SHA-256"
            )));
        }
        write_private(&sdir.join(format!("{}.rec", safe_name(&object))), &data)?;
    }
    Ok(())
}

fn s_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Runs a sync: pages from the stored cursor until caught up (or forever with `follow`).
pub async fn run(
    ep: &Endpoint,
    token: &str,
    target: &mut Target,
    opts: &Options,
    mut progress: impl FnMut(&Report),
) -> Result<Report, SyncError> {
    target.prepare().await?;
    let stream = match (&opts.since, &opts.until) {
        (None, None) => "all".to_string(),
        (s, u) => format!(
            "range {} {}",
            s.as_deref().unwrap_or("-"),
            u.as_deref().unwrap_or("-")
        ),
    };
    let mut filter = String::new();
    if let Some(s) = &opts.since {
        filter.push_str(&format!("&since={}", enc(s)));
    }
    if let Some(u) = &opts.until {
        filter.push_str(&format!("&until={}", enc(u)));
    }
    let mut report = Report::default();
    let mut appliance: Option<String> = None;
    let mut cursor: Option<String> = None;
    let mut idle = false;
    loop {
        if opts.max_pages.is_some_and(|m| report.pages >= m) {
            break;
        }
        let mut path = format!("/api/v1/sessions?limit={PAGE}{filter}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&after={}", enc(c)));
        }
        if idle {
            path.push_str("&wait=25");
        }
        let page = get(ep, token, &path).await?;
        let id = page["appliance_id"]
            .as_str()
            .ok_or_else(|| SyncError::Source("the sessions page names no appliance".into()))?
            .to_string();
        if appliance.is_none() {
            // The first answer names the appliance; continue from where its stream stands.
            cursor = target.cursor(&id, &stream).await?;
            appliance = Some(id);
            if cursor.is_some() {
                continue;
            }
        } else if appliance.as_deref() != Some(id.as_str()) {
            return Err(SyncError::Source(format!(
                "the appliance changed from {} to {id} during the sync",
                appliance.as_deref().unwrap_or("")
            )));
        }
        let sessions = page["sessions"].as_array().cloned().unwrap_or_default();
        let next = page["next_cursor"]
            .as_str()
            .ok_or_else(|| SyncError::Source("the sessions page has no next_cursor".into()))?
            .to_string();
        if sessions.is_empty() {
            if !opts.follow {
                break;
            }
            idle = true;
            continue;
        }
        idle = false;
        let now = crate::model::now_rfc3339();
        let mut rows_out = Vec::with_capacity(sessions.len());
        for s in &sessions {
            let sid = s["session_id"]
                .as_str()
                .ok_or_else(|| SyncError::Source("a session without session_id".into()))?;
            let d = get(
                ep,
                token,
                &format!("/api/v1/sessions/{}?reason=database%20sync", enc(sid)),
            )
            .await?;
            if let Some(dir) = &opts.files_dir {
                copy_files(ep, token, dir, sid, &d).await?;
            }
            if let Some(dir) = &opts.recordings_dir {
                copy_recordings(ep, token, dir, sid, &d).await?;
            }
            rows_out.push(rows(&d, &now)?);
        }
        let appliance_id = appliance.clone().unwrap_or_default();
        target
            .apply(&appliance_id, &stream, &rows_out, &next)
            .await?;
        cursor = Some(next);
        report.pages += 1;
        report.sessions += rows_out.len() as u64;
        progress(&report);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_detail_maps_to_rows_and_sensitive_text_stays_behind() {
        let d = json!({
            "session_id": "sess_a", "status": "ended", "via": "portal", "portal": "support",
            "skill": "general", "agent": "alice", "ref": "T-1",
            "request": { "name": "Pia", "email": "pia@example.org", "question": "q" },
            "fields": { "plan": "gold" },
            "timings": { "requested_at": "t0", "accepted_at": "t1", "ended_at": "t2", "wait_s": 3, "handle_s": 40 },
            "participants": [{ "kind": "customer", "name": "Pia", "joined_at": "t0", "left_at": null }],
            "transcript": [
                { "type": "chat", "from": "customer", "name": "Pia", "text": "my card 4111", "at": "t1", "sensitive": true },
                { "type": "url", "from": "agent", "name": "alice", "url": "https://kb/1", "at": "t1" }
            ],
            "files": [{ "file_id": "f1", "name": "a.log", "size": 10, "sha256": "ab", "from": "customer", "at": "t1" }],
            "survey": { "rating": 5, "at": "t3" },
            "diagnostics": [],
            "recordings": [{ "object": "o1", "class": "transcript", "state": "sealed", "created_at": "t0", "closed_at": "t2", "bytes": 99, "sha256": "cd" }]
        });
        let r = rows(&d, "now").unwrap();
        assert_eq!(r.session.len(), SESSIONS.columns.len());
        assert_eq!(r.session[13], Val::Int(Some(3)));
        assert_eq!(r.session[15], Val::Int(Some(5)));
        for (t, rows) in PARTS.iter().zip(&r.parts) {
            assert!(
                rows.iter().all(|row| row.len() == t.columns.len()),
                "{}",
                t.name
            );
        }
        let chat = &r.parts[2];
        assert_eq!(chat[0][6], Val::Text(None), "sensitive text is not synced");
        assert_eq!(chat[1][7], Val::Text(Some("https://kb/1".into())));
        assert_eq!(
            r.parts[0],
            vec![vec![
                Val::Text(Some("sess_a".into())),
                Val::Text(Some("plan".into())),
                Val::Text(Some("gold".into()))
            ]]
        );
        // No survey: nulls of the right type.
        let mut d2 = d.clone();
        d2["survey"] = Value::Null;
        let r2 = rows(&d2, "now").unwrap();
        assert_eq!(
            (&r2.session[15], &r2.session[16]),
            (&Val::Int(None), &Val::Text(None))
        );
        assert!(rows(&json!({}), "now").is_err());
    }
}
