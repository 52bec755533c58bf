//! One scan of the web surface as a browser meets it: the security headers on every response
//! (pages, assets, API answers, errors and sockets alike), CSRF protection of every form and of
//! every cookie-authenticated change, session fixation and revocation, and the flags of every
//! cookie. The routes, the handlers that read form bodies and the pages walked are read from
//! src/web, so a new route, form or page is covered (or fails here) without a list to update.
//!
//! The three tests at the end found gaps when this scan was written (event streams that caches
//! could store, login and code joins from other sites, the customer cookie acting without the
//! CSRF header); they are fixed, and each failure message names what went missing and where.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Duration;

use custos::client::{Response, percent_encode};
use hyper::Method;
use serde_json::{Value, json};

use crate::util::*;

const ADMIN_PW: &str = "admin password long";
const AGENT_PW: &str = "agent password 123";
const FORM: &str = "application/x-www-form-urlencoded";
/// Where a forged request comes from.
const EVIL: &str = "https://evil.example";

/// The headers `security_headers` (src/web/mod.rs) puts on every response, with their values.
const FIXED: [(&str, &str); 5] = [
    ("strict-transport-security", "max-age=63072000"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];
const CSP: &str = "default-src 'self'; media-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// A portal logo's own policy (src/web/pages.rs `logo`), so that an SVG cannot run script.
const LOGO_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// Every route whose handler reads a form body. All three are public: they read no cookie and act
/// for no one, so a forged cross-site post borrows no one's authority. `/p/{portal}` is meant to
/// be posted to from other sites (docs/end-user-integration.md, "A form that submits directly").
const FORM_ROUTES: [(&str, &str); 3] = [
    ("post", "/api/v1/requests"),
    ("post", "/code"),
    ("post", "/p/{portal}"),
];
/// The non-GET routes that read no credentials at all (docs/security.md, permission table:
/// "anyone, unauthenticated"). Every other change needs a login or a customer token.
const PUBLIC_POSTS: [&str; 5] = [
    "/api/v1/auth/login",
    "/api/v1/requests",
    "/api/v1/codes/{code}/redeem",
    "/p/{portal}",
    "/code",
];
/// Routes that act only for a customer token: a staff cookie is not a credential there (401).
const CUSTOMER_ONLY: [&str; 1] = ["/api/v1/requests/{id}/cancel"];

// --- the server and a recording client --------------------------------------------------------

struct Fixture {
    s: Server,
    dir: Dir,
    admin: String,
}

/// A server with an agent account (`agent`) and the first admin's password changed; `logo` gives
/// the `support` portal an SVG logo.
fn fixture(logo: bool) -> Fixture {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("agentpw", AGENT_PW);
    dir.run(&[
        "user",
        "add",
        "agent",
        "--role",
        "agent",
        "--password-file",
        pw.to_str().unwrap(),
        "--skills",
        "support:general",
    ])
    .ok();
    if logo {
        let svg = dir.secret(
            "logo.svg",
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><script>alert(1)</script></svg>"#,
        );
        let cfg = dir.path().join("custos.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let anchor = "[[portal]]\nname = \"support\"\n";
        assert!(
            text.contains(anchor),
            "custos.toml no longer declares the support portal as {anchor:?}"
        );
        let with_logo = format!("{anchor}logo = \"{}\"\n", svg.display());
        std::fs::write(cfg, text.replacen(anchor, &with_logo, 1)).unwrap();
    }
    let s = dir.serve();
    let admin = s.admin(&one_time, ADMIN_PW);
    Fixture { s, dir, admin }
}

/// One response the scan met.
struct Seen {
    what: String,
    path: String,
    status: u16,
    headers: Vec<(String, String)>,
    body_len: usize,
}

/// A client that keeps every response it gets, so that `finish` can check them all.
struct Scan<'a> {
    s: &'a Server,
    seen: RefCell<Vec<Seen>>,
}

fn pairs(h: &hyper::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl<'a> Scan<'a> {
    fn new(s: &'a Server) -> Self {
        Scan {
            s,
            seen: RefCell::new(Vec::new()),
        }
    }

    /// One request on a fresh pinned TLS connection, with exactly these headers (and `Host`).
    fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.exchange(method, path, headers, body, true)
    }

    /// Like `send`, but returns at the response head and leaves the body unread (event streams
    /// never end).
    fn head_of(&self, path: &str, bearer: &str) -> Response {
        let auth = format!("Bearer {bearer}");
        self.exchange(
            Method::GET,
            path,
            &[("authorization", auth.as_str())],
            b"",
            false,
        )
    }

    fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        whole: bool,
    ) -> Response {
        use http_body_util::BodyExt;
        let what = format!("{method} {path}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let fp = custos::tls::parse_fingerprint(&self.s.fingerprint).unwrap();
        let cfg = custos::tls::pinned_client_config(fp).unwrap();
        let addr = self.s.addr.clone();
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.as_str());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                body.to_vec(),
            )))
            .unwrap();
        let r = rt.block_on(async move {
            let tls = tls_to(&addr, cfg).await;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let res = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
                .await
                .expect("no response head within 30 s")
                .unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let body = if whole {
                res.into_body().collect().await.unwrap().to_bytes().to_vec()
            } else {
                Vec::new()
            };
            Response {
                status,
                headers,
                body,
            }
        });
        self.seen.borrow_mut().push(Seen {
            what,
            path: path.to_string(),
            status: r.status,
            headers: pairs(&r.headers),
            body_len: r.body.len(),
        });
        r
    }

    fn get(&self, path: &str, bearer: Option<&str>) -> Response {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            h.push(("authorization", a.as_str()));
        }
        self.send(Method::GET, path, &h, b"")
    }

    fn json(&self, method: Method, path: &str, bearer: Option<&str>, body: &Value) -> Response {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut h: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            h.push(("authorization", a.as_str()));
        }
        self.send(method, path, &h, &serde_json::to_vec(body).unwrap())
    }

    /// A WebSocket handshake with these headers; the status it got (101 when it opened).
    fn ws(&self, path: &str, headers: &[(&'static str, String)]) -> u16 {
        use tokio_tungstenite::tungstenite::Error;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = self.s.ws_tls();
        let addr = self.s.addr.clone();
        let mut req = format!("wss://{addr}{path}").into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(*k, v.parse().unwrap());
        }
        let (status, hs, body_len) = rt.block_on(async move {
            let tls = tls_to(&addr, cfg).await;
            match tokio_tungstenite::client_async(req, tls).await {
                Ok((_socket, res)) => (101u16, pairs(res.headers()), 0usize),
                Err(Error::Http(r)) => (
                    r.status().as_u16(),
                    pairs(r.headers()),
                    r.body().as_ref().map_or(0, |b| b.len()),
                ),
                Err(e) => panic!("WebSocket handshake to {path} failed without a status: {e}"),
            }
        });
        self.seen.borrow_mut().push(Seen {
            what: format!("WebSocket {path}"),
            path: path.to_string(),
            status,
            headers: hs,
            body_len,
        });
        status
    }

    /// Checks every response met so far: the security headers, the type of every error body and
    /// every cookie set.
    fn finish(&self) {
        let seen = self.seen.borrow();
        assert!(!seen.is_empty(), "the scan met no response");
        let mut problems = Vec::new();
        for r in seen.iter() {
            problems.extend(header_problems(r));
            for (_, raw) in r.headers.iter().filter(|(k, _)| k == "set-cookie") {
                problems.extend(cookie_problems(&r.what, raw));
            }
        }
        assert!(
            problems.is_empty(),
            "{} problems in {} responses:\n{}",
            problems.len(),
            seen.len(),
            problems.join("\n")
        );
    }
}

fn values<'a>(r: &'a Seen, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// What is wrong with one response's headers, by the rules `security_headers` states.
fn header_problems(r: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    let logo = r.status == 200 && r.path.starts_with("/p/") && r.path.ends_with("/logo");
    let asset = r.status == 200 && r.path.starts_with("/static/");
    let mut want: Vec<(&str, &str)> = FIXED.to_vec();
    want.push(("content-security-policy", if logo { LOGO_CSP } else { CSP }));
    // Static assets revalidate; everything else, authenticated answers above all, is never stored.
    want.push(("cache-control", if asset { "no-cache" } else { "no-store" }));
    for (name, value) in want {
        let got = values(r, name);
        if got != [value] {
            out.push(format!(
                "{} -> {}: {name} is {got:?}, expected exactly {value:?}",
                r.what, r.status
            ));
        }
    }
    let ct = values(r, "content-type");
    if r.body_len > 0 && ct.len() != 1 {
        out.push(format!(
            "{} -> {}: a body needs exactly one content-type (nosniff), got {ct:?}",
            r.what, r.status
        ));
    }
    let typed = ct
        .first()
        .is_some_and(|t| t.starts_with("application/json") || t.starts_with("text/html"));
    if r.status >= 400 && !typed {
        out.push(format!(
            "{} -> {}: an error leaves as the JSON error body (or a form page's own HTML), got {ct:?}",
            r.what, r.status
        ));
    }
    out
}

/// What is wrong with one `Set-Cookie`: only the two session cookies exist, each `Path=/; Secure;
/// HttpOnly; SameSite=Strict; Max-Age=N` and nothing else, holding only an opaque token.
fn cookie_problems(what: &str, raw: &str) -> Vec<String> {
    let mut msgs: Vec<String> = Vec::new();
    let mut parts = raw.split(';').map(str::trim);
    let (name, value) = parts
        .next()
        .unwrap_or("")
        .split_once('=')
        .unwrap_or(("", ""));
    let attrs: Vec<(String, String)> = parts
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a, ""));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let attr =
        |k: &str| -> Option<String> { attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()) };
    for (k, _) in &attrs {
        let known = ["path", "secure", "httponly", "samesite", "max-age"].contains(&k.as_str());
        let once = attrs.iter().filter(|(n, _)| n == k).count() == 1;
        let fine = known && once;
        if !fine {
            msgs.push(format!(
                "attribute {k:?} is unexpected or repeated (no Domain, nothing widening the cookie)"
            ));
        }
    }
    if attr("path").as_deref() != Some("/") {
        msgs.push("Path must be /".into());
    }
    if attr("secure").is_none() {
        msgs.push("Secure is missing".into());
    }
    if attr("httponly").is_none() {
        msgs.push("HttpOnly is missing".into());
    }
    if !attr("samesite").is_some_and(|v| v.eq_ignore_ascii_case("strict")) {
        msgs.push("SameSite must be Strict".into());
    }
    let max_age = attr("max-age").and_then(|v| v.parse::<i64>().ok());
    let (prefix, ages) = match name {
        "custos_session" => ("cst_", 300..=604_800),
        "custos_customer" => ("ctk_", 86_400..=86_400),
        other => {
            msgs.push(format!(
                "unexpected cookie {other:?}: only custos_session and custos_customer are set"
            ));
            ("", 0..=0)
        }
    };
    if value.is_empty() {
        if max_age != Some(0) {
            msgs.push("an emptied cookie must expire at once (Max-Age=0)".into());
        }
    } else {
        let opaque = value.len() == prefix.len() + 43
            && value.starts_with(prefix)
            && value[prefix.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !opaque {
            msgs.push(format!(
                "the value must be only an opaque {prefix} token (base64url of 32 random bytes)"
            ));
        }
        if !max_age.is_some_and(|a| ages.contains(&a)) {
            msgs.push(format!("Max-Age {max_age:?} is outside {ages:?}"));
        }
    }
    msgs.into_iter()
        .map(|m| format!("{what}: Set-Cookie {raw:?}: {m}"))
        .collect()
}

// --- the routes, read from src/web -----------------------------------------------------------------

/// One routed (method, path) and the source of its handler.
struct Route {
    method: String,
    path: String,
    body: String,
}

/// The text of the top-level item `fn NAME(` in `src`.
fn item<'a>(src: &'a str, name: &str) -> Option<&'a str> {
    let start = src.find(&format!("fn {name}("))?;
    let rest = &src[start..];
    Some(&rest[..rest.find("\n}\n").map_or(rest.len(), |e| e + 2)])
}

/// Every route served over HTTPS (the Unix socket's own routes left out), with its handler.
fn https_routes() -> Vec<Route> {
    let files = web_sources();
    let api = &files
        .iter()
        .find(|(n, _)| n == "api.rs")
        .expect("src/web/api.rs")
        .1;
    let local: BTreeSet<(String, String)> =
        route_calls(item(api, "local_routes").expect("api::local_routes"))
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
    assert!(!local.is_empty(), "no socket-only routes found");
    let mut out = Vec::new();
    for (_, src) in &files {
        for (method, path, handler) in route_calls(src) {
            if local.contains(&(method.clone(), path.clone())) {
                continue;
            }
            let name = handler.rsplit("::").next().unwrap_or("");
            let body = if name.is_empty() {
                ""
            } else {
                item(src, name)
                    .or_else(|| files.iter().find_map(|(_, other)| item(other, name)))
                    .unwrap_or("")
            };
            out.push(Route {
                method,
                path,
                body: body.to_string(),
            });
        }
    }
    for want in [("post", "/api/v1/auth/login"), ("get", "/agent")] {
        let found = out.iter().any(|r| r.method == want.0 && r.path == want.1);
        assert!(found, "the route reader missed {want:?}");
    }
    out
}

fn reads_form(handler: &str) -> bool {
    [
        "form_urlencoded(",
        "x-www-form-urlencoded",
        "serde_urlencoded",
        "Form<",
        "Form(",
    ]
    .iter()
    .any(|m| handler.contains(m))
}

fn reads_credentials(handler: &str) -> bool {
    ["Authed", "authenticate(", "party(", "customer_token("]
        .iter()
        .any(|m| handler.contains(m))
}

fn session_dummy() -> String {
    format!("sess_{}", "a".repeat(26))
}

/// A routed path with a plausible value in each parameter.
fn concrete(path: &str) -> String {
    let session = path.starts_with("/api/v1/sessions/")
        || path.starts_with("/api/v1/requests/")
        || path.starts_with("/s/");
    path.split('/')
        .map(|seg| match seg {
            "{id}" if session => session_dummy(),
            "{portal}" => "support".to_string(),
            "{name}" => "nobody".to_string(),
            "{code}" => "123456789".to_string(),
            "{slug}" => "no-such-article".to_string(),
            s if s.starts_with('{') => "1".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<String>>()
        .join("/")
}

/// Whether a concrete path (query ignored) is an instance of a routed pattern.
fn route_matches(pattern: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let a: Vec<&str> = pattern.split('/').collect();
    let b: Vec<&str> = path.split('/').collect();
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(p, s)| p == s || p.starts_with('{') && !s.is_empty())
}

// --- HTML forms --------------------------------------------------------------------------------

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// An attribute's value in a start tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let (i, _) = tag
        .match_indices(&key)
        .find(|(i, _)| *i > 0 && tag.as_bytes()[i - 1].is_ascii_whitespace())?;
    let start = i + key.len();
    let end = start + tag[start..].find('"')?;
    Some(unescape(&tag[start..end]))
}

/// Every `<form ...>` start tag in a page, with the HTML inside the form.
fn forms(html: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<form") {
        let at = &rest[i..];
        let tag_end = at.find('>').expect("a form tag ends");
        let inner_end = at.find("</form>").unwrap_or(at.len()).max(tag_end + 1);
        out.push((
            at[..=tag_end].to_string(),
            at[tag_end + 1..inner_end].to_string(),
        ));
        rest = &at[tag_end + 1..];
    }
    out
}

/// What a browser submits for a form: every named control with its current value.
fn fields(inner: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = inner;
    while let Some(i) = rest.find('<') {
        let at = &rest[i..];
        let Some(end) = at.find('>') else { break };
        let tag = &at[..=end];
        let after = &at[end + 1..];
        if let Some(name) = attr(tag, "name") {
            if tag.starts_with("<input") {
                let kind = attr(tag, "type").unwrap_or_default();
                if !matches!(
                    kind.as_str(),
                    "submit" | "button" | "file" | "checkbox" | "radio"
                ) {
                    out.push((name, attr(tag, "value").unwrap_or_default()));
                }
            } else if tag.starts_with("<textarea") {
                let text = &after[..after.find("</textarea>").unwrap_or(0)];
                out.push((name, unescape(text)));
            } else if tag.starts_with("<select") {
                let options = &after[..after.find("</select>").unwrap_or(0)];
                let chosen = options
                    .split("<option")
                    .skip(1)
                    .find(|o| o.split('>').next().unwrap_or("").contains(" selected"))
                    .or_else(|| options.split("<option").nth(1));
                let value = chosen
                    .and_then(|o| attr(&format!("<option{o}"), "value"))
                    .unwrap_or_default();
                out.push((name, value));
            }
        }
        rest = after;
    }
    out
}

fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    match fields.iter_mut().find(|f| f.0 == name) {
        Some(f) => f.1 = value.to_string(),
        None => fields.push((name.to_string(), value.to_string())),
    }
}

fn form_body(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The first form of a page, filled in as a customer would.
fn filled_form(page: &Response, set: &[(&str, &str)]) -> String {
    let html = String::from_utf8_lossy(&page.body).into_owned();
    let (_, inner) = forms(&html)
        .into_iter()
        .next()
        .expect("the page has a form");
    let mut f = fields(&inner);
    for (k, v) in set {
        set_field(&mut f, k, v);
    }
    form_body(&f)
}

// --- small helpers -----------------------------------------------------------------------------

fn header(r: &Response, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The value a response's `Set-Cookie` gives the cookie `name`.
fn set_cookie(r: &Response, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            let (k, v) = c.split(';').next()?.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// The `Cookie` header a browser would send back after this response.
fn cookies_from(r: &Response) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

fn token_of(r: &Response, key: &str) -> String {
    r.json().unwrap()[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {}", String::from_utf8_lossy(&r.body)))
        .to_string()
}

fn new_request(scan: &Scan<'_>, name: &str) -> (String, String) {
    let r = scan.json(
        Method::POST,
        "/api/v1/requests",
        None,
        &json!({ "portal": "support", "name": name, "question": "The printer prints blank pages" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    (token_of(&r, "request_id"), token_of(&r, "customer_token"))
}

fn new_code(s: &Server, token: &str) -> String {
    let r = s.post("/api/v1/codes", Some(token), json!({ "ttl_s": 600 }));
    assert_eq!(r.status, 201, "{}", r.error_message());
    r.json().unwrap()["code"]
        .as_str()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

fn customer_view(scan: &Scan<'_>, id: &str, token: &str) -> Response {
    let auth = format!("Customer {token}");
    scan.send(
        Method::GET,
        &format!("/api/v1/sessions/{id}/customer"),
        &[("authorization", auth.as_str())],
        b"",
    )
}

fn me_by_cookie(scan: &Scan<'_>, token: &str) -> Response {
    let cookie = format!("custos_session={token}");
    scan.send(
        Method::GET,
        "/api/v1/me",
        &[("cookie", cookie.as_str())],
        b"",
    )
}

fn login_holding(scan: &Scan<'_>, name: &str, password: &str, cookie: &str) -> Response {
    let body = serde_json::to_vec(&json!({ "name": name, "password": password })).unwrap();
    scan.send(
        Method::POST,
        "/api/v1/auth/login",
        &[("content-type", "application/json"), ("cookie", cookie)],
        &body,
    )
}

/// The session a customer was sent to (`Location: /s/ID`).
fn redirected_session(r: &Response) -> String {
    assert_eq!(r.status, 303, "{}", r.error_message());
    header(r, "location")
        .strip_prefix("/s/")
        .expect("a redirect to the customer page")
        .to_string()
}

fn audit_size(s: &Server, admin: &str) -> u64 {
    s.get("/api/v1/system", Some(admin)).json().unwrap()["audit_entries"]
        .as_u64()
        .expect("audit_entries")
}

/// The audit actions recorded from `from` on (the hourly retention sweep's aside).
fn audit_actions_since(s: &Server, admin: &str, from: u64) -> Vec<String> {
    let v = s
        .get(
            &format!("/api/v1/audit/entries?from={from}&limit=1000"),
            Some(admin),
        )
        .json()
        .unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("?").to_string())
        .filter(|a| !a.starts_with("retention."))
        .collect()
}

// --- the scan ----------------------------------------------------------------------------------

/// Every page, asset and API route (anonymously and as the admin), errors of every kind, the
/// answers that set cookies or redirect, and the WebSocket upgrade and its refusal: each carries
/// exactly the headers `security_headers` promises.
#[test]
fn security_headers_on_every_response() {
    let f = fixture(true);
    let s = &f.s;
    let scan = Scan::new(s);
    let routes = https_routes();
    let (sid, ctoken) = new_request(&scan, "Ada");

    // Every GET route, anonymously and as the admin; event streams only anonymously here, since
    // they never end (see authenticated_event_streams_are_not_stored).
    for route in routes.iter().filter(|r| r.method == "get") {
        let path = concrete(&route.path);
        scan.get(&path, None);
        if !route.body.contains("Sse::new") {
            scan.get(&path, Some(&f.admin));
        }
    }
    assert_eq!(customer_view(&scan, &sid, &ctoken).status, 200);

    // Errors of every kind.
    let agent = s.login("agent", AGENT_PW).0;
    let admin_cookie = format!("custos_session={}", f.admin);
    scan.get("/no/such/page", None);
    scan.get("/api/v1/users", Some("cst_forged"));
    scan.get("/api/v1/users", Some(&agent));
    scan.send(
        Method::POST,
        "/api/v1/users",
        &[
            ("cookie", admin_cookie.as_str()),
            ("content-type", "application/json"),
        ],
        br#"{"name":"x","role":"agent"}"#,
    );
    scan.send(
        Method::POST,
        "/api/v1/auth/login",
        &[("content-type", "application/json")],
        b"{",
    );
    scan.send(
        Method::POST,
        "/p/support",
        &[("content-type", FORM)],
        b"name=",
    );
    scan.send(Method::GET, "/api/v1/auth/login", &[], b"");
    scan.send(Method::POST, "/agent", &[("content-type", FORM)], b"x=1");
    scan.send(
        Method::POST,
        "/api/v1/requests",
        &[("content-type", "application/json")],
        &vec![b'x'; 2 << 20],
    );
    scan.json(
        Method::POST,
        "/api/v1/auth/password",
        Some(&f.admin),
        &json!({ "current_password": ADMIN_PW, "new_password": "short" }),
    );
    scan.json(
        Method::POST,
        "/api/v1/users/admin/disable",
        Some(&f.admin),
        &json!({}),
    );
    scan.send(
        Method::POST,
        "/code",
        &[("content-type", FORM)],
        b"code=000000000&name=x",
    );

    // Answers that create, redirect, set and clear cookies.
    let page = scan.get("/p/support", None);
    let body = filled_form(
        &page,
        &[("name", "Grace"), ("question", "The scanner is offline")],
    );
    let r = scan.send(
        Method::POST,
        "/p/support",
        &[("content-type", FORM)],
        body.as_bytes(),
    );
    redirected_session(&r);
    scan.json(
        Method::POST,
        "/api/v1/users",
        Some(&f.admin),
        &json!({ "name": "carol", "role": "agent", "password": "carol password 123" }),
    );
    let (t, _) = s.login("agent", AGENT_PW);
    let bearer = format!("Bearer {t}");
    scan.send(
        Method::POST,
        "/api/v1/auth/logout",
        &[("authorization", bearer.as_str())],
        b"",
    );

    // The socket: its upgrade, and its refusal of another origin.
    let ws = format!("/api/v1/sessions/{sid}/ws");
    let cookie = format!("custos_customer={ctoken}");
    let same = format!("https://{}", s.addr);
    assert_eq!(
        scan.ws(&ws, &[("cookie", cookie.clone()), ("origin", same)]),
        101
    );
    assert_eq!(
        scan.ws(&ws, &[("cookie", cookie), ("origin", EVIL.to_string())]),
        403
    );

    let statuses: BTreeSet<u16> = scan.seen.borrow().iter().map(|r| r.status).collect();
    for want in [
        101, 200, 201, 204, 303, 400, 401, 403, 404, 405, 409, 413, 422,
    ] {
        assert!(
            statuses.contains(&want),
            "the scan met no {want} response: {statuses:?}"
        );
    }
    let logo = scan
        .seen
        .borrow()
        .iter()
        .any(|r| r.path == "/p/support/logo" && r.status == 200);
    assert!(logo, "the configured logo was not served");
    for r in scan.seen.borrow().iter() {
        if r.what.starts_with("GET ") {
            assert!(
                values(r, "set-cookie").is_empty(),
                "{} sets a cookie; only logins and new customer sessions do",
                r.what
            );
        }
    }
    scan.finish();
}

/// CSRF, every way in: the routes that read form bodies are the known public ones; every form the
/// server renders posts to one of those, or submits only through script; every change made with
/// the login cookie needs `X-Custos-CSRF: 1` and a forged one changes nothing; the WebSocket
/// refuses other origins.
#[test]
fn every_form_is_csrf_protected() {
    let routes = https_routes();

    // 1. The form-reading routes, from the handlers' source: a new one fails here until it is
    //    classified (and, if it acts for someone, protected).
    let form_routes: BTreeSet<(String, String)> = routes
        .iter()
        .filter(|r| r.method != "get" && reads_form(&r.body))
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    let known: BTreeSet<(String, String)> = FORM_ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        form_routes, known,
        "the routes whose handlers read form bodies changed: classify each new one in FORM_ROUTES"
    );
    for (_, p) in FORM_ROUTES {
        assert!(
            PUBLIC_POSTS.contains(&p),
            "{p} reads forms but is not public"
        );
    }
    // Which changes read credentials, from the handlers' source: a change that reads none is
    // public by design and listed; every other one goes through `authenticate` or a customer token.
    for r in routes.iter().filter(|r| r.method != "get") {
        let public = PUBLIC_POSTS.contains(&r.path.as_str());
        assert_eq!(
            !reads_credentials(&r.body),
            public,
            "{} {}: reads credentials = {}, but PUBLIC_POSTS says public = {public}",
            r.method,
            r.path,
            reads_credentials(&r.body)
        );
    }

    let f = fixture(false);
    let s = &f.s;
    let scan = Scan::new(s);
    let same = format!("https://{}", s.addr);
    let admin_cookie = format!("custos_session={}", f.admin);

    // 2. Every form on every page, including the pages a rejected submission shows again.
    let mut pages: Vec<String> = routes
        .iter()
        .filter(|r| {
            r.method == "get"
                && !r.path.starts_with("/api/")
                && r.path != "/healthz"
                && r.path != "/metrics"
        })
        .map(|r| concrete(&r.path))
        .collect();
    pages.push("/p/support?name=Ada&ref=CRM-1&question=q".to_string());
    pages.push("/code?code=123456789".to_string());
    let mut html: Vec<(String, String)> = Vec::new();
    for p in &pages {
        let r = scan.get(p, None);
        if header(&r, "content-type").starts_with("text/html") {
            html.push((p.clone(), String::from_utf8_lossy(&r.body).into_owned()));
        }
    }
    for (path, body) in [
        ("/p/support", b"name=".as_slice()),
        ("/code", b"code=12&name=x".as_slice()),
    ] {
        let r = scan.send(Method::POST, path, &[("content-type", FORM)], body);
        assert_eq!(r.status, 400, "{path}: {}", r.error_message());
        html.push((
            path.to_string(),
            String::from_utf8_lossy(&r.body).into_owned(),
        ));
    }
    let mut targets = BTreeSet::new();
    let mut scripted = 0;
    for (page, text) in &html {
        for (tag, inner) in forms(text) {
            let method = attr(&tag, "method")
                .unwrap_or_default()
                .to_ascii_lowercase();
            match attr(&tag, "action") {
                Some(action) => {
                    let route = FORM_ROUTES
                        .iter()
                        .find(|(m, p)| *m == method && route_matches(p, &action));
                    let Some((_, pattern)) = route else {
                        panic!(
                            "{page}: {tag} submits ({method}) to {action}, which is not a public form route; \
                             a form acting for a logged-in user cannot carry X-Custos-CSRF and needs its own token"
                        );
                    };
                    targets.insert(pattern.to_string());
                }
                None if method == "post" => {
                    // Script submits it through the API (with the header). Without script it
                    // posts to the page itself, which no handler takes: nothing happens.
                    scripted += 1;
                    let page_path = page.split('?').next().unwrap_or(page);
                    let body = form_body(&fields(&inner));
                    let r = scan.send(
                        Method::POST,
                        page_path,
                        &[
                            ("content-type", FORM),
                            ("cookie", admin_cookie.as_str()),
                            ("origin", EVIL),
                        ],
                        body.as_bytes(),
                    );
                    assert_eq!(
                        r.status, 405,
                        "{page}: {tag} would post to {page_path} without script; that must do nothing"
                    );
                }
                None => {}
            }
        }
    }
    let want: BTreeSet<String> = ["/code", "/p/{portal}"]
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        targets, want,
        "the server-rendered forms and their targets changed"
    );
    assert!(
        scripted >= 3,
        "the login forms of /agent, /dashboard and /review were not found"
    );

    // 3. A forged post to a public form route borrows nothing: the victim's login and customer
    //    cookies are ignored, a fresh anonymous request is made, and the victim's own session is
    //    untouched. (Posting to the portal from another site is a documented integration.)
    let (s0, c0) = new_request(&scan, "Victim");
    let victim = format!("{admin_cookie}; custos_customer={c0}");
    let page = scan.get("/p/support", None);
    let body = filled_form(&page, &[("name", "Eve"), ("question", "q")]);
    let r = scan.send(
        Method::POST,
        "/p/support",
        &[
            ("content-type", FORM),
            ("cookie", victim.as_str()),
            ("origin", EVIL),
            ("sec-fetch-site", "cross-site"),
        ],
        body.as_bytes(),
    );
    let s1 = redirected_session(&r);
    let c1 = set_cookie(&r, "custos_customer").expect("a customer cookie");
    assert_ne!(s1, s0);
    assert_ne!(c1, c0);
    assert_eq!(customer_view(&scan, &s1, &c0).status, 403);
    let v = customer_view(&scan, &s0, &c0).json().unwrap();
    assert_eq!(v["status"], "waiting", "{v}");
    let r = scan.send(
        Method::POST,
        "/api/v1/requests",
        &[
            ("content-type", FORM),
            ("cookie", victim.as_str()),
            ("origin", EVIL),
        ],
        b"portal=support&name=Eve&question=q",
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert_ne!(token_of(&r, "customer_token"), c0);
    assert_ne!(token_of(&r, "request_id"), s0);

    // 4. Every change on every route, forged as a cross-site form or fetch would send it: the
    //    login cookie rides along, the header cannot (or carries the wrong value).
    let before = audit_size(s, &f.admin);
    let changes: Vec<&Route> = routes
        .iter()
        .filter(|r| r.method != "get" && !PUBLIC_POSTS.contains(&r.path.as_str()))
        .collect();
    assert!(
        changes.len() > 20,
        "only {} changing routes found",
        changes.len()
    );
    for route in &changes {
        let method = Method::from_bytes(route.method.to_ascii_uppercase().as_bytes()).unwrap();
        let path = concrete(&route.path);
        for (ct, csrf) in [
            ("text/plain", None),
            (FORM, None),
            ("application/json", Some("0")),
        ] {
            let mut h = vec![
                ("cookie", admin_cookie.as_str()),
                ("origin", EVIL),
                ("sec-fetch-site", "cross-site"),
                ("content-type", ct),
            ];
            if let Some(v) = csrf {
                h.push(("x-custos-csrf", v));
            }
            let r = scan.send(method.clone(), &path, &h, b"{}");
            if CUSTOMER_ONLY.contains(&route.path.as_str()) {
                assert_eq!(
                    r.status,
                    401,
                    "{method} {path}: a staff cookie is no credential here: {}",
                    r.error_message()
                );
            } else {
                assert_eq!(
                    (r.status, r.error_message().contains("X-Custos-CSRF")),
                    (403, true),
                    "{method} {path} ({ct}, X-Custos-CSRF {csrf:?}) with the login cookie: {}",
                    r.error_message()
                );
            }
        }
    }
    let changed = audit_actions_since(s, &f.admin, before);
    assert!(
        changed.is_empty(),
        "forged requests changed something: {changed:?}"
    );
    assert_eq!(
        s.get("/api/v1/me", Some(&f.admin)).status,
        200,
        "the forged logout and password change left the login alone"
    );

    // 5. The same change, forged and then as the page's own script sends it.
    let user = br#"{"name":"mallory","role":"admin","password":"mallory password 1"}"#;
    let names = || -> BTreeSet<String> {
        s.get("/api/v1/users", Some(&f.admin)).json().unwrap()["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r = scan.send(
        Method::POST,
        "/api/v1/users",
        &[
            ("cookie", admin_cookie.as_str()),
            ("content-type", "text/plain"),
            ("origin", EVIL),
        ],
        user,
    );
    assert_eq!(r.status, 403, "{}", r.error_message());
    assert!(!names().contains("mallory"));
    let r = scan.send(
        Method::POST,
        "/api/v1/users",
        &[
            ("cookie", admin_cookie.as_str()),
            ("x-custos-csrf", "1"),
            ("content-type", "application/json"),
            ("origin", same.as_str()),
        ],
        user,
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert!(names().contains("mallory"));

    // 6. The code form's legitimate path: the invite link's page, then its form.
    let code = new_code(s, &f.admin);
    let page = scan.get(&format!("/code?code={code}"), None);
    let body = filled_form(&page, &[("name", "Ada")]);
    assert!(body.contains(&format!("code={code}")), "{body}");
    let r = scan.send(
        Method::POST,
        "/code",
        &[
            ("content-type", FORM),
            ("origin", same.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        body.as_bytes(),
    );
    redirected_session(&r);

    // 7. Cross-site WebSocket hijacking: another origin is refused, whoever's cookie it carries.
    let ws = format!("/api/v1/sessions/{s0}/ws");
    let customer = format!("custos_customer={c0}");
    assert_eq!(
        scan.ws(
            &ws,
            &[("cookie", customer.clone()), ("origin", EVIL.to_string())]
        ),
        403
    );
    assert_eq!(
        scan.ws(
            &ws,
            &[
                ("cookie", admin_cookie.clone()),
                ("origin", EVIL.to_string())
            ]
        ),
        403
    );
    assert_eq!(scan.ws(&ws, &[("cookie", customer), ("origin", same)]), 101);

    scan.finish();
    f.dir.run(&["audit", "verify"]).ok();
}

/// Session fixation and revocation: a cookie held before login (made up, or another account's) is
/// never honoured or upgraded, each login and password change issues a fresh token, a password
/// change ends every older token, and logout ends the token on the server.
#[test]
fn login_issues_a_fresh_session_and_logout_revokes_it() {
    let f = fixture(false);
    let s = &f.s;
    let scan = Scan::new(s);

    // A made-up token planted before login is not a session, before or after.
    let planted = format!("cst_{}", "A".repeat(43));
    assert_eq!(me_by_cookie(&scan, &planted).status, 401);
    let r = login_holding(
        &scan,
        "admin",
        ADMIN_PW,
        &format!("custos_session={planted}"),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let t1 = token_of(&r, "token");
    assert_ne!(t1, planted);
    assert_eq!(
        set_cookie(&r, "custos_session").as_deref(),
        Some(t1.as_str())
    );
    assert_eq!(me_by_cookie(&scan, &planted).status, 401);
    assert_eq!(me_by_cookie(&scan, &t1).json().unwrap()["name"], "admin");

    // Another account's real token held by the browser is replaced, not upgraded.
    let r = s.post(
        "/api/v1/users",
        Some(&f.admin),
        json!({ "name": "mallory", "role": "agent", "password": "mallory password 1" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let (m, _) = s.login("mallory", "mallory password 1");
    let r = login_holding(&scan, "admin", ADMIN_PW, &format!("custos_session={m}"));
    assert_eq!(r.status, 200, "{}", r.error_message());
    let t2 = token_of(&r, "token");
    assert!(t2 != m && t2 != t1, "every login issues a fresh token");
    assert_eq!(set_cookie(&r, "custos_session"), Some(t2.clone()));
    assert_eq!(me_by_cookie(&scan, &m).json().unwrap()["name"], "mallory");
    assert_eq!(me_by_cookie(&scan, &t2).json().unwrap()["name"], "admin");

    // Customers: a planted customer cookie (made up, or the attacker's own session's) is not
    // adopted by a new request, whichever way it is made.
    let (s0, c0) = new_request(&scan, "Attacker");
    let made_up = format!("ctk_{}", "A".repeat(43));
    for held in [made_up, c0] {
        let cookie = format!("custos_customer={held}");
        let page = scan.get("/p/support", None);
        let body = filled_form(&page, &[("name", "Ada"), ("question", "q")]);
        let r = scan.send(
            Method::POST,
            "/p/support",
            &[("content-type", FORM), ("cookie", cookie.as_str())],
            body.as_bytes(),
        );
        let id = redirected_session(&r);
        let fresh = set_cookie(&r, "custos_customer").expect("a customer cookie");
        assert!(fresh != held && id != s0, "{fresh} {id}");
        assert_eq!(customer_view(&scan, &id, &held).status, 403);
        assert_eq!(customer_view(&scan, &id, &fresh).status, 200);

        let r = scan.send(
            Method::POST,
            "/api/v1/requests",
            &[
                ("content-type", "application/json"),
                ("cookie", cookie.as_str()),
            ],
            br#"{"portal":"support","name":"Ada","question":"q"}"#,
        );
        assert_eq!(r.status, 201, "{}", r.error_message());
        assert_ne!(token_of(&r, "customer_token"), held);
        assert_ne!(set_cookie(&r, "custos_customer"), Some(held.clone()));

        let code = new_code(s, &f.admin);
        let r = scan.send(
            Method::POST,
            "/code",
            &[("content-type", FORM), ("cookie", cookie.as_str())],
            format!("code={code}&name=Ada").as_bytes(),
        );
        let id = redirected_session(&r);
        let fresh = set_cookie(&r, "custos_customer").expect("a customer cookie");
        assert_ne!(fresh, held);
        assert_eq!(customer_view(&scan, &id, &held).status, 403);
    }

    // A password change issues a fresh token and ends every older one.
    let c2 = format!("custos_session={t2}");
    let change = serde_json::to_vec(
        &json!({ "current_password": ADMIN_PW, "new_password": "a brand new admin password" }),
    )
    .unwrap();
    let r = scan.send(
        Method::POST,
        "/api/v1/auth/password",
        &[
            ("cookie", c2.as_str()),
            ("x-custos-csrf", "1"),
            ("content-type", "application/json"),
        ],
        &change,
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let t3 = token_of(&r, "token");
    assert!(t3 != t1 && t3 != t2);
    assert_eq!(set_cookie(&r, "custos_session"), Some(t3.clone()));
    for old in [&t1, &t2, &f.admin] {
        assert_eq!(me_by_cookie(&scan, old).status, 401);
        assert_eq!(scan.get("/api/v1/me", Some(old)).status, 401);
    }

    // Logout: a forged one does nothing; the real one ends the token on the server, so a copy of
    // the cookie kept elsewhere is dead too.
    let c3 = format!("custos_session={t3}");
    let r = scan.send(
        Method::POST,
        "/api/v1/auth/logout",
        &[("cookie", c3.as_str()), ("origin", EVIL)],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.error_message());
    assert_eq!(me_by_cookie(&scan, &t3).status, 200);
    let r = scan.send(
        Method::POST,
        "/api/v1/auth/logout",
        &[("cookie", c3.as_str()), ("x-custos-csrf", "1")],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.error_message());
    assert_eq!(set_cookie(&r, "custos_session").as_deref(), Some(""));
    assert_eq!(me_by_cookie(&scan, &t3).status, 401);
    assert_eq!(scan.get("/api/v1/me", Some(&t3)).status, 401);
    let r = scan.send(
        Method::POST,
        "/api/v1/auth/logout",
        &[("cookie", c3.as_str()), ("x-custos-csrf", "1")],
        b"",
    );
    assert_eq!(r.status, 401, "a logged-out token cannot log out again");
    // The same with a bearer token.
    let (t4, _) = s.login("admin", "a brand new admin password");
    let bearer = format!("Bearer {t4}");
    let r = scan.send(
        Method::POST,
        "/api/v1/auth/logout",
        &[("authorization", bearer.as_str())],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.error_message());
    assert_eq!(scan.get("/api/v1/me", Some(&t4)).status, 401);

    scan.finish();
}

/// Every cookie the server sets, on every path that sets one: `Secure; HttpOnly;
/// SameSite=Strict; Path=/`, a bounded `Max-Age`, no `Domain`, and a value that is only the opaque
/// token the response also returns.
#[test]
fn cookies_are_secure_httponly_samesite() {
    let dir = Dir::new();
    let one_time = dir.init();
    let s = dir.serve();
    let scan = Scan::new(&s);

    // Staff: the first login, the password change, a login, and the logout that clears it.
    let r = scan.json(
        Method::POST,
        "/api/v1/auth/login",
        None,
        &json!({ "name": "admin", "password": one_time }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let t0 = token_of(&r, "token");
    assert_eq!(set_cookie(&r, "custos_session"), Some(t0.clone()));
    let r = scan.json(
        Method::POST,
        "/api/v1/auth/password",
        Some(&t0),
        &json!({ "current_password": one_time, "new_password": ADMIN_PW }),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let admin = token_of(&r, "token");
    assert_eq!(set_cookie(&r, "custos_session"), Some(admin.clone()));
    let r = scan.json(
        Method::POST,
        "/api/v1/auth/login",
        None,
        &json!({ "name": "admin", "password": ADMIN_PW }),
    );
    let t = token_of(&r, "token");
    assert_eq!(set_cookie(&r, "custos_session"), Some(t.clone()));
    let cookie = format!("custos_session={t}");
    let r = scan.send(
        Method::POST,
        "/api/v1/auth/logout",
        &[("cookie", cookie.as_str()), ("x-custos-csrf", "1")],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.error_message());
    assert_eq!(set_cookie(&r, "custos_session").as_deref(), Some(""));

    // Customers: the request API (JSON and form), the portal form, the code form and the code API.
    let r = scan.json(
        Method::POST,
        "/api/v1/requests",
        None,
        &json!({ "portal": "support", "name": "Ada", "question": "q" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert_eq!(
        set_cookie(&r, "custos_customer"),
        Some(token_of(&r, "customer_token"))
    );
    let r = scan.send(
        Method::POST,
        "/api/v1/requests",
        &[("content-type", FORM)],
        b"portal=support&name=Ada&question=q",
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert_eq!(
        set_cookie(&r, "custos_customer"),
        Some(token_of(&r, "customer_token"))
    );
    let page = scan.get("/p/support", None);
    let body = filled_form(&page, &[("name", "Ada"), ("question", "q")]);
    let r = scan.send(
        Method::POST,
        "/p/support",
        &[("content-type", FORM)],
        body.as_bytes(),
    );
    let id = redirected_session(&r);
    let token = set_cookie(&r, "custos_customer").expect("a customer cookie");
    assert_eq!(customer_view(&scan, &id, &token).status, 200);
    let code = new_code(&s, &admin);
    let r = scan.send(
        Method::POST,
        "/code",
        &[("content-type", FORM)],
        format!("code={code}&name=Ada").as_bytes(),
    );
    let id = redirected_session(&r);
    let token = set_cookie(&r, "custos_customer").expect("a customer cookie");
    assert_eq!(customer_view(&scan, &id, &token).status, 200);
    let code = new_code(&s, &admin);
    let r = scan.json(
        Method::POST,
        &format!("/api/v1/codes/{code}/redeem"),
        None,
        &json!({ "name": "Ada" }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert_eq!(
        set_cookie(&r, "custos_customer"),
        Some(token_of(&r, "customer_token"))
    );

    // Only the two cookies exist, and none carries more than its token.
    let mut names = BTreeSet::new();
    for r in scan.seen.borrow().iter() {
        for raw in values(r, "set-cookie") {
            names.insert(raw.split('=').next().unwrap_or("").to_string());
            for secret in [one_time.as_str(), ADMIN_PW, "sess_", "admin"] {
                assert!(
                    !raw.contains(secret),
                    "{}: a cookie carries {secret:?}: {raw}",
                    r.what
                );
            }
        }
    }
    let want: BTreeSet<String> = ["custos_customer", "custos_session"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, want);
    scan.finish();
}

// --- protections this scan found missing (now in place) ------------------------------------------

/// The login cookie and the customer cookie go out only with `Cache-Control: no-store`; the
/// authenticated event streams (queue and monitors, with customers' names and questions) must not
/// be the exception: axum's `Sse` sets `no-cache` itself, and `security_headers`
/// (src/web/mod.rs) replaces it with `no-store` on every event stream.
#[test]
fn authenticated_event_streams_are_not_stored() {
    let f = fixture(false);
    let scan = Scan::new(&f.s);
    let streams: Vec<String> = https_routes()
        .iter()
        .filter(|r| r.method == "get" && r.body.contains("Sse::new"))
        .map(|r| concrete(&r.path))
        .collect();
    assert!(!streams.is_empty(), "no event streams found");
    for path in &streams {
        let r = scan.head_of(path, &f.admin);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            header(&r, "content-type").starts_with("text/event-stream"),
            "{path}"
        );
        assert_eq!(
            header(&r, "cache-control"),
            "no-store",
            "MISSING: the authenticated event stream {path} may be stored by caches; set \
             Cache-Control: no-store on queue_stream and monitor_stream in src/web/sessions.rs"
        );
    }
    scan.finish();
}

/// Login CSRF and forced joins: a cross-site page must not be able to log the browser in to an
/// account it chose (a `text/plain` form posting JSON-looking text), nor make it join a session
/// with a code it chose: `sessions::refuse_other_sites` (Sec-Fetch-Site, else Origin) in
/// src/web/api.rs `login`, src/web/pages.rs `code_submit` and src/web/sessions.rs `redeem_code`.
/// Programs send neither header and are unaffected; the portal form stays open to other sites
/// by design.
#[test]
fn login_code_and_redeem_refuse_cross_site_posts() {
    let f = fixture(false);
    let s = &f.s;
    let scan = Scan::new(s);
    let same = format!("https://{}", s.addr);
    let login = serde_json::to_vec(&json!({ "name": "agent", "password": AGENT_PW })).unwrap();

    let r = scan.send(
        Method::POST,
        "/api/v1/auth/login",
        &[
            ("content-type", "text/plain"),
            ("origin", EVIL),
            ("sec-fetch-site", "cross-site"),
        ],
        &login,
    );
    let issued = set_cookie(&r, "custos_session");
    assert!(
        matches!(r.status, 403 | 415) && issued.is_none(),
        "MISSING: a cross-site form logs the browser in (login CSRF): POST /api/v1/auth/login \
         from {EVIL} answered {} and set the cookie {issued:?}; refuse a foreign Origin in \
         src/web/api.rs `login`",
        r.status
    );
    let r = scan.send(
        Method::POST,
        "/api/v1/auth/login",
        &[
            ("content-type", "application/json"),
            ("origin", same.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        &login,
    );
    assert_eq!(
        r.status,
        200,
        "the console's own login: {}",
        r.error_message()
    );
    let r = scan.json(
        Method::POST,
        "/api/v1/auth/login",
        None,
        &json!({ "name": "agent", "password": AGENT_PW }),
    );
    assert_eq!(r.status, 200, "a program's login: {}", r.error_message());

    // The code form: a forged post neither joins nor uses the code up.
    let code = new_code(s, &f.admin);
    let r = scan.send(
        Method::POST,
        "/code",
        &[
            ("content-type", FORM),
            ("origin", EVIL),
            ("sec-fetch-site", "cross-site"),
        ],
        format!("code={code}&name=Mallory").as_bytes(),
    );
    let joined = set_cookie(&r, "custos_customer");
    assert!(
        r.status == 403 && joined.is_none(),
        "MISSING: a cross-site form joins the browser to a session by code: POST /code from {EVIL} \
         answered {} and set {joined:?}; refuse a foreign Origin in src/web/pages.rs `code_submit`",
        r.status
    );
    let page = scan.get(&format!("/code?code={code}"), None);
    let cookies = cookies_from(&page);
    let body = filled_form(&page, &[("name", "Ada")]);
    let mut h = vec![
        ("content-type", FORM),
        ("origin", same.as_str()),
        ("sec-fetch-site", "same-origin"),
    ];
    if !cookies.is_empty() {
        h.push(("cookie", cookies.as_str()));
    }
    let r = scan.send(Method::POST, "/code", &h, body.as_bytes());
    redirected_session(&r);

    // The code API, forged as a text/plain form.
    let code = new_code(s, &f.admin);
    let path = format!("/api/v1/codes/{code}/redeem");
    let r = scan.send(
        Method::POST,
        &path,
        &[
            ("content-type", "text/plain"),
            ("origin", EVIL),
            ("sec-fetch-site", "cross-site"),
        ],
        br#"{"name":"Mallory"}"#,
    );
    let joined = set_cookie(&r, "custos_customer");
    assert!(
        matches!(r.status, 403 | 415) && joined.is_none(),
        "MISSING: a cross-site form redeems a code: POST {path} from {EVIL} answered {} and set \
         {joined:?}; refuse a foreign Origin in src/web/sessions.rs `redeem_code`",
        r.status
    );
    let r = scan.json(Method::POST, &path, None, &json!({ "name": "Ada" }));
    assert_eq!(r.status, 201, "a program redeems: {}", r.error_message());
    scan.finish();
}

/// The customer cookie may change nothing (cancel, end, survey, files) without the CSRF header
/// the login cookie needs: SameSite=Strict alone lets a page on the same site (another port or
/// subdomain) through. `sessions::customer_token` requires `X-Custos-CSRF: 1` for a change
/// carried by the cookie (the customer page's script sends it on every change);
/// `Authorization: Customer` stays exempt, like bearer tokens.
#[test]
fn customer_cookie_changes_need_the_csrf_header() {
    let f = fixture(false);
    let s = &f.s;
    let scan = Scan::new(s);
    let same = format!("https://{}", s.addr);
    let (id, token) = new_request(&scan, "Ada");
    let cookie = format!("custos_customer={token}");
    let forged = [
        ("cookie", cookie.as_str()),
        ("content-type", "text/plain"),
        ("origin", EVIL),
        ("sec-fetch-site", "same-site"),
    ];
    for path in [
        format!("/api/v1/requests/{id}/cancel"),
        format!("/api/v1/sessions/{id}/end"),
    ] {
        let r = scan.send(Method::POST, &path, &forged, b"");
        let status = customer_view(&scan, &id, &token).json().unwrap()["status"].clone();
        assert!(
            r.status == 403 && status == "waiting",
            "MISSING: the customer cookie without X-Custos-CSRF changed the session: POST {path} \
             answered {} and the session is now {status}; require the header for cookie-borne \
             customer tokens in src/web/sessions.rs `party` and `cancel_request`",
            r.status
        );
    }
    let r = scan.send(
        Method::POST,
        &format!("/api/v1/requests/{id}/cancel"),
        &[
            ("cookie", cookie.as_str()),
            ("x-custos-csrf", "1"),
            ("origin", same.as_str()),
            ("content-type", "application/json"),
        ],
        b"",
    );
    assert_eq!(
        r.status,
        200,
        "the customer page's own cancel: {}",
        r.error_message()
    );
    let (id2, token2) = new_request(&scan, "Ada");
    let auth = format!("Customer {token2}");
    let r = scan.send(
        Method::POST,
        &format!("/api/v1/requests/{id2}/cancel"),
        &[("authorization", auth.as_str())],
        b"",
    );
    assert_eq!(r.status, 200, "a program's cancel: {}", r.error_message());
    scan.finish();
}
