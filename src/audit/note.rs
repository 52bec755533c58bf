//! Checkpoints in the C2SP tlog-checkpoint form, signed as C2SP signed notes with Ed25519.
//!
//! ```text
//! custos/4f1c…            origin line
//! 1234                    tree size, decimal
//! qL0x…=                  root hash, base64
//!                         blank line ends the note body
//! — custos/4f1c… AAAA…    signature line: key name, base64(key id || signature)
//! ```
//!
//! The key id is the first four bytes of SHA-256(key name || "\n" || 0x01 || public key). The
//! signed message is the body, every line newline-terminated. Parsing is strict and bounded: a
//! note longer than `MAX_NOTE_LEN` or with any line out of place is refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::merkle::Hash;
use crate::crypto::sha256;

pub const MAX_NOTE_LEN: usize = 16 * 1024;
const ALG_ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("note is {0} bytes; the limit is {MAX_NOTE_LEN}")]
    TooLong(usize),
    #[error("note is malformed: {0}")]
    Malformed(&'static str),
    #[error("checkpoint is malformed: {0}")]
    BadCheckpoint(&'static str),
    #[error("note carries no signature by key {0}")]
    NoSignature(String),
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
    #[error("verifier key is malformed: {0}")]
    BadKey(&'static str),
}

/// A Merkle tree head: which log, how many entries, and the root over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The note body: three newline-terminated lines.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let mut lines = body.split_terminator('\n');
        let origin = lines
            .next()
            .ok_or(NoteError::BadCheckpoint("no origin line"))?;
        if origin.is_empty() || origin.trim() != origin {
            return Err(NoteError::BadCheckpoint("origin line is empty or padded"));
        }
        let size = lines
            .next()
            .ok_or(NoteError::BadCheckpoint("no size line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::BadCheckpoint("size is not a decimal number"));
        }
        let size = size
            .parse()
            .map_err(|_| NoteError::BadCheckpoint("size is out of range"))?;
        let root = lines
            .next()
            .ok_or(NoteError::BadCheckpoint("no root line"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::BadCheckpoint(
                "root is not a base64 32-byte hash",
            ))?;
        // Extension lines may follow; Custos writes none and ignores those it does not know.
        if !body.ends_with('\n') {
            return Err(NoteError::BadCheckpoint(
                "last line is not newline-terminated",
            ));
        }
        Ok(Self {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// The appliance's note-signing identity: a key name and an Ed25519 key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

/// A public verifier for notes signed by one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteVerifier {
    pub name: String,
    pub key: VerifyingKey,
}

fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut m = Vec::with_capacity(name.len() + 34);
    m.extend_from_slice(name.as_bytes());
    m.push(b'\n');
    m.push(ALG_ED25519);
    m.extend_from_slice(key.as_bytes());
    let h = sha256(&m);
    [h[0], h[1], h[2], h[3]]
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

impl NoteSigner {
    pub fn new(name: &str, key: SigningKey) -> Self {
        assert!(valid_key_name(name), "note key name {name:?} is not valid");
        Self {
            name: name.to_string(),
            key,
        }
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs a note body (which must end in a newline) and returns the whole note.
    pub fn sign(&self, body: &str) -> String {
        assert!(body.ends_with('\n'), "note body must end with a newline");
        let sig = self.key.sign(body.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n{DASH}{} {}\n", self.name, B64.encode(blob))
    }
}

impl NoteVerifier {
    /// The C2SP verifier key string: `name+hex(key id)+base64(0x01 || public key)`.
    pub fn to_vkey(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, &self.key)),
            B64.encode(k)
        )
    }

    pub fn from_vkey(s: &str) -> Result<Self, NoteError> {
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::BadKey("expected name+keyid+key"));
        };
        if !valid_key_name(name) {
            return Err(NoteError::BadKey("invalid key name"));
        }
        let raw = B64
            .decode(key)
            .map_err(|_| NoteError::BadKey("key is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(NoteError::BadKey("not an Ed25519 key"));
        }
        let pk: [u8; 32] = raw[1..].try_into().expect("length checked");
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|_| NoteError::BadKey("invalid Ed25519 point"))?;
        let v = Self {
            name: name.to_string(),
            key,
        };
        if hex::encode(key_id(name, &key)) != id {
            return Err(NoteError::BadKey("key id does not match the key"));
        }
        Ok(v)
    }

    /// Checks that `note` carries a valid signature by this key and returns its body. Signatures
    /// by other keys are allowed and ignored, as the signed-note spec requires.
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLong(note.len()));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before signatures"))?;
        let body = &note[..split + 1];
        let sigs = &note[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature block is empty or not newline-terminated",
            ));
        }
        let want_id = key_id(&self.name, &self.key);
        let mut found = false;
        for line in sigs.split_terminator('\n') {
            let rest = line.strip_prefix(DASH).ok_or(NoteError::Malformed(
                "signature line does not start with an em dash",
            ))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("signature line has no key name"))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            if blob.len() < 4 {
                return Err(NoteError::Malformed("signature is shorter than a key id"));
            }
            if name != self.name || blob[..4] != want_id {
                continue;
            }
            let sig: [u8; 64] = blob[4..]
                .try_into()
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            self.key
                .verify_strict(body.as_bytes(), &Signature::from_bytes(&sig))
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            found = true;
        }
        if found {
            Ok(body)
        } else {
            Err(NoteError::NoSignature(self.name.clone()))
        }
    }

    /// Opens a signed checkpoint and parses it.
    pub fn open_checkpoint(&self, note: &str) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse_body(self.open(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("custos/test", SigningKey::from_bytes(&[7u8; 32]))
    }

    #[test]
    fn signed_checkpoint_round_trips() {
        let s = signer();
        let cp = Checkpoint {
            origin: "custos/test".into(),
            size: 42,
            root: [9u8; 32],
        };
        let note = s.sign(&cp.body());
        assert!(note.contains("\n\n\u{2014} custos/test "));
        let v = NoteVerifier::from_vkey(&s.verifier().to_vkey()).unwrap();
        assert_eq!(v.open_checkpoint(&note).unwrap(), cp);
    }

    #[test]
    fn tampering_is_refused() {
        let s = signer();
        let cp = Checkpoint {
            origin: "custos/test".into(),
            size: 42,
            root: [9u8; 32],
        };
        let note = s.sign(&cp.body());
        let v = s.verifier();
        let changed = note.replacen("42", "43", 1);
        assert_eq!(
            v.open(&changed),
            Err(NoteError::BadSignature("custos/test".into()))
        );
        let other = NoteSigner::new("custos/test", SigningKey::from_bytes(&[8u8; 32])).verifier();
        assert_eq!(
            other.open(&note),
            Err(NoteError::NoSignature("custos/test".into()))
        );
        assert!(v.open(&note.replace("\n\n", "\n")).is_err());
        assert!(v.open(&"x".repeat(MAX_NOTE_LEN + 1)).is_err());
        for bad in ["o\n01\nAAAA\n", "o\n1\n", "\n1\nAAAA\n", "o\nx\nAAAA\n"] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn vkey_with_wrong_id_is_refused() {
        let vk = signer().verifier().to_vkey();
        let mut parts: Vec<&str> = vk.split('+').collect();
        parts[1] = "00000000";
        assert!(NoteVerifier::from_vkey(&parts.join("+")).is_err());
    }
}
