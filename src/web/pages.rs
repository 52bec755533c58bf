//! The web pages: the portal list, each portal's request form and the code form (server-side
//! HTML that works without JavaScript), and the static customer page and agent console.
//! Everything from outside is escaped; no inline script or style (the CSP forbids both).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::ApiError;
use super::sessions::{
    CUSTOMER_COOKIE, FieldError, RequestInput, form_urlencoded, redeem, url_decode_pairs, validate,
};
use crate::app::{App, Source};
use crate::config::{FieldKind, Portal};
use crate::session::Sessions;

const AGENT_HTML: &str = include_str!("assets/agent.html");
const AGENT_JS: &str = include_str!("assets/agent.js");
const SCREEN_JS: &str = include_str!("assets/screen.js");
const REVIEW_HTML: &str = include_str!("assets/review.html");
const REVIEW_JS: &str = include_str!("assets/review.js");
const SHARE_JS: &str = include_str!("assets/share.js");
const DASHBOARD_HTML: &str = include_str!("assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const CUSTOMER_HTML: &str = include_str!("assets/customer.html");
const CUSTOMER_JS: &str = include_str!("assets/customer.js");
const COMMON_JS: &str = include_str!("assets/common.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(index))
        .route("/p/{portal}", get(portal_form).post(portal_submit))
        .route("/p/{portal}/brand.css", get(brand_css))
        .route("/p/{portal}/logo", get(logo))
        .route("/code", get(code_form).post(code_submit))
        .route("/s/{id}", get(|| async { Html(CUSTOMER_HTML) }))
        .route("/agent", get(|| async { Html(AGENT_HTML) }))
        .route("/dashboard", get(|| async { Html(DASHBOARD_HTML) }))
        .route("/review", get(|| async { Html(REVIEW_HTML) }))
        .route(
            "/static/share.js",
            get(|| async { asset("text/javascript; charset=utf-8", SHARE_JS) }),
        )
        .route(
            "/static/review.js",
            get(|| async { asset("text/javascript; charset=utf-8", REVIEW_JS) }),
        )
        .route(
            "/static/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }),
        )
        .route(
            "/static/agent.js",
            get(|| async { asset("text/javascript; charset=utf-8", AGENT_JS) }),
        )
        .route(
            "/static/screen.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCREEN_JS) }),
        )
        .route(
            "/static/common.js",
            get(|| async { asset("text/javascript; charset=utf-8", COMMON_JS) }),
        )
        .route(
            "/static/customer.js",
            get(|| async { asset("text/javascript; charset=utf-8", CUSTOMER_JS) }),
        )
        .route(
            "/static/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Branding for a portal's pages: its stylesheet and, if it has one, its logo.
struct Brand {
    css: String,
    logo: Option<String>,
}

fn brand(p: &Portal) -> Brand {
    Brand {
        css: format!("/p/{}/brand.css", p.name),
        logo: p.logo.as_ref().map(|_| format!("/p/{}/logo", p.name)),
    }
}

fn page(title: &str, brand: Option<&Brand>, body: &str) -> String {
    let css = brand
        .map(|b| format!(r#"<link rel="stylesheet" href="{}">"#, esc(&b.css)))
        .unwrap_or_default();
    let logo = brand
        .and_then(|b| b.logo.as_ref())
        .map(|src| {
            format!(
                r#"<img class="logo" src="{}" alt="" height="48">"#,
                esc(src)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/static/style.css">
{css}
</head>
<body>
<header class="brand">{logo}<h1>{title}</h1></header>
<main class="container">
{body}
</main>
</body>
</html>
"#,
        title = esc(title),
    )
}

async fn index(State(app): State<Arc<App>>) -> Html<String> {
    let items: String = app
        .config
        .portals
        .iter()
        .filter(|p| p.public)
        .map(|p| {
            format!(
                r#"<li><a href="/p/{}">{}</a></li>"#,
                esc(&p.name),
                esc(&p.title)
            )
        })
        .collect();
    let body = format!(
        r#"<p>Choose where you need help, or enter the code an agent gave you.</p>
<ul class="portals">{items}</ul>
<p><a href="/code">I have a connection code</a></p>"#
    );
    Html(page("Remote support", None, &body))
}

async fn logo(
    State(app): State<Arc<App>>,
    Path(portal): Path<String>,
) -> Result<Response, ApiError> {
    let path = app
        .config
        .portal(&portal)
        .and_then(|p| p.logo.clone())
        .ok_or_else(|| ApiError::not_found("this portal has no logo"))?;
    let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
    let ct = match path
        .rsplit('.')
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "image/jpeg",
    };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    // An SVG opened directly must not run script in the appliance's origin.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    Ok(r)
}

async fn brand_css(
    State(app): State<Arc<App>>,
    Path(portal): Path<String>,
) -> Result<Response, ApiError> {
    let p = app
        .config
        .portal(&portal)
        .ok_or_else(|| ApiError::not_found("no such portal"))?;
    // The colour was validated as #rrggbb when the configuration was loaded. Text on it is black
    // or white, whichever contrasts more (WCAG relative luminance).
    let channel = |i: usize| {
        let v = f64::from(u8::from_str_radix(&p.color[i..i + 2], 16).unwrap_or(0)) / 255.0;
        if v <= 0.03928 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    let lum = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    let text = if lum > 0.179 { "#111111" } else { "#ffffff" };
    let css = format!(
        "header.brand {{ background: {c}; color: {text}; }}\nheader.brand h1 {{ color: {text}; }}\nbutton.primary {{ background: {c}; border-color: {c}; color: {text}; }}\n",
        c = p.color
    );
    let mut r = css.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    Ok(r)
}

/// The values to show in the form: from the query string (prefill) or a rejected post.
fn form_values(pairs: &[(String, String)]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (k, v) in pairs {
        m.insert(k.clone(), v.clone());
    }
    m
}

fn render_form(p: &Portal, values: &HashMap<String, String>, errors: &[FieldError]) -> String {
    let err_for = |field: &str| -> String {
        errors
            .iter()
            .filter(|e| e.field == field)
            .map(|e| {
                format!(
                    r#"<p class="error" id="err-{}">{}</p>"#,
                    esc(&field.replace('.', "-")),
                    esc(&e.message)
                )
            })
            .collect()
    };
    let val = |k: &str| values.get(k).cloned().unwrap_or_default();
    let fval = |name: &str| {
        values
            .get(&format!("field.{name}"))
            .or_else(|| values.get(name))
            .cloned()
            .unwrap_or_default()
    };
    let mut html = String::new();
    if !p.welcome.is_empty() {
        html.push_str(&format!("<p>{}</p>\n", esc(&p.welcome)));
    }
    if !errors.is_empty() {
        // Problems with fields the customer cannot see (hidden ones, the reference) are listed
        // here, since nothing below could mark them.
        let visible = |f: &str| {
            matches!(f, "name" | "email" | "question" | "skill")
                || p.fields
                    .iter()
                    .any(|x| !x.hidden && format!("field.{}", x.name) == f)
        };
        let unseen: String = errors
            .iter()
            .filter(|e| !visible(&e.field))
            .map(|e| format!("<li>{}</li>", esc(&e.message)))
            .collect();
        let list = if unseen.is_empty() {
            String::new()
        } else {
            format!("<ul>{unseen}</ul><p>Please contact the site that sent you here.</p>")
        };
        html.push_str(&format!(r#"<div class="error" role="alert"><p>Please correct the fields marked below.</p>{list}</div>"#));
    }
    html.push_str(&format!(
        r#"<form class="request-form" method="post" action="/p/{}" novalidate>"#,
        esc(&p.name)
    ));
    let text_field = |id: &str,
                      label: &str,
                      kind: &str,
                      value: &str,
                      required: bool,
                      multiline: bool|
     -> String {
        let req = if required {
            " required aria-required=\"true\""
        } else {
            ""
        };
        let mark = if required {
            " <span aria-hidden=\"true\">*</span>"
        } else {
            ""
        };
        let described = if errors.iter().any(|e| e.field == id) {
            format!(
                r#" aria-invalid="true" aria-describedby="err-{}""#,
                esc(&id.replace('.', "-"))
            )
        } else {
            String::new()
        };
        let input = if multiline {
            format!(
                r#"<textarea id="{id}" name="{id}" rows="5"{req}{described}>{}</textarea>"#,
                esc(value)
            )
        } else {
            format!(
                r#"<input id="{id}" name="{id}" type="{kind}" value="{}"{req}{described}>"#,
                esc(value)
            )
        };
        format!(
            r#"<div class="field"><label for="{id}">{}{mark}</label>{input}{}</div>"#,
            esc(label),
            err_for(id)
        )
    };
    if p.skills.len() > 1 {
        let current = val("skill");
        let opts: String = p
            .skills
            .iter()
            .map(|s| {
                format!(
                    r#"<option value="{0}"{1}>{0}</option>"#,
                    esc(s),
                    if *s == current { " selected" } else { "" }
                )
            })
            .collect();
        html.push_str(&format!(r#"<div class="field"><label for="skill">Topic</label><select id="skill" name="skill">{opts}</select>{}</div>"#, err_for("skill")));
    } else {
        html.push_str(&format!(
            r#"<input type="hidden" name="skill" value="{}">"#,
            esc(&p.skills[0])
        ));
    }
    html.push_str(&text_field(
        "name",
        "Your name",
        "text",
        &val("name"),
        true,
        false,
    ));
    html.push_str(&text_field(
        "email",
        "E-mail (optional)",
        "email",
        &val("email"),
        false,
        false,
    ));
    html.push_str(&text_field(
        "question",
        "How can we help?",
        "text",
        &val("question"),
        true,
        true,
    ));
    for f in &p.fields {
        let id = format!("field.{}", f.name);
        let v = fval(&f.name);
        if f.hidden {
            html.push_str(&format!(
                r#"<input type="hidden" name="{}" value="{}">"#,
                esc(&id),
                esc(&v)
            ));
            continue;
        }
        match f.kind {
            FieldKind::Select => {
                let opts: String =
                    std::iter::once(r#"<option value="">Choose…</option>"#.to_string())
                        .chain(f.options.iter().map(|o| {
                            format!(
                                r#"<option value="{0}"{1}>{0}</option>"#,
                                esc(o),
                                if *o == v { " selected" } else { "" }
                            )
                        }))
                        .collect();
                let (req, mark) = if f.required {
                    (
                        " required aria-required=\"true\"",
                        " <span aria-hidden=\"true\">*</span>",
                    )
                } else {
                    ("", "")
                };
                html.push_str(&format!(
                    r#"<div class="field"><label for="{0}">{1}{mark}</label><select id="{0}" name="{0}"{req}>{opts}</select>{2}</div>"#,
                    esc(&id),
                    esc(&f.label),
                    err_for(&id)
                ));
            }
            kind => {
                let t = match kind {
                    FieldKind::Email => "email",
                    FieldKind::Number => "number",
                    FieldKind::Tel => "tel",
                    _ => "text",
                };
                html.push_str(&text_field(&id, &f.label, t, &v, f.required, false));
            }
        }
    }
    if let Some(r) = values.get("ref").filter(|r| !r.is_empty()) {
        html.push_str(&format!(
            r#"<input type="hidden" name="ref" value="{}">"#,
            esc(r)
        ));
    }
    html.push_str(
        r#"<button type="submit" class="primary" id="submit">Ask for help</button></form>"#,
    );
    html
}

async fn portal_form(
    State(app): State<Arc<App>>,
    Path(portal): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Html<String>, ApiError> {
    let p = app
        .config
        .portal(&portal)
        .ok_or_else(|| ApiError::not_found(format!("there is no portal {portal:?}")))?;
    let values = form_values(&url_decode_pairs(q.as_deref().unwrap_or("")));
    Ok(Html(page(
        &p.title,
        Some(&brand(p)),
        &render_form(p, &values, &[]),
    )))
}

fn customer_redirect(id: &str, token: &str) -> Response {
    let mut r = Response::new(axum::body::Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/s/{id}")).expect("session ids are header-safe"),
    );
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{CUSTOMER_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=86400"
        ))
        .expect("token is header-safe"),
    );
    r
}

async fn portal_submit(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    Path(portal): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = app
        .config
        .portal(&portal)
        .ok_or_else(|| ApiError::not_found(format!("there is no portal {portal:?}")))?
        .clone();
    let pairs = form_urlencoded(&body);
    let input = RequestInput::from_form(&portal, &pairs);
    match validate(&app, input, "portal") {
        Ok(req) => {
            super::sessions::request_allowed(&app, &src)?;
            let created = Sessions::create(&app, req, None, &src).await?;
            Ok(customer_redirect(&created.id, &created.customer_token))
        }
        Err(errors) => {
            let html = page(
                &p.title,
                Some(&brand(&p)),
                &render_form(&p, &form_values(&pairs), &errors),
            );
            Ok((StatusCode::BAD_REQUEST, Html(html)).into_response())
        }
    }
}

/// The code form; `code` prefills it (from an invite link), and is only ever digits.
fn code_page(error: Option<&str>, name: &str, code: &str) -> String {
    let err = error
        .map(|e| {
            format!(
                r#"<div class="error" role="alert" id="code-error"><p>{}</p></div>"#,
                esc(e)
            )
        })
        .unwrap_or_default();
    page(
        "Join with a code",
        None,
        &format!(
            r#"<p>Enter the nine-digit code your support agent read to you.</p>{err}
<form class="request-form" method="post" action="/code">
<div class="field"><label for="code">Code</label><input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" required aria-required="true" value="{}"></div>
<div class="field"><label for="name">Your name (optional)</label><input id="name" name="name" value="{}"></div>
<button type="submit" class="primary" id="submit">Join</button>
</form>"#,
            esc(code),
            esc(name)
        ),
    )
}

/// `GET /code`, or `/code?code=NNNNNNNNN` from an invite link: the code is filled in, and joining
/// still takes the customer's own press of the button (a POST), so a link preview or a mail
/// scanner that fetches the link cannot use the code up.
async fn code_form(RawQuery(q): RawQuery) -> Html<String> {
    let code = url_decode_pairs(q.as_deref().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "code")
        .and_then(|(_, v)| crate::session::normalize_code(&v))
        .unwrap_or_default();
    Html(code_page(None, "", &code))
}

async fn code_submit(
    State(app): State<Arc<App>>,
    Extension(src): Extension<Source>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(e) = super::sessions::refuse_other_sites(
        &headers,
        "a code is entered on this appliance's own page only",
    ) {
        return e.into_response();
    }
    let pairs = form_urlencoded(&body);
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (code, name) = (get("code"), get("name"));
    match redeem(&app, &src, &code, Some(name.clone())).await {
        Ok(created) => customer_redirect(&created.id, &created.customer_token),
        Err(e) => {
            let status = e.status;
            (status, Html(code_page(Some(&e.message), &name, ""))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}
