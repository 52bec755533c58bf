//! Runs the console's commands against the appliance's API (the Unix socket or HTTPS) and turns
//! the answers into display rows. Every act goes through the same endpoints, permission checks
//! and audit entries as the web.

use hyper::Method;
use serde_json::{Value, json};

use super::state::{
    AgentRow, Alert, AuditLine, Command, Detail, ExportProgress, HoldRow, Outcome, PlanLine,
    QueueRow, SessionRow, SystemInfo, Today, TokenLine, UserLine, Verification, audit_params,
    search_params,
};
use crate::client::{Endpoint, percent_encode as enc};

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

struct Call<'a> {
    ep: &'a Endpoint,
    token: Option<&'a str>,
}

impl Call<'_> {
    /// Sends a request; an error status becomes `Outcome::Failed` with the appliance's message.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<crate::client::Response, Outcome> {
        let r = self
            .ep
            .request(method, path, self.token, body.as_ref())
            .await
            .map_err(|e| Outcome::Failed {
                message: format!("cannot reach the appliance: {e}"),
                unauthorized: false,
            })?;
        if r.status >= 400 {
            let v = r.json().unwrap_or(Value::Null);
            let message = v["error"]["message"]
                .as_str()
                .map_or_else(|| format!("HTTP {}", r.status), String::from);
            if r.status == 503 && v["error"]["code"] == "sealed" {
                return Err(Outcome::Sealed(message));
            }
            return Err(Outcome::Failed {
                message,
                unauthorized: r.status == 401,
            });
        }
        Ok(r)
    }

    async fn go(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Outcome> {
        Ok(self
            .send(method, path, body)
            .await?
            .json()
            .unwrap_or(Value::Null))
    }
}

/// The name and key hash of a note verifier key (`name+hash+key`, the key in base64, which may
/// hold `+` itself): what identifies the key.
fn key_id(vkey: &str) -> String {
    let mut parts = vkey.splitn(3, '+');
    match (parts.next(), parts.next()) {
        (Some(name), Some(hash)) => format!("{name}+{hash}"),
        _ => vkey.to_string(),
    }
}

fn system_info(v: &Value) -> SystemInfo {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let today = &v["today"]["sessions"];
    let storage = &v["storage"];
    let cp = &v["latest_checkpoint"];
    SystemInfo {
        appliance_id: s(&v["appliance_id"]),
        version: s(&v["version"]),
        sealed: v["sealed"] == true,
        unseal_mode: s(&v["unseal_mode"]),
        kek_epoch: n(&v["kek_epoch"]),
        audit_entries: n(&v["audit_entries"]),
        checkpoint_size: v["latest_checkpoint_size"].as_u64(),
        checkpoint_at: s(&cp["created_at"]),
        checkpoint_key: key_id(&s(&cp["vkey"])),
        fingerprint: s(&v["tls_fingerprint_sha256"]),
        holds_active: n(&v["holds_active"]),
        archive_objects: n(&storage["archive_objects"]),
        archive_bytes: n(&storage["archive_bytes"]),
        database_bytes: n(&storage["database_bytes"]),
        disk: storage["disk"]["total_bytes"]
            .as_u64()
            .zip(storage["disk"]["free_bytes"].as_u64()),
        today: Today {
            requested: n(&today["requested"]),
            accepted: n(&today["accepted"]),
            ended: n(&today["ended"]),
            cancelled: n(&today["cancelled"]),
            surveys: n(&today["surveys"]),
            survey_average: today["survey_average"].as_f64(),
        },
        services: v["services"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|x| (s(&x["name"]), s(&x["state"]), s(&x["detail"])))
            .collect(),
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS`.
fn when(v: &Value) -> String {
    s(v).get(..19).unwrap_or("").replace('T', " ")
}

/// The session's events in time order, one line each, from its detail.
fn timeline(v: &Value) -> Vec<String> {
    let mut ev: Vec<(String, String)> = Vec::new();
    let t = &v["timings"];
    ev.push((
        s(&t["requested_at"]),
        format!(
            "requested by {} on {}/{}",
            s(&v["request"]["name"]),
            s(&v["portal"]),
            s(&v["skill"])
        ),
    ));
    if !t["accepted_at"].is_null() {
        ev.push((
            s(&t["accepted_at"]),
            format!("accepted by {}", s(&v["agent"])),
        ));
    }
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    for p in list("participants") {
        ev.push((
            s(&p["joined_at"]),
            format!("{} {} joined", s(&p["kind"]), s(&p["name"])),
        ));
        if !p["left_at"].is_null() {
            ev.push((
                s(&p["left_at"]),
                format!("{} {} left", s(&p["kind"]), s(&p["name"])),
            ));
        }
    }
    for m in list("transcript") {
        let what = match s(&m["type"]).as_str() {
            "chat" => "chat",
            "url" => "link sent",
            "note" => "note",
            "sensitive" => "message marked sensitive",
            "file" => continue,
            other => {
                ev.push((s(&m["at"]), format!("{other} ({})", s(&m["name"]))));
                continue;
            }
        };
        ev.push((s(&m["at"]), format!("{what} from {}", s(&m["name"]))));
    }
    for f in list("files") {
        ev.push((
            s(&f["at"]),
            format!(
                "file {} ({} bytes) from {}",
                s(&f["name"]),
                s(&f["size"]),
                s(&f["from"])
            ),
        ));
    }
    for d in list("diagnostics") {
        let os = &d["os"];
        ev.push((
            s(&d["collected_at"]),
            format!(
                "diagnostics received: {} {}",
                s(&os["name"]),
                s(&os["version"])
            ),
        ));
    }
    if !v["survey"].is_null() {
        ev.push((
            s(&v["survey"]["at"]),
            format!("survey: rated {} of 5", s(&v["survey"]["rating"])),
        ));
    }
    if !t["ended_at"].is_null() {
        ev.push((s(&t["ended_at"]), format!("session {}", s(&v["status"]))));
    }
    // Times share one format, so they sort as text; a stable sort keeps the order of equals.
    ev.sort_by(|a, b| a.0.cmp(&b.0));
    ev.into_iter()
        .map(|(at, what)| format!("{} {what}", at.get(..19).unwrap_or("").replace('T', " ")))
        .collect()
}

/// Writes a new file readable by its owner only; never replaces one.
fn write_new(path: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {path}: {e}"))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("writing {path}: {e}"))
}

fn verification(v: &Value) -> Verification {
    let r = &v["result"];
    let summary = match v["state"].as_str() {
        Some("intact") => format!(
            "Audit log intact: {} entries, {} checkpoints verified; root {}…; key {}",
            s(&r["entries"]),
            s(&r["checkpoints"]),
            s(&r["root"]).get(..16).unwrap_or(""),
            s(&r["key"]).split('+').next().unwrap_or("")
        ),
        Some("broken") => format!("AUDIT LOG BROKEN: {}", s(&r["problem"])),
        Some("failed") => format!("Verification could not run: {}", s(&r["error"])),
        _ => String::new(),
    };
    Verification {
        id: v["id"].as_u64().unwrap_or(0),
        state: s(&v["state"]),
        checked: v["checked"].as_u64().unwrap_or(0),
        total: v["total"].as_u64().unwrap_or(0),
        summary,
    }
}

/// A policy as the console lists it, from its stored JSON.
fn policy_line(p: &Value) -> super::state::PolicyLine {
    let list = |k: &str| -> Vec<String> {
        p[k].as_array()
            .map(|a| a.iter().map(s).collect())
            .unwrap_or_default()
    };
    let mut selects = Vec::new();
    for (label, k) in [
        ("classes", "classes"),
        ("portals", "portals"),
        ("skills", "skills"),
    ] {
        let v = list(k);
        if !v.is_empty() {
            selects.push(format!("{label} {}", v.join(",")));
        }
    }
    if let Some(f) = p["fields"].as_object().filter(|f| !f.is_empty()) {
        let pairs: Vec<String> = f.iter().map(|(k, v)| format!("{k}={}", s(v))).collect();
        selects.push(format!("fields {}", pairs.join(",")));
    }
    super::state::PolicyLine {
        name: s(&p["name"]),
        selects: if selects.is_empty() {
            "everything".into()
        } else {
            selects.join("; ")
        },
        retain_days: p["retain_days"].as_u64().unwrap_or(0),
        action: s(&p["action"]),
        mode: s(&p["mode"]),
    }
}

fn export_progress(v: &Value, path: String) -> ExportProgress {
    ExportProgress {
        id: v["id"].as_u64().unwrap_or(0),
        state: s(&v["state"]),
        done: v["done"].as_u64().unwrap_or(0),
        total: v["total"].as_u64().unwrap_or(0),
        path,
        message: String::new(),
    }
}

/// Seal and unseal are offered only on the appliance's own Unix socket.
fn local(o: Outcome) -> Outcome {
    match o {
        Outcome::Failed { message, .. } if message == "no such endpoint" => Outcome::Failed {
            message: "seal and unseal are offered only on the appliance itself: run custos console there (its Unix socket)".into(),
            unauthorized: false,
        },
        other => other,
    }
}

pub async fn run(ep: &Endpoint, token: Option<&str>, cmd: Command) -> Outcome {
    let call = Call { ep, token };
    match execute(&call, cmd).await {
        Ok(o) | Err(o) => o,
    }
}

async fn execute(c: &Call<'_>, cmd: Command) -> Result<Outcome, Outcome> {
    Ok(match cmd {
        Command::Login { name, password } => {
            let v = c
                .go(
                    Method::POST,
                    "/api/v1/auth/login",
                    Some(json!({ "name": name, "password": password })),
                )
                .await?;
            if v["password_change_required"] == true {
                return Err(Outcome::Failed {
                    message: "this account's password must be changed first: sign in on the web at /agent".into(),
                    unauthorized: true,
                });
            }
            Outcome::LoggedIn {
                token: s(&v["token"]),
                name: s(&v["user"]["name"]),
                role: s(&v["user"]["role"]),
            }
        }
        Command::LoadDashboard => {
            let agents = c.go(Method::GET, "/api/v1/monitors/agents", None).await?;
            let queues = c.go(Method::GET, "/api/v1/monitors/queues", None).await?;
            let system = c.go(Method::GET, "/api/v1/system", None).await.ok();
            let list = |v: &Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
            let mut agents: Vec<AgentRow> = list(&agents, "agents")
                .iter()
                .map(|a| AgentRow {
                    name: s(&a["name"]),
                    status: s(&a["status"]),
                    since_s: a["since_s"].as_u64().unwrap_or(0),
                    sessions: a["sessions"].as_u64().unwrap_or(0),
                })
                .collect();
            agents.sort_by(|a, b| a.name.cmp(&b.name));
            let queues = list(&queues, "queues")
                .iter()
                .map(|q| QueueRow {
                    portal: s(&q["portal"]),
                    skill: s(&q["skill"]),
                    waiting: q["waiting"].as_u64().unwrap_or(0),
                    longest_wait_s: q["longest_wait_s"].as_u64().unwrap_or(0),
                })
                .collect();
            let system = system.as_ref().map(system_info);
            // The latest alerts, for roles that read the audit log.
            let alerts = c
                .go(
                    Method::GET,
                    "/api/v1/audit/entries?action=alert.raised&limit=5",
                    None,
                )
                .await
                .map(|v| {
                    list(&v, "entries")
                        .iter()
                        .rev()
                        .map(|e| Alert {
                            time: when(&e["time"]),
                            summary: s(&e["details"]["summary"]),
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Sessions per day over the last 14 days, for roles that see monitors.
            let today = time::OffsetDateTime::now_utc().date();
            let first = today - time::Duration::days(13);
            let per_day = c
                .go(
                    Method::GET,
                    &format!("/api/v1/reports/sessions?by=day&since={first}"),
                    None,
                )
                .await
                .map(|v| {
                    let rows = list(&v, "rows");
                    (0..14)
                        .map(|i| {
                            let day = (first + time::Duration::days(i)).to_string();
                            rows.iter()
                                .find(|r| r["key"] == day.as_str())
                                .and_then(|r| r["sessions"].as_u64())
                                .unwrap_or(0)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Outcome::Dashboard {
                agents,
                queues,
                system,
                alerts,
                per_day,
            }
        }
        Command::LoadSessions {
            after,
            query,
            reason,
        } => {
            let (filters, words) = search_params(&query).map_err(|message| Outcome::Failed {
                message,
                unauthorized: false,
            })?;
            let mut path = if words.is_empty() {
                let mut p = "/api/v1/sessions?limit=200".to_string();
                if let Some(a) = &after {
                    p.push_str(&format!("&after={}", enc(a)));
                }
                p
            } else {
                // A search of transcript words: one page of the newest matches.
                let mut p = format!(
                    "/api/v1/sessions/search?limit=200&words={}",
                    enc(&words.join(" "))
                );
                if let Some(r) = &reason {
                    p.push_str(&format!("&reason={}", enc(r)));
                }
                p
            };
            for (k, v) in filters {
                path.push_str(&format!("&{k}={}", enc(&v)));
            }
            let v = c.go(Method::GET, &path, None).await?;
            let rows: Vec<SessionRow> = v["sessions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|r| SessionRow {
                    id: s(&r["session_id"]),
                    status: s(&r["status"]),
                    portal: s(&r["portal"]),
                    agent: s(&r["agent"]),
                    external_ref: s(&r["ref"]),
                    requested_at: s(&r["requested_at"]),
                    survey: r["survey_rating"].as_i64(),
                })
                .collect();
            let next = (rows.len() == 200 && words.is_empty()).then(|| s(&v["next_cursor"]));
            Outcome::Sessions { rows, next }
        }
        Command::LoadDetail { id, reason } => {
            let mut path = format!("/api/v1/sessions/{}", enc(&id));
            if let Some(r) = &reason {
                path.push_str(&format!("?reason={}", enc(r)));
            }
            let v = c.go(Method::GET, &path, None).await?;
            let fields = vec![
                ("Status".to_string(), s(&v["status"])),
                ("Customer".into(), s(&v["request"]["name"])),
                ("Question".into(), s(&v["request"]["question"])),
                (
                    "Portal".into(),
                    format!("{} / {}", s(&v["portal"]), s(&v["skill"])),
                ),
                ("Agent".into(), s(&v["agent"])),
                ("Reference".into(), s(&v["ref"])),
                ("Requested".into(), s(&v["timings"]["requested_at"])),
                ("Ended".into(), s(&v["timings"]["ended_at"])),
                ("Survey".into(), s(&v["survey"]["rating"])),
                (
                    "Files".into(),
                    v["files"].as_array().map_or(0, Vec::len).to_string(),
                ),
            ];
            let timeline = timeline(&v);
            let transcript = v["transcript"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    let what = m.get("text").or(m.get("url")).map(s).unwrap_or_default();
                    format!(
                        "{} {} ({}): {what}",
                        s(&m["at"]).get(11..19).unwrap_or(""),
                        s(&m["name"]),
                        s(&m["type"])
                    )
                })
                .collect();
            // The access history is for roles that read compliance data; others see none.
            let access = match c
                .go(
                    Method::GET,
                    &format!("/api/v1/sessions/{}/access", enc(&id)),
                    None,
                )
                .await
            {
                Ok(a) => a["access"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|e| {
                        let why = e["details"]["reason"]
                            .as_str()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default();
                        format!(
                            "{} {} ({}) {} {}{why}",
                            s(&e["time"]).get(..19).unwrap_or("").replace('T', " "),
                            s(&e["actor"]),
                            s(&e["role"]),
                            s(&e["action"]),
                            s(&e["outcome"])
                        )
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            // Retention of each part, for roles that read compliance data.
            let retention = match c
                .go(
                    Method::GET,
                    &format!("/api/v1/retention/plan?session={}", enc(&id)),
                    None,
                )
                .await
            {
                Ok(p) => p["objects"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|o| {
                        let until = match o["expires_at"].as_str() {
                            Some(t) => format!("until {}", t.get(..10).unwrap_or(t)),
                            None => "kept (no policy)".into(),
                        };
                        let held = match o["holds"].as_array() {
                            Some(h) if !h.is_empty() => format!(
                                ", held by {}",
                                h.iter()
                                    .map(|id| format!("hold {}", s(id)))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                            _ => String::new(),
                        };
                        format!(
                            "{} {until}{held}{}",
                            s(&o["class"]),
                            o["policy"]
                                .as_str()
                                .map(|p| format!(" ({p})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            Outcome::Detail(Detail {
                id,
                fields,
                transcript,
                access,
                timeline,
                retention,
                show_timeline: false,
                scroll: 0,
            })
        }
        Command::LoadHolds => {
            let v = c.go(Method::GET, "/api/v1/holds", None).await?;
            Outcome::Holds(
                v["holds"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|h| HoldRow {
                        id: h["id"].as_i64().unwrap_or(0),
                        scope: s(&h["scope"]),
                        value: s(&h["value"]),
                        case_id: s(&h["case_id"]),
                        reason: s(&h["reason"]),
                        placed_by: s(&h["placed_by"]),
                        placed_at: s(&h["placed_at"]),
                    })
                    .collect(),
            )
        }
        Command::PlaceHold {
            session,
            reason,
            case,
        } => {
            let v = c
                .go(
                    Method::POST,
                    "/api/v1/holds",
                    Some(json!({ "session": session, "reason": reason, "case": case })),
                )
                .await?;
            Outcome::Done(format!(
                "hold {} placed on session {session}",
                s(&v["hold_id"])
            ))
        }
        Command::ReleaseHold { id, reason } => {
            c.go(
                Method::POST,
                &format!("/api/v1/holds/{id}/release"),
                Some(json!({ "reason": reason })),
            )
            .await?;
            Outcome::Done(format!("hold {id} released"))
        }
        Command::LoadSystem => Outcome::System(system_info(
            &c.go(Method::GET, "/api/v1/system", None).await?,
        )),
        Command::LoadUsers => {
            let users = c.go(Method::GET, "/api/v1/users", None).await?;
            let tokens = c.go(Method::GET, "/api/v1/tokens", None).await?;
            let list = |v: &Value, k: &str| v[k].as_array().cloned().unwrap_or_default();
            Outcome::Users {
                users: list(&users, "users")
                    .iter()
                    .map(|u| UserLine {
                        name: s(&u["name"]),
                        role: s(&u["role"]),
                        disabled: u["disabled"] == true,
                        created_at: s(&u["created_at"]),
                    })
                    .collect(),
                tokens: list(&tokens, "tokens")
                    .iter()
                    .map(|t| TokenLine {
                        id: s(&t["id"]),
                        user: s(&t["user"]),
                        name: s(&t["name"]),
                        scopes: t["scopes"]
                            .as_array()
                            .map_or("all of the role".into(), |a| {
                                a.iter().map(s).collect::<Vec<_>>().join(",")
                            }),
                        expires_at: s(&t["expires_at"]),
                    })
                    .collect(),
            }
        }
        Command::LoadPlan => {
            let now = time::OffsetDateTime::now_utc();
            let mut lines: Vec<PlanLine> = Vec::new();
            for (i, days) in [0i64, 30, 90, 365].into_iter().enumerate() {
                let at = crate::model::format_rfc3339(now + time::Duration::days(days));
                let v = c
                    .go(
                        Method::GET,
                        &format!("/api/v1/retention/plan?at={}", enc(&at)),
                        None,
                    )
                    .await?;
                for o in v["objects"].as_array().cloned().unwrap_or_default() {
                    let policy = o["policy"]
                        .as_str()
                        .unwrap_or("(no policy: kept)")
                        .to_string();
                    let line = match lines.iter_mut().position(|l| l.policy == policy) {
                        Some(p) => &mut lines[p],
                        None => {
                            lines.push(PlanLine {
                                policy,
                                ..Default::default()
                            });
                            lines.last_mut().expect("just pushed")
                        }
                    };
                    if o["due"] == true {
                        line.due[i] += 1;
                    }
                    if i == 0 {
                        line.total += 1;
                        line.held +=
                            u64::from(o["holds"].as_array().is_some_and(|h| !h.is_empty()));
                    }
                }
            }
            lines.sort_by(|a, b| a.policy.cmp(&b.policy));
            let v = c.go(Method::GET, "/api/v1/policies", None).await?;
            let policies = v["policies"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(policy_line)
                .collect();
            Outcome::Plan { lines, policies }
        }
        Command::CheckPolicies { dir } => {
            let checked =
                tokio::task::spawn_blocking(move || crate::policy::load_dir(dir.as_ref()))
                    .await
                    .map_err(|e| Outcome::Failed {
                        message: format!("the check failed: {e}"),
                        unauthorized: false,
                    })?;
            match checked {
                Ok(set) => {
                    let mut lines: Vec<String> = set
                        .policies
                        .iter()
                        .map(|p| {
                            let l = policy_line(&serde_json::to_value(p).unwrap_or_default());
                            format!(
                                "ok  {}: {} days, {}, {} ({})",
                                l.name, l.retain_days, l.action, l.mode, p.file
                            )
                        })
                        .collect();
                    lines.push(format!(
                        "{} policies valid; set sha256 {}",
                        set.policies.len(),
                        hex::encode(set.hash)
                    ));
                    Outcome::PolicyCheck { valid: true, lines }
                }
                Err(errors) => Outcome::PolicyCheck {
                    valid: false,
                    lines: errors.iter().map(ToString::to_string).collect(),
                },
            }
        }
        Command::Export {
            sessions,
            reason,
            recipients,
            path,
        } => {
            if std::path::Path::new(&path).exists() {
                return Err(Outcome::Failed {
                    message: format!("{path} already exists; choose another name"),
                    unauthorized: false,
                });
            }
            let body = json!({ "sessions": sessions, "reason": reason, "recipients": recipients });
            let v = c
                .go(Method::POST, "/api/v1/exports/jobs", Some(body))
                .await?;
            Outcome::Export(export_progress(&v, path))
        }
        Command::PollExport { id, path } => {
            let v = c
                .go(Method::GET, &format!("/api/v1/exports/jobs/{id}"), None)
                .await?;
            let mut p = export_progress(&v, path);
            match v["state"].as_str() {
                Some("ready") => {
                    let r = c
                        .send(
                            Method::GET,
                            &format!("/api/v1/exports/jobs/{id}/bundle"),
                            None,
                        )
                        .await?;
                    p.state = "written".into();
                    p.message = match write_new(&p.path, &r.body) {
                        Ok(()) => format!(
                            "wrote export {} ({} sessions, {} bytes) to {}; check it with custos verify",
                            s(&v["export_id"]),
                            p.total,
                            r.body.len(),
                            p.path
                        ),
                        Err(e) => {
                            p.state = "failed".into();
                            e
                        }
                    };
                }
                Some("running") => {}
                _ => {
                    p.state = "failed".into();
                    p.message = format!("the export failed: {}", s(&v["error"]));
                }
            }
            Outcome::Export(p)
        }
        Command::Seal { passphrase } => {
            let body = passphrase.map_or(json!({}), |p| json!({ "passphrase": p }));
            c.go(Method::POST, "/api/v1/system/seal", Some(body))
                .await
                .map_err(local)?;
            Outcome::Done("the appliance is sealed".into())
        }
        Command::Unseal { passphrase } => {
            let body = json!({ "passphrase": passphrase });
            c.go(Method::POST, "/api/v1/system/unseal", Some(body))
                .await
                .map_err(local)?;
            Outcome::Done("the appliance is unsealed".into())
        }
        Command::CreateUser { name, role } => {
            let v = c
                .go(
                    Method::POST,
                    "/api/v1/users",
                    Some(json!({ "name": name, "role": role })),
                )
                .await?;
            Outcome::Done(format!(
                "user {name} ({role}) created; one-time password {} (shown once; changed at first sign-in)",
                s(&v["one_time_password"])
            ))
        }
        Command::DisableUser { name } => {
            c.go(
                Method::POST,
                &format!("/api/v1/users/{}/disable", enc(&name)),
                Some(json!({})),
            )
            .await?;
            Outcome::Done(format!("user {name} disabled"))
        }
        Command::RevokeToken { id } => {
            c.go(
                Method::DELETE,
                &format!("/api/v1/tokens/{}", enc(&id)),
                None,
            )
            .await?;
            Outcome::Done(format!("token {id} revoked"))
        }
        Command::RotateKeys => {
            let v = c
                .go(Method::POST, "/api/v1/system/rotate", Some(json!({})))
                .await?;
            Outcome::Done(format!(
                "key epoch {} is current: {} data keys re-wrapped, {} old epochs retired",
                s(&v["new_epoch"]),
                s(&v["rewrapped"]),
                s(&v["retired_epochs"])
            ))
        }
        Command::StartVerify => Outcome::Verify(verification(
            &c.go(Method::POST, "/api/v1/audit/verify", Some(json!({})))
                .await?,
        )),
        Command::PollVerify { id } => Outcome::Verify(verification(
            &c.go(Method::GET, &format!("/api/v1/audit/verify/{id}"), None)
                .await?,
        )),
        Command::LoadAudit { filter } => {
            let filters = audit_params(&filter).map_err(|message| Outcome::Failed {
                message,
                unauthorized: false,
            })?;
            let mut path = "/api/v1/audit/entries?limit=500".to_string();
            for (k, v) in filters {
                path.push_str(&format!("&{k}={}", enc(&v)));
            }
            let v = c.go(Method::GET, &path, None).await?;
            let checkpoint = c
                .go(Method::GET, "/api/v1/audit/checkpoint", None)
                .await
                .ok()
                .and_then(|cp| Some((cp["size"].as_u64()?, key_id(&s(&cp["vkey"])))));
            let entries = v["entries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| AuditLine {
                    seq: e["seq"].as_u64().unwrap_or(0),
                    time: s(&e["time"]),
                    actor: s(&e["actor"]),
                    action: s(&e["action"]),
                    target: s(&e["target"]),
                    outcome: s(&e["outcome"]),
                })
                .collect();
            Outcome::Audit {
                entries,
                checkpoint,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_is_named_by_its_name_and_hash_even_when_its_base64_holds_a_plus() {
        assert_eq!(
            super::key_id("custos/ab12+22baa958+ARMk+fRNujszuc2R7402"),
            "custos/ab12+22baa958"
        );
        assert_eq!(super::key_id("nonsense"), "nonsense");
    }
}
