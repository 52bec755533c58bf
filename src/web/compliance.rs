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
        .route("/api/v1/policies", get(list_policies))
        .route("/api/v1/sessions/{id}/access", get(access_history))
        .route("/api/v1/exports", post(create_export))
        .route("/api/v1/exports/jobs", post(start_export_job))
        .route("/api/v1/exports/jobs/{id}", get(export_job))
        .route("/api/v1/exports/jobs/{id}/bundle", get(export_job_bundle))
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
    /// Only this session's objects and record.
    session: Option<String>,
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
    if q.session
        .as_deref()
        .is_some_and(|id| !crate::session::valid_session_id(id))
    {
        return Err(ApiError::bad_request("session is not a session id"));
    }
    let rows = app
        .db(move |s| crate::retention::plan(s, at, q.session.as_deref()))
        .await?;
    let due = rows.iter().filter(|r| r.due).count();
    Ok(Json(
        json!({ "at": crate::model::format_rfc3339(at), "due": due, "objects": rows }),
    ))
}

/// The installed retention policies (`custos policy install` puts them there).
async fn list_policies(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadCompliance)?;
    let bodies = app.db(|s| s.read(|tx| tx.policies())).await?;
    let policies = bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "policies": policies })))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewExport {
    #[serde(default)]
    sessions: Vec<String>,
    #[serde(rename = "ref")]
    external_ref: Option<String>,
    since: Option<String>,
    until: Option<String>,
    reason: String,
    /// Auditors' age recipients (`age1…`): the payload is encrypted to them.
    #[serde(default)]
    recipients: Vec<String>,
}

/// An export checked and resolved to its sessions, ready to build on a blocking thread.
struct Prepared {
    app: Arc<App>,
    keys: Arc<crate::keys::Keyring>,
    actor: audit::Event,
    reason: String,
    ids: Vec<String>,
    recipients: Vec<crate::age::Recipient>,
}

fn export_err(e: crate::export::ExportError) -> ApiError {
    match e {
        crate::export::ExportError::Refused(m) => ApiError::bad_request(m),
        other => ApiError::internal(other),
    }
}

/// Checks an export request (permission, reason, recipients, seal) and resolves its selection,
/// so a bad request is refused before anything is built.
async fn prepare(
    app: &Arc<App>,
    src: &Source,
    p: &crate::auth::Principal,
    body: &Bytes,
) -> Result<Prepared, ApiError> {
    require(p, Permission::ReadAnySession)?;
    let req: NewExport = parse(body)?;
    if req.reason.trim().is_empty() || req.reason.chars().count() > 500 {
        return Err(ApiError::bad_request(
            "an export needs a stated reason (1-500 characters)",
        ));
    }
    if req.recipients.is_empty() && p.role != crate::model::Role::Compliance {
        return Err(ApiError::forbidden(
            "an unencrypted export needs the compliance role; give auditors' recipients to encrypt it",
        ));
    }
    let recipients = req
        .recipients
        .iter()
        .map(|r| {
            crate::age::Recipient::parse(r)
                .map_err(|e| ApiError::bad_request(format!("recipient {r:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys = app.keys().ok_or_else(ApiError::sealed)?;
    let db = app.dir.db_path();
    // On its own connection: a large range must not hold the appliance's database.
    let ids = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut store = crate::store::Store::open(&db)?;
        crate::export::select(
            &mut store,
            req.sessions,
            req.external_ref,
            req.since,
            req.until,
        )
        .map_err(export_err)
    })
    .await
    .map_err(ApiError::internal)??;
    if ids.is_empty() {
        return Err(ApiError::bad_request("the selection matches no session"));
    }
    Ok(Prepared {
        app: app.clone(),
        keys,
        actor: event(p, src, "", "", json!({})),
        reason: req.reason.trim().to_string(),
        ids,
        recipients,
    })
}

impl Prepared {
    /// Builds the bundle and audits it; blocking, on its own database connection.
    fn build(self, progress: impl FnMut(usize, usize)) -> Result<crate::export::Built, ApiError> {
        let mut store = crate::store::Store::open(&self.app.dir.db_path())?;
        let signing = store.read(|tx| {
            self.keys
                .signing_key(tx)
                .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
        })?;
        let encrypted = !self.recipients.is_empty();
        let request = crate::export::Request {
            sessions: self.ids.clone(),
            exported_by: self.actor.actor.clone(),
            reason: self.reason.clone(),
            selection: format!("{} session(s): {}", self.ids.len(), self.ids.join(" ")),
            recipients: self.recipients,
            since_checkpoint: None,
        };
        let built = crate::export::build(
            &mut store,
            &self.app.archive,
            &self.keys,
            &signing,
            &self.app.appliance_id,
            &request,
            progress,
        )
        .map_err(export_err)?;
        audit::append(
            &mut store,
            &crate::export::audit_events(&self.actor, &built, &self.ids, &self.reason, encrypted),
        )?;
        Ok(built)
    }
}

/// A signed export bundle (docs/formats/export.md), answered as the tar itself: it is built in
/// memory and never stored on the appliance. Unencrypted bundles need the compliance role; every
/// export needs a reason and is audited with its digests, as a read of each session it holds.
async fn create_export(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    let prepared = prepare(&app, &src, &p, &body).await?;
    let built = tokio::task::spawn_blocking(move || prepared.build(|_, _| {}))
        .await
        .map_err(ApiError::internal)??;
    Ok(tar_response(built.tar, &built.export_id))
}

/// The same export built in the background: answers the job at once (202); poll
/// `GET /api/v1/exports/jobs/{id}` for its progress, then collect the bundle from `…/bundle`.
async fn start_export_job(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    let prepared = prepare(&app, &src, &p, &body).await?;
    let total = prepared.ids.len();
    let job = app
        .export_jobs
        .start(&p.name, total, move |progress| {
            prepared.build(progress).map_err(|e| e.message)
        })
        .map_err(ApiError::conflict)?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

fn job_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request("the job id must be a number"))
}

async fn export_job(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<Json<crate::export::job::Job>, ApiError> {
    require(&p, Permission::ReadAnySession)?;
    app.export_jobs
        .get(job_id(&id)?, &p.name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found("no such export job of yours (finished jobs are kept a while)")
        })
}

async fn export_job_bundle(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use crate::export::job::Collect;
    require(&p, Permission::ReadAnySession)?;
    match app.export_jobs.collect(job_id(&id)?, &p.name) {
        Ok((job, tar)) => Ok(tar_response(tar, job.export_id.as_deref().unwrap_or(""))),
        Err(Collect::NotFound) => Err(ApiError::not_found(
            "no such export job of yours (finished jobs are kept a while)",
        )),
        Err(Collect::NotReady(state)) => Err(ApiError::conflict(format!(
            "the bundle is not ready to collect: the job is {}",
            serde_json::to_value(&state)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        ))),
    }
}

fn tar_response(tar: Vec<u8>, export_id: &str) -> Response {
    let mut res = tar.into_response();
    let h = res.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-tar"),
    );
    let name = format!("attachment; filename=\"custos-export-{export_id}.tar\"");
    if let Ok(v) = axum::http::HeaderValue::from_str(&name) {
        h.insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(export_id) {
        h.insert("custos-export-id", v);
    }
    res
}
