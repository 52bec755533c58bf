//! Reports over HTTP: sessions per day, agent or portal with wait and handle times and survey
//! scores, as JSON or CSV. From the session records alone, so not audited as reads of content.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use super::api::{Authed, require};
use crate::app::App;
use crate::auth::Permission;
use crate::store::GroupBy;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route("/api/v1/reports/sessions", get(sessions_report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    by: Option<String>,
    since: Option<String>,
    until: Option<String>,
    format: Option<String>,
}

/// Parses `since` and `until` (dates or RFC 3339 times) into stored-time bounds.
pub fn range(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<String>, Option<String>), String> {
    let since = since
        .map(|s| crate::model::parse_time(s).map(crate::model::format_rfc3339))
        .transpose()
        .map_err(|e| format!("since: {e}"))?;
    let until = until
        .map(|s| crate::model::parse_range_end(s).map(crate::model::format_rfc3339))
        .transpose()
        .map_err(|e| format!("until: {e}"))?;
    Ok((since, until))
}

async fn sessions_report(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    require(&p, Permission::ReadMonitors)?;
    let by = q.by.as_deref().unwrap_or("day");
    let by = GroupBy::parse(by)
        .ok_or_else(|| ApiError::bad_request(format!("by {by:?}: use day, agent or portal")))?;
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "format {other:?}: use json or csv"
            )));
        }
    };
    let (since, until) =
        range(q.since.as_deref(), q.until.as_deref()).map_err(ApiError::bad_request)?;
    let rows = app
        .db(move |s| s.read(|tx| tx.report(by, since.as_deref(), until.as_deref())))
        .await?;
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            crate::store::report_csv(&rows),
        )
            .into_response());
    }
    Ok(Json(json!({ "rows": rows })).into_response())
}
