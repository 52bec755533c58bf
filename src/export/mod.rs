//! Signed export bundles for auditors (docs/formats/export.md): a deterministic tar holding a
//! BagIt 1.0 bag with the chosen sessions' records, the audit entries about them with inclusion
//! proofs to a signed checkpoint, and two signatures over the tag manifest. `verify` checks a
//! bundle offline, streaming, with no data directory.

pub mod job;
pub mod sign;
pub mod tar;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Value, json};

use crate::archive::Archive;
use crate::audit::merkle;
use crate::audit::note::NoteVerifier;
use crate::crypto::{Sha256Stream, sha256};
use crate::keys::Keyring;
use crate::model::{DataClass, ObjectId};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What to export and why.
pub struct Request {
    pub sessions: Vec<String>,
    pub exported_by: String,
    pub reason: String,
    /// How the sessions were chosen, as the exporter said it (for bag-info.txt).
    pub selection: String,
    /// Auditors' age recipients: when given, payload files are stored encrypted to them.
    pub recipients: Vec<crate::age::Recipient>,
    /// The newest checkpoint the auditor already holds (a signed note): the bundle then carries
    /// a consistency proof from it.
    pub since_checkpoint: Option<String>,
}

const VIEWER: &str = include_str!("viewer.html");
/// The agent page's painter (tiles, JPEG, WebM), inlined into the offline viewer's player.
const SCREEN_JS: &str = include_str!("../web/assets/screen.js");

/// Files left in the clear even in an encrypted bundle: what `custos verify` needs.
fn stays_clear(path: &str) -> bool {
    path == "data/checkpoint.txt"
        || path == "data/checkpoint.vkey"
        || path == "data/consistency.json"
        || path.ends_with("/audit.jsonl")
}

pub struct Built {
    pub tar: Vec<u8>,
    pub export_id: String,
    pub manifest_sha256: String,
    pub files: usize,
}

/// A file name safe in a directory: letters, digits and `.-_`, at most 80, never hidden.
pub fn safe_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if n.is_empty() || n.starts_with('.') {
        format!("_{n}")
    } else {
        n
    }
}

fn read_objects(
    store: &mut Store,
    archive: &Archive,
    keys: &Keyring,
    session: &str,
    class: DataClass,
) -> Result<Vec<u8>, ExportError> {
    let ids = store.read(|tx| tx.session_objects(session, class.as_str()))?;
    let mut out = Vec::new();
    for id in ids {
        out.extend_from_slice(&archive.read_all(store, keys, id)?);
    }
    Ok(out)
}

/// Resolves a selection: explicit session ids, every session with an external ref, or every
/// session requested in a time range. Sorted, without repeats.
pub fn select(
    store: &mut Store,
    sessions: Vec<String>,
    external_ref: Option<String>,
    since: Option<String>,
    until: Option<String>,
) -> Result<Vec<String>, ExportError> {
    let time = |t: &str, end: bool| {
        if end {
            crate::model::parse_range_end(t)
        } else {
            crate::model::parse_time(t)
        }
        .map(crate::model::format_rfc3339)
        .map_err(|e| ExportError::Refused(e.to_string()))
    };
    let by_filter = sessions.is_empty();
    let mut ids = match (sessions.is_empty(), external_ref, since, until) {
        (false, None, None, None) => sessions,
        (true, Some(r), None, None) => store.read(|tx| tx.session_ids_by(Some(&r), None, None))?,
        (true, None, Some(a), Some(b)) => {
            let (a, b) = (time(&a, false)?, time(&b, true)?);
            store.read(|tx| tx.session_ids_by(None, Some(&a), Some(&b)))?
        }
        _ => {
            return Err(ExportError::Refused(
                "choose sessions by id, by ref, or by since with until".into(),
            ));
        }
    };
    ids.sort();
    ids.dedup();
    if by_filter {
        // Sessions still live are left out of a selection by ref or time (an explicit id of one
        // is refused by `build`).
        let live = store.read(|tx| {
            let mut live = std::collections::HashSet::new();
            for id in &ids {
                if tx
                    .session_get(id)?
                    .is_some_and(|r| matches!(r.status.as_str(), "waiting" | "active"))
                {
                    live.insert(id.clone());
                }
            }
            Ok(live)
        })?;
        ids.retain(|i| !live.contains(i));
    }
    Ok(ids)
}

/// The audit entries of an export: `export.created` with its digests, and one `session.read`
/// per session it holds (an export reads them all).
pub fn audit_events(
    actor: &crate::audit::Event,
    built: &Built,
    ids: &[String],
    reason: &str,
    encrypted: bool,
) -> Vec<crate::audit::Event> {
    let mut events = vec![crate::audit::Event {
        action: "export.created".into(),
        target: format!("export:{}", built.export_id),
        details: json!({ "sessions": ids, "reason": reason, "encrypted": encrypted, "manifest_sha256": built.manifest_sha256, "bundle_sha256": hex::encode(crate::crypto::sha256(&built.tar)) }),
        ..actor.clone()
    }];
    for id in ids {
        events.push(crate::audit::Event {
            action: "session.read".into(),
            target: format!("session:{id}"),
            details: json!({ "parts": ["export"], "export": built.export_id, "reason": reason }),
            ..actor.clone()
        });
    }
    events
}

/// Builds a bundle. Everything it contains is decided by the selection and the appliance's
/// state (the newest checkpoint), so the same inputs give the same bytes.
pub fn build(
    store: &mut Store,
    archive: &Archive,
    keys: &Keyring,
    signing: &SigningKey,
    appliance_id: &str,
    req: &Request,
    mut progress: impl FnMut(usize, usize),
) -> Result<Built, ExportError> {
    if req.sessions.is_empty() {
        return Err(ExportError::Refused(
            "the selection matches no session".into(),
        ));
    }
    let (checkpoint, vkey) =
        store.read(|tx| Ok((tx.checkpoint_latest()?, tx.meta_get("checkpoint_vkey")?)))?;
    let (cp_size, cp_note) = checkpoint.ok_or_else(|| {
        ExportError::Refused("no signed checkpoint exists yet; start the server once".into())
    })?;
    let vkey = vkey.ok_or_else(|| ExportError::Refused("no checkpoint verifier key".into()))?;
    let cp = NoteVerifier::from_vkey(&vkey)
        .and_then(|v| v.open_checkpoint(&cp_note))
        .map_err(|e| ExportError::Refused(format!("the newest checkpoint does not verify: {e}")))?;
    let verifier =
        NoteVerifier::from_vkey(&vkey).map_err(|e| ExportError::Refused(e.to_string()))?;
    let consistency = match &req.since_checkpoint {
        None => None,
        Some(note) => {
            let old = verifier.open_checkpoint(note).map_err(|e| {
                ExportError::Refused(format!(
                    "the checkpoint you gave is not one of this appliance's: {e}"
                ))
            })?;
            if old.size > cp.size || old.size == 0 {
                return Err(ExportError::Refused(format!(
                    "the checkpoint you gave (size {}) is newer than the appliance's newest ({})",
                    old.size, cp.size
                )));
            }
            let proof = store.read(|tx| crate::audit::consistency_proof(tx, old.size, cp.size))?;
            Some(
                json!({ "from_size": old.size, "from_root": B64.encode(old.root), "to_size": cp.size, "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>() }),
            )
        }
    };
    let mut viewer_sessions = Vec::new();
    let mut sessions = req.sessions.clone();
    sessions.sort();
    sessions.dedup();
    let export_id = hex::encode(
        &sha256(
            format!(
                "{appliance_id}\n{cp_size}\n{}\n{}\n{}",
                sessions.join(","),
                req.exported_by,
                req.reason
            )
            .as_bytes(),
        )[..8],
    );
    let root = format!("custos-export-{export_id}");
    let mut payload: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    payload.insert("data/checkpoint.txt".into(), cp_note.clone().into_bytes());
    payload.insert(
        "data/checkpoint.vkey".into(),
        format!("{vkey}\n").into_bytes(),
    );
    if let Some(c) = &consistency {
        payload.insert(
            "data/consistency.json".into(),
            serde_json::to_vec_pretty(c).expect("json"),
        );
    }
    for (n, sid) in sessions.iter().enumerate() {
        progress(n, sessions.len());
        let row = store
            .read(|tx| tx.session_get(sid))?
            .ok_or_else(|| ExportError::Refused(format!("no session {sid}")))?;
        // A live session's record is still being written: an export of it would be incomplete.
        if matches!(row.status.as_str(), "waiting" | "active") {
            return Err(ExportError::Refused(format!(
                "session {sid} is still {}: export it once it has ended",
                row.status
            )));
        }
        let (participants, files) = store.read(|tx| Ok((tx.participants(sid)?, tx.files(sid)?)))?;
        let base = format!("data/sessions/{sid}");
        let transcript = read_objects(store, archive, keys, sid, DataClass::Transcript)?;
        let events = read_objects(store, archive, keys, sid, DataClass::Events)?;
        let survey = read_objects(store, archive, keys, sid, DataClass::Survey)?;
        let diagnostics = read_objects(store, archive, keys, sid, DataClass::Diagnostics)?;
        let mut text = String::new();
        for line in transcript.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(m) = serde_json::from_slice::<Value>(line) {
                let what = m["text"].as_str().or(m["url"].as_str()).unwrap_or("");
                text.push_str(&format!(
                    "[{}] {} ({}): {}\n",
                    m["at"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or(""),
                    m["type"].as_str().unwrap_or(""),
                    what
                ));
            }
        }
        let mut file_list = Vec::new();
        for f in &files {
            let oid: ObjectId = f
                .object_id
                .parse()
                .map_err(|e: crate::model::ParseError| ExportError::Refused(e.to_string()))?;
            let name = format!("{base}/files/{}-{}", f.id, safe_name(&f.name));
            match archive.read_all(store, keys, oid) {
                Ok(bytes) => {
                    payload.insert(name.clone(), bytes.to_vec());
                    file_list.push(json!({ "file_id": f.id, "name": f.name, "size": f.size, "sha256": hex::encode(&f.sha256), "path": name.trim_start_matches(&format!("{base}/")) }));
                }
                Err(crate::archive::ArchiveError::Shredded(_)) => {
                    file_list.push(json!({ "file_id": f.id, "name": f.name, "shredded": true }))
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Screen recordings, in their stored record format (docs/formats/recording.md).
        let mut recordings = Vec::new();
        let recording_ids = store.read(|tx| tx.objects_of_session(sid))?;
        for o in recording_ids.iter().filter(|o| o.class == "recording") {
            let name = format!("{base}/recordings/{}.rec", o.id);
            match archive.read_all(store, keys, o.id) {
                Ok(bytes) => {
                    recordings.push(json!({ "object": o.id.to_string(), "bytes": bytes.len(), "sha256": hex::encode(sha256(&bytes)), "path": name.trim_start_matches(&format!("{base}/")) }));
                    payload.insert(name, bytes.to_vec());
                }
                Err(crate::archive::ArchiveError::Shredded(_)) => {
                    recordings.push(json!({ "object": o.id.to_string(), "shredded": true }))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let session = json!({
            "session_id": row.id, "status": row.status, "via": row.via, "portal": row.portal, "skill": row.skill,
            "request": { "name": row.customer_name, "email": row.customer_email, "question": row.question },
            "fields": serde_json::from_str::<Value>(&row.fields).unwrap_or(Value::Null),
            "ref": row.external_ref, "agent": row.agent_name,
            "participants": participants.iter().map(|p| json!({ "kind": p.kind, "name": p.name, "joined_at": p.joined_at, "left_at": p.left_at })).collect::<Vec<_>>(),
            "timings": { "requested_at": row.requested_at, "accepted_at": row.accepted_at, "ended_at": row.ended_at },
            "survey_rating": row.survey_rating,
            "files": file_list,
            "recordings": recordings,
        });
        let mut for_viewer = session.clone();
        for_viewer["transcript"] = Value::Array(
            transcript
                .split(|b| *b == b'\n')
                .filter_map(|l| serde_json::from_slice(l).ok())
                .collect(),
        );
        for_viewer["diagnostics"] = Value::Array(
            diagnostics
                .split(|b| *b == b'\n')
                .filter_map(|l| serde_json::from_slice(l).ok())
                .collect(),
        );
        for_viewer["encrypted"] = json!(!req.recipients.is_empty());
        viewer_sessions.push(for_viewer);
        payload.insert(
            format!("{base}/session.json"),
            serde_json::to_vec_pretty(&session).expect("json"),
        );
        payload.insert(format!("{base}/transcript.jsonl"), transcript);
        payload.insert(format!("{base}/transcript.txt"), text.into_bytes());
        payload.insert(format!("{base}/events.jsonl"), events);
        if !survey.is_empty() {
            payload.insert(format!("{base}/survey.json"), survey);
        }
        if !diagnostics.is_empty() {
            payload.insert(format!("{base}/diagnostics.jsonl"), diagnostics);
        }
        // The audit entries about this session, each with its inclusion proof to the checkpoint.
        let target = format!("session:{sid}");
        let mut audit = String::new();
        store.read(|tx| {
            for r in tx.audit_by_target(&target, 100_000)? {
                if r.seq >= cp_size {
                    continue;
                }
                let proof = crate::audit::inclusion_proof(tx, r.seq, cp_size)?;
                audit.push_str(&json!({ "seq": r.seq, "entry_base64": B64.encode(&r.entry), "proof": proof.iter().map(|h| B64.encode(h)).collect::<Vec<_>>() }).to_string());
                audit.push('\n');
            }
            Ok(())
        })?;
        payload.insert(format!("{base}/audit.jsonl"), audit.into_bytes());
    }
    // The offline viewer: one HTML file with the data inside, since a browser opening files from
    // disk may not fetch others.
    let data = json!({
        "export_id": export_id, "appliance_id": appliance_id, "exported_by": req.exported_by, "reason": req.reason,
        "checkpoint_size": cp.size, "sessions": viewer_sessions,
    });
    let embedded = data.to_string().replace("</", "<\\/");
    payload.insert(
        "data/index.html".into(),
        VIEWER
            .replace("/*SCREEN_JS*/", &SCREEN_JS.replace("</", "<\\/"))
            .replace("/*DATA*/null", &embedded)
            .into_bytes(),
    );
    // Encrypted to the auditors, a payload file is stored as NAME.age; the manifests cover what
    // is stored, so the bundle verifies before anyone decrypts it.
    if !req.recipients.is_empty() {
        payload = payload
            .into_iter()
            .map(|(p, b)| {
                if stays_clear(&p) {
                    (p, b)
                } else {
                    (format!("{p}.age"), crate::age::encrypt(&req.recipients, &b))
                }
            })
            .collect();
    }
    let total: usize = payload.values().map(Vec::len).sum();
    let manifest: String = payload
        .iter()
        .map(|(p, b)| format!("{}  {p}\n", hex::encode(sha256(b))))
        .collect();
    let key = signing.verifying_key();
    let signer_id = format!("custos-export@{appliance_id}");
    let mut tags: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    tags.insert(
        "bagit.txt".into(),
        b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n".to_vec(),
    );
    let info = format!(
        "Source-Organization: Custos appliance {appliance_id}\nExport-Id: {export_id}\nAppliance-Id: {appliance_id}\nExported-By: {}\nExport-Reason: {}\nSelection: {}\nSessions: {}\nCheckpoint-Origin: {}\nCheckpoint-Size: {}\nCheckpoint-Root: {}\nEncrypted-To: {}\nPayload-Oxum: {total}.{}\n",
        one_line(&req.exported_by),
        one_line(&req.reason),
        one_line(&req.selection),
        sessions.join(" "),
        cp.origin,
        cp.size,
        B64.encode(cp.root),
        if req.recipients.is_empty() {
            "(not encrypted)".to_string()
        } else {
            req.recipients
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        },
        payload.len()
    );
    tags.insert("bag-info.txt".into(), info.into_bytes());
    tags.insert("manifest-sha256.txt".into(), manifest.clone().into_bytes());
    tags.insert(
        "appliance.pub".into(),
        format!("{}\n", sign::openssh_public(&key, &signer_id)).into_bytes(),
    );
    tags.insert("appliance.pem".into(), sign::pem_public(&key).into_bytes());
    tags.insert(
        "allowed_signers".into(),
        format!(
            "{signer_id} namespaces=\"{}\" {}\n",
            sign::NAMESPACE,
            sign::openssh_public(&key, "").trim_end()
        )
        .into_bytes(),
    );
    let tagmanifest: String = tags
        .iter()
        .map(|(p, b)| format!("{}  {p}\n", hex::encode(sha256(b))))
        .collect();
    let sshsig = sign::sshsig(signing, tagmanifest.as_bytes());
    let raw = signing.sign(tagmanifest.as_bytes()).to_bytes();
    // Deterministic tar: fixed order (tag files first, so a verifier can check as it streams),
    // owner 0:0, and the time of nothing in particular.
    let mut w = tar::Writer::new(Vec::new(), 0);
    w.dir(&root)?;
    for (p, b) in &tags {
        w.file(&format!("{root}/{p}"), b)?;
    }
    w.file(
        &format!("{root}/tagmanifest-sha256.txt"),
        tagmanifest.as_bytes(),
    )?;
    w.file(&format!("{root}/signature.sshsig"), sshsig.as_bytes())?;
    w.file(&format!("{root}/signature.ed25519"), &raw)?;
    let mut dirs: Vec<String> = Vec::new();
    for p in payload.keys() {
        let mut acc = String::new();
        for part in p.split('/').take(p.split('/').count() - 1) {
            acc = if acc.is_empty() {
                part.to_string()
            } else {
                format!("{acc}/{part}")
            };
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
                w.dir(&format!("{root}/{acc}"))?;
            }
        }
        w.file(&format!("{root}/{p}"), &payload[p])?;
    }
    let tar = w.finish()?;
    Ok(Built {
        tar,
        export_id,
        manifest_sha256: hex::encode(sha256(manifest.as_bytes())),
        files: payload.len(),
    })
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What verification found.
#[derive(Debug)]
pub struct Report {
    pub export_id: String,
    pub appliance_id: String,
    pub sessions: usize,
    pub files: usize,
    pub audit_entries: usize,
    pub checkpoint_size: u64,
    pub key_fingerprint: String,
}

const TAG_FILES: [&str; 9] = [
    "bagit.txt",
    "bag-info.txt",
    "manifest-sha256.txt",
    "appliance.pub",
    "appliance.pem",
    "allowed_signers",
    "tagmanifest-sha256.txt",
    "signature.sshsig",
    "signature.ed25519",
];

fn parse_manifest(text: &str, what: &str) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (h, p) = line
            .split_once("  ")
            .ok_or_else(|| format!("{what} line {} is malformed", i + 1))?;
        if h.len() != 64
            || !h.bytes().all(|b| b.is_ascii_hexdigit())
            || m.insert(p.to_string(), h.to_string()).is_some()
        {
            return Err(format!("{what} line {} is malformed or repeated", i + 1));
        }
    }
    Ok(m)
}

/// Verifies a bundle as it streams past: tar safety, signatures, every hash, completeness, the
/// checkpoint and every inclusion proof. `trust` is the appliance key the auditor expects; without
/// it, the key inside the bundle is used (and the report says which). The first failure is
/// returned as the error.
pub fn verify<R: Read>(
    inp: R,
    trust: Option<&VerifyingKey>,
    since: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<Report, String> {
    let mut r = tar::Reader::new(inp);
    let mut root: Option<String> = None;
    let mut tags: HashMap<String, Vec<u8>> = HashMap::new();
    let mut manifest: Option<BTreeMap<String, String>> = None;
    let mut seen_payload: BTreeMap<String, String> = BTreeMap::new();
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    let mut key: Option<VerifyingKey> = None;
    let mut bytes = 0u64;
    while let Some(m) = r
        .next_member()
        .map_err(|e| format!("unsafe or damaged tar: {e}"))?
    {
        let (name, data, size) = match m {
            tar::Member::Dir(d) => {
                let top = d.split('/').next().unwrap_or("").to_string();
                match &root {
                    None => root = Some(top),
                    Some(rt) if *rt != top => {
                        return Err(format!("{d}: outside the bag's directory {rt}"));
                    }
                    _ => {}
                }
                continue;
            }
            tar::Member::File { name, data, size } => (name, data, size),
        };
        let rt = root
            .clone()
            .ok_or_else(|| format!("{name}: the bag's directory entry must come first"))?;
        let rel = name
            .strip_prefix(&format!("{rt}/"))
            .ok_or_else(|| format!("{name}: outside the bag's directory {rt}"))?
            .to_string();
        if let Some(tag) = TAG_FILES.iter().find(|t| **t == rel) {
            let mut buf = Vec::new();
            data.take(1 << 20)
                .read_to_end(&mut buf)
                .map_err(|e| format!("{rel}: {e}"))?;
            tags.insert(tag.to_string(), buf);
            if rel == "signature.ed25519" {
                // All tag files are in; check them now, before any payload.
                let need = |t: &str| {
                    tags.get(t)
                        .ok_or_else(|| format!("tag file {t} is missing (or out of order)"))
                };
                let pubtext = String::from_utf8_lossy(need("appliance.pub")?).to_string();
                let bundled =
                    parse_openssh(&pubtext).ok_or("appliance.pub is not an ssh-ed25519 key")?;
                let k = match trust {
                    Some(t) if *t != bundled => {
                        return Err(
                            "the bundle is signed by another appliance than the trusted key".into(),
                        );
                    }
                    Some(t) => *t,
                    None => bundled,
                };
                let tm = need("tagmanifest-sha256.txt")?.clone();
                let sig: [u8; 64] = need("signature.ed25519")?
                    .as_slice()
                    .try_into()
                    .map_err(|_| "signature.ed25519 is not 64 bytes")?;
                k.verify_strict(&tm, &Signature::from_bytes(&sig))
                    .map_err(|_| {
                        "signature.ed25519 does not verify over tagmanifest-sha256.txt".to_string()
                    })?;
                sign::verify_sshsig(&String::from_utf8_lossy(need("signature.sshsig")?), &k, &tm)
                    .map_err(|e| format!("signature.sshsig: {e}"))?;
                let listed =
                    parse_manifest(&String::from_utf8_lossy(&tm), "tagmanifest-sha256.txt")?;
                for t in TAG_FILES.iter().take(6) {
                    let want = listed
                        .get(*t)
                        .ok_or_else(|| format!("tagmanifest-sha256.txt does not cover {t}"))?;
                    if hex::encode(sha256(need(t)?)) != *want {
                        return Err(format!(
                            "{t} does not match its hash in tagmanifest-sha256.txt"
                        ));
                    }
                }
                if listed.len() != 6 {
                    return Err("tagmanifest-sha256.txt lists unexpected files".into());
                }
                manifest = Some(parse_manifest(
                    &String::from_utf8_lossy(need("manifest-sha256.txt")?),
                    "manifest-sha256.txt",
                )?);
                key = Some(k);
            }
            continue;
        }
        let man = manifest
            .as_ref()
            .ok_or_else(|| format!("{rel}: payload before the tag files and signatures"))?;
        let want = man.get(&rel).ok_or_else(|| {
            format!("{rel}: not in manifest-sha256.txt (an added or renamed file)")
        })?;
        let mut h = Sha256Stream::default();
        let keep = rel.ends_with("audit.jsonl")
            || rel == "data/checkpoint.txt"
            || rel == "data/checkpoint.vkey"
            || rel == "data/consistency.json";
        let mut kept = Vec::new();
        let mut data = data;
        let mut member_bytes = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = data.read(&mut buf).map_err(|e| format!("{rel}: {e}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            bytes += n as u64;
            member_bytes += n as u64;
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
            progress(bytes);
        }
        if member_bytes < size {
            return Err(format!(
                "{rel}: the tar file is truncated ({member_bytes} of {size} bytes)"
            ));
        }
        let got = hex::encode(h.finish());
        if got != *want {
            return Err(format!(
                "{rel}: its SHA-256 {got} does not match the manifest"
            ));
        }
        seen_payload.insert(rel.clone(), got);
        if keep {
            small.insert(rel, kept);
        }
    }
    let man = manifest.ok_or("the bundle has no signed tag files")?;
    if let Some(missing) = man.keys().find(|p| !seen_payload.contains_key(*p)) {
        return Err(format!(
            "{missing}: listed in manifest-sha256.txt but missing from the bundle"
        ));
    }
    let key = key.expect("set with the manifest");
    // The checkpoint must be signed by the same appliance key, and every entry proven in it.
    let vkey_text = String::from_utf8_lossy(
        small
            .get("data/checkpoint.vkey")
            .ok_or("data/checkpoint.vkey is missing")?,
    )
    .to_string();
    let verifier = NoteVerifier::from_vkey(vkey_text.trim())
        .map_err(|e| format!("data/checkpoint.vkey: {e}"))?;
    if verifier.key != key {
        return Err(
            "the checkpoint verifier key is not the appliance key that signed the bundle".into(),
        );
    }
    let cp = verifier
        .open_checkpoint(&String::from_utf8_lossy(
            small
                .get("data/checkpoint.txt")
                .ok_or("data/checkpoint.txt is missing")?,
        ))
        .map_err(|e| format!("data/checkpoint.txt: {e}"))?;
    // An auditor who holds an earlier checkpoint learns whether this bundle is newer and an
    // extension of it, or an older bundle presented as current.
    if let Some(note) = since {
        let old = verifier
            .open_checkpoint(note)
            .map_err(|e| format!("the checkpoint you hold is not this appliance's: {e}"))?;
        if old.size > cp.size {
            return Err(format!(
                "this bundle's checkpoint (size {}) is older than the checkpoint you hold (size {}): an older bundle presented as current",
                cp.size, old.size
            ));
        }
        if old.size == cp.size {
            if old.root != cp.root {
                return Err("the bundle's checkpoint and the one you hold have the same size but different roots: the log was forked".into());
            }
        } else {
            let c: Value =
                serde_json::from_slice(small.get("data/consistency.json").ok_or(
                    "the bundle carries no consistency proof from the checkpoint you hold",
                )?)
                .map_err(|e| format!("data/consistency.json: {e}"))?;
            if c["from_size"].as_u64() != Some(old.size) {
                return Err(format!(
                    "data/consistency.json proves consistency from size {}, not from your checkpoint's size {}",
                    c["from_size"], old.size
                ));
            }
            let proof: Vec<Vec<u8>> = c["proof"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| B64.decode(p.as_str()?).ok())
                        .collect()
                })
                .unwrap_or_default();
            merkle::verify_consistency(old.size, cp.size, &old.root, &cp.root, &proof).map_err(
                |e| format!("the bundle's log is not an extension of the checkpoint you hold: {e}"),
            )?;
        }
    }
    let mut entries = 0;
    let mut sessions = 0;
    for (path, text) in small.iter().filter(|(p, _)| p.ends_with("audit.jsonl")) {
        sessions += 1;
        for (i, line) in String::from_utf8_lossy(text).lines().enumerate() {
            let v: Value =
                serde_json::from_str(line).map_err(|e| format!("{path} line {}: {e}", i + 1))?;
            let entry = B64
                .decode(v["entry_base64"].as_str().unwrap_or(""))
                .map_err(|_| format!("{path} line {}: entry is not base64", i + 1))?;
            let proof: Vec<Vec<u8>> = v["proof"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| B64.decode(p.as_str()?).ok())
                        .collect()
                })
                .unwrap_or_default();
            let seq = v["seq"]
                .as_u64()
                .ok_or_else(|| format!("{path} line {}: no seq", i + 1))?;
            merkle::verify_inclusion(seq, cp.size, &merkle::leaf_hash(&entry), &proof, &cp.root)
                .map_err(|e| {
                    format!(
                        "{path} line {}: audit entry #{seq} is not in the signed checkpoint: {e}",
                        i + 1
                    )
                })?;
            entries += 1;
        }
    }
    let info = String::from_utf8_lossy(&tags["bag-info.txt"]).to_string();
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or("")
            .to_string()
    };
    Ok(Report {
        export_id: field("Export-Id"),
        appliance_id: field("Appliance-Id"),
        sessions,
        files: seen_payload.len(),
        audit_entries: entries,
        checkpoint_size: cp.size,
        key_fingerprint: hex::encode(sha256(key.as_bytes())),
    })
}

/// Parses `ssh-ed25519 AAAA… [comment]`.
pub fn parse_openssh(line: &str) -> Option<VerifyingKey> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "ssh-ed25519" {
        return None;
    }
    let blob = B64.decode(parts.next()?).ok()?;
    let mut b = blob.as_slice();
    let take = |b: &mut &[u8]| -> Option<Vec<u8>> {
        let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let s = b.get(4..4 + n)?.to_vec();
        *b = &b[4 + n..];
        Some(s)
    };
    if take(&mut b)? != b"ssh-ed25519" {
        return None;
    }
    let k: [u8; 32] = take(&mut b)?.try_into().ok()?;
    VerifyingKey::from_bytes(&k).ok()
}
