//! Forwarding to a SIEM: audit entries, signed checkpoints and alerts as RFC 5424 syslog
//! messages, octet-counted (RFC 6587 section 3.4.1, as RFC 5425 requires for TLS), over TCP or
//! TLS.
//!
//! Each sink keeps a durable cursor (the next audit seq and the last checkpoint size sent) that
//! moves only after the messages before it were written and flushed, so a restart or a SIEM
//! outage resumes where it stopped. Delivery is at least once: after a crash a few messages may
//! be sent again; the `seq` parameter identifies them.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::settings::{Syslog, Transport};
use crate::app::App;
use crate::audit::{self, Entry};

/// RFC 5424 facilities: 13 "log audit", 14 "log alert".
const FACILITY_AUDIT: u8 = 13;
const FACILITY_ALERT: u8 = 14;
/// Severities: 4 warning, 5 notice, 6 informational.
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;
/// The structured-data id; 32473 is the private enterprise number RFC 5612 reserves for
/// documentation and examples, used until Custos has its own.
const SD_ID: &str = "custos@32473";
const BATCH: u32 = 500;

/// Escapes a structured-data parameter value (RFC 5424 6.3.3).
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One RFC 5424 message, without framing.
pub fn format(
    facility: u8,
    severity: u8,
    time: &str,
    host: &str,
    msgid: &str,
    params: &[(&str, String)],
    msg: &str,
) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity);
    let mut sd = format!("[{SD_ID}");
    for (k, v) in params {
        sd.push_str(&format!(" {k}=\"{}\"", sd_escape(v)));
    }
    sd.push(']');
    let host = if host.is_empty() { "-" } else { host };
    // The BOM marks MSG as UTF-8 (RFC 5424 6.4).
    format!(
        "<{pri}>1 {time} {host} custos {} {msgid} {sd} \u{feff}{msg}",
        std::process::id()
    )
}

/// The message for one audit entry; alerts get their own facility and severity.
pub fn entry_message(e: &Entry, host: &str) -> String {
    let alert = e.action == "alert.raised";
    let params = [
        ("seq", e.seq.to_string()),
        ("action", e.action.clone()),
        ("actor", e.actor.clone()),
        ("target", e.target.clone()),
        ("outcome", format!("{:?}", e.outcome).to_lowercase()),
    ];
    let (fac, sev, msgid) = if alert {
        (FACILITY_ALERT, WARNING, "alert")
    } else {
        (FACILITY_AUDIT, INFO, "audit")
    };
    let json = serde_json::to_string(e).expect("an entry serializes");
    format(fac, sev, &e.time, host, msgid, &params, &json)
}

pub fn checkpoint_message(size: u64, note: &str, time: &str, host: &str) -> String {
    format(
        FACILITY_AUDIT,
        NOTICE,
        time,
        host,
        "checkpoint",
        &[("size", size.to_string())],
        note,
    )
}

/// Octet-counted framing: `LEN SP MSG`.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

type Stream = Box<dyn AsyncWrite + Unpin + Send>;

async fn connect(sink: &Syslog) -> Result<Stream, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&sink.address))
        .await
        .map_err(|_| format!("connecting to {} timed out", sink.address))?
        .map_err(|e| format!("cannot connect to {}: {e}", sink.address))?;
    let _ = tcp.set_nodelay(true);
    match sink.transport {
        Transport::Tcp => Ok(Box::new(tcp)),
        Transport::Tls => {
            let host = sink.server_name.clone().unwrap_or_else(|| {
                sink.address
                    .rsplit_once(':')
                    .map_or(sink.address.clone(), |h| {
                        h.0.trim_matches(['[', ']']).to_string()
                    })
            });
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
            let cfg = super::http::client_config(sink.ca_file.as_deref())?;
            let tls = TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", sink.address))?;
            Ok(Box::new(tls))
        }
    }
}

/// Forwards to one sink until the app stops.
pub async fn run(app: Arc<App>, sink: Syslog) {
    let mut stop = app.stop.subscribe();
    let host = super::hostname();
    let mut conn: Option<Stream> = None;
    let mut failures = 0u32;
    loop {
        let sent = match forward_batch(&app, &sink, &host, &mut conn).await {
            Ok(n) => {
                failures = 0;
                n
            }
            Err(e) => {
                conn = None;
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(sink = %sink.name, error = %e, "syslog forwarding failed; retrying");
                }
                0
            }
        };
        let wait = if failures > 0 {
            Duration::from_millis((500u64 << failures.min(6)).min(30_000))
        } else if sent > 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        };
        tokio::select! {
            _ = async { drop(stop.wait_for(|s| *s).await) } => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends what is new since the sink's cursor; returns how many messages were sent.
async fn forward_batch(
    app: &Arc<App>,
    sink: &Syslog,
    host: &str,
    conn: &mut Option<Stream>,
) -> Result<usize, String> {
    let name = sink.name.clone();
    let (want_audit, want_cp) = (sink.audit || sink.alerts, sink.checkpoints);
    let (rows, cps, cursor) = app
        .db(move |s| {
            s.read(|tx| {
                let (seq, cp) = tx.forward_cursor(&name)?;
                let mut rows = Vec::new();
                if want_audit {
                    tx.audit_scan(seq, |r| {
                        rows.push(r);
                        Ok(rows.len() < BATCH as usize)
                    })?;
                }
                let cps = if want_cp {
                    tx.checkpoints_after(cp, BATCH)?
                } else {
                    Vec::new()
                };
                Ok((rows, cps, (seq, cp)))
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() && cps.is_empty() {
        return Ok(0);
    }
    let mut out = Vec::new();
    let mut n = 0;
    let (mut next_seq, mut last_cp) = cursor;
    for r in &rows {
        let e = audit::decode(r).map_err(|e| format!("audit entry {}: {e}", r.seq))?;
        next_seq = e.seq + 1;
        if sink.audit || (sink.alerts && e.action == "alert.raised") {
            out.extend(frame(&entry_message(&e, host)));
            n += 1;
        }
    }
    let now = crate::model::now_rfc3339();
    for (size, note) in &cps {
        out.extend(frame(&checkpoint_message(*size, note, &now, host)));
        last_cp = *size;
        n += 1;
    }
    if !out.is_empty() {
        if conn.is_none() {
            *conn = Some(connect(sink).await?);
        }
        let c = conn.as_mut().expect("connected");
        tokio::time::timeout(Duration::from_secs(30), async {
            c.write_all(&out).await?;
            c.flush().await
        })
        .await
        .map_err(|_| "writing to the sink timed out".to_string())?
        .map_err(|e| format!("writing to {}: {e}", sink.address))?;
    }
    let name = sink.name.clone();
    app.db(move |s| s.write(|tx| tx.forward_cursor_set(&name, next_seq, last_cp)))
        .await
        .map_err(|e| e.to_string())?;
    Ok(n.max(usize::from(!rows.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5424_with_escaped_structured_data_and_octet_counting() {
        let m = format(
            13,
            6,
            "2026-11-28T10:00:00Z",
            "box",
            "audit",
            &[("actor", "a\"b]c\\".into())],
            "hi",
        );
        assert_eq!(
            m,
            format!(
                "<110>1 2026-11-28T10:00:00Z box custos {} audit [custos@32473 actor=\"a\\\"b\\]c\\\\\"] \u{feff}hi",
                std::process::id()
            )
        );
        let f = frame("héllo");
        assert_eq!(f, b"6 h\xc3\xa9llo");
    }
}
