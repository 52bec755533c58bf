//! Integrations over HTTP: webhook endpoints and their delivery log, and the knowledge base
//! (articles, search, suggestions for a live session, pushing an article into its chat).

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
use crate::integrations::{self, EVENT_TYPES, kb, now_ms};
use crate::model::now_rfc3339;
use crate::session::protocol::{ClientMsg, MAX_CHAT_CHARS};
use crate::store::KbArticle;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/api/v1/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/api/v1/webhooks/{id}",
            axum::routing::delete(delete_webhook),
        )
        .route("/api/v1/deliveries", get(list_deliveries))
        .route("/api/v1/deliveries/{id}/retry", post(retry_delivery))
        .route("/api/v1/kb/articles", get(list_articles))
        .route(
            "/api/v1/kb/articles/{slug}",
            get(get_article).put(put_article).delete(delete_article),
        )
        .route("/api/v1/kb/search", get(search))
        .route("/api/v1/sessions/{id}/suggestions", get(suggestions))
        .route("/api/v1/sessions/{id}/kb/{slug}/push", post(push_article))
}

// --- webhooks ------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    events: Vec<String>,
    #[serde(default)]
    description: String,
}

async fn create_webhook(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    require(&p, Permission::ManageIntegrations)?;
    let req: NewWebhook = parse(&body)?;
    integrations::http::parse_url(&req.url).map_err(ApiError::bad_request)?;
    if req.url.len() > 2000 {
        return Err(ApiError::bad_request("url must be at most 2000 characters"));
    }
    if req.events.is_empty() {
        return Err(ApiError::bad_request(format!(
            "events must name at least one of {} (or \"*\")",
            EVENT_TYPES.join(", ")
        )));
    }
    for e in &req.events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown event {e:?}; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
    }
    if req.description.chars().count() > 200 {
        return Err(ApiError::bad_request(
            "description must be at most 200 characters",
        ));
    }
    let secret = format!("whsec_{}", hex::encode(crate::crypto::random_array::<32>()));
    let (url, events, desc, by, sec) = (
        req.url.clone(),
        req.events.clone(),
        req.description.clone(),
        p.name.clone(),
        secret.clone(),
    );
    let ev_details = json!({ "url": url, "events": events });
    let (p2, src2) = (p.clone(), src.clone());
    let id = app
        .db(move |s| {
            s.write(|tx| {
                let id = tx.webhook_insert(&url, &events, &sec, &desc, &by, &now_rfc3339())?;
                audit::append_tx(
                    tx,
                    &[event(
                        &p2,
                        &src2,
                        "webhook.created",
                        &format!("webhook:{id}"),
                        ev_details,
                    )],
                )?;
                Ok(id)
            })
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id, "url": req.url, "events": req.events, "description": req.description,
            "secret": secret,
        })),
    )
        .into_response())
}

async fn list_webhooks(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageIntegrations)?;
    let hooks = app.db(|s| s.read(|tx| tx.webhooks(false))).await?;
    Ok(Json(
        json!({ "webhooks": hooks, "event_types": EVENT_TYPES }),
    ))
}

fn parse_id(s: &str, what: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::bad_request(format!("{what} must be a positive integer")))
}

async fn delete_webhook(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&p, Permission::ManageIntegrations)?;
    let id = parse_id(&id, "the webhook id")?;
    let ev = event(
        &p,
        &src,
        "webhook.deleted",
        &format!("webhook:{id}"),
        json!({}),
    );
    let done = app
        .db(move |s| {
            s.write(|tx| {
                let done = tx.webhook_delete(id, &now_rfc3339())?;
                if done {
                    audit::append_tx(tx, &[ev])?;
                }
                Ok(done)
            })
        })
        .await?;
    if done {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such webhook"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryQuery {
    webhook: Option<String>,
    channel: Option<String>,
    state: Option<String>,
    before: Option<String>,
    limit: Option<u32>,
}

fn delivery_json(d: &crate::store::DeliveryRow) -> Value {
    let t = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map(crate::model::format_rfc3339)
            .unwrap_or_default()
    };
    json!({
        "id": d.id, "channel": d.channel, "event_id": d.event_id, "event": d.event,
        "state": d.state, "attempts": d.attempts, "created_at": t(d.created_ms),
        "next_attempt_at": (d.state == "pending").then(|| t(d.next_ms)),
        "last_status": d.last_status, "last_error": d.last_error,
        "finished_at": d.done_ms.map(t),
    })
}

/// The delivery log, newest first, pageable with `before`.
async fn list_deliveries(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageIntegrations)?;
    let channel = match (q.webhook, q.channel) {
        (Some(w), None) => Some(format!("webhook:{}", parse_id(&w, "webhook")?)),
        (None, Some(c)) if c == "email" || c.starts_with("webhook:") => Some(c),
        (None, Some(c)) => {
            return Err(ApiError::bad_request(format!(
                "channel {c:?} must be \"email\" or \"webhook:ID\""
            )));
        }
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give webhook or channel, not both"));
        }
    };
    if let Some(st) = &q.state
        && !["pending", "delivered", "failed"].contains(&st.as_str())
    {
        return Err(ApiError::bad_request(
            "state must be pending, delivered or failed",
        ));
    }
    let before = q
        .before
        .as_deref()
        .map(|b| parse_id(b, "before"))
        .transpose()?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 1000"));
    }
    let state = q.state.clone();
    let rows = app
        .db(move |s| {
            s.read(|tx| tx.deliveries(channel.as_deref(), state.as_deref(), before, limit))
        })
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| d.id.to_string()))
        .flatten();
    Ok(Json(json!({
        "deliveries": rows.iter().map(delivery_json).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

async fn retry_delivery(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageIntegrations)?;
    let id = parse_id(&id, "the delivery id")?;
    let ev = event(
        &p,
        &src,
        "delivery.retried",
        &format!("delivery:{id}"),
        json!({}),
    );
    let row = app
        .db(move |s| {
            s.write(|tx| {
                if !tx.delivery_retry(id, now_ms())? {
                    return Ok(None);
                }
                audit::append_tx(tx, &[ev])?;
                tx.delivery_get(id)
            })
        })
        .await?;
    match row {
        Some(d) => {
            integrations::outbox::wake();
            Ok(Json(delivery_json(&d)))
        }
        None => Err(ApiError::not_found("no such delivery waiting or failed")),
    }
}

// --- knowledge base -------------------------------------------------------------------------------

fn article_json(a: &KbArticle, with_body: bool) -> Value {
    let mut v = json!({
        "slug": a.slug, "title": a.title, "tags": a.tags, "source": a.source, "push_url": a.push_url,
        "rules": a.rules.iter().map(|(p, b)| json!({ "package": p, "below": b })).collect::<Vec<_>>(),
        "updated_at": a.updated_at,
    });
    if with_body {
        v["body"] = json!(a.body);
    }
    v
}

/// Whoever handles sessions reads articles; admins manage them.
fn may_read_kb(p: &crate::auth::Principal) -> Result<(), ApiError> {
    require(p, Permission::HandleSessions)
}

async fn list_articles(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
) -> Result<Json<Value>, ApiError> {
    may_read_kb(&p)?;
    let list = app.db(|s| s.read(|tx| tx.kb_list())).await?;
    Ok(Json(
        json!({ "articles": list.iter().map(|a| article_json(a, false)).collect::<Vec<_>>() }),
    ))
}

async fn get_article(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    may_read_kb(&p)?;
    let a = app
        .db(move |s| s.read(|tx| tx.kb_get(&slug)))
        .await?
        .ok_or_else(|| ApiError::not_found("no such article"))?;
    Ok(Json(article_json(&a, true)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleIn {
    package: String,
    below: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArticleIn {
    title: String,
    body: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    rules: Vec<RuleIn>,
    push_url: Option<String>,
}

async fn put_article(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(slug): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::ManageIntegrations)?;
    if !kb::valid_slug(&slug) {
        return Err(ApiError::bad_request(
            "the slug must be 1-80 characters of a-z, 0-9, '-' or '_'",
        ));
    }
    let a: ArticleIn = parse(&body)?;
    if a.title.trim().is_empty() || a.title.chars().count() > 200 {
        return Err(ApiError::bad_request("title must be 1-200 characters"));
    }
    if a.body.len() > kb::MAX_ARTICLE_BYTES {
        return Err(ApiError::bad_request(format!(
            "body must be at most {} bytes",
            kb::MAX_ARTICLE_BYTES
        )));
    }
    if let Some(u) = &a.push_url {
        integrations::http::parse_url(u)
            .map_err(|e| ApiError::bad_request(format!("push_url: {e}")))?;
    }
    let mut rules = Vec::new();
    for r in &a.rules {
        rules.extend(
            kb::parse_rules(&format!("{} < {}", r.package, r.below))
                .map_err(ApiError::bad_request)?,
        );
    }
    let article = KbArticle {
        slug: slug.clone(),
        title: a.title.trim().to_string(),
        body: a.body,
        tags: a
            .tags
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
        source: "api".into(),
        push_url: a.push_url,
        rules,
        updated_at: now_rfc3339(),
    };
    let ev = event(
        &p,
        &src,
        "kb.article.saved",
        &format!("kb:{slug}"),
        json!({ "title": article.title }),
    );
    let out = article_json(&article, true);
    app.db(move |s| {
        s.write(|tx| {
            tx.kb_upsert(&article)?;
            audit::append_tx(tx, &[ev]).map(|_| ())
        })
    })
    .await?;
    Ok(Json(out))
}

async fn delete_article(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Authed(p): Authed,
    Path(slug): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&p, Permission::ManageIntegrations)?;
    let ev = event(
        &p,
        &src,
        "kb.article.deleted",
        &format!("kb:{slug}"),
        json!({}),
    );
    let done = app
        .db(move |s| {
            s.write(|tx| {
                let done = tx.kb_delete(&slug)?;
                if done {
                    audit::append_tx(tx, &[ev])?;
                }
                Ok(done)
            })
        })
        .await?;
    if done {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such article"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: String,
}

async fn search(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    may_read_kb(&p)?;
    if q.q.chars().count() > 500 {
        return Err(ApiError::bad_request("q must be at most 500 characters"));
    }
    let Some(query) = kb::fts_query(&q.q) else {
        return Ok(Json(json!({ "results": [] })));
    };
    let rows = app
        .db(move |s| s.read(|tx| tx.kb_search(&query, 20)))
        .await?;
    let results: Vec<Value> = rows
        .into_iter()
        .map(|(slug, title, snippet)| json!({ "slug": slug, "title": title, "snippet": snippet }))
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// Articles for the agent of a live session: from the customer's words and, by version rules,
/// from the installed packages in the session's diagnostics.
async fn suggestions(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::HandleSessions)?;
    let (words, packages) = app.sessions.suggestion_inputs(&id, &p)?;
    let list = kb::suggest(&app, words, packages).await?;
    Ok(Json(json!({ "suggestions": list })))
}

/// Sends an article into the session's chat as the agent: its link when it has one to push,
/// otherwise its title and text.
async fn push_article(
    State(app): State<Arc<App>>,
    Authed(p): Authed,
    Path((id, slug)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require(&p, Permission::HandleSessions)?;
    let a = app
        .db(move |s| s.read(|tx| tx.kb_get(&slug)))
        .await?
        .ok_or_else(|| ApiError::not_found("no such article"))?;
    let msg = match &a.push_url {
        Some(url) => ClientMsg::Url {
            url: url.clone(),
            title: Some(a.title.clone()),
        },
        None => {
            // The body may open with the title as its heading; the chat shows it once.
            let body = a
                .body
                .strip_prefix(&format!("# {}", a.title))
                .map_or(a.body.as_str(), str::trim_start);
            let mut text = format!("{}\n\n{}", a.title, body);
            if text.chars().count() > MAX_CHAT_CHARS {
                text = text.chars().take(MAX_CHAT_CHARS - 1).collect::<String>() + "…";
            }
            ClientMsg::Chat { text, id: None }
        }
    };
    let mut shown = app.sessions.post_as_agent(&id, &p, msg).await?;
    shown["article"] = json!(a.slug);
    Ok(Json(shown))
}
