//! Cryptographic primitives, each used in exactly one way: random bytes, 256-bit secret keys that
//! zeroize on drop, AES key wrap (RFC 3394) for keys under keys, HKDF-SHA256, SHA-256, and argon2id
//! for passwords and passphrases.
//!
//! Callers never choose algorithms or parameters; they call these functions. The archive's chunk
//! cipher lives in `archive::stream`, next to the format it implements.

use aes_kw::KwAes256;
use aes_kw::cipher::KeyInit;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Length in bytes of a key wrapped with AES-KW: the 32-byte key plus the 8-byte integrity block.
pub const WRAPPED_KEY_LEN: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key unwrap failed: the wrapping key is wrong or the wrapped key is damaged")]
    Unwrap,
    #[error("wrapped key has {0} bytes, expected {WRAPPED_KEY_LEN}")]
    WrappedLength(usize),
    #[error("argon2id failed: {0}")]
    Argon2(String),
    #[error("stored password hash is malformed")]
    BadPasswordHash,
}

/// A 256-bit secret key. Its bytes are wiped when it is dropped and never printed.
#[derive(Clone, Zeroize)]
#[zeroize(drop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn random() -> Self {
        Self(random_array())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(arr))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Fills an array from the operating system's CSPRNG. Failure to get randomness is not
/// recoverable for an appliance that mints keys, so it aborts loudly.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).expect("the operating system's random number generator failed");
    out
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A streaming SHA-256 for callers that hash as they go.
#[derive(Clone, Default)]
pub struct Sha256Stream(Sha256);

impl Sha256Stream {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// HKDF-SHA256 (RFC 5869) producing one 32-byte key.
pub fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> SecretKey {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = [0u8; 32];
    hk.expand(info, &mut out)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    let key = SecretKey(out);
    out.zeroize();
    key
}

/// Wraps a 32-byte key under a key-encryption key with AES-256 key wrap (RFC 3394): nonce-free
/// and deterministic, with a 64-bit integrity check.
pub fn wrap_key(kek: &SecretKey, key: &SecretKey) -> [u8; WRAPPED_KEY_LEN] {
    let kw = KwAes256::new(kek.expose().into());
    let mut out = [0u8; WRAPPED_KEY_LEN];
    kw.wrap_key(key.expose(), &mut out)
        .expect("a 32-byte key always wraps into 40 bytes");
    out
}

pub fn unwrap_key(kek: &SecretKey, wrapped: &[u8]) -> Result<SecretKey, CryptoError> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::WrappedLength(wrapped.len()));
    }
    let kw = KwAes256::new(kek.expose().into());
    let mut out = Zeroizing::new([0u8; 32]);
    kw.unwrap_key(wrapped, out.as_mut())
        .map_err(|_| CryptoError::Unwrap)?;
    Ok(SecretKey(*out))
}

/// argon2id parameters for deriving a key from a passphrase; stored beside what they protect so
/// that they can be raised later without breaking old files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl KdfParams {
    /// For the master-key passphrase: 256 MiB and 3 passes, about a second here. Unsealing is
    /// rare; an attacker with the sealed file pays this for every guess.
    pub const PASSPHRASE: KdfParams = KdfParams {
        m_cost: 256 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
}

pub fn derive_from_passphrase(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<SecretKey, CryptoError> {
    let p = Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| CryptoError::Argon2(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| CryptoError::Argon2(e.to_string()))?;
    Ok(SecretKey(*out))
}

/// Hashes a login password as an argon2id PHC string with the crate's defaults (19 MiB, t=2).
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = random_array();
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .expect("argon2id with default parameters and a 16-byte salt cannot fail")
        .to_string()
}

/// Checks a password against a stored PHC string in constant time with respect to the password.
pub fn verify_password(password: &str, phc: &str) -> Result<bool, CryptoError> {
    match Argon2::default().verify_password(password.as_bytes(), phc) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(CryptoError::BadPasswordHash),
    }
}

/// Compares two byte strings without an early exit on the first difference.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3394_vector_4_6() {
        // RFC 3394 section 4.6: 256-bit key data wrapped with a 256-bit KEK.
        let kek = SecretKey::from_slice(
            &hex::decode("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
                .unwrap(),
        )
        .unwrap();
        let key = SecretKey::from_slice(
            &hex::decode("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F")
                .unwrap(),
        )
        .unwrap();
        let wrapped = wrap_key(&kek, &key);
        assert_eq!(
            hex::encode_upper(wrapped),
            "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21"
        );
        assert_eq!(unwrap_key(&kek, &wrapped).unwrap().expose(), key.expose());
    }

    #[test]
    fn unwrap_refuses_wrong_kek_and_damage() {
        let kek = SecretKey::random();
        let key = SecretKey::random();
        let mut wrapped = wrap_key(&kek, &key);
        assert!(matches!(
            unwrap_key(&SecretKey::random(), &wrapped),
            Err(CryptoError::Unwrap)
        ));
        wrapped[7] ^= 1;
        assert!(matches!(
            unwrap_key(&kek, &wrapped),
            Err(CryptoError::Unwrap)
        ));
        assert!(matches!(
            unwrap_key(&kek, &wrapped[..39]),
            Err(CryptoError::WrappedLength(39))
        ));
    }

    #[test]
    fn passwords_verify_only_when_right() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h).unwrap());
        assert!(!verify_password("wrong", &h).unwrap());
        assert!(verify_password("x", "not a hash").is_err());
    }

    #[test]
    fn hkdf_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf(&ikm, &salt, &info);
        assert_eq!(
            hex::encode(okm.expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }
}
