//! `GET /api/v1/sessions/{id}/screen`: the screen socket of remote view and control. The
//! customer's native client shares (binary screen messages, consent); the session's agent views
//! (control requests, input). The relay itself is `session::screen`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};

use super::error::ApiError;
use super::sessions::{Party, RateBucket, party, same_origin, valid_id, write_loop};
use crate::app::{App, Source};
use crate::auth::Principal;
use crate::session::Out;
use crate::session::protocol::Side;

#[derive(serde::Deserialize)]
pub(super) struct ScreenQuery {
    customer_token: Option<String>,
    /// The client's resume token, to rejoin after a restart of its machine.
    resume_token: Option<String>,
}

pub(super) async fn socket(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ScreenQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    same_origin(&headers)?;
    let (side, principal) = if let Some(t) = q.resume_token.as_deref() {
        if !app
            .sessions
            .live(&id)
            .is_some_and(|r| r.screen.resume_ok(t))
        {
            let ev = crate::audit::Event {
                actor: format!("customer:{id}"),
                role: "customer".into(),
                action: "remote.resume_refused".into(),
                target: format!("session:{id}"),
                outcome: crate::audit::Outcome::Denied,
                source: src.to_string(),
                details: serde_json::json!({}),
            };
            app.audit(ev).await?;
            return Err(ApiError::forbidden(
                "this resume token is not (or no longer) valid for this session",
            ));
        }
        (Side::Customer, None)
    } else {
        match party(&app, &id, &headers, &method, q.customer_token.as_deref()).await? {
            Party::Customer => (Side::Customer, None),
            Party::User(p) => (Side::Agent, Some(p)),
        }
    };
    let limit = crate::remote::MAX_MESSAGE + 1024;
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |ws| run(app, ws, id, side, principal)))
}

fn refusal(code: &str, message: &str) -> Out {
    Out::Text(
        serde_json::json!({"type": "error", "code": code, "message": message})
            .to_string()
            .into(),
    )
}

async fn run(app: Arc<App>, ws: WebSocket, id: String, side: Side, who: Option<Principal>) {
    let (mut sink, mut stream) = ws.split();
    let Some(room) = app.sessions.live(&id) else {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: 1008,
                reason: "the session is not live".into(),
            })))
            .await;
        return;
    };
    let (tx, rx) = mpsc::channel(crate::session::CONN_QUEUE);
    let kill = Arc::new(Notify::new());
    let conn = app.sessions.new_conn(tx.clone(), kill.clone());
    let conn_id = conn.id();
    let hello = match room.screen.attach(&app, &room, side, who.as_ref(), conn) {
        Ok(h) => h,
        Err(e) => {
            let _ = sink
                .send(Message::Text(
                    serde_json::json!({"type": "error", "code": "refused", "message": e.to_string()})
                        .to_string()
                        .into(),
                ))
                .await;
            let _ = sink
                .send(Message::Close(Some(CloseFrame {
                    code: 1008,
                    reason: "refused".into(),
                })))
                .await;
            return;
        }
    };
    let _counted = app.metrics.relay_connection();
    let writer = tokio::spawn(write_loop(sink, rx, kill, hello));
    // Pointer moves come fast while an agent controls; screen messages come in bursts.
    let mut bucket = RateBucket::with_rate(250.0, 500.0);
    let mut stop = app.stop.subscribe();
    loop {
        let msg = tokio::select! {
            m = stream.next() => match m {
                Some(Ok(m)) => m,
                _ => break,
            },
            _ = stop.wait_for(|s| *s) => {
                let _ = tx.try_send(Out::Close(1001, "the appliance is shutting down"));
                break;
            }
        };
        if matches!(msg, Message::Close(_)) {
            break;
        }
        if !bucket.take() {
            let _ = tx.try_send(refusal("rate_limited", "too many messages; slow down"));
            continue;
        }
        let result = match msg {
            Message::Binary(b) => room.screen.binary(&app, &room, side, b).await,
            Message::Text(t) => {
                room.screen
                    .text(&app, &room, side, who.as_ref(), t.as_str())
                    .await
            }
            _ => Ok(()),
        };
        if let Err(r) = result {
            let _ = tx.try_send(refusal(r.code, &r.message));
        }
        if writer.is_finished() {
            break;
        }
    }
    room.screen.detach(&app, &room, side, conn_id);
    drop(tx);
    let _ = writer.await;
}
