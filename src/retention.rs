//! Retention applied to the archive: installing a policy set (with the compliance-mode lock),
//! legal holds (four eyes to release), the plan of what will be shredded when, and the sweeper
//! that crypto-shreds what is due.
//!
//! Invariants kept here: nothing under an open hold is shredded, whatever any policy says; every
//! shred destroys the object's wrapped data keys in the same transaction as its audit entry,
//! which names the policy; a sweep never runs on a clock that jumped suspiciously.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use crate::archive::Archive;
use crate::audit::{self, Event, Outcome};
use crate::model::{DataClass, format_rfc3339, parse_time};
use crate::policy::{Action, Policy, PolicySet, Subject, governing};
use crate::store::{HoldRow, RetentionRow, Store, StoreError};

/// The sweeper refuses to run when the clock moved forward more than this since the last trusted
/// time, or backward more than `CLOCK_BACK`; an administrator confirms with `--trust-clock`.
pub const CLOCK_JUMP: time::Duration = time::Duration::days(2);
pub const CLOCK_BACK: time::Duration = time::Duration::minutes(10);

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
    #[error("the installed policies are damaged: {0}")]
    Corrupt(String),
}

fn installed(store: &mut Store) -> Result<Vec<Policy>, RetentionError> {
    let bodies = store.read(|tx| tx.policies())?;
    bodies
        .iter()
        .map(|b| serde_json::from_str(b).map_err(|e| RetentionError::Corrupt(e.to_string())))
        .collect()
}

/// Installs a policy set. Compliance-mode policies already installed may only be kept or
/// lengthened; a governance-mode policy may be shortened or removed only with a reason.
pub fn install(
    store: &mut Store,
    set: &PolicySet,
    actor: Event,
    reason: Option<&str>,
) -> Result<(), RetentionError> {
    let old = installed(store)?;
    let mut weakened = Vec::new();
    for o in &old {
        let new = set.policies.iter().find(|n| n.name == o.name);
        o.compliance_allows(new).map_err(RetentionError::Refused)?;
        if new.is_none_or(|n| n.retain_days < o.retain_days) {
            weakened.push(o.name.clone());
        }
    }
    if !weakened.is_empty() && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(RetentionError::Refused(format!(
            "this set shortens or removes governance-mode policies ({}); give a reason (--reason)",
            weakened.join(", ")
        )));
    }
    let rows: Vec<(String, String)> = set
        .policies
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                serde_json::to_string(p).expect("policies serialize"),
            )
        })
        .collect();
    let hash = hex::encode(set.hash);
    let names: Vec<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
    let now = crate::model::now_rfc3339();
    let ev = Event {
        action: "policy.installed".into(),
        target: "policies".into(),
        details: json!({ "set_sha256": hash, "policies": names, "weakened": weakened, "reason": reason }),
        ..actor
    };
    store.write(|tx| {
        tx.policies_replace(&rows, &now)?;
        tx.meta_set("policy_set_sha256", &hash)?;
        audit::append_tx(tx, &[ev])
    })?;
    Ok(())
}

/// What a hold covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldScope {
    Session(String),
    Ref(String),
    Email(String),
    Portal(String),
    /// Sessions requested in `[from, to]`.
    Range(OffsetDateTime, OffsetDateTime),
}

impl HoldScope {
    fn stored(&self) -> (&'static str, String) {
        match self {
            HoldScope::Session(v) => ("session", v.clone()),
            HoldScope::Ref(v) => ("ref", v.clone()),
            HoldScope::Email(v) => ("email", v.to_ascii_lowercase()),
            HoldScope::Portal(v) => ("portal", v.clone()),
            HoldScope::Range(a, b) => (
                "range",
                format!("{}..{}", format_rfc3339(*a), format_rfc3339(*b)),
            ),
        }
    }
}

/// Whether an open hold covers an object's session.
fn holds_row(h: &HoldRow, r: &RetentionRow) -> bool {
    match h.scope.as_str() {
        "session" => r.session_id.as_deref() == Some(&h.value),
        "ref" => r.external_ref.as_deref() == Some(&h.value),
        "email" => r
            .customer_email
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case(&h.value)),
        "portal" => r.portal.as_deref() == Some(&h.value),
        "range" => {
            let Some((a, b)) = h.value.split_once("..") else {
                return true;
            };
            let (Ok(a), Ok(b)) = (parse_time(a), parse_time(b)) else {
                return true;
            };
            r.requested_at
                .as_deref()
                .and_then(|t| parse_time(t).ok())
                .is_some_and(|t| a <= t && t <= b)
        }
        // A hold this build cannot read holds everything: never delete on doubt.
        _ => true,
    }
}

/// Places a hold; a reason and a case id are required.
pub fn place_hold(
    store: &mut Store,
    scope: HoldScope,
    reason: &str,
    case_id: &str,
    actor: Event,
) -> Result<i64, RetentionError> {
    if reason.trim().is_empty() || case_id.trim().is_empty() {
        return Err(RetentionError::Refused(
            "a hold needs a reason and a case id".into(),
        ));
    }
    let (kind, value) = scope.stored();
    let now = crate::model::now_rfc3339();
    let by = actor.actor.clone();
    Ok(store.write(|tx| {
        let id = tx.hold_insert(kind, &value, reason, case_id, &by, &now)?;
        let ev = Event {
            action: "hold.placed".into(),
            target: format!("hold:{id}"),
            details: json!({ "scope": kind, "value": value, "reason": reason, "case": case_id }),
            ..actor.clone()
        };
        audit::append_tx(tx, &[ev])?;
        Ok(id)
    })?)
}

/// Releases a hold: only a compliance officer other than the one who placed it (four eyes).
pub fn release_hold(
    store: &mut Store,
    id: i64,
    reason: &str,
    actor: Event,
) -> Result<(), RetentionError> {
    if reason.trim().is_empty() {
        return Err(RetentionError::Refused(
            "releasing a hold needs a reason".into(),
        ));
    }
    let hold = store
        .read(|tx| tx.holds(true))?
        .into_iter()
        .find(|h| h.id == id)
        .ok_or_else(|| RetentionError::Refused(format!("there is no open hold {id}")))?;
    if hold.placed_by == actor.actor {
        let ev = Event {
            action: "hold.released".into(),
            target: format!("hold:{id}"),
            details: json!({ "reason": "four eyes: the officer who placed it" }),
            ..actor
        };
        audit::append(store, &[ev.outcome(Outcome::Denied)])
            .map_err(|e| RetentionError::Refused(e.to_string()))?;
        return Err(RetentionError::Refused(format!(
            "hold {id} was placed by {}; a second, different compliance officer must release it",
            hold.placed_by
        )));
    }
    let now = crate::model::now_rfc3339();
    store.write(|tx| {
        tx.hold_release(id, &actor.actor, reason, &now)?;
        let ev = Event {
            action: "hold.released".into(),
            target: format!("hold:{id}"),
            details: json!({ "reason": reason, "placed_by": hold.placed_by }),
            ..actor.clone()
        };
        audit::append_tx(tx, &[ev])
    })?;
    Ok(())
}

/// One object's fate.
#[derive(Clone, Debug, Serialize)]
pub struct PlanRow {
    /// The object, or "-" for a session record's personal details (class "metadata").
    pub object: String,
    pub class: String,
    pub session: Option<String>,
    /// When it expires (None: no policy selects it, or its session has not ended).
    pub expires_at: Option<String>,
    pub policy: Option<String>,
    pub action: Option<Action>,
    /// Open holds that keep it.
    pub holds: Vec<i64>,
    /// Expired by `at`, not held.
    pub due: bool,
}

fn plan_rows(
    rows: &[RetentionRow],
    policies: &[Policy],
    holds: &[HoldRow],
    at: OffsetDateTime,
) -> Vec<PlanRow> {
    let mut out = Vec::new();
    for r in rows {
        let Ok(class) = r.class.parse::<DataClass>() else {
            continue;
        };
        let fields: BTreeMap<String, String> = r
            .fields
            .as_deref()
            .and_then(|f| serde_json::from_str::<BTreeMap<String, serde_json::Value>>(f).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        let subject = Subject {
            portal: r.portal.as_deref().unwrap_or(""),
            skill: r.skill.as_deref().unwrap_or(""),
            class,
            fields: &fields,
        };
        let policy = governing(policies, &subject);
        // The trigger is the session's end; an object without a session starts when it closed.
        let start = match &r.session_id {
            Some(_) => r.ended_at.as_deref(),
            None => r.closed_at.as_deref(),
        }
        .and_then(|t| parse_time(t).ok());
        let expires = match (policy, start) {
            (Some(p), Some(s)) => Some(s + time::Duration::days(i64::from(p.retain_days))),
            _ => None,
        };
        let held: Vec<i64> = holds
            .iter()
            .filter(|h| holds_row(h, r))
            .map(|h| h.id)
            .collect();
        out.push(PlanRow {
            object: r.object.map_or_else(|| "-".to_string(), |o| o.to_string()),
            class: r.class.clone(),
            session: r.session_id.clone(),
            expires_at: expires.map(format_rfc3339),
            policy: policy.map(|p| p.name.clone()),
            action: policy.map(|p| p.action),
            due: expires.is_some_and(|e| e <= at)
                && held.is_empty()
                && r.state != crate::model::ObjectState::Open,
            holds: held,
        });
    }
    out
}

/// What would be shredded by `at`, and what is held: everything, or one session's.
pub fn plan(
    store: &mut Store,
    at: OffsetDateTime,
    session: Option<&str>,
) -> Result<Vec<PlanRow>, RetentionError> {
    let policies = installed(store)?;
    let (mut rows, holds) = store.read(|tx| Ok((tx.retention_rows(session)?, tx.holds(true)?)))?;
    rows.extend(store.read(|tx| tx.retention_session_rows(session))?);
    let mut out = plan_rows(&rows, &policies, &holds, at);
    // A session record keeps its details while any of its objects is kept: policies and holds
    // select objects by those details (fields, e-mail), so clearing them early would change
    // which rules apply to what remains.
    let kept: std::collections::HashSet<String> = out
        .iter()
        .filter(|r| r.object != "-" && !r.due)
        .filter_map(|r| r.session.clone())
        .collect();
    for r in out.iter_mut().filter(|r| r.object == "-") {
        if r.session.as_ref().is_some_and(|s| kept.contains(s)) {
            r.due = false;
        }
    }
    Ok(out)
}

#[derive(Debug, Default, Serialize)]
pub struct SweepReport {
    pub shredded: usize,
    /// Session records whose personal details were cleared.
    pub records_cleared: usize,
    pub held: usize,
    pub awaiting_review: usize,
    pub leftover_files_removed: usize,
}

/// Checks the clock against the high-water mark of trusted time.
pub fn check_clock(store: &mut Store, now: OffsetDateTime) -> Result<(), RetentionError> {
    let Some(hwm) = store
        .read(|tx| tx.meta_get("trusted_time"))?
        .and_then(|t| parse_time(&t).ok())
    else {
        return Ok(());
    };
    if now > hwm + CLOCK_JUMP {
        return Err(RetentionError::Refused(format!(
            "the clock says {} but the last trusted time was {}: it moved forward {} days. Nothing was shredded. Check the time source, then run the sweep with --trust-clock",
            format_rfc3339(now),
            format_rfc3339(hwm),
            (now - hwm).whole_days()
        )));
    }
    if now < hwm - CLOCK_BACK {
        return Err(RetentionError::Refused(format!(
            "the clock says {} but the last trusted time was {}: it went backward. Nothing was shredded. Check the time source, then run the sweep with --trust-clock",
            format_rfc3339(now),
            format_rfc3339(hwm)
        )));
    }
    Ok(())
}

/// Advances the high-water mark of trusted time (the running server does so every minute), but
/// only along a plausible path: a jump is left for a person to confirm (`--trust-clock`).
/// Returns false when the clock looks suspicious.
pub fn touch_clock(store: &mut Store, now: OffsetDateTime) -> Result<bool, RetentionError> {
    Ok(store.write(|tx| {
        let hwm = tx
            .meta_get("trusted_time")?
            .and_then(|t| parse_time(&t).ok());
        match hwm {
            Some(h) if now > h + CLOCK_JUMP || now < h - CLOCK_BACK => Ok(false),
            Some(h) if now <= h => Ok(true),
            _ => {
                tx.meta_set("trusted_time", &format_rfc3339(now))?;
                Ok(true)
            }
        }
    })?)
}

/// Crypto-shreds one object: its wrapped keys go in the same transaction as its audit entry
/// (which names the policy, and the officer who approved it after review), then its file. An
/// open hold, even one placed since the plan was made, stops it. Returns whether it shredded.
fn shred_one(
    store: &mut Store,
    archive: &Archive,
    row: &PlanRow,
    subject: Option<&RetentionRow>,
    actor: &Event,
    stamp: &str,
    approved_by: Option<&str>,
) -> Result<bool, RetentionError> {
    let id: crate::model::ObjectId = row
        .object
        .parse()
        .map_err(|e: crate::model::ParseError| RetentionError::Corrupt(e.to_string()))?;
    let ev = Event {
        action: "archive.object.shredded".into(),
        target: format!("object:{id}"),
        details: json!({ "policy": row.policy, "class": row.class, "session": row.session, "expired_at": row.expires_at, "approved_by": approved_by }),
        ..actor.clone()
    };
    let done = store.write(|tx| {
        if let Some(subject) = subject
            && tx.holds(true)?.iter().any(|h| holds_row(h, subject))
        {
            return Ok(false);
        }
        let shredded = tx.object_shred(id, stamp)?;
        if shredded {
            audit::append_tx(tx, &[ev])?;
        }
        Ok(shredded)
    })?;
    let _ = std::fs::remove_file(archive.path_of(id));
    Ok(done)
}

/// Shreds objects awaiting review (due under a policy whose action is "review") once a
/// compliance officer approves them. Objects that are not awaiting review are refused by name.
pub fn approve_review(
    store: &mut Store,
    archive: &Archive,
    objects: &[String],
    actor: Event,
) -> Result<usize, RetentionError> {
    let now = OffsetDateTime::now_utc();
    check_clock(store, now)?;
    let rows = plan(store, now, None)?;
    let subjects: std::collections::HashMap<String, RetentionRow> = store
        .read(|tx| tx.retention_rows(None))?
        .into_iter()
        .filter_map(|r| r.object.map(|o| (o.to_string(), r)))
        .collect();
    let mut chosen = Vec::new();
    for o in objects {
        let row = rows
            .iter()
            .find(|r| &r.object == o && r.due && r.action == Some(Action::Review))
            .ok_or_else(|| RetentionError::Refused(format!("object {o} is not awaiting review (not due, held, shredded, or under a policy that shreds by itself)")))?;
        chosen.push(row.clone());
    }
    let stamp = format_rfc3339(now);
    let by = actor.actor.clone();
    let mut n = 0;
    for row in &chosen {
        if shred_one(
            store,
            archive,
            row,
            subjects.get(&row.object),
            &actor,
            &stamp,
            Some(&by),
        )? {
            n += 1;
        }
    }
    store.checkpoint_wal()?;
    Ok(n)
}

/// Shreds every object that is due and not held: its wrapped keys go in the same transaction
/// as its audit entry, then its ciphertext file. Safe to interrupt and re-run: an object is
/// shredded once, and ciphertext left behind by an interrupted run is removed by the next.
pub fn sweep(
    store: &mut Store,
    archive: &Archive,
    actor: Event,
    trust_clock: bool,
) -> Result<SweepReport, RetentionError> {
    let now = OffsetDateTime::now_utc();
    if trust_clock {
        let ev = Event {
            action: "retention.clock_trusted".into(),
            target: "clock".into(),
            details: json!({ "now": format_rfc3339(now) }),
            ..actor.clone()
        };
        audit::append(store, &[ev]).map_err(|e| RetentionError::Refused(e.to_string()))?;
        store.write(|tx| tx.meta_set("trusted_time", &format_rfc3339(now)))?;
    } else if let Err(e) = check_clock(store, now) {
        let ev = Event {
            action: "retention.sweep".into(),
            target: "archive".into(),
            details: json!({ "refused": e.to_string() }),
            ..actor.clone()
        };
        audit::append(store, &[ev.outcome(Outcome::Denied)])
            .map_err(|e| RetentionError::Refused(e.to_string()))?;
        return Err(e);
    }
    let rows = plan(store, now, None)?;
    let rows_by_object: std::collections::HashMap<String, RetentionRow> = store
        .read(|tx| tx.retention_rows(None))?
        .into_iter()
        .filter_map(|r| r.object.map(|o| (o.to_string(), r)))
        .collect();
    let mut report = SweepReport::default();
    for row in &rows {
        if !row.holds.is_empty()
            && row
                .expires_at
                .as_deref()
                .and_then(|e| parse_time(e).ok())
                .is_some_and(|e| e <= now)
        {
            report.held += 1;
        }
        if !row.due {
            continue;
        }
        if row.action == Some(Action::Review) {
            report.awaiting_review += 1;
            continue;
        }
        let stamp = format_rfc3339(now);
        if row.object == "-" {
            // A session record's personal details: cleared, with an audit entry.
            let sid = row.session.clone().unwrap_or_default();
            let ev = Event {
                action: "session.metadata.cleared".into(),
                target: format!("session:{sid}"),
                details: json!({ "policy": row.policy, "expired_at": row.expires_at }),
                ..actor.clone()
            };
            let done = store.write(|tx| {
                let held = tx.holds(true)?.iter().any(|h| match h.scope.as_str() {
                    "session" => h.value == sid,
                    // Other scopes were checked by the plan a moment ago; a new hold of them
                    // is caught at the next sweep, before any detail it matches is gone.
                    _ => false,
                });
                if held {
                    return Ok(false);
                }
                let cleared = tx.session_clear(&sid, &stamp)?;
                if cleared {
                    audit::append_tx(tx, &[ev])?;
                }
                Ok(cleared)
            })?;
            if done {
                report.records_cleared += 1;
            }
            continue;
        }
        let subject = rows_by_object.get(&row.object);
        if shred_one(store, archive, row, subject, &actor, &stamp, None)? {
            report.shredded += 1;
        }
    }
    // Ciphertext an interrupted sweep left behind for objects already shredded.
    for id in store.read(|tx| tx.objects_shredded())? {
        if std::fs::remove_file(archive.path_of(id)).is_ok() {
            report.leftover_files_removed += 1;
        }
    }
    // Deleted pages were zeroed by secure_delete; the WAL may still hold older copies of them.
    store.checkpoint_wal()?;
    touch_clock(store, now)?;
    let ev = Event {
        action: "retention.sweep".into(),
        target: "archive".into(),
        details: serde_json::to_value(&report).expect("report serializes"),
        ..actor
    };
    audit::append(store, &[ev]).map_err(|e| RetentionError::Refused(e.to_string()))?;
    Ok(report)
}
