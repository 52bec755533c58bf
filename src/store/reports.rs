//! The reports: sessions per day, agent or portal, with their wait and handle times and survey
//! scores, from the session records alone (no content is read).

use serde::Serialize;

use super::{Result, Tx};

/// How a report groups sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// The UTC day the session was requested.
    Day,
    /// The handling agent (empty for sessions nobody accepted).
    Agent,
    Portal,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(GroupBy::Day),
            "agent" => Some(GroupBy::Agent),
            "portal" => Some(GroupBy::Portal),
            _ => None,
        }
    }

    fn sql(self) -> &'static str {
        match self {
            GroupBy::Day => "substr(s.requested_at, 1, 10)",
            GroupBy::Agent => "COALESCE(u.name, '')",
            GroupBy::Portal => "s.portal",
        }
    }
}

/// One group's figures. Times are whole seconds; averages over the sessions that have them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReportRow {
    pub key: String,
    pub sessions: u64,
    pub accepted: u64,
    pub ended: u64,
    pub cancelled: u64,
    pub avg_wait_s: Option<u64>,
    pub max_wait_s: Option<u64>,
    pub avg_handle_s: Option<u64>,
    pub surveys: u64,
    /// The average rating, to two decimals.
    pub avg_rating: Option<f64>,
    /// Ratings of 1 or 2 (of 5).
    pub negative: u64,
}

/// The column names, in the order of `ReportRow` (the CSV header).
pub const REPORT_COLUMNS: [&str; 11] = [
    "key",
    "sessions",
    "accepted",
    "ended",
    "cancelled",
    "avg_wait_s",
    "max_wait_s",
    "avg_handle_s",
    "surveys",
    "avg_rating",
    "negative",
];

impl Tx<'_> {
    /// Sessions requested in `[since, until]` (RFC 3339; either open), grouped and ordered by key.
    pub fn report(
        &self,
        by: GroupBy,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Vec<ReportRow>> {
        let secs = |a: &str, b: &str| format!("(julianday({b}) - julianday({a})) * 86400.0");
        let wait = secs("s.requested_at", "s.accepted_at");
        let handle = secs("s.accepted_at", "s.ended_at");
        let sql = format!(
            "SELECT {key} AS k, COUNT(*), COUNT(s.accepted_at), COALESCE(SUM(s.status = 'ended'), 0),
                    COALESCE(SUM(s.status = 'cancelled'), 0),
                    AVG({wait}), MAX({wait}), AVG(CASE WHEN s.ended_at IS NOT NULL THEN {handle} END),
                    COUNT(s.survey_rating), AVG(s.survey_rating),
                    COALESCE(SUM(s.survey_rating <= 2), 0)
             FROM sessions s LEFT JOIN users u ON u.id = s.agent_id
             WHERE (?1 IS NULL OR s.requested_at >= ?1) AND (?2 IS NULL OR s.requested_at <= ?2)
             GROUP BY k ORDER BY k",
            key = by.sql()
        );
        let mut stmt = self.0.prepare(&sql)?;
        let secs = |v: Option<f64>| v.map(|s| s.max(0.0).round() as u64);
        let rows = stmt
            .query_map([since, until], |r| {
                Ok(ReportRow {
                    key: r.get(0)?,
                    sessions: r.get::<_, i64>(1)? as u64,
                    accepted: r.get::<_, i64>(2)? as u64,
                    ended: r.get::<_, i64>(3)? as u64,
                    cancelled: r.get::<_, i64>(4)? as u64,
                    avg_wait_s: secs(r.get(5)?),
                    max_wait_s: secs(r.get(6)?),
                    avg_handle_s: secs(r.get(7)?),
                    surveys: r.get::<_, i64>(8)? as u64,
                    avg_rating: r
                        .get::<_, Option<f64>>(9)?
                        .map(|a| (a * 100.0).round() / 100.0),
                    negative: r.get::<_, i64>(10)? as u64,
                })
            })?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

/// A report as CSV (RFC 4180: CRLF line ends, fields quoted when they need it).
pub fn report_csv(rows: &[ReportRow]) -> String {
    let field = |s: String| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let opt = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    let mut out = REPORT_COLUMNS.join(",") + "\r\n";
    for r in rows {
        let cells = [
            field(r.key.clone()),
            r.sessions.to_string(),
            r.accepted.to_string(),
            r.ended.to_string(),
            r.cancelled.to_string(),
            opt(r.avg_wait_s),
            opt(r.max_wait_s),
            opt(r.avg_handle_s),
            r.surveys.to_string(),
            r.avg_rating.map_or(String::new(), |a| format!("{a:.2}")),
            r.negative.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let rows = vec![ReportRow {
            key: "sales, \"north\"".into(),
            sessions: 2,
            avg_rating: Some(4.5),
            ..Default::default()
        }];
        let csv = report_csv(&rows);
        assert_eq!(
            csv,
            "key,sessions,accepted,ended,cancelled,avg_wait_s,max_wait_s,avg_handle_s,surveys,avg_rating,negative\r\n\
             \"sales, \"\"north\"\"\",2,0,0,0,,,,0,4.50,0\r\n"
        );
        assert_eq!(GroupBy::parse("week"), None);
    }
}
