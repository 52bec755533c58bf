//! The vocabulary every subsystem shares: identifiers, roles, data classes and time stamps.
//!
//! Nothing here does I/O. Types carry meaning so that a session id can never be passed where an
//! object id is expected, and so that parsing user input happens once, at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A value from user input did not name anything this vocabulary knows.
#[derive(Debug, thiserror::Error)]
#[error("{what} {value:?} is not valid: expected {expected}")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// The identifier of one archive object: 16 random bytes, shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 16]);

impl ObjectId {
    pub fn random() -> Self {
        Self(crate::crypto::random_array())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

impl FromStr for ObjectId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseError {
            what: "object id",
            value: s.to_string(),
            expected: "32 lowercase hex digits",
        };
        if s.len() != 32 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        let bytes = hex::decode(s).map_err(|_| err())?;
        Ok(Self(bytes.try_into().map_err(|_| err())?))
    }
}

/// What a user may do is decided by their role; see docs/security.md for the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Agent,
    Compliance,
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Agent, Role::Compliance, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Agent => "agent",
            Role::Compliance => "compliance",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "role",
                value: s.to_string(),
                expected: "admin, agent, compliance or auditor",
            })
    }
}

/// The kinds of session content the archive keeps; retention policies select by these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataClass {
    Recording,
    Transcript,
    File,
    Diagnostics,
    Survey,
    Events,
    Metadata,
}

impl DataClass {
    pub const ALL: [DataClass; 7] = [
        DataClass::Recording,
        DataClass::Transcript,
        DataClass::File,
        DataClass::Diagnostics,
        DataClass::Survey,
        DataClass::Events,
        DataClass::Metadata,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Recording => "recording",
            DataClass::Transcript => "transcript",
            DataClass::File => "file",
            DataClass::Diagnostics => "diagnostics",
            DataClass::Survey => "survey",
            DataClass::Events => "events",
            DataClass::Metadata => "metadata",
        }
    }
}

impl fmt::Display for DataClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DataClass {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "data class",
                value: s.to_string(),
                expected: "recording, transcript, file, diagnostics, survey, events or metadata",
            })
    }
}

/// Where an archive object is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectState {
    /// Being appended to; durable up to its last flushed chunk.
    Open,
    /// Closed normally with a final chunk.
    Sealed,
    /// Closed by crash recovery at its last durable chunk.
    Truncated,
    /// Its data key was destroyed; the ciphertext is gone.
    Shredded,
}

impl ObjectState {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectState::Open => "open",
            ObjectState::Sealed => "sealed",
            ObjectState::Truncated => "truncated",
            ObjectState::Shredded => "shredded",
        }
    }
}

impl FromStr for ObjectState {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ObjectState::Open,
            ObjectState::Sealed,
            ObjectState::Truncated,
            ObjectState::Shredded,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| ParseError {
            what: "object state",
            value: s.to_string(),
            expected: "open, sealed, truncated or shredded",
        })
    }
}

/// A user name: 1 to 64 characters from `[A-Za-z0-9._-]`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct UserName(String);

impl UserName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(ParseError {
                what: "user name",
                value: s.to_string(),
                expected: "1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit",
            })
        }
    }
}

/// The current time as RFC 3339 UTC with millisecond precision, e.g. `2026-11-28T12:00:00.123Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 time stamp (any offset) or a plain date `YYYY-MM-DD` (midnight UTC).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, ParseError> {
    let err = || ParseError {
        what: "time",
        value: s.to_string(),
        expected: "an RFC 3339 time such as 2026-11-28T12:00:00Z, or a date such as 2026-11-28",
    };
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let date = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| err())?;
    Ok(date.midnight().assume_utc())
}

/// Parses the end of a range: a plain date means the end of that day (UTC), so that
/// `--to 2026-03-31` includes everything on the 31st.
pub fn parse_range_end(s: &str) -> Result<OffsetDateTime, ParseError> {
    let t = parse_time(s)?;
    if s.len() == 10 {
        Ok(t + time::Duration::days(1) - time::Duration::milliseconds(1))
    } else {
        Ok(t)
    }
}

pub fn unix_now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_round_trips_and_rejects_bad_text() {
        let id = ObjectId::random();
        assert_eq!(id.to_string().parse::<ObjectId>().unwrap(), id);
        for bad in ["", "zz", &"A".repeat(32), &"0".repeat(31), &"0".repeat(33)] {
            assert!(bad.parse::<ObjectId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_names_are_restricted() {
        assert!("alice".parse::<UserName>().is_ok());
        assert!("a.b-c_d9".parse::<UserName>().is_ok());
        for bad in ["", "-x", "a b", "é", &"a".repeat(65), "a/b"] {
            assert!(bad.parse::<UserName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn roles_parse_only_known_names() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn timestamps_are_utc_with_millis() {
        let s = now_rfc3339();
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(s.len(), "2026-11-28T12:00:00.123Z".len(), "{s}");
    }
}
