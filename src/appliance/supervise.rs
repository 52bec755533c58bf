//! `custos supervise`: runs `custos serve` on the appliance and keeps it running.
//!
//! It waits for first-boot setup, starts the server as the unprivileged service user, copies
//! its output to a log file (rotated at 10 MiB), and restarts it when it stops, after 1 s, 2 s,
//! 4 s ... up to a minute (back to 1 s once it has run healthily for a minute). Healthy means
//! `/healthz` answers on the data directory's socket (200, or 503 while sealed: a sealed server
//! is alive and waiting for its passphrase). When it is healthy, the ready line and the
//! certificate fingerprint go to `RUN/ready` for the consoles.
//!
//! Updates (docs/updates.md): a staged trial is verified again, copied to RAM and run once. It
//! is committed when it becomes healthy within the health timeout; when it exits or does not
//! become healthy in time it is stopped and the committed binary (or the image's own) runs
//! again: an automatic rollback, recorded in the update history. The committed update is
//! verified at every start too; one that no longer verifies is not run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::update::{Slot, Updates, verify};

pub struct Options {
    pub data: PathBuf,
    pub system: PathBuf,
    pub log: PathBuf,
    /// Where the ready file and the running update's binary go (a RAM file system).
    pub run: PathBuf,
    /// The service user and group the server runs as.
    pub user: Option<(u32, u32)>,
    /// The update key; without it staged updates are ignored.
    pub trust: Option<PathBuf>,
    /// The image's own binary (this one).
    pub builtin: PathBuf,
    /// How long a trial update has to become healthy.
    pub health_timeout: Duration,
}

/// `SYSTEM/update-floor`: the newest version ever committed, written only by the supervisor
/// (root) outside the update directory the server may write: a server that is compromised
/// cannot stage an older signed bundle and have it run.
const FLOOR: &str = "update-floor";

/// Exit status with which the server asks to be started again at once (after staging an update).
pub const EXIT_RESTART: i32 = 75;
const LOG_LIMIT: u64 = 10 << 20;

/// The log file, rotated to `.1` when it passes 10 MiB.
struct Log {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    size: u64,
}

impl Log {
    async fn open(path: &Path) -> Log {
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .ok();
        let size = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        Log {
            path: path.to_path_buf(),
            file,
            size,
        }
    }

    async fn line(&mut self, text: &str) {
        if self.size > LOG_LIMIT {
            let _ = tokio::fs::rename(&self.path, self.path.with_extension("log.1")).await;
            *self = Log::open(&self.path.clone()).await;
        }
        let line = format!("{} {text}\n", crate::model::now_rfc3339());
        if let Some(f) = self.file.as_mut() {
            let _ = f.write_all(line.as_bytes()).await;
        }
        self.size += line.len() as u64;
    }

    async fn note(&mut self, text: &str) {
        self.line(&format!("supervise: {text}")).await;
    }
}

/// What to run this time.
struct Choice {
    binary: PathBuf,
    version: String,
    trial: Option<Slot>,
}

async fn choose(opts: &Options, log: &mut Log) -> Choice {
    let builtin = Choice {
        binary: opts.builtin.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        trial: None,
    };
    let Some(trust_path) = opts.trust.as_ref() else {
        return builtin;
    };
    let updates = Updates::new(&opts.system);
    let mut state = match updates.load() {
        Ok(s) => s,
        Err(e) => {
            log.note(&format!(
                "the update state is unreadable ({e}); running the image's binary"
            ))
            .await;
            return builtin;
        }
    };
    let trust = match super::update::load_trust(trust_path) {
        Ok(t) => t,
        Err(e) => {
            log.note(&format!("no update key ({e}); running the image's binary"))
                .await;
            return builtin;
        }
    };
    let floor = tokio::fs::read_to_string(opts.system.join(FLOOR))
        .await
        .unwrap_or_default();
    let floor = floor.trim();
    for trial in [true, false] {
        let slot = if trial {
            state.trial.clone()
        } else {
            state.committed.clone()
        };
        let Some(slot) = slot else { continue };
        if !floor.is_empty() && super::update::newer(floor, &slot.version) {
            let why = format!("it is older than {floor}, an update committed before");
            refuse(&updates, &mut state, trial, &slot, &why, log).await;
            continue;
        }
        match verify(&updates.bundle_path(&slot.slot), &trust) {
            Ok(v) if v.manifest.version == slot.version => {
                let path = opts.run.join(format!("custos-{}", slot.version));
                if let Err(e) = write_executable(&path, &v.binary).await {
                    log.note(&format!("cannot place {}: {e}", path.display()))
                        .await;
                    return builtin;
                }
                return Choice {
                    binary: path,
                    version: slot.version.clone(),
                    trial: trial.then_some(slot),
                };
            }
            Ok(v) => {
                let why = format!(
                    "slot {} holds {}, not {}",
                    slot.slot, v.manifest.version, slot.version
                );
                refuse(&updates, &mut state, trial, &slot, &why, log).await;
            }
            Err(e) => refuse(&updates, &mut state, trial, &slot, &e.to_string(), log).await,
        }
    }
    builtin
}

async fn refuse(
    updates: &Updates,
    state: &mut super::update::State,
    trial: bool,
    slot: &Slot,
    why: &str,
    log: &mut Log,
) {
    log.note(&format!("not running update {}: {why}", slot.version))
        .await;
    if trial {
        state.trial = None;
    } else {
        state.committed = None;
    }
    if let Err(e) = updates.record(state, "refused", &slot.version, why) {
        log.note(&format!("cannot record it: {e}")).await;
    }
}

async fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Asks `/healthz` on the data directory's socket: alive when it answers 200, or 503 sealed.
async fn healthy(socket: &Path) -> bool {
    let probe = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.take(4096).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        Some(
            text.starts_with("HTTP/1.1 200")
                || (text.starts_with("HTTP/1.1 503") && text.contains("\"sealed\":true")),
        )
    };
    tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn terminate(child: &Child) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Stops the child: SIGTERM, then SIGKILL after 30 s.
async fn stop(child: &mut Child) {
    terminate(child);
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

enum Ended {
    Exited(std::process::ExitStatus),
    NotHealthyInTime,
    Stopped,
}

pub async fn run(opts: Options) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut log = Log::open(&opts.log).await;
    // Raised here, as root, for the server that runs as the service user (src/app.rs).
    let files = crate::app::raise_open_file_limit();
    log.note(&format!("open-file limit {files}")).await;
    tokio::fs::create_dir_all(&opts.run).await?;
    let ready_file = opts.run.join("ready");
    let conf = opts.system.join(super::APPLIANCE_CONF);
    let mut waiting_said = false;
    while !conf.exists() {
        if !waiting_said {
            log.note("waiting for first-boot setup").await;
            waiting_said = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = term.recv() => return Ok(()),
        }
    }
    let socket = crate::app::DataDir::new(opts.data.clone()).socket_path();
    let mut backoff = Duration::from_secs(1);
    loop {
        let choice = choose(&opts, &mut log).await;
        let what = if choice.trial.is_some() {
            "update on trial"
        } else if choice.binary == opts.builtin {
            "the image's binary"
        } else {
            "committed update"
        };
        log.note(&format!("starting custos {} ({what})", choice.version))
            .await;
        let mut cmd = Command::new(&choice.binary);
        cmd.arg("serve").env("CUSTOS_DATA", &opts.data);
        if let Some(trust) = opts.trust.as_ref() {
            cmd.env("CUSTOS_SYSTEM_DIR", &opts.system)
                .env("CUSTOS_UPDATE_TRUST", trust);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((uid, gid)) = opts.user {
            cmd.uid(uid).gid(gid);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                log.note(&format!("cannot start {}: {e}", choice.binary.display()))
                    .await;
                if let Some(slot) = choice.trial.as_ref() {
                    rollback(
                        &opts,
                        slot,
                        &format!("it could not be started: {e}"),
                        &mut log,
                    )
                    .await;
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = term.recv() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        let (tx, mut lines) = mpsc::channel::<String>(256);
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(out).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    if tx.send(l).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let started = Instant::now();
        let deadline = started + opts.health_timeout;
        let mut healthy_since: Option<Instant> = None;
        let mut fingerprint = String::new();
        let mut trial = choice.trial.clone();
        let ended = loop {
            tokio::select! {
                Some(l) = lines.recv() => {
                    log.line(&l).await;
                    if l.starts_with("TLS certificate SHA-256 fingerprint:") {
                        fingerprint = l.clone();
                    }
                    if l.starts_with("custos ready ") && healthy_since.is_none() {
                        let mut ok = false;
                        for _ in 0..10 {
                            if healthy(&socket).await {
                                ok = true;
                                break;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        if ok {
                            healthy_since = Some(Instant::now());
                            if let Err(e) = write_ready(&ready_file, &format!("{l}\n{fingerprint}\n")).await {
                                log.note(&format!("cannot write {}: {e}", ready_file.display())).await;
                            }
                            log.note(&format!("custos {} is healthy", choice.version)).await;
                            if let Some(slot) = trial.take() {
                                commit(&opts, &slot, &mut log).await;
                            }
                        } else {
                            log.note("the server said ready but /healthz does not answer").await;
                        }
                    }
                }
                status = child.wait() => break Ended::Exited(status?),
                _ = tokio::time::sleep_until(deadline), if trial.is_some() && healthy_since.is_none() => {
                    stop(&mut child).await;
                    break Ended::NotHealthyInTime;
                }
                _ = term.recv() => {
                    log.note("stopping the server").await;
                    stop(&mut child).await;
                    break Ended::Stopped;
                }
            }
        };
        let _ = tokio::fs::remove_file(&ready_file).await;
        let status = match ended {
            Ended::Stopped => {
                log.note("stopped").await;
                return Ok(());
            }
            Ended::NotHealthyInTime => {
                let why = format!(
                    "it did not become healthy within {} s",
                    opts.health_timeout.as_secs()
                );
                log.note(&why).await;
                if let Some(slot) = trial.as_ref() {
                    rollback(&opts, slot, &why, &mut log).await;
                }
                continue;
            }
            Ended::Exited(s) => s,
        };
        log.note(&format!("custos {} exited ({status})", choice.version))
            .await;
        if let Some(slot) = trial.as_ref() {
            rollback(
                &opts,
                slot,
                &format!("it exited ({status}) before it was healthy"),
                &mut log,
            )
            .await;
            continue;
        }
        if status.code() == Some(EXIT_RESTART) {
            continue;
        }
        if healthy_since.is_some_and(|t| t.elapsed() > Duration::from_secs(60)) {
            backoff = Duration::from_secs(1);
        }
        log.note(&format!("restarting in {} s", backoff.as_secs()))
            .await;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = term.recv() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

async fn write_ready(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, path).await
}

async fn commit(opts: &Options, slot: &Slot, log: &mut Log) {
    let updates = Updates::new(&opts.system);
    let result = updates.load().and_then(|mut s| {
        s.trial = None;
        s.committed = Some(slot.clone());
        updates.record(
            &mut s,
            "committed",
            &slot.version,
            &format!("slot {}: healthy", slot.slot),
        )
    });
    let floor = opts.system.join(FLOOR);
    let result = result.and_then(|()| {
        crate::keys::write_file(&floor, format!("{}\n", slot.version).as_bytes(), 0o644)
            .map_err(|e| super::update::UpdateError::Refused(e.to_string()))
    });
    match result {
        Ok(()) => {
            log.note(&format!("update {} committed", slot.version))
                .await
        }
        Err(e) => {
            log.note(&format!("cannot commit update {}: {e}", slot.version))
                .await
        }
    }
}

async fn rollback(opts: &Options, slot: &Slot, why: &str, log: &mut Log) {
    let updates = Updates::new(&opts.system);
    let result = updates.load().and_then(|mut s| {
        s.trial = None;
        let back_to = s
            .committed
            .as_ref()
            .map(|c| c.version.clone())
            .unwrap_or_else(|| "the image's binary".into());
        updates.record(
            &mut s,
            "rolled back",
            &slot.version,
            &format!("{why}; back to {back_to}"),
        )
    });
    match result {
        Ok(()) => {
            log.note(&format!(
                "update {} failed: {why}; rolled back",
                slot.version
            ))
            .await
        }
        Err(e) => {
            log.note(&format!(
                "update {} failed ({why}) and cannot be recorded: {e}",
                slot.version
            ))
            .await
        }
    }
}
