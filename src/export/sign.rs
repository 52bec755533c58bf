//! The two signatures on an export's tag manifest, both checkable with standard tools: an
//! OpenSSH SSHSIG (`ssh-keygen -Y verify`) and a raw Ed25519 signature (`openssl pkeyutl
//! -verify -rawin`), with the appliance's public key in OpenSSH and PEM forms.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha512};

pub const NAMESPACE: &str = "custos-export";

fn ssh_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn ssh_pubkey_blob(key: &VerifyingKey) -> Vec<u8> {
    let mut b = Vec::new();
    ssh_string(&mut b, b"ssh-ed25519");
    ssh_string(&mut b, key.as_bytes());
    b
}

/// `ssh-ed25519 AAAA… COMMENT`
pub fn openssh_public(key: &VerifyingKey, comment: &str) -> String {
    format!("ssh-ed25519 {} {comment}", B64.encode(ssh_pubkey_blob(key)))
}

/// A PEM SubjectPublicKeyInfo for OpenSSL.
pub fn pem_public(key: &VerifyingKey) -> String {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(key.as_bytes());
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        B64.encode(der)
    )
}

fn signed_data(message: &[u8]) -> Vec<u8> {
    let mut d = b"SSHSIG".to_vec();
    ssh_string(&mut d, NAMESPACE.as_bytes());
    ssh_string(&mut d, b"");
    ssh_string(&mut d, b"sha512");
    ssh_string(&mut d, &Sha512::digest(message));
    d
}

/// An armored SSHSIG over `message` in the export namespace.
pub fn sshsig(key: &SigningKey, message: &[u8]) -> String {
    let sig = key.sign(&signed_data(message));
    let mut blob = b"SSHSIG".to_vec();
    blob.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut blob, &ssh_pubkey_blob(&key.verifying_key()));
    ssh_string(&mut blob, NAMESPACE.as_bytes());
    ssh_string(&mut blob, b"");
    ssh_string(&mut blob, b"sha512");
    let mut s = Vec::new();
    ssh_string(&mut s, b"ssh-ed25519");
    ssh_string(&mut s, &sig.to_bytes());
    ssh_string(&mut blob, &s);
    let b64 = B64.encode(blob);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
        lines.join("\n")
    )
}

fn take_string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    if b.len() < 4 {
        return None;
    }
    let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let s = b.get(4..4 + n)?;
    *b = &b[4 + n..];
    Some(s)
}

/// Checks an armored SSHSIG over `message` by `key`, in the export namespace.
pub fn verify_sshsig(armored: &str, key: &VerifyingKey, message: &[u8]) -> Result<(), String> {
    let body: String = armored
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let blob = B64
        .decode(body)
        .map_err(|_| "the SSH signature is not base64".to_string())?;
    let mut b = blob.as_slice();
    if !b.starts_with(b"SSHSIG") || b.len() < 10 {
        return Err("not an SSH signature".into());
    }
    b = &b[6..];
    if b[..4] != 1u32.to_be_bytes() {
        return Err("unsupported SSH signature version".into());
    }
    b = &b[4..];
    let bad = || "the SSH signature is malformed".to_string();
    let pk = take_string(&mut b).ok_or_else(bad)?;
    let ns = take_string(&mut b).ok_or_else(bad)?;
    let _reserved = take_string(&mut b).ok_or_else(bad)?;
    let hash = take_string(&mut b).ok_or_else(bad)?;
    let mut sig = take_string(&mut b).ok_or_else(bad)?;
    if pk != ssh_pubkey_blob(key).as_slice() {
        return Err("the SSH signature is by another key".into());
    }
    if ns != NAMESPACE.as_bytes() || hash != b"sha512" {
        return Err("the SSH signature has the wrong namespace or hash".into());
    }
    let alg = take_string(&mut sig).ok_or_else(bad)?;
    let raw = take_string(&mut sig).ok_or_else(bad)?;
    if alg != b"ssh-ed25519" {
        return Err("the SSH signature is not Ed25519".into());
    }
    let raw: [u8; 64] = raw.try_into().map_err(|_| bad())?;
    key.verify_strict(&signed_data(message), &Signature::from_bytes(&raw))
        .map_err(|_| "the SSH signature does not verify".to_string())
}
