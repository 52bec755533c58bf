//! Wires the appliance together: the data directory, first-start initialization, and the
//! server's lifecycle (start, seal and unseal, checkpoints, ordered shutdown).
//!
//! Blocking work (SQLite, argon2, file I/O) runs on the blocking pool through `App::db`, never
//! on the async threads. Every long-lived task is owned here and stopped on shutdown, in this
//! order: stop accepting, let requests finish (bounded), seal open objects, record the stop,
//! write a final checkpoint.

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::archive::{Archive, ArchiveError, Recovery};
use crate::audit::note::NoteSigner;
use crate::audit::{self, AuditError, Event, Outcome};
use crate::auth::{self, Throttle};
use crate::config::{self, Config, ConfigError};
use crate::keys::{KeyError, Keyring, MasterKeyFiles, UnsealMode};
use crate::model::{Role, now_rfc3339};
use crate::store::{Store, StoreError};
use crate::tls::{self, TlsError};
use crate::web;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("too many attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> AppError + '_ {
    move |source| AppError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The data directory and the names of everything in it.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn db_path(&self) -> PathBuf {
        self.root.join("custos.db")
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn vkey_path(&self) -> PathBuf {
        self.keys_dir().join("checkpoint.vkey")
    }
    pub fn cert_path(&self) -> PathBuf {
        self.root.join("tls").join("cert.pem")
    }
    pub fn tls_key_path(&self) -> PathBuf {
        self.root.join("tls").join("key.pem")
    }
    pub fn archive_dir(&self) -> PathBuf {
        self.root.join("archive")
    }
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("custos.sock")
    }
    fn lock_path(&self) -> PathBuf {
        self.root.join("serve.lock")
    }
    pub fn master_files(&self) -> MasterKeyFiles {
        MasterKeyFiles::new(&self.keys_dir())
    }
    pub fn archive(&self) -> Archive {
        Archive::new(&self.archive_dir())
    }

    /// Whether first-start initialization has completed here.
    pub fn is_initialized(&self) -> Result<bool, AppError> {
        if !self.db_path().exists() {
            return Ok(false);
        }
        let mut s = Store::open(&self.db_path())?;
        Ok(s.read(|tx| tx.meta_get("appliance_id"))?.is_some())
    }

    /// Opens the database of an initialized data directory.
    pub fn open_store(&self) -> Result<Store, AppError> {
        if !self.is_initialized()? {
            return Err(AppError::Refused(format!(
                "{} is not an initialized Custos data directory; run `custos serve` once to create it",
                self.root.display()
            )));
        }
        Ok(Store::open(&self.db_path())?)
    }

    /// The certificate and key the server presents: the administrator's, or the generated ones.
    pub fn tls_files(&self, config: &Config) -> (PathBuf, PathBuf) {
        config
            .tls_files
            .clone()
            .unwrap_or_else(|| (self.cert_path(), self.tls_key_path()))
    }

    /// The SHA-256 fingerprint of the certificate the server presents.
    pub fn fingerprint(&self, config: &Config) -> Result<String, AppError> {
        let (cert, _) = self.tls_files(config);
        let certs = tls::load_certs(&cert)?;
        Ok(tls::fingerprint(certs[0].as_ref()))
    }
}

fn make_private_dir(path: &Path) -> Result<(), AppError> {
    if !path.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_at(path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_at(path))
}

/// What first-start initialization created, to be shown once.
pub struct InitReport {
    pub appliance_id: String,
    pub admin_password: String,
}

/// Choices first-boot setup makes instead of the defaults (see `custos setup`).
#[derive(Default)]
pub struct InitOptions {
    /// The first administrator's password; without it a one-time password is generated, to be
    /// changed at first sign-in.
    pub admin_password: Option<zeroize::Zeroizing<String>>,
    /// Seal the master key with this passphrase from the start, instead of the key file.
    pub passphrase: Option<zeroize::Zeroizing<String>>,
    /// A certificate chain and its private key (PEM) to present instead of a generated one.
    pub tls_pem: Option<(String, zeroize::Zeroizing<String>)>,
}

/// Creates keys, database, certificate and the first admin in an empty data directory.
pub fn initialize(dir: &DataDir) -> Result<InitReport, AppError> {
    initialize_with(dir, InitOptions::default())
}

/// `initialize` with setup's choices.
pub fn initialize_with(dir: &DataDir, opts: InitOptions) -> Result<InitReport, AppError> {
    make_private_dir(dir.root())?;
    if dir.keys_dir().join("master.key").exists() || dir.keys_dir().join("master.sealed").exists() {
        return Err(AppError::Refused(format!(
            "{} holds keys but no initialized database: a first start was interrupted. Move the directory aside and start again.",
            dir.root().display()
        )));
    }
    let config_path = dir.root().join(config::FILE_NAME);
    if !config_path.exists() {
        fs::write(&config_path, config::DEFAULT_TOML).map_err(io_at(&config_path))?;
    }
    let config = Config::load(dir.root())?;
    for sub in [dir.keys_dir(), dir.archive_dir(), dir.root().join("tls")] {
        make_private_dir(&sub)?;
    }
    if let Some((cert, key)) = &opts.tls_pem {
        tls::check_pair(cert, key)?;
        fs::write(dir.cert_path(), cert).map_err(io_at(&dir.cert_path()))?;
        crate::keys::write_private(&dir.tls_key_path(), key.as_bytes())?;
    } else if config.tls_files.is_none() {
        let g = tls::generate_self_signed(&config.hostnames)?;
        fs::write(dir.cert_path(), &g.cert_pem).map_err(io_at(&dir.cert_path()))?;
        crate::keys::write_private(&dir.tls_key_path(), g.key_pem.as_bytes())?;
    }
    let master = dir.master_files().create_keyfile()?;
    let master_copy = crate::crypto::SecretKey::from_bytes(*master.expose());
    let keyring = Keyring::new(master).with_recovery(config.recovery_recipient.clone());
    let appliance_id = hex::encode(crate::crypto::random_array::<8>());
    let origin = audit::origin(&appliance_id);
    let chosen = opts.admin_password.is_some();
    let password = match &opts.admin_password {
        Some(p) => {
            auth::check_password_policy(p).map_err(|e| AppError::Refused(e.to_string()))?;
            String::new()
        }
        None => auth::generate_password(),
    };
    let hash =
        crate::crypto::hash_password(opts.admin_password.as_deref().map_or(&password, |p| p));
    let mut store = Store::open(&dir.db_path())?;
    let now = now_rfc3339();
    let vkey = store.write(|tx| {
        let signing = keyring
            .initialize(tx, &now)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let vkey = NoteSigner::new(&origin, signing).verifier().to_vkey();
        tx.meta_set("checkpoint_vkey", &vkey)?;
        tx.meta_set("created_at", &now)?;
        tx.user_insert("admin", Role::Admin, &hash, !chosen, &now)?;
        audit::append_tx(
            tx,
            &[
                Event::system(
                    "appliance.initialized",
                    &format!("appliance:{appliance_id}"),
                    json!({ "version": env!("CARGO_PKG_VERSION") }),
                ),
                Event::system(
                    "user.created",
                    "user:admin",
                    json!({ "role": "admin", "one_time_password": !chosen }),
                ),
            ],
        )?;
        // Written last: its presence is what marks the directory as initialized.
        tx.meta_set("appliance_id", &appliance_id)?;
        Ok(vkey)
    })?;
    crate::keys::write_file(&dir.vkey_path(), format!("{vkey}\n").as_bytes(), 0o644)?;
    if let Ok(signing) = store.read(|tx| {
        keyring
            .signing_key(tx)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }) {
        audit::checkpoint(&mut store, &NoteSigner::new(&origin, signing), &origin)?;
    }
    if let Some(p) = &opts.passphrase {
        // The database and audit log are complete; from here the key is only in the sealed file.
        dir.master_files().seal(&master_copy, p)?;
    }
    Ok(InitReport {
        appliance_id,
        admin_password: password,
    })
}

/// Key material present while the appliance is unsealed.
pub struct Unsealed {
    pub keys: Arc<Keyring>,
    pub signer: Arc<NoteSigner>,
}

/// Where a request came from, for audit entries.
#[derive(Clone, Debug)]
pub enum Source {
    Net(SocketAddr),
    /// The Unix socket in the data directory, reachable only by the service's own user.
    Local,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Net(a) => write!(f, "{}", a.ip()),
            Source::Local => f.write_str("local"),
        }
    }
}

/// Where staged updates go and the key that must have signed them.
#[derive(Clone, Debug)]
pub struct UpdateSetup {
    pub system: PathBuf,
    pub trust: PathBuf,
}

/// How `serve` ended.
#[derive(Debug, PartialEq)]
pub enum Stopped {
    /// SIGTERM or SIGINT.
    Signal,
    /// A staged update asks its supervisor for a restart.
    Restart,
}

/// The running appliance.
pub struct App {
    pub dir: DataDir,
    pub config: Config,
    pub appliance_id: String,
    pub origin: String,
    pub fingerprint: String,
    pub archive: Archive,
    pub throttle: Throttle,
    /// Throttles connection-code redemption per address and across the appliance.
    pub code_throttle: Throttle,
    pub sessions: crate::session::Sessions,
    /// Limits request creation per address (10 a second, bursts of 100), so an anonymous flood
    /// cannot fill the queue. The appliance's own loopback (integrations on the same host) is not
    /// limited.
    pub request_limit: crate::auth::RateLimit,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The audit verification run for API clients (one at a time).
    pub audit_jobs: Arc<audit::job::Jobs>,
    /// Export bundles built in the background for API clients (the console's progress bar).
    pub export_jobs: Arc<crate::export::job::Jobs>,
    /// Held while a key rotation runs (one at a time).
    pub rotating: tokio::sync::Mutex<()>,
    /// Set when the server begins to shut down; long-lived streams and sockets watch it.
    pub stop: watch::Sender<bool>,
    /// On the appliance image: where updates are staged and the key they must be signed with
    /// (from `custos supervise`, through CUSTOS_SYSTEM_DIR and CUSTOS_UPDATE_TRUST).
    pub updates: Option<UpdateSetup>,
    /// Notified to stop the server so that its supervisor starts it again (a staged update).
    pub restart: tokio::sync::Notify,
    store: Arc<Mutex<Store>>,
    unsealed: RwLock<Option<Unsealed>>,
}

impl App {
    /// Runs `f` with the database on the blocking pool.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> T {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut s)
        })
        .await
        .expect("a database task panicked")
    }

    /// Appends one audit entry (durably) and returns its sequence number.
    pub async fn audit(&self, ev: Event) -> Result<u64, AuditError> {
        self.db(move |s| audit::append(s, &[ev]).map(|v| v[0]))
            .await
    }

    /// Whether the data directory's file system has room for a new session: at least
    /// `archive.min_free_mb` free for unprivileged writers. The error says how much is free.
    pub fn storage_room(&self) -> Result<(), String> {
        // A file system that cannot be asked is not a reason to refuse; writes report their own
        // errors.
        let Ok(v) = rustix::fs::statvfs(self.dir.root()) else {
            return Ok(());
        };
        let free = v.f_bavail.saturating_mul(v.f_frsize);
        if free >= self.config.min_free_bytes {
            return Ok(());
        }
        tracing::warn!(
            free_bytes = free,
            min_free_bytes = self.config.min_free_bytes,
            "new sessions refused: the data directory's file system is nearly full"
        );
        Err(format!(
            "the appliance's storage is full ({} MiB free, {} MiB needed for new sessions); new sessions are refused until an administrator frees space",
            free >> 20,
            self.config.min_free_bytes >> 20
        ))
    }

    pub fn is_sealed(&self) -> bool {
        self.unsealed.read().expect("lock").is_none()
    }

    pub fn keys(&self) -> Option<Arc<Keyring>> {
        self.unsealed
            .read()
            .expect("lock")
            .as_ref()
            .map(|u| u.keys.clone())
    }

    fn signer(&self) -> Option<Arc<NoteSigner>> {
        self.unsealed
            .read()
            .expect("lock")
            .as_ref()
            .map(|u| u.signer.clone())
    }

    /// Installs an unsealed master key: checks it against the data directory, then recovers
    /// objects a crash left open, then records the unseal.
    async fn install(self: &Arc<Self>, keyring: Keyring, actor: Event) -> Result<(), AppError> {
        let keyring = Arc::new(keyring);
        let kr = keyring.clone();
        let origin = self.origin.clone();
        let archive = self.archive.clone();
        let (signer, recovered) = self
            .db(move |s| -> Result<_, AppError> {
                s.read(|tx| kr.check(tx).map_err(|e| StoreError::Corrupt(e.to_string())))
                    .map_err(|_| KeyError::WrongMasterKey)?;
                let signing = s.read(|tx| {
                    kr.signing_key(tx)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                })?;
                let recovered = archive.recover(s, &kr)?;
                Ok((NoteSigner::new(&origin, signing), recovered))
            })
            .await?;
        for r in &recovered {
            match r {
                Recovery::Sealed(r) => {
                    tracing::warn!(object = %r.id, state = r.state.as_str(), chunks = r.chunks, cut_bytes = r.cut_bytes, reason = %r.reason, "recovered an archive object left open")
                }
                Recovery::Failed { id, error } => {
                    tracing::error!(object = %id, %error, "could not recover an archive object; it stays open and `custos archive verify` will name it")
                }
            }
        }
        *self.unsealed.write().expect("lock") = Some(Unsealed {
            keys: keyring,
            signer: Arc::new(signer),
        });
        let live = crate::session::Sessions::load(self)
            .await
            .map_err(|e| AppError::Refused(e.to_string()))?;
        if live > 0 {
            tracing::info!(sessions = live, "waiting and active sessions restored");
        }
        self.audit(actor).await?;
        Ok(())
    }

    /// Unseals with a passphrase. Wrong passphrases are audited and throttled; attempts are
    /// counted before argon2 runs, so concurrent guesses cannot slip past the limit.
    pub async fn unseal(
        self: &Arc<Self>,
        passphrase: String,
        source: &Source,
    ) -> Result<(), AppError> {
        if !self.is_sealed() {
            return Ok(());
        }
        let base = Event {
            source: source.to_string(),
            ..Event::system("keys.unseal", "appliance", json!({}))
        };
        if let Err(locked) = self.throttle.attempt("unseal") {
            if locked.first {
                self.audit(
                    Event {
                        details: json!({ "reason": "throttled" }),
                        ..base
                    }
                    .outcome(Outcome::Denied),
                )
                .await?;
            }
            return Err(AppError::Throttled(locked.wait));
        }
        let files = self.dir.master_files();
        let loaded = tokio::task::spawn_blocking(move || {
            let p = zeroize::Zeroizing::new(passphrase);
            files.load_sealed(&p)
        })
        .await
        .expect("unseal task panicked");
        let installed = match loaded {
            Ok(master) => {
                self.install(
                    Keyring::new(master).with_recovery(self.config.recovery_recipient.clone()),
                    base.clone(),
                )
                .await
            }
            Err(e) => Err(e.into()),
        };
        match installed {
            Ok(()) => {
                self.throttle.success("unseal");
                Ok(())
            }
            Err(e) => {
                self.audit(
                    Event {
                        details: json!({ "error": e.to_string() }),
                        ..base
                    }
                    .outcome(Outcome::Denied),
                )
                .await?;
                Err(e)
            }
        }
    }

    /// Seals the running appliance: forgets every key. With a passphrase, also converts a key
    /// file into a sealed file so that the next start waits sealed too.
    pub async fn seal(&self, passphrase: Option<String>, source: &Source) -> Result<(), AppError> {
        let files = self.dir.master_files();
        let mode = files.mode()?;
        if mode == UnsealMode::KeyFile {
            let Some(p) = passphrase else {
                return Err(AppError::Refused(
                    "the master key is kept in a key file; sealing needs a passphrase to protect it (--passphrase-file)".into(),
                ));
            };
            let master = files.load_keyfile()?;
            tokio::task::spawn_blocking(move || {
                let p = zeroize::Zeroizing::new(p);
                files.seal(&master, &p)
            })
            .await
            .expect("seal task panicked")?;
        }
        self.write_checkpoint().await;
        self.audit(Event {
            source: source.to_string(),
            ..Event::system(
                "keys.sealed",
                "appliance",
                json!({ "converted_key_file": mode == UnsealMode::KeyFile }),
            )
        })
        .await?;
        // Live sessions stop before the keys go: their recordings are sealed with the keys they
        // were written under, and nothing relays while sealed.
        let suspended = self.sessions.suspend_all().await;
        if suspended > 0 {
            tracing::info!(sessions = suspended, "live sessions suspended by sealing");
        }
        self.write_checkpoint().await;
        *self.unsealed.write().expect("lock") = None;
        Ok(())
    }

    /// Writes a signed checkpoint if the log grew and the appliance is unsealed.
    pub async fn write_checkpoint(&self) {
        let Some(signer) = self.signer() else { return };
        let origin = self.origin.clone();
        if let Err(e) = self
            .db(move |s| audit::checkpoint(s, &signer, &origin))
            .await
        {
            tracing::error!(error = %e, "could not write an audit checkpoint");
        }
    }
}

/// Every live session holds two sockets (and a screen share a third) and two open archive
/// objects: the usual limits of open files (1,024 soft, 4,096 hard on a bare kernel) would refuse
/// connections and recordings at a few hundred sessions. Raises the hard limit to the kernel's
/// ceiling (`fs.nr_open`) where allowed (root: `custos supervise` before it starts the server as
/// the service user, which inherits it), then the soft limit to the hard one. Returns the limit.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let ceiling = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mut l = getrlimit(Resource::Nofile);
    if let Some(c) = ceiling
        && l.maximum.is_some_and(|m| m < c)
    {
        let higher = rustix::process::Rlimit {
            current: Some(c),
            maximum: Some(c),
        };
        if setrlimit(Resource::Nofile, higher).is_ok() {
            return c;
        }
    }
    if l.current != l.maximum {
        l.current = l.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, l) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Starts the appliance and serves until SIGTERM or SIGINT.
pub async fn serve(dir: DataDir, listen: Option<SocketAddr>) -> Result<Stopped, AppError> {
    make_private_dir(dir.root())?;
    raise_open_file_limit();
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.lock_path())
        .map_err(io_at(&dir.lock_path()))?;
    if lock.try_lock().is_err() {
        return Err(AppError::Refused(format!(
            "another `custos serve` is running on {}",
            dir.root().display()
        )));
    }
    if !dir.is_initialized()? {
        let d = dir.clone();
        let report = tokio::task::spawn_blocking(move || initialize(&d))
            .await
            .expect("init task panicked")?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "Initialized a new Custos appliance (id {}) in {}.\n\
             First administrator: user \"admin\", one-time password: {}\n\
             This password is shown only now and must be changed at first login.",
            report.appliance_id,
            dir.root().display(),
            report.admin_password
        );
        let _ = out.flush();
    }
    let config = Config::load(dir.root())?;
    let listen = listen.unwrap_or(config.listen);
    let mut store = Store::open(&dir.db_path())?;
    let appliance_id = store
        .read(|tx| tx.meta_get("appliance_id"))?
        .ok_or_else(|| AppError::Refused("the database has no appliance id".into()))?;
    let (cert, key) = dir.tls_files(&config);
    let tls_config = tls::server_config(&cert, &key)?;
    let fingerprint = dir.fingerprint(&config)?;
    dir.master_files().finish_interrupted_seal()?;
    let mode = dir.master_files().mode()?;

    let app = Arc::new(App {
        archive: dir.archive(),
        origin: audit::origin(&appliance_id),
        dir: dir.clone(),
        config: config.clone(),
        appliance_id,
        fingerprint: fingerprint.clone(),
        throttle: Throttle::new(5),
        code_throttle: Throttle::new(10),
        sessions: crate::session::Sessions::new(),
        request_limit: crate::auth::RateLimit::new(10.0, 100.0),
        metrics: crate::metrics::Metrics::new(),
        audit_jobs: Arc::default(),
        export_jobs: Arc::default(),
        rotating: tokio::sync::Mutex::new(()),
        stop: watch::channel(false).0,
        updates: match (
            std::env::var_os("CUSTOS_SYSTEM_DIR"),
            std::env::var_os("CUSTOS_UPDATE_TRUST"),
        ) {
            (Some(system), Some(trust)) => Some(UpdateSetup {
                system: system.into(),
                trust: trust.into(),
            }),
            _ => None,
        },
        restart: tokio::sync::Notify::new(),
        store: Arc::new(Mutex::new(store)),
        unsealed: RwLock::new(None),
    });
    app.audit(Event::system("server.start", "appliance", json!({ "version": env!("CARGO_PKG_VERSION"), "listen": listen.to_string(), "unseal_mode": format!("{mode:?}") })))
        .await?;
    match mode {
        UnsealMode::KeyFile => {
            let master = dir.master_files().load_keyfile()?;
            app.install(
                Keyring::new(master).with_recovery(config.recovery_recipient.clone()),
                Event::system("keys.unseal", "appliance", json!({ "mode": "key file" })),
            )
            .await?;
        }
        UnsealMode::Passphrase => {
            eprintln!(
                "custos: the master key is sealed by a passphrase; only /healthz answers until `custos unseal`"
            );
        }
    }
    app.write_checkpoint().await;

    let tcp = TcpListener::bind(listen).await.map_err(|e| AppError::Io {
        path: PathBuf::from(listen.to_string()),
        source: e,
    })?;
    let local_addr = tcp.local_addr().map_err(io_at(dir.root()))?;
    let sock_path = dir.socket_path();
    let _ = fs::remove_file(&sock_path);
    let unix = UnixListener::bind(&sock_path).map_err(io_at(&sock_path))?;
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o600))
        .map_err(io_at(&sock_path))?;

    let mut signals = Signals::install()?;
    let stop_rx = app.stop.subscribe();
    let checkpoints = tokio::spawn(checkpoint_loop(app.clone(), stop_rx.clone()));
    let sweeper = tokio::spawn(sweep_loop(app.clone(), stop_rx.clone()));
    crate::integrations::start(&app);
    crate::sync::service::start(&app);
    let server = tokio::spawn(web::run(
        app.clone(),
        tcp,
        unix,
        tls_config,
        stop_rx.clone(),
    ));

    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "TLS certificate SHA-256 fingerprint: {fingerprint}");
        let _ = writeln!(out, "custos ready https://{local_addr}");
        let _ = out.flush();
    }

    let stopped = tokio::select! {
        _ = signals.wait() => Stopped::Signal,
        _ = app.restart.notified() => Stopped::Restart,
    };
    tracing::info!("shutting down");
    let _ = app.stop.send(true);
    match tokio::time::timeout(Duration::from_secs(15), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "server stopped with an error"),
        Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("connections still open after 15 s; closing them"),
    }
    let _ = checkpoints.await;
    let _ = sweeper.await;
    // Seal what the live sessions have recorded; they continue in new objects after a restart.
    let sealed = app.sessions.seal_all().await;
    app.audit(Event::system(
        "server.stop",
        "appliance",
        json!({ "reason": if stopped == Stopped::Restart { "restart for an update" } else { "signal" }, "sessions_sealed": sealed }),
    ))
    .await?;
    app.write_checkpoint().await;
    let _ = fs::remove_file(&sock_path);
    drop(lock);
    Ok(stopped)
}

/// SIGTERM and SIGINT, installed before the ready line so that a signal sent right after it is
/// never lost to the default action.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, AppError> {
        use tokio::signal::unix::{SignalKind, signal};
        let io = |e| AppError::Io {
            path: PathBuf::from("signal handler"),
            source: e,
        };
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(io)?,
            int: signal(SignalKind::interrupt()).map_err(io)?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Every five seconds, returns to the queue the sessions whose agent stayed away longer than the
/// grace period; every minute, advances the trusted time (or raises an alert when the clock
/// jumped); every hour, runs the retention sweeper.
async fn sweep_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut ticks = 0u64;
    let mut alerted = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if app.is_sealed() {
            continue;
        }
        crate::session::Sessions::sweep(&app).await;
        ticks += 1;
        if ticks % 12 == 1 {
            let now = time::OffsetDateTime::now_utc();
            let plausible = app
                .db(move |s| crate::retention::touch_clock(s, now))
                .await
                .unwrap_or(true);
            if plausible {
                alerted = false;
            }
            if !plausible && !alerted {
                alerted = true;
                tracing::error!(
                    "the system clock moved suspiciously; retention sweeps are refused until an administrator runs `custos sweep --trust-clock`"
                );
                let _ = app
                    .audit(
                        Event::system(
                            "retention.clock_suspicious",
                            "clock",
                            json!({ "now": crate::model::format_rfc3339(now) }),
                        )
                        .outcome(Outcome::Failure),
                    )
                    .await;
            }
        }
        if ticks % 720 == 2 {
            let archive = app.archive.clone();
            let result = app
                .db(move |s| {
                    crate::retention::sweep(s, &archive, Event::system("", "", json!({})), false)
                })
                .await;
            match result {
                Ok(r) if r.shredded > 0 => {
                    tracing::info!(shredded = r.shredded, held = r.held, "retention sweep")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep refused"),
            }
        }
    }
}

/// Writes a checkpoint every interval while entries arrive; purges expired tokens hourly.
async fn checkpoint_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(app.config.checkpoint_interval_s));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        app.write_checkpoint().await;
        ticks += 1;
        if ticks.is_multiple_of((3600 / app.config.checkpoint_interval_s).max(1)) {
            let _ = app
                .db(|s| s.write(|tx| tx.tokens_purge_expired(crate::model::unix_now())))
                .await;
        }
    }
}

/// The identity the CLI records in audit entries for acts done on the appliance's own files:
/// the operating-system user id of the process (not `$USER`, which anyone can set). Whoever can
/// write the data directory holds the appliance's keys, so the role is admin.
pub fn cli_actor() -> Event {
    use std::os::unix::fs::MetadataExt;
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Event {
        actor: format!("cli:uid={uid}"),
        role: "admin".into(),
        action: String::new(),
        target: String::new(),
        outcome: Outcome::Success,
        source: "local".into(),
        details: json!({}),
    }
}
