//! `DIR/custos.toml`: parsed strictly (unknown keys are errors) and validated, every error
//! naming the file and line. A default file with comments is written at first start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::integrations::settings;

pub const FILE_NAME: &str = "custos.toml";

pub const DEFAULT_TOML: &str = r##"# Custos appliance configuration. Changes take effect at the next start of `custos serve`.
# Every key is optional; the values shown are the defaults.

[server]
# Address and port of the HTTPS listener. `--listen` on the command line overrides it.
listen = "127.0.0.1:8443"
# Extra DNS names or IP addresses for the self-signed certificate (localhost and 127.0.0.1 are
# always included). Takes effect when the certificate is generated, at first start.
hostnames = []

[tls]
# To use a certificate of your own instead of the generated one, give both paths (PEM).
# cert = "/etc/custos/cert.pem"
# key = "/etc/custos/key.pem"

[keys]
# An offline recovery key (an age X25519 recipient, from `age-keygen`): every data key is also
# wrapped to it, so the archive stays readable with its identity if the master key is lost.
# Keep the identity offline. Objects from before it was set get their wrap at the next
# `custos key rotate`.
# recovery_recipient = "age1..."

[archive]
# How often open archive objects are made durable, in milliseconds (50 to 1000). A crash loses
# at most this much of a recording.
sync_interval_ms = 1000
# New sessions are refused (HTTP 507, "storage_full") while the file system holding the data
# directory has less free space than this, in MiB (1 to 1048576), so that sessions already
# running can finish and be sealed. They are accepted again as soon as space frees.
min_free_mb = 256

[audit]
# How often a signed checkpoint is written while audit entries arrive, in seconds (1 to 3600).
checkpoint_interval_s = 5

[auth]
# Lifetime of a login token, in seconds (300 to 604800).
session_ttl_s = 43200

[sessions]
# Largest file either side may send in a session, in bytes.
max_file_bytes = 104857600
# Sessions one agent may handle at once.
max_per_agent = 4
# Seconds an agent may be disconnected before their sessions go back to the queue.
agent_grace_s = 60
# Lifetime of a connection code, in seconds (60 to 3600).
code_ttl_s = 600

# Portals: each is a branded support-request form at /p/NAME with its own queue per skill.
# Fields are typed: text, email, number, tel or select (with options). Hidden fields are not
# shown; a web site or program fills them through the query string or the API.
[[portal]]
name = "support"
title = "Support"
welcome = "Tell us what you need and an agent will be with you shortly."
skills = ["general"]
# color = "#0b5fff"
# recording = true
# Masking applied to chat before it is relayed or stored: card, us-ssn, iban.
redact = ["card", "us-ssn", "iban"]

# [[portal.field]]
# name = "serial"
# label = "Device serial number"
# kind = "text"
# hidden = true

# Canned replies offered to agents in the console.
[[canned]]
title = "Greeting"
text = "Hello, thank you for contacting us. How can I help?"

[[canned]]
title = "Closing"
text = "Is there anything else I can help you with today?"

# Webhooks are registered through the API (/api/v1/webhooks). Their deliveries, and alert
# e-mails, wait in a durable outbox and are retried with exponential backoff.
# [delivery]
# First retry after this many milliseconds; each further retry waits twice as long.
# initial_backoff_ms = 10000
# The longest wait between two attempts, in seconds.
# max_backoff_s = 3600
# A delivery not accepted within this many hours is marked failed (an admin can retry it).
# give_up_after_h = 72
# How long one attempt may take, in seconds.
# timeout_s = 10

# Alerts go to every webhook that subscribes to "alert", to the e-mail addresses below, and
# to every [[syslog]] sink that forwards "alerts". Leave a threshold out to turn it off.
# [alerts]
# survey_rating_at_or_below = 2
# queue_length_above = 10
# queue_wait_above_s = 300
# Agents expected online in business hours; an alert when one is offline for longer than
# agent_offline_after_s.
# agents_on_duty = ["alice", "bob"]
# agent_offline_after_s = 300
# business_hours = "Mon-Fri 08:00-18:00"
# utc_offset = "+01:00"
# email_to = ["oncall@example.org"]
# A condition that persists is reported again after this many seconds.
# repeat_after_s = 1800

# [smtp]
# server = "mail.example.org:587"
# from = "custos@example.org"
# starttls = true
# username = "custos"
# password_file = "/etc/custos/smtp-password"
# ca_file = "/etc/custos/mail-ca.pem"

# Audit entries, checkpoints and alerts as RFC 5424 syslog (octet-counted) over TCP or TLS.
# [[syslog]]
# name = "siem"
# address = "siem.example.org:6514"
# transport = "tls"
# ca_file = "/etc/custos/siem-ca.pem"
# forward = ["audit", "checkpoints", "alerts"]

# Knowledge base: a folder of Markdown articles, indexed at start and when changed.
# [knowledge]
# articles = "/etc/custos/articles"

# Keep a database of your own current with the session records (docs/database-schema.md), through
# the API with a token of scope read_any_session. schedule: "follow" (real time, the default),
# "every 15m", or "daily 02:00" (UTC). This file then holds the database password: keep it private.
# [[sync]]
# to = "postgres://bi:PASSWORD@db.example.org:5432/custos"
# token_file = "/etc/custos/sync.token"
# schedule = "follow"
"##;

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    archive: RawArchive,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    sessions: RawSessions,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    portal: Vec<RawPortal>,
    #[serde(default)]
    canned: Vec<Canned>,
    #[serde(default)]
    delivery: settings::RawDelivery,
    #[serde(default)]
    alerts: settings::RawAlerts,
    smtp: Option<settings::RawSmtp>,
    #[serde(default)]
    syslog: Vec<settings::RawSyslog>,
    #[serde(default)]
    knowledge: settings::RawKnowledge,
    #[serde(default)]
    sync: Vec<RawSync>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    to: Spanned<String>,
    token_file: Spanned<String>,
    schedule: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    recovery_recipient: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    max_file_bytes: Option<Spanned<i64>>,
    max_per_agent: Option<Spanned<i64>>,
    agent_grace_s: Option<Spanned<i64>>,
    code_ttl_s: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    name: Spanned<String>,
    title: Spanned<String>,
    #[serde(default = "yes")]
    public: bool,
    #[serde(default)]
    welcome: String,
    logo: Option<Spanned<String>>,
    color: Option<Spanned<String>>,
    #[serde(default = "yes")]
    recording: bool,
    #[serde(default)]
    redact: Vec<Spanned<String>>,
    skills: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    field: Vec<RawField>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    name: Spanned<String>,
    label: String,
    kind: Option<Spanned<String>>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    hidden: bool,
    #[serde(default)]
    options: Vec<String>,
    max_len: Option<usize>,
}

/// A canned reply offered to agents.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Canned {
    pub title: String,
    pub text: String,
}

/// The type of a request-form field, which decides how its value is validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    Text,
    Email,
    Number,
    Tel,
    Select,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct FieldSpec {
    pub name: String,
    pub label: String,
    pub kind: FieldKind,
    pub required: bool,
    pub hidden: bool,
    pub options: Vec<String>,
    pub max_len: usize,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Portal {
    pub name: String,
    pub title: String,
    pub public: bool,
    pub welcome: String,
    pub logo: Option<String>,
    pub color: String,
    pub recording: bool,
    /// Masking applied to chat before it is relayed or stored.
    pub redact: Vec<crate::redact::Rule>,
    pub skills: Vec<String>,
    pub fields: Vec<FieldSpec>,
}

impl Portal {
    pub fn has_skill(&self, skill: &str) -> bool {
        self.skills.iter().any(|s| s == skill)
    }
}

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    hostnames: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    sync_interval_ms: Option<Spanned<i64>>,
    min_free_mb: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_interval_s: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    session_ttl_s: Option<Spanned<i64>>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub hostnames: Vec<String>,
    /// Administrator-provided certificate and key, if any.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub sync_interval_ms: u64,
    /// Free space (bytes) below which new sessions are refused.
    pub min_free_bytes: u64,
    pub checkpoint_interval_s: u64,
    pub session_ttl_s: i64,
    pub max_file_bytes: u64,
    pub max_per_agent: usize,
    pub agent_grace_s: u64,
    pub code_ttl_s: i64,
    pub portals: Vec<Portal>,
    pub canned: Vec<Canned>,
    /// The offline recovery recipient every data key is also wrapped to.
    pub recovery_recipient: Option<crate::age::Recipient>,
    /// Webhook delivery, alerts, e-mail, syslog and the knowledge base.
    pub integrations: settings::Integrations,
    /// Database syncs the appliance runs itself.
    pub sync: Vec<SyncJob>,
}

impl Config {
    pub fn portal(&self, name: &str) -> Option<&Portal> {
        self.portals.iter().find(|p| p.name == name)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(Path::new(FILE_NAME), "").expect("the empty configuration is valid")
    }
}

/// When a configured sync runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Always, in real time.
    Follow,
    /// Once every this long.
    Every(Duration),
    /// Once a day at this UTC hour and minute.
    Daily(u8, u8),
}

impl Schedule {
    /// `follow`, `every N(s|m|h)` (at least 1 s, at most a day) or `daily HH:MM` (UTC).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "follow" {
            return Ok(Schedule::Follow);
        }
        if let Some(n) = s.strip_prefix("every ") {
            let n = n.trim();
            let (num, unit) = n.split_at(n.find(|c: char| !c.is_ascii_digit()).unwrap_or(n.len()));
            let num: u64 = num
                .parse()
                .map_err(|_| format!("{s:?}: every needs a number, as in \"every 15m\""))?;
            let secs = match unit {
                "s" => num,
                "m" => num * 60,
                "h" => num * 3600,
                _ => return Err(format!("{s:?}: the unit is s, m or h")),
            };
            if !(1..=86_400).contains(&secs) {
                return Err(format!("{s:?}: from 1 s to 24 h"));
            }
            return Ok(Schedule::Every(Duration::from_secs(secs)));
        }
        if let Some(hm) = s.strip_prefix("daily ") {
            let bad = || format!("{s:?}: daily needs a UTC time HH:MM, as in \"daily 02:00\"");
            let (h, m) = hm.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u8, u8) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 || hm.trim().len() != 5 {
                return Err(bad());
            }
            return Ok(Schedule::Daily(h, m));
        }
        Err(format!(
            "{s:?} is not a schedule: use \"follow\", \"every 15m\" or \"daily 02:00\""
        ))
    }

    /// How long from `now` until the next daily run.
    pub fn until_next(h: u8, m: u8, now: time::OffsetDateTime) -> Duration {
        let today = now
            .replace_time(time::Time::from_hms(h, m, 0).expect("validated"))
            .replace_nanosecond(0)
            .expect("zero");
        let next = if today > now {
            today
        } else {
            today + time::Duration::days(1)
        };
        (next - now).try_into().unwrap_or(Duration::ZERO)
    }
}

/// One configured sync (`[[sync]]`).
#[derive(Clone, Debug)]
pub struct SyncJob {
    /// The target URL (it may hold a password: never logged whole).
    pub to: String,
    pub token_file: PathBuf,
    pub schedule: Schedule,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn valid_hostname(h: &str) -> bool {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Config {
    /// Reads `DIR/custos.toml`; a missing file means the defaults.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse(&path, ""),
            Err(e) => Err(ConfigError {
                path,
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let err = |span: std::ops::Range<usize>, message: String| ConfigError {
            path: path.to_path_buf(),
            line: line_of(text, span.start),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            err(span, e.message().trim().to_string())
        })?;

        let listen = match &raw.server.listen {
            None => "127.0.0.1:8443".parse().expect("valid default"),
            Some(s) => s.get_ref().parse().map_err(|_| {
                err(
                    s.span(),
                    format!(
                        "server.listen {:?} is not an address like 127.0.0.1:8443",
                        s.get_ref()
                    ),
                )
            })?,
        };
        let mut hostnames = Vec::new();
        for h in &raw.server.hostnames {
            if !valid_hostname(h.get_ref()) {
                return Err(err(
                    h.span(),
                    format!(
                        "server.hostnames: {:?} is not a DNS name or IP address",
                        h.get_ref()
                    ),
                ));
            }
            hostnames.push(h.get_ref().clone());
        }
        let tls_files = match (&raw.tls.cert, &raw.tls.key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                for f in [c, k] {
                    if !Path::new(f.get_ref()).is_file() {
                        return Err(err(
                            f.span(),
                            format!("{:?} does not exist or is not a file", f.get_ref()),
                        ));
                    }
                }
                Some((PathBuf::from(c.get_ref()), PathBuf::from(k.get_ref())))
            }
            (Some(one), None) | (None, Some(one)) => {
                return Err(err(
                    one.span(),
                    "tls.cert and tls.key must be given together".into(),
                ));
            }
        };
        let ranged = |v: &Option<Spanned<i64>>,
                      name: &str,
                      lo: i64,
                      hi: i64,
                      default: i64|
         -> Result<i64, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
                Some(s) => Err(err(
                    s.span(),
                    format!("{name} = {} is out of range ({lo} to {hi})", s.get_ref()),
                )),
            }
        };
        let mut portals: Vec<Portal> = Vec::new();
        for p in &raw.portal {
            let name = p.name.get_ref();
            if !valid_slug(name) {
                return Err(err(
                    p.name.span(),
                    format!("portal name {name:?} must be 1-40 characters of a-z, 0-9, '-' or '_'"),
                ));
            }
            if portals.iter().any(|q| &q.name == name) {
                return Err(err(
                    p.name.span(),
                    format!("portal {name:?} is defined twice"),
                ));
            }
            if p.title.get_ref().trim().is_empty() {
                return Err(err(
                    p.title.span(),
                    format!("portal {name:?} needs a title"),
                ));
            }
            let mut skills: Vec<String> = Vec::new();
            for s in p.skills.get_ref() {
                if !valid_slug(s.get_ref()) || skills.contains(s.get_ref()) {
                    return Err(err(
                        s.span(),
                        format!("skill {:?} is invalid or repeated", s.get_ref()),
                    ));
                }
                skills.push(s.get_ref().clone());
            }
            if skills.is_empty() {
                return Err(err(
                    p.skills.span(),
                    format!("portal {name:?} needs at least one skill"),
                ));
            }
            let color = match &p.color {
                None => "#0b5fff".to_string(),
                Some(c) => {
                    let v = c.get_ref();
                    if v.len() != 7
                        || !v.starts_with('#')
                        || !v[1..].bytes().all(|b| b.is_ascii_hexdigit())
                    {
                        return Err(err(c.span(), format!("color {v:?} must look like #0b5fff")));
                    }
                    v.clone()
                }
            };
            let mut fields: Vec<FieldSpec> = Vec::new();
            for f in &p.field {
                let fname = f.name.get_ref();
                let reserved = ["name", "email", "question", "portal", "skill", "ref"];
                if !valid_slug(fname)
                    || reserved.contains(&fname.as_str())
                    || fields.iter().any(|x| &x.name == fname)
                {
                    return Err(err(
                        f.name.span(),
                        format!("field name {fname:?} is invalid, reserved or repeated"),
                    ));
                }
                let kind = match f.kind.as_ref().map(|k| k.get_ref().as_str()) {
                    None | Some("text") => FieldKind::Text,
                    Some("email") => FieldKind::Email,
                    Some("number") => FieldKind::Number,
                    Some("tel") => FieldKind::Tel,
                    Some("select") => FieldKind::Select,
                    Some(other) => {
                        let span = f.kind.as_ref().expect("matched Some").span();
                        return Err(err(
                            span,
                            format!(
                                "field kind {other:?} is not one of text, email, number, tel, select"
                            ),
                        ));
                    }
                };
                if kind == FieldKind::Select && f.options.is_empty() {
                    return Err(err(
                        f.name.span(),
                        format!("select field {fname:?} needs options"),
                    ));
                }
                fields.push(FieldSpec {
                    name: fname.clone(),
                    label: f.label.clone(),
                    kind,
                    required: f.required,
                    hidden: f.hidden,
                    options: f.options.clone(),
                    max_len: match f.max_len {
                        None => 500,
                        Some(n @ 1..=4000) => n,
                        Some(n) => {
                            return Err(err(
                                f.name.span(),
                                format!(
                                    "field {fname:?}: max_len = {n} is out of range (1 to 4000)"
                                ),
                            ));
                        }
                    },
                });
            }
            let mut redact = Vec::new();
            for r in &p.redact {
                let rule = crate::redact::Rule::parse(r.get_ref()).ok_or_else(|| {
                    err(
                        r.span(),
                        format!(
                            "redact rule {:?} is not one of card, us-ssn, iban",
                            r.get_ref()
                        ),
                    )
                })?;
                redact.push(rule);
            }
            portals.push(Portal {
                redact,
                name: name.clone(),
                title: p.title.get_ref().clone(),
                public: p.public,
                welcome: p.welcome.clone(),
                logo: match &p.logo {
                    None => None,
                    Some(l) => {
                        let path = Path::new(l.get_ref());
                        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
                        let size = std::fs::metadata(path).map(|m| m.len()).ok();
                        if !matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "svg") || size.is_none_or(|s| s > 512 * 1024) {
                            return Err(err(l.span(), format!("logo {:?} must be an existing PNG, JPEG or SVG file of at most 512 KiB", l.get_ref())));
                        }
                        Some(l.get_ref().clone())
                    }
                },
                color,
                recording: p.recording,
                skills,
                fields,
            });
        }
        let recovery_recipient = match &raw.keys.recovery_recipient {
            None => None,
            Some(r) => Some(
                crate::age::Recipient::parse(r.get_ref())
                    .map_err(|e| err(r.span(), format!("keys.recovery_recipient: {e}")))?,
            ),
        };
        let integrations = settings::validate(
            settings::Raw {
                delivery: &raw.delivery,
                alerts: &raw.alerts,
                smtp: raw.smtp.as_ref(),
                syslog: &raw.syslog,
                knowledge: &raw.knowledge,
            },
            &err,
        )?;
        let mut sync = Vec::new();
        for j in &raw.sync {
            let to = j.to.get_ref();
            if ![
                "sqlite:",
                "postgres://",
                "postgresql://",
                "mysql://",
                "mariadb://",
            ]
            .iter()
            .any(|p| to.starts_with(p))
            {
                return Err(err(
                    j.to.span(),
                    "sync.to: give sqlite:PATH, postgres://USER:PASSWORD@HOST/DB or mysql://USER:PASSWORD@HOST/DB".into(),
                ));
            }
            if !Path::new(j.token_file.get_ref()).is_file() {
                return Err(err(
                    j.token_file.span(),
                    format!(
                        "sync.token_file {:?} does not exist or is not a file",
                        j.token_file.get_ref()
                    ),
                ));
            }
            let schedule = match &j.schedule {
                None => Schedule::Follow,
                Some(s) => Schedule::parse(s.get_ref())
                    .map_err(|m| err(s.span(), format!("sync.schedule: {m}")))?,
            };
            sync.push(SyncJob {
                to: to.clone(),
                token_file: PathBuf::from(j.token_file.get_ref()),
                schedule,
            });
        }
        Ok(Config {
            sync,
            integrations,
            recovery_recipient,
            max_file_bytes: ranged(
                &raw.sessions.max_file_bytes,
                "sessions.max_file_bytes",
                1024,
                4 << 30,
                100 << 20,
            )? as u64,
            max_per_agent: ranged(
                &raw.sessions.max_per_agent,
                "sessions.max_per_agent",
                1,
                50,
                4,
            )? as usize,
            agent_grace_s: ranged(
                &raw.sessions.agent_grace_s,
                "sessions.agent_grace_s",
                5,
                3600,
                60,
            )? as u64,
            code_ttl_s: ranged(
                &raw.sessions.code_ttl_s,
                "sessions.code_ttl_s",
                60,
                3600,
                600,
            )?,
            portals,
            canned: raw.canned,
            listen,
            hostnames,
            tls_files,
            sync_interval_ms: ranged(
                &raw.archive.sync_interval_ms,
                "archive.sync_interval_ms",
                50,
                1000,
                1000,
            )? as u64,
            min_free_bytes: (ranged(
                &raw.archive.min_free_mb,
                "archive.min_free_mb",
                1,
                1 << 20,
                256,
            )? as u64)
                << 20,
            checkpoint_interval_s: ranged(
                &raw.audit.checkpoint_interval_s,
                "audit.checkpoint_interval_s",
                1,
                3600,
                5,
            )? as u64,
            session_ttl_s: ranged(
                &raw.auth.session_ttl_s,
                "auth.session_ttl_s",
                300,
                604_800,
                43_200,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("custos.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_default_file_is_valid_and_means_the_defaults() {
        let c = check(DEFAULT_TOML).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.sync_interval_ms, 1000);
        assert_eq!(c.checkpoint_interval_s, 5);
        assert_eq!(c.portals.len(), 1);
        assert_eq!(c.portals[0].skills, vec!["general"]);
        assert_eq!(c.canned.len(), 2);
    }

    #[test]
    fn portal_errors_name_the_line() {
        let e = check("[[portal]]\nname = \"Bad Name\"\ntitle = \"x\"\nskills = [\"a\"]\n")
            .unwrap_err();
        assert!(e.starts_with("custos.toml:2:"), "{e}");
        let e = check("[[portal]]\nname = \"p\"\ntitle = \"x\"\nskills = []\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:4:") && e.contains("at least one skill"),
            "{e}"
        );
        let e = check("[[portal]]\nname = \"p\"\ntitle = \"x\"\nskills = [\"a\"]\n[[portal.field]]\nname = \"f\"\nlabel = \"F\"\nkind = \"blob\"\n").unwrap_err();
        assert!(e.starts_with("custos.toml:8:") && e.contains("blob"), "{e}");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = check("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:2: server.listen \"nowhere\""),
            "{e}"
        );
        let e = check("[server]\n\nbogus = 1\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:3:") && e.contains("bogus"),
            "{e}"
        );
        let e = check("[archive]\nsync_interval_ms = 5000\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:2:") && e.contains("out of range"),
            "{e}"
        );
        let e = check("[server\n").unwrap_err();
        assert!(e.starts_with("custos.toml:1:"), "{e}");
        let e =
            check("[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n").unwrap_err();
        assert!(e.starts_with("custos.toml:2:"), "{e}");
        let e = check("[server]\nhostnames = [\"ok.example\", \"bad host\"]\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:2:") && e.contains("bad host"),
            "{e}"
        );
    }
}
