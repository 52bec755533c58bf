//! Signed updates through the API (docs/updates.md). Only on the appliance image, where
//! `custos supervise` runs the server and names the update key: an administrator uploads a
//! bundle, it is checked (signature, digest, newer than what runs) and staged as a trial, and
//! the server stops so that its supervisor starts the trial, commits it once healthy, or rolls
//! it back.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::ApiError;
use super::api::{Authed, event, require};
use crate::app::{App, Source};
use crate::appliance::update::{self, Updates};
use crate::audit::Outcome;
use crate::auth::Permission;

/// The largest bundle accepted: the largest binary and its header.
const MAX_BUNDLE: usize = update::MAX_BINARY as usize + 8192;

pub fn routes() -> Router<Arc<App>> {
    Router::new().route(
        "/api/v1/system/update",
        get(status)
            .post(upload)
            .layer(DefaultBodyLimit::max(MAX_BUNDLE)),
    )
}

fn not_here() -> ApiError {
    ApiError::conflict(
        "updates are applied on the appliance image, where `custos supervise` runs the server; this server runs outside it",
    )
}

/// The running version and the update slots with their history.
async fn status(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    require(&p, Permission::ManageSystem)?;
    let state = match app.updates.as_ref() {
        Some(u) => {
            let updates = Updates::new(&u.system);
            Some(updates.load().map_err(ApiError::internal)?)
        }
        None => None,
    };
    Ok(Json(json!({
        "running": env!("CARGO_PKG_VERSION"),
        "updates_available": app.updates.is_some(),
        "state": state,
    })))
}

/// Takes a bundle (the request body, application/octet-stream), checks and stages it, and
/// restarts the server into it.
async fn upload(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Body,
) -> Result<Response, ApiError> {
    require(&p, Permission::ManageSystem)?;
    let setup = app.updates.clone().ok_or_else(not_here)?;
    let dir = setup.system.join("update");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let incoming = dir.join("incoming.bundle");
    let mut f = tokio::fs::File::create(&incoming)
        .await
        .map_err(ApiError::internal)?;
    let mut stream = body.into_data_stream();
    let mut size = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(_) => {
                let _ = tokio::fs::remove_file(&incoming).await;
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("an update bundle must be at most {MAX_BUNDLE} bytes"),
                ));
            }
        };
        size += chunk.len();
        f.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    f.sync_all().await.map_err(ApiError::internal)?;
    drop(f);
    let path = incoming.clone();
    let result = tokio::task::spawn_blocking(move || {
        let trust = update::load_trust(&setup.trust)?;
        Updates::new(&setup.system).apply(&path, &trust, env!("CARGO_PKG_VERSION"))
    })
    .await
    .map_err(ApiError::internal)?;
    let _ = tokio::fs::remove_file(&incoming).await;
    match result {
        Ok(m) => {
            let details = json!({ "version": m.version, "size": m.size, "sha256": m.sha256 });
            app.audit(event(
                &p,
                &src,
                "system.update_staged",
                "appliance",
                details,
            ))
            .await?;
            // Answer first, then stop: the supervisor starts the trial.
            let app2 = app.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                app2.restart.notify_one();
            });
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({ "version": m.version, "restarting": true })),
            )
                .into_response())
        }
        Err(e) => {
            app.audit(
                event(
                    &p,
                    &src,
                    "system.update_refused",
                    "appliance",
                    json!({ "reason": e.to_string(), "size": size }),
                )
                .outcome(Outcome::Denied),
            )
            .await?;
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "update_refused",
                e.to_string(),
            ))
        }
    }
}
