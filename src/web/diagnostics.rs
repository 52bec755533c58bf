//! Remote diagnostics over HTTP: the customer's client uploads a document about its machine
//! (stored encrypted in the archive, summarized to the agent), the agent asks for a fresh one,
//! and whoever may read the session fetches them (audited).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiError;
use super::api::{Authed, event};
use super::sessions::{Party, party, read_lines, stated_reason, valid_id};
use crate::app::{App, Source};
use crate::audit::Outcome;
use crate::auth::Permission;
use crate::model::now_rfc3339;
use crate::session::diagnostics;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/api/v1/sessions/{id}/diagnostics",
            get(fetch).merge(post(upload).layer(DefaultBodyLimit::max(diagnostics::MAX_BYTES))),
        )
        .route("/api/v1/sessions/{id}/diagnostics/request", post(request))
}

/// The customer's client sends what it collected (with the user's consent, which the client
/// asks for).
async fn upload(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    if !matches!(
        party(&app, &id, &headers, &method, None).await?,
        Party::Customer
    ) {
        return Err(ApiError::forbidden(
            "diagnostics come from the customer's machine: send them with the customer token",
        ));
    }
    let data: Bytes = axum::body::to_bytes(body, diagnostics::MAX_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "diagnostics must be at most {} bytes",
                    diagnostics::MAX_BYTES
                ),
            )
        })?;
    let (object, summary) =
        crate::session::Sessions::receive_diagnostics(&app, &id, &src.to_string(), &data).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "object": object, "received_at": now_rfc3339(), "summary": summary })),
    )
        .into_response())
}

/// The session's agent asks the customer's client for diagnostics.
async fn request(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    valid_id(&id)?;
    app.sessions.request_diagnostics(&id, &p)?;
    app.audit(event(
        &p,
        &src,
        "session.diagnostics.requested",
        &format!("session:{id}"),
        json!({}),
    ))
    .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchQuery {
    reason: Option<String>,
}

/// Every diagnostics document of a session, oldest first: for the agents who handled it, and for
/// the roles that may read any session (with a stated reason). Audited either way.
async fn fetch(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
    Query(q): Query<FetchQuery>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let sid = id.clone();
    let (row, participants) = app
        .db(move |s| s.read(|tx| Ok((tx.session_get(&sid)?, tx.participants(&sid)?))))
        .await?;
    if row.is_none() {
        return Err(ApiError::not_found(format!("no session {id}")));
    }
    let handled = participants
        .iter()
        .any(|x| x.kind == "agent" && x.name == p.name);
    let target = format!("session:{id}");
    if !handled && !crate::auth::permits(&p, Permission::ReadAnySession) {
        app.audit(
            event(&p, &src, "session.diagnostics.read", &target, json!({}))
                .outcome(Outcome::Denied),
        )
        .await?;
        return Err(ApiError::forbidden(
            "you may read only the sessions you handled",
        ));
    }
    let reason = stated_reason(&p, q.reason)?;
    app.audit(event(
        &p,
        &src,
        "session.diagnostics.read",
        &target,
        json!({ "reason": reason }),
    ))
    .await?;
    Ok(Json(
        json!({ "diagnostics": read_lines(&app, &id, "diagnostics").await? }),
    ))
}
