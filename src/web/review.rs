//! Reviewing a screen recording: its index (objects, keyframes, the session's timeline), opened
//! with one audited `recording.view`, and its records read from a keyframe onward in bounded
//! pieces, so that seeking in an hour never loads the hour (docs/formats/recording.md).

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use hmac::{KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::api::{Authed, event};
use super::sessions::{read_lines, stated_reason, valid_id};
use crate::app::{App, Source};
use crate::audit::Outcome;
use crate::auth::{Permission, Principal};
use crate::model::ObjectId;

/// The most bytes of records one data request returns (at least one whole record).
const PIECE: usize = 1024 * 1024;
/// How long a player's ticket lasts.
const TICKET_S: i64 = 4 * 3600;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/sessions/{id}/recording", get(index))
        .route("/api/v1/sessions/{id}/recording/{object}/data", get(data))
}

/// A random key for this process's tickets: a restart ends every open player's ticket.
fn ticket_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the system's random source works");
        k
    })
}

fn ticket_mac(user: i64, session: &str, expires: i64) -> String {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(ticket_key()).expect("any key length");
    m.update(format!("{user}\n{session}\n{expires}").as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A ticket lets the user who opened the recording's index (an audited act) read its data.
fn ticket(user: i64, session: &str) -> String {
    let expires = crate::session::now_unix() + TICKET_S;
    format!("{expires}.{}", ticket_mac(user, session, expires))
}

fn ticket_ok(t: &str, user: i64, session: &str) -> bool {
    let Some((exp, mac)) = t.split_once('.') else {
        return false;
    };
    let Ok(expires) = exp.parse::<i64>() else {
        return false;
    };
    expires > crate::session::now_unix()
        && crate::crypto::ct_eq(
            mac.as_bytes(),
            ticket_mac(user, session, expires).as_bytes(),
        )
}

#[derive(Deserialize)]
struct IndexQuery {
    reason: Option<String>,
}

/// Whether `p` handled session `id` or may read any session.
async fn may_review(app: &Arc<App>, p: &Principal, id: &str) -> Result<bool, ApiError> {
    if crate::auth::permits(p, Permission::ReadAnySession) {
        return Ok(true);
    }
    let sid = id.to_string();
    let participants = app.db(move |s| s.read(|tx| tx.participants(&sid))).await?;
    Ok(participants
        .iter()
        .any(|x| x.kind == "agent" && x.name == p.name))
}

async fn index(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
    Query(q): Query<IndexQuery>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let sid = id.clone();
    let (row, objects) = app
        .db(move |s| {
            s.read(|tx| {
                let objects = tx
                    .objects_of_session(&sid)?
                    .into_iter()
                    .filter(|o| o.class == "recording")
                    .map(|o| {
                        let k = tx.recording_keyframes(o.id)?;
                        Ok((o, k))
                    })
                    .collect::<crate::store::Result<Vec<_>>>()?;
                Ok((tx.session_get(&sid)?, objects))
            })
        })
        .await?;
    row.ok_or_else(|| ApiError::not_found(format!("no session {id}")))?;
    let target = format!("session:{id}");
    if !may_review(&app, &p, &id).await? {
        app.audit(event(&p, &src, "recording.view", &target, json!({})).outcome(Outcome::Denied))
            .await?;
        return Err(ApiError::forbidden(
            "you may review only the sessions you handled",
        ));
    }
    let reason = stated_reason(&p, q.reason)?;
    app.audit(event(
        &p,
        &src,
        "recording.view",
        &target,
        json!({ "reason": reason }),
    ))
    .await?;
    let mut timeline: Vec<Value> = read_lines(&app, &id, "events").await?;
    let transcript = read_lines(&app, &id, "transcript").await?;
    let marked: std::collections::HashSet<u64> = transcript
        .iter()
        .filter(|m| m["type"] == "sensitive")
        .filter_map(|m| m["target"].as_u64())
        .collect();
    for mut m in transcript {
        if !matches!(m["type"].as_str(), Some("chat" | "url" | "note")) {
            continue;
        }
        if m["seq"].as_u64().is_some_and(|s| marked.contains(&s)) {
            m["text"] = json!("[marked sensitive]");
        }
        m["event"] = m["type"].clone();
        timeline.push(m);
    }
    timeline.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
    let objects: Vec<Value> = objects
        .iter()
        .map(|(o, k)| {
            json!({
                "object": o.id.to_string(), "state": o.state.as_str(), "bytes": o.plain_len,
                "created_at": o.created_at, "closed_at": o.closed_at,
                "keyframes": k.iter().map(|(at, off)| json!({"at_ms": at, "offset": off})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "session_id": id,
        "ticket": ticket(p.user_id, &id),
        "objects": objects,
        "timeline": timeline,
    })))
}

#[derive(Deserialize)]
struct DataQuery {
    #[serde(default)]
    offset: u64,
    ticket: String,
}

async fn data(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path((id, object)): Path<(String, String)>,
    Query(q): Query<DataQuery>,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    if !ticket_ok(&q.ticket, p.user_id, &id) {
        return Err(ApiError::forbidden(
            "open the recording's index first (GET /api/v1/sessions/{id}/recording): its ticket is missing, expired or not yours",
        ));
    }
    let oid: ObjectId = object
        .parse()
        .map_err(|_| ApiError::not_found(format!("no object {object:?}")))?;
    let keys = app.keys().ok_or_else(ApiError::sealed)?;
    let archive = app.archive.clone();
    let sid = id.clone();
    let offset = q.offset;
    let (bytes, next, total) = app
        .db(move |s| -> Result<_, ApiError> {
            let row = s
                .read(|tx| tx.object_get(oid))?
                .filter(|o| o.session_id.as_deref() == Some(sid.as_str()) && o.class == "recording")
                .ok_or_else(|| ApiError::not_found(format!("no recording {oid} in session {sid}")))?;
            if row.state == crate::model::ObjectState::Open {
                return Err(ApiError::conflict(
                    "this recording is still being written; it can be reviewed once the session ends",
                ));
            }
            let mut r = archive
                .open_seekable(s, &keys, oid)
                .map_err(|e| ApiError::internal(format!("recording {oid}: {e}")))?;
            let total = r.plain_len();
            let (out, at) = crate::session::screen::read_records(&mut r, offset, PIECE)
                .map_err(|e| match e {
                    crate::session::screen::ReadError::NotARecord(m) => ApiError::bad_request(m),
                    crate::session::screen::ReadError::Stream(e) => {
                        ApiError::internal(format!("recording {oid}: {e}"))
                    }
                })?;
            Ok((out, at, total))
        })
        .await?;
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("x-custos-next-offset", HeaderValue::from(next));
    h.insert("x-custos-length", HeaderValue::from(total));
    Ok(res)
}
