//! The age file format (age-encryption.org/v1) with X25519 recipients, written here rather than
//! pulled in (the `age` crate brings about 190 crates): encryption to one or more `age1…`
//! recipients, and decryption with an `AGE-SECRET-KEY-1…` identity. Files it writes decrypt with
//! the standard `age -d`; tests check that against the real tool.
//!
//! Used for the recovery key (every data key is also wrapped to an offline recipient) and for
//! export bundles encrypted to auditors.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hmac::Mac;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::crypto;

const INTRO: &str = "age-encryption.org/v1\n";
const X25519_INFO: &[u8] = b"age-encryption.org/v1/X25519";
const CHUNK: usize = 64 * 1024;
/// The largest header accepted on read.
const MAX_HEADER: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgeError {
    #[error("not an age recipient (expected age1…): {0}")]
    BadRecipient(String),
    #[error("not an age identity (expected AGE-SECRET-KEY-1…)")]
    BadIdentity,
    #[error("malformed age file: {0}")]
    Malformed(&'static str),
    #[error("no identity matches any recipient of this file")]
    NoMatch,
    #[error("the age header MAC does not verify (damaged or forged header)")]
    HeaderMac,
    #[error("age payload chunk {0} failed authentication")]
    Payload(u64),
}

// --- bech32 (BIP 173), as age uses it for keys -------------------------------------------------

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn polymod(values: &[u8]) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk = 1u32;
    for v in values {
        let b = chk >> 25;
        chk = ((chk & 0x1ff_ffff) << 5) ^ u32::from(*v);
        for (i, g) in GEN.iter().enumerate() {
            if (b >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &str) -> Vec<u8> {
    let mut v: Vec<u8> = hrp.bytes().map(|b| b >> 5).collect();
    v.push(0);
    v.extend(hrp.bytes().map(|b| b & 31));
    v
}

fn to_5bit(data: &[u8]) -> Vec<u8> {
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for b in data {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 31) as u8);
    }
    out
}

fn from_5bit(data: &[u8]) -> Option<Vec<u8>> {
    let (mut acc, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for v in data {
        acc = (acc << 5) | u32::from(*v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    (bits < 5 && (acc & ((1 << bits) - 1)) == 0).then_some(out)
}

fn bech32_encode(hrp: &str, data: &[u8]) -> String {
    let d = to_5bit(data);
    let mut values = hrp_expand(hrp);
    values.extend(&d);
    values.extend([0u8; 6]);
    let pm = polymod(&values) ^ 1;
    let mut s = format!("{hrp}1");
    for v in d.iter().chain(
        (0..6)
            .map(|i| ((pm >> (5 * (5 - i))) & 31) as u8)
            .collect::<Vec<_>>()
            .iter(),
    ) {
        s.push(CHARSET[*v as usize] as char);
    }
    s
}

fn bech32_decode(s: &str) -> Option<(String, Vec<u8>)> {
    let lower = s.to_ascii_lowercase();
    if s != lower && s != s.to_ascii_uppercase() {
        return None;
    }
    let pos = lower.rfind('1')?;
    let (hrp, rest) = (&lower[..pos], &lower[pos + 1..]);
    if hrp.is_empty() || rest.len() < 6 {
        return None;
    }
    let vals: Vec<u8> = rest
        .bytes()
        .map(|c| CHARSET.iter().position(|x| *x == c).map(|p| p as u8))
        .collect::<Option<_>>()?;
    let mut chk = hrp_expand(hrp);
    chk.extend(&vals);
    if polymod(&chk) != 1 {
        return None;
    }
    Some((hrp.to_string(), from_5bit(&vals[..vals.len() - 6])?))
}

// --- keys --------------------------------------------------------------------------------------

/// An X25519 recipient (`age1…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient(PublicKey);

impl Recipient {
    pub fn parse(s: &str) -> Result<Self, AgeError> {
        let bad = || AgeError::BadRecipient(s.chars().take(80).collect());
        let (hrp, data) = bech32_decode(s.trim()).ok_or_else(bad)?;
        if hrp != "age" || s.trim().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        let key: [u8; 32] = data.try_into().map_err(|_| bad())?;
        Ok(Self(PublicKey::from(key)))
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&bech32_encode("age", self.0.as_bytes()))
    }
}

/// An X25519 identity (`AGE-SECRET-KEY-1…`); its secret is wiped on drop.
pub struct Identity(StaticSecret);

impl Identity {
    pub fn generate() -> Self {
        Self(StaticSecret::from(crypto::random_array::<32>()))
    }

    /// Parses an identity, or an identity file (comment lines starting with `#` are skipped).
    pub fn parse(s: &str) -> Result<Self, AgeError> {
        let line = s
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or(AgeError::BadIdentity)?;
        let (hrp, data) = bech32_decode(line).ok_or(AgeError::BadIdentity)?;
        if hrp != "age-secret-key-" {
            return Err(AgeError::BadIdentity);
        }
        let data = Zeroizing::new(data);
        let key: [u8; 32] = data
            .as_slice()
            .try_into()
            .map_err(|_| AgeError::BadIdentity)?;
        Ok(Self(StaticSecret::from(key)))
    }

    pub fn to_secret_string(&self) -> Zeroizing<String> {
        Zeroizing::new(bech32_encode("age-secret-key-", self.0.as_bytes()).to_ascii_uppercase())
    }

    pub fn recipient(&self) -> Recipient {
        Recipient(PublicKey::from(&self.0))
    }
}

fn hkdf32(ikm: &[u8], salt: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(*crypto::hkdf(ikm, salt, info).expose())
}

fn header_mac(file_key: &[u8; 16], header: &[u8]) -> [u8; 32] {
    let key = hkdf32(file_key, b"", b"header");
    let mut m =
        <hmac::Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&key[..]).expect("any key length");
    m.update(header);
    m.finalize().into_bytes().into()
}

fn stream_nonce(counter: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n.into()
}

/// Encrypts `plaintext` to every recipient.
pub fn encrypt(recipients: &[Recipient], plaintext: &[u8]) -> Vec<u8> {
    assert!(!recipients.is_empty(), "age needs at least one recipient");
    let file_key: Zeroizing<[u8; 16]> = Zeroizing::new(crypto::random_array());
    let mut header = String::from(INTRO);
    for r in recipients {
        let eph = StaticSecret::from(crypto::random_array::<32>());
        let share = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&r.0);
        let mut salt = share.as_bytes().to_vec();
        salt.extend_from_slice(r.0.as_bytes());
        let wrap = hkdf32(shared.as_bytes(), &salt, X25519_INFO);
        let body = ChaCha20Poly1305::new((&*wrap).into())
            .encrypt(&Nonce::default(), &file_key[..])
            .expect("wrapping 16 bytes cannot fail");
        header.push_str(&format!(
            "-> X25519 {}\n{}\n",
            B64.encode(share.as_bytes()),
            B64.encode(&body)
        ));
    }
    header.push_str("---");
    let mac = header_mac(&file_key, header.as_bytes());
    let mut out = header.into_bytes();
    out.extend_from_slice(format!(" {}\n", B64.encode(mac)).as_bytes());
    let nonce: [u8; 16] = crypto::random_array();
    out.extend_from_slice(&nonce);
    let pk = hkdf32(&file_key[..], &nonce, b"payload");
    let cipher = ChaCha20Poly1305::new((&*pk).into());
    let chunks: Vec<&[u8]> = if plaintext.is_empty() {
        vec![&[][..]]
    } else {
        plaintext.chunks(CHUNK).collect()
    };
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let ct = cipher
            .encrypt(
                &stream_nonce(i as u64, i + 1 == n),
                Payload { msg: c, aad: b"" },
            )
            .expect("chunk encrypts");
        out.extend_from_slice(&ct);
    }
    out
}

/// Decrypts an age file with an identity.
pub fn decrypt(identity: &Identity, file: &[u8]) -> Result<Zeroizing<Vec<u8>>, AgeError> {
    let end = file
        .windows(4)
        .take(MAX_HEADER)
        .position(|w| w == b"\n---")
        .ok_or(AgeError::Malformed("no header end"))?;
    let mac_line_end = file[end + 1..]
        .iter()
        .position(|b| *b == b'\n')
        .ok_or(AgeError::Malformed("header MAC line is not terminated"))?
        + end
        + 1;
    let header = std::str::from_utf8(&file[..end + 4])
        .map_err(|_| AgeError::Malformed("header is not UTF-8"))?;
    let mac_text = std::str::from_utf8(&file[end + 4..mac_line_end])
        .map_err(|_| AgeError::Malformed("MAC is not text"))?;
    let mac = B64
        .decode(
            mac_text
                .strip_prefix(' ')
                .ok_or(AgeError::Malformed("no space before the MAC"))?,
        )
        .map_err(|_| AgeError::Malformed("MAC is not base64"))?;
    let body = header
        .strip_prefix(INTRO)
        .ok_or(AgeError::Malformed("not age-encryption.org/v1"))?;
    let lines: Vec<&str> = body.split('\n').collect();
    let own = PublicKey::from(&identity.0);
    let mut file_key: Option<Zeroizing<[u8; 16]>> = None;
    let mut i = 0;
    while i < lines.len() && lines[i] != "---" {
        let args: Vec<&str> = lines[i]
            .strip_prefix("-> ")
            .ok_or(AgeError::Malformed("expected a stanza"))?
            .split(' ')
            .collect();
        let body_line = *lines
            .get(i + 1)
            .ok_or(AgeError::Malformed("stanza without a body"))?;
        i += 2;
        if args.len() != 2 || args[0] != "X25519" || file_key.is_some() {
            continue;
        }
        let share: [u8; 32] = B64
            .decode(args[1])
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(AgeError::Malformed("bad X25519 share"))?;
        let wrapped = B64
            .decode(body_line)
            .map_err(|_| AgeError::Malformed("stanza body is not base64"))?;
        let share = PublicKey::from(share);
        let shared = identity.0.diffie_hellman(&share);
        let mut salt = share.as_bytes().to_vec();
        salt.extend_from_slice(own.as_bytes());
        let wrap = hkdf32(shared.as_bytes(), &salt, X25519_INFO);
        if let Ok(k) =
            ChaCha20Poly1305::new((&*wrap).into()).decrypt(&Nonce::default(), wrapped.as_slice())
        {
            let k: [u8; 16] = k
                .try_into()
                .map_err(|_| AgeError::Malformed("file key is not 16 bytes"))?;
            file_key = Some(Zeroizing::new(k));
        }
    }
    let file_key = file_key.ok_or(AgeError::NoMatch)?;
    if !crypto::ct_eq(&header_mac(&file_key, header.as_bytes()), &mac) {
        return Err(AgeError::HeaderMac);
    }
    let payload = &file[mac_line_end + 1..];
    if payload.len() < 16 {
        return Err(AgeError::Malformed("payload nonce is missing"));
    }
    let pk = hkdf32(&file_key[..], &payload[..16], b"payload");
    let cipher = ChaCha20Poly1305::new((&*pk).into());
    let mut out = Zeroizing::new(Vec::new());
    let chunks: Vec<&[u8]> = payload[16..].chunks(CHUNK + 16).collect();
    if chunks.is_empty() {
        return Err(AgeError::Malformed("no payload chunk"));
    }
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let p = cipher
            .decrypt(
                &stream_nonce(i as u64, i + 1 == n),
                Payload { msg: c, aad: b"" },
            )
            .map_err(|_| AgeError::Payload(i as u64))?;
        if i + 1 == n && p.is_empty() && n > 1 {
            return Err(AgeError::Malformed("empty final chunk"));
        }
        out.extend_from_slice(&p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_bech32() {
        let id = Identity::generate();
        let s = id.to_secret_string();
        assert!(s.starts_with("AGE-SECRET-KEY-1"));
        let again = Identity::parse(&s).unwrap();
        assert_eq!(again.recipient(), id.recipient());
        let r = id.recipient().to_string();
        assert!(r.starts_with("age1") && r.len() == 62, "{r}");
        assert_eq!(Recipient::parse(&r).unwrap(), id.recipient());
        assert!(Recipient::parse("age1qqqq").is_err());
        assert!(Recipient::parse(&r.replace('q', "p")).is_err() || !r.contains('q'));
    }

    #[test]
    fn encrypt_decrypt_and_damage() {
        let (a, b) = (Identity::generate(), Identity::generate());
        for n in [0usize, 1, 65536, 65537, 200_000] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let f = encrypt(&[a.recipient(), b.recipient()], &data);
            assert_eq!(&decrypt(&a, &f).unwrap()[..], &data[..]);
            assert_eq!(&decrypt(&b, &f).unwrap()[..], &data[..]);
        }
        let f = encrypt(&[a.recipient()], b"secret");
        assert_eq!(
            decrypt(&Identity::generate(), &f).unwrap_err(),
            AgeError::NoMatch
        );
        let mut g = f.clone();
        let last = g.len() - 1;
        g[last] ^= 1;
        assert!(matches!(decrypt(&a, &g), Err(AgeError::Payload(0))));
    }
}
