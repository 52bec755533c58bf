//! The end user's native client: joins a session with a connection code, asks the user's
//! consent, and while an agent views, streams the screen's changed tiles over the screen socket
//! (docs/formats/recording.md); injects the agent's input only while the user allows control.
//!
//! Threads: the desktop (capture, encode, inject) runs on a thread of its own, because X11
//! calls block; the socket and the user's terminal run on the async side. The two are joined by
//! a bounded channel of encoded messages: while the link is slow the channel stays full, the
//! desktop thread waits before capturing again, and the frame rate falls to what the link
//! carries.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::encode::Encoder;
use super::platform::{Indicator, Platform};
use super::{Annotation, Consent, Input, MAX_MESSAGE};
use crate::client::{Endpoint, percent_encode};

/// A keyframe at most this often while the screen changes, so that a recording can be entered
/// near any moment.
const KEYFRAME_EVERY: Duration = Duration::from_secs(10);
/// Encoded messages waiting for the socket; a full queue holds the next capture back.
const OUT_QUEUE: usize = 4;

pub struct Options {
    /// `host:port` of the appliance.
    pub addr: String,
    pub fingerprint: [u8; 32],
    /// How to join: a connection code, or the resume token saved before a restart.
    pub join: Join,
    pub name: String,
    /// Capabilities granted up front (`--allow`); the rest are asked for when needed.
    pub allow: Consent,
    /// Ask on the terminal for what was not granted up front; without it, refuse.
    pub ask: bool,
    pub display: Option<String>,
    pub max_fps: u32,
    /// Where the resume token is kept across a restart of the machine.
    pub resume_file: PathBuf,
    /// The command that restarts the machine (default `systemctl reboot`).
    pub reboot_command: Vec<String>,
    /// Where files from the agent are saved.
    pub download_dir: PathBuf,
}

/// The default folder for files from the agent: `~/Downloads/Custos`.
pub fn default_download_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
        .join("Downloads/Custos")
}

pub enum Join {
    Code(String),
    Resume { session: String, token: String },
}

/// What the client keeps across a restart of the machine (mode 0600, deleted once used).
#[derive(Serialize, Deserialize)]
pub struct ResumeFile {
    pub addr: String,
    pub fingerprint: String,
    pub session: String,
    pub resume_token: String,
    pub consent: Consent,
    pub display: Option<String>,
}

impl ResumeFile {
    pub fn load(path: &Path) -> anyhow::Result<ResumeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the resume file {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("the resume file {} is damaged", path.display()))
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(serde_json::to_string(self)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// The default place for the resume file: `$XDG_STATE_HOME/custos/resume.json`.
pub fn default_resume_file() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("custos/resume.json")
}

/// The desktop's autostart entry that runs the client again after the restart (XDG autostart).
fn autostart_entry() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("autostart/custos-client-resume.desktop"))
}

fn arrange_restart(resume: &ResumeFile, path: &Path) -> anyhow::Result<()> {
    resume.save(path)?;
    if let Some(entry) = autostart_entry() {
        let exe = std::env::current_exe()?;
        if let Some(dir) = entry.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(
            &entry,
            format!(
                "[Desktop Entry]\nType=Application\nName=Custos support (resume)\nExec=\"{}\" --resume \"{}\"\nX-GNOME-Autostart-enabled=true\n",
                exe.display(),
                path.display()
            ),
        )?;
    }
    Ok(())
}

fn forget_restart(path: &Path) {
    let _ = std::fs::remove_file(path);
    if let Some(entry) = autostart_entry() {
        let _ = std::fs::remove_file(entry);
    }
}

/// Parses `--invite`: an invite URL (`https://host:port/code?code=123-456-789`) or a bare code.
pub fn parse_invite(s: &str) -> Result<(Option<String>, String), String> {
    let Some(rest) = s.strip_prefix("https://") else {
        return crate::session::normalize_code(s)
            .map(|c| (None, c))
            .ok_or_else(|| format!("{s:?} is neither an invite URL nor a connection code"));
    };
    let (host, query) = rest
        .split_once("/code?")
        .ok_or_else(|| format!("{s:?} is not an invite URL (https://HOST/code?code=CODE)"))?;
    let code = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("code="))
        .and_then(crate::session::normalize_code)
        .ok_or_else(|| format!("the invite URL {s:?} carries no valid code"))?;
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:443")
    };
    Ok((Some(host), code))
}

/// Commands from the socket side to the desktop thread.
enum Desk {
    /// Start (true) or stop capturing.
    Share(bool),
    Keyframe,
    Input(Input),
    Annotate(Annotation),
    Indicate(Indicator),
    Stop,
}

/// What the user sees on the terminal.
fn say(s: &str) {
    eprintln!("custos-client: {s}");
}

fn yes(line: &str) -> bool {
    matches!(line.trim(), "y" | "Y" | "yes")
}

pub async fn run(opts: Options, platform: Box<dyn Platform>) -> anyhow::Result<()> {
    let tls = crate::tls::pinned_client_config(opts.fingerprint)?;
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut consent = opts.allow;
    let (sid, auth_query) = match &opts.join {
        Join::Code(code) => {
            let ep = Endpoint::Https {
                addr: opts.addr.clone(),
                tls: tls.clone(),
            };
            let res = ep
                .request(
                    hyper::Method::POST,
                    &format!("/api/v1/codes/{}/redeem", percent_encode(code)),
                    None,
                    Some(&json!({ "name": opts.name })),
                )
                .await?;
            if res.status != 201 {
                bail!("the code was not accepted: {}", res.error_message());
            }
            let v = res.json()?;
            let sid = v["session_id"].as_str().context("no session id")?;
            let token = v["customer_token"].as_str().context("no customer token")?;
            say(&format!("joined session {sid}"));
            if !consent.view && opts.ask {
                say("the support agent asks to see your screen. Allow? [y/N]");
                consent.view = matches!(stdin.next_line().await, Ok(Some(l)) if yes(&l));
            }
            (
                sid.to_string(),
                format!("customer_token={}", percent_encode(token)),
            )
        }
        Join::Resume { session, token } => {
            say(&format!("rejoining session {session} after the restart"));
            (
                session.clone(),
                format!("resume_token={}", percent_encode(token)),
            )
        }
    };
    if !consent.view {
        say(
            "you did not allow the agent to see your screen; it stays private (type 'allow view' to share it)",
        );
    }

    let host = opts
        .addr
        .rsplit_once(':')
        .map_or(opts.addr.as_str(), |(h, _)| h);
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
    let tcp = TcpStream::connect(&opts.addr)
        .await
        .with_context(|| format!("cannot connect to {}", opts.addr))?;
    let stream = TlsConnector::from(tls).connect(name, tcp).await?;
    let url = format!(
        "wss://{}/api/v1/sessions/{sid}/screen?{auth_query}",
        opts.addr
    );
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE + 1024))
        .max_frame_size(Some(MAX_MESSAGE + 1024));
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context(
            "opening the screen socket (a resume token works once, while the session lasts)",
        )?;
    if matches!(opts.join, Join::Resume { .. }) {
        forget_restart(&opts.resume_file);
    }
    let (mut sink, mut stream) = ws.split();

    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    let (desk_tx, desk_rx) = std_mpsc::channel::<Desk>();
    let max_fps = opts.max_fps.clamp(1, 60);
    let desk = std::thread::spawn(move || desktop(platform, desk_rx, out_tx, max_fps));

    sink.send(consent_msg(&consent)).await?;
    let mut stdin_open = true;
    let mut pending_control: Option<String> = None;
    let mut pending_reboot = false;
    let mut pending_diagnostics = false;
    let mut resume_token = String::new();
    let files = Files {
        ep: Endpoint::Https {
            addr: opts.addr.clone(),
            tls: crate::tls::pinned_client_config(opts.fingerprint)?,
        },
        sid: sid.clone(),
        dir: opts.download_dir.clone(),
    };
    let mut offered: Vec<Value> = Vec::new();
    let mut viewer = false;
    let mut control = false;
    say(
        "type 'stop control', 'stop view', 'stop files', 'allow view', 'allow control', 'allow files', 'send FILE' or 'quit' at any moment",
    );
    let result: anyhow::Result<()> = loop {
        tokio::select! {
            m = stream.next() => {
                let text = match m {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(f))) => break match f {
                        Some(f) if f.code != tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal =>
                            Err(anyhow!("the appliance closed the connection: {}", f.reason)),
                        _ => Ok(()),
                    },
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Err(anyhow!("connection lost: {e}")),
                    None => break Ok(()),
                };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                match v["type"].as_str().unwrap_or("") {
                    "hello" => resume_token = v["resume_token"].as_str().unwrap_or("").to_string(),
                    "viewer" => {
                        viewer = v["on"].as_bool().unwrap_or(false);
                        let _ = desk_tx.send(Desk::Share(viewer && consent.view));
                        indicator(&desk_tx, viewer && consent.view, control);
                    }
                    "keyframe" => { let _ = desk_tx.send(Desk::Keyframe); }
                    "control_request" => {
                        let by = v["by"].as_str().unwrap_or("the agent").to_string();
                        if consent.control {
                            sink.send(consent_msg(&consent)).await?;
                        } else if opts.ask && stdin_open {
                            say(&format!("{by} asks to control your mouse and keyboard. Allow? [y/N]"));
                            pending_control = Some(by);
                        } else {
                            say(&format!("{by} asked to control your screen; refused (not allowed at start)"));
                        }
                    }
                    "reboot_request" => {
                        let by = v["by"].as_str().unwrap_or("the agent");
                        if consent.reboot {
                            break restart(&opts, &sid, &resume_token, consent, &mut sink).await;
                        } else if opts.ask && stdin_open {
                            say(&format!("{by} asks to restart this computer; Custos reconnects by itself afterwards. Allow? [y/N]"));
                            pending_reboot = true;
                        } else {
                            say(&format!("{by} asked to restart this computer; refused (not allowed at start)"));
                        }
                    }
                    "diagnostics_request" => {
                        let by = v["by"].as_str().unwrap_or("the agent");
                        if consent.diagnostics {
                            send_diagnostics(&mut sink).await?;
                        } else if opts.ask && stdin_open {
                            say(&format!("{by} asks for details about this computer (system, hardware, disks, network, programs running and installed). Send them? [y/N]"));
                            pending_diagnostics = true;
                        } else {
                            say(&format!("{by} asked for details about this computer; refused (not allowed at start)"));
                        }
                    }
                    "diagnostics_received" => say("the details about this computer were sent"),
                    "file" => {
                        let name = v["name"].as_str().unwrap_or("a file").to_string();
                        if consent.files {
                            files.receive(&resume_token, &v).await;
                        } else {
                            say(&format!("the agent sent {name:?}; type 'allow files' to receive it"));
                            offered.push(v);
                        }
                    }
                    "annotate" => {
                        if consent.view
                            && let Ok(a) = Annotation::parse(v, u16::MAX, u16::MAX)
                        {
                            let _ = desk_tx.send(Desk::Annotate(a));
                        }
                    }
                    "control" => {
                        control = v["on"].as_bool().unwrap_or(false);
                        indicator(&desk_tx, viewer && consent.view, control);
                    }
                    "input" => {
                        // The relay sends input only while control is granted; the client
                        // checks again, so a revoke takes effect here at once.
                        if consent.control && control
                            && let Ok(i) = Input::parse(v, u16::MAX, u16::MAX)
                        {
                            let _ = desk_tx.send(Desk::Input(i));
                        }
                    }
                    "error" => say(&format!("the appliance refused: {}", v["message"].as_str().unwrap_or(""))),
                    _ => {}
                }
            }
            out = out_rx.recv() => match out {
                Some(m) => sink.send(WsMessage::Binary(m.into())).await?,
                None => break Err(anyhow!("the desktop thread stopped")),
            },
            line = stdin.next_line(), if stdin_open => {
                let line_raw = match line {
                    Ok(Some(l)) => l,
                    _ => { stdin_open = false; continue; }
                };
                let line = line_raw.trim().to_ascii_lowercase();
                let before = consent;
                if std::mem::take(&mut pending_reboot) {
                    if yes(&line) {
                        consent.reboot = true;
                        sink.send(consent_msg(&consent)).await?;
                        break restart(&opts, &sid, &resume_token, consent, &mut sink).await;
                    }
                    say("restart refused");
                } else if std::mem::take(&mut pending_diagnostics) {
                    if yes(&line) {
                        consent.diagnostics = true;
                        sink.send(consent_msg(&consent)).await?;
                        send_diagnostics(&mut sink).await?;
                    } else {
                        say("diagnostics refused");
                    }
                } else if pending_control.take().is_some() {
                    consent.control = yes(&line);
                    say(if consent.control { "control allowed" } else { "control refused" });
                } else {
                    match line.as_str() {
                        "stop control" => consent.control = false,
                        "stop view" => { consent.view = false; consent.control = false; }
                        "allow view" => consent.view = true,
                        "allow control" => consent.control = true,
                        "allow files" => {
                            consent.files = true;
                            for f in std::mem::take(&mut offered) {
                                files.receive(&resume_token, &f).await;
                            }
                        }
                        "stop files" => consent.files = false,
                        l if l.starts_with("send ") => {
                            if consent.files {
                                files.send(&resume_token, line_raw.trim()[5..].trim()).await;
                            } else {
                                say("type 'allow files' first to exchange files with the agent");
                            }
                        }
                        "quit" => break Ok(()),
                        "" => {}
                        other => say(&format!("unknown command {other:?}")),
                    }
                }
                if consent != before {
                    sink.send(consent_msg(&consent)).await?;
                    let _ = desk_tx.send(Desk::Share(viewer && consent.view));
                    if !consent.control { control = false; }
                    indicator(&desk_tx, viewer && consent.view, control);
                }
            }
        }
    };
    let _ = desk_tx.send(Desk::Stop);
    let _ = sink.send(WsMessage::Close(None)).await;
    let _ = tokio::task::spawn_blocking(move || desk.join()).await;
    result
}

/// Files between the user and the agent, over HTTPS with the client's current resume token.
struct Files {
    ep: Endpoint,
    sid: String,
    dir: PathBuf,
}

impl Files {
    /// Downloads a file the agent sent, checks its SHA-256 and saves it without overwriting.
    async fn receive(&self, token: &str, f: &Value) {
        let (Some(id), Some(name)) = (f["file_id"].as_str(), f["name"].as_str()) else {
            return;
        };
        let path = format!("/api/v1/sessions/{}/files/{}", self.sid, percent_encode(id));
        let auth = format!("Resume {token}");
        let res = match self
            .ep
            .request_raw(hyper::Method::GET, &path, Some(&auth), None)
            .await
        {
            Ok(r) if r.status == 200 => r,
            Ok(r) => return say(&format!("could not fetch {name:?}: {}", r.error_message())),
            Err(e) => return say(&format!("could not fetch {name:?}: {e}")),
        };
        if f["sha256"].as_str() != Some(hex::encode(crate::crypto::sha256(&res.body)).as_str()) {
            return say(&format!(
                "{name:?} arrived damaged (its SHA-256 differs); not saved"
            ));
        }
        let base = crate::export::safe_name(name);
        let _ = std::fs::create_dir_all(&self.dir);
        let mut target = self.dir.join(&base);
        let mut n = 1;
        while target.exists() {
            n += 1;
            target = self.dir.join(format!("{n}-{base}"));
        }
        match std::fs::write(&target, &res.body) {
            Ok(()) => say(&format!(
                "received {name:?} from the agent: {}",
                target.display()
            )),
            Err(e) => say(&format!("could not save {}: {e}", target.display())),
        }
    }

    /// Sends a file of the user's to the agent.
    async fn send(&self, token: &str, file: &str) {
        let data = match std::fs::read(file) {
            Ok(d) => d,
            Err(e) => return say(&format!("cannot read {file}: {e}")),
        };
        let name = Path::new(file)
            .file_name()
            .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
        let path = format!(
            "/api/v1/sessions/{}/files?name={}",
            self.sid,
            percent_encode(&name)
        );
        let auth = format!("Resume {token}");
        match self
            .ep
            .request_raw(
                hyper::Method::POST,
                &path,
                Some(&auth),
                Some(("application/octet-stream", data)),
            )
            .await
        {
            Ok(r) if r.status == 201 => say(&format!("sent {name:?} to the agent")),
            Ok(r) => say(&format!("could not send {name:?}: {}", r.error_message())),
            Err(e) => say(&format!("could not send {name:?}: {e}")),
        }
    }
}

/// Saves what rejoining needs, tells the appliance, and restarts the machine.
async fn restart<S>(
    opts: &Options,
    sid: &str,
    resume_token: &str,
    consent: Consent,
    sink: &mut S,
) -> anyhow::Result<()>
where
    S: futures_util::Sink<WsMessage> + Unpin,
    S::Error: std::fmt::Display,
{
    if resume_token.is_empty() {
        bail!("the appliance gave no resume token; not restarting");
    }
    let resume = ResumeFile {
        addr: opts.addr.clone(),
        fingerprint: hex::encode(opts.fingerprint),
        session: sid.to_string(),
        resume_token: resume_token.to_string(),
        consent,
        display: opts.display.clone(),
    };
    arrange_restart(&resume, &opts.resume_file)?;
    sink.send(WsMessage::Text(
        json!({"type": "rebooting"}).to_string().into(),
    ))
    .await
    .map_err(|e| anyhow!("{e}"))?;
    say("restarting this computer; Custos reconnects to the session afterwards");
    let (cmd, args) = opts
        .reboot_command
        .split_first()
        .context("no reboot command")?;
    match tokio::process::Command::new(cmd).args(args).status().await {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => bail!("the reboot command failed ({s})"),
        Err(e) => bail!("cannot run the reboot command {cmd:?}: {e}"),
    }
}

/// Collects the diagnostics document and sends it over the screen socket.
async fn send_diagnostics<S>(sink: &mut S) -> anyhow::Result<()>
where
    S: futures_util::Sink<WsMessage> + Unpin,
    S::Error: std::fmt::Display,
{
    let doc = tokio::task::spawn_blocking(super::collect::collect).await?;
    let msg = json!({"type": "diagnostics", "document": doc}).to_string();
    sink.send(WsMessage::Text(msg.into()))
        .await
        .map_err(|e| anyhow!("{e}"))
}

fn consent_msg(c: &Consent) -> WsMessage {
    let mut v = serde_json::to_value(c).expect("consent serializes");
    v["type"] = json!("consent");
    WsMessage::Text(v.to_string().into())
}

fn indicator(desk: &std_mpsc::Sender<Desk>, viewing: bool, control: bool) {
    let _ = desk.send(Desk::Indicate(match (viewing, control) {
        (_, true) => Indicator::Controlling,
        (true, false) => Indicator::Viewing,
        (false, false) => Indicator::Off,
    }));
    say(match (viewing, control) {
        (_, true) => "● the agent is CONTROLLING your screen (type 'stop control' to take it back)",
        (true, false) => "● the agent is viewing your screen (type 'stop view' to stop)",
        (false, false) => "○ your screen is not shared",
    });
}

/// The desktop thread: captures, encodes and queues screen updates while sharing; injects input.
fn desktop(
    mut p: Box<dyn Platform>,
    rx: std_mpsc::Receiver<Desk>,
    out: mpsc::Sender<Vec<u8>>,
    max_fps: u32,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs(1) / max_fps;
    let mut enc = Encoder::new();
    let mut sharing = false;
    let mut want_key = true;
    let mut last_key = Instant::now();
    let mut changed_since_key = false;
    let mut cursor = None;
    let mut next = Instant::now();
    loop {
        let wait = if sharing {
            next.saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(3600)
        };
        match rx.recv_timeout(wait) {
            Ok(Desk::Share(on)) => {
                if on && !sharing {
                    want_key = true;
                }
                if !on && sharing {
                    // Nobody watches any more: the agent's drawings go too.
                    let _ = p.annotate(&Annotation::Clear);
                }
                sharing = on;
                continue;
            }
            Ok(Desk::Keyframe) => {
                want_key = true;
                continue;
            }
            Ok(Desk::Input(i)) => {
                if let Err(e) = p.inject(&i) {
                    say(&format!("could not inject the agent's input: {e:#}"));
                }
                continue;
            }
            Ok(Desk::Indicate(i)) => {
                if let Err(e) = p.indicate(i) {
                    say(&format!("could not show the on-screen indicator: {e:#}"));
                }
                continue;
            }
            Ok(Desk::Annotate(a)) => {
                if let Err(e) = p.annotate(&a) {
                    say(&format!("could not show the agent's drawing: {e:#}"));
                }
                continue;
            }
            Ok(Desk::Stop) | Err(std_mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !sharing {
            continue;
        }
        next = Instant::now() + interval;
        let key = want_key || (changed_since_key && last_key.elapsed() >= KEYFRAME_EVERY);
        let frame = p.capture()?;
        let e = enc.encode(&frame, key);
        if key {
            want_key = false;
            last_key = Instant::now();
            changed_since_key = false;
        } else if e.tiles > 0 {
            changed_since_key = true;
        }
        for m in e.messages {
            // Blocks while the link is busy: the frame rate adapts to what it carries.
            if out.blocking_send(m).is_err() {
                return Ok(());
            }
        }
        let pos = p.pointer()?;
        if cursor != Some(pos) {
            cursor = Some(pos);
            if out
                .blocking_send(super::cursor_message(pos.0, pos.1))
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_invite;

    #[test]
    fn invites() {
        assert_eq!(
            parse_invite("https://support.example:8443/code?code=123-456-789"),
            Ok((Some("support.example:8443".into()), "123456789".into()))
        );
        assert_eq!(
            parse_invite("https://support.example/code?code=123456789"),
            Ok((Some("support.example:443".into()), "123456789".into()))
        );
        assert_eq!(parse_invite("123 456 789"), Ok((None, "123456789".into())));
        assert!(parse_invite("https://x/other").is_err());
        assert!(parse_invite("https://x/code?code=12").is_err());
        assert!(parse_invite("hello").is_err());
    }
}
