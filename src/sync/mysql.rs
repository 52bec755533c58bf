//! The MariaDB and MySQL target (`mysql://USER:PASSWORD@HOST:PORT/DB`), through mysql_async.
//! Key text columns are `VARCHAR(191)` (an index on utf8mb4 stays within 767 bytes); other text is
//! `MEDIUMTEXT`, so a diagnostics document of several megabytes fits. `cursor` is a reserved word
//! here, so that column is always quoted.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, TxOpts, Value as MyValue};

use super::{
    INDEXES, PARTS, SCHEMA_VERSION, SESSIONS, SessionRows, Statements, SyncError, Upsert, Val,
};

const TYPES: super::Types = super::Types {
    key_text: "VARCHAR(191)",
    text: "MEDIUMTEXT",
    int: "BIGINT",
};

pub struct Mysql {
    conn: Conn,
    sql: Statements,
}

fn err(e: mysql_async::Error) -> SyncError {
    SyncError::Target(e.to_string())
}

fn bind(v: &Val) -> MyValue {
    match v {
        Val::Text(Some(s)) => MyValue::Bytes(s.clone().into_bytes()),
        Val::Int(Some(i)) => MyValue::Int(*i),
        Val::Text(None) | Val::Int(None) => MyValue::NULL,
    }
}

impl Mysql {
    pub async fn connect(url: &str) -> Result<Self, SyncError> {
        let url = url.replacen("mariadb://", "mysql://", 1);
        let opts =
            Opts::from_url(&url).map_err(|e| SyncError::Usage(format!("the target URL: {e}")))?;
        let mut conn = Conn::new(opts).await.map_err(err)?;
        // Text in and out as UTF-8, whatever the server's default.
        conn.query_drop("SET NAMES utf8mb4").await.map_err(err)?;
        Ok(Self {
            conn,
            sql: Statements::new(|_| "?".to_string(), Upsert::OnDuplicateKey),
        })
    }

    pub async fn prepare(&mut self) -> Result<(), SyncError> {
        // DDL commits by itself here; every statement is idempotent, and the version is written
        // last, so an interrupted preparation is finished by the next run.
        self.conn
            .query_drop(
                "CREATE TABLE IF NOT EXISTS custos_schema (version BIGINT NOT NULL) CHARACTER SET utf8mb4",
            )
            .await
            .map_err(err)?;
        let version: Option<i64> = self
            .conn
            .query_first("SELECT MAX(version) FROM custos_schema")
            .await
            .map_err(err)?
            .flatten();
        match version {
            Some(v) if v > SCHEMA_VERSION => return Err(super::newer(v)),
            Some(v) if v == SCHEMA_VERSION => {}
            _ => {
                self.conn
                    .query_drop(
                        "CREATE TABLE IF NOT EXISTS custos_sync (appliance_id VARCHAR(64) NOT NULL,
                         stream VARCHAR(191) NOT NULL, `cursor` MEDIUMTEXT NOT NULL, synced_at VARCHAR(40) NOT NULL,
                         PRIMARY KEY (appliance_id, stream)) CHARACTER SET utf8mb4",
                    )
                    .await
                    .map_err(err)?;
                // Version 1's tables (kept if they exist), then version 2's indexes: this is
                // also the migration from version 1. Text columns are indexed by a prefix.
                for t in std::iter::once(&SESSIONS).chain(PARTS.iter()) {
                    let ddl = format!("{} CHARACTER SET utf8mb4", super::create_sql(t, &TYPES));
                    self.conn.query_drop(ddl).await.map_err(err)?;
                }
                for (name, table, col) in INDEXES {
                    let present: Option<i64> = self
                        .conn
                        .exec_first(
                            "SELECT COUNT(*) FROM information_schema.statistics
                             WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?",
                            (table, name),
                        )
                        .await
                        .map_err(err)?;
                    if present.unwrap_or(0) == 0 {
                        self.conn
                            .query_drop(format!("CREATE INDEX {name} ON {table} ({col}(64))"))
                            .await
                            .map_err(err)?;
                    }
                }
                let mut tx = self
                    .conn
                    .start_transaction(TxOpts::default())
                    .await
                    .map_err(err)?;
                tx.query_drop("DELETE FROM custos_schema")
                    .await
                    .map_err(err)?;
                tx.exec_drop(
                    "INSERT INTO custos_schema (version) VALUES (?)",
                    (SCHEMA_VERSION,),
                )
                .await
                .map_err(err)?;
                tx.commit().await.map_err(err)?;
            }
        }
        Ok(())
    }

    pub async fn cursor(
        &mut self,
        appliance: &str,
        stream: &str,
    ) -> Result<Option<String>, SyncError> {
        self.conn
            .exec_first(
                "SELECT `cursor` FROM custos_sync WHERE appliance_id = ? AND stream = ?",
                (appliance, stream),
            )
            .await
            .map_err(err)
    }

    pub async fn apply(
        &mut self,
        appliance: &str,
        stream: &str,
        sessions: &[SessionRows],
        cursor: &str,
    ) -> Result<(), SyncError> {
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(err)?;
        let upsert = tx.prep(&self.sql.upsert_session).await.map_err(err)?;
        for s in sessions {
            let vals: Vec<MyValue> = s.session.iter().map(bind).collect();
            tx.exec_drop(&upsert, vals).await.map_err(err)?;
        }
        for (i, (delete, insert)) in self.sql.parts.iter().enumerate() {
            let delete = tx.prep(delete).await.map_err(err)?;
            let insert = tx.prep(insert).await.map_err(err)?;
            for s in sessions {
                tx.exec_drop(&delete, (s.id.as_str(),)).await.map_err(err)?;
                for row in &s.parts[i] {
                    let vals: Vec<MyValue> = row.iter().map(bind).collect();
                    tx.exec_drop(&insert, vals).await.map_err(err)?;
                }
            }
        }
        tx.exec_drop(
            "INSERT INTO custos_sync (appliance_id, stream, `cursor`, synced_at) VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE `cursor` = VALUES(`cursor`), synced_at = VALUES(synced_at)",
            (appliance, stream, cursor, crate::model::now_rfc3339()),
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }
}
