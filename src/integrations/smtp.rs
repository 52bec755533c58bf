//! Alert e-mail: a small SMTP client (RFC 5321) with STARTTLS (RFC 3207) and AUTH PLAIN
//! (RFC 4616), sending one plain-text message per alert.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::settings::Smtp;

/// Longest reply line accepted from the server.
const MAX_LINE: usize = 4096;

struct Conn<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Reads one (possibly multi-line) reply; returns its code and text.
    async fn reply(&mut self) -> Result<(u16, String), String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = AsyncReadExt::take(&mut self.io, MAX_LINE as u64)
                .read_line(&mut line)
                .await
                .map_err(|e| format!("reading from the mail server: {e}"))?;
            if n == 0 {
                return Err("the mail server closed the connection".into());
            }
            let line = line.trim_end();
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("the mail server sent {line:?}, not a reply"))?;
            text.push_str(line.get(4..).unwrap_or(""));
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, text));
            }
            text.push('\n');
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        let w = self.io.get_mut();
        w.write_all(line.as_bytes())
            .await
            .and(w.write_all(b"\r\n").await)
            .and(w.flush().await)
            .map_err(|e| format!("writing to the mail server: {e}"))
    }

    /// Sends a command and expects a reply with code `want`.
    async fn cmd(&mut self, line: &str, want: u16) -> Result<String, String> {
        self.send(line).await?;
        self.expect(line, want).await
    }

    async fn expect(&mut self, what: &str, want: u16) -> Result<String, String> {
        let (code, text) = self.reply().await?;
        if code == want {
            Ok(text)
        } else {
            // Never echo the credentials back into a log.
            let what = if what.starts_with("AUTH") {
                "AUTH"
            } else {
                what
            };
            Err(format!("the mail server refused {what:?}: {code} {text}"))
        }
    }
}

/// The plain-text message for an alert event (the outbox body).
pub fn message(from: &str, to: &[String], event: &str, unix: i64) -> String {
    let v: Value = serde_json::from_str(event).unwrap_or_default();
    let data = &v["data"];
    let summary = data["summary"].as_str().unwrap_or("an alert was raised");
    let date = time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();
    let subject = format!("[Custos] {summary}");
    let subject = if subject.is_ascii() {
        subject
    } else {
        format!("=?utf-8?B?{}?=", STANDARD.encode(subject))
    };
    let id = v["id"].as_str().unwrap_or("alert");
    let domain = from.rsplit_once('@').map_or("custos", |d| d.1);
    let mut body = format!("{summary}\r\n\r\n");
    if let Some(m) = data.as_object() {
        for (k, val) in m {
            let shown = match val {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            body.push_str(&format!("{k}: {shown}\r\n"));
        }
    }
    body.push_str(&format!(
        "\r\nevent: {id}\r\nraised at: {}\r\n",
        v["created_at"].as_str().unwrap_or("")
    ));
    format!(
        "From: Custos <{from}>\r\nTo: {}\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <{id}@{domain}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\nAuto-Submitted: auto-generated\r\n\r\n{body}",
        to.join(", ")
    )
}

/// Sends one alert to every address in `to`.
pub async fn send_alert(smtp: &Smtp, to: &[String], event: &str) -> Result<(), String> {
    if to.is_empty() {
        return Ok(());
    }
    let msg = message(&smtp.from, to, event, crate::model::unix_now());
    let tcp = TcpStream::connect(&smtp.server)
        .await
        .map_err(|e| format!("cannot connect to the mail server {}: {e}", smtp.server))?;
    let mut c = Conn {
        io: BufReader::new(tcp),
    };
    c.expect("the greeting", 220).await?;
    let helo = format!("EHLO {}", super::hostname());
    c.cmd(&helo, 250).await?;
    if smtp.starttls {
        c.cmd("STARTTLS", 220).await?;
        let host = smtp
            .server
            .rsplit_once(':')
            .map_or(smtp.server.as_str(), |h| h.0);
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| format!("{host}: {e}"))?;
        let cfg = super::http::client_config(smtp.ca_file.as_deref())?;
        let tls = TlsConnector::from(cfg)
            .connect(name, c.io.into_inner())
            .await
            .map_err(|e| format!("TLS with the mail server: {e}"))?;
        let mut t = Conn {
            io: BufReader::new(tls),
        };
        t.cmd(&helo, 250).await?;
        transact(&mut t, smtp, to, &msg).await
    } else {
        transact(&mut c, smtp, to, &msg).await
    }
}

async fn transact<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Conn<S>,
    smtp: &Smtp,
    to: &[String],
    msg: &str,
) -> Result<(), String> {
    if let (Some(user), Some(file)) = (&smtp.username, &smtp.password_file) {
        let pw = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let token = STANDARD.encode(format!("\0{user}\0{}", pw.trim_end_matches(['\r', '\n'])));
        c.cmd(&format!("AUTH PLAIN {token}"), 235).await?;
    }
    c.cmd(&format!("MAIL FROM:<{}>", smtp.from), 250).await?;
    for r in to {
        c.cmd(&format!("RCPT TO:<{r}>"), 250).await?;
    }
    c.cmd("DATA", 354).await?;
    let mut data = String::with_capacity(msg.len() + 64);
    for line in msg.split("\r\n") {
        // Dot-stuffing (RFC 5321 4.5.2).
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push('.');
    c.cmd(&data, 250).await?;
    let _ = c.cmd("QUIT", 221).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_has_headers_and_fields() {
        let ev = r#"{"id":"evt_7_alert","created_at":"2026-11-28T10:00:00Z","data":{"summary":"Survey rated 1 of 5","rating":1}}"#;
        let m = message(
            "custos@example.org",
            &["a@example.org".into()],
            ev,
            1_700_000_000,
        );
        assert!(m.starts_with("From: Custos <custos@example.org>\r\nTo: a@example.org\r\nSubject: [Custos] Survey rated 1 of 5\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n"));
        assert!(m.contains("Message-ID: <evt_7_alert@example.org>"));
        assert!(m.contains("\r\n\r\nSurvey rated 1 of 5\r\n\r\n"));
        assert!(m.contains("rating: 1\r\n"));
        let utf = message(
            "c@example.org",
            &[],
            r#"{"data":{"summary":"Agent Jürgen offline"}}"#,
            0,
        );
        assert!(utf.contains("Subject: =?utf-8?B?"));
    }
}
