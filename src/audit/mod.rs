//! The audit trail: every login, read of session content, change and deletion is an entry; the
//! entries are the leaves of an RFC 6962 Merkle tree; signed checkpoints commit to the tree.
//!
//! Invariant kept here: the log is append-only, and `verify` detects any change to a past entry.
//! Appends happen in one `BEGIN IMMEDIATE` transaction that assigns the next sequence numbers,
//! stores each entry with its leaf hash, and stores the complete subtrees the append finished
//! (so proofs never re-hash the log). Two processes appending at once therefore serialize.
//!
//! docs/formats/audit.md specifies the entry encoding and the checkpoint byte by byte.

pub mod job;
pub mod merkle;
pub mod note;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::now_rfc3339;
use crate::store::{NewAuditRow, Store, StoreError, Tx};
use merkle::{Frontier, Hash, Subtrees};
use note::{Checkpoint, NoteSigner, NoteVerifier};

/// Version of the entry encoding (the `v` field).
pub const ENTRY_VERSION: u32 = 1;
/// The largest entry accepted, encoded.
pub const MAX_ENTRY_LEN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("audit entry is {0} bytes encoded; the limit is {MAX_ENTRY_LEN}")]
    TooLarge(usize),
    #[error("no checkpoint verifier key in this data directory")]
    NoVerifierKey,
    #[error(transparent)]
    Note(#[from] note::NoteError),
    #[error(
        "refusing to sign: the log has {size} entries but checkpoint {signed} was already signed over more"
    )]
    Shrunk { size: u64, signed: u64 },
}

/// Whether the act succeeded, was refused, or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

/// One act to record. `actor` is a user name, `system`, or `cli:<unix user>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source: String,
    pub details: Value,
}

impl Event {
    /// An act by the appliance itself.
    pub fn system(action: &str, target: &str, details: Value) -> Self {
        Self {
            actor: "system".into(),
            role: "system".into(),
            action: action.into(),
            target: target.into(),
            outcome: Outcome::Success,
            source: "local".into(),
            details,
        }
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }
}

/// An entry as stored: the event plus its position and time. Its JSON encoding, exactly as
/// stored, is the Merkle leaf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub v: u32,
    pub seq: u64,
    pub time: String,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub source: String,
    pub details: Value,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit entry always serializes")
    }
}

/// Reads the stored tree nodes through a transaction.
pub struct TreeNodes<'a, 'c>(pub &'a Tx<'c>);

impl Subtrees for TreeNodes<'_, '_> {
    type Error = StoreError;
    fn complete(&self, level: u32, index: u64) -> Result<Hash, StoreError> {
        self.0.audit_node(level, index)
    }
}

/// Appends events in one transaction and returns their sequence numbers.
pub fn append(store: &mut Store, events: &[Event]) -> Result<Vec<u64>, AuditError> {
    let too_large = std::cell::Cell::new(None);
    let r = store.write(|tx| {
        append_tx(tx, events).inspect_err(|e| {
            if let StoreError::Conflict(m) = e
                && let Some(n) = m.strip_prefix(TOO_LARGE).and_then(|n| n.parse().ok())
            {
                too_large.set(Some(n));
            }
        })
    });
    match (r, too_large.get()) {
        (Err(_), Some(n)) => Err(AuditError::TooLarge(n)),
        (r, _) => Ok(r?),
    }
}

const TOO_LARGE: &str = "audit entry too large: ";

/// Appends events inside a caller's transaction, so that an act and its audit entry commit
/// together or not at all.
pub fn append_tx(tx: &Tx<'_>, events: &[Event]) -> Result<Vec<u64>, StoreError> {
    let time = now_rfc3339();
    let size = tx.audit_size()?;
    let mut frontier = Frontier::load(&TreeNodes(tx), size)?;
    let mut seqs = Vec::with_capacity(events.len());
    for ev in events {
        let seq = frontier.size();
        let entry = Entry {
            v: ENTRY_VERSION,
            seq,
            time: time.clone(),
            actor: ev.actor.clone(),
            role: ev.role.clone(),
            action: ev.action.clone(),
            target: ev.target.clone(),
            outcome: ev.outcome,
            source: ev.source.clone(),
            details: ev.details.clone(),
        };
        let bytes = entry.encode();
        if bytes.len() > MAX_ENTRY_LEN || !entry.details.is_object() {
            return Err(StoreError::Conflict(format!("{TOO_LARGE}{}", bytes.len())));
        }
        let leaf = merkle::leaf_hash(&bytes);
        tx.audit_insert(&NewAuditRow {
            seq,
            entry: &bytes,
            leaf: &leaf,
            time: &time,
            actor: &entry.actor,
            action: &entry.action,
            target: &entry.target,
        })?;
        crate::integrations::enqueue_tx(tx, &entry)?;
        for (level, idx, h) in frontier.push(leaf) {
            tx.audit_node_insert(level, idx, &h)?;
        }
        seqs.push(seq);
    }
    Ok(seqs)
}

/// The log's origin line and signer for this appliance.
pub fn origin(appliance_id: &str) -> String {
    format!("custos/{appliance_id}")
}

/// Signs and stores a checkpoint of the whole log if it has grown since the last one.
pub fn checkpoint(
    store: &mut Store,
    signer: &NoteSigner,
    origin: &str,
) -> Result<Option<Checkpoint>, AuditError> {
    store.write(|tx| {
        let size = tx.audit_size()?;
        let latest = tx.checkpoint_latest()?.map(|(s, _)| s);
        if let Some(signed) = latest.filter(|s| *s > size) {
            return Ok(Err(AuditError::Shrunk { size, signed }));
        }
        if size == 0 || latest == Some(size) {
            return Ok(Ok(None));
        }
        let root = merkle::root(&TreeNodes(tx), size)?;
        let cp = Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        };
        tx.checkpoint_insert(size, &signer.sign(&cp.body()), &now_rfc3339())?;
        Ok(Ok(Some(cp)))
    })?
}

/// The stored checkpoint verifier key.
pub fn verifier(tx: &Tx<'_>) -> Result<NoteVerifier, AuditError> {
    let vkey = tx
        .meta_get("checkpoint_vkey")?
        .ok_or(AuditError::NoVerifierKey)?;
    Ok(NoteVerifier::from_vkey(&vkey)?)
}

/// What went wrong, naming the first entry or checkpoint concerned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("entry #{seq} is missing (deleted or renumbered)")]
    Missing { seq: u64 },
    #[error("entry #{seq} is altered: {why}")]
    Altered { seq: u64, why: String },
    #[error("checkpoint at size {size}: {why}")]
    BadCheckpoint { size: u64, why: String },
    #[error(
        "entries #{from}..#{to} do not match the signed checkpoint at size {size}: one of them was altered, inserted or removed, and its stored hash forged to match"
    )]
    RootMismatch { from: u64, to: u64, size: u64 },
    #[error(
        "the log holds {entries} entries but the checkpoint at size {size} was signed over more: entries from #{entries} on were deleted"
    )]
    LogTruncated { entries: u64, size: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    /// The newest verified checkpoint.
    pub latest: Option<Checkpoint>,
    /// Entries appended after the newest checkpoint (not yet signed; normal for a few seconds).
    pub unsigned_tail: u64,
    pub root: Hash,
}

/// Recomputes the whole tree from the stored entries, checks every stored leaf hash, every
/// checkpoint signature and root, and consistency between successive checkpoints. Reports the
/// first problem found in log order. `progress` is called with (entries done, total).
pub fn verify(
    store: &mut Store,
    verifier: &NoteVerifier,
    mut progress: impl FnMut(u64, u64),
) -> Result<Result<VerifyReport, Problem>, AuditError> {
    store
        .read(|tx| {
            let total = tx.audit_size()?;
            // Checkpoints are opened up front but judged when the scan reaches their size, so that
            // the first problem in log order is the one reported.
            let mut cps: Vec<(u64, Result<Checkpoint, String>)> = Vec::new();
            for (size, note_text) in tx.checkpoints()? {
                let opened = match verifier.open_checkpoint(&note_text) {
                    Ok(cp) if cp.size != size => Err(format!(
                        "stored at size {size} but signed for size {}",
                        cp.size
                    )),
                    Ok(cp) if cp.origin != verifier.name => {
                        Err(format!("signed for another log ({})", cp.origin))
                    }
                    Ok(cp) => Ok(cp),
                    Err(e) => Err(e.to_string()),
                };
                cps.push((size, opened));
            }
            let mut frontier = Frontier::new();
            let mut next_cp = 0usize;
            let mut prev: Option<Checkpoint> = None;
            let mut problem = None;
            let mut verified_cps = 0u64;
            tx.audit_scan(0, |row| {
                let seq = frontier.size();
                if row.seq != seq {
                    problem = Some(Problem::Missing { seq });
                    return Ok(false);
                }
                let leaf = merkle::leaf_hash(&row.entry);
                let why = match serde_json::from_slice::<Entry>(&row.entry) {
                    Err(e) => Some(format!("not a valid entry: {e}")),
                    Ok(e) if e.seq != seq => Some(format!("it says it is #{}", e.seq)),
                    Ok(e) if e.v != ENTRY_VERSION => Some(format!("unknown version {}", e.v)),
                    Ok(_) if row.leaf_hash != leaf => {
                        Some("its content no longer matches its leaf hash".into())
                    }
                    Ok(_) => match tx.audit_node(0, seq) {
                        Ok(h) if h == leaf => None,
                        Ok(_) => Some(
                            "its content no longer matches the tree's copy of its leaf hash".into(),
                        ),
                        Err(StoreError::NotFound(_)) => {
                            Some("its leaf is missing from the stored tree".into())
                        }
                        Err(e) => return Err(e),
                    },
                };
                if let Some(why) = why {
                    problem = Some(Problem::Altered { seq, why });
                    return Ok(false);
                }
                frontier.push(leaf);
                while next_cp < cps.len() && cps[next_cp].0 <= frontier.size() {
                    let (size, opened) = &cps[next_cp];
                    let cp = match opened {
                        Ok(cp) => cp,
                        Err(why) => {
                            problem = Some(Problem::BadCheckpoint {
                                size: *size,
                                why: why.clone(),
                            });
                            return Ok(false);
                        }
                    };
                    if cp.root != frontier.root() {
                        let from = prev.as_ref().map_or(0, |p| p.size);
                        problem = Some(Problem::RootMismatch {
                            from,
                            to: cp.size - 1,
                            size: cp.size,
                        });
                        return Ok(false);
                    }
                    if let Some(p) = &prev {
                        let proof = consistency_proof(tx, p.size, cp.size);
                        let checked = proof.map_err(|e| e.to_string()).and_then(|proof| {
                            merkle::verify_consistency(p.size, cp.size, &p.root, &cp.root, &proof)
                                .map_err(|e| e.to_string())
                        });
                        if let Err(e) = checked {
                            problem = Some(Problem::BadCheckpoint {
                                size: cp.size,
                                why: format!(
                                    "the stored tree gives no consistency proof from size {}: {e}",
                                    p.size
                                ),
                            });
                            return Ok(false);
                        }
                    }
                    prev = Some(cp.clone());
                    verified_cps += 1;
                    next_cp += 1;
                }
                if seq.is_multiple_of(65_536) {
                    progress(seq, total);
                }
                Ok(true)
            })?;
            if let Some(p) = problem {
                return Ok(Err(p));
            }
            if let Some((size, _)) = cps.get(next_cp) {
                return Ok(Err(Problem::LogTruncated {
                    entries: frontier.size(),
                    size: *size,
                }));
            }
            progress(frontier.size(), total);
            Ok(Ok(VerifyReport {
                entries: frontier.size(),
                checkpoints: verified_cps,
                unsigned_tail: frontier.size() - prev.as_ref().map_or(0, |p| p.size),
                latest: prev,
                root: frontier.root(),
            }))
        })
        .map_err(AuditError::from)
}

/// An inclusion proof for entry `seq` in the tree of `size` entries.
pub fn inclusion_proof(tx: &Tx<'_>, seq: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
    if seq >= size || size > tx.audit_size()? {
        return Err(StoreError::NotFound(format!(
            "entry #{seq} in a log of {size} entries"
        )));
    }
    merkle::inclusion_proof(&TreeNodes(tx), seq, size)
}

/// A consistency proof between tree sizes `m` and `n`.
pub fn consistency_proof(tx: &Tx<'_>, m: u64, n: u64) -> Result<Vec<Hash>, StoreError> {
    if m == 0 || m > n || n > tx.audit_size()? {
        return Err(StoreError::NotFound(format!(
            "a consistency proof from size {m} to size {n}"
        )));
    }
    merkle::consistency_proof(&TreeNodes(tx), m, n)
}

/// Decodes a stored entry for display; a damaged one is reported, not hidden.
pub fn decode(row: &crate::store::AuditRow) -> Result<Entry, String> {
    serde_json::from_slice(&row.entry)
        .map_err(|e| format!("entry #{} is not readable: {e}", row.seq))
}
