//! The `custos` command line. Arguments are parsed by clap into `Cli`, then each command turns
//! them into calls on the library. Commands that act on the appliance's files (user, audit,
//! archive, key) work whether or not the server is running: SQLite serializes writers, and the
//! audit log is append-only from any process. Seal and unseal talk to the running server over
//! its Unix socket.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::json;

use crate::app::{self, DataDir};
use crate::archive::Archive;
use crate::audit::note::NoteVerifier;
use crate::audit::{self, Event};
use crate::auth;
use crate::client::Endpoint;
use crate::keys::{Keyring, UnsealMode};
use crate::model::{Role, UserName, now_rfc3339};

#[derive(Parser, Debug)]
#[command(
    name = "custos",
    version,
    about = "On-premises remote-support appliance with an encrypted, tamper-evident archive"
)]
pub struct Cli {
    /// Data directory.
    #[arg(
        long,
        global = true,
        env = "CUSTOS_DATA",
        default_value = "./custos-data"
    )]
    pub data: PathBuf,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the appliance (initializes the data directory on first run).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8443 (default: custos.toml, else 127.0.0.1:8443).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Inspect and verify the audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Verify the encrypted archive.
    #[command(subcommand)]
    Archive(ArchiveCmd),
    /// Manage the key hierarchy.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Connection codes ("phone mode").
    #[command(subcommand)]
    Code(CodeCmd),
    /// Retention policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Legal holds.
    #[command(subcommand)]
    Hold(HoldCmd),
    /// Write a signed export bundle of chosen sessions for an auditor (as a compliance officer).
    Export {
        #[arg(long = "session")]
        sessions: Vec<String>,
        #[arg(long = "ref")]
        external_ref: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        out: PathBuf,
        /// Why the export is made (recorded in the bundle and the audit log).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
        /// Encrypt the payload to this auditor's age key (age1…); repeatable.
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// The newest checkpoint the auditor holds (a file): the bundle proves it extends it.
        #[arg(long)]
        since_checkpoint: Option<PathBuf>,
    },
    /// Verify an export bundle offline; needs no data directory.
    Verify {
        bundle: PathBuf,
        /// The appliance key to trust: a file holding an `ssh-ed25519 …` line.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// A checkpoint you hold from earlier (a file): the bundle must be newer and consistent.
        #[arg(long)]
        since_checkpoint: Option<PathBuf>,
    },
    /// Crypto-shred every archive object whose retention has run out (never one under a hold).
    Sweep {
        /// Run although the clock moved suspiciously since the last trusted time (audited).
        #[arg(long)]
        trust_clock: bool,
    },
    /// Protect the master key with a passphrase and seal the running server.
    Seal {
        /// File whose first line is the passphrase (else you are prompted).
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Give the passphrase to a sealed server.
    Unseal {
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// The terminal console for compliance officers and administrators. It talks to the running
    /// appliance through its API: the Unix socket in the data directory, or HTTPS with --server.
    Console {
        /// An appliance elsewhere, host:port (with --fingerprint).
        #[arg(long, requires = "fingerprint")]
        server: Option<String>,
        /// The SHA-256 fingerprint of its TLS certificate, as `custos serve` prints it.
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// Sessions per day, agent or portal with wait and handle times and survey scores, as CSV.
    Report {
        /// day, agent or portal.
        #[arg(long, default_value = "day")]
        by: String,
        /// Sessions requested at or after (a date or RFC 3339 time).
        #[arg(long)]
        since: Option<String>,
        /// Sessions requested at or before.
        #[arg(long)]
        until: Option<String>,
    },
    /// Keeps a database of your own current with the session records (docs/database-schema.md),
    /// through the Sessions API with an API token (scope read_any_session).
    Sync {
        /// The target: sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB.
        #[arg(long)]
        to: String,
        /// A file holding the API token (or set CUSTOS_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// An appliance elsewhere, host:port (with --fingerprint); default: this data directory's.
        #[arg(long, requires = "fingerprint")]
        server: Option<String>,
        /// The SHA-256 fingerprint of its TLS certificate.
        #[arg(long)]
        fingerprint: Option<String>,
        /// Only sessions requested at or after (a date or RFC 3339 time).
        #[arg(long)]
        since: Option<String>,
        /// Only sessions requested at or before.
        #[arg(long)]
        until: Option<String>,
        /// Keep going: changes reach the database within a second.
        #[arg(long, conflicts_with_all = ["since", "until"])]
        follow: bool,
        /// Also copy each session's files into this directory (SESSION/FILE_ID-NAME, owner-only),
        /// each copy checked against its SHA-256 and each read audited.
        #[arg(long)]
        files_dir: Option<PathBuf>,
        /// Also copy each session's screen recordings, decrypted, into this directory
        /// (SESSION/OBJECT.rec, the record stream of docs/formats/recording.md; owner-only),
        /// each checked against its SHA-256 and each opening audited.
        #[arg(long)]
        recordings_dir: Option<PathBuf>,
    },
    /// First-boot setup of the appliance image, on its console: administrator password, unseal
    /// mode, network, host name, TLS certificate and time source (docs/install.md).
    Setup {
        /// Where the appliance's system settings go (appliance.conf).
        #[arg(long, default_value = "/data/system")]
        system: PathBuf,
        /// The address the server listens on.
        #[arg(long, default_value = "0.0.0.0:443")]
        listen: String,
    },
    /// Runs `custos serve` on the appliance: restarts it with backoff, tries a staged update and
    /// rolls it back when it does not become healthy (docs/updates.md).
    Supervise {
        #[arg(long, default_value = "/data/system")]
        system: PathBuf,
        /// The server's log (rotated at 10 MiB).
        #[arg(long, default_value = "/data/log/custos.log")]
        log: PathBuf,
        /// Where the ready file and an update's binary go (RAM).
        #[arg(long, default_value = "/run/custos")]
        run: PathBuf,
        /// Run the server as UID:GID.
        #[arg(long)]
        user: Option<String>,
        /// The update key (`ssh-ed25519 …`); without it staged updates are not run.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Seconds a trial update has to become healthy.
        #[arg(long, default_value_t = 300)]
        health_timeout: u64,
    },
    /// Signed updates of the appliance's binary (docs/updates.md).
    #[command(subcommand)]
    Update(UpdateCmd),
    /// Asks SNTP servers for the time; with --set, steps the clock when it is off by 0.1 s or more.
    Timesync {
        #[arg(long)]
        set: bool,
        /// Servers: names or addresses, optionally with :PORT.
        #[arg(required = true)]
        servers: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UpdateCmd {
    /// Creates an update signing key pair: PREFIX.key (keep it offline) and PREFIX.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Keep an existing pair instead of refusing.
        #[arg(long)]
        if_missing: bool,
    },
    /// Signs a binary as an update bundle.
    Sign {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        binary: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a bundle against the update key and stages it; the next start tries it.
    Apply {
        bundle: PathBuf,
        #[arg(long, default_value = "/data/system")]
        system: PathBuf,
        #[arg(long, default_value = "/etc/custos/update.pub")]
        trust: PathBuf,
    },
    /// Checks a bundle without staging it.
    Verify {
        bundle: PathBuf,
        #[arg(long, default_value = "/etc/custos/update.pub")]
        trust: PathBuf,
    },
    /// The committed and trial updates and their history.
    Status {
        #[arg(long, default_value = "/data/system")]
        system: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user. Without --password-file a one-time password is generated and printed.
    Add {
        name: String,
        #[arg(long)]
        role: String,
        /// File whose first line is the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Portals and skills the agent works in, as PORTAL:SKILL, comma separated.
        #[arg(long, value_delimiter = ',')]
        skills: Vec<String>,
    },
    /// Set the portals and skills an agent works in (replacing the previous ones).
    Grant {
        name: String,
        /// PORTAL:SKILL entries.
        #[arg(required = true)]
        skills: Vec<String>,
    },
    /// List users.
    List,
    /// Disable a user and revoke their login tokens.
    Disable { name: String },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Validate the policy files in DIR (default ./policies); errors name file and line.
    Check { dir: Option<PathBuf> },
    /// Install the policy set in DIR (default ./policies) into the appliance; its hash is audited.
    Install {
        dir: Option<PathBuf>,
        /// Required when the set shortens or removes a governance-mode policy.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Shred objects awaiting review (policies with action "review"), as a compliance officer.
    Approve {
        /// The objects to shred (as `policy plan` lists them).
        #[arg(required = true)]
        objects: Vec<String>,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// What will be shredded by DATE (default now), when, under which policy, and what is held.
    Plan {
        #[arg(long)]
        at: Option<String>,
        /// Also list objects that are not due.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum HoldCmd {
    /// Place a legal hold (as a compliance officer).
    Add {
        #[arg(long)]
        session: Option<String>,
        #[arg(long = "ref")]
        external_ref: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        portal: Option<String>,
        /// With --to: sessions requested in this date range.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        case: String,
        /// The compliance officer placing it.
        #[arg(long)]
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Release a hold: a second compliance officer, not the one who placed it.
    Release {
        id: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        user: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List holds.
    List {
        /// Include released holds.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum CodeCmd {
    /// Issue a one-time connection code for an agent; prints the code.
    New {
        #[arg(long)]
        agent: String,
        /// External ticket id to tag the session with.
        #[arg(long = "ref")]
        external_ref: Option<String>,
        /// Lifetime in seconds (60 to 3600; default from custos.toml, 600).
        #[arg(long)]
        ttl: Option<i64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Recompute the whole tree and check every entry and checkpoint.
    Verify {
        /// Verifier key file to trust (default: keys/checkpoint.vkey in the data directory).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print entries.
    Show {
        /// How many of the newest entries to print.
        #[arg(long, default_value_t = 20)]
        last: u32,
        /// Print from this sequence number instead.
        #[arg(long)]
        from: Option<u64>,
        /// One JSON entry per line, exactly as stored.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint.
    Checkpoint,
}

#[derive(Subcommand, Debug)]
pub enum ArchiveCmd {
    /// Read every archive object end to end and check it against its metadata.
    Verify {
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Start a new key-encryption-key epoch and re-wrap every data key under it.
    Rotate {
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Read an archive object with the offline recovery identity, without the master key.
    Recover {
        /// The age identity file of the recovery key (AGE-SECRET-KEY-1…).
        #[arg(long)]
        identity: PathBuf,
        /// The object to read.
        #[arg(long)]
        object: String,
        /// Where to write its plaintext (created with mode 0600; must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a command; `Ok(code)` is the process exit status.
pub fn run(cli: Cli) -> Result<i32> {
    let dir = DataDir::new(cli.data);
    match cli.cmd {
        Cmd::Serve { listen } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            match rt.block_on(app::serve(dir, listen))? {
                app::Stopped::Signal => Ok(0),
                app::Stopped::Restart => Ok(crate::appliance::supervise::EXIT_RESTART),
            }
        }
        Cmd::Setup { system, listen } => {
            let tty = std::io::stdin().is_terminal();
            let stdin = std::io::stdin();
            let mut p =
                crate::appliance::setup::Prompter::new(stdin.lock(), std::io::stdout(), tty);
            match crate::appliance::setup::run(&mut p, dir.root(), &system, &listen) {
                Ok(()) => Ok(0),
                Err(e) => {
                    eprintln!("setup: {e}");
                    Ok(1)
                }
            }
        }
        Cmd::Supervise {
            system,
            log,
            run,
            user,
            trust,
            health_timeout,
        } => {
            let user = match user {
                None => None,
                Some(u) => Some(
                    u.split_once(':')
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                        .ok_or_else(|| anyhow!("--user {u:?}: use UID:GID, like 1000:1000"))?,
                ),
            };
            let opts = crate::appliance::supervise::Options {
                data: dir.root().to_path_buf(),
                system,
                log,
                run,
                user,
                trust,
                builtin: std::env::current_exe()?,
                health_timeout: std::time::Duration::from_secs(health_timeout),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::appliance::supervise::run(opts))?;
            Ok(0)
        }
        Cmd::Update(c) => update_cmd(c),
        Cmd::Timesync { set, servers } => {
            let (best, errors) =
                crate::appliance::timesync::best(&servers, std::time::Duration::from_secs(3));
            for e in &errors {
                eprintln!("timesync: {e}");
            }
            let Some(s) = best else {
                eprintln!("timesync: no server answered; the clock is unchanged");
                return Ok(1);
            };
            println!(
                "{}: offset {:+.3} s, round trip {:.3} s, stratum {}",
                s.server, s.offset, s.delay, s.stratum
            );
            if set && s.offset.abs() >= 0.1 {
                crate::appliance::timesync::step(s.offset)
                    .context("setting the clock (needs CAP_SYS_TIME)")?;
                println!("clock stepped by {:+.3} s", s.offset);
            }
            Ok(0)
        }
        Cmd::User(c) => user(&dir, c),
        Cmd::Audit(c) => audit_cmd(&dir, c),
        Cmd::Archive(ArchiveCmd::Verify { passphrase_file }) => {
            archive_verify(&dir, passphrase_file.as_deref())
        }
        Cmd::Key(KeyCmd::Rotate { passphrase_file }) => {
            key_rotate(&dir, passphrase_file.as_deref())
        }
        Cmd::Key(KeyCmd::Recover {
            identity,
            object,
            out,
        }) => key_recover(&dir, &identity, &object, &out),
        Cmd::Code(CodeCmd::New {
            agent,
            external_ref,
            ttl,
        }) => code_new(&dir, &agent, external_ref, ttl),
        Cmd::Policy(c) => policy_cmd(&dir, c),
        Cmd::Export {
            sessions,
            external_ref,
            since,
            until,
            out,
            reason,
            user,
            password_file,
            passphrase_file,
            recipients,
            since_checkpoint,
        } => {
            let opts = ExportOptions {
                recipients,
                since_checkpoint,
                password_file,
                passphrase_file,
            };
            export_cmd(
                &dir,
                sessions,
                external_ref,
                since,
                until,
                &out,
                &reason,
                &user,
                opts,
            )
        }
        Cmd::Verify {
            bundle,
            trust,
            since_checkpoint,
        } => verify_cmd(&bundle, trust.as_deref(), since_checkpoint.as_deref()),
        Cmd::Hold(c) => hold_cmd(&dir, c),
        Cmd::Sweep { trust_clock } => {
            let mut store = dir.open_store()?;
            match crate::retention::sweep(&mut store, &dir.archive(), app::cli_actor(), trust_clock)
            {
                Ok(r) => {
                    println!(
                        "sweep done: {} objects shredded, {} session records cleared, {} expired but held, {} awaiting review, {} leftover files removed",
                        r.shredded,
                        r.records_cleared,
                        r.held,
                        r.awaiting_review,
                        r.leftover_files_removed
                    );
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("sweep refused: {e}");
                    Ok(1)
                }
            }
        }
        Cmd::Seal { passphrase_file } => seal(&dir, passphrase_file.as_deref()),
        Cmd::Unseal { passphrase_file } => unseal(&dir, passphrase_file.as_deref()),
        Cmd::Console {
            server,
            fingerprint,
        } => {
            crate::console::run(endpoint(&dir, server, fingerprint)?)?;
            Ok(0)
        }
        Cmd::Report { by, since, until } => {
            let by = crate::store::GroupBy::parse(&by)
                .ok_or_else(|| anyhow!("--by {by:?}: use day, agent or portal"))?;
            let (since, until) = crate::web::report_range(since.as_deref(), until.as_deref())
                .map_err(|e| anyhow!("--{e}"))?;
            let mut store = dir.open_store()?;
            let rows = store.read(|tx| tx.report(by, since.as_deref(), until.as_deref()))?;
            print!("{}", crate::store::report_csv(&rows));
            Ok(0)
        }
        Cmd::Sync {
            to,
            token_file,
            server,
            fingerprint,
            since,
            until,
            follow,
            files_dir,
            recordings_dir,
        } => sync_cmd(
            endpoint(&dir, server, fingerprint)?,
            token_file.as_deref(),
            &to,
            crate::sync::Options {
                since,
                until,
                follow,
                files_dir,
                recordings_dir,
                max_pages: None,
            },
        ),
    }
}

fn update_cmd(c: UpdateCmd) -> Result<i32> {
    use crate::appliance::update;
    match c {
        UpdateCmd::Keygen { out, if_missing } => {
            println!("{}", update::keygen(&out, if_missing)?);
        }
        UpdateCmd::Sign {
            key,
            binary,
            version,
            out,
        } => {
            let m = update::sign(&update::load_signing_key(&key)?, &binary, &version, &out)?;
            println!(
                "{}: version {}, {} bytes, SHA-256 {}",
                out.display(),
                m.version,
                m.size,
                m.sha256
            );
        }
        UpdateCmd::Verify { bundle, trust } => {
            match update::verify(&bundle, &update::load_trust(&trust)?) {
                Ok(v) => println!(
                    "{}: good signature, version {}, {} bytes",
                    bundle.display(),
                    v.manifest.version,
                    v.manifest.size
                ),
                Err(e) => {
                    eprintln!("{}: {e}", bundle.display());
                    return Ok(1);
                }
            }
        }
        UpdateCmd::Apply {
            bundle,
            system,
            trust,
        } => {
            let u = update::Updates::new(&system);
            match u.apply(
                &bundle,
                &update::load_trust(&trust)?,
                env!("CARGO_PKG_VERSION"),
            ) {
                Ok(m) => println!(
                    "update {} staged; the next start of the server tries it and keeps it only if it is healthy",
                    m.version
                ),
                Err(e) => {
                    eprintln!("update refused: {e}");
                    return Ok(1);
                }
            }
        }
        UpdateCmd::Status { system } => {
            let s = update::Updates::new(&system).load()?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
    }
    Ok(0)
}

/// Reads a secret: the first line of `file`, else a prompt on the terminal, else a line of
/// standard input.
fn read_secret(file: Option<&Path>, prompt: &str) -> Result<String> {
    if let Some(f) = file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let line = text.lines().next().unwrap_or("").to_string();
        if line.is_empty() {
            bail!("{} is empty", f.display());
        }
        return Ok(line);
    }
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password(prompt)?);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        bail!("no secret given on standard input");
    }
    Ok(line)
}

fn keyring(dir: &DataDir, passphrase_file: Option<&Path>) -> Result<Keyring> {
    let files = dir.master_files();
    let master = files.load(|| read_secret(passphrase_file, "Passphrase: ").ok())?;
    let config = crate::config::Config::load(dir.root())?;
    Ok(Keyring::new(master).with_recovery(config.recovery_recipient))
}

fn audit_cli(
    store: &mut crate::store::Store,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<()> {
    let ev = Event {
        action: action.into(),
        target: target.into(),
        details,
        ..app::cli_actor()
    };
    audit::append(store, &[ev])?;
    Ok(())
}

fn user(dir: &DataDir, c: UserCmd) -> Result<i32> {
    let mut store = dir.open_store()?;
    match c {
        UserCmd::Add {
            name,
            role,
            password_file,
            skills,
        } => {
            let name: UserName = name.parse()?;
            let role: Role = role.parse()?;
            let skills = parse_skills(dir, &skills)?;
            let (password, one_time) = match password_file {
                Some(f) => {
                    let p = read_secret(Some(&f), "")?;
                    auth::check_password_policy(&p)?;
                    (p, false)
                }
                None => (auth::generate_password(), true),
            };
            let hash = crate::crypto::hash_password(&password);
            let now = now_rfc3339();
            store.write(|tx| {
                let uid = tx.user_insert(name.as_str(), role, &hash, one_time, &now)?;
                tx.agent_skills_set(uid, &skills)?;
                let shown: Vec<String> = skills.iter().map(|(p, s)| format!("{p}/{s}")).collect();
                let ev = Event {
                    action: "user.created".into(),
                    target: format!("user:{name}"),
                    details: json!({ "role": role, "one_time_password": one_time, "skills": shown }),
                    ..app::cli_actor()
                };
                audit::append_tx(tx, &[ev])
            })?;
            println!("created user {name} with role {role}");
            if one_time {
                println!(
                    "one-time password: {password}  (shown only now; it must be changed at first login)"
                );
            }
        }
        UserCmd::Grant { name, skills } => {
            let skills = parse_skills(dir, &skills)?;
            let shown: Vec<String> = skills.iter().map(|(p, s)| format!("{p}/{s}")).collect();
            store.write(|tx| {
                let user = tx
                    .user_by_name(&name)?
                    .ok_or_else(|| crate::store::StoreError::NotFound(format!("user {name:?}")))?;
                tx.agent_skills_set(user.id, &skills)?;
                let ev = Event {
                    action: "user.skills_set".into(),
                    target: format!("user:{name}"),
                    details: json!({ "skills": shown }),
                    ..app::cli_actor()
                };
                audit::append_tx(tx, &[ev])
            })?;
            println!("{name} works in: {}", shown.join(", "));
        }
        UserCmd::List => {
            let users = store.read(|tx| tx.users())?;
            println!("{:<24} {:<11} {:<9} CREATED", "NAME", "ROLE", "STATUS");
            for u in users {
                let status = if u.disabled {
                    "disabled"
                } else if u.must_change_password {
                    "new"
                } else {
                    "active"
                };
                println!(
                    "{:<24} {:<11} {:<9} {}",
                    u.name, u.role, status, u.created_at
                );
            }
        }
        UserCmd::Disable { name } => {
            store.write(|tx| {
                let user = tx
                    .user_by_name(&name)?
                    .ok_or_else(|| crate::store::StoreError::NotFound(format!("user {name:?}")))?;
                if user.role == Role::Admin && !user.disabled && tx.count_admins()? <= 1 {
                    return Err(crate::store::StoreError::Conflict(
                        "the last enabled admin cannot be disabled".into(),
                    ));
                }
                tx.user_set_disabled(&name, true)?;
                let ev = Event {
                    action: "user.disabled".into(),
                    target: format!("user:{name}"),
                    ..app::cli_actor()
                };
                audit::append_tx(tx, &[ev])
            })?;
            println!("disabled user {name}");
        }
    }
    Ok(0)
}

/// Decrypts one object with the recovery identity: for the day the master key is lost. The read
/// is audited like any other read of session content.
fn key_recover(dir: &DataDir, identity: &Path, object: &str, out: &Path) -> Result<i32> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let id: crate::model::ObjectId = object.parse()?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(identity)
            .with_context(|| format!("cannot read {}", identity.display()))?,
    );
    let ident = crate::age::Identity::parse(&text)?;
    let mut store = dir.open_store()?;
    let blob = store
        .read(|tx| tx.object_recovery(id))?
        .ok_or_else(|| {
            let shredded = store.read(|tx| tx.object_get(id)).ok().flatten().is_some_and(|o| o.state == crate::model::ObjectState::Shredded);
            if shredded {
                anyhow!("object {id} was shredded: its data key, and the recovery wrap of it, no longer exist")
            } else {
                anyhow!("object {id} has no recovery wrap (no recovery key was configured when it was written; `custos key rotate` adds it)")
            }
        })?;
    let dk = crate::age::decrypt(&ident, &blob)?;
    let dk = crate::crypto::SecretKey::from_slice(&dk)
        .ok_or_else(|| anyhow!("the recovered data key has the wrong length"))?;
    let file = std::fs::File::open(dir.archive().path_of(id))?;
    let plain = crate::archive::stream::StreamReader::open(file, &dk, id)
        .and_then(|r| r.without_digests().read_to_end())
        .map_err(|e| anyhow!("object {id}: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    f.write_all(&plain)?;
    f.sync_all()?;
    audit_cli(
        &mut store,
        "archive.object.read_with_recovery_key",
        &format!("object:{id}"),
        json!({ "bytes": plain.len() }),
    )?;
    println!(
        "wrote {} bytes of object {id} to {}",
        plain.len(),
        out.display()
    );
    Ok(0)
}

struct ExportOptions {
    recipients: Vec<String>,
    since_checkpoint: Option<PathBuf>,
    password_file: Option<PathBuf>,
    passphrase_file: Option<PathBuf>,
}

#[allow(clippy::too_many_arguments)]
fn export_cmd(
    dir: &DataDir,
    sessions: Vec<String>,
    external_ref: Option<String>,
    since: Option<String>,
    until: Option<String>,
    out: &Path,
    reason: &str,
    user: &str,
    opts: ExportOptions,
) -> Result<i32> {
    let recipients = opts
        .recipients
        .iter()
        .map(|r| crate::age::Recipient::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    let since_checkpoint = match &opts.since_checkpoint {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let (password_file, passphrase_file) = (
        opts.password_file.as_deref(),
        opts.passphrase_file.as_deref(),
    );
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    if reason.trim().is_empty() {
        bail!("an export needs a stated reason (--reason)");
    }
    let actor = officer(dir, user, password_file)?;
    let mut store = dir.open_store()?;
    let ids = crate::export::select(&mut store, sessions, external_ref, since, until)
        .map_err(|e| anyhow!("{e} (--session, repeatable; --ref; or --since with --until)"))?;
    let selection = format!("{} session(s): {}", ids.len(), ids.join(" "));
    let keys = keyring(dir, passphrase_file)?;
    store.read(|tx| {
        keys.check(tx)
            .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
    })?;
    let signing = store.read(|tx| {
        keys.signing_key(tx)
            .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
    })?;
    let appliance_id = store
        .read(|tx| tx.meta_get("appliance_id"))?
        .unwrap_or_default();
    let encrypted = !recipients.is_empty();
    let req = crate::export::Request {
        sessions: ids.clone(),
        exported_by: actor.actor.clone(),
        reason: reason.to_string(),
        selection,
        recipients,
        since_checkpoint,
    };
    let built = crate::export::build(
        &mut store,
        &dir.archive(),
        &keys,
        &signing,
        &appliance_id,
        &req,
        |_, _| {},
    )?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    f.write_all(&built.tar)?;
    f.sync_all()?;
    // Every export is audited, and counts as a read of each session it holds.
    let events = crate::export::audit_events(&actor, &built, &ids, reason, encrypted);
    audit::append(&mut store, &events)?;
    println!(
        "wrote export {} ({} sessions, {} files, {} bytes) to {}",
        built.export_id,
        ids.len(),
        built.files,
        built.tar.len(),
        out.display()
    );
    Ok(0)
}

fn verify_cmd(bundle: &Path, trust: Option<&Path>, since: Option<&Path>) -> Result<i32> {
    let since = match since {
        Some(p) => Some(
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => None,
    };
    let trust = match trust {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Some(
                crate::export::parse_openssh(text.trim())
                    .ok_or_else(|| anyhow!("{} holds no ssh-ed25519 key", p.display()))?,
            )
        }
        None => None,
    };
    let f =
        std::fs::File::open(bundle).with_context(|| format!("cannot open {}", bundle.display()))?;
    let total = f.metadata().map(|m| m.len()).unwrap_or(0);
    let tty = std::io::stderr().is_terminal();
    let result = crate::export::verify(
        std::io::BufReader::new(f),
        trust.as_ref(),
        since.as_deref(),
        |done| {
            if tty && total > 0 && done % (8 << 20) < 65536 {
                eprint!("\rverifying {}%", done * 100 / total);
            }
        },
    );
    if tty {
        eprintln!();
    }
    match result {
        Ok(r) => {
            println!(
                "bundle verified: export {} from appliance {}",
                r.export_id, r.appliance_id
            );
            println!(
                "{} payload files match manifest-sha256.txt; both signatures verify",
                r.files
            );
            println!(
                "{} audit entries over {} sessions proven in the checkpoint of size {}",
                r.audit_entries, r.sessions, r.checkpoint_size
            );
            println!(
                "signing key SHA-256 {}{}",
                r.key_fingerprint,
                if trust.is_some() {
                    " (the trusted key)"
                } else {
                    " (from the bundle itself: pass --trust to pin it)"
                }
            );
            Ok(0)
        }
        Err(e) => {
            println!("bundle verification FAILED: {e}");
            Ok(1)
        }
    }
}

fn policy_cmd(dir: &DataDir, c: PolicyCmd) -> Result<i32> {
    let policies_dir = |d: Option<PathBuf>| d.unwrap_or_else(|| PathBuf::from("policies"));
    match c {
        PolicyCmd::Check { dir: d } => {
            let d = policies_dir(d);
            match crate::policy::load_dir(&d) {
                Ok(set) => {
                    for p in &set.policies {
                        println!(
                            "ok  {:<28} {:>6} days  {:<6}  {:<10}  ({})",
                            p.name,
                            p.retain_days,
                            format!("{:?}", p.action).to_lowercase(),
                            format!("{:?}", p.mode).to_lowercase(),
                            p.file
                        );
                    }
                    println!(
                        "{} policies valid; set sha256 {}",
                        set.policies.len(),
                        hex::encode(set.hash)
                    );
                    Ok(0)
                }
                Err(errors) => {
                    for e in errors {
                        eprintln!("{e}");
                    }
                    Ok(1)
                }
            }
        }
        PolicyCmd::Install { dir: d, reason } => {
            let d = policies_dir(d);
            let set = match crate::policy::load_dir(&d) {
                Ok(s) => s,
                Err(errors) => {
                    for e in errors {
                        eprintln!("{e}");
                    }
                    bail!(
                        "the policy set in {} is not valid; nothing was installed",
                        d.display()
                    );
                }
            };
            let mut store = dir.open_store()?;
            crate::retention::install(&mut store, &set, app::cli_actor(), reason.as_deref())?;
            println!(
                "installed {} policies; set sha256 {}",
                set.policies.len(),
                hex::encode(set.hash)
            );
            Ok(0)
        }
        PolicyCmd::Approve {
            objects,
            user,
            password_file,
        } => {
            let actor = officer(dir, &user, password_file.as_deref())?;
            let mut store = dir.open_store()?;
            let n = crate::retention::approve_review(&mut store, &dir.archive(), &objects, actor)?;
            println!("{n} objects shredded after review");
            Ok(0)
        }
        PolicyCmd::Plan { at, all } => {
            let at = match at {
                Some(a) => crate::model::parse_time(&a)?,
                None => time::OffsetDateTime::now_utc(),
            };
            let mut store = dir.open_store()?;
            let rows = crate::retention::plan(&mut store, at, None)?;
            println!(
                "{:<32} {:<11} {:<31} {:<24} {:<26} STATUS",
                "OBJECT", "CLASS", "SESSION", "EXPIRES", "POLICY"
            );
            let mut due = 0;
            for r in &rows {
                let status = if !r.holds.is_empty() {
                    format!(
                        "held ({})",
                        r.holds
                            .iter()
                            .map(|h| format!("hold {h}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else if r.due && r.action == Some(crate::policy::Action::Review) {
                    "due: review".to_string()
                } else if r.due {
                    "due: shred".to_string()
                } else {
                    "kept".to_string()
                };
                if r.due {
                    due += 1;
                }
                if r.due || !r.holds.is_empty() || all {
                    println!(
                        "{:<32} {:<11} {:<31} {:<24} {:<26} {status}",
                        r.object,
                        r.class,
                        r.session.as_deref().unwrap_or("-"),
                        r.expires_at.as_deref().unwrap_or("-"),
                        r.policy.as_deref().unwrap_or("(none: kept)")
                    );
                }
            }
            println!(
                "{due} of {} objects due by {}",
                rows.len(),
                crate::model::format_rfc3339(at)
            );
            Ok(0)
        }
    }
}

/// Confirms who a compliance officer is, by their password.
fn officer(dir: &DataDir, name: &str, password_file: Option<&Path>) -> Result<Event> {
    let mut store = dir.open_store()?;
    let user = store.read(|tx| tx.user_by_name(name))?;
    let password = read_secret(password_file, &format!("Password for {name}: "))?;
    let user = match auth::check_login(user, &password) {
        Ok(u) => u,
        Err(_) => {
            let ev = Event {
                action: "auth.login".into(),
                target: format!("user:{name}"),
                details: json!({ "reason": "bad credentials", "via": "cli" }),
                ..app::cli_actor()
            };
            audit::append(&mut store, &[ev.outcome(crate::audit::Outcome::Denied)])?;
            bail!("unknown user or wrong password");
        }
    };
    if user.role != Role::Compliance {
        bail!("{name} is not a compliance officer");
    }
    if user.must_change_password {
        bail!("{name} still has a one-time password; log in once and change it first");
    }
    Ok(Event {
        actor: user.name,
        role: "compliance".into(),
        ..app::cli_actor()
    })
}

fn hold_cmd(dir: &DataDir, c: HoldCmd) -> Result<i32> {
    use crate::retention::HoldScope;
    match c {
        HoldCmd::Add {
            session,
            external_ref,
            email,
            portal,
            from,
            to,
            reason,
            case,
            user,
            password_file,
        } => {
            let scope = match (session, external_ref, email, portal, from, to) {
                (Some(s), None, None, None, None, None) => HoldScope::Session(s),
                (None, Some(r), None, None, None, None) => HoldScope::Ref(r),
                (None, None, Some(e), None, None, None) => HoldScope::Email(e),
                (None, None, None, Some(p), None, None) => HoldScope::Portal(p),
                (None, None, None, None, Some(f), Some(t)) => HoldScope::Range(
                    crate::model::parse_time(&f)?,
                    crate::model::parse_range_end(&t)?,
                ),
                _ => bail!(
                    "give exactly one of --session, --ref, --email, --portal, or --from with --to"
                ),
            };
            let actor = officer(dir, &user, password_file.as_deref())?;
            let mut store = dir.open_store()?;
            let id = crate::retention::place_hold(&mut store, scope, &reason, &case, actor)?;
            println!("hold {id} placed");
        }
        HoldCmd::Release {
            id,
            reason,
            user,
            password_file,
        } => {
            let actor = officer(dir, &user, password_file.as_deref())?;
            let mut store = dir.open_store()?;
            crate::retention::release_hold(&mut store, id, &reason, actor)?;
            println!("hold {id} released");
        }
        HoldCmd::List { all } => {
            let mut store = dir.open_store()?;
            let holds = store.read(|tx| tx.holds(!all))?;
            println!(
                "{:<4} {:<8} {:<36} {:<14} {:<14} {:<24} STATUS",
                "ID", "SCOPE", "VALUE", "CASE", "PLACED BY", "PLACED AT"
            );
            for h in holds {
                let status = match (&h.released_by, &h.released_at) {
                    (Some(b), Some(t)) => format!("released by {b} at {t}"),
                    _ => "open".into(),
                };
                println!(
                    "{:<4} {:<8} {:<36} {:<14} {:<14} {:<24} {status}",
                    h.id, h.scope, h.value, h.case_id, h.placed_by, h.placed_at
                );
            }
        }
    }
    Ok(0)
}

/// Parses PORTAL:SKILL entries against the configured portals.
fn parse_skills(dir: &DataDir, raw: &[String]) -> Result<Vec<(String, String)>> {
    let config = crate::config::Config::load(dir.root())?;
    raw.iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (p, k) = s
                .split_once(':')
                .ok_or_else(|| anyhow!("{s:?} is not PORTAL:SKILL"))?;
            if !config.portal(p).is_some_and(|pp| pp.has_skill(k)) {
                bail!("there is no skill {k:?} in a portal {p:?} (see custos.toml)");
            }
            Ok((p.to_string(), k.to_string()))
        })
        .collect()
}

fn code_new(
    dir: &DataDir,
    agent: &str,
    external_ref: Option<String>,
    ttl: Option<i64>,
) -> Result<i32> {
    let config = crate::config::Config::load(dir.root())?;
    let ttl = ttl.unwrap_or(config.code_ttl_s);
    if external_ref
        .as_ref()
        .is_some_and(|r| r.is_empty() || r.chars().count() > 100 || r.chars().any(char::is_control))
    {
        bail!("--ref must be 1-100 printable characters");
    }
    if !(60..=3600).contains(&ttl) {
        bail!("--ttl must be between 60 and 3600 seconds");
    }
    let mut store = dir.open_store()?;
    let now = crate::model::unix_now();
    let code = store.write(|tx| {
        let user = tx
            .user_by_name(agent)?
            .ok_or_else(|| crate::store::StoreError::NotFound(format!("user {agent:?}")))?;
        if user.disabled || !matches!(user.role, Role::Agent | Role::Admin) {
            return Err(crate::store::StoreError::Conflict(format!(
                "{agent} is not an active agent"
            )));
        }
        tx.codes_purge(now)?;
        for _ in 0..20 {
            let c = crate::session::new_code();
            if tx.code_insert(&c, user.id, external_ref.as_deref(), now, now + ttl)? {
                let ev = Event {
                    action: "code.issued".into(),
                    target: format!("code:{}", &c[..3]),
                    details: json!({ "agent": agent, "ref": external_ref, "ttl_s": ttl }),
                    ..app::cli_actor()
                };
                audit::append_tx(tx, &[ev])?;
                return Ok(c);
            }
        }
        Err(crate::store::StoreError::Conflict(
            "no free code found; try again".into(),
        ))
    })?;
    println!("{}", crate::session::format_code(&code));
    Ok(0)
}

fn load_verifier(
    dir: &DataDir,
    store: &mut crate::store::Store,
    key: Option<&Path>,
) -> Result<NoteVerifier> {
    let path = key
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.vkey_path());
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the verifier key {}", path.display()))?;
    let v = NoteVerifier::from_vkey(text.trim()).with_context(|| format!("{}", path.display()))?;
    if key.is_none() {
        let stored = store
            .read(|tx| Ok(audit::verifier(tx)))?
            .map_err(|e| anyhow!("the database's verifier key: {e}"))?;
        if stored != v {
            bail!(
                "the verifier key in the database differs from {}: the database or the key file was replaced",
                path.display()
            );
        }
    }
    Ok(v)
}

fn audit_cmd(dir: &DataDir, c: AuditCmd) -> Result<i32> {
    let mut store = dir.open_store()?;
    match c {
        AuditCmd::Verify { key } => {
            let v = load_verifier(dir, &mut store, key.as_deref())?;
            let tty = std::io::stderr().is_terminal();
            let report = audit::verify(&mut store, &v, |done, total| {
                if tty && total > 0 {
                    eprint!(
                        "\rverifying {done}/{total} entries ({}%)",
                        done * 100 / total
                    );
                }
            })?;
            if tty {
                eprintln!();
            }
            match report {
                Ok(r) => {
                    println!(
                        "audit log intact: {} entries, {} checkpoints verified",
                        r.entries, r.checkpoints
                    );
                    if let Some(cp) = &r.latest {
                        println!(
                            "latest checkpoint: size {}, root {}, signed by {}",
                            cp.size,
                            hex::encode(cp.root),
                            v.to_vkey()
                        );
                    }
                    if r.unsigned_tail > 0 {
                        println!(
                            "{} newer entries are not yet covered by a checkpoint (one is written within seconds while the server runs)",
                            r.unsigned_tail
                        );
                    }
                    Ok(0)
                }
                Err(problem) => {
                    println!("audit log verification FAILED: {problem}");
                    Ok(1)
                }
            }
        }
        AuditCmd::Show { last, from, json } => {
            let rows = store.read(|tx| match from {
                None => tx.audit_tail(last),
                Some(f) => {
                    let mut out = Vec::new();
                    tx.audit_scan(f, |r| {
                        out.push(r);
                        Ok(out.len() < last as usize)
                    })?;
                    Ok(out)
                }
            })?;
            let mut out = std::io::stdout().lock();
            for r in rows {
                if json {
                    out.write_all(&r.entry)?;
                    writeln!(out)?;
                    continue;
                }
                match audit::decode(&r) {
                    Ok(e) => writeln!(
                        out,
                        "#{:<6} {} {:<16} {:<24} {:<28} {:<8} {} {}",
                        e.seq,
                        e.time,
                        format!("{}({})", e.actor, e.role),
                        e.action,
                        e.target,
                        format!("{:?}", e.outcome).to_lowercase(),
                        e.source,
                        if e.details == json!({}) {
                            String::new()
                        } else {
                            e.details.to_string()
                        }
                    )?,
                    Err(problem) => writeln!(out, "#{:<6} UNREADABLE: {problem}", r.seq)?,
                }
            }
            Ok(0)
        }
        AuditCmd::Checkpoint => {
            let latest = store.read(|tx| tx.checkpoint_latest())?;
            let Some((_, note)) = latest else {
                bail!("no checkpoint has been written yet")
            };
            print!("{note}");
            let vkey = std::fs::read_to_string(dir.vkey_path()).unwrap_or_default();
            eprintln!("verifier key: {}", vkey.trim());
            Ok(0)
        }
    }
}

fn archive_verify(dir: &DataDir, passphrase_file: Option<&Path>) -> Result<i32> {
    let mut store = dir.open_store()?;
    let keys = keyring(dir, passphrase_file)?;
    store.read(|tx| {
        keys.check(tx)
            .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
    })?;
    let archive: Archive = dir.archive();
    let checks = archive.verify(&mut store, &keys)?;
    let bad: Vec<_> = checks.iter().filter(|c| c.problem.is_some()).collect();
    for c in &bad {
        println!(
            "DAMAGED {} ({}): {}",
            c.id,
            c.state,
            c.problem.as_deref().unwrap_or("")
        );
    }
    println!(
        "{} objects checked, {} intact, {} with problems",
        checks.len(),
        checks.len() - bad.len(),
        bad.len()
    );
    audit_cli(
        &mut store,
        "archive.verified",
        "archive",
        json!({ "objects": checks.len(), "problems": bad.len() }),
    )?;
    Ok(if bad.is_empty() { 0 } else { 1 })
}

/// The running appliance: elsewhere over pinned HTTPS, or this data directory's Unix socket.
fn endpoint(
    dir: &DataDir,
    server: Option<String>,
    fingerprint: Option<String>,
) -> Result<Endpoint> {
    Ok(match (server, fingerprint) {
        (Some(addr), Some(fp)) => {
            let fp = crate::tls::parse_fingerprint(&fp).context(
                "--fingerprint is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
            )?;
            Endpoint::Https {
                addr,
                tls: crate::tls::pinned_client_config(fp)?,
            }
        }
        _ => {
            let sock = dir.socket_path();
            anyhow::ensure!(
                sock.exists(),
                "no appliance is running on {} (start `custos serve`, or give --server)",
                dir.root().display()
            );
            Endpoint::Unix(sock)
        }
    })
}

fn sync_cmd(
    ep: Endpoint,
    token_file: Option<&Path>,
    to: &str,
    opts: crate::sync::Options,
) -> Result<i32> {
    let token = match token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var("CUSTOS_TOKEN")
            .context("give --token-file FILE or set CUSTOS_TOKEN to an API token")?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let mut target = crate::sync::Target::open(to).await?;
        crate::sync::run(&ep, &token, &mut target, &opts, |r| {
            eprintln!("synced {} sessions in {} pages", r.sessions, r.pages)
        })
        .await
    })?;
    println!(
        "up to date: {} sessions written in {} pages",
        report.sessions, report.pages
    );
    Ok(0)
}

fn key_rotate(dir: &DataDir, passphrase_file: Option<&Path>) -> Result<i32> {
    let mut store = dir.open_store()?;
    let keys = keyring(dir, passphrase_file)?;
    store.read(|tx| {
        keys.check(tx)
            .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
    })?;
    let r = keys.rotate(&mut store, &now_rfc3339())?;
    audit_cli(
        &mut store,
        "keys.rotated",
        "keys",
        json!({ "new_epoch": r.new_epoch, "rewrapped": r.rewrapped, "retired_epochs": r.retired }),
    )?;
    println!(
        "key epoch {} is current: {} data keys re-wrapped, {} old epochs retired",
        r.new_epoch, r.rewrapped, r.retired
    );
    Ok(0)
}

/// Talks to the running server over its socket, if one is running.
fn local_call(
    dir: &DataDir,
    path: &str,
    body: serde_json::Value,
) -> Result<Option<crate::client::Response>> {
    let sock = dir.socket_path();
    if !sock.exists() {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(Endpoint::Unix(sock).request(Method::POST, path, None, Some(&body))) {
        Ok(r) => Ok(Some(r)),
        Err(crate::client::ClientError::Connect { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn seal(dir: &DataDir, passphrase_file: Option<&Path>) -> Result<i32> {
    let files = dir.master_files();
    let passphrase = match files.mode()? {
        UnsealMode::KeyFile => {
            let p = read_secret(passphrase_file, "New passphrase (12 characters or more): ")?;
            if passphrase_file.is_none()
                && std::io::stdin().is_terminal()
                && read_secret(None, "Again: ")? != p
            {
                bail!("the passphrases differ");
            }
            Some(p)
        }
        UnsealMode::Passphrase => None,
    };
    match local_call(
        dir,
        "/api/v1/system/seal",
        json!({ "passphrase": passphrase }),
    )? {
        Some(r) if r.status == 200 => println!(
            "sealed: the server forgot its keys and answers only /healthz until `custos unseal`"
        ),
        Some(r) => bail!("the server refused: {}", r.error_message()),
        None => {
            let Some(p) = passphrase else {
                println!("already sealed: the master key is protected by a passphrase");
                return Ok(0);
            };
            let master = files.load_keyfile()?;
            files.seal(&master, &p)?;
            let mut store = dir.open_store()?;
            audit_cli(
                &mut store,
                "keys.sealed",
                "appliance",
                json!({ "converted_key_file": true }),
            )?;
            println!(
                "sealed: the master key is now protected by the passphrase; `custos serve` will wait for `custos unseal`"
            );
        }
    }
    Ok(0)
}

fn unseal(dir: &DataDir, passphrase_file: Option<&Path>) -> Result<i32> {
    if dir.master_files().mode()? == UnsealMode::KeyFile {
        println!("not sealed: the master key is kept in a key file and the server unseals itself");
        return Ok(0);
    }
    let p = read_secret(passphrase_file, "Passphrase: ")?;
    match local_call(dir, "/api/v1/system/unseal", json!({ "passphrase": p }))? {
        Some(r) if r.status == 200 => {
            println!("unsealed");
            Ok(0)
        }
        Some(r) => {
            eprintln!("unseal refused: {}", r.error_message());
            Ok(1)
        }
        None => {
            dir.master_files().load_sealed(&p)?;
            println!(
                "the passphrase is correct; no server is running (start `custos serve`, then run `custos unseal`)"
            );
            Ok(0)
        }
    }
}
