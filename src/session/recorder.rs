//! The recorder: one task per live session, fed through a bounded channel, that appends what the
//! relay forwarded to the session's transcript and events objects and makes it durable. The
//! relay hands messages over and goes on; it never waits on SQLite or the disk, only, when the
//! recorder falls behind, on room in the channel (backpressure on the sender).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::app::App;
use crate::archive::ObjectWriter;
use crate::model::DataClass;

/// Messages waiting to be recorded, per session; a full channel slows the sender down.
const CHANNEL: usize = 1024;

pub enum Record {
    /// A line for the transcript; once durable, `ack` (if any) is sent to its sender.
    Transcript {
        line: String,
        ack: Option<(super::ConnTx, String)>,
    },
    /// A line for the events object.
    Event { line: String },
    /// Seal both objects and stop.
    Finish(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
}

impl Recorder {
    pub fn start(app: Arc<App>, session_id: String, recording: bool) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(run(app, session_id, recording, rx));
        Self { tx }
    }

    pub async fn send(&self, r: Record) {
        if self.tx.send(r).await.is_err() {
            tracing::error!("a session recorder stopped early; a message was not recorded");
        }
    }

    /// Seals the session's objects and waits until they are.
    pub async fn finish(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Record::Finish(tx)).await;
        let _ = rx.await;
    }
}

struct Writers {
    transcript: Option<ObjectWriter>,
    events: Option<ObjectWriter>,
}

pub(super) async fn open(
    app: &Arc<App>,
    session_id: &str,
    class: DataClass,
) -> Option<ObjectWriter> {
    let keys = app.keys()?;
    let archive = app.archive.clone();
    let sid = session_id.to_string();
    match app
        .db(move |s| archive.create(s, &keys, Some(&sid), class))
        .await
    {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(session = session_id, error = %e, "cannot create an archive object; recording stopped");
            None
        }
    }
}

/// Terms for the transcript word index, written at most once a second (and when the session's
/// objects are sealed): the index may miss the last second of words after a crash, never the
/// transcript itself. `custos` can always read the transcript back from the archive.
struct Index {
    key: Option<crate::crypto::SecretKey>,
    pending: std::collections::BTreeSet<crate::store::Term>,
    flushed: std::time::Instant,
}

impl Index {
    fn add(&mut self, lines: &[String]) {
        let Some(key) = &self.key else { return };
        for l in lines {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l)
                && v["type"] == "chat"
                && let Some(text) = v["text"].as_str()
            {
                for w in super::terms::words(text) {
                    self.pending.insert(super::terms::term(key, &w));
                }
            }
        }
    }

    async fn flush(&mut self, app: &Arc<App>, session_id: &str, now: bool) {
        if self.pending.is_empty()
            || !(now || self.flushed.elapsed() >= std::time::Duration::from_secs(1))
        {
            return;
        }
        let terms: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        let sid = session_id.to_string();
        if let Err(e) = app
            .db(move |s| s.write(|tx| tx.terms_insert(&sid, &terms)))
            .await
        {
            tracing::warn!(session = %session_id, error = %e, "cannot update the transcript index");
        }
        self.flushed = std::time::Instant::now();
    }
}

async fn run(app: Arc<App>, session_id: String, recording: bool, mut rx: mpsc::Receiver<Record>) {
    let mut w = Writers {
        transcript: None,
        events: None,
    };
    let mut index = Index {
        key: if recording {
            app.keys().map(|k| k.index_key())
        } else {
            None
        },
        pending: Default::default(),
        flushed: std::time::Instant::now(),
    };
    let mut batch = Vec::with_capacity(64);
    loop {
        if rx.recv_many(&mut batch, 256).await == 0 {
            break;
        }
        let mut finish = None;
        let mut t_lines = Vec::new();
        let mut e_lines = Vec::new();
        let mut acks = Vec::new();
        for r in batch.drain(..) {
            match r {
                Record::Transcript { line, ack } => {
                    t_lines.push(line);
                    acks.extend(ack);
                }
                Record::Event { line } => e_lines.push(line),
                Record::Finish(done) => finish = Some(done),
            }
        }
        if recording {
            index.add(&t_lines);
            if !t_lines.is_empty() && w.transcript.is_none() {
                w.transcript = open(&app, &session_id, DataClass::Transcript).await;
            }
            if !e_lines.is_empty() && w.events.is_none() {
                w.events = open(&app, &session_id, DataClass::Events).await;
            }
            let moved = std::mem::replace(
                &mut w,
                Writers {
                    transcript: None,
                    events: None,
                },
            );
            w = tokio::task::spawn_blocking(move || append(moved, &t_lines, &e_lines))
                .await
                .expect("recorder append panicked");
        }
        // An ack says whether the message is durable in the archive; it is not when the portal
        // does not record, or when writing failed (which the log reports).
        let recorded = recording && w.transcript.is_some();
        for (tx, line) in acks {
            let mut v: serde_json::Value = serde_json::from_str(&line).expect("acks are JSON");
            v["recorded"] = serde_json::json!(recorded);
            let _ = tx.try_send(super::Out::Text(v.to_string().into()));
        }
        index.flush(&app, &session_id, finish.is_some()).await;
        if let Some(done) = finish {
            seal(&app, &session_id, w, "ended").await;
            let _ = done.send(());
            return;
        }
    }
    // The room was dropped without finishing (shutdown): seal what was written.
    index.flush(&app, &session_id, true).await;
    seal(&app, &session_id, w, "shutdown").await;
}

/// Seals the session's open objects and records `recording.sealed` with what each holds.
async fn seal(app: &Arc<App>, session_id: &str, mut w: Writers, why: &str) {
    let writers = [w.transcript.take(), w.events.take()]
        .into_iter()
        .flatten()
        .collect();
    seal_objects(app, session_id, writers, why).await;
}

/// Seals objects of a session and records `recording.sealed` with what each holds.
pub(super) async fn seal_objects(
    app: &Arc<App>,
    session_id: &str,
    writers: Vec<ObjectWriter>,
    why: &str,
) {
    let mut objects = Vec::new();
    for writer in writers {
        let (id, class) = (writer.id(), writer.class());
        match app.db(move |s| writer.finish(s)).await {
            Ok(c) => objects.push(serde_json::json!({
                "object": id.to_string(), "class": class.as_str(), "bytes": c.plain_len,
                "chunks": c.chunks, "sha256": hex::encode(c.plain_sha256),
            })),
            Err(e) => {
                tracing::error!(session = %session_id, error = %e, "cannot seal a session object")
            }
        }
    }
    if objects.is_empty() {
        return;
    }
    let ev = crate::audit::Event::system(
        "recording.sealed",
        &format!("session:{session_id}"),
        serde_json::json!({ "reason": why, "objects": objects }),
    );
    if let Err(e) = app.audit(ev).await {
        tracing::error!(session = %session_id, error = %e, "cannot audit a sealed recording");
    }
}

/// Appends a batch and makes it durable; runs on the blocking pool.
fn append(mut w: Writers, t: &[String], e: &[String]) -> Writers {
    for (writer, lines) in [(&mut w.transcript, t), (&mut w.events, e)] {
        if lines.is_empty() {
            continue;
        }
        if let Some(out) = writer.as_mut() {
            let mut ok = true;
            for l in lines {
                ok &= out.append(l.as_bytes()).is_ok() && out.append(b"\n").is_ok();
            }
            if !ok || out.sync().is_err() {
                tracing::error!(object = %out.id(), "writing a session object failed; recording of it stopped");
                *writer = None;
            }
        }
    }
    w
}
