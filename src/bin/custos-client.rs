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
    #[arg(long, env = "CUSTOS_FINGERPRINT")]
    fingerprint: String,
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
    let (invite_host, code) = match (&a.code, &a.invite) {
        (Some(c), None) => (
            None,
            custos::session::normalize_code(c)
                .ok_or_else(|| anyhow::anyhow!("{c:?} is not a 9-digit connection code"))?,
        ),
        (None, Some(i)) => client::parse_invite(i).map_err(anyhow::Error::msg)?,
        _ => anyhow::bail!("give --code CODE or --invite URL"),
    };
    let addr = match (a.server.as_deref(), invite_host) {
        (Some(s), _) => s
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string(),
        (None, Some(h)) => h,
        (None, None) => anyhow::bail!("give --server HOST:PORT (or an invite URL)"),
    };
    let fingerprint = custos::tls::parse_fingerprint(&a.fingerprint).ok_or_else(|| {
        anyhow::anyhow!("--fingerprint must be 64 hex digits (the SHA-256 the appliance prints)")
    })?;
    let allow = Consent::parse_list(&a.allow).map_err(anyhow::Error::msg)?;
    let platform = custos::remote::x11::X11::open(a.display.as_deref())?;
    if !platform.uses_shm() {
        eprintln!("custos-client: MIT-SHM is not available; capture is slower");
    }
    let opts = client::Options {
        addr,
        fingerprint,
        code,
        name: a.name,
        allow,
        ask: !a.no_ask,
        display: a.display,
        max_fps: a.max_fps,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(client::run(opts, Box::new(platform)))
}
