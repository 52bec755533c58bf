//! `custos-client`: the end user's side of remote view and control (docs/client-guide.md).

use clap::Parser;
use custos::remote::{Consent, client};

/// Share this screen with a Custos support agent, with your consent for each capability.
#[derive(Parser)]
#[command(name = "custos-client", version)]
struct Args {
    /// The appliance, as host:port or https://host:port (not needed with an invite URL).
    #[arg(long)]
    server: Option<String>,
    /// The connection code the agent gave you.
    #[arg(long, conflicts_with = "invite")]
    code: Option<String>,
    /// The invite link the agent sent you (or its code).
    #[arg(long)]
    invite: Option<String>,
    /// SHA-256 fingerprint of the appliance's certificate (hex, colons allowed), as the agent
    /// or your administrator gave it to you.
    #[arg(long, env = "CUSTOS_FINGERPRINT", required_unless_present = "resume")]
    fingerprint: Option<String>,
    /// Your name, shown to the agent.
    #[arg(long, default_value = "customer")]
    name: String,
    /// Capabilities you allow up front, comma-separated: view, control, files, diagnostics,
    /// reboot. Anything else is asked for on this terminal when the agent needs it.
    #[arg(long, default_value = "")]
    allow: String,
    /// Never ask: refuse whatever --allow did not grant.
    #[arg(long)]
    no_ask: bool,
    /// The X display to share (default: $DISPLAY).
    #[arg(long)]
    display: Option<String>,
    /// The most frames a second to send; fewer are sent when the link is slower.
    #[arg(long, default_value_t = 15)]
    max_fps: u32,
    /// Rejoin the session after a restart, from the resume file written before it (the
    /// desktop's autostart entry runs this by itself).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["code", "invite"])]
    resume: Option<String>,
    /// Where to keep the resume token across a restart (default
    /// $XDG_STATE_HOME/custos/resume.json).
    #[arg(long)]
    resume_file: Option<std::path::PathBuf>,
    /// The command that restarts this computer when the agent asks and you allow it.
    #[arg(long, default_value = "systemctl reboot")]
    reboot_command: String,
    /// Where files from the agent are saved (default ~/Downloads/Custos).
    #[arg(long)]
    download_dir: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CUSTOS_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("custos-client: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> anyhow::Result<()> {
    let resume_file = a
        .resume_file
        .clone()
        .or_else(|| a.resume.as_ref().filter(|f| !f.is_empty()).map(Into::into))
        .unwrap_or_else(client::default_resume_file);
    let allow = Consent::parse_list(&a.allow).map_err(anyhow::Error::msg)?;
    let (addr, fingerprint, join, allow, display) = if a.resume.is_some() {
        let r = client::ResumeFile::load(&resume_file)?;
        let fp = custos::tls::parse_fingerprint(&r.fingerprint)
            .ok_or_else(|| anyhow::anyhow!("the resume file's fingerprint is damaged"))?;
        // What the user allowed before the restart still holds for this session.
        let consent = r.consent.or(allow);
        let join = client::Join::Resume {
            session: r.session,
            token: r.resume_token,
        };
        (r.addr, fp, join, consent, a.display.clone().or(r.display))
    } else {
        let (invite_host, code) = match (&a.code, &a.invite) {
            (Some(c), None) => (
                None,
                custos::session::normalize_code(c)
                    .ok_or_else(|| anyhow::anyhow!("{c:?} is not a 9-digit connection code"))?,
            ),
            (None, Some(i)) => client::parse_invite(i).map_err(anyhow::Error::msg)?,
            _ => anyhow::bail!("give --code CODE, --invite URL or --resume"),
        };
        let addr = match (a.server.as_deref(), invite_host) {
            (Some(s), _) => s
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string(),
            (None, Some(h)) => h,
            (None, None) => anyhow::bail!("give --server HOST:PORT (or an invite URL)"),
        };
        let fp = a.fingerprint.as_deref().unwrap_or_default();
        let fingerprint = custos::tls::parse_fingerprint(fp).ok_or_else(|| {
            anyhow::anyhow!(
                "--fingerprint must be 64 hex digits (the SHA-256 the appliance prints)"
            )
        })?;
        (
            addr,
            fingerprint,
            client::Join::Code(code),
            allow,
            a.display.clone(),
        )
    };
    let platform = custos::remote::x11::X11::open(display.as_deref())?;
    if !platform.uses_shm() {
        eprintln!("custos-client: MIT-SHM is not available; capture is slower");
    }
    let reboot_command: Vec<String> = a
        .reboot_command
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let opts = client::Options {
        addr,
        fingerprint,
        join,
        name: a.name,
        allow,
        ask: !a.no_ask,
        display,
        max_fps: a.max_fps,
        resume_file,
        reboot_command,
        download_dir: a.download_dir.unwrap_or_else(client::default_download_dir),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(client::run(opts, Box::new(platform)))
}
