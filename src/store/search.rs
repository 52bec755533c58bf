//! Queries of the transcript word index (blind terms, see the migration that creates
//! `transcript_terms`).

use rusqlite::params_from_iter;
use rusqlite::types::Value as SqlValue;

use super::{Result, SESSION_COLS, SessionFilter, SessionRow, Tx, session_from_row};

/// An indexed word: the first 16 bytes of its HMAC.
pub type Term = [u8; 16];

impl Tx<'_> {
    /// Records that a session's transcript holds these terms.
    pub fn terms_insert(&self, session_id: &str, terms: &[Term]) -> Result<()> {
        let mut stmt = self.0.prepare_cached(
            "INSERT OR IGNORE INTO transcript_terms (term, session_id) VALUES (?1, ?2)",
        )?;
        for t in terms {
            stmt.execute(rusqlite::params![&t[..], session_id])?;
        }
        Ok(())
    }

    /// Sessions whose transcripts hold every one of `terms` (at least one), newest first, with
    /// the same optional filters as the sync.
    pub fn sessions_with_terms(
        &self,
        terms: &[Term],
        limit: u32,
        filter: &SessionFilter,
    ) -> Result<Vec<SessionRow>> {
        let matches = vec!["SELECT session_id FROM transcript_terms WHERE term = ?"; terms.len()]
            .join(" INTERSECT ");
        let (clause, filter_args) = filter.sql();
        let sql = format!(
            "SELECT {SESSION_COLS} FROM sessions s LEFT JOIN users u ON u.id = s.agent_id
             WHERE s.id IN ({matches}){clause}
             ORDER BY s.requested_at DESC LIMIT ?"
        );
        let mut args: Vec<SqlValue> = terms.iter().map(|t| SqlValue::Blob(t.to_vec())).collect();
        args.extend(filter_args);
        args.push(SqlValue::Integer(i64::from(limit)));
        let mut stmt = self.0.prepare(&sql)?;
        let rows = stmt
            .query_map(params_from_iter(args), session_from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
