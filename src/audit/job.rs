//! Verifying the whole audit log for a client of the API (the console's progress bar): one job at a
//! time, on its own database connection and a blocking thread, so the appliance keeps serving
//! while millions of entries are rehashed. Its state is polled.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::NoteVerifier;
use crate::store::Store;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Intact,
    Broken,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: u64,
    pub state: JobState,
    pub checked: u64,
    pub total: u64,
    pub started_by: String,
    /// When done: what was verified, or the first problem.
    pub result: Option<serde_json::Value>,
}

#[derive(Default)]
pub struct Jobs {
    current: Mutex<Option<Job>>,
}

impl Jobs {
    /// The latest job, if any.
    pub fn get(&self, id: u64) -> Option<Job> {
        self.current
            .lock()
            .expect("jobs")
            .clone()
            .filter(|j| j.id == id)
    }

    /// Starts a job unless one is running (then returns that one, and false).
    pub fn start(self: &Arc<Self>, db: PathBuf, vkey: PathBuf, by: &str) -> (Job, bool) {
        let mut cur = self.current.lock().expect("jobs");
        if let Some(j) = cur.as_ref().filter(|j| j.state == JobState::Running) {
            return (j.clone(), false);
        }
        let id = cur.as_ref().map_or(1, |j| j.id + 1);
        let job = Job {
            id,
            state: JobState::Running,
            checked: 0,
            total: 0,
            started_by: by.to_string(),
            result: None,
        };
        *cur = Some(job.clone());
        drop(cur);
        let jobs = self.clone();
        std::thread::spawn(move || {
            let (state, result) = match run(&db, &vkey, |checked, total| {
                jobs.progress(id, checked, total)
            }) {
                Ok(Ok(r)) => (JobState::Intact, r),
                Ok(Err(problem)) => (JobState::Broken, serde_json::json!({ "problem": problem })),
                Err(e) => (JobState::Failed, serde_json::json!({ "error": e })),
            };
            if let Some(j) = jobs
                .current
                .lock()
                .expect("jobs")
                .as_mut()
                .filter(|j| j.id == id)
            {
                j.state = state;
                j.result = Some(result);
                j.checked = j.checked.max(j.total);
            }
        });
        (job, true)
    }

    fn progress(&self, id: u64, checked: u64, total: u64) {
        if let Some(j) = self
            .current
            .lock()
            .expect("jobs")
            .as_mut()
            .filter(|j| j.id == id)
        {
            j.checked = checked;
            j.total = total;
        }
    }
}

/// Verifies with the appliance's verifier key (the file, which must match the database's copy).
fn run(
    db: &std::path::Path,
    vkey: &std::path::Path,
    progress: impl FnMut(u64, u64),
) -> Result<Result<serde_json::Value, String>, String> {
    let mut store = Store::open(db).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(vkey)
        .map_err(|e| format!("cannot read {}: {e}", vkey.display()))?;
    let v = NoteVerifier::from_vkey(text.trim()).map_err(|e| format!("{}: {e}", vkey.display()))?;
    let stored = store
        .read(|tx| Ok(super::verifier(tx)))
        .map_err(|e| e.to_string())?;
    if stored.as_ref().ok() != Some(&v) {
        return Ok(Err(format!(
            "the verifier key in the database differs from {}: the database or the key file was replaced",
            vkey.display()
        )));
    }
    Ok(
        match super::verify(&mut store, &v, progress).map_err(|e| e.to_string())? {
            Ok(r) => Ok(serde_json::json!({
                "entries": r.entries,
                "checkpoints": r.checkpoints,
                "latest_checkpoint_size": r.latest.as_ref().map(|c| c.size),
                "root": hex::encode(r.root),
                "unsigned_tail": r.unsigned_tail,
                "key": v.to_vkey(),
            })),
            Err(p) => Err(p.to_string()),
        },
    )
}
