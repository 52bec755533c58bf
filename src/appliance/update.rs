//! Signed updates of the appliance's `custos` binary (docs/updates.md, docs/formats/update.md).
//!
//! A bundle is a header line, a manifest (one line of JSON: version, size and SHA-256 of the
//! binary), an Ed25519 signature over both, then the binary. `apply` checks all of it against
//! the public key built into the image and stages the bundle in the A/B slot the committed
//! binary does not use, as a *trial*; `custos supervise` runs the trial once and commits it when
//! it answers its health check, or rolls back to the committed binary when it does not.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::export::{parse_openssh, sign::openssh_public};

pub const MAGIC: &str = "custos-update/1";
/// The largest binary a bundle may carry.
pub const MAX_BINARY: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not an update bundle: {0}")]
    Format(String),
    #[error("the bundle's signature does not verify with the trusted update key")]
    Signature,
    #[error("the binary does not match the signed manifest: {0}")]
    Digest(String),
    #[error("{0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> UpdateError + '_ {
    move |source| UpdateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the signature covers besides the header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: String,
    pub size: u64,
    pub sha256: String,
    pub created: String,
}

/// Creates an update signing key: `PREFIX.key` (owner-only) and `PREFIX.pub` (`ssh-ed25519 …`).
/// With `if_missing`, an existing pair is kept.
pub fn keygen(prefix: &Path, if_missing: bool) -> Result<String, UpdateError> {
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with(".key"), with(".pub"));
    if key_path.exists() {
        if if_missing {
            let key = load_signing_key(&key_path)?;
            let public = openssh_public(&key.verifying_key(), "custos-update");
            fs::write(&pub_path, format!("{public}\n")).map_err(io(&pub_path))?;
            return Ok(public);
        }
        return Err(UpdateError::Refused(format!(
            "{} exists; refusing to overwrite a signing key",
            key_path.display()
        )));
    }
    let key = SigningKey::from_bytes(&crate::crypto::random_array::<32>());
    let text = format!("custos-update-key {}\n", B64.encode(key.to_bytes()));
    crate::keys::write_private(&key_path, text.as_bytes())
        .map_err(|e| UpdateError::Refused(e.to_string()))?;
    let public = openssh_public(&key.verifying_key(), "custos-update");
    fs::write(&pub_path, format!("{public}\n")).map_err(io(&pub_path))?;
    Ok(public)
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, UpdateError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    let b64 = text
        .trim()
        .strip_prefix("custos-update-key ")
        .ok_or_else(|| UpdateError::Format(format!("{} is not an update key", path.display())))?;
    let bytes: [u8; 32] = B64
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| UpdateError::Format(format!("{} is damaged", path.display())))?;
    Ok(SigningKey::from_bytes(&bytes))
}

pub fn load_trust(path: &Path) -> Result<VerifyingKey, UpdateError> {
    let text = fs::read_to_string(path).map_err(io(path))?;
    parse_openssh(text.trim()).ok_or_else(|| {
        UpdateError::Format(format!(
            "{} is not an ssh-ed25519 public key",
            path.display()
        ))
    })
}

fn signed_message(manifest_line: &str) -> Vec<u8> {
    format!("{MAGIC}\n{manifest_line}\n").into_bytes()
}

/// Writes a bundle of `binary` as `version`, signed with `key`.
pub fn sign(
    key: &SigningKey,
    binary: &Path,
    version: &str,
    out: &Path,
) -> Result<Manifest, UpdateError> {
    check_version_text(version)?;
    let bytes = fs::read(binary).map_err(io(binary))?;
    if bytes.len() as u64 > MAX_BINARY {
        return Err(UpdateError::Refused(format!(
            "{} is larger than {} MiB",
            binary.display(),
            MAX_BINARY >> 20
        )));
    }
    let manifest = Manifest {
        version: version.to_string(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
        created: crate::model::now_rfc3339(),
    };
    let line = serde_json::to_string(&manifest).expect("manifest serializes");
    let sig = key.sign(&signed_message(&line));
    let mut f = fs::File::create(out).map_err(io(out))?;
    write!(f, "{MAGIC}\n{line}\n{}\n", B64.encode(sig.to_bytes())).map_err(io(out))?;
    f.write_all(&bytes).map_err(io(out))?;
    f.sync_all().map_err(io(out))?;
    Ok(manifest)
}

/// A bundle whose signature and digest were checked; `binary` is what was signed.
pub struct Verified {
    pub manifest: Manifest,
    pub binary: Vec<u8>,
}

fn read_line(r: &mut impl Read, what: &str) -> Result<String, UpdateError> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match r.read(&mut byte) {
            Ok(0) => return Err(UpdateError::Format(format!("it ends inside its {what}"))),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(UpdateError::Format(format!("reading its {what}: {e}"))),
        }
        if line.len() > 4096 {
            return Err(UpdateError::Format(format!(
                "its {what} is longer than 4096 bytes"
            )));
        }
    }
    String::from_utf8(line).map_err(|_| UpdateError::Format(format!("its {what} is not UTF-8")))
}

/// Reads and checks a bundle: header, manifest, signature against `trust`, size and SHA-256.
pub fn verify(path: &Path, trust: &VerifyingKey) -> Result<Verified, UpdateError> {
    let f = fs::File::open(path).map_err(io(path))?;
    let mut r = std::io::BufReader::new(f);
    if read_line(&mut r, "header")? != MAGIC {
        return Err(UpdateError::Format(format!(
            "the first line is not {MAGIC:?}"
        )));
    }
    let line = read_line(&mut r, "manifest")?;
    let sig_text = read_line(&mut r, "signature")?;
    let sig: [u8; 64] = B64
        .decode(sig_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            UpdateError::Format("the signature line is not 64 bytes of base64".into())
        })?;
    trust
        .verify_strict(&signed_message(&line), &Signature::from_bytes(&sig))
        .map_err(|_| UpdateError::Signature)?;
    let manifest: Manifest = serde_json::from_str(&line)
        .map_err(|e| UpdateError::Format(format!("the manifest: {e}")))?;
    check_version_text(&manifest.version)?;
    if manifest.size > MAX_BINARY {
        return Err(UpdateError::Format(
            "the manifest's size is too large".into(),
        ));
    }
    let mut binary = Vec::with_capacity(manifest.size as usize);
    r.by_ref()
        .take(manifest.size + 1)
        .read_to_end(&mut binary)
        .map_err(io(path))?;
    if binary.len() as u64 != manifest.size {
        return Err(UpdateError::Digest(format!(
            "{} bytes follow the signature, the manifest says {}",
            binary.len(),
            manifest.size
        )));
    }
    let digest = hex::encode(Sha256::digest(&binary));
    if digest != manifest.sha256 {
        return Err(UpdateError::Digest(format!(
            "SHA-256 {digest}, the manifest says {}",
            manifest.sha256
        )));
    }
    Ok(Verified { manifest, binary })
}

/// A version is dot-separated numbers with an optional `-suffix`: `1.4.2`, `1.5.0-rc1`.
fn check_version_text(v: &str) -> Result<(), UpdateError> {
    if parse_version(v).is_none() {
        return Err(UpdateError::Format(format!(
            "version {v:?} is not like 1.4.2 or 1.5.0-rc1"
        )));
    }
    Ok(())
}

fn parse_version(v: &str) -> Option<(Vec<u64>, Option<&str>)> {
    if v.len() > 64 {
        return None;
    }
    let (nums, pre) = match v.split_once('-') {
        Some((n, p))
            if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') =>
        {
            (n, Some(p))
        }
        Some(_) => return None,
        None => (v, None),
    };
    let parts: Option<Vec<u64>> = nums.split('.').map(|p| p.parse().ok()).collect();
    let parts = parts?;
    (!parts.is_empty() && parts.len() <= 4).then_some((parts, pre))
}

/// Whether `a` is newer than `b` (a release is newer than its pre-releases).
pub fn newer(a: &str, b: &str) -> bool {
    match (parse_version(a), parse_version(b)) {
        (Some((an, ap)), Some((bn, bp))) => match an.cmp(&bn) {
            std::cmp::Ordering::Equal => match (ap, bp) {
                (None, Some(_)) => true,
                (Some(x), Some(y)) => x > y,
                _ => false,
            },
            o => o == std::cmp::Ordering::Greater,
        },
        _ => false,
    }
}

/// One slot's staged bundle.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Slot {
    pub slot: String,
    pub version: String,
}

/// `SYSTEM/update/state.json`: which bundle runs, and what happened.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The update that passed its health check; none means the image's own binary.
    pub committed: Option<Slot>,
    /// Staged and not yet proven: the next start runs it once.
    pub trial: Option<Slot>,
    /// What happened, newest last (kept to the last 50).
    pub history: Vec<HistoryEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    pub at: String,
    pub event: String,
    pub version: String,
    pub detail: String,
}

/// The update area of a system directory.
pub struct Updates {
    dir: PathBuf,
}

impl Updates {
    pub fn new(system: &Path) -> Self {
        Updates {
            dir: system.join("update"),
        }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn bundle_path(&self, slot: &str) -> PathBuf {
        self.dir.join(format!("slot-{slot}.bundle"))
    }

    pub fn load(&self) -> Result<State, UpdateError> {
        let p = self.state_path();
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| UpdateError::Format(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(UpdateError::Io { path: p, source: e }),
        }
    }

    pub fn save(&self, state: &State) -> Result<(), UpdateError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let p = self.state_path();
        let text = serde_json::to_vec_pretty(state).expect("state serializes");
        crate::keys::write_file(&p, &text, 0o644).map_err(|e| UpdateError::Refused(e.to_string()))
    }

    /// Records an event in the history (and saves).
    pub fn record(
        &self,
        state: &mut State,
        event: &str,
        version: &str,
        detail: &str,
    ) -> Result<(), UpdateError> {
        state.history.push(HistoryEntry {
            at: crate::model::now_rfc3339(),
            event: event.into(),
            version: version.into(),
            detail: detail.into(),
        });
        let excess = state.history.len().saturating_sub(50);
        state.history.drain(..excess);
        self.save(state)
    }

    /// Checks `bundle` and stages it as the trial in the free slot. `running` is the version
    /// in use (the committed update's, else the image's): only a newer one is accepted, so an
    /// old signed bundle cannot be replayed to bring back a fixed flaw.
    pub fn apply(
        &self,
        bundle: &Path,
        trust: &VerifyingKey,
        running: &str,
    ) -> Result<Manifest, UpdateError> {
        let v = verify(bundle, trust)?;
        let mut state = self.load()?;
        let current = state
            .committed
            .as_ref()
            .map(|s| s.version.clone())
            .unwrap_or_else(|| running.to_string());
        if !newer(&v.manifest.version, &current) {
            return Err(UpdateError::Refused(format!(
                "version {} is not newer than {current}, the version in use",
                v.manifest.version
            )));
        }
        let slot = match state.committed.as_ref().map(|s| s.slot.as_str()) {
            Some("a") => "b",
            _ => "a",
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.bundle_path(slot);
        let mut raw = Vec::new();
        fs::File::open(bundle)
            .and_then(|mut f| f.read_to_end(&mut raw))
            .map_err(io(bundle))?;
        crate::keys::write_file(&path, &raw, 0o644)
            .map_err(|e| UpdateError::Refused(e.to_string()))?;
        state.trial = Some(Slot {
            slot: slot.into(),
            version: v.manifest.version.clone(),
        });
        self.record(
            &mut state,
            "staged",
            &v.manifest.version,
            &format!("slot {slot}; tried at the next start"),
        )?;
        Ok(v.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, SigningKey, VerifyingKey, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("k"), false).unwrap();
        let key = load_signing_key(&dir.path().join("k.key")).unwrap();
        let trust = load_trust(&dir.path().join("k.pub")).unwrap();
        let bin = dir.path().join("bin");
        fs::write(&bin, b"#!/bin/sh\nexit 0\n").unwrap();
        (dir, key, trust, bin)
    }

    #[test]
    fn damaged_or_foreign_bundles_are_refused_with_the_reason() {
        let (dir, key, trust, bin) = setup();
        let b = dir.path().join("u.bundle");
        sign(&key, &bin, "0.2.0", &b).unwrap();
        assert_eq!(verify(&b, &trust).unwrap().manifest.version, "0.2.0");
        let good = fs::read(&b).unwrap();

        // A byte of the binary changed.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        fs::write(&b, &bad).unwrap();
        assert!(matches!(verify(&b, &trust), Err(UpdateError::Digest(_))));
        // Truncated.
        fs::write(&b, &good[..good.len() - 3]).unwrap();
        assert!(matches!(verify(&b, &trust), Err(UpdateError::Digest(_))));
        // The manifest edited (a newer version claimed).
        let text = String::from_utf8_lossy(&good).replace("0.2.0", "0.9.0");
        fs::write(&b, text.as_bytes()).unwrap();
        assert!(matches!(verify(&b, &trust), Err(UpdateError::Signature)));
        // Signed by another key.
        keygen(&dir.path().join("other"), false).unwrap();
        let other = load_trust(&dir.path().join("other.pub")).unwrap();
        fs::write(&b, &good).unwrap();
        assert!(matches!(verify(&b, &other), Err(UpdateError::Signature)));
        // Not a bundle at all.
        fs::write(&b, b"\x7fELF...").unwrap();
        let e = verify(&b, &trust).err().unwrap().to_string();
        assert!(e.contains("not an update bundle"), "{e}");
        // Version text checked when signing.
        assert!(sign(&key, &bin, "latest", &b).is_err());
    }

    #[test]
    fn apply_stages_a_trial_in_the_free_slot_and_refuses_old_versions() {
        let (dir, key, trust, bin) = setup();
        let system = dir.path().join("system");
        let u = Updates::new(&system);
        let b = dir.path().join("u.bundle");
        sign(&key, &bin, "0.1.0", &b).unwrap();
        let e = u.apply(&b, &trust, "0.1.0").err().unwrap().to_string();
        assert!(e.contains("not newer than 0.1.0"), "{e}");
        assert_eq!(u.load().unwrap(), State::default(), "nothing changed");
        sign(&key, &bin, "0.2.0", &b).unwrap();
        u.apply(&b, &trust, "0.1.0").unwrap();
        let mut s = u.load().unwrap();
        assert_eq!(s.trial.as_ref().unwrap().slot, "a");
        assert!(verify(&u.bundle_path("a"), &trust).is_ok());
        // Once 0.2.0 is committed in slot a, the next goes to slot b.
        s.committed = s.trial.take();
        u.save(&s).unwrap();
        sign(&key, &bin, "0.2.1", &b).unwrap();
        u.apply(&b, &trust, "0.1.0").unwrap();
        assert_eq!(u.load().unwrap().trial.unwrap().slot, "b");
        sign(&key, &bin, "0.2.0", &b).unwrap();
        assert!(
            u.apply(&b, &trust, "0.1.0").is_err(),
            "older than the committed one"
        );
    }

    #[test]
    fn versions_order_like_releases() {
        assert!(newer("0.2.0", "0.1.9"));
        assert!(newer("1.10.0", "1.9.0"));
        assert!(newer("1.0.0", "1.0.0-rc2"));
        assert!(newer("1.0.0-rc2", "1.0.0-rc1"));
        assert!(!newer("1.0.0", "1.0.0"));
        assert!(!newer("1.0.0-rc1", "1.0.0"));
        assert!(!newer("x", "1.0.0"));
        assert!(parse_version("1.2.3-").is_none());
        assert!(parse_version("1..2").is_none());
    }
}
