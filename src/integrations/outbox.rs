//! Delivers the outbox: webhook POSTs and alert e-mails.
//!
//! One dispatcher finds channels with deliveries due and runs at most one worker per channel,
//! which sends that channel's due deliveries one at a time. A receiver that is down or slow
//! therefore holds up only its own channel. Each failure pushes that delivery back by
//! `initial_backoff * 2^(attempts-1)` (capped, with ±10% jitter); a delivery still refused after
//! the give-up time is marked failed and stays in the log, from where an admin can retry it.
//! Delivery is at least once: receivers drop repeats by the event id.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{KeyInit, Mac};
use hyper::body::Bytes;
use tokio::sync::Notify;

use super::now_ms;
use crate::app::App;
use crate::store::DeliveryRow;

static WAKE: Notify = Notify::const_new();

/// Tells the dispatcher that something may be due (called after queuing a delivery).
pub fn wake() {
    WAKE.notify_one();
}

/// The `Custos-Signature` header: `t=UNIX,v1=HEX(HMAC-SHA256(secret, "UNIX.BODY"))`.
pub fn signature(secret: &str, unix: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(unix.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// How long to wait after the `attempts`-th failure.
pub fn backoff_ms(initial: u64, max: u64, attempts: u32) -> u64 {
    let base = initial
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(40))
        .min(max);
    let jitter: u16 = u16::from_le_bytes(crate::crypto::random_array());
    // ±10%
    let spread = base / 10;
    if spread == 0 {
        return base;
    }
    base - spread + (u64::from(jitter) % (2 * spread + 1))
}

pub async fn run(app: Arc<App>) {
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut stop = app.stop.subscribe();
    loop {
        let now = now_ms();
        let found = app
            .db(move |s| s.read(|tx| tx.deliveries_due_channels(now)))
            .await;
        let mut wait = Duration::from_secs(1);
        match found {
            Ok((due, next)) => {
                for ch in due {
                    if busy.lock().expect("busy").insert(ch.clone()) {
                        let (app, busy) = (app.clone(), busy.clone());
                        tokio::spawn(async move {
                            work(&app, &ch).await;
                            busy.lock().expect("busy").remove(&ch);
                            wake();
                        });
                    }
                }
                if let Some(n) = next {
                    wait = wait.min(Duration::from_millis((n - now).max(10) as u64));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
        tokio::select! {
            _ = async { drop(stop.wait_for(|s| *s).await) } => return,
            _ = WAKE.notified() => {
                // Let the transaction that queued the delivery commit.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends what is due on one channel, then returns.
async fn work(app: &Arc<App>, channel: &str) {
    loop {
        let stopping = *app.stop.borrow();
        if stopping {
            return;
        }
        let (ch, now) = (channel.to_string(), now_ms());
        let due = match app
            .db(move |s| s.read(|tx| tx.deliveries_due(&ch, now, 50)))
            .await
        {
            Ok(d) if !d.is_empty() => d,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return;
            }
        };
        // Attempts are recorded per batch, in one transaction: a crash before it is written
        // sends those deliveries again (delivery is at least once), never loses them.
        let mut results = Vec::with_capacity(due.len());
        for d in due {
            let (ok, status, error) = attempt(app, &d).await;
            let d_cfg = &app.config.integrations.delivery;
            let now = now_ms();
            let next = if ok || now - d.created_ms >= d_cfg.give_up_after_ms {
                None
            } else {
                Some(
                    now + backoff_ms(
                        d_cfg.initial_backoff_ms,
                        d_cfg.max_backoff_ms,
                        d.attempts as u32 + 1,
                    ) as i64,
                )
            };
            app.metrics.delivery(channel_kind(&d.channel), ok);
            if !ok {
                tracing::warn!(delivery = d.id, channel = %d.channel, error = error.as_deref().unwrap_or(""), "delivery failed");
            }
            results.push((d.id, ok, status, error, next, now));
        }
        let r = app
            .db(move |s| {
                s.write(|tx| {
                    for (id, ok, status, error, next, now) in &results {
                        tx.delivery_attempted(*id, *ok, *status, error.as_deref(), *next, *now)?;
                    }
                    Ok(())
                })
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot record delivery attempts");
            return;
        }
    }
}

fn channel_kind(channel: &str) -> &'static str {
    if channel.starts_with("webhook:") {
        "webhook"
    } else {
        "email"
    }
}

/// One attempt: (accepted, HTTP status if any, error text if refused).
async fn attempt(app: &Arc<App>, d: &DeliveryRow) -> (bool, Option<u16>, Option<String>) {
    let timeout = Duration::from_millis(app.config.integrations.delivery.timeout_ms);
    if let Some(id) = d.channel.strip_prefix("webhook:") {
        let id: i64 = id.parse().unwrap_or(-1);
        let hook = app
            .db(move |s| s.read(|tx| tx.webhooks(false)))
            .await
            .ok()
            .and_then(|hs| hs.into_iter().find(|h| h.id == id));
        let Some(hook) = hook else {
            return (false, None, Some("the endpoint no longer exists".into()));
        };
        let unix = crate::model::unix_now();
        let headers = [
            (
                "custos-signature",
                signature(&hook.secret, unix, d.body.as_bytes()),
            ),
            ("custos-event", d.event.clone()),
            ("custos-event-id", d.event_id.clone()),
            ("custos-delivery", d.id.to_string()),
        ];
        match super::http::post(&hook.url, &headers, Bytes::from(d.body.clone()), timeout).await {
            Ok(s) if (200..300).contains(&s) => (true, Some(s), None),
            Ok(s) => (false, Some(s), Some(format!("the receiver answered {s}"))),
            Err(e) => (false, None, Some(e)),
        }
    } else if d.channel == "email" {
        let Some(smtp) = app.config.integrations.smtp.clone() else {
            return (false, None, Some("no [smtp] section is configured".into()));
        };
        let to = app.config.integrations.alerts.email_to.clone();
        match tokio::time::timeout(timeout, super::smtp::send_alert(&smtp, &to, &d.body)).await {
            Ok(Ok(())) => (true, None, None),
            Ok(Err(e)) => (false, None, Some(e)),
            Err(_) => (
                false,
                None,
                Some(format!("no answer within {} s", timeout.as_secs())),
            ),
        }
    } else {
        (
            false,
            None,
            Some(format!("unknown channel {:?}", d.channel)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_time_and_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            signature("secret", 1_700_000_000, br#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        for (attempt, lo, hi) in [
            (1, 900, 1100),
            (2, 1800, 2200),
            (3, 3600, 4400),
            (30, 54_000, 66_000),
        ] {
            let b = backoff_ms(1000, 60_000, attempt);
            assert!((lo..=hi).contains(&b), "attempt {attempt}: {b}");
        }
    }
}
