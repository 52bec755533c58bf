//! The key hierarchy: one master key, key-encryption keys (KEKs) by epoch, one data key per
//! archive object.
//!
//! ```text
//! master key ──AES-KW──▶ KEK epoch 1, 2, … (table keks)      ──AES-KW──▶ data key per object
//!   from keys/master.key (0600)                               (table object_keys)
//!   or keys/master.sealed (argon2id passphrase)
//! master key ──AES-KW──▶ checkpoint signing key (meta signing_key)
//! ```
//!
//! Rotation starts a new epoch and re-wraps data keys row by row; each row is rewritten
//! atomically, old KEKs stay until no row needs them, and the foreign key from `object_keys` to
//! `keks` makes deleting a KEK that is still in use impossible. A crash at any point therefore
//! leaves every object readable. Payloads are never re-encrypted.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, CryptoError, KdfParams, SecretKey};
use crate::store::{Store, StoreError, Tx};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "no master key in {0}: neither master.key nor master.sealed exists (is this a Custos data directory?)"
    )]
    NoMasterKey(PathBuf),
    #[error("{path}: {problem}")]
    KeyFile { path: PathBuf, problem: String },
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error(
        "the master key does not open this data directory's key-encryption keys (wrong key file?)"
    )]
    WrongMasterKey,
    #[error("the passphrase must be at least 12 characters")]
    WeakPassphrase,
    #[error(
        "the master key is sealed by a passphrase; give it with --passphrase-file or at the prompt"
    )]
    PassphraseNeeded,
    #[error("key-encryption key epoch {0} is missing")]
    MissingEpoch(u32),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How the master key is protected at rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsealMode {
    /// `keys/master.key`, readable only by the service user: the server unseals itself at start.
    KeyFile,
    /// `keys/master.sealed`: the server starts sealed until someone gives the passphrase.
    Passphrase,
}

#[derive(Serialize, Deserialize)]
struct SealedFile {
    version: u32,
    kdf: KdfParams,
    salt: String,
    wrapped_master_key: String,
}

pub struct MasterKeyFiles {
    dir: PathBuf,
}

impl MasterKeyFiles {
    pub fn new(keys_dir: &Path) -> Self {
        Self {
            dir: keys_dir.to_path_buf(),
        }
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("master.key")
    }

    fn sealed_path(&self) -> PathBuf {
        self.dir.join("master.sealed")
    }

    pub fn mode(&self) -> Result<UnsealMode, KeyError> {
        if self.sealed_path().exists() {
            Ok(UnsealMode::Passphrase)
        } else if self.key_path().exists() {
            Ok(UnsealMode::KeyFile)
        } else {
            Err(KeyError::NoMasterKey(self.dir.clone()))
        }
    }

    /// Creates a fresh master key in `master.key`, mode 0600.
    pub fn create_keyfile(&self) -> Result<SecretKey, KeyError> {
        let key = SecretKey::random();
        write_private(&self.key_path(), key.expose())?;
        Ok(key)
    }

    /// Loads the master key from the key file (refusing a file others can read).
    pub fn load_keyfile(&self) -> Result<SecretKey, KeyError> {
        let path = self.key_path();
        let meta = fs::metadata(&path).map_err(io_err(&path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(KeyError::KeyFile {
                path,
                problem: format!(
                    "mode {:o} lets others read the master key; run chmod 600 on it",
                    meta.permissions().mode() & 0o777
                ),
            });
        }
        let bytes = zeroize::Zeroizing::new(fs::read(&path).map_err(io_err(&path))?);
        SecretKey::from_slice(&bytes).ok_or_else(|| KeyError::KeyFile {
            path,
            problem: format!("holds {} bytes, a master key has 32", bytes.len()),
        })
    }

    /// Unwraps the passphrase-sealed master key.
    pub fn load_sealed(&self, passphrase: &str) -> Result<SecretKey, KeyError> {
        let path = self.sealed_path();
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        let bad = |problem: &str| KeyError::KeyFile {
            path: path.clone(),
            problem: problem.to_string(),
        };
        let f: SealedFile =
            serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON: {e}")))?;
        if f.version != 1 {
            return Err(bad("unsupported version"));
        }
        let k = f.kdf;
        if !(8 * 1024..=4 * 1024 * 1024).contains(&k.m_cost)
            || !(1..=20).contains(&k.t_cost)
            || !(1..=16).contains(&k.p_cost)
        {
            return Err(bad("argon2id parameters are out of the accepted range"));
        }
        let salt = hex::decode(&f.salt).map_err(|_| bad("salt is not hex"))?;
        let wrapped =
            hex::decode(&f.wrapped_master_key).map_err(|_| bad("wrapped key is not hex"))?;
        let pk = crypto::derive_from_passphrase(passphrase.as_bytes(), &salt, f.kdf)?;
        crypto::unwrap_key(&pk, &wrapped).map_err(|e| match e {
            CryptoError::Unwrap => KeyError::WrongPassphrase,
            other => other.into(),
        })
    }

    /// Loads the master key whichever way it is kept; `passphrase` is asked for only if needed.
    pub fn load(&self, passphrase: impl FnOnce() -> Option<String>) -> Result<SecretKey, KeyError> {
        match self.mode()? {
            UnsealMode::KeyFile => self.load_keyfile(),
            UnsealMode::Passphrase => {
                let p = zeroize::Zeroizing::new(passphrase().ok_or(KeyError::PassphraseNeeded)?);
                self.load_sealed(&p)
            }
        }
    }

    /// Protects the master key with a passphrase and removes the key file, so the next start
    /// waits sealed. The sealed file is complete on disk before the key file goes.
    pub fn seal(&self, master: &SecretKey, passphrase: &str) -> Result<(), KeyError> {
        if passphrase.chars().count() < 12 {
            return Err(KeyError::WeakPassphrase);
        }
        let salt: [u8; 16] = crypto::random_array();
        let kdf = KdfParams::PASSPHRASE;
        let pk = crypto::derive_from_passphrase(passphrase.as_bytes(), &salt, kdf)?;
        let f = SealedFile {
            version: 1,
            kdf,
            salt: hex::encode(salt),
            wrapped_master_key: hex::encode(crypto::wrap_key(&pk, master)),
        };
        let text = serde_json::to_string_pretty(&f).expect("serializable");
        write_private(&self.sealed_path(), text.as_bytes())?;
        self.finish_interrupted_seal()
    }

    /// Removes the key file once a sealed file exists (completing a seal that a crash cut
    /// short). The key's bytes are overwritten in place and synced before the file is unlinked;
    /// on copy-on-write or log-structured file systems the old blocks may survive anyway
    /// (docs/security.md).
    pub fn finish_interrupted_seal(&self) -> Result<(), KeyError> {
        let key_path = self.key_path();
        if !(self.sealed_path().exists() && key_path.exists()) {
            return Ok(());
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&key_path)
            .map_err(io_err(&key_path))?;
        let len = f.metadata().map_err(io_err(&key_path))?.len() as usize;
        f.write_all(&vec![0u8; len]).map_err(io_err(&key_path))?;
        f.sync_all().map_err(io_err(&key_path))?;
        drop(f);
        fs::remove_file(&key_path).map_err(io_err(&key_path))?;
        sync_dir(&self.dir)
    }
}

/// Writes a file readable only by its owner, atomically (temporary file, fsync, rename, fsync
/// of the directory).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    write_file(path, bytes, 0o600)
}

/// Writes a file with the given mode, atomically.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = f
        .set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err(path)));
    if written.is_err() {
        // Leave nothing behind: the next attempt starts from the same state as this one.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The unsealed key material of a running appliance: the master key and the KEKs unwrapped so
/// far. Everything in it is wiped when it is dropped (on seal or shutdown).
pub struct Keyring {
    master: SecretKey,
    keks: Mutex<HashMap<u32, SecretKey>>,
    /// The offline recovery recipient, if one is configured: every data key is also wrapped to
    /// it, so that the archive can be read with its identity even if the master key is lost.
    recovery: Option<crate::age::Recipient>,
}

/// A data key with what is needed to store it.
pub struct NewDataKey {
    pub key: SecretKey,
    pub epoch: u32,
    pub wrapped: [u8; crypto::WRAPPED_KEY_LEN],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateReport {
    pub new_epoch: u32,
    pub rewrapped: u64,
    pub retired: u32,
}

impl Keyring {
    pub fn new(master: SecretKey) -> Self {
        Self {
            master,
            keks: Mutex::new(HashMap::new()),
            recovery: None,
        }
    }

    /// The key of the transcript word index: each indexed word is stored only as its HMAC under
    /// this key, which exists only while the appliance is unsealed.
    pub fn index_key(&self) -> SecretKey {
        crypto::hkdf(self.master.expose(), b"", b"custos transcript index v1")
    }

    /// Also wraps every new data key to this recovery recipient.
    pub fn with_recovery(mut self, recovery: Option<crate::age::Recipient>) -> Self {
        self.recovery = recovery;
        self
    }

    /// A data key wrapped to the recovery recipient (an age file), if one is configured.
    pub fn recovery_wrap(&self, key: &SecretKey) -> Option<Vec<u8>> {
        self.recovery
            .as_ref()
            .map(|r| crate::age::encrypt(std::slice::from_ref(r), key.expose()))
    }

    /// Creates epoch 1 and the checkpoint signing key in a new data directory.
    pub fn initialize(&self, tx: &Tx<'_>, now: &str) -> Result<SigningKey, KeyError> {
        let kek = SecretKey::random();
        tx.kek_insert(1, &crypto::wrap_key(&self.master, &kek), now)?;
        let seed = SecretKey::random();
        tx.meta_set(
            "signing_key",
            &hex::encode(crypto::wrap_key(&self.master, &seed)),
        )?;
        Ok(SigningKey::from_bytes(seed.expose()))
    }

    /// Proves the master key belongs to this data directory by unwrapping the newest KEK.
    pub fn check(&self, tx: &Tx<'_>) -> Result<(), KeyError> {
        let epoch = tx.kek_current()?.ok_or(KeyError::MissingEpoch(1))?;
        self.kek(tx, epoch).map(|_| ())
    }

    pub fn signing_key(&self, tx: &Tx<'_>) -> Result<SigningKey, KeyError> {
        let wrapped = tx
            .meta_get("signing_key")?
            .ok_or_else(|| StoreError::Corrupt("no signing key in meta".into()))?;
        let wrapped = hex::decode(wrapped)
            .map_err(|_| StoreError::Corrupt("signing key is not hex".into()))?;
        let seed =
            crypto::unwrap_key(&self.master, &wrapped).map_err(|_| KeyError::WrongMasterKey)?;
        Ok(SigningKey::from_bytes(seed.expose()))
    }

    fn kek(&self, tx: &Tx<'_>, epoch: u32) -> Result<SecretKey, KeyError> {
        let mut cache = self.keks.lock().expect("keyring lock poisoned");
        if let Some(k) = cache.get(&epoch) {
            return Ok(k.clone());
        }
        let wrapped = tx.kek_get(epoch)?.ok_or(KeyError::MissingEpoch(epoch))?;
        let kek =
            crypto::unwrap_key(&self.master, &wrapped).map_err(|_| KeyError::WrongMasterKey)?;
        cache.insert(epoch, kek.clone());
        Ok(kek)
    }

    /// A fresh data key wrapped under the current epoch.
    pub fn new_data_key(&self, tx: &Tx<'_>) -> Result<NewDataKey, KeyError> {
        let epoch = tx.kek_current()?.ok_or(KeyError::MissingEpoch(1))?;
        let kek = self.kek(tx, epoch)?;
        let key = SecretKey::random();
        let wrapped = crypto::wrap_key(&kek, &key);
        Ok(NewDataKey {
            key,
            epoch,
            wrapped,
        })
    }

    pub fn unwrap_data_key(
        &self,
        tx: &Tx<'_>,
        epoch: u32,
        wrapped: &[u8],
    ) -> Result<SecretKey, KeyError> {
        let kek = self.kek(tx, epoch)?;
        Ok(crypto::unwrap_key(&kek, wrapped)?)
    }

    /// Starts a new epoch, then re-wraps data keys in batches of 500 (one transaction each), then
    /// retires the KEKs nothing uses any more.
    pub fn rotate(&self, store: &mut Store, now: &str) -> Result<RotateReport, KeyError> {
        let new_epoch = store.write(|tx| {
            let epoch = tx.kek_current()?.unwrap_or(0) + 1;
            let kek = SecretKey::random();
            tx.kek_insert(epoch, &crypto::wrap_key(&self.master, &kek), now)?;
            Ok(epoch)
        })?;
        let mut rewrapped = 0u64;
        loop {
            let n = store.write(|tx| {
                let rows = tx.object_keys_below(new_epoch, 500)?;
                let new_kek = self.kek(tx, new_epoch).map_err(into_store)?;
                for (id, epoch, wrapped) in &rows {
                    let dk = self
                        .unwrap_data_key(tx, *epoch, wrapped)
                        .map_err(into_store)?;
                    tx.object_key_rewrap(*id, *epoch, new_epoch, &crypto::wrap_key(&new_kek, &dk))?;
                    // Objects from before a recovery key was configured get their wrap now.
                    if let Some(rec) = self.recovery_wrap(&dk)
                        && tx.object_recovery(*id)?.is_none()
                    {
                        tx.object_set_recovery(*id, &rec)?;
                    }
                }
                Ok(rows.len() as u64)
            })?;
            rewrapped += n;
            if n == 0 {
                break;
            }
        }
        let retired = store.write(|tx| {
            if tx.object_keys_count_below(new_epoch)? != 0 {
                return Ok(0);
            }
            let old: Vec<u32> = tx
                .kek_epochs()?
                .into_iter()
                .filter(|e| *e < new_epoch)
                .collect();
            for e in &old {
                tx.kek_delete(*e)?;
            }
            Ok(old.len() as u32)
        })?;
        let mut cache = self.keks.lock().expect("keyring lock poisoned");
        cache.retain(|e, _| *e >= new_epoch);
        Ok(RotateReport {
            new_epoch,
            rewrapped,
            retired,
        })
    }
}

/// Carries a key error out of a store transaction closure (which speaks `StoreError`).
fn into_store(e: KeyError) -> StoreError {
    match e {
        KeyError::Store(s) => s,
        other => StoreError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyfile_must_be_private_and_the_right_size() {
        let dir = tempfile::tempdir().unwrap();
        let files = MasterKeyFiles::new(dir.path());
        assert!(matches!(files.mode(), Err(KeyError::NoMasterKey(_))));
        let k = files.create_keyfile().unwrap();
        assert_eq!(files.mode().unwrap(), UnsealMode::KeyFile);
        assert_eq!(files.load_keyfile().unwrap().expose(), k.expose());
        let p = dir.path().join("master.key");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            files
                .load_keyfile()
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, b"short").unwrap();
        assert!(
            files
                .load_keyfile()
                .unwrap_err()
                .to_string()
                .contains("holds 5 bytes")
        );
    }

    #[test]
    fn sealing_replaces_the_keyfile_and_needs_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let files = MasterKeyFiles::new(dir.path());
        let k = files.create_keyfile().unwrap();
        assert!(matches!(
            files.seal(&k, "short"),
            Err(KeyError::WeakPassphrase)
        ));
        files.seal(&k, "a long enough passphrase").unwrap();
        assert_eq!(files.mode().unwrap(), UnsealMode::Passphrase);
        assert!(!dir.path().join("master.key").exists());
        assert!(matches!(
            files.load_sealed("wrong passphrase!!"),
            Err(KeyError::WrongPassphrase)
        ));
        assert_eq!(
            files
                .load_sealed("a long enough passphrase")
                .unwrap()
                .expose(),
            k.expose()
        );
        assert!(matches!(
            files.load(|| None),
            Err(KeyError::PassphraseNeeded)
        ));
    }
}
