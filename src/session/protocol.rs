//! The session protocol's messages (docs/formats/session-protocol.md): parsing of what clients
//! send, with every limit enforced here, and builders for what the server sends. Pure.

use serde::Deserialize;
use serde_json::{Value, json};

pub const PROTOCOL_VERSION: u32 = 1;
/// The largest WebSocket message accepted.
pub const MAX_FRAME: usize = 64 * 1024;
pub const MAX_CHAT_CHARS: usize = 4000;
pub const MAX_URL_CHARS: usize = 2000;
pub const MAX_CLIENT_ID: usize = 64;

/// A message from a participant, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Chat {
        text: String,
        id: Option<String>,
    },
    Typing {
        on: bool,
    },
    Url {
        url: String,
        title: Option<String>,
    },
    Note {
        text: String,
    },
    /// The agent marks an earlier message as sensitive: hidden in reviews unless asked for.
    Sensitive {
        seq: u64,
    },
    Ping,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Raw {
    Chat {
        text: String,
        #[serde(default)]
        id: Option<String>,
    },
    Typing {
        on: bool,
    },
    Url {
        url: String,
        #[serde(default)]
        title: Option<String>,
    },
    Note {
        text: String,
    },
    Sensitive {
        seq: u64,
    },
    Ping,
}

/// A refused message: a code for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        json!({ "type": "error", "code": self.code, "message": self.message }).to_string()
    }
}

fn text_ok(what: &str, t: &str, max: usize) -> Result<(), Refusal> {
    let n = t.chars().count();
    if t.trim().is_empty() {
        return Err(Refusal::new("bad_message", format!("{what} is empty")));
    }
    if n > max {
        return Err(Refusal::new(
            "too_long",
            format!("{what} has {n} characters; the limit is {max}"),
        ));
    }
    if t.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Refusal::new(
            "bad_message",
            format!("{what} contains control characters"),
        ));
    }
    Ok(())
}

/// Parses one text frame.
pub fn parse(frame: &str) -> Result<ClientMsg, Refusal> {
    if frame.len() > MAX_FRAME {
        return Err(Refusal::new(
            "too_long",
            format!("message of {} bytes; the limit is {MAX_FRAME}", frame.len()),
        ));
    }
    let raw: Raw = serde_json::from_str(frame)
        .map_err(|e| Refusal::new("bad_message", format!("not a valid message: {e}")))?;
    Ok(match raw {
        Raw::Chat { text, id } => {
            text_ok("chat text", &text, MAX_CHAT_CHARS)?;
            if let Some(i) = &id
                && (i.is_empty()
                    || i.len() > MAX_CLIENT_ID
                    || !i.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(Refusal::new(
                    "bad_message",
                    format!("client id must be 1-{MAX_CLIENT_ID} printable ASCII characters"),
                ));
            }
            ClientMsg::Chat { text, id }
        }
        Raw::Typing { on } => ClientMsg::Typing { on },
        Raw::Url { url, title } => {
            text_ok("url", &url, MAX_URL_CHARS)?;
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://"))
                || url.contains(char::is_whitespace)
            {
                return Err(Refusal::new(
                    "bad_message",
                    "url must be an http or https address without spaces",
                ));
            }
            if let Some(t) = &title {
                text_ok("title", t, 200)?;
            }
            ClientMsg::Url { url, title }
        }
        Raw::Note { text } => {
            text_ok("note", &text, MAX_CHAT_CHARS)?;
            ClientMsg::Note { text }
        }
        Raw::Sensitive { seq } => ClientMsg::Sensitive { seq },
        Raw::Ping => ClientMsg::Ping,
    })
}

/// Which side of a session a participant is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Customer,
    Agent,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Customer => "customer",
            Side::Agent => "agent",
        }
    }
}

pub fn queue(position: usize, wait_s: u64) -> String {
    json!({ "type": "queue", "position": position, "estimated_wait_s": wait_s }).to_string()
}

pub fn simple(kind: &str, fields: Value) -> String {
    let mut v = fields;
    v["type"] = json!(kind);
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_messages_parse() {
        assert_eq!(
            parse(r#"{"type":"chat","text":"hi","id":"c1"}"#).unwrap(),
            ClientMsg::Chat {
                text: "hi".into(),
                id: Some("c1".into())
            }
        );
        assert_eq!(
            parse(r#"{"type":"typing","on":true}"#).unwrap(),
            ClientMsg::Typing { on: true }
        );
        assert_eq!(parse(r#"{"type":"ping"}"#).unwrap(), ClientMsg::Ping);
        assert!(matches!(
            parse(r#"{"type":"url","url":"https://example.org/kb/1"}"#).unwrap(),
            ClientMsg::Url { .. }
        ));
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        for (frame, code) in [
            ("not json", "bad_message"),
            (r#"{"type":"chat"}"#, "bad_message"),
            (r#"{"type":"chat","text":""}"#, "bad_message"),
            (r#"{"type":"chat","text":"hi","extra":1}"#, "bad_message"),
            (r#"{"type":"shout","text":"hi"}"#, "bad_message"),
            (
                r#"{"type":"url","url":"javascript:alert(1)"}"#,
                "bad_message",
            ),
            (r#"{"type":"chat","text":"a\u0000b"}"#, "bad_message"),
            (r#"{"type":"chat","text":"x","id":""}"#, "bad_message"),
        ] {
            assert_eq!(parse(frame).unwrap_err().code, code, "{frame}");
        }
        let long = format!(
            r#"{{"type":"chat","text":"{}"}}"#,
            "x".repeat(MAX_CHAT_CHARS + 1)
        );
        assert_eq!(parse(&long).unwrap_err().code, "too_long");
        let huge = format!(r#"{{"type":"chat","text":"{}"}}"#, "x".repeat(MAX_FRAME));
        assert_eq!(parse(&huge).unwrap_err().code, "too_long");
    }
}
