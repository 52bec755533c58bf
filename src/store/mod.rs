//! All SQL lives here: the schema, its versioned migrations, and one function per query.
//!
//! The database is SQLite in WAL mode with `synchronous=FULL` (a committed transaction survives
//! power loss), foreign keys on, and `secure_delete` on so that deleted rows (wrapped keys of
//! shredded objects) are overwritten, not left in free pages. Several processes may open it at
//! once (the server and the CLI); writers serialize through `BEGIN IMMEDIATE` and a busy timeout.
//!
//! Callers above this module never see `rusqlite`; they get plain Rust values.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::model::{ObjectId, ObjectState, Role};

mod integrations;
mod reports;
mod search;
pub use integrations::{DeliveryRow, KbArticle, NewDelivery, WebhookRow};
pub use reports::{GroupBy, ReportRow, report_csv};
pub use search::Term;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database schema version {found} is newer than this build understands ({known}); upgrade Custos"
    )]
    TooNew { found: i64, known: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored value is damaged: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Each entry migrates from version `index` to `index + 1`. Never edit a landed entry; append.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    role                 TEXT NOT NULL CHECK (role IN ('admin', 'agent', 'compliance', 'auditor')),
    password_hash        TEXT NOT NULL,
    must_change_password INTEGER NOT NULL DEFAULT 0,
    disabled             INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL
) STRICT;

CREATE TABLE auth_tokens (
    token_hash BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id),
    kind       TEXT NOT NULL CHECK (kind IN ('session', 'api')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE TABLE keks (
    epoch      INTEGER PRIMARY KEY,
    wrapped    BLOB NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE objects (
    id            TEXT PRIMARY KEY,
    session_id    TEXT,
    class         TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('open', 'sealed', 'truncated', 'shredded')),
    created_at    TEXT NOT NULL,
    closed_at     TEXT,
    chunks        INTEGER,
    plain_len     INTEGER,
    cipher_len    INTEGER,
    plain_sha256  BLOB,
    cipher_sha256 BLOB
) STRICT;
CREATE INDEX objects_session ON objects(session_id);
CREATE INDEX objects_state ON objects(state);

CREATE TABLE object_keys (
    object_id TEXT PRIMARY KEY REFERENCES objects(id),
    epoch     INTEGER NOT NULL REFERENCES keks(epoch),
    wrapped   BLOB NOT NULL
) STRICT;
CREATE INDEX object_keys_epoch ON object_keys(epoch);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    entry     BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    time      TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_action ON audit_log(action);
CREATE INDEX audit_log_target ON audit_log(target);

CREATE TABLE audit_tree (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) STRICT, WITHOUT ROWID;

CREATE TABLE checkpoints (
    size       INTEGER PRIMARY KEY,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
"#,
    r#"
CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    portal              TEXT NOT NULL,
    skill               TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('waiting', 'active', 'ended', 'cancelled')),
    via                 TEXT NOT NULL CHECK (via IN ('portal', 'api', 'code')),
    customer_name       TEXT NOT NULL,
    customer_email      TEXT NOT NULL,
    question            TEXT NOT NULL,
    fields              TEXT NOT NULL,
    external_ref        TEXT,
    customer_token_hash BLOB NOT NULL,
    agent_id            INTEGER REFERENCES users(id),
    recording           INTEGER NOT NULL,
    requested_at        TEXT NOT NULL,
    accepted_at         TEXT,
    ended_at            TEXT,
    survey_rating       INTEGER,
    survey_at           TEXT
) STRICT;
CREATE INDEX sessions_status ON sessions(status);
CREATE INDEX sessions_ref ON sessions(external_ref);

CREATE TABLE participants (
    id         INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    kind       TEXT NOT NULL CHECK (kind IN ('customer', 'agent')),
    user_id    INTEGER REFERENCES users(id),
    name       TEXT NOT NULL,
    joined_at  TEXT NOT NULL,
    left_at    TEXT
) STRICT;
CREATE INDEX participants_session ON participants(session_id);

CREATE TABLE session_files (
    id         TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    object_id  TEXT NOT NULL REFERENCES objects(id),
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     BLOB NOT NULL,
    sender     TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;
CREATE INDEX session_files_session ON session_files(session_id);

CREATE TABLE codes (
    code         TEXT PRIMARY KEY,
    agent_id     INTEGER NOT NULL REFERENCES users(id),
    external_ref TEXT,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    used_at      INTEGER,
    session_id   TEXT,
    cancelled    INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE agent_skills (
    user_id INTEGER NOT NULL REFERENCES users(id),
    portal  TEXT NOT NULL,
    skill   TEXT NOT NULL,
    PRIMARY KEY (user_id, portal, skill)
) STRICT;

-- The data key wrapped to the offline recovery recipient (an age file), if one is configured.
ALTER TABLE object_keys ADD COLUMN recovery BLOB;
"#,
    r#"
-- When retention cleared the personal details of a session's record (its "metadata" class).
ALTER TABLE sessions ADD COLUMN cleared_at TEXT;

-- A change counter for incremental sync: every change to a session (or a file added to it)
-- gives it the next number. Writers are serialized, so numbers become visible in order: a
-- reader paging by "after N" sees no gaps and no duplicates.
ALTER TABLE sessions ADD COLUMN updated_seq INTEGER NOT NULL DEFAULT 0;

-- API tokens for integrations: a label, and the permissions they are limited to (JSON list; NULL
-- means everything the user's role allows).
ALTER TABLE auth_tokens ADD COLUMN name TEXT;
ALTER TABLE auth_tokens ADD COLUMN scopes TEXT;
CREATE INDEX sessions_updated_seq ON sessions(updated_seq);
CREATE TRIGGER sessions_seq_insert AFTER INSERT ON sessions BEGIN
    UPDATE sessions SET updated_seq = (SELECT COALESCE(MAX(updated_seq), 0) + 1 FROM sessions) WHERE id = NEW.id;
END;
CREATE TRIGGER sessions_seq_update AFTER UPDATE OF status, skill, agent_id, accepted_at, ended_at, survey_rating, survey_at, cleared_at ON sessions BEGIN
    UPDATE sessions SET updated_seq = (SELECT COALESCE(MAX(updated_seq), 0) + 1 FROM sessions) WHERE id = NEW.id;
END;
CREATE TRIGGER sessions_seq_file AFTER INSERT ON session_files BEGIN
    UPDATE sessions SET updated_seq = (SELECT COALESCE(MAX(updated_seq), 0) + 1 FROM sessions) WHERE id = NEW.session_id;
END;

CREATE TABLE policies (
    name         TEXT PRIMARY KEY,
    body         TEXT NOT NULL,
    installed_at TEXT NOT NULL
) STRICT;

CREATE TABLE holds (
    id             INTEGER PRIMARY KEY,
    scope          TEXT NOT NULL CHECK (scope IN ('session', 'ref', 'email', 'portal', 'range')),
    value          TEXT NOT NULL,
    reason         TEXT NOT NULL,
    case_id        TEXT NOT NULL,
    placed_by      TEXT NOT NULL,
    placed_at      TEXT NOT NULL,
    released_by    TEXT,
    released_at    TEXT,
    release_reason TEXT
) STRICT;
"#,
    r#"
-- Webhook endpoints. The secret (hex) signs every delivery with HMAC-SHA256; it is shown once
-- when the endpoint is created. A deleted endpoint keeps its row so its delivery log stays
-- readable.
CREATE TABLE webhooks (
    id          INTEGER PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    description TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    deleted_at  TEXT
) STRICT;

-- The durable outbox: one row per message to send on one channel ("webhook:ID" or "email").
-- Rows are written in the transaction that records the event, so nothing is lost across a
-- restart; workers move them from pending to delivered, or to failed after the give-up time.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY,
    channel     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_ms     INTEGER NOT NULL,
    last_status INTEGER,
    last_error  TEXT,
    done_ms     INTEGER
) STRICT;
CREATE INDEX deliveries_due ON deliveries(state, next_ms);
CREATE INDEX deliveries_channel ON deliveries(channel, id);

-- How far each syslog sink has forwarded the audit log and the checkpoints.
CREATE TABLE forward_cursors (
    sink       TEXT PRIMARY KEY,
    audit_seq  INTEGER NOT NULL,
    checkpoint INTEGER NOT NULL
) STRICT;

-- Knowledge-base articles (from the articles folder or the API), their full-text index and their
-- version rules ("package below version: suggest this article, or push this URL").
CREATE TABLE kb_articles (
    slug       TEXT PRIMARY KEY,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    tags       TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('folder', 'api')),
    push_url   TEXT,
    updated_at TEXT NOT NULL
) STRICT;
CREATE VIRTUAL TABLE kb_fts USING fts5(slug UNINDEXED, title, body, tags, tokenize = 'porter unicode61');
CREATE TABLE kb_rules (
    slug    TEXT NOT NULL REFERENCES kb_articles(slug) ON DELETE CASCADE,
    package TEXT NOT NULL,
    below   TEXT NOT NULL
) STRICT;
CREATE INDEX kb_rules_package ON kb_rules(package);

-- The transcript word index: which sessions' transcripts hold a word, the word stored only as
-- the first 16 bytes of its HMAC-SHA256 under a key derived from the master key (a blind index:
-- the database alone does not tell which words). Rows go when the transcript is shredded.
CREATE TABLE transcript_terms (
    term       BLOB NOT NULL,
    session_id TEXT NOT NULL,
    PRIMARY KEY (term, session_id)
) STRICT, WITHOUT ROWID;
"#,
    r#"
-- Today's counts on the console dashboard and date-range selections read sessions by time.
CREATE INDEX sessions_requested ON sessions(requested_at);
"#,
    r#"
-- Where each keyframe of a screen recording starts (docs/formats/recording.md), so that a
-- player seeks without reading the recording from its start. Times and offsets only.
CREATE TABLE recording_keyframes (
    object_id TEXT NOT NULL REFERENCES objects(id),
    at_ms     INTEGER NOT NULL,
    offset    INTEGER NOT NULL,
    PRIMARY KEY (object_id, offset)
) STRICT, WITHOUT ROWID;
"#,
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Counts write transactions committed by this process, so that a long poll (the sessions
/// listing's `wait`) answers as soon as something changed.
static COMMITS: std::sync::OnceLock<tokio::sync::watch::Sender<u64>> = std::sync::OnceLock::new();

/// Changes whenever a write transaction of this process commits.
pub fn commits() -> tokio::sync::watch::Receiver<u64> {
    COMMITS
        .get_or_init(|| tokio::sync::watch::channel(0).0)
        .subscribe()
}

/// One connection to the appliance database.
pub struct Store {
    conn: Connection,
}

#[derive(Clone, Debug)]
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub must_change_password: bool,
    pub disabled: bool,
    pub created_at: String,
}

#[derive(Clone, Debug)]
pub struct ObjectRow {
    pub id: ObjectId,
    pub session_id: Option<String>,
    pub class: String,
    pub state: ObjectState,
    pub created_at: String,
    pub closed_at: Option<String>,
    pub chunks: Option<u64>,
    pub plain_len: Option<u64>,
    pub cipher_len: Option<u64>,
    pub plain_sha256: Option<[u8; 32]>,
    pub cipher_sha256: Option<[u8; 32]>,
}

/// What a sealed or recovered object contained.
#[derive(Clone, Debug)]
pub struct ObjectClose {
    pub state: ObjectState,
    pub closed_at: String,
    pub chunks: u64,
    pub plain_len: u64,
    pub cipher_len: u64,
    pub plain_sha256: [u8; 32],
    pub cipher_sha256: [u8; 32],
}

/// An API token as listed: its id (the first 8 bytes of its hash, hex), user, label, scopes
/// (JSON) and expiry.
#[derive(Clone, Debug)]
pub struct ApiTokenRow {
    pub id: String,
    pub user: String,
    pub name: Option<String>,
    pub scopes: Option<String>,
    pub expires_at: i64,
}

/// An audit entry to store: its bytes, leaf hash, and the fields copied out for searching.
pub struct NewAuditRow<'a> {
    pub seq: u64,
    pub entry: &'a [u8],
    pub leaf: &'a [u8; 32],
    pub time: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
}

#[derive(Clone, Debug)]
pub struct AuditRow {
    pub seq: u64,
    pub entry: Vec<u8>,
    pub leaf_hash: Vec<u8>,
}

fn hash32(v: Option<Vec<u8>>, what: &str) -> Result<Option<[u8; 32]>> {
    v.map(|b| {
        b.try_into()
            .map_err(|_| StoreError::Corrupt(format!("{what} is not 32 bytes")))
    })
    .transpose()
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        // SQLite gives the -wal and -shm files the database file's mode.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        let mut store = Self { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` inside a write transaction taken up front, so that concurrent writers in other
    /// processes queue instead of failing half-way.
    pub fn write<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&Tx(&tx))?;
        tx.commit()?;
        COMMITS
            .get_or_init(|| tokio::sync::watch::channel(0).0)
            .send_modify(|n| *n += 1);
        Ok(out)
    }

    /// Runs `f` on a read snapshot.
    pub fn read<T>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&Tx(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// `PRAGMA integrity_check`: "ok" or the first problems SQLite found.
    pub fn integrity_check(&self) -> Result<String> {
        let mut stmt = self.conn.prepare("PRAGMA integrity_check")?;
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(rows.join("; "))
    }

    /// Moves every WAL frame into the main file and truncates the WAL, so that pages freed by a
    /// deletion (already zeroed by `secure_delete`) leave no older copy behind in the WAL.
    pub fn checkpoint_wal(&self) -> Result<()> {
        // A reader in another process can keep the checkpoint from completing; try a few times,
        // then say so rather than pretend.
        for attempt in 0..5 {
            let busy: i64 = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(200 << attempt));
        }
        Err(StoreError::Conflict(
            "the WAL could not be checkpointed: another process holds it; run the sweep again"
                .into(),
        ))
    }
}

/// A transaction handle; every query is a method here.
pub struct Tx<'c>(&'c rusqlite::Transaction<'c>);

impl Tx<'_> {
    // --- meta ----------------------------------------------------------------------------------

    pub fn meta_get(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .0
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    // --- users ---------------------------------------------------------------------------------

    pub fn user_insert(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        must_change: bool,
        now: &str,
    ) -> Result<i64> {
        let n = self.0.execute(
            "INSERT INTO users (name, role, password_hash, must_change_password, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
            params![name, role.as_str(), password_hash, must_change, now],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "user {name:?} already exists"
            )));
        }
        Ok(self.0.last_insert_rowid())
    }

    fn user_from_row(
        r: &rusqlite::Row<'_>,
    ) -> rusqlite::Result<(i64, String, String, String, bool, bool, String)> {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    }

    fn user_build(t: (i64, String, String, String, bool, bool, String)) -> Result<UserRow> {
        let role =
            t.2.parse()
                .map_err(|e| StoreError::Corrupt(format!("user {}: {e}", t.1)))?;
        Ok(UserRow {
            id: t.0,
            name: t.1,
            role,
            password_hash: t.3,
            must_change_password: t.4,
            disabled: t.5,
            created_at: t.6,
        })
    }

    const USER_COLS: &'static str =
        "id, name, role, password_hash, must_change_password, disabled, created_at";

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {} FROM users WHERE name = ?1", Self::USER_COLS);
        self.0
            .query_row(&sql, [name], Self::user_from_row)
            .optional()?
            .map(Self::user_build)
            .transpose()
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {} FROM users WHERE id = ?1", Self::USER_COLS);
        self.0
            .query_row(&sql, [id], Self::user_from_row)
            .optional()?
            .map(Self::user_build)
            .transpose()
    }

    pub fn users(&self) -> Result<Vec<UserRow>> {
        let sql = format!("SELECT {} FROM users ORDER BY name", Self::USER_COLS);
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt
            .query_map([], Self::user_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(Self::user_build).collect()
    }

    pub fn user_set_disabled(&self, name: &str, disabled: bool) -> Result<()> {
        let n = self.0.execute(
            "UPDATE users SET disabled = ?2 WHERE name = ?1",
            params![name, disabled],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("user {name:?}")));
        }
        if disabled {
            self.0.execute(
                "DELETE FROM auth_tokens WHERE user_id = (SELECT id FROM users WHERE name = ?1)",
                [name],
            )?;
        }
        Ok(())
    }

    pub fn user_set_password(&self, id: i64, password_hash: &str, must_change: bool) -> Result<()> {
        self.0.execute(
            "UPDATE users SET password_hash = ?2, must_change_password = ?3 WHERE id = ?1",
            params![id, password_hash, must_change],
        )?;
        Ok(())
    }

    pub fn count_admins(&self) -> Result<i64> {
        Ok(self.0.query_row(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0",
            [],
            |r| r.get(0),
        )?)
    }

    // --- tokens --------------------------------------------------------------------------------

    pub fn token_insert(
        &self,
        hash: &[u8; 32],
        user_id: i64,
        kind: &str,
        now: i64,
        expires: i64,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO auth_tokens (token_hash, user_id, kind, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![&hash[..], user_id, kind, now, expires],
        )?;
        Ok(())
    }

    /// The user a live token belongs to, with the token's kind.
    /// The user a live token belongs to, with the token's kind and scopes (JSON).
    pub fn token_user(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<(UserRow, String, Option<String>)>> {
        let row: Option<(i64, String, Option<String>)> = self
            .0
            .query_row(
                "SELECT user_id, kind, scopes FROM auth_tokens WHERE token_hash = ?1 AND expires_at > ?2",
                params![&hash[..], now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((uid, kind, scopes)) = row else {
            return Ok(None);
        };
        Ok(self
            .user_by_id(uid)?
            .filter(|u| !u.disabled)
            .map(|u| (u, kind, scopes)))
    }

    /// Records an API token's label and scopes.
    pub fn token_describe(&self, hash: &[u8; 32], name: &str, scopes: Option<&str>) -> Result<()> {
        self.0.execute(
            "UPDATE auth_tokens SET name = ?2, scopes = ?3 WHERE token_hash = ?1",
            params![&hash[..], name, scopes],
        )?;
        Ok(())
    }

    /// API tokens: (id = first 8 bytes of the hash in hex, user, label, scopes, expiry).
    pub fn api_tokens(&self, now: i64) -> Result<Vec<ApiTokenRow>> {
        let mut stmt = self.0.prepare(
            "SELECT hex(substr(t.token_hash, 1, 8)), u.name, t.name, t.scopes, t.expires_at FROM auth_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.kind = 'api' AND t.expires_at > ?1 ORDER BY t.created_at",
        )?;
        let rows = stmt
            .query_map([now], |r| {
                Ok(ApiTokenRow {
                    id: r.get::<_, String>(0)?.to_lowercase(),
                    user: r.get(1)?,
                    name: r.get(2)?,
                    scopes: r.get(3)?,
                    expires_at: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Revokes an API token by its id.
    pub fn api_token_revoke(&self, id: &str) -> Result<bool> {
        let n = self.0.execute("DELETE FROM auth_tokens WHERE kind = 'api' AND lower(hex(substr(token_hash, 1, 8))) = ?1", [id])?;
        Ok(n > 0)
    }

    pub fn token_delete(&self, hash: &[u8; 32]) -> Result<()> {
        self.0
            .execute("DELETE FROM auth_tokens WHERE token_hash = ?1", [&hash[..]])?;
        Ok(())
    }

    pub fn tokens_delete_for_user(&self, user_id: i64) -> Result<()> {
        self.0
            .execute("DELETE FROM auth_tokens WHERE user_id = ?1", [user_id])?;
        Ok(())
    }

    pub fn tokens_purge_expired(&self, now: i64) -> Result<usize> {
        Ok(self
            .0
            .execute("DELETE FROM auth_tokens WHERE expires_at <= ?1", [now])?)
    }

    // --- key-encryption keys -------------------------------------------------------------------

    pub fn kek_insert(&self, epoch: u32, wrapped: &[u8], now: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO keks (epoch, wrapped, created_at) VALUES (?1, ?2, ?3)",
            params![epoch, wrapped, now],
        )?;
        Ok(())
    }

    pub fn kek_get(&self, epoch: u32) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .query_row("SELECT wrapped FROM keks WHERE epoch = ?1", [epoch], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn kek_current(&self) -> Result<Option<u32>> {
        Ok(self
            .0
            .query_row("SELECT MAX(epoch) FROM keks", [], |r| r.get(0))?)
    }

    pub fn kek_epochs(&self) -> Result<Vec<u32>> {
        let mut stmt = self.0.prepare("SELECT epoch FROM keks ORDER BY epoch")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes a KEK that no data key is wrapped under any more. The foreign key on
    /// `object_keys.epoch` makes this fail if one still is, whoever inserted it meanwhile.
    pub fn kek_delete(&self, epoch: u32) -> Result<()> {
        self.0
            .execute("DELETE FROM keks WHERE epoch = ?1", [epoch])?;
        Ok(())
    }

    // --- objects and their data keys -----------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn object_insert(
        &self,
        id: ObjectId,
        session_id: Option<&str>,
        class: &str,
        now: &str,
        epoch: u32,
        wrapped: &[u8],
        recovery: Option<&[u8]>,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO objects (id, session_id, class, state, created_at) VALUES (?1, ?2, ?3, 'open', ?4)",
            params![id.to_string(), session_id, class, now],
        )?;
        self.0.execute(
            "INSERT INTO object_keys (object_id, epoch, wrapped, recovery) VALUES (?1, ?2, ?3, ?4)",
            params![id.to_string(), epoch, wrapped, recovery],
        )?;
        Ok(())
    }

    /// The data key of an object wrapped to the recovery recipient, if it was.
    pub fn object_recovery(&self, id: ObjectId) -> Result<Option<Vec<u8>>> {
        Ok(self
            .0
            .query_row(
                "SELECT recovery FROM object_keys WHERE object_id = ?1",
                [id.to_string()],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    pub fn object_set_recovery(&self, id: ObjectId, recovery: &[u8]) -> Result<()> {
        self.0.execute(
            "UPDATE object_keys SET recovery = ?2 WHERE object_id = ?1",
            params![id.to_string(), recovery],
        )?;
        Ok(())
    }

    pub fn object_close(&self, id: ObjectId, c: &ObjectClose) -> Result<()> {
        let n = self.0.execute(
            "UPDATE objects SET state = ?2, closed_at = ?3, chunks = ?4, plain_len = ?5, cipher_len = ?6,
                    plain_sha256 = ?7, cipher_sha256 = ?8
             WHERE id = ?1 AND state = 'open'",
            params![
                id.to_string(),
                c.state.as_str(),
                c.closed_at,
                c.chunks as i64,
                c.plain_len as i64,
                c.cipher_len as i64,
                &c.plain_sha256[..],
                &c.cipher_sha256[..]
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!("object {id} is not open")));
        }
        Ok(())
    }

    fn object_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectRowRaw> {
        Ok(ObjectRowRaw {
            id: r.get(0)?,
            session_id: r.get(1)?,
            class: r.get(2)?,
            state: r.get(3)?,
            created_at: r.get(4)?,
            closed_at: r.get(5)?,
            chunks: r.get(6)?,
            plain_len: r.get(7)?,
            cipher_len: r.get(8)?,
            plain_sha256: r.get(9)?,
            cipher_sha256: r.get(10)?,
        })
    }

    const OBJECT_COLS: &'static str = "id, session_id, class, state, created_at, closed_at, chunks, plain_len, cipher_len, plain_sha256, cipher_sha256";

    pub fn object_get(&self, id: ObjectId) -> Result<Option<ObjectRow>> {
        let sql = format!("SELECT {} FROM objects WHERE id = ?1", Self::OBJECT_COLS);
        self.0
            .query_row(&sql, [id.to_string()], Self::object_from_row)
            .optional()?
            .map(ObjectRowRaw::build)
            .transpose()
    }

    /// Indexes keyframes of a recording object: (time in ms since the epoch, plaintext offset).
    pub fn recording_keyframes_add(&self, id: ObjectId, keyframes: &[(i64, i64)]) -> Result<()> {
        let mut stmt = self.0.prepare_cached(
            "INSERT OR IGNORE INTO recording_keyframes (object_id, at_ms, offset) VALUES (?1, ?2, ?3)",
        )?;
        for (at, off) in keyframes {
            stmt.execute(rusqlite::params![id.to_string(), at, off])?;
        }
        Ok(())
    }

    /// A recording object's keyframes, in order.
    pub fn recording_keyframes(&self, id: ObjectId) -> Result<Vec<(i64, i64)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT at_ms, offset FROM recording_keyframes WHERE object_id = ?1 ORDER BY offset",
        )?;
        let rows = stmt
            .query_map([id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Objects in a given state, or all of them, in creation order.
    pub fn objects(&self, state: Option<ObjectState>) -> Result<Vec<ObjectRow>> {
        let sql = format!(
            "SELECT {} FROM objects WHERE ?1 IS NULL OR state = ?1 ORDER BY created_at, id",
            Self::OBJECT_COLS
        );
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt
            .query_map([state.map(|s| s.as_str())], Self::object_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(ObjectRowRaw::build).collect()
    }

    /// A session's objects (shredded ones included, so a record shows what retention removed),
    /// in creation order.
    pub fn objects_of_session(&self, session_id: &str) -> Result<Vec<ObjectRow>> {
        let sql = format!(
            "SELECT {} FROM objects WHERE session_id = ?1 ORDER BY created_at, id",
            Self::OBJECT_COLS
        );
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt
            .query_map([session_id], Self::object_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(ObjectRowRaw::build).collect()
    }

    /// The wrapped data key of an object and the KEK epoch it is wrapped under.
    pub fn object_key(&self, id: ObjectId) -> Result<Option<(u32, Vec<u8>)>> {
        Ok(self
            .0
            .query_row(
                "SELECT epoch, wrapped FROM object_keys WHERE object_id = ?1",
                [id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Up to `limit` data keys wrapped under an epoch older than `epoch`.
    pub fn object_keys_below(
        &self,
        epoch: u32,
        limit: u32,
    ) -> Result<Vec<(ObjectId, u32, Vec<u8>)>> {
        let mut stmt = self.0.prepare(
            "SELECT object_id, epoch, wrapped FROM object_keys WHERE epoch < ?1 ORDER BY object_id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![epoch, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, e, w)| {
                let id = id
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("object key row: {e}")))?;
                Ok((id, e, w))
            })
            .collect()
    }

    pub fn object_key_rewrap(
        &self,
        id: ObjectId,
        old_epoch: u32,
        epoch: u32,
        wrapped: &[u8],
    ) -> Result<()> {
        self.0.execute(
            "UPDATE object_keys SET epoch = ?3, wrapped = ?4 WHERE object_id = ?1 AND epoch = ?2",
            params![id.to_string(), old_epoch, epoch, wrapped],
        )?;
        Ok(())
    }

    pub fn object_keys_count_below(&self, epoch: u32) -> Result<u64> {
        Ok(self.0.query_row(
            "SELECT COUNT(*) FROM object_keys WHERE epoch < ?1",
            [epoch],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    // --- audit log -----------------------------------------------------------------------------

    pub fn audit_size(&self) -> Result<u64> {
        Ok(self
            .0
            .query_row("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_log", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub fn audit_insert(&self, row: &NewAuditRow<'_>) -> Result<()> {
        self.0.execute(
            "INSERT INTO audit_log (seq, entry, leaf_hash, time, actor, action, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![row.seq as i64, row.entry, &row.leaf[..], row.time, row.actor, row.action, row.target],
        )?;
        Ok(())
    }

    pub fn audit_node_insert(&self, level: u32, idx: u64, hash: &[u8; 32]) -> Result<()> {
        self.0.execute(
            "INSERT INTO audit_tree (level, idx, hash) VALUES (?1, ?2, ?3)",
            params![level, idx as i64, &hash[..]],
        )?;
        Ok(())
    }

    pub fn audit_node(&self, level: u32, idx: u64) -> Result<[u8; 32]> {
        let h: Option<Vec<u8>> = self
            .0
            .query_row(
                "SELECT hash FROM audit_tree WHERE level = ?1 AND idx = ?2",
                params![level, idx as i64],
                |r| r.get(0),
            )
            .optional()?;
        let h =
            h.ok_or_else(|| StoreError::NotFound(format!("audit tree node ({level}, {idx})")))?;
        hash32(Some(h), "audit tree node").map(|h| h.expect("some"))
    }

    /// Calls `f` for each audit row from `from` in order, without loading them all.
    pub fn audit_scan(&self, from: u64, mut f: impl FnMut(AuditRow) -> Result<bool>) -> Result<()> {
        let mut stmt = self
            .0
            .prepare("SELECT seq, entry, leaf_hash FROM audit_log WHERE seq >= ?1 ORDER BY seq")?;
        let mut rows = stmt.query([from as i64])?;
        while let Some(r) = rows.next()? {
            let row = AuditRow {
                seq: r.get::<_, i64>(0)? as u64,
                entry: r.get(1)?,
                leaf_hash: r.get(2)?,
            };
            if !f(row)? {
                break;
            }
        }
        Ok(())
    }

    /// The last `limit` audit entries, oldest first.
    pub fn audit_tail(&self, limit: u32) -> Result<Vec<AuditRow>> {
        self.audit_tail_where(limit, None, None, None)
    }

    /// Audit entries about one target, oldest first.
    pub fn audit_by_target(&self, target: &str, limit: u32) -> Result<Vec<AuditRow>> {
        let mut stmt = self.0.prepare(
            "SELECT seq, entry, leaf_hash FROM audit_log WHERE target = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![target, limit], |r| {
                Ok(AuditRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    entry: r.get(1)?,
                    leaf_hash: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn checkpoint_insert(&self, size: u64, note: &str, now: &str) -> Result<()> {
        self.0.execute(
            "INSERT INTO checkpoints (size, note, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (size) DO NOTHING",
            params![size as i64, note, now],
        )?;
        Ok(())
    }

    pub fn checkpoint_latest(&self) -> Result<Option<(u64, String)>> {
        Ok(self
            .0
            .query_row(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
    }

    /// What the metrics page counts from the database, in one read.
    pub fn counts(&self) -> Result<StoreCounts> {
        let grouped = |sql: &str| -> Result<Vec<(String, u64, u64)>> {
            let mut stmt = self.0.prepare(sql)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        };
        Ok(StoreCounts {
            sessions: grouped("SELECT status, COUNT(*), 0 FROM sessions GROUP BY status")?,
            objects: grouped(
                "SELECT state, COUNT(*), COALESCE(SUM(cipher_len), 0) FROM objects GROUP BY state",
            )?,
            holds_active: self.0.query_row(
                "SELECT COUNT(*) FROM holds WHERE released_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )? as u64,
            checkpoint: self
                .0
                .query_row(
                    "SELECT size, created_at FROM checkpoints ORDER BY size DESC LIMIT 1",
                    [],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
                )
                .optional()?,
        })
    }

    /// Sessions requested at or after `since`: how many, accepted, ended, cancelled, surveyed,
    /// and the average rating.
    pub fn day_counts(&self, since: &str) -> Result<DayCounts> {
        Ok(self.0.query_row(
            "SELECT COUNT(*), COUNT(accepted_at), COALESCE(SUM(status = 'ended'), 0),
                    COALESCE(SUM(status = 'cancelled'), 0), COUNT(survey_rating), AVG(survey_rating)
             FROM sessions WHERE requested_at >= ?1",
            [since],
            |r| {
                Ok(DayCounts {
                    requested: r.get::<_, i64>(0)? as u64,
                    accepted: r.get::<_, i64>(1)? as u64,
                    ended: r.get::<_, i64>(2)? as u64,
                    cancelled: r.get::<_, i64>(3)? as u64,
                    surveys: r.get::<_, i64>(4)? as u64,
                    survey_average: r.get(5)?,
                })
            },
        )?)
    }

    /// The newest `limit` audit entries whose action starts with `action`, by `actor`, about
    /// `target` (each filter optional), oldest first.
    pub fn audit_tail_where(
        &self,
        limit: u32,
        action: Option<&str>,
        actor: Option<&str>,
        target: Option<&str>,
    ) -> Result<Vec<AuditRow>> {
        let mut stmt = self.0.prepare(
            "SELECT seq, entry, leaf_hash FROM (
                SELECT seq, entry, leaf_hash FROM audit_log
                WHERE (?2 IS NULL OR substr(action, 1, length(?2)) = ?2)
                  AND (?3 IS NULL OR actor = ?3) AND (?4 IS NULL OR target = ?4)
                ORDER BY seq DESC LIMIT ?1)
             ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![limit, action, actor, target], |r| {
                Ok(AuditRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    entry: r.get(1)?,
                    leaf_hash: r.get(2)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>> {
        let mut stmt = self
            .0
            .prepare("SELECT size, note FROM checkpoints ORDER BY size")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// Which sessions a listing or search returns; each filter is optional.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub portal: Option<String>,
    /// The handling agent's user name.
    pub agent: Option<String>,
    pub external_ref: Option<String>,
    /// The customer's e-mail address or name, compared without case.
    pub customer: Option<String>,
    /// Requested at or after (RFC 3339).
    pub since: Option<String>,
    /// Requested at or before (RFC 3339).
    pub until: Option<String>,
}

impl SessionFilter {
    /// The filters as ` AND …` conditions on `sessions s` joined with `users u`, and their values
    /// in order.
    pub(crate) fn sql(&self) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clause = String::new();
        let mut args = Vec::new();
        let mut add = |cond: &str, v: &Option<String>, times: usize| {
            if let Some(v) = v {
                clause.push_str(" AND ");
                clause.push_str(cond);
                for _ in 0..times {
                    args.push(Value::Text(v.clone()));
                }
            }
        };
        add("s.portal = ?", &self.portal, 1);
        add("u.name = ?", &self.agent, 1);
        add("s.external_ref = ?", &self.external_ref, 1);
        add(
            "(s.customer_email = ? COLLATE NOCASE OR s.customer_name = ? COLLATE NOCASE)",
            &self.customer,
            2,
        );
        add("s.requested_at >= ?", &self.since, 1);
        add("s.requested_at <= ?", &self.until, 1);
        (clause, args)
    }
}

/// Database counts for the metrics page.
#[derive(Debug)]
pub struct StoreCounts {
    /// Sessions by status: (status, count, 0).
    pub sessions: Vec<(String, u64, u64)>,
    /// Archive objects by state: (state, count, ciphertext bytes).
    pub objects: Vec<(String, u64, u64)>,
    pub holds_active: u64,
    /// The latest checkpoint's size and time.
    pub checkpoint: Option<(u64, String)>,
}

/// One day's sessions (see `Tx::day_counts`).
#[derive(Debug, Default, serde::Serialize)]
pub struct DayCounts {
    pub requested: u64,
    pub accepted: u64,
    pub ended: u64,
    pub cancelled: u64,
    pub surveys: u64,
    pub survey_average: Option<f64>,
}

/// A session's record, as the API and the live state need it.
#[derive(Clone, Debug)]
pub struct SessionRow {
    pub id: String,
    pub portal: String,
    pub skill: String,
    pub status: String,
    pub via: String,
    pub customer_name: String,
    pub customer_email: String,
    pub question: String,
    pub fields: String,
    pub external_ref: Option<String>,
    pub agent_id: Option<i64>,
    pub agent_name: Option<String>,
    pub recording: bool,
    pub requested_at: String,
    pub accepted_at: Option<String>,
    pub ended_at: Option<String>,
    pub survey_rating: Option<i64>,
    pub survey_at: Option<String>,
}

/// A new session to insert.
pub struct NewSession<'a> {
    pub id: &'a str,
    pub portal: &'a str,
    pub skill: &'a str,
    pub status: &'a str,
    pub via: &'a str,
    pub customer_name: &'a str,
    pub customer_email: &'a str,
    pub question: &'a str,
    pub fields: &'a str,
    pub external_ref: Option<&'a str>,
    pub customer_token_hash: &'a [u8; 32],
    pub agent_id: Option<i64>,
    pub recording: bool,
    pub now: &'a str,
}

#[derive(Clone, Debug)]
pub struct FileRow {
    pub id: String,
    pub session_id: String,
    pub object_id: String,
    pub name: String,
    pub size: u64,
    pub sha256: Vec<u8>,
    pub sender: String,
    pub created_at: String,
}

#[derive(Clone, Debug)]
pub struct CodeRow {
    pub code: String,
    pub agent_id: i64,
    pub external_ref: Option<String>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub cancelled: bool,
}

#[derive(Clone, Debug)]
pub struct ParticipantRow {
    pub kind: String,
    pub name: String,
    pub joined_at: String,
    pub left_at: Option<String>,
}

const SESSION_COLS: &str = "s.id, s.portal, s.skill, s.status, s.via, s.customer_name, s.customer_email, s.question, s.fields,
    s.external_ref, s.agent_id, u.name, s.recording, s.requested_at, s.accepted_at, s.ended_at, s.survey_rating, s.survey_at";

fn session_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        portal: r.get(1)?,
        skill: r.get(2)?,
        status: r.get(3)?,
        via: r.get(4)?,
        customer_name: r.get(5)?,
        customer_email: r.get(6)?,
        question: r.get(7)?,
        fields: r.get(8)?,
        external_ref: r.get(9)?,
        agent_id: r.get(10)?,
        agent_name: r.get(11)?,
        recording: r.get(12)?,
        requested_at: r.get(13)?,
        accepted_at: r.get(14)?,
        ended_at: r.get(15)?,
        survey_rating: r.get(16)?,
        survey_at: r.get(17)?,
    })
}

impl Tx<'_> {
    // --- sessions ------------------------------------------------------------------------------

    pub fn session_insert(&self, s: &NewSession<'_>) -> Result<()> {
        self.0.execute(
            "INSERT INTO sessions (id, portal, skill, status, via, customer_name, customer_email, question, fields,
                external_ref, customer_token_hash, agent_id, recording, requested_at, accepted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, CASE WHEN ?4 = 'active' THEN ?14 END)",
            params![
                s.id, s.portal, s.skill, s.status, s.via, s.customer_name, s.customer_email, s.question, s.fields,
                s.external_ref, &s.customer_token_hash[..], s.agent_id, s.recording, s.now
            ],
        )?;
        Ok(())
    }

    pub fn session_get(&self, id: &str) -> Result<Option<SessionRow>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions s LEFT JOIN users u ON u.id = s.agent_id WHERE s.id = ?1"
        );
        Ok(self.0.query_row(&sql, [id], session_from_row).optional()?)
    }

    /// Sessions in either of two states (pass the same twice for one), oldest request first.
    pub fn sessions_with_status(&self, a: &str, b: &str) -> Result<Vec<SessionRow>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions s LEFT JOIN users u ON u.id = s.agent_id WHERE s.status IN (?1, ?2) ORDER BY s.requested_at, s.id"
        );
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt
            .query_map([a, b], session_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Ids of sessions with this external reference, or requested in `[from, to]`.
    pub fn session_ids_by(
        &self,
        external_ref: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare(
            "SELECT id FROM sessions WHERE (?1 IS NULL OR external_ref = ?1) AND (?2 IS NULL OR requested_at >= ?2)
               AND (?3 IS NULL OR requested_at <= ?3) ORDER BY requested_at, id",
        )?;
        let ids = stmt
            .query_map(params![external_ref, from, to], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    /// Sessions changed after `after`, in change order, filtered; with each one's change number.
    pub fn sessions_changed(
        &self,
        after: i64,
        limit: u32,
        filter: &SessionFilter,
    ) -> Result<Vec<(i64, SessionRow)>> {
        let (clause, mut args) = filter.sql();
        let sql = format!(
            "SELECT s.updated_seq, {SESSION_COLS} FROM sessions s LEFT JOIN users u ON u.id = s.agent_id
             WHERE s.updated_seq > ?{clause} ORDER BY s.updated_seq LIMIT ?"
        );
        args.insert(0, rusqlite::types::Value::Integer(after));
        args.push(rusqlite::types::Value::Integer(i64::from(limit)));
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                let seq: i64 = r.get(0)?;
                // The session columns start at index 1.
                let row = SessionRow {
                    id: r.get(1)?,
                    portal: r.get(2)?,
                    skill: r.get(3)?,
                    status: r.get(4)?,
                    via: r.get(5)?,
                    customer_name: r.get(6)?,
                    customer_email: r.get(7)?,
                    question: r.get(8)?,
                    fields: r.get(9)?,
                    external_ref: r.get(10)?,
                    agent_id: r.get(11)?,
                    agent_name: r.get(12)?,
                    recording: r.get(13)?,
                    requested_at: r.get(14)?,
                    accepted_at: r.get(15)?,
                    ended_at: r.get(16)?,
                    survey_rating: r.get(17)?,
                    survey_at: r.get(18)?,
                };
                Ok((seq, row))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn session_token_matches(&self, id: &str, hash: &[u8; 32]) -> Result<bool> {
        let stored: Option<Vec<u8>> = self
            .0
            .query_row(
                "SELECT customer_token_hash FROM sessions WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(stored.is_some_and(|s| crate::crypto::ct_eq(&s, hash)))
    }

    /// Moves a session from one of the states in `from` to `status`; fails with a conflict if
    /// it is in no such state any more (another change came first), so that no transition can
    /// revive an ended session.
    pub fn session_set_status(
        &self,
        id: &str,
        from: &[&str],
        status: &str,
        agent_id: Option<i64>,
        now: &str,
    ) -> Result<()> {
        let (a, b) = (from[0], *from.get(1).unwrap_or(&from[0]));
        let n = self.0.execute(
            "UPDATE sessions SET status = ?2, agent_id = ?3,
                accepted_at = CASE WHEN ?2 = 'active' AND accepted_at IS NULL THEN ?4 ELSE accepted_at END,
                ended_at = CASE WHEN ?2 IN ('ended', 'cancelled') THEN ?4 ELSE ended_at END
             WHERE id = ?1 AND status IN (?5, ?6)",
            params![id, status, agent_id, now, a, b],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "session {id} changed meanwhile"
            )));
        }
        Ok(())
    }

    pub fn session_set_skill(&self, id: &str, skill: &str) -> Result<()> {
        self.0.execute(
            "UPDATE sessions SET skill = ?2 WHERE id = ?1",
            params![id, skill],
        )?;
        Ok(())
    }

    /// The archive objects of a session of one data class, in the order they were created.
    pub fn session_objects(&self, session_id: &str, class: &str) -> Result<Vec<ObjectId>> {
        let mut stmt = self.0.prepare(
            "SELECT id FROM objects WHERE session_id = ?1 AND class = ?2 AND state != 'shredded' ORDER BY created_at, rowid",
        )?;
        let ids = stmt
            .query_map([session_id, class], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|i| {
                i.parse()
                    .map_err(|e| StoreError::Corrupt(format!("object id: {e}")))
            })
            .collect()
    }

    pub fn session_set_survey(&self, id: &str, rating: i64, now: &str) -> Result<()> {
        let n = self.0.execute(
            "UPDATE sessions SET survey_rating = ?2, survey_at = ?3 WHERE id = ?1 AND survey_at IS NULL",
            params![id, rating, now],
        )?;
        if n == 0 {
            return Err(StoreError::Conflict(
                "the survey for this session was already submitted".into(),
            ));
        }
        Ok(())
    }

    pub fn participant_join(
        &self,
        session_id: &str,
        kind: &str,
        user_id: Option<i64>,
        name: &str,
        now: &str,
    ) -> Result<()> {
        self.0.execute(
            "INSERT INTO participants (session_id, kind, user_id, name, joined_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![session_id, kind, user_id, name, now],
        )?;
        Ok(())
    }

    /// Closes the open time range of a participant (by kind, and user for agents).
    pub fn participant_leave(
        &self,
        session_id: &str,
        kind: &str,
        user_id: Option<i64>,
        now: &str,
    ) -> Result<()> {
        self.0.execute(
            "UPDATE participants SET left_at = ?4 WHERE session_id = ?1 AND kind = ?2 AND user_id IS ?3 AND left_at IS NULL",
            params![session_id, kind, user_id, now],
        )?;
        Ok(())
    }

    pub fn participants(&self, session_id: &str) -> Result<Vec<ParticipantRow>> {
        let mut stmt = self.0.prepare("SELECT kind, name, joined_at, left_at FROM participants WHERE session_id = ?1 ORDER BY id")?;
        let rows = stmt
            .query_map([session_id], |r| {
                Ok(ParticipantRow {
                    kind: r.get(0)?,
                    name: r.get(1)?,
                    joined_at: r.get(2)?,
                    left_at: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // --- files ---------------------------------------------------------------------------------

    pub fn file_insert(&self, f: &FileRow) -> Result<()> {
        self.0.execute(
            "INSERT INTO session_files (id, session_id, object_id, name, size, sha256, sender, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![f.id, f.session_id, f.object_id, f.name, f.size as i64, f.sha256, f.sender, f.created_at],
        )?;
        Ok(())
    }

    pub fn files(&self, session_id: &str) -> Result<Vec<FileRow>> {
        let mut stmt = self.0.prepare(
            "SELECT id, session_id, object_id, name, size, sha256, sender, created_at FROM session_files WHERE session_id = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([session_id], |r| {
                Ok(FileRow {
                    id: r.get(0)?,
                    session_id: r.get(1)?,
                    object_id: r.get(2)?,
                    name: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    sha256: r.get(5)?,
                    sender: r.get(6)?,
                    created_at: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // --- connection codes ----------------------------------------------------------------------

    pub fn code_insert(
        &self,
        code: &str,
        agent_id: i64,
        external_ref: Option<&str>,
        now: i64,
        expires: i64,
    ) -> Result<bool> {
        let n = self.0.execute(
            "INSERT INTO codes (code, agent_id, external_ref, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (code) DO NOTHING",
            params![code, agent_id, external_ref, now, expires],
        )?;
        Ok(n == 1)
    }

    /// Removes codes that expired more than a day ago, so the code space stays free.
    pub fn codes_purge(&self, now: i64) -> Result<()> {
        self.0
            .execute("DELETE FROM codes WHERE expires_at < ?1", [now - 86_400])?;
        Ok(())
    }

    pub fn code_get(&self, code: &str) -> Result<Option<CodeRow>> {
        Ok(self
            .0
            .query_row(
                "SELECT code, agent_id, external_ref, expires_at, used_at, cancelled FROM codes WHERE code = ?1",
                [code],
                |r| Ok(CodeRow { code: r.get(0)?, agent_id: r.get(1)?, external_ref: r.get(2)?, expires_at: r.get(3)?, used_at: r.get(4)?, cancelled: r.get(5)? }),
            )
            .optional()?)
    }

    /// Live codes (not used, not cancelled, not expired), of one agent or all.
    pub fn codes_active(&self, agent_id: Option<i64>, now: i64) -> Result<Vec<(CodeRow, String)>> {
        let mut stmt = self.0.prepare(
            "SELECT c.code, c.agent_id, c.external_ref, c.expires_at, c.used_at, c.cancelled, u.name FROM codes c JOIN users u ON u.id = c.agent_id
             WHERE c.used_at IS NULL AND c.cancelled = 0 AND c.expires_at > ?1 AND (?2 IS NULL OR c.agent_id = ?2) ORDER BY c.expires_at",
        )?;
        let rows = stmt
            .query_map(params![now, agent_id], |r| {
                Ok((
                    CodeRow {
                        code: r.get(0)?,
                        agent_id: r.get(1)?,
                        external_ref: r.get(2)?,
                        expires_at: r.get(3)?,
                        used_at: r.get(4)?,
                        cancelled: r.get(5)?,
                    },
                    r.get(6)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Marks a live code used by `session_id`; false if it was not live any more.
    pub fn code_use(&self, code: &str, session_id: &str, now: i64) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE codes SET used_at = ?3, session_id = ?2 WHERE code = ?1 AND used_at IS NULL AND cancelled = 0 AND expires_at > ?3",
            params![code, session_id, now],
        )?;
        Ok(n == 1)
    }

    pub fn code_set_session(&self, code: &str, session_id: &str) -> Result<()> {
        self.0.execute(
            "UPDATE codes SET session_id = ?2 WHERE code = ?1",
            params![code, session_id],
        )?;
        Ok(())
    }

    /// Cancels a live code (not used, cancelled or expired by `now`); false if there is none.
    pub fn code_cancel(&self, code: &str, agent_id: Option<i64>, now: i64) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE codes SET cancelled = 1
             WHERE code = ?1 AND used_at IS NULL AND cancelled = 0 AND expires_at > ?3 AND (?2 IS NULL OR agent_id = ?2)",
            params![code, agent_id, now],
        )?;
        Ok(n == 1)
    }

    // --- agents' portals and skills ------------------------------------------------------------

    pub fn agent_skills(&self, user_id: i64) -> Result<Vec<(String, String)>> {
        let mut stmt = self.0.prepare(
            "SELECT portal, skill FROM agent_skills WHERE user_id = ?1 ORDER BY portal, skill",
        )?;
        let rows = stmt
            .query_map([user_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn agent_skills_set(&self, user_id: i64, skills: &[(String, String)]) -> Result<()> {
        self.0
            .execute("DELETE FROM agent_skills WHERE user_id = ?1", [user_id])?;
        for (p, s) in skills {
            self.0.execute(
                "INSERT OR IGNORE INTO agent_skills (user_id, portal, skill) VALUES (?1, ?2, ?3)",
                params![user_id, p, s],
            )?;
        }
        Ok(())
    }
}

/// An archive object (or, with `object: None`, a session record's personal details) with the
/// session facts retention needs.
#[derive(Clone, Debug)]
pub struct RetentionRow {
    pub object: Option<ObjectId>,
    pub class: String,
    pub state: ObjectState,
    pub closed_at: Option<String>,
    pub session_id: Option<String>,
    pub portal: Option<String>,
    pub skill: Option<String>,
    pub fields: Option<String>,
    pub external_ref: Option<String>,
    pub customer_email: Option<String>,
    pub requested_at: Option<String>,
    pub ended_at: Option<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct HoldRow {
    pub id: i64,
    pub scope: String,
    pub value: String,
    pub reason: String,
    pub case_id: String,
    pub placed_by: String,
    pub placed_at: String,
    pub released_by: Option<String>,
    pub released_at: Option<String>,
}

impl Tx<'_> {
    // --- retention -----------------------------------------------------------------------------

    /// Replaces the installed policy set.
    pub fn policies_replace(&self, policies: &[(String, String)], now: &str) -> Result<()> {
        self.0.execute("DELETE FROM policies", [])?;
        for (name, body) in policies {
            self.0.execute(
                "INSERT INTO policies (name, body, installed_at) VALUES (?1, ?2, ?3)",
                params![name, body, now],
            )?;
        }
        Ok(())
    }

    /// The installed policies, as stored JSON.
    pub fn policies(&self) -> Result<Vec<String>> {
        let mut stmt = self.0.prepare("SELECT body FROM policies ORDER BY name")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every object retention governs (or one session's, given its id), with its session's details.
    pub fn retention_rows(&self, session: Option<&str>) -> Result<Vec<RetentionRow>> {
        let mut stmt = self.0.prepare(
            "SELECT o.id, o.class, o.state, o.closed_at, o.session_id, s.portal, s.skill, s.fields, s.external_ref,
                    s.customer_email, s.requested_at, s.ended_at
             FROM objects o LEFT JOIN sessions s ON s.id = o.session_id
             WHERE o.state != 'shredded' AND (?1 IS NULL OR o.session_id = ?1) ORDER BY o.created_at, o.id",
        )?;
        let raw = stmt
            .query_map([session], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    RetentionRow {
                        object: None,
                        class: String::new(),
                        state: ObjectState::Open,
                        closed_at: r.get(3)?,
                        session_id: r.get(4)?,
                        portal: r.get(5)?,
                        skill: r.get(6)?,
                        fields: r.get(7)?,
                        external_ref: r.get(8)?,
                        customer_email: r.get(9)?,
                        requested_at: r.get(10)?,
                        ended_at: r.get(11)?,
                    },
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter()
            .map(|(id, class, state, mut row)| {
                let corrupt =
                    |e: crate::model::ParseError| StoreError::Corrupt(format!("object {id}: {e}"));
                row.object = Some(id.parse().map_err(corrupt)?);
                row.state = state.parse().map_err(corrupt)?;
                row.class = class;
                Ok(row)
            })
            .collect()
    }

    /// Ended sessions whose record still holds personal details, as retention rows of class
    /// "metadata".
    pub fn retention_session_rows(&self, session: Option<&str>) -> Result<Vec<RetentionRow>> {
        let mut stmt = self.0.prepare(
            "SELECT id, portal, skill, fields, external_ref, customer_email, requested_at, ended_at FROM sessions
             WHERE status IN ('ended', 'cancelled') AND cleared_at IS NULL AND (?1 IS NULL OR id = ?1)
             ORDER BY requested_at, id",
        )?;
        let rows = stmt
            .query_map([session], |r| {
                Ok(RetentionRow {
                    object: None,
                    class: "metadata".into(),
                    state: ObjectState::Sealed,
                    closed_at: None,
                    session_id: Some(r.get(0)?),
                    portal: r.get(1)?,
                    skill: r.get(2)?,
                    fields: r.get(3)?,
                    external_ref: r.get(4)?,
                    customer_email: r.get(5)?,
                    requested_at: r.get(6)?,
                    ended_at: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Clears the personal details of a session record (name, e-mail, question, form fields),
    /// keeping what reports and the audit trail need (ids, portal, timings, rating, reference).
    pub fn session_clear(&self, id: &str, now: &str) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE sessions SET customer_name = '', customer_email = '', question = '', fields = '{}', cleared_at = ?2
             WHERE id = ?1 AND cleared_at IS NULL",
            params![id, now],
        )?;
        self.0.execute(
            "UPDATE participants SET name = '' WHERE session_id = ?1 AND kind = 'customer'",
            [id],
        )?;
        Ok(n == 1)
    }

    /// Destroys an object's wrapped data keys (the crypto-shred) and marks it shredded. With
    /// `secure_delete` on, the deleted key row is overwritten in the database file.
    pub fn object_shred(&self, id: ObjectId, now: &str) -> Result<bool> {
        self.0.execute(
            "DELETE FROM object_keys WHERE object_id = ?1",
            [id.to_string()],
        )?;
        self.0.execute(
            "DELETE FROM recording_keyframes WHERE object_id = ?1",
            [id.to_string()],
        )?;
        let n = self.0.execute(
            "UPDATE objects SET state = 'shredded', closed_at = COALESCE(closed_at, ?2) WHERE id = ?1 AND state != 'shredded'",
            params![id.to_string(), now],
        )?;
        // A shredded transcript leaves nothing searchable behind.
        self.0.execute(
            "DELETE FROM transcript_terms WHERE session_id = (SELECT session_id FROM objects WHERE id = ?1 AND class = 'transcript')",
            [id.to_string()],
        )?;
        Ok(n == 1)
    }

    pub fn objects_shredded(&self) -> Result<Vec<ObjectId>> {
        let mut stmt = self
            .0
            .prepare("SELECT id FROM objects WHERE state = 'shredded'")?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.into_iter()
            .map(|i| {
                i.parse()
                    .map_err(|e| StoreError::Corrupt(format!("object id: {e}")))
            })
            .collect()
    }

    pub fn hold_insert(
        &self,
        scope: &str,
        value: &str,
        reason: &str,
        case_id: &str,
        by: &str,
        now: &str,
    ) -> Result<i64> {
        self.0.execute(
            "INSERT INTO holds (scope, value, reason, case_id, placed_by, placed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![scope, value, reason, case_id, by, now],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    pub fn holds(&self, open_only: bool) -> Result<Vec<HoldRow>> {
        let mut stmt = self.0.prepare(
            "SELECT id, scope, value, reason, case_id, placed_by, placed_at, released_by, released_at FROM holds
             WHERE ?1 = 0 OR released_at IS NULL ORDER BY id",
        )?;
        let rows = stmt
            .query_map([open_only], |r| {
                Ok(HoldRow {
                    id: r.get(0)?,
                    scope: r.get(1)?,
                    value: r.get(2)?,
                    reason: r.get(3)?,
                    case_id: r.get(4)?,
                    placed_by: r.get(5)?,
                    placed_at: r.get(6)?,
                    released_by: r.get(7)?,
                    released_at: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn hold_release(&self, id: i64, by: &str, reason: &str, now: &str) -> Result<()> {
        let n = self.0.execute(
            "UPDATE holds SET released_by = ?2, released_at = ?3, release_reason = ?4 WHERE id = ?1 AND released_at IS NULL",
            params![id, by, now, reason],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("open hold {id}")));
        }
        Ok(())
    }
}

struct ObjectRowRaw {
    id: String,
    session_id: Option<String>,
    class: String,
    state: String,
    created_at: String,
    closed_at: Option<String>,
    chunks: Option<i64>,
    plain_len: Option<i64>,
    cipher_len: Option<i64>,
    plain_sha256: Option<Vec<u8>>,
    cipher_sha256: Option<Vec<u8>>,
}

impl ObjectRowRaw {
    fn build(self) -> Result<ObjectRow> {
        let corrupt =
            |e: crate::model::ParseError| StoreError::Corrupt(format!("object {}: {e}", self.id));
        Ok(ObjectRow {
            id: self.id.parse().map_err(corrupt)?,
            state: self.state.parse().map_err(corrupt)?,
            session_id: self.session_id,
            class: self.class,
            created_at: self.created_at,
            closed_at: self.closed_at,
            chunks: self.chunks.map(|v| v as u64),
            plain_len: self.plain_len.map(|v| v as u64),
            cipher_len: self.cipher_len.map(|v| v as u64),
            plain_sha256: hash32(self.plain_sha256, "plaintext digest")?,
            cipher_sha256: hash32(self.cipher_sha256, "ciphertext digest")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut s = Store::open(&path).unwrap();
        s.write(|tx| tx.meta_set("k", "v")).unwrap();
        drop(s);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.read(|tx| tx.meta_get("k")).unwrap().as_deref(), Some("v"));
        s.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(s);
        assert!(matches!(Store::open(&path), Err(StoreError::TooNew { .. })));
    }

    #[test]
    fn duplicate_user_is_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db")).unwrap();
        s.write(|tx| tx.user_insert("a", Role::Admin, "h", false, "t"))
            .unwrap();
        let err = s
            .write(|tx| tx.user_insert("a", Role::Agent, "h", false, "t"))
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    }

    #[test]
    fn a_kek_in_use_cannot_be_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db")).unwrap();
        let id = ObjectId::random();
        s.write(|tx| {
            tx.kek_insert(1, &[0; 40], "t")?;
            tx.object_insert(id, None, "file", "t", 1, &[1; 40], None)
        })
        .unwrap();
        assert!(s.write(|tx| tx.kek_delete(1)).is_err());
    }

    #[test]
    fn shredding_a_transcript_removes_its_session_from_the_word_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db")).unwrap();
        let (transcript, file) = (ObjectId::random(), ObjectId::random());
        s.write(|tx| {
            tx.kek_insert(1, &[0; 40], "t")?;
            tx.object_insert(
                transcript,
                Some("sess_a"),
                "transcript",
                "t",
                1,
                &[1; 40],
                None,
            )?;
            tx.object_insert(file, Some("sess_b"), "file", "t", 1, &[1; 40], None)?;
            tx.terms_insert("sess_a", &[[1; 16], [2; 16]])?;
            tx.terms_insert("sess_b", &[[1; 16]])
        })
        .unwrap();
        let count = |s: &mut Store| {
            s.read(|tx| {
                Ok(tx
                    .sessions_with_terms(&[[1; 16]], 10, &SessionFilter::default())?
                    .len())
            })
            .unwrap()
        };
        // Neither session row exists in this bare store, so count the index itself.
        let terms = |s: &mut Store, sid: &str| -> i64 {
            s.read(|tx| {
                Ok(tx.0.query_row(
                    "SELECT COUNT(*) FROM transcript_terms WHERE session_id = ?1",
                    [sid],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
        };
        assert_eq!(count(&mut s), 0);
        assert_eq!((terms(&mut s, "sess_a"), terms(&mut s, "sess_b")), (2, 1));
        s.write(|tx| tx.object_shred(file, "t2")).unwrap();
        assert_eq!(
            terms(&mut s, "sess_b"),
            1,
            "a file's shred leaves the index alone"
        );
        s.write(|tx| tx.object_shred(transcript, "t2")).unwrap();
        assert_eq!(terms(&mut s, "sess_a"), 0);
    }
}
