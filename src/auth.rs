//! Who may do what: password checks, login tokens, login throttling, and the permission matrix
//! (docs/security.md shows it as a table; this module is the one place it is enforced).
//!
//! Tokens are 256 random bits shown once to their holder; only their SHA-256 is stored, so a copy
//! of the database does not let anyone log in.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::{self, sha256};
use crate::model::{Role, unix_now};
use crate::store::{Store, StoreError, UserRow};

pub const MIN_PASSWORD_LEN: usize = 12;
pub const TOKEN_PREFIX: &str = "cst_";

/// Every act the API guards. Adding an endpoint means naming its permission here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Create, list and disable users.
    ManageUsers,
    /// Read audit entries and checkpoints.
    ReadAudit,
    /// Appliance status: seal state, storage, certificate.
    ReadSystem,
    /// Live agent and queue monitors.
    ReadMonitors,
    /// Place and release legal holds.
    ManageHolds,
    /// Read retention plans, holds and a session's access history.
    ReadCompliance,
    /// Work the queue: accept, chat, transfer, end, issue codes.
    HandleSessions,
    /// Read any session's recorded content (with a stated reason).
    ReadAnySession,
    /// Webhooks, their delivery log, and knowledge-base articles.
    ManageIntegrations,
    /// Rotate the key-encryption keys.
    ManageKeys,
    /// Stage a signed update of the appliance's software.
    ManageSystem,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::ManageUsers,
        Permission::ReadAudit,
        Permission::ReadSystem,
        Permission::ReadMonitors,
        Permission::ManageHolds,
        Permission::ReadCompliance,
        Permission::HandleSessions,
        Permission::ReadAnySession,
        Permission::ManageIntegrations,
        Permission::ManageKeys,
        Permission::ManageSystem,
    ];

    /// The scope name an API token uses for this permission.
    pub fn scope(self) -> &'static str {
        match self {
            Permission::ManageUsers => "manage_users",
            Permission::ReadAudit => "read_audit",
            Permission::ReadSystem => "read_system",
            Permission::ReadMonitors => "read_monitors",
            Permission::ManageHolds => "manage_holds",
            Permission::ReadCompliance => "read_compliance",
            Permission::HandleSessions => "handle_sessions",
            Permission::ReadAnySession => "read_any_session",
            Permission::ManageIntegrations => "manage_integrations",
            Permission::ManageKeys => "manage_keys",
            Permission::ManageSystem => "manage_system",
        }
    }

    pub fn from_scope(s: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.scope() == s)
    }
}

/// Whether a principal may do `p`: its role must allow it, and an API token limited to scopes
/// must name it.
pub fn permits(who: &Principal, p: Permission) -> bool {
    allowed(who.role, p) && who.scopes.as_ref().is_none_or(|s| s.contains(&p))
}

/// The permission matrix.
pub fn allowed(role: Role, p: Permission) -> bool {
    use Permission::*;
    use Role::*;
    match p {
        ManageUsers => role == Admin,
        ReadAudit => matches!(role, Admin | Compliance | Auditor),
        ReadSystem => matches!(role, Admin | Compliance),
        ReadMonitors => matches!(role, Admin | Compliance),
        ManageHolds => role == Compliance,
        ReadCompliance => matches!(role, Admin | Compliance | Auditor),
        HandleSessions => matches!(role, Admin | Agent),
        ReadAnySession => matches!(role, Admin | Compliance | Auditor),
        ManageIntegrations => role == Admin,
        ManageKeys => role == Admin,
        ManageSystem => role == Admin,
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    pub must_change_password: bool,
    pub token_hash: [u8; 32],
    /// For an API token limited to some permissions: those.
    pub scopes: Option<Vec<Permission>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown user or wrong password")]
    BadCredentials,
    #[error("too many failed attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("{0}")]
    WeakPassword(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a password policy: long enough, not trivially repetitive.
pub fn check_password_policy(pw: &str) -> Result<(), AuthError> {
    if pw.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::WeakPassword(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let distinct: std::collections::HashSet<char> = pw.chars().collect();
    if distinct.len() < 5 {
        return Err(AuthError::WeakPassword(
            "a password needs at least 5 different characters".into(),
        ));
    }
    Ok(())
}

/// A one-time password for a new account: 100 bits in five groups of a lowercase alphabet
/// without look-alike characters, easy to read from a console.
pub fn generate_password() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let bytes: [u8; 20] = crypto::random_array();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// A hash to verify against when the user does not exist, so both cases cost the same.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| crypto::hash_password(&generate_password()))
}

/// Checks a password against a user row fetched beforehand (`None`: no such user, or
/// disabled). Unknown users, disabled users and wrong passwords look the same from outside and
/// cost the same. Runs argon2id: call it off the async threads and outside any database lock.
pub fn check_login(user: Option<UserRow>, password: &str) -> Result<UserRow, AuthError> {
    match user {
        Some(u) if !u.disabled => match crypto::verify_password(password, &u.password_hash) {
            Ok(true) => Ok(u),
            _ => Err(AuthError::BadCredentials),
        },
        _ => {
            let _ = crypto::verify_password(password, dummy_hash());
            Err(AuthError::BadCredentials)
        }
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

/// Issues a token for a user; returns it (shown once) and its expiry as a Unix time.
pub fn issue_token(
    store: &mut Store,
    user_id: i64,
    kind: &str,
    ttl_s: i64,
) -> Result<(String, i64), AuthError> {
    let token = format!(
        "{TOKEN_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(crypto::random_array::<32>())
    );
    let now = unix_now();
    let expires = now + ttl_s;
    store.write(|tx| {
        tx.tokens_purge_expired(now)?;
        tx.token_insert(&hash_token(&token), user_id, kind, now, expires)
    })?;
    Ok((token, expires))
}

/// The principal a token stands for, if it is live and its user enabled.
pub fn principal(store: &mut Store, token: &str) -> Result<Option<Principal>, AuthError> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 100 {
        return Ok(None);
    }
    let h = hash_token(token);
    let found = store.read(|tx| tx.token_user(&h, unix_now()))?;
    Ok(found.map(|(u, _kind, scopes)| Principal {
        user_id: u.id,
        name: u.name,
        role: u.role,
        must_change_password: u.must_change_password,
        token_hash: h,
        // A token whose scopes cannot be read gets none, never more than it had.
        scopes: scopes.map(|s| {
            serde_json::from_str::<Vec<String>>(&s)
                .unwrap_or_default()
                .iter()
                .filter_map(|x| Permission::from_scope(x))
                .collect()
        }),
    }))
}

#[derive(Debug)]
struct Failures {
    count: u32,
    last: Instant,
    /// When a refusal was last reported as the first of its lock window.
    reported: Option<Instant>,
}

/// Slows down guessing. Every attempt counts as soon as it starts (so concurrent guesses cannot
/// slip through together); a success forgives it. After `free` counted attempts, further ones
/// are refused for a time that doubles with each one, up to 15 minutes. Counts are forgotten 15
/// minutes after the last attempt. The state is in memory: a restart forgets it.
pub struct Throttle {
    failures: Mutex<HashMap<String, Failures>>,
    free: u32,
}

/// An attempt refused while `key` is locked.
#[derive(Debug, Clone, Copy)]
pub struct Locked {
    pub wait: Duration,
    /// Whether this is the first refusal in the current lock window (worth an audit entry;
    /// later ones in the same window are not, so that a flood cannot grow the log).
    pub first: bool,
}

const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);

impl Throttle {
    /// `free` attempts are allowed before the lock-out starts.
    pub fn new(free: u32) -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            free,
        }
    }

    /// Counts an attempt for `key`, or refuses it while `key` is locked.
    pub fn attempt(&self, key: &str) -> Result<(), Locked> {
        let mut map = self.failures.lock().expect("throttle lock poisoned");
        let now = Instant::now();
        map.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        let f = map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            last: now,
            reported: None,
        });
        if f.count >= self.free {
            let lock = Duration::from_secs(1u64 << (f.count - self.free).min(10)).min(MAX_LOCK);
            let until = f.last + lock;
            if now < until {
                let first = f.reported.is_none_or(|r| r < f.last);
                if first {
                    f.reported = Some(now);
                }
                return Err(Locked {
                    wait: until - now,
                    first,
                });
            }
        }
        f.count += 1;
        f.last = now;
        Ok(())
    }

    /// Forgives every counted attempt for `key` (after a success).
    pub fn success(&self, key: &str) {
        self.failures
            .lock()
            .expect("throttle lock poisoned")
            .remove(key);
    }

    /// Forgives one counted attempt for `key`.
    pub fn forgive_one(&self, key: &str) {
        let mut map = self.failures.lock().expect("throttle lock poisoned");
        if let Some(f) = map.get_mut(key) {
            f.count = f.count.saturating_sub(1);
        }
    }
}

/// A token bucket per key: `rate` requests a second on average, bursts of `burst`. For acts that
/// are legitimate in volume (submitting support requests) but must not be floodable.
pub struct RateLimit {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    rate: f64,
    burst: f64,
}

impl RateLimit {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            rate,
            burst,
        }
    }

    /// Takes one token for `key`; `false` when its bucket is empty.
    pub fn take(&self, key: &str) -> bool {
        let mut map = self.buckets.lock().expect("rate limit lock poisoned");
        let now = Instant::now();
        if map.len() > 100_000 {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * rate < burst
            });
        }
        let (tokens, last) = map.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_locks_after_free_attempts_and_resets_on_success() {
        let t = Throttle::new(3);
        for _ in 0..3 {
            assert!(t.attempt("user:a").is_ok());
        }
        let locked = t.attempt("user:a").unwrap_err();
        assert!(locked.wait <= Duration::from_secs(1) && locked.first);
        assert!(
            !t.attempt("user:a").unwrap_err().first,
            "only the first refusal is reported"
        );
        assert!(t.attempt("user:b").is_ok());
        t.success("user:a");
        assert!(t.attempt("user:a").is_ok());
    }

    #[test]
    fn password_policy_and_generated_passwords() {
        assert!(check_password_policy("short").is_err());
        assert!(check_password_policy("aaaaaaaaaaaaaaaa").is_err());
        assert!(check_password_policy("a fine long passphrase").is_ok());
        let p = generate_password();
        assert_eq!(p.len(), 24);
        assert!(check_password_policy(&p).is_ok());
        assert_ne!(p, generate_password());
    }

    #[test]
    fn permission_matrix_is_least_privilege() {
        assert!(allowed(Role::Admin, Permission::ManageUsers));
        for r in [Role::Agent, Role::Compliance, Role::Auditor] {
            assert!(!allowed(r, Permission::ManageUsers));
        }
        assert!(!allowed(Role::Agent, Permission::ReadAudit));
        assert!(allowed(Role::Auditor, Permission::ReadAudit));
    }
}
