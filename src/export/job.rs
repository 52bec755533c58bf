//! Export bundles built in the background for a client of the API (the console's progress bar):
//! the client starts a job, polls how many sessions are done, then collects the bundle once.
//! Bundles live in memory only (like the synchronous export, nothing is stored on the appliance)
//! and only their starter sees or collects them; a few finished jobs are kept, the oldest dropped.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use super::Built;

/// Finished jobs kept for collection; older ones are dropped with their bundles.
const KEEP: usize = 8;
/// Jobs building at once; more are refused until one finishes.
const RUNNING_MAX: usize = 2;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Ready,
    Failed,
    Collected,
}

#[derive(Clone, Debug, Serialize)]
pub struct Job {
    pub id: u64,
    pub state: JobState,
    /// Sessions written into the bundle so far, of `total`.
    pub done: usize,
    pub total: usize,
    #[serde(skip)]
    pub started_by: String,
    pub export_id: Option<String>,
    pub bytes: Option<usize>,
    pub error: Option<String>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    jobs: VecDeque<(Job, Option<Vec<u8>>)>,
}

#[derive(Default)]
pub struct Jobs {
    inner: Mutex<Inner>,
}

/// Why a bundle cannot be collected.
#[derive(Debug, PartialEq, Eq)]
pub enum Collect {
    NotFound,
    NotReady(JobState),
}

impl Jobs {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts building on its own thread, or says why not (too many running).
    pub fn start(
        self: &std::sync::Arc<Self>,
        by: &str,
        total: usize,
        work: impl FnOnce(&mut dyn FnMut(usize, usize)) -> Result<Built, String> + Send + 'static,
    ) -> Result<Job, String> {
        let job = self.with(|inner| {
            let running = inner
                .jobs
                .iter()
                .filter(|(j, _)| j.state == JobState::Running)
                .count();
            if running >= RUNNING_MAX {
                return Err(format!(
                    "{running} exports are being built; start this one when one has finished"
                ));
            }
            inner.next += 1;
            let job = Job {
                id: inner.next,
                state: JobState::Running,
                done: 0,
                total,
                started_by: by.to_string(),
                export_id: None,
                bytes: None,
                error: None,
            };
            inner.jobs.push_back((job.clone(), None));
            // Drop the oldest finished jobs beyond what is kept.
            while inner.jobs.len() > KEEP {
                match inner
                    .jobs
                    .iter()
                    .position(|(j, _)| j.state != JobState::Running)
                {
                    Some(i) => {
                        inner.jobs.remove(i);
                    }
                    None => break,
                }
            }
            Ok(job)
        })?;
        let jobs = self.clone();
        let id = job.id;
        std::thread::spawn(move || {
            let mut progress = |done: usize, total: usize| {
                jobs.update(id, |j, _| {
                    j.done = done;
                    j.total = total;
                })
            };
            let result = work(&mut progress);
            jobs.update(id, |j, bundle| match result {
                Ok(built) => {
                    j.state = JobState::Ready;
                    j.done = j.total;
                    j.export_id = Some(built.export_id);
                    j.bytes = Some(built.tar.len());
                    *bundle = Some(built.tar);
                }
                Err(e) => {
                    j.state = JobState::Failed;
                    j.error = Some(e);
                }
            });
        });
        Ok(job)
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Job, &mut Option<Vec<u8>>)) {
        self.with(|inner| {
            if let Some((j, b)) = inner.jobs.iter_mut().find(|(j, _)| j.id == id) {
                f(j, b);
            }
        })
    }

    /// A job, if `by` started it.
    pub fn get(&self, id: u64, by: &str) -> Option<Job> {
        self.with(|inner| {
            inner
                .jobs
                .iter()
                .find(|(j, _)| j.id == id && j.started_by == by)
                .map(|(j, _)| j.clone())
        })
    }

    /// Hands the finished bundle to its starter, once; the memory is freed.
    pub fn collect(&self, id: u64, by: &str) -> Result<(Job, Vec<u8>), Collect> {
        self.with(|inner| {
            let (j, b) = inner
                .jobs
                .iter_mut()
                .find(|(j, _)| j.id == id && j.started_by == by)
                .ok_or(Collect::NotFound)?;
            match b.take() {
                Some(bytes) if j.state == JobState::Ready => {
                    j.state = JobState::Collected;
                    Ok((j.clone(), bytes))
                }
                _ => Err(Collect::NotReady(j.state.clone())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn built(n: usize) -> Built {
        Built {
            tar: vec![7; n],
            export_id: format!("e{n}"),
            manifest_sha256: String::new(),
            files: 1,
        }
    }

    fn wait(jobs: &Jobs, id: u64) -> Job {
        for _ in 0..500 {
            let j = jobs.get(id, "ann").expect("job");
            if j.state != JobState::Running {
                return j;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("job {id} did not finish");
    }

    #[test]
    fn a_bundle_goes_to_its_starter_once() {
        let jobs = Arc::new(Jobs::default());
        let j = jobs
            .start("ann", 3, |p| {
                p(1, 3);
                Ok(built(10))
            })
            .unwrap();
        let done = wait(&jobs, j.id);
        assert_eq!(
            (done.state, done.done, done.bytes),
            (JobState::Ready, 3, Some(10))
        );
        assert!(jobs.get(j.id, "bob").is_none(), "not another user's");
        assert_eq!(jobs.collect(j.id, "bob").unwrap_err(), Collect::NotFound);
        let (job, bytes) = jobs.collect(j.id, "ann").unwrap();
        assert_eq!((job.export_id.as_deref(), bytes.len()), (Some("e10"), 10));
        assert_eq!(
            jobs.collect(j.id, "ann").unwrap_err(),
            Collect::NotReady(JobState::Collected)
        );
    }

    #[test]
    fn failures_are_kept_and_running_jobs_are_bounded() {
        let jobs = Arc::new(Jobs::default());
        let f = jobs.start("ann", 1, |_| Err("no".into())).unwrap();
        assert_eq!(wait(&jobs, f.id).error.as_deref(), Some("no"));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..RUNNING_MAX {
            let rx = rx.clone();
            jobs.start("ann", 1, move |_| {
                let _ = rx.lock().unwrap().recv();
                Ok(built(1))
            })
            .unwrap();
        }
        assert!(jobs.start("ann", 1, |_| Ok(built(1))).is_err());
        for _ in 0..RUNNING_MAX {
            tx.send(()).unwrap();
        }
    }
}
