//! Queries for integrations: webhook endpoints, the delivery outbox, forwarding cursors and the
//! knowledge base.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Tx};

#[derive(Clone, Debug, Serialize)]
pub struct WebhookRow {
    pub id: i64,
    pub url: String,
    /// Event types it receives; `*` means all.
    pub events: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
    pub deleted_at: Option<String>,
}

impl WebhookRow {
    pub fn wants(&self, event: &str) -> bool {
        self.deleted_at.is_none() && self.events.iter().any(|e| e == "*" || e == event)
    }
}

pub struct NewDelivery<'a> {
    pub channel: &'a str,
    pub event_id: &'a str,
    pub event: &'a str,
    pub body: &'a str,
    pub now_ms: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRow {
    pub id: i64,
    pub channel: String,
    pub event_id: String,
    pub event: String,
    #[serde(skip)]
    pub body: String,
    pub created_ms: i64,
    pub state: String,
    pub attempts: i64,
    pub next_ms: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub done_ms: Option<i64>,
}

/// A knowledge-base article with its version rules (package, lowest good version).
#[derive(Clone, Debug, Serialize)]
pub struct KbArticle {
    pub slug: String,
    pub title: String,
    pub body: String,
    pub tags: Vec<String>,
    pub source: String,
    pub push_url: Option<String>,
    pub rules: Vec<(String, String)>,
    pub updated_at: String,
}

const DELIVERY_COLS: &str = "id, channel, event_id, event, body, created_ms, state, attempts, next_ms, last_status, last_error, done_ms";

fn delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        channel: r.get(1)?,
        event_id: r.get(2)?,
        event: r.get(3)?,
        body: r.get(4)?,
        created_ms: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_ms: r.get(8)?,
        last_status: r.get(9)?,
        last_error: r.get(10)?,
        done_ms: r.get(11)?,
    })
}

impl Tx<'_> {
    // --- webhooks ------------------------------------------------------------------------------

    pub fn webhook_insert(
        &self,
        url: &str,
        events: &[String],
        secret: &str,
        description: &str,
        by: &str,
        now: &str,
    ) -> Result<i64> {
        let events = serde_json::to_string(events).expect("strings serialize");
        self.0.execute(
            "INSERT INTO webhooks (url, events, secret, description, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![url, events, secret, description, by, now],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    /// Webhook endpoints, oldest first; deleted ones only when asked for.
    pub fn webhooks(&self, with_deleted: bool) -> Result<Vec<WebhookRow>> {
        let mut stmt = self.0.prepare(
            "SELECT id, url, events, secret, description, created_by, created_at, deleted_at
             FROM webhooks WHERE ?1 OR deleted_at IS NULL ORDER BY id",
        )?;
        let rows = stmt
            .query_map([with_deleted], |r| {
                let events: String = r.get(2)?;
                Ok(WebhookRow {
                    id: r.get(0)?,
                    url: r.get(1)?,
                    events: serde_json::from_str(&events).unwrap_or_default(),
                    secret: r.get(3)?,
                    description: r.get(4)?,
                    created_by: r.get(5)?,
                    created_at: r.get(6)?,
                    deleted_at: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Deletes an endpoint and drops what it still had to send; false if there was none.
    pub fn webhook_delete(&self, id: i64, now: &str) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE webhooks SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            params![id, now],
        )?;
        if n > 0 {
            self.0.execute(
                "UPDATE deliveries SET state = 'failed', last_error = 'the endpoint was deleted'
                 WHERE channel = ?1 AND state = 'pending'",
                [format!("webhook:{id}")],
            )?;
        }
        Ok(n > 0)
    }

    // --- the outbox ----------------------------------------------------------------------------

    pub fn delivery_insert(&self, d: &NewDelivery<'_>) -> Result<i64> {
        self.0.execute(
            "INSERT INTO deliveries (channel, event_id, event, body, created_ms, state, next_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
            params![d.channel, d.event_id, d.event, d.body, d.now_ms],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    /// Channels with a delivery due by `now_ms`, and the earliest time anything else is due.
    pub fn deliveries_due_channels(&self, now_ms: i64) -> Result<(Vec<String>, Option<i64>)> {
        let mut stmt = self.0.prepare(
            "SELECT DISTINCT channel FROM deliveries WHERE state = 'pending' AND next_ms <= ?1",
        )?;
        let due = stmt
            .query_map([now_ms], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        let next = self.0.query_row(
            "SELECT MIN(next_ms) FROM deliveries WHERE state = 'pending' AND next_ms > ?1",
            [now_ms],
            |r| r.get(0),
        )?;
        Ok((due, next))
    }

    /// Deliveries due on one channel, the longest-waiting first.
    pub fn deliveries_due(
        &self,
        channel: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries
             WHERE channel = ?1 AND state = 'pending' AND next_ms <= ?2 ORDER BY next_ms, id LIMIT ?3"
        ))?;
        let rows = stmt
            .query_map(params![channel, now_ms, limit], delivery)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records one attempt. `next_ms` None with `delivered` false means given up.
    pub fn delivery_attempted(
        &self,
        id: i64,
        delivered: bool,
        status: Option<u16>,
        error: Option<&str>,
        next_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<()> {
        let state = match (delivered, next_ms) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        self.0.execute(
            "UPDATE deliveries SET state = ?2, attempts = attempts + 1, last_status = ?3, last_error = ?4,
                 next_ms = COALESCE(?5, next_ms), done_ms = CASE WHEN ?2 = 'pending' THEN NULL ELSE ?6 END
             WHERE id = ?1 AND state = 'pending'",
            params![id, state, status, error, next_ms, now_ms],
        )?;
        Ok(())
    }

    /// The delivery log, newest first: optionally one channel and one state, before an id.
    pub fn deliveries(
        &self,
        channel: Option<&str>,
        state: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries
             WHERE (?1 IS NULL OR channel = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR id < ?3)
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let rows = stmt
            .query_map(params![channel, state, before, limit], delivery)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn delivery_get(&self, id: i64) -> Result<Option<DeliveryRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {DELIVERY_COLS} FROM deliveries WHERE id = ?1"),
                [id],
                delivery,
            )
            .optional()?)
    }

    /// Queues a failed (or waiting) delivery to be tried again now; false if it was delivered or
    /// does not exist.
    pub fn delivery_retry(&self, id: i64, now_ms: i64) -> Result<bool> {
        let n = self.0.execute(
            "UPDATE deliveries SET state = 'pending', next_ms = ?2, done_ms = NULL
             WHERE id = ?1 AND state != 'delivered'",
            params![id, now_ms],
        )?;
        Ok(n > 0)
    }

    /// Counts by state, for metrics and the dashboard.
    pub fn delivery_counts(&self) -> Result<Vec<(String, u64)>> {
        let mut stmt = self
            .0
            .prepare("SELECT state, COUNT(*) FROM deliveries GROUP BY state")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // --- syslog forwarding ---------------------------------------------------------------------

    /// How far `sink` has forwarded: (next audit seq, next checkpoint size above).
    pub fn forward_cursor(&self, sink: &str) -> Result<(u64, u64)> {
        Ok(self
            .0
            .query_row(
                "SELECT audit_seq, checkpoint FROM forward_cursors WHERE sink = ?1",
                [sink],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?
            .unwrap_or((0, 0)))
    }

    pub fn forward_cursor_set(&self, sink: &str, audit_seq: u64, checkpoint: u64) -> Result<()> {
        self.0.execute(
            "INSERT INTO forward_cursors (sink, audit_seq, checkpoint) VALUES (?1, ?2, ?3)
             ON CONFLICT (sink) DO UPDATE SET audit_seq = excluded.audit_seq, checkpoint = excluded.checkpoint",
            params![sink, audit_seq as i64, checkpoint as i64],
        )?;
        Ok(())
    }

    /// Checkpoints larger than `size`, smallest first.
    pub fn checkpoints_after(&self, size: u64, limit: u32) -> Result<Vec<(u64, String)>> {
        let mut stmt = self
            .0
            .prepare("SELECT size, note FROM checkpoints WHERE size > ?1 ORDER BY size LIMIT ?2")?;
        let rows = stmt
            .query_map(params![size as i64, limit], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // --- knowledge base ------------------------------------------------------------------------

    /// Inserts or replaces an article, its index entry and its rules.
    pub fn kb_upsert(&self, a: &KbArticle) -> Result<()> {
        self.kb_delete(&a.slug)?;
        let tags = a.tags.join(", ");
        self.0.execute(
            "INSERT INTO kb_articles (slug, title, body, tags, source, push_url, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                a.slug,
                a.title,
                a.body,
                tags,
                a.source,
                a.push_url,
                a.updated_at
            ],
        )?;
        self.0.execute(
            "INSERT INTO kb_fts (slug, title, body, tags) VALUES (?1, ?2, ?3, ?4)",
            params![a.slug, a.title, a.body, tags],
        )?;
        for (package, below) in &a.rules {
            self.0.execute(
                "INSERT INTO kb_rules (slug, package, below) VALUES (?1, ?2, ?3)",
                params![a.slug, package, below],
            )?;
        }
        Ok(())
    }

    pub fn kb_delete(&self, slug: &str) -> Result<bool> {
        self.0
            .execute("DELETE FROM kb_fts WHERE slug = ?1", [slug])?;
        self.0
            .execute("DELETE FROM kb_rules WHERE slug = ?1", [slug])?;
        Ok(self
            .0
            .execute("DELETE FROM kb_articles WHERE slug = ?1", [slug])?
            > 0)
    }

    /// Every article (without bodies' rules resolved), by slug.
    pub fn kb_list(&self) -> Result<Vec<KbArticle>> {
        let mut stmt = self.0.prepare(
            "SELECT slug, title, body, tags, source, push_url, updated_at FROM kb_articles ORDER BY slug",
        )?;
        let mut out = stmt
            .query_map([], kb_article)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut rules = self
            .0
            .prepare("SELECT slug, package, below FROM kb_rules")?;
        let all = rules
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (slug, package, below) in all {
            if let Some(a) = out.iter_mut().find(|a| a.slug == slug) {
                a.rules.push((package, below));
            }
        }
        Ok(out)
    }

    pub fn kb_get(&self, slug: &str) -> Result<Option<KbArticle>> {
        let mut a = self
            .0
            .query_row(
                "SELECT slug, title, body, tags, source, push_url, updated_at FROM kb_articles WHERE slug = ?1",
                [slug],
                kb_article,
            )
            .optional()?;
        if let Some(a) = a.as_mut() {
            let mut stmt = self
                .0
                .prepare("SELECT package, below FROM kb_rules WHERE slug = ?1")?;
            a.rules = stmt
                .query_map([slug], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
        }
        Ok(a)
    }

    /// Full-text search: (slug, title, snippet), best first. `query` is an FTS5 expression built
    /// by the caller from plain words.
    pub fn kb_search(&self, query: &str, limit: u32) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self.0.prepare(
            "SELECT slug, title, snippet(kb_fts, 2, '', '', ' … ', 16) FROM kb_fts
             WHERE kb_fts MATCH ?1 ORDER BY bm25(kb_fts, 0.0, 5.0, 1.0, 3.0) LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![query, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Every version rule: (slug, package, lowest good version).
    pub fn kb_rules(&self) -> Result<Vec<(String, String, String)>> {
        let mut stmt = self
            .0
            .prepare("SELECT slug, package, below FROM kb_rules ORDER BY slug")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn kb_article(r: &rusqlite::Row<'_>) -> rusqlite::Result<KbArticle> {
    let tags: String = r.get(3)?;
    Ok(KbArticle {
        slug: r.get(0)?,
        title: r.get(1)?,
        body: r.get(2)?,
        tags: tags
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        source: r.get(4)?,
        push_url: r.get(5)?,
        rules: Vec::new(),
        updated_at: r.get(6)?,
    })
}
