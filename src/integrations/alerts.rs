//! Alerts: conditions a supervisor must hear about at once.
//!
//! - a survey rated at or below a threshold (read from the audit log, from a durable cursor, so a
//!   restart misses none);
//! - a queue longer than a threshold, or a customer waiting longer than one;
//! - an agent on duty who is offline in business hours for longer than a grace time.
//!
//! An alert is an audit entry `alert.raised`: webhooks subscribed to `alert` receive it through
//! the outbox like any event, syslog sinks that forward alerts send it, and, when `email_to` is
//! set, an e-mail is queued in the same transaction. A condition that persists is raised again
//! only after `repeat_after_s`; one that clears can be raised again at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::now_ms;
use crate::app::App;
use crate::audit::{self, Event};
use crate::store::NewDelivery;

/// The cursor name for the survey watch (sink names cannot contain '@').
const SURVEY_CURSOR: &str = "@alerts";
const TICK: Duration = Duration::from_secs(1);

pub async fn run(app: Arc<App>) {
    let cfg = app.config.integrations.alerts.clone();
    let any = cfg.survey_at_or_below.is_some()
        || cfg.queue_length_above.is_some()
        || cfg.queue_wait_above_s.is_some()
        || !cfg.agents_on_duty.is_empty();
    if !any {
        return;
    }
    let mut stop = app.stop.subscribe();
    let started = Instant::now();
    // When each on-duty agent was first seen offline (or, never seen, since this start).
    let mut offline_since: HashMap<String, Instant> = HashMap::new();
    let mut raised = Raised::default();
    loop {
        if let Some(t) = cfg.survey_at_or_below
            && let Err(e) = surveys(&app, t).await
        {
            tracing::error!(error = %e, "checking surveys for alerts failed");
        }
        if !app.is_sealed() {
            queues(&app, &mut raised).await;
            agents(&app, &mut raised, &mut offline_since, started).await;
        }
        tokio::select! {
            _ = async { drop(stop.wait_for(|s| *s).await) } => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

async fn surveys(app: &Arc<App>, threshold: u8) -> Result<(), String> {
    let found = app
        .db(move |s| {
            s.write(|tx| {
                let (mut seq, _) = tx.forward_cursor(SURVEY_CURSOR)?;
                if seq == 0 {
                    // First start with alerts: surveys from before are history, not news.
                    seq = tx.audit_size()?;
                }
                let mut low = Vec::new();
                let mut next = seq;
                tx.audit_scan(seq, |r| {
                    next = r.seq + 1;
                    if let Ok(e) = audit::decode(&r)
                        && e.action == "survey.submitted"
                        && e.details["rating"]
                            .as_u64()
                            .is_some_and(|x| x <= u64::from(threshold))
                    {
                        low.push(e);
                    }
                    Ok(next - seq < 5000)
                })?;
                tx.forward_cursor_set(SURVEY_CURSOR, next, 0)?;
                Ok(low)
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    for e in found {
        let session = e
            .target
            .strip_prefix("session:")
            .unwrap_or(&e.target)
            .to_string();
        let rating = e.details["rating"].as_u64().unwrap_or(0);
        raise(
            app,
            "survey.low",
            format!("Survey rated {rating} of 5 for session {session}"),
            json!({ "session": session, "rating": rating, "threshold": threshold }),
        )
        .await;
    }
    Ok(())
}

async fn queues(app: &Arc<App>, raised: &mut Raised) {
    let cfg = &app.config.integrations.alerts;
    for q in app.sessions.queues_view(&app.config.portals) {
        let (portal, skill) = (
            q["portal"].as_str().unwrap_or(""),
            q["skill"].as_str().unwrap_or(""),
        );
        let waiting = q["waiting"].as_u64().unwrap_or(0);
        let longest = q["longest_wait_s"].as_u64().unwrap_or(0);
        if let Some(max) = cfg.queue_length_above {
            let key = format!("queue.length:{portal}/{skill}");
            if waiting > max as u64 {
                raised.raise(app, "queue.length", &key, format!("{waiting} customers waiting in {portal}/{skill} (threshold {max})"), json!({ "portal": portal, "skill": skill, "waiting": waiting, "threshold": max })).await;
            } else {
                raised.clear(&key);
            }
        }
        if let Some(max) = cfg.queue_wait_above_s {
            let key = format!("queue.wait:{portal}/{skill}");
            if longest > max {
                raised.raise(app, "queue.wait", &key, format!("A customer has waited {longest} s in {portal}/{skill} (threshold {max} s)"), json!({ "portal": portal, "skill": skill, "longest_wait_s": longest, "threshold_s": max })).await;
            } else {
                raised.clear(&key);
            }
        }
    }
}

async fn agents(
    app: &Arc<App>,
    raised: &mut Raised,
    offline_since: &mut HashMap<String, Instant>,
    started: Instant,
) {
    let cfg = &app.config.integrations.alerts;
    if cfg.agents_on_duty.is_empty() {
        return;
    }
    let in_hours = cfg
        .business_hours
        .as_ref()
        .is_none_or(|h| h.contains(crate::model::unix_now()));
    let view: Vec<Value> = app.sessions.agents_view();
    for name in &cfg.agents_on_duty {
        let online = view
            .iter()
            .any(|a| a["name"] == name.as_str() && a["status"] != "offline");
        let key = format!("agent.offline:{name}");
        if online || !in_hours {
            offline_since.remove(name);
            raised.clear(&key);
            continue;
        }
        let since = *offline_since.entry(name.clone()).or_insert_with(|| {
            // Seen offline in the monitors: since then; never seen: since this start.
            view.iter()
                .find(|a| a["name"] == name.as_str())
                .and_then(|a| a["since_s"].as_u64())
                .and_then(|s| Instant::now().checked_sub(Duration::from_secs(s)))
                .unwrap_or(started)
        });
        let gone = since.elapsed().as_secs();
        if gone >= cfg.agent_offline_after_s {
            raised
                .raise(
                    app,
                    "agent.offline",
                    &key,
                    format!("Agent {name} is offline in business hours ({gone} s)"),
                    json!({ "agent": name, "offline_s": gone }),
                )
                .await;
        }
    }
}

/// Conditions that persist (a long queue, a missing agent): when each was last raised.
#[derive(Default)]
struct Raised(HashMap<String, Instant>);

impl Raised {
    /// Raises the alert unless the same condition was raised within the repeat time.
    async fn raise(
        &mut self,
        app: &Arc<App>,
        kind: &str,
        key: &str,
        summary: String,
        details: Value,
    ) {
        let repeat = Duration::from_secs(app.config.integrations.alerts.repeat_after_s);
        if self.0.get(key).is_some_and(|t| t.elapsed() < repeat) {
            return;
        }
        self.0.insert(key.to_string(), Instant::now());
        raise(app, kind, summary, details).await;
    }

    /// The condition is over: the next occurrence is raised at once.
    fn clear(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// Records an alert: its audit entry (which fans out to webhooks and syslog) and, with
/// `email_to`, an e-mail in the outbox, in one transaction.
pub async fn raise(app: &Arc<App>, kind: &str, summary: String, mut details: Value) {
    let email = !app.config.integrations.alerts.email_to.is_empty()
        && app.config.integrations.smtp.is_some();
    details["kind"] = json!(kind);
    details["summary"] = json!(summary);
    let ev = Event::system("alert.raised", &format!("alert:{kind}"), details);
    let r = app
        .db(move |s| {
            s.write(|tx| {
                let seq = audit::append_tx(tx, &[ev])?[0];
                if email {
                    let mut entry = None;
                    tx.audit_scan(seq, |r| {
                        entry = audit::decode(&r).ok();
                        Ok(false)
                    })?;
                    if let Some(e) = entry {
                        let body = super::event_body("alert", &e).to_string();
                        tx.delivery_insert(&NewDelivery {
                            channel: "email",
                            event_id: &super::event_id(e.seq, "alert"),
                            event: "alert",
                            body: &body,
                            now_ms: now_ms(),
                        })?;
                    }
                }
                Ok(())
            })
        })
        .await;
    match r {
        Ok(()) => {
            tracing::warn!(kind, "alert raised");
            super::outbox::wake();
        }
        Err(e) => tracing::error!(error = %e, "cannot record an alert"),
    }
}
