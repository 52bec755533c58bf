//! The JSON API handlers. Each handler checks its permission through `auth::allowed`, does its
//! work through `App`, and records what it did in the audit log.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ApiError;
use crate::app::{App, Source};
use crate::audit::{self, Event, Outcome};
use crate::auth::{self, AuthError, Permission, Principal};
use crate::metrics::LoginResult;
use crate::model::{Role, UserName, format_rfc3339};

/// The largest request body the API reads.
pub const MAX_BODY: usize = 1024 * 1024;
const SESSION_COOKIE: &str = "custos_session";

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/password", post(change_password))
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}/disable", post(disable_user))
        .route("/api/v1/audit/checkpoint", get(audit_checkpoint))
        .route("/api/v1/audit/entries", get(audit_entries))
        .route("/api/v1/audit/proof", get(audit_proof))
        .route("/api/v1/audit/verify", post(audit_verify))
        .route("/api/v1/audit/verify/{id}", get(audit_verify_status))
        .route("/api/v1/system", get(system_status))
        .route("/api/v1/system/rotate", post(rotate_keys))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/tokens", get(list_tokens).post(new_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
}

/// Key custody, offered only on the Unix socket.
pub fn local_routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/system/unseal", post(unseal))
        .route("/api/v1/system/seal", post(seal))
}

/// The OpenAPI 3 description of this API (src/web/openapi.json), public like the API's existence.
async fn openapi() -> Response {
    const SPEC: &str = include_str!("openapi.json");
    ([(header::CONTENT_TYPE, "application/json")], SPEC).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

pub(super) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

pub(super) fn require(p: &Principal, perm: Permission) -> Result<(), ApiError> {
    if auth::permits(p, perm) {
        Ok(())
    } else if auth::allowed(p.role, perm) {
        Err(ApiError::forbidden(format!(
            "this API token is not scoped for {}",
            perm.scope()
        )))
    } else {
        Err(ApiError::forbidden(format!(
            "the {} role may not do this",
            p.role
        )))
    }
}

pub(super) fn event(
    p: &Principal,
    src: &Source,
    action: &str,
    target: &str,
    details: Value,
) -> Event {
    Event {
        actor: p.name.clone(),
        role: p.role.as_str().into(),
        action: action.into(),
        target: target.into(),
        outcome: Outcome::Success,
        source: src.to_string(),
        details,
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';').find_map(|kv| {
                let (k, val) = kv.trim().split_once('=')?;
                (k == SESSION_COOKIE).then(|| val.to_string())
            })
        })
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// The principal behind a request's bearer token or session cookie, if any. A request that
/// authenticates by cookie and changes something must carry `X-Custos-CSRF: 1`: browsers
/// cannot add custom headers to cross-site requests without a CORS preflight, which is never
/// granted, so a forged cross-site form or fetch fails here.
pub(super) async fn authenticate(
    app: &Arc<App>,
    headers: &HeaderMap,
    method: &axum::http::Method,
) -> Result<Option<Principal>, ApiError> {
    let (token, by_cookie) = match bearer_token(headers) {
        Some(t) => (t, false),
        None => match cookie_token(headers) {
            Some(t) => (t, true),
            None => return Ok(None),
        },
    };
    if by_cookie {
        cookie_change_allowed(headers, method)?;
    }
    let p = app.db(move |s| auth::principal(s, &token)).await?;
    Ok(p)
}

/// The CSRF rule for a request carried by a cookie (the login's or the customer's): a change
/// (any method but GET and HEAD) needs `X-Custos-CSRF: 1`.
pub(super) fn cookie_change_allowed(
    headers: &HeaderMap,
    method: &axum::http::Method,
) -> Result<(), ApiError> {
    let safe = matches!(*method, axum::http::Method::GET | axum::http::Method::HEAD);
    if !safe
        && headers
            .get("x-custos-csrf")
            .is_none_or(|v| v.as_bytes() != b"1")
    {
        return Err(ApiError::forbidden(
            "a cookie-authenticated change needs the header X-Custos-CSRF: 1",
        ));
    }
    Ok(())
}

/// An authenticated request. A user who must change their password may only do that (and read
/// who they are, and log out) until they have.
pub struct Authed(pub Principal);

impl FromRequestParts<Arc<App>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let p = authenticate(app, &parts.headers, &parts.method)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        let path = parts.uri.path();
        if p.must_change_password
            && !matches!(
                path,
                "/api/v1/auth/password" | "/api/v1/auth/logout" | "/api/v1/me"
            )
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "this account must change its password first (POST /api/v1/auth/password)",
            ));
        }
        Ok(Authed(p))
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let sealed = app.is_sealed();
    let body = Json(json!({ "status": if sealed { "sealed" } else { "ok" }, "sealed": sealed }));
    if sealed {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else {
        body.into_response()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    #[serde(alias = "username")]
    name: String,
    password: String,
}

fn session_cookie(token: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    .expect("token characters are valid in a header")
}

async fn login(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Login CSRF: another site must not log a browser in to an account of its choosing.
    super::sessions::refuse_other_sites(&headers, "logging in from another site is refused")?;
    let req: LoginRequest = parse(&body)?;
    // What the caller typed is recorded, but only in a bounded, printable form.
    let shown: String = req
        .name
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let user_key = format!("user:{shown}");
    let ip_key = format!("ip:{src}");
    let base = Event {
        actor: shown.clone(),
        role: "none".into(),
        source: src.to_string(),
        ..Event::system("auth.login", &format!("user:{shown}"), json!({}))
    };
    if let Err(locked) = app.throttle.attempt(&user_key) {
        if locked.first {
            app.audit(
                Event {
                    details: json!({ "reason": "throttled" }),
                    ..base.clone()
                }
                .outcome(Outcome::Denied),
            )
            .await?;
        }
        app.metrics.login(LoginResult::Throttled);
        return Err(AuthError::Throttled(locked.wait).into());
    }
    if let Err(locked) = app.throttle.attempt(&ip_key) {
        app.throttle.forgive_one(&user_key);
        if locked.first {
            app.audit(
                Event {
                    details: json!({ "reason": "throttled address" }),
                    ..base.clone()
                }
                .outcome(Outcome::Denied),
            )
            .await?;
        }
        app.metrics.login(LoginResult::Throttled);
        return Err(AuthError::Throttled(locked.wait).into());
    }
    let name = req.name.clone();
    let user = app.db(move |s| s.read(|tx| tx.user_by_name(&name))).await?;
    // argon2id runs on the blocking pool, outside the database lock.
    let checked = tokio::task::spawn_blocking(move || auth::check_login(user, &req.password))
        .await
        .map_err(ApiError::internal)?;
    match checked {
        Ok(user) => {
            app.metrics.login(LoginResult::Ok);
            app.throttle.success(&user_key);
            app.throttle.forgive_one(&ip_key);
            let (ttl, uid) = (app.config.session_ttl_s, user.id);
            let ev = Event {
                role: user.role.as_str().into(),
                ..base
            };
            let (token, expires) = app
                .db(move |s| {
                    let issued = auth::issue_token(s, uid, "session", ttl)?;
                    crate::audit::append(s, &[ev]).map_err(|e| {
                        AuthError::Store(crate::store::StoreError::Conflict(e.to_string()))
                    })?;
                    Ok::<_, AuthError>(issued)
                })
                .await?;
            let expires_at = time::OffsetDateTime::from_unix_timestamp(expires)
                .map(format_rfc3339)
                .unwrap_or_default();
            let body = json!({
                "token": token,
                "expires_at": expires_at,
                "user": { "name": user.name, "role": user.role },
                "password_change_required": user.must_change_password,
            });
            let mut res = Json(body).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&token, ttl));
            Ok(res)
        }
        Err(AuthError::BadCredentials) => {
            app.metrics.login(LoginResult::Denied);
            app.audit(
                Event {
                    details: json!({ "reason": "bad credentials" }),
                    ..base
                }
                .outcome(Outcome::Denied),
            )
            .await?;
            // A fixed pause on every failure, on top of the lock-out, slows guessing further.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            Err(AuthError::BadCredentials.into())
        }
        Err(e) => Err(e.into()),
    }
}

async fn logout(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
) -> Result<Response, ApiError> {
    let h = p.token_hash;
    let ev = event(
        &p,
        &src,
        "auth.logout",
        &format!("user:{}", p.name),
        json!({}),
    );
    app.db(move |s| {
        s.write(|tx| {
            tx.token_delete(&h)?;
            audit::append_tx(tx, &[ev])
        })
    })
    .await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    Ok(res)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: PasswordChange = parse(&body)?;
    auth::check_password_policy(&req.new_password)?;
    if req.new_password == req.current_password {
        return Err(AuthError::WeakPassword(
            "the new password must differ from the current one".into(),
        )
        .into());
    }
    let key = format!("user:{}", p.name);
    if let Err(locked) = app.throttle.attempt(&key) {
        return Err(ApiError::throttled(locked.wait));
    }
    let (name, uid, ttl) = (p.name.clone(), p.user_id, app.config.session_ttl_s);
    let user = app.db(move |s| s.read(|tx| tx.user_by_name(&name))).await?;
    let checked = tokio::task::spawn_blocking(move || {
        auth::check_login(user, &req.current_password)
            .map(|_| crate::crypto::hash_password(&req.new_password))
    })
    .await
    .map_err(ApiError::internal)?;
    let target = format!("user:{}", p.name);
    match checked {
        Ok(hash) => {
            app.throttle.success(&key);
            let ev = event(&p, &src, "user.password_changed", &target, json!({}));
            let (token, _) = app
                .db(move |s| {
                    s.write(|tx| {
                        tx.user_set_password(uid, &hash, false)?;
                        tx.tokens_delete_for_user(uid)?;
                        audit::append_tx(tx, &[ev])
                    })?;
                    auth::issue_token(s, uid, "session", ttl)
                })
                .await?;
            let mut res =
                Json(json!({ "token": token, "password_change_required": false })).into_response();
            res.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&token, ttl));
            Ok(res)
        }
        Err(AuthError::BadCredentials) => {
            app.audit(
                event(
                    &p,
                    &src,
                    "user.password_changed",
                    &target,
                    json!({ "reason": "wrong current password" }),
                )
                .outcome(Outcome::Denied),
            )
            .await?;
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "bad_credentials",
                "the current password is wrong",
            ))
        }
        Err(e) => Err(e.into()),
    }
}

async fn me(Authed(p): Authed) -> Json<Value> {
    Json(
        json!({ "name": p.name, "role": p.role, "password_change_required": p.must_change_password }),
    )
}

async fn list_users(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageUsers)?;
    let users = app.db(|s| s.read(|tx| tx.users())).await?;
    let list: Vec<Value> = users
        .into_iter()
        .map(|u| json!({ "name": u.name, "role": u.role, "disabled": u.disabled, "password_change_required": u.must_change_password, "created_at": u.created_at }))
        .collect();
    Ok(Json(json!({ "users": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
    password: Option<String>,
}

async fn create_user(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    require(&p, Permission::ManageUsers)?;
    let req: NewUser = parse(&body)?;
    let name: UserName = req
        .name
        .parse()
        .map_err(|e: crate::model::ParseError| ApiError::bad_request(e.to_string()))?;
    let role: Role = req
        .role
        .parse()
        .map_err(|e: crate::model::ParseError| ApiError::bad_request(e.to_string()))?;
    let (password, one_time) = match req.password {
        Some(pw) => {
            auth::check_password_policy(&pw)?;
            (pw, false)
        }
        None => (auth::generate_password(), true),
    };
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || crate::crypto::hash_password(&pw))
        .await
        .map_err(ApiError::internal)?;
    let (n, now) = (name.to_string(), crate::model::now_rfc3339());
    let ev = event(
        &p,
        &src,
        "user.created",
        &format!("user:{name}"),
        json!({ "role": role, "one_time_password": one_time }),
    );
    app.db(move |s| {
        s.write(|tx| {
            tx.user_insert(&n, role, &hash, one_time, &now)?;
            audit::append_tx(tx, &[ev])
        })
    })
    .await?;
    let mut body =
        json!({ "name": name.as_str(), "role": role, "password_change_required": one_time });
    if one_time {
        body["one_time_password"] = json!(password);
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn disable_user(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageUsers)?;
    if name == p.name {
        return Err(ApiError::conflict("you cannot disable your own account"));
    }
    let n = name.clone();
    let ev = event(
        &p,
        &src,
        "user.disabled",
        &format!("user:{name}"),
        json!({}),
    );
    app.db(move |s| {
        s.write(|tx| {
            let user = tx
                .user_by_name(&n)?
                .ok_or_else(|| crate::store::StoreError::NotFound(format!("user {n:?}")))?;
            if user.role == Role::Admin && !user.disabled && tx.count_admins()? <= 1 {
                return Err(crate::store::StoreError::Conflict(
                    "the last enabled admin cannot be disabled".into(),
                ));
            }
            tx.user_set_disabled(&n, true)?;
            audit::append_tx(tx, &[ev])
        })
    })
    .await?;
    Ok(Json(json!({ "name": name, "disabled": true })))
}

/// Starts verifying the whole audit log (or returns the verification already running); poll
/// `GET /api/v1/audit/verify/{id}` for its progress and result.
async fn audit_verify(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
) -> Result<Response, ApiError> {
    require(&p, Permission::ReadAudit)?;
    let (job, started) = app
        .audit_jobs
        .start(app.dir.db_path(), app.dir.vkey_path(), &p.name);
    if started {
        app.audit(event(
            &p,
            &src,
            "audit.verify.started",
            "audit",
            json!({ "job": job.id }),
        ))
        .await?;
    }
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

async fn audit_verify_status(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadAudit)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request("the job id must be a number"))?;
    let job = app
        .audit_jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found("no such verification (only the latest is kept)"))?;
    Ok(Json(serde_json::to_value(job).expect("a job serializes")))
}

async fn audit_checkpoint(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadAudit)?;
    let (latest, vkey) = app
        .db(|s| s.read(|tx| Ok((tx.checkpoint_latest()?, tx.meta_get("checkpoint_vkey")?))))
        .await?;
    let Some((size, note)) = latest else {
        return Err(ApiError::not_found("no checkpoint has been written yet"));
    };
    Ok(Json(json!({ "size": size, "note": note, "vkey": vkey })))
}

#[derive(Deserialize)]
struct EntriesQuery {
    from: Option<u64>,
    limit: Option<u32>,
    /// The newest entries whose action starts with this (`alert.`, `session.read`).
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
}

async fn audit_entries(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Query(q): Query<EntriesQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadAudit)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    if q.from.is_some_and(|f| f > i64::MAX as u64) {
        return Err(ApiError::bad_request("from is beyond any audit log"));
    }
    let filtered = q.action.is_some() || q.actor.is_some() || q.target.is_some();
    if filtered && q.from.is_some() {
        return Err(ApiError::bad_request(
            "action, actor and target filter the newest entries; they cannot be combined with from",
        ));
    }
    let rows = app
        .db(move |s| {
            s.read(|tx| match q.from {
                None => tx.audit_tail_where(
                    limit,
                    q.action.as_deref(),
                    q.actor.as_deref(),
                    q.target.as_deref(),
                ),
                Some(from) => {
                    let mut out = Vec::new();
                    tx.audit_scan(from, |r| {
                        out.push(r);
                        Ok(out.len() < limit as usize)
                    })?;
                    Ok(out)
                }
            })
        })
        .await?;
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| match audit::decode(r) {
            Ok(e) => serde_json::to_value(e).unwrap_or(Value::Null),
            Err(problem) => json!({ "seq": r.seq, "unreadable": problem }),
        })
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// The user the token acts as (an agent for agent-scoped integrations, or an account made for
    /// the integration).
    user: String,
    name: String,
    /// Permission scopes (e.g. read_any_session); absent: everything the user's role allows.
    scopes: Option<Vec<String>>,
    #[serde(default = "ninety")]
    days: i64,
}

fn ninety() -> i64 {
    90
}

/// Issues an API token for an integration; shown once.
async fn new_token(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    require(&p, Permission::ManageUsers)?;
    let req: NewToken = parse(&body)?;
    if !(1..=730).contains(&req.days) {
        return Err(ApiError::bad_request("days must be 1 to 730"));
    }
    if req.name.trim().is_empty() || req.name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be 1-100 characters"));
    }
    let scopes = match &req.scopes {
        None => None,
        Some(list) => {
            for s in list {
                if auth::Permission::from_scope(s).is_none() {
                    return Err(ApiError::bad_request(format!("unknown scope {s:?}")));
                }
            }
            Some(serde_json::to_string(list).expect("strings serialize"))
        }
    };
    let (user, name, days) = (req.user.clone(), req.name.clone(), req.days);
    let ev = event(
        &p,
        &src,
        "token.issued",
        &format!("user:{user}"),
        json!({ "name": name, "scopes": req.scopes, "days": days }),
    );
    let token = app
        .db(move |s| {
            let uid = s
                .read(|tx| tx.user_by_name(&user))?
                .filter(|u| !u.disabled)
                .ok_or_else(|| crate::store::StoreError::NotFound(format!("user {user:?}")))?
                .id;
            let (token, _) = auth::issue_token(s, uid, "api", days * 86_400)
                .map_err(|e| crate::store::StoreError::Conflict(e.to_string()))?;
            s.write(|tx| {
                tx.token_describe(&auth::hash_token(&token), &name, scopes.as_deref())?;
                audit::append_tx(tx, &[ev])
            })?;
            Ok::<_, crate::store::StoreError>(token)
        })
        .await?;
    let id = hex::encode(&auth::hash_token(&token)[..8]);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "id": id })),
    )
        .into_response())
}

async fn list_tokens(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageUsers)?;
    let now = crate::model::unix_now();
    let rows = app.db(move |s| s.read(|tx| tx.api_tokens(now))).await?;
    let tokens: Vec<Value> = rows
        .into_iter()
        .map(|t| {
            let expires_at = time::OffsetDateTime::from_unix_timestamp(t.expires_at).map(format_rfc3339).unwrap_or_default();
            json!({ "id": t.id, "user": t.user, "name": t.name, "scopes": t.scopes.and_then(|s| serde_json::from_str::<Value>(&s).ok()), "expires_at": expires_at })
        })
        .collect();
    Ok(Json(json!({ "tokens": tokens })))
}

async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&p, Permission::ManageUsers)?;
    let ev = event(&p, &src, "token.revoked", &format!("token:{id}"), json!({}));
    let done = app
        .db(move |s| {
            s.write(|tx| {
                let n = tx.api_token_revoke(&id.to_ascii_lowercase())?;
                if n {
                    audit::append_tx(tx, &[ev])?;
                }
                Ok(n)
            })
        })
        .await?;
    if done {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such API token"))
    }
}

#[derive(Deserialize)]
struct ProofQuery {
    /// An inclusion proof for this entry…
    seq: Option<u64>,
    /// …or a consistency proof from this tree size…
    from: Option<u64>,
    /// …to this one (default: the newest checkpoint's size).
    size: Option<u64>,
}

/// Inclusion and consistency proofs against a signed checkpoint, for auditors and exports.
async fn audit_proof(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Query(q): Query<ProofQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadAudit)?;
    let v = app
        .db(move |s| {
            s.read(|tx| {
                let size = match q.size {
                    Some(n) => n,
                    None => tx.checkpoint_latest()?.map(|c| c.0).ok_or_else(|| crate::store::StoreError::NotFound("a checkpoint".into()))?,
                };
                let note = tx.checkpoints()?.into_iter().find(|c| c.0 == size).map(|c| c.1);
                let b64 = |h: &[u8; 32]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, h);
                match (q.seq, q.from) {
                    (Some(seq), None) => {
                        let proof = audit::inclusion_proof(tx, seq, size)?;
                        let leaf = tx.audit_node(0, seq)?;
                        Ok(json!({ "seq": seq, "size": size, "leaf_hash": b64(&leaf), "proof": proof.iter().map(b64).collect::<Vec<_>>(), "checkpoint": note }))
                    }
                    (None, Some(from)) => {
                        let proof = audit::consistency_proof(tx, from, size)?;
                        Ok(json!({ "from": from, "size": size, "proof": proof.iter().map(b64).collect::<Vec<_>>(), "checkpoint": note }))
                    }
                    _ => Err(crate::store::StoreError::Conflict("give either seq (inclusion) or from (consistency)".into())),
                }
            })
        })
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => ApiError::bad_request(m),
            other => other.into(),
        })?;
    Ok(Json(v))
}

async fn system_status(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ReadSystem)?;
    let now = time::OffsetDateTime::now_utc();
    // Today starts at midnight UTC; a bare date-time sorts before every stored time of that second.
    let midnight = format_rfc3339(now)
        .get(..10)
        .unwrap_or_default()
        .to_string()
        + "T00:00:00";
    let since = midnight.clone();
    let sinks: Vec<String> = app
        .config
        .integrations
        .syslog
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let (size, epoch, counts, today, vkey, work) = app
        .db(move |s| {
            s.read(|tx| {
                let sweep = tx
                    .audit_tail_where(1, Some("retention.sweep"), None, None)?
                    .first()
                    .and_then(|r| audit::decode(r).ok());
                let cursors = sinks
                    .iter()
                    .map(|n| Ok((n.clone(), tx.forward_cursor(n)?.0)))
                    .collect::<crate::store::Result<Vec<_>>>()?;
                Ok((
                    tx.audit_size()?,
                    tx.kek_current()?,
                    tx.counts()?,
                    tx.day_counts(&since)?,
                    tx.meta_get("checkpoint_vkey")?,
                    Background {
                        sweep,
                        webhooks: tx.webhooks(false)?.len(),
                        deliveries: tx.delivery_counts()?,
                        cursors,
                    },
                ))
            })
        })
        .await?;
    let services = services(&app, size, &counts, work);
    let mode = app
        .dir
        .master_files()
        .mode()
        .map(|m| format!("{m:?}"))
        .unwrap_or_else(|e| e.to_string());
    let archive_bytes: u64 = counts
        .objects
        .iter()
        .filter(|(state, _, _)| state != "shredded")
        .map(|(_, _, bytes)| bytes)
        .sum();
    let archive_objects: u64 = counts
        .objects
        .iter()
        .filter(|(state, _, _)| state != "shredded")
        .map(|(_, n, _)| n)
        .sum();
    let db = app.dir.db_path();
    let file_len = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let database_bytes = file_len(&db) + file_len(&db.with_extension("db-wal"));
    let disk = rustix::fs::statvfs(app.dir.root()).ok().map(|v| {
        json!({
            "total_bytes": v.f_blocks.saturating_mul(v.f_frsize),
            "free_bytes": v.f_bavail.saturating_mul(v.f_frsize),
        })
    });
    Ok(Json(json!({
        "appliance_id": app.appliance_id,
        "version": env!("CARGO_PKG_VERSION"),
        "sealed": app.is_sealed(),
        "unseal_mode": mode,
        "tls_fingerprint_sha256": app.fingerprint,
        "kek_epoch": epoch,
        "audit_entries": size,
        "latest_checkpoint_size": counts.checkpoint.as_ref().map(|c| c.0),
        "latest_checkpoint": counts.checkpoint.map(|(size, at)| json!({ "size": size, "created_at": at, "vkey": vkey })),
        "holds_active": counts.holds_active,
        "storage": {
            "archive_objects": archive_objects,
            "archive_bytes": archive_bytes,
            "database_bytes": database_bytes,
            "disk": disk,
        },
        "today": { "since": format!("{midnight}Z"), "sessions": today },
        "services": services,
    })))
}

/// What the database says about the background services.
struct Background {
    /// The latest retention sweep's audit entry.
    sweep: Option<audit::Entry>,
    webhooks: usize,
    /// Outbox rows by state.
    deliveries: Vec<(String, u64)>,
    /// Each syslog sink's next audit seq to forward.
    cursors: Vec<(String, u64)>,
}

/// What the appliance runs besides answering requests, each with its state and a line on it.
fn services(
    app: &App,
    audit_size: u64,
    counts: &crate::store::StoreCounts,
    Background {
        sweep,
        webhooks,
        deliveries,
        cursors,
    }: Background,
) -> Vec<Value> {
    let sealed = app.is_sealed();
    let running = if sealed { "stopped" } else { "running" };
    let service = |name: &str, state: &str, detail: String| json!({ "name": name, "state": state, "detail": detail });
    let in_state = |s: &str| {
        deliveries
            .iter()
            .find(|(st, _)| st == s)
            .map_or(0, |(_, n)| *n)
    };
    let i = &app.config.integrations;
    let mut out = vec![
        service(
            "https",
            "running",
            format!("listening on {}", app.config.listen),
        ),
        service(
            "checkpoints",
            running,
            counts.checkpoint.as_ref().map_or(
                "every 5 s while the log grows; none written yet".into(),
                |(size, at)| {
                    format!(
                        "every 5 s while the log grows; latest at size {size}, {}",
                        at.get(..19).unwrap_or(at).replace('T', " ")
                    )
                },
            ),
        ),
        service(
            "retention sweep",
            running,
            sweep.map_or("hourly; not run yet".into(), |e| {
                format!(
                    "hourly; last {}: {} shredded, {} held",
                    e.time.get(..16).unwrap_or(&e.time).replace('T', " "),
                    e.details["shredded"],
                    e.details["held"]
                )
            }),
        ),
        service(
            "webhooks",
            if webhooks == 0 { "off" } else { running },
            format!(
                "{webhooks} endpoints; {} pending, {} given up",
                in_state("pending"),
                in_state("failed")
            ),
        ),
        match &i.smtp {
            Some(m) => service(
                "e-mail",
                running,
                format!("alerts to {} via {}", i.alerts.email_to.len(), m.server),
            ),
            None => service("e-mail", "off", "no [smtp] server configured".into()),
        },
    ];
    for (name, next) in cursors {
        let sink = i.syslog.iter().find(|s| s.name == name);
        out.push(service(
            &format!("syslog {name}"),
            running,
            format!(
                "to {}; {} audit entries to forward",
                sink.map_or("", |s| s.address.as_str()),
                audit_size.saturating_sub(next)
            ),
        ));
    }
    out.push(match &i.knowledge_dir {
        Some(d) => service(
            "knowledge base",
            "running",
            format!("articles from {}", d.display()),
        ),
        None => service("knowledge base", "off", "API articles only".into()),
    });
    out
}

/// Starts a new key-encryption-key epoch and re-wraps every data key under it (admins; one
/// rotation at a time). The data itself is not re-encrypted: only the keys that wrap its keys.
async fn rotate_keys(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageKeys)?;
    let keys = app.keys().ok_or_else(ApiError::sealed)?;
    let _one = app
        .rotating
        .try_lock()
        .map_err(|_| ApiError::conflict("a key rotation is already running"))?;
    let db = app.dir.db_path();
    let report = tokio::task::spawn_blocking(move || {
        let mut store = crate::store::Store::open(&db)?;
        keys.rotate(&mut store, &format_rfc3339(time::OffsetDateTime::now_utc()))
    })
    .await
    .map_err(ApiError::internal)??;
    let details = json!({ "new_epoch": report.new_epoch, "rewrapped": report.rewrapped, "retired_epochs": report.retired });
    app.audit(event(&p, &src, "keys.rotated", "keys", details.clone()))
        .await?;
    Ok(Json(details))
}

/// Prometheus metrics (docs/api.md lists them): for admins and compliance officers, or for an API
/// token with the `read_system` scope, which is what a scraper should hold.
async fn metrics(State(app): State<Arc<App>>, Authed(p): Authed) -> Result<Response, ApiError> {
    use crate::metrics::{CONTENT_TYPE, Exposition, Kind};
    require(&p, Permission::ReadSystem)?;
    let (audit_size, counts, epoch) = app
        .db(|s| s.read(|tx| Ok((tx.audit_size()?, tx.counts()?, tx.kek_current()?))))
        .await?;
    let mut out = Exposition::default();
    out.family("custos_info", Kind::Gauge, "The running version; always 1.");
    out.sample("custos_info", &[("version", env!("CARGO_PKG_VERSION"))], 1);
    app.metrics.write(&mut out);

    let queues = app.sessions.queues_view(&app.config.portals);
    for (name, field, help) in [
        (
            "custos_queue_waiting",
            "waiting",
            "Requests waiting for an agent, by portal and skill.",
        ),
        (
            "custos_queue_longest_wait_seconds",
            "longest_wait_s",
            "How long the oldest waiting request has waited, by portal and skill.",
        ),
    ] {
        out.family(name, Kind::Gauge, help);
        for q in &queues {
            let label = |k: &str| q[k].as_str().unwrap_or_default().to_string();
            let (portal, skill) = (label("portal"), label("skill"));
            out.sample(
                name,
                &[("portal", &portal), ("skill", &skill)],
                q[field].as_u64().unwrap_or(0),
            );
        }
    }
    let agents = app.sessions.agents_view();
    out.family(
        "custos_agents",
        Kind::Gauge,
        "Agents known to this process, by presence.",
    );
    for status in ["available", "busy", "away", "offline"] {
        let n = agents.iter().filter(|a| a["status"] == status).count();
        out.sample("custos_agents", &[("status", status)], n);
    }

    let grouped = |rows: &[(String, u64, u64)], key: &str| {
        rows.iter()
            .find(|r| r.0 == key)
            .map_or((0, 0), |r| (r.1, r.2))
    };
    out.family(
        "custos_sessions",
        Kind::Gauge,
        "Sessions in the database, by status.",
    );
    for status in ["waiting", "active", "ended", "cancelled"] {
        out.sample(
            "custos_sessions",
            &[("status", status)],
            grouped(&counts.sessions, status).0,
        );
    }
    const STATES: [&str; 4] = ["open", "sealed", "truncated", "shredded"];
    out.family(
        "custos_archive_objects",
        Kind::Gauge,
        "Archive objects, by state.",
    );
    for state in STATES {
        out.sample(
            "custos_archive_objects",
            &[("state", state)],
            grouped(&counts.objects, state).0,
        );
    }
    out.family(
        "custos_archive_bytes",
        Kind::Gauge,
        "Ciphertext bytes of closed archive objects, by state.",
    );
    for state in STATES {
        out.sample(
            "custos_archive_bytes",
            &[("state", state)],
            grouped(&counts.objects, state).1,
        );
    }
    out.single(
        "custos_legal_holds_active",
        Kind::Gauge,
        "Legal holds placed and not released.",
        counts.holds_active,
    );
    out.single(
        "custos_audit_entries",
        Kind::Gauge,
        "Entries in the audit log.",
        audit_size,
    );
    out.single(
        "custos_audit_checkpoint_size",
        Kind::Gauge,
        "Tree size of the latest signed checkpoint (0 before the first).",
        counts.checkpoint.as_ref().map_or(0, |c| c.0),
    );
    if let Some(t) = counts
        .checkpoint
        .as_ref()
        .and_then(|c| crate::model::parse_time(&c.1).ok())
    {
        out.family(
            "custos_audit_checkpoint_age_seconds",
            Kind::Gauge,
            "Seconds since the latest signed checkpoint was made.",
        );
        let age = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
        out.sample("custos_audit_checkpoint_age_seconds", &[], age);
    }
    out.single(
        "custos_kek_epoch",
        Kind::Gauge,
        "The current key-encryption-key epoch.",
        epoch.unwrap_or(0),
    );
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        out.finish(),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Passphrase {
    passphrase: Option<String>,
}

async fn unseal(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Passphrase = parse(&body)?;
    let p = req
        .passphrase
        .ok_or_else(|| ApiError::bad_request("passphrase is required"))?;
    app.unseal(p, &src).await?;
    Ok(Json(json!({ "sealed": false })))
}

async fn seal(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: Passphrase = if body.is_empty() {
        Passphrase { passphrase: None }
    } else {
        parse(&body)?
    };
    app.seal(req.passphrase, &src).await?;
    Ok(Json(json!({ "sealed": true })))
}
