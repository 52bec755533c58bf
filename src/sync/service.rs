//! Syncs the appliance runs itself, from `[[sync]]` in custos.toml: real time (`follow`), every
//! so often (`every 15m`), or daily at a UTC time (`daily 02:00`). Each talks to the appliance's
//! own Unix socket with its API token, exactly like `custos sync`, so its reads are authorized and
//! audited alike; failures are logged (the target's password never is) and retried with backoff.

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::client::Endpoint;
use crate::config::{Schedule, SyncJob as Job};

/// The target as logs may name it: the password left out.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (auth, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_string(),
    }
}

/// Starts every configured sync; each stops with the appliance.
pub fn start(app: &Arc<App>) {
    for (i, job) in app.config.sync.iter().enumerate() {
        let app = app.clone();
        let job = job.clone();
        tokio::spawn(async move { run_job(app, i, job).await });
    }
}

async fn run_job(app: Arc<App>, index: usize, job: Job) {
    let mut stop = app.stop.subscribe();
    let target = redacted(&job.to);
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match job.schedule {
            Schedule::Daily(h, m) => Schedule::until_next(h, m, time::OffsetDateTime::now_utc()),
            _ => Duration::ZERO,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let once = async {
            let token = tokio::fs::read_to_string(&job.token_file)
                .await
                .map_err(|e| format!("cannot read {}: {e}", job.token_file.display()))?;
            let mut t = super::Target::open(&job.to)
                .await
                .map_err(|e| e.to_string())?;
            let opts = super::Options {
                since: None,
                until: None,
                follow: job.schedule == Schedule::Follow,
                files_dir: None,
                recordings_dir: None,
                max_pages: None,
            };
            super::run(
                &Endpoint::Unix(app.dir.socket_path()),
                token.trim(),
                &mut t,
                &opts,
                |_| {},
            )
            .await
            .map_err(|e| e.to_string())
        };
        let outcome = tokio::select! {
            r = once => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let pause = match outcome {
            Ok(r) => {
                backoff = Duration::from_secs(1);
                tracing::info!(sync = index, target = %target, sessions = r.sessions, "sync done");
                match job.schedule {
                    Schedule::Every(d) => d,
                    _ => Duration::ZERO,
                }
            }
            Err(e) => {
                tracing::warn!(sync = index, target = %target, error = %e, "sync failed; retrying");
                let b = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(300));
                b
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_or_say_why_not() {
        assert_eq!(Schedule::parse("follow"), Ok(Schedule::Follow));
        assert_eq!(
            Schedule::parse("every 15m"),
            Ok(Schedule::Every(Duration::from_secs(900)))
        );
        assert_eq!(Schedule::parse("daily 02:30"), Ok(Schedule::Daily(2, 30)));
        for bad in [
            "every",
            "every 0s",
            "every 2d",
            "every 25h",
            "daily 24:00",
            "daily 2:3",
            "hourly",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        let now = time::macros::datetime!(2026-11-28 03:00:00 UTC);
        assert_eq!(
            Schedule::until_next(2, 0, now),
            Duration::from_secs(23 * 3600),
            "tomorrow when today's time has passed"
        );
        assert_eq!(Schedule::until_next(3, 30, now), Duration::from_secs(1800));
    }

    #[test]
    fn a_target_is_logged_without_its_password() {
        assert_eq!(
            redacted("postgres://bi:s3cret@db.example.org:5432/custos"),
            "postgres://bi@db.example.org:5432/custos"
        );
        assert_eq!(redacted("sqlite:/srv/bi.db"), "sqlite:/srv/bi.db");
    }
}
