//! Integrations: events pushed out of the appliance, and the knowledge base.
//!
//! Every event an integration receives is an audit entry: `events_of` maps an entry's action to
//! the webhook event types it stands for, and `enqueue_tx` writes one outbox row per subscribed
//! webhook inside the transaction that appends the entry. So an event exists exactly when its
//! audit entry does, and a crash can lose neither one without the other.
//!
//! Background tasks, started by `start`:
//! - `outbox`: delivers webhook and e-mail rows, one worker per channel, retrying with
//!   exponential backoff; a slow or dead receiver only delays its own channel.
//! - `alerts`: raises alerts (a bad survey, a long queue or wait, an agent missing in business
//!   hours) as audit entries, which fan out to webhooks, e-mail and syslog like any event.
//! - `syslog`: forwards audit entries, checkpoints and alerts to each configured sink from a
//!   durable cursor.
//!
//! Payloads carry metadata only (ids, portal, ratings, names of actors): never chat text, survey
//! comments or files, which stay encrypted in the archive; receivers fetch them through the
//! Sessions API with a token.

pub mod alerts;
pub mod http;
pub mod kb;
pub mod outbox;
pub mod settings;
pub mod smtp;
pub mod syslog;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::app::App;
use crate::audit::Entry;
use crate::store::{NewDelivery, StoreError, Tx};

/// The webhook event types, as integrators subscribe to them.
pub const EVENT_TYPES: &[&str] = &[
    "request.created",
    "request.cancelled",
    "session.started",
    "session.transferred",
    "session.ended",
    "survey.submitted",
    "recording.sealed",
    "alert",
];

/// The webhook event types an audit entry stands for.
pub fn events_of(action: &str, details: &Value) -> &'static [&'static str] {
    match action {
        // A session started from a connection code has its agent from the start.
        "request.created" if details.get("agent").is_some_and(|a| !a.is_null()) => {
            &["request.created", "session.started"]
        }
        "request.created" => &["request.created"],
        "request.cancelled" => &["request.cancelled"],
        "request.accepted" => &["session.started"],
        "session.transferred" => &["session.transferred"],
        "session.ended" => &["session.ended"],
        "survey.submitted" => &["survey.submitted"],
        "recording.sealed" => &["recording.sealed"],
        "alert.raised" => &["alert"],
        _ => &[],
    }
}

/// The JSON an integration receives for one event of an entry.
pub fn event_body(kind: &str, e: &Entry) -> Value {
    let mut data = match &e.details {
        Value::Object(m) => m.clone(),
        _ => Default::default(),
    };
    if let Some(id) = e.target.strip_prefix("session:") {
        data.insert("session".into(), json!(id));
    }
    data.insert("actor".into(), json!(e.actor));
    json!({
        "id": event_id(e.seq, kind),
        "type": kind,
        "created_at": e.time,
        "audit_seq": e.seq,
        "data": data,
    })
}

/// Stable and unique per event: receivers use it to drop repeats (delivery is at least once).
pub fn event_id(seq: u64, kind: &str) -> String {
    format!("evt_{seq}_{}", kind.replace('.', "_"))
}

/// Queues the entry's events for every webhook that wants them; runs in the audit transaction.
pub fn enqueue_tx(tx: &Tx<'_>, e: &Entry) -> Result<(), StoreError> {
    let kinds = events_of(&e.action, &e.details);
    if kinds.is_empty() {
        return Ok(());
    }
    let hooks = tx.webhooks(false)?;
    let now_ms = now_ms();
    let mut queued = false;
    for kind in kinds {
        let body = event_body(kind, e).to_string();
        for h in hooks.iter().filter(|h| h.wants(kind)) {
            tx.delivery_insert(&NewDelivery {
                channel: &format!("webhook:{}", h.id),
                event_id: &event_id(e.seq, kind),
                event: kind,
                body: &body,
                now_ms,
            })?;
            queued = true;
        }
    }
    if queued {
        outbox::wake();
    }
    Ok(())
}

/// This machine's host name, as mail and syslog headers carry it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .unwrap_or_else(|| "custos".into())
}

pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_millis() as i64
}

/// Starts the background tasks; each stops when the app does.
pub fn start(app: &Arc<App>) {
    tokio::spawn(outbox::run(app.clone()));
    tokio::spawn(alerts::run(app.clone()));
    for sink in app.config.integrations.syslog.clone() {
        tokio::spawn(syslog::run(app.clone(), sink));
    }
    if let Some(dir) = app.config.integrations.knowledge_dir.clone() {
        tokio::spawn(kb::watch(app.clone(), dir));
    }
}
