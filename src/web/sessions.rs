//! Support sessions over HTTP and WebSocket: requests, the queue, connection codes, the relay
//! socket, files and surveys. The rules live in `session`; these handlers check who is asking,
//! validate the input, and translate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};

use super::ApiError;
use super::api::{Authed, authenticate, event, parse, require};
use crate::app::{App, Source};
use crate::audit::{self, Event, Outcome};
use crate::auth::Permission;
use crate::auth::Principal;
use crate::config::{FieldKind, Portal};
use crate::metrics::RelayResult;
use crate::model::{DataClass, Role, now_rfc3339};
use crate::session::protocol::{self, Side};
use crate::session::{Actor, NewRequest, Presence, SessionError, Sessions, Target};
use crate::store::FileRow;

pub const CUSTOMER_COOKIE: &str = "custos_customer";

pub fn routes(app: &App) -> Router<Arc<App>> {
    let file_limit = app.config.max_file_bytes as usize;
    Router::new()
        .route("/api/v1/requests", post(create_request))
        .route("/api/v1/requests/{id}/cancel", post(cancel_request))
        .route("/api/v1/requests/{id}/accept", post(accept))
        .route("/api/v1/queue", get(queue))
        .route("/api/v1/queue/next", post(next))
        .route("/api/v1/queue/stream", get(queue_stream))
        .route("/api/v1/agent/presence", post(presence))
        .route("/api/v1/agent/canned", get(canned))
        .route("/api/v1/monitors/agents", get(monitor_agents))
        .route("/api/v1/monitors/queues", get(monitor_queues))
        .route(
            "/api/v1/users/{name}/skills",
            put(set_skills).get(get_skills),
        )
        .route("/api/v1/codes", post(new_code).get(list_codes))
        .route("/api/v1/monitors/stream", get(monitor_stream))
        .route("/api/v1/codes/{code}", delete(cancel_code))
        .route("/api/v1/codes/{code}/redeem", post(redeem_code))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/search", get(search_sessions))
        .route("/api/v1/sessions/{id}", get(session_detail))
        .route("/api/v1/sessions/{id}/customer", get(customer_view))
        .route("/api/v1/sessions/{id}/transfer", post(transfer))
        .route("/api/v1/sessions/{id}/end", post(end))
        .route("/api/v1/sessions/{id}/messages", post(post_message))
        .route("/api/v1/sessions/{id}/survey", post(survey))
        .route("/api/v1/sessions/{id}/ws", get(ws))
        .route("/api/v1/sessions/{id}/screen", get(super::screen::socket))
        .route(
            "/api/v1/sessions/{id}/files",
            post(upload).layer(DefaultBodyLimit::max(file_limit)),
        )
        .route("/api/v1/sessions/{id}/files/{file_id}", get(download))
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(m) => ApiError::not_found(m),
            SessionError::Forbidden(m) => ApiError::forbidden(m),
            SessionError::Conflict(m) => ApiError::conflict(m),
            SessionError::BadInput(m) => ApiError::bad_request(m),
            SessionError::Store(s) => s.into(),
            SessionError::Internal(m) => ApiError::internal(m),
            SessionError::Sealed => ApiError::sealed(),
            SessionError::StorageFull(m) => ApiError::storage_full(m),
        }
    }
}

// --- who is asking -------------------------------------------------------------------------------

/// The customer token of a request: `Authorization: Customer`, the customer cookie, or (for
/// downloads and sockets) the query string. A change (any method but GET and HEAD) carried by
/// the cookie alone needs `X-Custos-CSRF: 1`, as a user's cookie does (`api::authenticate`):
/// SameSite does not stop a page on the same site (another port or subdomain).
fn customer_token(
    headers: &HeaderMap,
    method: &Method,
    query: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Customer "))
    {
        return Ok(Some(t.trim().to_string()));
    }
    let cookie = cookie_customer_token(headers);
    if cookie.is_some() {
        super::api::cookie_change_allowed(headers, method)?;
    }
    Ok(cookie.or_else(|| query.map(str::to_string)))
}

fn cookie_customer_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';').find_map(|kv| {
                let (k, val) = kv.trim().split_once('=')?;
                (k == CUSTOMER_COOKIE).then(|| val.to_string())
            })
        })
}

/// Who may act on a session: its customer (by token) or an authenticated user.
pub(super) enum Party {
    Customer,
    User(Principal),
}

pub(super) async fn party(
    app: &Arc<App>,
    id: &str,
    headers: &HeaderMap,
    method: &Method,
    query_token: Option<&str>,
) -> Result<Party, ApiError> {
    // The native client after a restart holds only its resume token, which stands for the
    // customer while its screen socket is connected.
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Resume "))
    {
        return if app.sessions.live(id).is_some_and(|r| r.screen.resume_ok(t)) {
            Ok(Party::Customer)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this resume token is not (or no longer) valid for this session",
            ))
        };
    }
    if let Some(t) = customer_token(headers, method, query_token)? {
        if crate::session::customer_may(app, id, &t).await? {
            return Ok(Party::Customer);
        }
        let explicit = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Customer "));
        if explicit {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this customer token is not for this session",
            ));
        }
    }
    match authenticate(app, headers, method).await? {
        Some(p) => Ok(Party::User(p)),
        None => Err(ApiError::unauthorized()),
    }
}

pub(super) fn valid_id(id: &str) -> Result<(), ApiError> {
    if crate::session::valid_session_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no session {id:?}")))
    }
}

fn customer_cookie(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{CUSTOMER_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=86400"
    ))
    .expect("token characters are valid in a header")
}

// --- requests ------------------------------------------------------------------------------------

/// A request as submitted, before validation.
#[derive(Default, Debug)]
pub struct RequestInput {
    pub portal: String,
    pub skill: Option<String>,
    pub name: String,
    pub email: String,
    pub question: String,
    pub fields: HashMap<String, String>,
    pub external_ref: Option<String>,
}

impl RequestInput {
    /// From a form post: `field.NAME` keys carry the portal's fields.
    pub fn from_form(portal: &str, form: &[(String, String)]) -> Self {
        let mut r = RequestInput {
            portal: portal.to_string(),
            ..Default::default()
        };
        for (k, v) in form {
            match k.as_str() {
                "skill" if !v.is_empty() => r.skill = Some(v.clone()),
                "name" => r.name = v.clone(),
                "email" => r.email = v.clone(),
                "question" => r.question = v.clone(),
                "ref" if !v.is_empty() => r.external_ref = Some(v.clone()),
                other => {
                    if let Some(f) = other.strip_prefix("field.") {
                        r.fields.insert(f.to_string(), v.clone());
                    }
                }
            }
        }
        r
    }
}

/// A problem with one input, named for the form.
#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn check_text(
    field: &str,
    label: &str,
    v: &str,
    required: bool,
    max: usize,
    errors: &mut Vec<FieldError>,
) {
    let n = v.chars().count();
    if required && v.trim().is_empty() {
        errors.push(FieldError {
            field: field.into(),
            message: format!("{label} is required"),
        });
    } else if n > max {
        errors.push(FieldError {
            field: field.into(),
            message: format!("{label} is too long ({n} characters; at most {max})"),
        });
    } else if v
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        errors.push(FieldError {
            field: field.into(),
            message: format!("{label} contains control characters"),
        });
    }
}

fn valid_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.contains(char::is_whitespace)
        && v.len() <= 254
}

/// Validates a request against its portal's form; every problem is reported, not just the first.
pub fn validate(
    app: &App,
    input: RequestInput,
    via: &'static str,
) -> Result<NewRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(portal) = app.config.portal(&input.portal) else {
        return Err(vec![FieldError {
            field: "portal".into(),
            message: format!("there is no portal {:?}", input.portal),
        }]);
    };
    let skill = input
        .skill
        .clone()
        .unwrap_or_else(|| portal.skills[0].clone());
    if !portal.has_skill(&skill) {
        errors.push(FieldError {
            field: "skill".into(),
            message: format!("portal {} has no skill {skill:?}", portal.name),
        });
    }
    check_text("name", "Your name", &input.name, true, 100, &mut errors);
    check_text("email", "E-mail", &input.email, false, 254, &mut errors);
    if !input.email.trim().is_empty() && !valid_email(input.email.trim()) {
        errors.push(FieldError {
            field: "email".into(),
            message: "E-mail is not a valid address".into(),
        });
    }
    check_text(
        "question",
        "Your question",
        &input.question,
        true,
        2000,
        &mut errors,
    );
    if let Some(r) = &input.external_ref {
        check_text("ref", "Reference", r, false, 100, &mut errors);
    }
    let mut fields = Map::new();
    for (k, _) in input.fields.iter() {
        if !portal.fields.iter().any(|f| &f.name == k) {
            errors.push(FieldError {
                field: format!("field.{k}"),
                message: format!("portal {} has no field {k:?}", portal.name),
            });
        }
    }
    for spec in &portal.fields {
        let v = input
            .fields
            .get(&spec.name)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let key = format!("field.{}", spec.name);
        check_text(
            &key,
            &spec.label,
            &v,
            spec.required,
            spec.max_len,
            &mut errors,
        );
        if v.is_empty() {
            continue;
        }
        let ok = match spec.kind {
            FieldKind::Text => true,
            FieldKind::Email => valid_email(&v),
            FieldKind::Number => v.parse::<f64>().is_ok_and(f64::is_finite),
            FieldKind::Tel => {
                v.chars()
                    .all(|c| c.is_ascii_digit() || " +-()./".contains(c))
                    && v.chars().any(|c| c.is_ascii_digit())
            }
            FieldKind::Select => spec.options.contains(&v),
        };
        if !ok {
            errors.push(FieldError {
                field: key,
                message: format!("{} is not a valid {:?} value", spec.label, spec.kind)
                    .to_lowercase(),
            });
        }
        fields.insert(spec.name.clone(), Value::String(v));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewRequest {
        recording: portal.recording,
        portal: portal.name.clone(),
        skill,
        name: input.name.trim().to_string(),
        email: input.email.trim().to_string(),
        question: input.question.trim().to_string(),
        fields,
        external_ref: input
            .external_ref
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty()),
        via,
    })
}

/// The per-address limit on new requests (the appliance's own loopback is exempt).
pub fn request_allowed(app: &App, src: &Source) -> Result<(), ApiError> {
    let loopback =
        matches!(src, Source::Net(a) if a.ip().is_loopback()) || matches!(src, Source::Local);
    if !loopback && !app.request_limit.take(&format!("req-ip:{src}")) {
        return Err(ApiError::throttled(Duration::from_secs(1)));
    }
    Ok(())
}

fn errors_to_api(errors: Vec<FieldError>) -> ApiError {
    let message = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::bad_request(message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    portal: String,
    skill: Option<String>,
    name: String,
    #[serde(default)]
    email: String,
    question: String,
    #[serde(default)]
    fields: HashMap<String, Value>,
    #[serde(rename = "ref")]
    external_ref: Option<String>,
}

async fn create_request(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let input = if is_form {
        let form: Vec<(String, String)> = serde_urlencoded_pairs(&body)?;
        let portal = form
            .iter()
            .find(|(k, _)| k == "portal")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        RequestInput::from_form(&portal, &form)
    } else {
        let j: JsonRequest = parse(&body)?;
        let mut fields = HashMap::new();
        for (k, v) in j.fields {
            let s = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "field {k:?} must be a string, number or boolean"
                    )));
                }
            };
            fields.insert(k, s);
        }
        RequestInput {
            portal: j.portal,
            skill: j.skill,
            name: j.name,
            email: j.email,
            question: j.question,
            fields,
            external_ref: j.external_ref,
        }
    };
    let req = validate(&app, input, "api").map_err(errors_to_api)?;
    request_allowed(&app, &src)?;
    let created = Sessions::create(&app, req, None, &src).await?;
    let body = json!({
        "request_id": created.id,
        "session_id": created.id,
        "customer_token": created.customer_token,
        "queue_position": created.position,
        "customer_url": format!("/s/{}", created.id),
    });
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, customer_cookie(&created.customer_token));
    Ok(res)
}

fn serde_urlencoded_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = form_urlencoded(body);
    if pairs.len() > 200 {
        return Err(ApiError::bad_request("too many form fields"));
    }
    Ok(pairs)
}

/// Decodes `application/x-www-form-urlencoded` bodies.
pub fn form_urlencoded(body: &[u8]) -> Vec<(String, String)> {
    url_decode_pairs(&String::from_utf8_lossy(body))
}

pub fn url_decode_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex_val),
                bytes.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

async fn cancel_request(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let token =
        customer_token(&headers, &Method::POST, None)?.ok_or_else(ApiError::unauthorized)?;
    if !crate::session::customer_may(&app, &id, &token).await? {
        return Err(ApiError::forbidden(
            "this customer token is not for this request",
        ));
    }
    if app.sessions.position(&id).is_none() {
        return Err(ApiError::conflict("this request is no longer waiting"));
    }
    Sessions::end(&app, Actor::Customer, &id, &src).await?;
    Ok(Json(json!({ "status": "cancelled" })))
}

async fn accept(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    Sessions::accept(&app, &p, &id, &src).await?;
    Ok(Json(json!({ "session_id": id })))
}

async fn next(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    let id = Sessions::next(&app, &p, &src).await?;
    Ok(Json(json!({ "session_id": id })))
}

async fn my_skills(app: &Arc<App>, p: &Principal) -> Result<Vec<(String, String)>, ApiError> {
    let uid = p.user_id;
    Ok(app.db(move |s| s.read(|tx| tx.agent_skills(uid))).await?)
}

async fn queue(State(app): State<Arc<App>>, Authed(p): Authed) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::HandleSessions)?;
    let skills = my_skills(&app, &p).await?;
    Ok(Json(app.sessions.queue_view(p.user_id, &skills)))
}

async fn queue_stream(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Response, ApiError> {
    require(&p, Permission::HandleSessions)?;
    let rx = app.sessions.subscribe();
    let state = (app, rx, p.user_id, true);
    let stream = futures_util::stream::unfold(state, |(app, mut rx, uid, first)| async move {
        if *app.stop.borrow() {
            return None;
        }
        if !first {
            // A change, or 15 s, whichever comes first (waited times keep moving); the stream
            // ends when the server shuts down.
            let mut stop = app.stop.subscribe();
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_secs(15), rx.changed()) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
            // Coalesce a burst of changes into one update.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        rx.borrow_and_update();
        // Skills are read for every update, so a change by an admin shows without a reload.
        let skills = app
            .db(move |s| s.read(|tx| tx.agent_skills(uid)))
            .await
            .unwrap_or_default();
        let view = app.sessions.queue_view(uid, &skills);
        let ev = SseEvent::default().event("queue").data(view.to_string());
        Some((Ok::<_, std::convert::Infallible>(ev), (app, rx, uid, false)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceRequest {
    status: String,
}

async fn presence(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: PresenceRequest = parse(&body)?;
    let presence = Presence::parse(&req.status)
        .ok_or_else(|| ApiError::bad_request("status must be available, busy, away or offline"))?;
    require(&p, Permission::HandleSessions)?;
    app.sessions.set_presence(&p, presence);
    app.audit(event(
        &p,
        &src,
        "agent.presence",
        &format!("user:{}", p.name),
        json!({ "status": req.status }),
    ))
    .await?;
    Ok(Json(json!({ "status": req.status })))
}

async fn monitor_agents(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadMonitors)?;
    Ok(Json(json!({ "agents": app.sessions.agents_view() })))
}

async fn monitor_queues(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadMonitors)?;
    Ok(Json(
        json!({ "queues": app.sessions.queues_view(&app.config.portals) }),
    ))
}

/// Agents and queues as a live stream: an event `monitors` at every change, and at least every
/// second (waits keep growing), until the server stops.
async fn monitor_stream(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Response, ApiError> {
    require(&p, Permission::ReadMonitors)?;
    let rx = app.sessions.subscribe();
    let stream = futures_util::stream::unfold((app, rx, true), |(app, mut rx, first)| async move {
        if *app.stop.borrow() {
            return None;
        }
        if !first {
            let mut stop = app.stop.subscribe();
            tokio::select! {
                _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
        }
        rx.borrow_and_update();
        let data = json!({ "agents": app.sessions.agents_view(), "queues": app.sessions.queues_view(&app.config.portals), "at": now_rfc3339() });
        let ev = SseEvent::default().event("monitors").data(data.to_string());
        Some((Ok::<_, std::convert::Infallible>(ev), (app, rx, false)))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The live connection codes: an agent's own, or every one for an admin.
async fn list_codes(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::HandleSessions)?;
    let who = if p.role == Role::Admin {
        None
    } else {
        Some(p.user_id)
    };
    let now = crate::session::now_unix();
    let rows = app
        .db(move |s| s.read(|tx| tx.codes_active(who, now)))
        .await?;
    let codes: Vec<Value> = rows
        .into_iter()
        .map(|(c, agent)| {
            let expires = time::OffsetDateTime::from_unix_timestamp(c.expires_at).map(crate::model::format_rfc3339).unwrap_or_default();
            json!({ "code": crate::session::format_code(&c.code), "agent": agent, "ref": c.external_ref, "expires_at": expires })
        })
        .collect();
    Ok(Json(json!({ "codes": codes })))
}

async fn canned(State(app): State<Arc<App>>, Authed(_p): Authed) -> Json<Value> {
    Json(json!({ "replies": app.config.canned }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkillsRequest {
    skills: Vec<SkillRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkillRef {
    portal: String,
    skill: String,
}

async fn set_skills(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageUsers)?;
    let req: SkillsRequest = parse(&body)?;
    let mut list = Vec::new();
    for s in req.skills {
        if !app
            .config
            .portal(&s.portal)
            .is_some_and(|pp| pp.has_skill(&s.skill))
        {
            return Err(ApiError::bad_request(format!(
                "there is no skill {}/{}",
                s.portal, s.skill
            )));
        }
        list.push((s.portal, s.skill));
    }
    let shown: Vec<String> = list.iter().map(|(a, b)| format!("{a}/{b}")).collect();
    let ev = event(
        &p,
        &src,
        "user.skills_set",
        &format!("user:{name}"),
        json!({ "skills": shown }),
    );
    let n = name.clone();
    app.db(move |s| {
        s.write(|tx| {
            let user = tx
                .user_by_name(&n)?
                .ok_or_else(|| crate::store::StoreError::NotFound(format!("user {n:?}")))?;
            tx.agent_skills_set(user.id, &list)?;
            audit::append_tx(tx, &[ev])
        })
    })
    .await?;
    Ok(Json(json!({ "name": name, "skills": shown })))
}

async fn get_skills(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if p.role != Role::Admin && p.name != name {
        return Err(ApiError::forbidden(
            "only an admin or the user may see these skills",
        ));
    }
    let list = app
        .db(move |s| {
            s.read(|tx| {
                let user = tx
                    .user_by_name(&name)?
                    .ok_or_else(|| crate::store::StoreError::NotFound(format!("user {name:?}")))?;
                tx.agent_skills(user.id)
            })
        })
        .await?;
    Ok(Json(
        json!({ "skills": list.into_iter().map(|(p, s)| json!({ "portal": p, "skill": s })).collect::<Vec<_>>() }),
    ))
}

// --- connection codes ----------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CodeRequest {
    #[serde(rename = "ref")]
    external_ref: Option<String>,
    ttl_s: Option<i64>,
}

async fn new_code(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require(&p, Permission::HandleSessions)?;
    let req: CodeRequest = if body.is_empty() {
        CodeRequest::default()
    } else {
        parse(&body)?
    };
    let ttl = req.ttl_s.unwrap_or(app.config.code_ttl_s);
    if !(60..=3600).contains(&ttl) {
        return Err(ApiError::bad_request("ttl_s must be between 60 and 3600"));
    }
    if let Some(r) = &req.external_ref
        && (r.is_empty() || r.chars().count() > 100 || r.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "ref must be 1-100 printable characters",
        ));
    }
    let (uid, ext) = (p.user_id, req.external_ref.clone());
    let now = crate::session::now_unix();
    let code = app
        .db(move |s| {
            s.write(|tx| {
                tx.codes_purge(now)?;
                for _ in 0..20 {
                    let c = crate::session::new_code();
                    if tx.code_insert(&c, uid, ext.as_deref(), now, now + ttl)? {
                        return Ok(c);
                    }
                }
                Err(crate::store::StoreError::Conflict(
                    "could not find a free code; try again".into(),
                ))
            })
        })
        .await?;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(now + ttl)
        .map(crate::model::format_rfc3339)
        .unwrap_or_default();
    app.audit(event(
        &p,
        &src,
        "code.issued",
        &format!("code:{}", &code[..3]),
        json!({ "ref": req.external_ref, "ttl_s": ttl }),
    ))
    .await?;
    let invite_url = format!("https://{}/code?code={code}", public_host(&app, &headers));
    Ok((StatusCode::CREATED, Json(json!({ "code": crate::session::format_code(&code), "expires_at": expires_at, "ref": req.external_ref, "invite_url": invite_url }))).into_response())
}

/// The name and port the caller reached the appliance by (its `Host`, when that is a plain
/// host[:port]), else the first configured host name and the listening port: what a link handed
/// to a customer should point at.
fn public_host(app: &App, headers: &HeaderMap) -> String {
    let plain = |h: &&str| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    };
    match headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(plain)
    {
        Some(h) => h.to_string(),
        None => {
            let name = app.config.hostnames.first().map_or("localhost", |h| h);
            format!("{name}:{}", app.config.listen.port())
        }
    }
}

async fn cancel_code(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(code): Path<String>,
) -> Result<StatusCode, ApiError> {
    let code =
        crate::session::normalize_code(&code).ok_or_else(|| ApiError::not_found("no such code"))?;
    let owner = if p.role == Role::Admin {
        None
    } else {
        Some(p.user_id)
    };
    let c = code.clone();
    let done = app
        .db(move |s| s.write(|tx| tx.code_cancel(&c, owner, crate::session::now_unix())))
        .await?;
    if !done {
        return Err(ApiError::not_found(
            "no live code of yours with that number",
        ));
    }
    app.audit(event(
        &p,
        &src,
        "code.cancelled",
        &format!("code:{}", &code[..3]),
        json!({}),
    ))
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedeemRequest {
    name: Option<String>,
}

/// A connection code, redeemed by a customer: guessing is throttled per address and across the
/// appliance, and every failure is audited.
pub async fn redeem(
    app: &Arc<App>,
    src: &Source,
    raw_code: &str,
    name: Option<String>,
) -> Result<crate::session::Created, ApiError> {
    let ip_key = format!("code-ip:{src}");
    for key in [ip_key.as_str(), "code-global"] {
        if let Err(locked) = app.code_throttle.attempt(key) {
            if locked.first {
                let ev = Event {
                    source: src.to_string(),
                    ..Event::system("code.rejected", "code", json!({ "reason": "throttled" }))
                };
                app.audit(ev.outcome(Outcome::Denied)).await?;
            }
            return Err(ApiError::throttled(locked.wait));
        }
    }
    let fail = |reason: &'static str| {
        let shown: String = raw_code
            .chars()
            .filter(char::is_ascii_digit)
            .take(3)
            .collect();
        let ev = Event {
            source: src.to_string(),
            ..Event::system(
                "code.rejected",
                &format!("code:{shown}"),
                json!({ "reason": reason }),
            )
        };
        (ev.outcome(Outcome::Denied), reason)
    };
    let Some(code) = crate::session::normalize_code(raw_code) else {
        let (ev, _) = fail("malformed");
        app.audit(ev).await?;
        return Err(ApiError::bad_request("a code has nine digits"));
    };
    let c = code.clone();
    let row = app.db(move |s| s.read(|tx| tx.code_get(&c))).await?;
    let now = crate::session::now_unix();
    let problem = match &row {
        None => Some("unknown"),
        Some(r) if r.cancelled => Some("cancelled"),
        Some(r) if r.used_at.is_some() => Some("already used"),
        Some(r) if r.expires_at <= now => Some("expired"),
        Some(_) => None,
    };
    if let Some(reason) = problem {
        let (ev, _) = fail(reason);
        app.audit(ev).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_code",
            "this code is unknown, expired or already used",
        ));
    }
    let row = row.expect("checked");
    app.code_throttle.forgive_one(&ip_key);
    app.code_throttle.forgive_one("code-global");
    let uid = row.agent_id;
    let agent = app
        .db(move |s| s.read(|tx| tx.user_by_id(uid)))
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| ApiError::conflict("the agent of this code is no longer available"))?;
    if app.sessions.load_of(uid) >= app.config.max_per_agent {
        return Err(ApiError::conflict(
            "the agent of this code is busy with the most sessions allowed; call them back",
        ));
    }
    let skills = app.db(move |s| s.read(|tx| tx.agent_skills(uid))).await?;
    let (portal, skill) = skills
        .first()
        .cloned()
        .or_else(|| {
            app.config
                .portals
                .first()
                .map(|p| (p.name.clone(), p.skills[0].clone()))
        })
        .ok_or_else(|| ApiError::conflict("no portal is configured"))?;
    let name = name
        .map(|n| n.trim().chars().take(100).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "Customer".into());
    let recording = app.config.portal(&portal).is_none_or(|p| p.recording);
    let req = NewRequest {
        portal,
        skill,
        name,
        email: String::new(),
        question: String::new(),
        fields: Map::new(),
        external_ref: row.external_ref.clone(),
        via: "code",
        recording,
    };
    // The code is used (claimed under a fresh id) before the session exists: a second redemption
    // racing this one fails. The claim is replaced by the session's id once it is created.
    let (c, claim) = (code.clone(), crate::session::new_session_id());
    if !app
        .db(move |s| s.write(|tx| tx.code_use(&c, &claim, now)))
        .await?
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_code",
            "this code is unknown, expired or already used",
        ));
    }
    let created = Sessions::create(app, req, Some((agent.id, agent.name.clone())), src).await?;
    let (c, sid) = (code.clone(), created.id.clone());
    app.db(move |s| s.write(|tx| tx.code_set_session(&c, &sid)))
        .await?;
    let ev = Event {
        source: src.to_string(),
        ..Event::system(
            "code.redeemed",
            &format!("session:{}", created.id),
            json!({ "agent": agent.name, "ref": row.external_ref }),
        )
    };
    app.audit(ev).await?;
    Ok(created)
}

async fn redeem_code(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Path(code): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    refuse_other_sites(
        &headers,
        "a code is redeemed from this appliance's own pages only",
    )?;
    let req: RedeemRequest = if body.is_empty() {
        RedeemRequest::default()
    } else {
        parse(&body)?
    };
    let created = redeem(&app, &src, &code, req.name).await?;
    let mut res = (
        StatusCode::CREATED,
        Json(json!({ "session_id": created.id, "customer_token": created.customer_token, "customer_url": format!("/s/{}", created.id) })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, customer_cookie(&created.customer_token));
    Ok(res)
}

// --- session actions -----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    to_agent: Option<String>,
    #[serde(default)]
    to_queue: bool,
    skill: Option<String>,
    note: Option<String>,
}

async fn transfer(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let req: TransferRequest = parse(&body)?;
    let target = match (req.to_agent, req.to_queue) {
        (Some(a), false) => Target::Agent(a),
        (None, true) => Target::Queue { skill: req.skill },
        _ => {
            return Err(ApiError::bad_request(
                "give either to_agent or to_queue: true",
            ));
        }
    };
    Sessions::transfer(&app, &p, &id, target, req.note, &src).await?;
    Ok(Json(json!({ "session_id": id, "transferred": true })))
}

async fn end(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let actor = match party(&app, &id, &headers, &method, None).await? {
        Party::Customer => Actor::Customer,
        Party::User(p) => Actor::Agent(p),
    };
    let status = Sessions::end(&app, actor, &id, &src).await?;
    Ok(Json(json!({ "session_id": id, "status": status })))
}

/// The command API: a chat message, a link, a private note or a sensitive marking sent into a
/// live session by its agent, in the session protocol's own message form
/// (docs/formats/session-protocol.md), validated by the same parser as the WebSocket's.
async fn post_message(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("the body must be a JSON message in UTF-8"))?;
    let msg = protocol::parse(text).map_err(|r| ApiError::bad_request(r.message))?;
    Ok(Json(app.sessions.post_as_agent(&id, &p, msg).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SurveyRequest {
    rating: i64,
    #[serde(default)]
    comment: String,
}

async fn survey(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    let who = party(&app, &id, &headers, &method, None).await?;
    let req: SurveyRequest = parse(&body)?;
    if !(1..=5).contains(&req.rating) {
        return Err(ApiError::bad_request("rating must be 1 to 5"));
    }
    if req.comment.chars().count() > 4000 {
        return Err(ApiError::bad_request(
            "comment must be at most 4000 characters",
        ));
    }
    let sid = id.clone();
    let row = app
        .db(move |s| s.read(|tx| tx.session_get(&sid)))
        .await?
        .ok_or_else(|| ApiError::not_found("no such session"))?;
    if let Party::User(p) = &who
        && !matches!(p.role, Role::Admin)
        && row.agent_id != Some(p.user_id)
    {
        return Err(ApiError::forbidden(
            "only the session's customer, its agent or an admin may submit its survey",
        ));
    }
    if row.status != "ended" {
        return Err(ApiError::conflict(
            "the survey opens when the session has ended",
        ));
    }
    if row.survey_at.is_some() {
        return Err(ApiError::conflict(
            "the survey for this session was already submitted",
        ));
    }
    // The comment is session content: it goes to the archive, encrypted; only the rating stays
    // in the database, for reports and alerts.
    let keys = app.keys().ok_or_else(ApiError::sealed)?;
    let archive = app.archive.clone();
    let doc =
        json!({ "rating": req.rating, "comment": req.comment, "at": now_rfc3339() }).to_string();
    let (sid, rating) = (id.clone(), req.rating);
    let actor = match &who {
        Party::Customer => Actor::Customer,
        Party::User(p) => Actor::Agent(p.clone()),
    };
    let ev = actor.event(
        &id,
        &src.to_string(),
        "survey.submitted",
        json!({ "rating": rating, "has_comment": !req.comment.is_empty() }),
    );
    app.db(move |s| -> Result<(), ApiError> {
        let mut w = archive
            .create(s, &keys, Some(&sid), DataClass::Survey)
            .map_err(ApiError::internal)?;
        w.append(doc.as_bytes()).map_err(ApiError::internal)?;
        w.finish(s).map_err(ApiError::internal)?;
        s.write(|tx| {
            tx.session_set_survey(&sid, rating, &now_rfc3339())?;
            audit::append_tx(tx, &[ev])
        })?;
        Ok(())
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "session_id": id, "rating": rating })),
    )
        .into_response())
}

async fn customer_view(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    if !matches!(
        party(&app, &id, &headers, &method, None).await?,
        Party::Customer
    ) {
        return Err(ApiError::forbidden(
            "this view is for the session's customer",
        ));
    }
    let sid = id.clone();
    let row = app
        .db(move |s| s.read(|tx| tx.session_get(&sid)))
        .await?
        .ok_or_else(|| ApiError::not_found("no such session"))?;
    let portal: Option<&Portal> = app.config.portal(&row.portal);
    let position = app.sessions.position(&id);
    Ok(Json(json!({
        "session_id": id,
        "status": row.status,
        "portal": row.portal,
        "portal_title": portal.map_or(row.portal.as_str(), |p| p.title.as_str()),
        "name": row.customer_name,
        "agent": row.agent_name,
        "position": position.map(|p| p.0),
        "estimated_wait_s": position.map(|p| p.1),
        "survey_submitted": row.survey_at.is_some(),
    })))
}

/// Reads a session's transcript from the archive: every transcript object, in order.
async fn read_transcript(app: &Arc<App>, id: &str) -> Result<Vec<Value>, ApiError> {
    read_lines(app, id, "transcript").await
}

/// Every JSON line of a session's objects of one class, oldest object first.
pub(super) async fn read_lines(
    app: &Arc<App>,
    id: &str,
    class: &'static str,
) -> Result<Vec<Value>, ApiError> {
    let keys = app.keys().ok_or_else(ApiError::sealed)?;
    let archive = app.archive.clone();
    let sid = id.to_string();
    app.db(move |s| -> Result<Vec<Value>, ApiError> {
        let ids = s.read(|tx| tx.session_objects(&sid, class))?;
        let mut out = Vec::new();
        for oid in ids {
            let mut r = archive.open(s, &keys, oid).map_err(ApiError::internal)?;
            let mut buf = zeroize::Zeroizing::new(Vec::new());
            loop {
                match r.next_chunk() {
                    Ok(Some(c)) => buf.extend_from_slice(c),
                    Ok(None) => break,
                    // A live object reads up to its last durable chunk.
                    Err(crate::archive::stream::StreamError::Truncated { .. }) => break,
                    Err(e) => return Err(ApiError::internal(format!("object {oid}: {e}"))),
                }
            }
            for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(v) = serde_json::from_slice::<Value>(line) {
                    out.push(v);
                }
            }
        }
        Ok(out)
    })
    .await
}

/// A session as the sync and the search list it: metadata only.
fn session_summary(r: &crate::store::SessionRow) -> Value {
    json!({
        "session_id": r.id, "status": r.status, "via": r.via, "portal": r.portal, "skill": r.skill,
        "ref": r.external_ref, "agent": r.agent_name, "requested_at": r.requested_at, "accepted_at": r.accepted_at,
        "ended_at": r.ended_at, "survey_rating": r.survey_rating,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    words: String,
    portal: Option<String>,
    agent: Option<String>,
    #[serde(rename = "ref")]
    external_ref: Option<String>,
    customer: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<u32>,
    reason: Option<String>,
}

/// The listing and search filters, with the time range checked and normalized.
fn session_filter(
    portal: Option<String>,
    agent: Option<String>,
    external_ref: Option<String>,
    customer: Option<String>,
    since: Option<String>,
    until: Option<String>,
) -> Result<crate::store::SessionFilter, ApiError> {
    let time = |t: Option<String>, end: bool| -> Result<Option<String>, ApiError> {
        t.as_deref()
            .map(|s| {
                if end {
                    crate::model::parse_range_end(s)
                } else {
                    crate::model::parse_time(s)
                }
            })
            .transpose()
            .map(|o| o.map(crate::model::format_rfc3339))
            .map_err(|e| ApiError::bad_request(e.to_string()))
    };
    Ok(crate::store::SessionFilter {
        portal,
        agent,
        external_ref,
        customer,
        since: time(since, false)?,
        until: time(until, true)?,
    })
}

/// Sessions whose transcripts contain every given word, newest first, through the blind word
/// index. Searching reads content, so it needs `ReadAnySession` and a stated reason from
/// compliance officers and auditors, and it is audited (with how many words and hits, never the
/// words: the audit log cannot be shredded).
async fn search_sessions(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadAnySession)?;
    let reason = stated_reason(&p, q.reason)?;
    let words: Vec<String> = crate::session::terms::words(&q.words).into_iter().collect();
    if words.is_empty() || words.len() > 10 {
        return Err(ApiError::bad_request(
            "words must hold 1 to 10 words of 3 to 40 letters or digits",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let key = app.keys().ok_or_else(ApiError::sealed)?.index_key();
    let terms: Vec<crate::store::Term> = words
        .iter()
        .map(|w| crate::session::terms::term(&key, w))
        .collect();
    let filter = session_filter(
        q.portal,
        q.agent,
        q.external_ref,
        q.customer,
        q.since,
        q.until,
    )?;
    let rows = app
        .db(move |s| s.read(|tx| tx.sessions_with_terms(&terms, limit, &filter)))
        .await?;
    app.audit(event(
        &p,
        &src,
        "sessions.searched",
        "sessions",
        json!({ "words": words.len(), "hits": rows.len(), "reason": reason }),
    ))
    .await?;
    let sessions: Vec<Value> = rows.iter().map(session_summary).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

#[derive(Deserialize)]
struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
    portal: Option<String>,
    agent: Option<String>,
    #[serde(rename = "ref")]
    external_ref: Option<String>,
    customer: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// With a cursor and nothing new after it: wait up to this many seconds (at most 30) for a
    /// change before answering (a long poll: `custos sync --follow`).
    wait: Option<u64>,
}

/// The cursor key: random, kept in the database, so that cursors survive restarts and cannot be
/// forged.
async fn cursor_key(app: &Arc<App>) -> Result<[u8; 32], ApiError> {
    let key = app
        .db(|s| {
            s.write(|tx| {
                if let Some(k) = tx.meta_get("cursor_key")? {
                    return Ok(k);
                }
                let k = hex::encode(crate::crypto::random_array::<32>());
                tx.meta_set("cursor_key", &k)?;
                Ok(k)
            })
        })
        .await?;
    hex::decode(key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| ApiError::internal("the cursor key is damaged"))
}

fn cursor_mac(key: &[u8; 32], seq: i64) -> [u8; 16] {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(b"custos sessions cursor v1");
    m.update(&seq.to_be_bytes());
    let full: [u8; 32] = m.finalize().into_bytes().into();
    full[..16].try_into().expect("16 of 32")
}

fn encode_cursor(key: &[u8; 32], seq: i64) -> String {
    let mut b = seq.to_be_bytes().to_vec();
    b.extend_from_slice(&cursor_mac(key, seq));
    format!(
        "c1.{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
    )
}

fn decode_cursor(key: &[u8; 32], c: &str) -> Result<i64, ApiError> {
    let bad =
        || ApiError::bad_request("the cursor is not one this appliance issued (damaged or forged)");
    let raw = c.strip_prefix("c1.").ok_or_else(bad)?;
    let b = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw)
        .map_err(|_| bad())?;
    if b.len() != 24 {
        return Err(bad());
    }
    let seq = i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
    if !crate::crypto::ct_eq(&b[8..], &cursor_mac(key, seq)) {
        return Err(bad());
    }
    Ok(seq)
}

/// Incremental sync: every session changed after the cursor, oldest change first. Sessions
/// change while being written; a session that changes again reappears later with its new state,
/// and nothing is skipped.
async fn list_sessions(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadAnySession)?;
    let key = cursor_key(&app).await?;
    let after = match &q.after {
        Some(c) => decode_cursor(&key, c)?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = session_filter(
        q.portal.clone(),
        q.agent.clone(),
        q.external_ref.clone(),
        q.customer.clone(),
        q.since.clone(),
        q.until.clone(),
    )?;
    // Only a client that holds a cursor waits: the first page answers at once.
    let wait = match &q.after {
        Some(_) => Duration::from_secs(q.wait.unwrap_or(0).min(30)),
        None => Duration::ZERO,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut commits = crate::store::commits();
    let mut stop = app.stop.subscribe();
    let rows = loop {
        commits.borrow_and_update();
        let f = filter.clone();
        let rows = app
            .db(move |s| s.read(|tx| tx.sessions_changed(after, limit, &f)))
            .await?;
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
            break rows;
        }
        // Nothing yet: wait for the next commit to the database, the deadline or shutdown.
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, commits.changed()) => {}
            _ = stop.wait_for(|s| *s) => break rows,
        }
    };
    let last = rows.last().map_or(after, |(seq, _)| *seq);
    let sessions: Vec<Value> = rows
        .iter()
        .map(|(seq, r)| {
            let mut v = session_summary(r);
            v["change"] = json!(seq);
            v
        })
        .collect();
    Ok(Json(
        json!({ "appliance_id": app.appliance_id, "sessions": sessions, "next_cursor": encode_cursor(&key, last) }),
    ))
}

#[derive(Deserialize)]
struct DetailQuery {
    reason: Option<String>,
    /// Show messages an agent marked sensitive (roles that may read any session, with a reason).
    #[serde(default)]
    include_sensitive: bool,
}

/// Compliance officers and auditors read session content only with a stated reason, which the
/// audit entry keeps.
pub(super) fn stated_reason(
    p: &Principal,
    reason: Option<String>,
) -> Result<Option<String>, ApiError> {
    let reason = reason
        .map(|r| r.trim().chars().take(500).collect::<String>())
        .filter(|r| !r.is_empty());
    if reason.is_none() && matches!(p.role, Role::Compliance | Role::Auditor) {
        return Err(ApiError::bad_request(
            "state why you read this session's content (?reason=...)",
        ));
    }
    Ok(reason)
}

/// Everything recorded about a session. Reading it is audited, with the stated reason.
async fn session_detail(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Result<Json<Value>, ApiError> {
    valid_id(&id)?;
    let sid = id.clone();
    let (row, participants, files, objects) = app
        .db(move |s| {
            s.read(|tx| {
                Ok((
                    tx.session_get(&sid)?,
                    tx.participants(&sid)?,
                    tx.files(&sid)?,
                    tx.objects_of_session(&sid)?,
                ))
            })
        })
        .await?;
    let row = row.ok_or_else(|| ApiError::not_found(format!("no session {id}")))?;
    let handled = participants
        .iter()
        .any(|x| x.kind == "agent" && x.name == p.name);
    let allowed = handled || crate::auth::permits(&p, Permission::ReadAnySession);
    if !allowed {
        app.audit(
            event(
                &p,
                &src,
                "session.read",
                &format!("session:{id}"),
                json!({}),
            )
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
        "session.read",
        &format!("session:{id}"),
        json!({ "parts": ["transcript", "diagnostics", "file list", "survey rating"], "reason": reason, "include_sensitive": q.include_sensitive }),
    ))
    .await?;
    if q.include_sensitive
        && !(crate::auth::permits(&p, Permission::ReadAnySession) && reason.is_some())
    {
        return Err(ApiError::forbidden(
            "messages marked sensitive are shown only to roles that may read any session, with a stated reason",
        ));
    }
    let mut transcript = read_transcript(&app, &id).await?;
    let marked: std::collections::HashSet<u64> = transcript
        .iter()
        .filter(|m| m["type"] == "sensitive")
        .filter_map(|m| m["target"].as_u64())
        .collect();
    for m in transcript
        .iter_mut()
        .filter(|m| m["type"] == "chat" && m["seq"].as_u64().is_some_and(|s| marked.contains(&s)))
    {
        m["sensitive"] = json!(true);
        if !q.include_sensitive {
            m["text"] = json!("[marked sensitive]");
        }
    }
    let visible: Vec<Value> = transcript
        .into_iter()
        .filter(|m| p.role != Role::Agent || m["type"] != "note" || handled)
        .collect();
    let timing = |a: &Option<String>, b: &Option<String>| -> Option<i64> {
        let a = crate::model::parse_time(a.as_deref()?).ok()?;
        let b = crate::model::parse_time(b.as_deref()?).ok()?;
        Some((b - a).whole_seconds())
    };
    Ok(Json(json!({
        "session_id": row.id,
        "status": row.status,
        "via": row.via,
        "portal": row.portal,
        "skill": row.skill,
        "request": { "name": row.customer_name, "email": row.customer_email, "question": row.question },
        "fields": serde_json::from_str::<Value>(&row.fields).unwrap_or(Value::Null),
        "ref": row.external_ref,
        "agent": row.agent_name,
        "participants": participants.iter().map(|x| json!({ "kind": x.kind, "name": x.name, "joined_at": x.joined_at, "left_at": x.left_at })).collect::<Vec<_>>(),
        "timings": {
            "requested_at": row.requested_at, "accepted_at": row.accepted_at, "ended_at": row.ended_at,
            "wait_s": timing(&Some(row.requested_at.clone()), &row.accepted_at),
            "handle_s": timing(&row.accepted_at, &row.ended_at),
        },
        "transcript": visible,
        "files": files.iter().map(|f| json!({ "file_id": f.id, "name": f.name, "size": f.size, "sha256": hex::encode(&f.sha256), "from": f.sender, "at": f.created_at })).collect::<Vec<_>>(),
        "survey": row.survey_rating.map(|r| json!({ "rating": r, "at": row.survey_at })),
        "diagnostics": read_lines(&app, &id, "diagnostics").await?,
        // The recorded streams, as stored (encrypted) in the archive.
        "recordings": objects
            .iter()
            .filter(|o| matches!(o.class.as_str(), "transcript" | "events" | "recording"))
            .map(|o| json!({
                "object": o.id.to_string(), "class": o.class, "state": o.state.as_str(),
                "created_at": o.created_at, "closed_at": o.closed_at, "bytes": o.plain_len,
                "sha256": o.plain_sha256.map(hex::encode),
            }))
            .collect::<Vec<_>>(),
    })))
}

// --- files ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct UploadQuery {
    name: Option<String>,
    /// The agent's screenshot of the customer's screen (a PNG): kept with the session's files
    /// and shown only to the agent.
    #[serde(default)]
    screenshot: bool,
}

fn clean_file_name(n: &str) -> Option<String> {
    let base = n.rsplit(['/', '\\']).next()?.trim();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then_some(cleaned)
}

async fn upload(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    let who = party(&app, &id, &headers, &method, None).await?;
    let (side, sender, actor) = match &who {
        Party::Customer => (Side::Customer, "customer".to_string(), Actor::Customer),
        Party::User(p) => {
            if !app.sessions.is_agent_of(&id, p) {
                return Err(ApiError::forbidden(
                    "only the agent handling this session may send files into it",
                ));
            }
            (
                Side::Agent,
                format!("agent:{}", p.name),
                Actor::Agent(p.clone()),
            )
        }
    };
    if !app.sessions.is_active(&id) {
        return Err(ApiError::conflict(
            "files can be sent once an agent has the session, until it ends",
        ));
    }
    if q.screenshot && side != Side::Agent {
        return Err(ApiError::forbidden(
            "screenshots are taken by the session's agent",
        ));
    }
    let name = q
        .name
        .as_deref()
        .and_then(clean_file_name)
        .ok_or_else(|| ApiError::bad_request("give the file's name as ?name="))?;
    let limit = app.config.max_file_bytes as usize;
    let data = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("files may be at most {limit} bytes"),
        )
    })?;
    if q.screenshot && !data.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err(ApiError::bad_request("a screenshot must be a PNG image"));
    }
    let keys = app.keys().ok_or_else(ApiError::sealed)?;
    let archive = app.archive.clone();
    let file_id = format!("file_{}", hex::encode(crate::crypto::random_array::<12>()));
    let (sid, fid, fname, snd) = (id.clone(), file_id.clone(), name.clone(), sender.clone());
    let size = data.len() as u64;
    let ev = actor.event(
        &id,
        &src.to_string(),
        if q.screenshot {
            "session.screenshot"
        } else {
            "session.file.sent"
        },
        json!({ "file_id": file_id, "name": name, "size": size }),
    );
    let sha = app
        .db(move |s| -> Result<[u8; 32], ApiError> {
            let mut w = archive
                .create(s, &keys, Some(&sid), DataClass::File)
                .map_err(ApiError::internal)?;
            let oid = w.id();
            w.append(&data).map_err(ApiError::internal)?;
            let close = w.finish(s).map_err(ApiError::internal)?;
            s.write(|tx| {
                tx.file_insert(&FileRow {
                    id: fid,
                    session_id: sid.clone(),
                    object_id: oid.to_string(),
                    name: fname,
                    size,
                    sha256: close.plain_sha256.to_vec(),
                    sender: snd,
                    created_at: now_rfc3339(),
                })?;
                audit::append_tx(tx, &[ev])
            })?;
            Ok(close.plain_sha256)
        })
        .await?;
    let msg = json!({ "file_id": file_id, "name": name, "size": size, "sha256": hex::encode(sha), "from": side.as_str(), "at": now_rfc3339() });
    app.sessions.file_sent(&id, msg.clone(), q.screenshot).await;
    // The customer's native client hears of the agent's files on its screen socket.
    if side == Side::Agent
        && !q.screenshot
        && let Some(room) = app.sessions.live(&id)
    {
        let mut m = msg.clone();
        m["type"] = json!("file");
        room.screen.tell_sharer(m);
    }
    Ok((StatusCode::CREATED, Json(msg)).into_response())
}

async fn download(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    method: Method,
    headers: HeaderMap,
    Path((id, file_id)): Path<(String, String)>,
    Query(q): Query<DetailQuery>,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    let who = party(&app, &id, &headers, &method, None).await?;
    let sid = id.clone();
    let (files, participants) = app
        .db(move |s| s.read(|tx| Ok((tx.files(&sid)?, tx.participants(&sid)?))))
        .await?;
    let actor = match &who {
        Party::Customer => Actor::Customer,
        Party::User(p) => {
            let handled = participants
                .iter()
                .any(|x| x.kind == "agent" && x.name == p.name);
            if !(handled || crate::auth::permits(p, Permission::ReadAnySession)) {
                return Err(ApiError::forbidden(
                    "you may read only files of sessions you handled",
                ));
            }
            let reason = stated_reason(p, q.reason.clone())?;
            if !handled && reason.is_none() && !matches!(p.role, Role::Admin) {
                return Err(ApiError::bad_request(
                    "state why you read this file (?reason=...)",
                ));
            }
            Actor::Agent(p.clone())
        }
    };
    let f = files
        .into_iter()
        .find(|f| f.id == file_id)
        .ok_or_else(|| ApiError::not_found("no such file in this session"))?;
    let oid: crate::model::ObjectId = f.object_id.parse().map_err(ApiError::internal)?;
    let keys = app.keys().ok_or_else(ApiError::sealed)?;
    let archive = app.archive.clone();
    let reason = q
        .reason
        .as_deref()
        .map(|r| r.trim().chars().take(500).collect::<String>());
    let data = match app.db(move |s| archive.read_all(s, &keys, oid)).await {
        Ok(d) => d,
        Err(crate::archive::ArchiveError::Shredded(_)) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "shredded",
                "this file was crypto-shredded under a retention policy",
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    app.audit(actor.event(
        &id,
        &src.to_string(),
        "session.file.read",
        json!({ "file_id": f.id, "name": f.name, "reason": reason }),
    ))
    .await?;
    let mut res = Response::new(Body::from(data.to_vec()));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let ascii: String = f
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        "x-content-sha256",
        HeaderValue::from_str(&hex::encode(&f.sha256)).expect("hex is a valid header"),
    );
    Ok(res)
}

// --- the relay socket ----------------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct WsQuery {
    pub(super) customer_token: Option<String>,
}

/// A browser sends its Origin; a page from anywhere else may not ride on the cookies.
pub(super) fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    refuse_other_sites(headers, "cross-origin WebSocket connections are refused")
}

/// Refuses a request a browser sent from any origin but this appliance's own. Browsers say
/// where a request comes from in `Sec-Fetch-Site` (only `same-origin` is ours; `same-site` is
/// another port or subdomain) and, older ones, in `Origin`, which must then be `https://` and
/// the `Host` asked for. Our own pages send `Origin: null` for forms and fetches (their
/// referrer policy is no-referrer), with `Sec-Fetch-Site: same-origin`. Programs send neither
/// header. Used where no credential protects a request yet: logging in (login CSRF), joining
/// by code, and WebSocket handshakes.
pub(super) fn refuse_other_sites(headers: &HeaderMap, message: &str) -> Result<(), ApiError> {
    let text = |h| {
        headers
            .get(h)
            .map(|v: &HeaderValue| v.to_str().unwrap_or("?"))
    };
    let ours = match (text("sec-fetch-site"), text(header::ORIGIN.as_str())) {
        (Some(site), _) => matches!(site, "same-origin" | "none"),
        (None, Some(origin)) => {
            text(header::HOST.as_str()).is_some_and(|h| origin == format!("https://{h}"))
        }
        (None, None) => true,
    };
    if ours {
        Ok(())
    } else {
        Err(ApiError::forbidden(message))
    }
}

async fn ws(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    valid_id(&id)?;
    same_origin(&headers)?;
    let (side, principal) =
        match party(&app, &id, &headers, &method, q.customer_token.as_deref()).await? {
            Party::Customer => (Side::Customer, None),
            Party::User(p) => (Side::Agent, Some(p)),
        };
    // Small buffers: most sessions are idle most of the time, and memory per connected session
    // is what limits how many one appliance holds.
    Ok(upgrade
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(protocol::MAX_FRAME)
        .max_frame_size(protocol::MAX_FRAME)
        .on_upgrade(move |socket| run_socket(app, socket, id, side, principal)))
}

async fn run_socket(
    app: Arc<App>,
    socket: WebSocket,
    id: String,
    side: Side,
    principal: Option<Principal>,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, rx) = mpsc::channel(crate::session::CONN_QUEUE);
    let kill = Arc::new(Notify::new());
    let (room, conn_id, hello) =
        match app
            .sessions
            .attach(&id, side, principal.as_ref(), tx.clone(), kill.clone())
        {
            Ok(a) => a,
            Err(e) => {
                let refusal = protocol::Refusal {
                    code: "refused",
                    message: e.to_string(),
                }
                .to_json();
                let _ = sink.send(Message::Text(refusal.into())).await;
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
    let name = principal
        .as_ref()
        .map_or_else(|| "customer".to_string(), |p| p.name.clone());
    let writer = tokio::spawn(write_loop(sink, rx, kill, hello));
    let mut bucket = RateBucket::new();
    let mut stop = app.stop.subscribe();
    loop {
        let msg = tokio::select! {
            m = stream.next() => match m {
                Some(m) => m,
                None => break,
            },
            _ = stop.wait_for(|s| *s) => {
                let _ = tx.try_send(crate::session::Out::Close(1001, "the appliance is shutting down"));
                break;
            }
        };
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(b)) => {
                app.metrics.relay_message(b.len(), RelayResult::Refused);
                let _ = tx.try_send(crate::session::Out::Text(
                    protocol::Refusal {
                        code: "bad_message",
                        message: "binary frames are not accepted; send files over HTTP".into(),
                    }
                    .to_json()
                    .into(),
                ));
                continue;
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        if !bucket.take() {
            app.metrics
                .relay_message(text.len(), RelayResult::RateLimited);
            let _ = tx.try_send(crate::session::Out::Text(
                protocol::Refusal {
                    code: "rate_limited",
                    message: "too many messages; slow down".into(),
                }
                .to_json()
                .into(),
            ));
            continue;
        }
        let result = match protocol::parse(&text) {
            Ok(m) => room.handle(side, &name, &tx, m).await,
            Err(r) => Err(r),
        };
        let counted = if result.is_ok() {
            RelayResult::Handled
        } else {
            RelayResult::Refused
        };
        app.metrics.relay_message(text.len(), counted);
        if let Err(r) = result {
            let _ = tx.try_send(crate::session::Out::Text(r.to_json().into()));
        }
        if writer.is_finished() {
            break;
        }
    }
    app.sessions.detach(&room, side, conn_id);
    drop(tx);
    let _ = writer.await;
}

/// Sends a connection's queued messages, the first being `hello`, until it is closed, killed
/// (too slow or replaced) or its queue is dropped.
pub(super) async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<crate::session::Out>,
    kill: Arc<Notify>,
    hello: String,
) {
    use crate::session::Out;
    if sink.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => {
                let sent = match out {
                    Some(Out::Text(t)) => sink.send(Message::Text(t.as_ref().into())).await,
                    Some(Out::Binary(b)) => sink.send(Message::Binary(b)).await,
                    Some(Out::Close(code, reason)) => {
                        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                        return;
                    }
                    None => return,
                };
                if sent.is_err() {
                    return;
                }
            }
            _ = kill.notified() => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: 1008, reason: "too slow or replaced".into() }))).await;
                return;
            }
        }
    }
}

/// 20 messages a second with bursts of 40, per connection.
pub(super) struct RateBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: std::time::Instant,
}

impl RateBucket {
    fn new() -> Self {
        Self::with_rate(20.0, 40.0)
    }

    /// `rate` messages a second with bursts of `burst`.
    pub(super) fn with_rate(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            burst,
            rate,
            last: std::time::Instant::now(),
        }
    }

    pub(super) fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
