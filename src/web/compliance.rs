//! Compliance over HTTP: legal holds, the retention plan, and who looked at a session.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::api::{Authed, event, parse, require};
use crate::app::{App, Source};
use crate::audit;
use crate::auth::Permission;
use crate::retention::{HoldScope, RetentionError};

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/holds", get(list_holds).post(place_hold))
        .route("/api/v1/holds/{id}/release", post(release_hold))
        .route("/api/v1/retention/plan", get(plan))
        .route("/api/v1/sessions/{id}/access", get(access_history))
}

impl From<RetentionError> for ApiError {
    fn from(e: RetentionError) -> Self {
        match e {
            RetentionError::Refused(m) => ApiError::conflict(m),
            RetentionError::Store(s) => s.into(),
            other => ApiError::internal(other),
        }
    }
}

async fn list_holds(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadCompliance)?;
    let holds = app.db(|s| s.read(|tx| tx.holds(false))).await?;
    Ok(Json(json!({ "holds": holds })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHold {
    session: Option<String>,
    #[serde(rename = "ref")]
    external_ref: Option<String>,
    email: Option<String>,
    portal: Option<String>,
    from: Option<String>,
    to: Option<String>,
    reason: String,
    case: String,
}

async fn place_hold(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    require(&p, Permission::ManageHolds)?;
    let h: NewHold = parse(&body)?;
    let time =
        |s: &str| crate::model::parse_time(s).map_err(|e| ApiError::bad_request(e.to_string()));
    let scope = match (h.session, h.external_ref, h.email, h.portal, h.from, h.to) {
        (Some(s), None, None, None, None, None) => HoldScope::Session(s),
        (None, Some(r), None, None, None, None) => HoldScope::Ref(r),
        (None, None, Some(e), None, None, None) => HoldScope::Email(e),
        (None, None, None, Some(pt), None, None) => HoldScope::Portal(pt),
        (None, None, None, None, Some(f), Some(t)) => HoldScope::Range(
            time(&f)?,
            crate::model::parse_range_end(&t).map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of session, ref, email, portal, or from with to",
            ));
        }
    };
    let actor = event(&p, &src, "", "", json!({}));
    let (reason, case) = (h.reason, h.case);
    let id = app
        .db(move |s| crate::retention::place_hold(s, scope, &reason, &case, actor))
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "hold_id": id }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    reason: String,
}

async fn release_hold(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<i64>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageHolds)?;
    let r: Release = parse(&body)?;
    let actor = event(&p, &src, "", "", json!({}));
    app.db(move |s| crate::retention::release_hold(s, id, &r.reason, actor))
        .await?;
    Ok(Json(json!({ "hold_id": id, "released": true })))
}

#[derive(Deserialize)]
struct PlanQuery {
    at: Option<String>,
}

async fn plan(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Query(q): Query<PlanQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadCompliance)?;
    let at = match q.at {
        Some(a) => {
            crate::model::parse_time(&a).map_err(|e| ApiError::bad_request(e.to_string()))?
        }
        None => time::OffsetDateTime::now_utc(),
    };
    let rows = app.db(move |s| crate::retention::plan(s, at)).await?;
    let due = rows.iter().filter(|r| r.due).count();
    Ok(Json(
        json!({ "at": crate::model::format_rfc3339(at), "due": due, "objects": rows }),
    ))
}

/// Who read this session's content, and who tried: its access history from the audit log.
async fn access_history(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadCompliance)?;
    if !crate::session::valid_session_id(&id) {
        return Err(ApiError::not_found("no such session"));
    }
    let target = format!("session:{id}");
    let rows = app
        .db(move |s| s.read(|tx| tx.audit_by_target(&target, 10_000)))
        .await?;
    let reads: Vec<Value> = rows
        .iter()
        .filter_map(|r| audit::decode(r).ok())
        .filter(|e| matches!(e.action.as_str(), "session.read" | "session.file.read"))
        .map(|e| json!({ "seq": e.seq, "time": e.time, "actor": e.actor, "role": e.role, "action": e.action, "outcome": e.outcome, "source": e.source, "details": e.details }))
        .collect();
    Ok(Json(json!({ "session_id": id, "access": reads })))
}
