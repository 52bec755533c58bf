//! `custos setup`: the appliance's first boot, on its console (tty1 or the serial port).
//!
//! Six questions, each checked as it is answered and asked again with the reason when the
//! answer is not usable: the administrator's password, how the master key is unsealed (key file
//! or passphrase), the network (DHCP or static), the host name, the TLS certificate (generated,
//! its fingerprint shown; or imported as PEM) and the time source. Nothing is written until the
//! summary is confirmed; then the data directory is initialized and `SYSTEM/appliance.conf` is
//! written last, which is what marks setup as done (the boot scripts read it).

use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::Path;

use zeroize::Zeroizing;

use crate::app::{DataDir, InitOptions};
use crate::config;

/// Asks questions on a terminal or, in tests and scripts, reads answers from a pipe.
pub struct Prompter<R: BufRead, W: Write> {
    input: R,
    out: W,
    /// Whether secrets are read from the terminal with echo off.
    tty: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("the answers ended before setup was complete; nothing was changed")]
    Ended,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    pub fn new(input: R, out: W, tty: bool) -> Self {
        Prompter { input, out, tty }
    }

    fn say(&mut self, text: &str) -> Result<(), SetupError> {
        writeln!(self.out, "{text}")?;
        self.out.flush()?;
        Ok(())
    }

    fn line(&mut self) -> Result<String, SetupError> {
        let mut s = String::new();
        if self.input.read_line(&mut s)? == 0 {
            return Err(SetupError::Ended);
        }
        Ok(s.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Asks until `check` accepts the answer (an empty answer means `default`).
    fn ask<T>(
        &mut self,
        question: &str,
        default: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, SetupError> {
        loop {
            if default.is_empty() {
                write!(self.out, "{question}: ")?;
            } else {
                write!(self.out, "{question} [{default}]: ")?;
            }
            self.out.flush()?;
            let raw = self.line()?;
            let answer = if raw.trim().is_empty() {
                default
            } else {
                raw.trim()
            };
            match check(answer) {
                Ok(v) => return Ok(v),
                Err(why) => self.say(&format!("  Not usable: {why}. Try again."))?,
            }
        }
    }

    fn secret_line(&mut self, question: &str) -> Result<Zeroizing<String>, SetupError> {
        if self.tty {
            write!(self.out, "{question}: ")?;
            self.out.flush()?;
            let s = rpassword::read_password().map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    SetupError::Ended
                } else {
                    SetupError::Io(e)
                }
            })?;
            Ok(Zeroizing::new(s))
        } else {
            write!(self.out, "{question}: ")?;
            self.out.flush()?;
            Ok(Zeroizing::new(self.line()?))
        }
    }

    /// A secret asked twice, until both match and `check` accepts it.
    fn secret(
        &mut self,
        question: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Zeroizing<String>, SetupError> {
        loop {
            let a = self.secret_line(question)?;
            if let Err(why) = check(&a) {
                self.say(&format!("  Not usable: {why}. Try again."))?;
                continue;
            }
            let b = self.secret_line("The same again")?;
            if *a == *b {
                return Ok(a);
            }
            self.say("  The two did not match. Try again.")?;
        }
    }

    /// PEM blocks pasted until the END line of a private key.
    fn pem(&mut self) -> Result<(String, Zeroizing<String>), SetupError> {
        self.say("Paste the certificate chain (PEM, server certificate first), then its private key (PEM).")?;
        let mut certs = String::new();
        let mut key = Zeroizing::new(String::new());
        let mut in_key = false;
        loop {
            let l = self.line()?;
            let t = l.trim();
            if t.starts_with("-----BEGIN") && t.contains("PRIVATE KEY") {
                in_key = true;
            }
            if in_key {
                key.push_str(t);
                key.push('\n');
                if t.starts_with("-----END") {
                    return Ok((certs, key));
                }
            } else if !t.is_empty() {
                certs.push_str(t);
                certs.push('\n');
            }
        }
    }
}

/// How the appliance reaches the network.
#[derive(Clone, Debug, PartialEq)]
pub enum Network {
    Dhcp,
    Static {
        address: (IpAddr, u8),
        gateway: Option<IpAddr>,
        dns: Vec<IpAddr>,
    },
}

/// Everything setup asked, before anything is written.
pub struct Answers {
    /// None when the data directory was already initialized (a setup interrupted after that).
    pub init: Option<InitOptions>,
    pub network: Network,
    pub hostname: String,
    pub ntp: Vec<String>,
}

pub fn parse_hostname(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if s.is_empty() || s.len() > 253 || !s.split('.').all(ok_label) {
        return Err(format!(
            "{s:?} is not a host name (letters, digits and hyphens, in dot-separated labels of 1 to 63)"
        ));
    }
    if s.parse::<IpAddr>().is_ok() || s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{s:?} is an address, not a name"));
    }
    Ok(s)
}

pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} needs a prefix length, like 192.0.2.10/24"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| format!("the prefix length must be 1 to {max}"))?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(format!("{ip} cannot be the appliance's address"));
    }
    Ok((ip, prefix))
}

fn parse_ips(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split_whitespace()
        .filter(|w| *w != "none")
        .map(|w| w.parse().map_err(|_| format!("{w:?} is not an IP address")))
        .collect()
}

/// Time servers: names or addresses, or `none`.
pub fn parse_servers(s: &str) -> Result<Vec<String>, String> {
    if s.trim() == "none" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for w in s.split_whitespace() {
        if w.parse::<IpAddr>().is_ok() {
            out.push(w.to_string());
        } else {
            out.push(parse_hostname(w)?);
        }
    }
    if out.is_empty() || out.len() > 4 {
        return Err("name one to four servers, or none".into());
    }
    Ok(out)
}

fn choice(s: &str, options: &[&str]) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    for (i, o) in options.iter().enumerate() {
        if s == (i + 1).to_string() || s == *o {
            return Ok(i);
        }
    }
    Err(format!(
        "answer {}",
        options
            .iter()
            .enumerate()
            .map(|(i, o)| format!("{} ({o})", i + 1))
            .collect::<Vec<_>>()
            .join(" or ")
    ))
}

/// Asks every question. `initialized`: the data directory exists already (only the system's
/// questions are asked).
pub fn ask<R: BufRead, W: Write>(
    p: &mut Prompter<R, W>,
    initialized: bool,
) -> Result<Answers, SetupError> {
    p.say("")?;
    p.say("Custos first-boot setup. Each answer is checked as you give it; Enter takes the [default].")?;
    p.say("Nothing is written until you confirm the summary at the end.")?;
    let mut init = None;
    let mut passphrase_mode = false;
    if !initialized {
        p.say("")?;
        p.say("1/6 The administrator (user \"admin\") signs in on the web and on this console.")?;
        let admin = p.secret("Administrator password (12 characters or more)", |s| {
            crate::auth::check_password_policy(s).map_err(|e| e.to_string())
        })?;
        p.say("")?;
        p.say("2/6 How the master key is unsealed at each start:")?;
        p.say("  1) key file: kept on the data disk; the appliance starts unattended (whoever holds the disk can read the archive)")?;
        p.say("  2) passphrase: asked at each start, here on the console or with `custos unseal`; the disk alone reveals nothing")?;
        let mode = p.ask("Unseal mode", "1", |s| {
            choice(s, &["key file", "passphrase"])
        })?;
        let passphrase = if mode == 1 {
            passphrase_mode = true;
            Some(p.secret(
                "Passphrase (12 characters or more; it cannot be recovered)",
                |s| {
                    if s.chars().count() < 12 {
                        Err("a passphrase needs at least 12 characters".into())
                    } else {
                        Ok(())
                    }
                },
            )?)
        } else {
            None
        };
        init = Some(InitOptions {
            admin_password: Some(admin),
            passphrase,
            tls_pem: None,
        });
    }
    p.say("")?;
    p.say("3/6 Network")?;
    let net = p.ask("DHCP or static", "dhcp", |s| choice(s, &["dhcp", "static"]))?;
    let network = if net == 0 {
        Network::Dhcp
    } else {
        let address = p.ask(
            "Address with prefix length (like 192.0.2.10/24)",
            "",
            parse_cidr,
        )?;
        let gateway = p.ask("Gateway (none for no default route)", "none", |s| {
            if s == "none" {
                Ok(None)
            } else {
                s.parse::<IpAddr>()
                    .map(Some)
                    .map_err(|_| format!("{s:?} is not an IP address"))
            }
        })?;
        let dns = p.ask(
            "DNS servers (addresses separated by spaces, or none)",
            "none",
            parse_ips,
        )?;
        Network::Static {
            address,
            gateway,
            dns,
        }
    };
    p.say("")?;
    p.say("4/6 Host name")?;
    let hostname = p.ask("Host name", "custos", parse_hostname)?;
    if let Some(init) = init.as_mut() {
        p.say("")?;
        p.say("5/6 TLS certificate for the web pages and the API:")?;
        p.say(&format!(
            "  1) self-signed for {hostname} (its fingerprint is shown when setup ends)"
        ))?;
        p.say("  2) import a certificate and key issued by your CA (paste them as PEM)")?;
        let tls = p.ask("Certificate", "1", |s| {
            choice(s, &["self-signed", "import"])
        })?;
        if tls == 1 {
            loop {
                let (cert, key) = p.pem()?;
                match crate::tls::check_pair(&cert, &key) {
                    Ok(fp) => {
                        p.say(&format!("  Certificate accepted, SHA-256 fingerprint {fp}"))?;
                        init.tls_pem = Some((cert, key));
                        break;
                    }
                    Err(e) => p.say(&format!("  Not usable: {e}. Paste them again."))?,
                }
            }
        }
    }
    p.say("")?;
    p.say("6/6 Time source: the clock stamps every audit entry and decides retention.")?;
    let ntp = p.ask(
        "NTP servers (names or addresses separated by spaces, or none for the hardware clock)",
        "none",
        parse_servers,
    )?;
    p.say("")?;
    p.say("Summary")?;
    if !initialized {
        p.say("  administrator     admin (password set)")?;
        p.say(&format!(
            "  unseal            {}",
            if passphrase_mode {
                "passphrase at each start"
            } else {
                "key file on the data disk"
            }
        ))?;
    }
    p.say(&format!("  network           {}", describe(&network)))?;
    p.say(&format!("  host name         {hostname}"))?;
    if let Some(init) = &init {
        p.say(&format!(
            "  certificate       {}",
            if init.tls_pem.is_some() {
                "imported"
            } else {
                "self-signed"
            }
        ))?;
    }
    p.say(&format!(
        "  time              {}",
        if ntp.is_empty() {
            "hardware clock".to_string()
        } else {
            format!("NTP: {}", ntp.join(" "))
        }
    ))?;
    let yes = p.ask(
        "Apply these settings? (yes, or no to answer again)",
        "yes",
        |s| choice(s, &["yes", "no"]),
    )?;
    if yes == 1 {
        return ask(p, initialized);
    }
    Ok(Answers {
        init,
        network,
        hostname,
        ntp,
    })
}

fn describe(n: &Network) -> String {
    match n {
        Network::Dhcp => "DHCP".into(),
        Network::Static {
            address,
            gateway,
            dns,
        } => format!(
            "static {}/{}, gateway {}, DNS {}",
            address.0,
            address.1,
            gateway.map_or("none".into(), |g| g.to_string()),
            if dns.is_empty() {
                "none".into()
            } else {
                dns.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        ),
    }
}

/// `SYSTEM/appliance.conf`: one `key=value` a line, read by the boot scripts (never sourced).
pub fn appliance_conf(a: &Answers) -> String {
    let mut s = format!(
        "# Written by `custos setup` at {}. Read by /etc/custos/net and /etc/custos/timesync.\nhostname={}\n",
        crate::model::now_rfc3339(),
        a.hostname
    );
    match &a.network {
        Network::Dhcp => s.push_str("net=dhcp\n"),
        Network::Static {
            address,
            gateway,
            dns,
        } => {
            s.push_str(&format!(
                "net=static\naddress={}/{}\n",
                address.0, address.1
            ));
            if let Some(g) = gateway {
                s.push_str(&format!("gateway={g}\n"));
            }
            let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
            s.push_str(&format!("dns={}\n", dns.join(" ")));
        }
    }
    s.push_str(&format!("ntp={}\n", a.ntp.join(" ")));
    s
}

/// The data directory's `custos.toml`: the defaults, listening on `listen`, with the host name
/// (and a static address) in the generated certificate.
pub fn custos_toml(listen: &str, a: &Answers) -> String {
    let mut names = vec![format!("{:?}", a.hostname)];
    if let Network::Static { address, .. } = &a.network {
        names.push(format!("{:?}", address.0.to_string()));
    }
    config::DEFAULT_TOML
        .replacen(
            "listen = \"127.0.0.1:8443\"",
            &format!("listen = {listen:?}"),
            1,
        )
        .replacen(
            "hostnames = []",
            &format!("hostnames = [{}]", names.join(", ")),
            1,
        )
}

/// Runs setup: asks, then writes the data directory and `SYSTEM/appliance.conf`.
pub fn run<R: BufRead, W: Write>(
    p: &mut Prompter<R, W>,
    data: &Path,
    system: &Path,
    listen: &str,
) -> Result<(), SetupError> {
    let conf = system.join(super::APPLIANCE_CONF);
    if conf.exists() {
        return Err(SetupError::Refused(format!(
            "this appliance is set up already ({} exists)",
            conf.display()
        )));
    }
    let dir = DataDir::new(data.to_path_buf());
    let initialized = dir
        .is_initialized()
        .map_err(|e| SetupError::Refused(e.to_string()))?;
    if initialized {
        p.say("The data directory was initialized by a setup that did not finish; its administrator, unseal mode and certificate stay as they are.")?;
    }
    let answers = ask(p, initialized)?;
    std::fs::create_dir_all(system)?;
    if let Some(init) = answers.init.as_ref() {
        let toml = custos_toml(listen, &answers);
        config::Config::parse(Path::new(config::FILE_NAME), &toml)
            .map_err(|e| SetupError::Refused(format!("the generated configuration: {e}")))?;
        std::fs::create_dir_all(data)?;
        std::fs::write(data.join(config::FILE_NAME), toml)?;
        let opts = InitOptions {
            admin_password: init.admin_password.clone(),
            passphrase: init.passphrase.clone(),
            tls_pem: init.tls_pem.clone(),
        };
        crate::app::initialize_with(&dir, opts).map_err(|e| SetupError::Refused(e.to_string()))?;
    }
    crate::keys::write_file(&conf, appliance_conf(&answers).as_bytes(), 0o644)
        .map_err(|e| SetupError::Refused(e.to_string()))?;
    let cfg = config::Config::load(data).map_err(|e| SetupError::Refused(e.to_string()))?;
    let fp = dir
        .fingerprint(&cfg)
        .map_err(|e| SetupError::Refused(e.to_string()))?;
    p.say("")?;
    p.say("Setup complete.")?;
    p.say(&format!("TLS certificate SHA-256 fingerprint: {fp}"))?;
    p.say("Compare it with what your browser shows the first time it connects.")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_with_the_reason() {
        assert_eq!(
            parse_hostname("Custos-01.Example.org.").unwrap(),
            "custos-01.example.org"
        );
        for bad in ["", "-a", "a_b", "bad host", "1.2.3.4", &"a".repeat(64)] {
            assert!(parse_hostname(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_cidr("192.0.2.10/24").unwrap().1, 24);
        assert!(parse_cidr("2001:db8::5/64").is_ok());
        assert!(parse_cidr("192.0.2.10").unwrap_err().contains("prefix"));
        assert!(parse_cidr("192.0.2.10/33").is_err());
        assert!(parse_cidr("127.0.0.1/8").is_err());
        assert!(
            parse_cidr("300.1.1.1/24")
                .unwrap_err()
                .contains("not an IP")
        );
        assert_eq!(parse_servers("none").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_servers("ntp1.example.org 192.0.2.123").unwrap().len(),
            2
        );
        assert!(parse_servers("a b c d e").is_err());
        assert!(parse_servers("bad_name").is_err());
        assert!(parse_ips("192.0.2.53 nope").is_err());
        assert_eq!(choice("2", &["dhcp", "static"]), Ok(1));
        assert_eq!(choice("STATIC", &["dhcp", "static"]), Ok(1));
        assert!(
            choice("3", &["dhcp", "static"])
                .unwrap_err()
                .contains("1 (dhcp) or 2 (static)")
        );
    }

    #[test]
    fn wrong_answers_are_asked_again_and_the_files_say_what_was_chosen() {
        let input = "short\nlong-enough-secret-1\nlong-enough-secret-2\nlong-enough-secret-1\nlong-enough-secret-1\n\
                     3\n1\nstatic\n192.0.2.10\n192.0.2.10/24\n192.0.2.1\n192.0.2.53 192.0.2.54\nbad_name\nvault-7\n\n\
                     ntp.example.org\nyes\n";
        let mut out = Vec::new();
        let mut p = Prompter::new(input.as_bytes(), &mut out, false);
        let a = ask(&mut p, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("at least 12 characters"), "{text}");
        assert!(text.contains("The two did not match"), "{text}");
        assert!(
            text.contains("answer 1 (key file) or 2 (passphrase)"),
            "{text}"
        );
        assert!(text.contains("needs a prefix length"), "{text}");
        assert!(text.contains("\"bad_name\" is not a host name"), "{text}");
        let init = a.init.as_ref().unwrap();
        assert_eq!(
            init.admin_password.as_deref().map(|s| s.as_str()),
            Some("long-enough-secret-1")
        );
        assert!(init.passphrase.is_none() && init.tls_pem.is_none());
        let conf = appliance_conf(&a);
        for line in [
            "hostname=vault-7\n",
            "net=static\n",
            "address=192.0.2.10/24\n",
            "gateway=192.0.2.1\n",
            "dns=192.0.2.53 192.0.2.54\n",
            "ntp=ntp.example.org\n",
        ] {
            assert!(conf.contains(line), "{line} in {conf}");
        }
        let toml = custos_toml("0.0.0.0:443", &a);
        let cfg = config::Config::parse(Path::new("custos.toml"), &toml).unwrap();
        assert_eq!(cfg.listen.to_string(), "0.0.0.0:443");
        assert_eq!(
            cfg.hostnames,
            vec!["vault-7".to_string(), "192.0.2.10".to_string()]
        );
    }

    #[test]
    fn answers_that_end_early_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (data, system) = (dir.path().join("data"), dir.path().join("system"));
        let mut out = Vec::new();
        let mut p = Prompter::new(
            "long-enough-secret-1\nlong-enough-secret-1\n2\n".as_bytes(),
            &mut out,
            false,
        );
        assert!(matches!(
            run(&mut p, &data, &system, "127.0.0.1:0"),
            Err(SetupError::Ended)
        ));
        assert!(!data.exists() && !system.exists());
    }
}
