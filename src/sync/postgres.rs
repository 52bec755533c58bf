//! The PostgreSQL target (`postgres://USER:PASSWORD@HOST:PORT/DB`), through tokio-postgres.
//! Connections are plain TCP or a Unix socket: reach a remote server over a loopback tunnel until
//! TLS to the target is built (docs/database-schema.md says so).

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use super::{INDEXES, PARTS, SCHEMA_VERSION, SESSIONS, SessionRows, Statements, SyncError, Val};

const TYPES: super::Types = super::Types {
    key_text: "TEXT",
    text: "TEXT",
    int: "BIGINT",
};

pub struct Postgres {
    client: Client,
    sql: Statements,
}

fn err(e: tokio_postgres::Error) -> SyncError {
    // The server's own message (a constraint, a permission) says more than the driver's summary.
    match e.as_db_error() {
        Some(db) => SyncError::Target(format!("{}: {}", db.code().code(), db.message())),
        None => SyncError::Target(e.to_string()),
    }
}

/// A value as the driver binds it; nulls keep the column's type.
fn bind(v: &Val) -> Box<dyn ToSql + Sync + Send> {
    match v {
        Val::Text(t) => Box::new(t.clone()),
        Val::Int(i) => Box::new(*i),
    }
}

impl Postgres {
    pub async fn connect(url: &str) -> Result<Self, SyncError> {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(err)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "the PostgreSQL connection ended");
            }
        });
        Ok(Self {
            client,
            sql: Statements::new(|i| format!("${i}"), super::Upsert::OnConflict),
        })
    }

    pub async fn prepare(&mut self) -> Result<(), SyncError> {
        let tx = self.client.transaction().await.map_err(err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS custos_schema (version BIGINT NOT NULL);
             LOCK TABLE custos_schema IN EXCLUSIVE MODE;",
        )
        .await
        .map_err(err)?;
        let version: Option<i64> = tx
            .query_one("SELECT MAX(version) FROM custos_schema", &[])
            .await
            .map_err(err)?
            .get(0);
        match version {
            Some(v) if v > SCHEMA_VERSION => return Err(super::newer(v)),
            Some(v) if v == SCHEMA_VERSION => {}
            _ => {
                let mut ddl = String::from(
                    "CREATE TABLE IF NOT EXISTS custos_sync (appliance_id TEXT NOT NULL, stream TEXT NOT NULL,
                     cursor TEXT NOT NULL, synced_at TEXT NOT NULL, PRIMARY KEY (appliance_id, stream));",
                );
                // Version 1's tables (kept if they exist), then version 2's indexes: this is
                // also the migration from version 1.
                for t in std::iter::once(&SESSIONS).chain(PARTS.iter()) {
                    ddl.push_str(&super::create_sql(t, &TYPES));
                    ddl.push(';');
                }
                for (name, table, col) in INDEXES {
                    ddl.push_str(&format!(
                        "CREATE INDEX IF NOT EXISTS {name} ON {table} ({col});"
                    ));
                }
                tx.batch_execute(&ddl).await.map_err(err)?;
                tx.execute("DELETE FROM custos_schema", &[])
                    .await
                    .map_err(err)?;
                tx.execute(
                    "INSERT INTO custos_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)
    }

    pub async fn cursor(
        &mut self,
        appliance: &str,
        stream: &str,
    ) -> Result<Option<String>, SyncError> {
        Ok(self
            .client
            .query_opt(
                "SELECT cursor FROM custos_sync WHERE appliance_id = $1 AND stream = $2",
                &[&appliance, &stream],
            )
            .await
            .map_err(err)?
            .map(|r| r.get(0)))
    }

    pub async fn apply(
        &mut self,
        appliance: &str,
        stream: &str,
        sessions: &[SessionRows],
        cursor: &str,
    ) -> Result<(), SyncError> {
        let tx = self.client.transaction().await.map_err(err)?;
        let run =
            |row: &[Val]| -> Vec<Box<dyn ToSql + Sync + Send>> { row.iter().map(bind).collect() };
        let upsert = tx.prepare(&self.sql.upsert_session).await.map_err(err)?;
        for s in sessions {
            let vals = run(&s.session);
            let refs: Vec<&(dyn ToSql + Sync)> = vals.iter().map(|b| b.as_ref() as _).collect();
            tx.execute(&upsert, &refs).await.map_err(err)?;
        }
        for (i, (delete, insert)) in self.sql.parts.iter().enumerate() {
            let delete = tx.prepare(delete).await.map_err(err)?;
            let insert = tx.prepare(insert).await.map_err(err)?;
            for s in sessions {
                tx.execute(&delete, &[&s.id]).await.map_err(err)?;
                for row in &s.parts[i] {
                    let vals = run(row);
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        vals.iter().map(|b| b.as_ref() as _).collect();
                    tx.execute(&insert, &refs).await.map_err(err)?;
                }
            }
        }
        tx.execute(
            "INSERT INTO custos_sync (appliance_id, stream, cursor, synced_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (appliance_id, stream) DO UPDATE SET cursor = excluded.cursor, synced_at = excluded.synced_at",
            &[&appliance, &stream, &cursor, &crate::model::now_rfc3339()],
        )
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)
    }
}
