//! The encrypted archive: one file per object under `DIR/archive/xx/<id>.obj`, metadata and
//! wrapped data keys in SQLite.
//!
//! Invariants kept here:
//! - No plaintext session content is written to disk: plaintext exists only in the writer's
//!   record buffer and in readers' chunk buffers, both wiped on drop. There are no temporary
//!   files.
//! - An open object is durable up to its last `sync`; the server syncs every second, so a crash
//!   loses at most the last second. `recover` seals an object left open by a crash at its last
//!   whole chunk and marks it truncated, with an audit entry.
//! - Creating an object commits its metadata row and wrapped key before the file exists, so a
//!   crash can leave a row without a file (recovered as an empty truncated object) but never a
//!   file whose key is lost.

pub mod stream;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::audit::{self, Event};
use crate::crypto::SecretKey;
use crate::keys::{KeyError, Keyring};
use crate::model::{DataClass, ObjectId, ObjectState, now_rfc3339};
use crate::store::{ObjectClose, ObjectRow, Store, StoreError};
use stream::{StreamError, StreamReader, StreamWriter};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("object {id}: {source}")]
    Stream { id: ObjectId, source: StreamError },
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("object {0} is not in the archive")]
    NotFound(ObjectId),
    #[error("object {0} was shredded; its content no longer exists")]
    Shredded(ObjectId),
    #[error("object {0} has no data key")]
    NoKey(ObjectId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The archive directory.
#[derive(Clone, Debug)]
pub struct Archive {
    root: PathBuf,
}

/// An object being written. Append freely; `sync` (or `sync_if_due`) makes what was appended
/// durable; `finish` seals it.
pub struct ObjectWriter {
    id: ObjectId,
    path: PathBuf,
    class: DataClass,
    session: Option<String>,
    stream: StreamWriter<File>,
    last_sync: Instant,
}

/// The outcome of checking one object end to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCheck {
    pub id: String,
    pub state: String,
    pub problem: Option<String>,
}

/// What crash recovery did to one object.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub id: ObjectId,
    pub state: ObjectState,
    pub chunks: u64,
    pub plain_len: u64,
    pub cut_bytes: u64,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub enum Recovery {
    Sealed(Recovered),
    /// Left open: `custos archive verify` will name it.
    Failed {
        id: ObjectId,
        error: String,
    },
}

impl Archive {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path_of(&self, id: ObjectId) -> PathBuf {
        let hex = id.to_string();
        self.root.join(&hex[..2]).join(format!("{hex}.obj"))
    }

    /// Creates an object: metadata and wrapped key first (committed), then the file with its
    /// header, fsynced with its directory.
    pub fn create(
        &self,
        store: &mut Store,
        keys: &Keyring,
        session: Option<&str>,
        class: DataClass,
    ) -> Result<ObjectWriter, ArchiveError> {
        let id = ObjectId::random();
        let now = now_rfc3339();
        let dk = store.write(|tx| {
            let dk = keys
                .new_data_key(tx)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let recovery = keys.recovery_wrap(&dk.key);
            tx.object_insert(
                id,
                session,
                class.as_str(),
                &now,
                dk.epoch,
                &dk.wrapped,
                recovery.as_deref(),
            )?;
            Ok(dk.key)
        })?;
        let path = self.path_of(id);
        let file = self.create_file(&path)?;
        let mut stream = StreamWriter::new(file, &dk, id).map_err(io_at(&path))?;
        stream.get_mut().sync_all().map_err(io_at(&path))?;
        Ok(ObjectWriter {
            id,
            path,
            class,
            session: session.map(str::to_string),
            stream,
            last_sync: Instant::now(),
        })
    }

    fn create_file(&self, path: &Path) -> Result<File, ArchiveError> {
        let dir = path.parent().expect("object paths have a parent");
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
            sync_dir(&self.root)?;
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_at(path))?;
        sync_dir(dir)?;
        Ok(f)
    }

    fn data_key(
        &self,
        store: &mut Store,
        keys: &Keyring,
        id: ObjectId,
    ) -> Result<SecretKey, ArchiveError> {
        store
            .read(|tx| {
                let Some((epoch, wrapped)) = tx.object_key(id)? else {
                    return Ok(None);
                };
                keys.unwrap_data_key(tx, epoch, &wrapped)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })?
            .ok_or(ArchiveError::NoKey(id))
    }

    /// Opens an object for reading, verifying header and key. An open object reads up to its
    /// last durable chunk and then reports truncation.
    pub fn open(
        &self,
        store: &mut Store,
        keys: &Keyring,
        id: ObjectId,
    ) -> Result<StreamReader<File>, ArchiveError> {
        let (file, dk) = self.file_and_key(store, keys, id)?;
        StreamReader::open(file, &dk, id)
            .map(StreamReader::without_digests)
            .map_err(|source| ArchiveError::Stream { id, source })
    }

    /// Opens a sealed object for random access (a recording's player seeks in it).
    pub fn open_seekable(
        &self,
        store: &mut Store,
        keys: &Keyring,
        id: ObjectId,
    ) -> Result<stream::SeekableReader<File>, ArchiveError> {
        let (file, dk) = self.file_and_key(store, keys, id)?;
        stream::SeekableReader::open(file, &dk, id)
            .map_err(|source| ArchiveError::Stream { id, source })
    }

    /// An object's file and data key, refusing unknown and shredded objects.
    fn file_and_key(
        &self,
        store: &mut Store,
        keys: &Keyring,
        id: ObjectId,
    ) -> Result<(File, SecretKey), ArchiveError> {
        let row = store
            .read(|tx| tx.object_get(id))?
            .ok_or(ArchiveError::NotFound(id))?;
        if row.state == ObjectState::Shredded {
            return Err(ArchiveError::Shredded(id));
        }
        let dk = self.data_key(store, keys, id)?;
        let path = self.path_of(id);
        let file = File::open(&path).map_err(io_at(&path))?;
        Ok((file, dk))
    }

    /// Reads a whole object, verifying every chunk.
    pub fn read_all(
        &self,
        store: &mut Store,
        keys: &Keyring,
        id: ObjectId,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ArchiveError> {
        let r = self.open(store, keys, id)?;
        r.read_to_end()
            .map_err(|source| ArchiveError::Stream { id, source })
    }

    /// Seals every object a crash left open at its last whole chunk, with an audit entry each.
    /// Run at start-up, before anything else writes to the archive. An object that cannot be
    /// recovered (its header is damaged) is reported and left open; the others still are.
    pub fn recover(
        &self,
        store: &mut Store,
        keys: &Keyring,
    ) -> Result<Vec<Recovery>, ArchiveError> {
        let open = store.read(|tx| tx.objects(Some(ObjectState::Open)))?;
        let mut out = Vec::new();
        for row in open {
            match self.recover_one(store, keys, &row) {
                Ok(r) => out.push(Recovery::Sealed(r)),
                Err(e) => {
                    store.write(|tx| {
                        audit::append_tx(
                            tx,
                            &[Event::system(
                                "archive.object.unrecoverable",
                                &format!("object:{}", row.id),
                                json!({ "error": e.to_string() }),
                            )
                            .outcome(audit::Outcome::Failure)],
                        )
                    })?;
                    out.push(Recovery::Failed {
                        id: row.id,
                        error: e.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn recover_one(
        &self,
        store: &mut Store,
        keys: &Keyring,
        row: &ObjectRow,
    ) -> Result<Recovered, ArchiveError> {
        let id = row.id;
        let dk = self.data_key(store, keys, id)?;
        let path = self.path_of(id);
        let original_len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let stream_err = |source| ArchiveError::Stream { id, source };
        // What to keep of the file, and what to say about what was cut.
        let (keep, chunks, finished, reason) = if original_len < stream::HEADER_LEN as u64 {
            // The crash came before the header was durable: start the file again, empty.
            let _ = fs::remove_file(&path);
            let mut f = self.create_file(&path)?;
            let w = StreamWriter::new(&mut f, &dk, id).map_err(io_at(&path))?;
            drop(w);
            f.sync_all().map_err(io_at(&path))?;
            (
                stream::HEADER_LEN as u64,
                0,
                false,
                "the header was never made durable".to_string(),
            )
        } else {
            let file = File::open(&path).map_err(io_at(&path))?;
            let mut r = StreamReader::open(file, &dk, id).map_err(stream_err)?;
            let problem = loop {
                match r.next_chunk() {
                    Ok(Some(_)) => {}
                    Ok(None) => break None,
                    Err(StreamError::Io(e)) => return Err(io_at(&path)(e)),
                    Err(e) => break Some(e),
                }
            };
            let reason = match &problem {
                None => "the final chunk was durable; only the metadata was not".to_string(),
                Some(StreamError::Truncated { .. }) => {
                    "left open by an unclean shutdown or a failed write".to_string()
                }
                Some(StreamError::TrailingData) => "data after the final chunk was cut".to_string(),
                Some(e) => format!("damaged chunk, cut with everything after it: {e}"),
            };
            // An object that a previous recovery sealed (then crashed before recording it) was cut.
            let was_cut = r.finished() && r.sealed_by_recovery();
            (
                r.verified_cipher_len(),
                r.chunks(),
                r.finished() && !was_cut,
                reason,
            )
        };
        let cut_bytes = if original_len < stream::HEADER_LEN as u64 {
            original_len
        } else {
            original_len - keep
        };
        if cut_bytes > 0 || !finished {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_at(&path))?;
            f.set_len(keep).map_err(io_at(&path))?;
            if !finished {
                use std::io::Seek;
                f.seek(io::SeekFrom::End(0)).map_err(io_at(&path))?;
                f.write_all(&stream::recovery_final_record(&dk, id, chunks))
                    .map_err(io_at(&path))?;
            }
            f.sync_all().map_err(io_at(&path))?;
        }
        let file = File::open(&path).map_err(io_at(&path))?;
        let summary = StreamReader::open(file, &dk, id)
            .and_then(|r| r.verify_to_end())
            .map_err(stream_err)?;
        let state = if finished && cut_bytes == 0 {
            ObjectState::Sealed
        } else {
            ObjectState::Truncated
        };
        let close = ObjectClose {
            state,
            closed_at: now_rfc3339(),
            chunks: summary.chunks,
            plain_len: summary.plain_len,
            cipher_len: summary.cipher_len,
            plain_sha256: summary.plain_sha256,
            cipher_sha256: summary.cipher_sha256,
        };
        let action = if state == ObjectState::Truncated {
            "archive.object.recovered"
        } else {
            "archive.object.sealed"
        };
        store.write(|tx| {
            tx.object_close(id, &close)?;
            audit::append_tx(
                tx,
                &[Event::system(
                    action,
                    &format!("object:{id}"),
                    json!({
                        "class": row.class,
                        "session": row.session_id,
                        "state": state.as_str(),
                        "chunks": summary.chunks,
                        "plain_len": summary.plain_len,
                        "cut_bytes": cut_bytes,
                        "cipher_sha256": hex::encode(summary.cipher_sha256),
                        "reason": reason,
                    }),
                )],
            )
        })?;
        Ok(Recovered {
            id,
            state,
            chunks: summary.chunks,
            plain_len: summary.plain_len,
            cut_bytes,
            reason,
        })
    }

    /// Reads every object end to end and checks it against its metadata; also finds object files
    /// no row knows about. Returns one check per object and per stray file.
    pub fn verify(
        &self,
        store: &mut Store,
        keys: &Keyring,
    ) -> Result<Vec<ObjectCheck>, ArchiveError> {
        let rows = store.read(|tx| tx.objects(None))?;
        let mut known = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            known.insert(self.path_of(row.id));
            let problem = self.check_one(store, keys, &row).err();
            out.push(ObjectCheck {
                id: row.id.to_string(),
                state: row.state.as_str().into(),
                problem,
            });
        }
        for path in walk_files(&self.root).map_err(io_at(&self.root))? {
            if !known.contains(&path) {
                out.push(ObjectCheck {
                    id: path.display().to_string(),
                    state: "unknown".into(),
                    problem: Some("unexpected file: no archive object has this name".into()),
                });
            }
        }
        Ok(out)
    }

    fn check_one(&self, store: &mut Store, keys: &Keyring, row: &ObjectRow) -> Result<(), String> {
        let path = self.path_of(row.id);
        if row.state == ObjectState::Shredded {
            return if path.exists() {
                Err("shredded, but its ciphertext is still on disk".into())
            } else {
                Ok(())
            };
        }
        if !path.exists() {
            return Err("missing: the object file does not exist".into());
        }
        let dk = self
            .data_key(store, keys, row.id)
            .map_err(|e| e.to_string())?;
        let file = File::open(&path).map_err(|e| format!("cannot open: {e}"))?;
        let mut r = StreamReader::open(file, &dk, row.id).map_err(|e| e.to_string())?;
        loop {
            match r.next_chunk() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                // An object being written has no final chunk yet; what is durable must verify.
                Err(StreamError::Truncated { .. }) if row.state == ObjectState::Open => {
                    return Ok(());
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if row.state == ObjectState::Open {
            return Ok(());
        }
        let s = r.summary().expect("final chunk read");
        let mismatch = |what: &str| Err(format!("{what} differs from the recorded value"));
        if Some(s.cipher_sha256) != row.cipher_sha256 {
            return mismatch("ciphertext SHA-256");
        }
        if Some(s.plain_sha256) != row.plain_sha256 {
            return mismatch("plaintext SHA-256");
        }
        if Some(s.plain_len) != row.plain_len
            || Some(s.cipher_len) != row.cipher_len
            || Some(s.chunks) != row.chunks
        {
            return mismatch("size");
        }
        Ok(())
    }
}

fn walk_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !root.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(walk_files(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

impl ObjectWriter {
    pub fn id(&self) -> ObjectId {
        self.id
    }

    pub fn class(&self) -> DataClass {
        self.class
    }

    /// Buffers plaintext; full 64 KiB chunks are encrypted and written as they fill.
    pub fn append(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        self.stream.append(data).map_err(io_at(&self.path))
    }

    /// Makes everything appended so far durable: the buffered tail becomes a short chunk and
    /// the file is fdatasync'ed.
    pub fn sync(&mut self) -> Result<(), ArchiveError> {
        self.stream.flush_chunk().map_err(io_at(&self.path))?;
        self.stream
            .get_mut()
            .sync_data()
            .map_err(io_at(&self.path))?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs if `interval` has passed since the last sync. Returns whether it did.
    pub fn sync_if_due(&mut self, interval: Duration) -> Result<bool, ArchiveError> {
        if self.last_sync.elapsed() < interval {
            return Ok(false);
        }
        self.sync()?;
        Ok(true)
    }

    pub fn plain_len(&self) -> u64 {
        self.stream.plain_len()
    }

    /// Writes the final chunk, fsyncs, and records the object as sealed with an audit entry
    /// carrying its ciphertext digest.
    pub fn finish(self, store: &mut Store) -> Result<ObjectClose, ArchiveError> {
        let (file, s) = self.stream.finish().map_err(io_at(&self.path))?;
        file.sync_all().map_err(io_at(&self.path))?;
        let close = ObjectClose {
            state: ObjectState::Sealed,
            closed_at: now_rfc3339(),
            chunks: s.chunks,
            plain_len: s.plain_len,
            cipher_len: s.cipher_len,
            plain_sha256: s.plain_sha256,
            cipher_sha256: s.cipher_sha256,
        };
        let id = self.id;
        store.write(|tx| {
            tx.object_close(id, &close)?;
            audit::append_tx(
                tx,
                &[Event::system(
                    "archive.object.sealed",
                    &format!("object:{id}"),
                    json!({
                        "class": self.class.as_str(),
                        "session": self.session,
                        "chunks": s.chunks,
                        "plain_len": s.plain_len,
                        "cipher_len": s.cipher_len,
                        "cipher_sha256": hex::encode(s.cipher_sha256),
                    }),
                )],
            )
        })?;
        Ok(close)
    }
}
