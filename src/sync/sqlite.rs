//! The SQLite target (`sqlite:PATH`): the schema of docs/database-schema.md in a file of its own.

use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::{INDEXES, PARTS, SCHEMA_VERSION, SESSIONS, SessionRows, Statements, SyncError, Val};

const TYPES: super::Types = super::Types {
    key_text: "TEXT",
    text: "TEXT",
    int: "INTEGER",
};

pub struct Sqlite {
    conn: Connection,
    sql: Statements,
}

fn err(e: rusqlite::Error) -> SyncError {
    SyncError::Target(e.to_string())
}

fn bind(v: &Val) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        Val::Text(Some(s)) => Value::Text(s.clone()),
        Val::Int(Some(i)) => Value::Integer(*i),
        Val::Text(None) | Val::Int(None) => Value::Null,
    }
}

impl Sqlite {
    pub fn open(path: &str) -> Result<Self, SyncError> {
        if path.is_empty() {
            return Err(SyncError::Usage("sqlite: needs a file path".into()));
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        Ok(Self {
            conn,
            sql: Statements::new(|i| format!("?{i}"), super::Upsert::OnConflict),
        })
    }

    pub fn prepare(&mut self) -> Result<(), SyncError> {
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "CREATE TABLE IF NOT EXISTS custos_schema (version INTEGER NOT NULL)",
            [],
        )
        .map_err(err)?;
        let version: Option<i64> = tx
            .query_row("SELECT MAX(version) FROM custos_schema", [], |r| r.get(0))
            .optional()
            .map_err(err)?
            .flatten();
        match version {
            Some(v) if v > SCHEMA_VERSION => return Err(super::newer(v)),
            Some(v) if v == SCHEMA_VERSION => {}
            _ => {
                tx.execute(
                    "CREATE TABLE IF NOT EXISTS custos_sync (appliance_id TEXT NOT NULL, stream TEXT NOT NULL,
                     cursor TEXT NOT NULL, synced_at TEXT NOT NULL, PRIMARY KEY (appliance_id, stream))",
                    [],
                )
                .map_err(err)?;
                // Version 1's tables (kept if they exist), then version 2's indexes: this is
                // also the migration from version 1.
                for t in std::iter::once(&SESSIONS).chain(PARTS.iter()) {
                    tx.execute(&super::create_sql(t, &TYPES), []).map_err(err)?;
                }
                for (name, table, col) in INDEXES {
                    tx.execute(
                        &format!("CREATE INDEX IF NOT EXISTS {name} ON {table} ({col})"),
                        [],
                    )
                    .map_err(err)?;
                }
                tx.execute("DELETE FROM custos_schema", []).map_err(err)?;
                tx.execute(
                    "INSERT INTO custos_schema (version) VALUES (?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub fn cursor(&mut self, appliance: &str, stream: &str) -> Result<Option<String>, SyncError> {
        self.conn
            .query_row(
                "SELECT cursor FROM custos_sync WHERE appliance_id = ?1 AND stream = ?2",
                [appliance, stream],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)
    }

    pub fn apply(
        &mut self,
        appliance: &str,
        stream: &str,
        sessions: &[SessionRows],
        cursor: &str,
    ) -> Result<(), SyncError> {
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut upsert = tx.prepare_cached(&self.sql.upsert_session).map_err(err)?;
            for s in sessions {
                upsert
                    .execute(params_from_iter(s.session.iter().map(bind)))
                    .map_err(err)?;
            }
            for (i, (delete, insert)) in self.sql.parts.iter().enumerate() {
                let mut delete = tx.prepare_cached(delete).map_err(err)?;
                let mut insert = tx.prepare_cached(insert).map_err(err)?;
                for s in sessions {
                    delete.execute([&s.id]).map_err(err)?;
                    for row in &s.parts[i] {
                        insert
                            .execute(params_from_iter(row.iter().map(bind)))
                            .map_err(err)?;
                    }
                }
            }
            tx.execute(
                "INSERT INTO custos_sync (appliance_id, stream, cursor, synced_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (appliance_id, stream) DO UPDATE SET cursor = excluded.cursor, synced_at = excluded.synced_at",
                [appliance, stream, cursor, &crate::model::now_rfc3339()],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}
