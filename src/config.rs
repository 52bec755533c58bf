//! `DIR/custos.toml`: parsed strictly (unknown keys are errors) and validated, every error
//! naming the file and line. A default file with comments is written at first start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub const FILE_NAME: &str = "custos.toml";

pub const DEFAULT_TOML: &str = r#"# Custos appliance configuration. Changes take effect at the next start of `custos serve`.
# Every key is optional; the values shown are the defaults.

[server]
# Address and port of the HTTPS listener. `--listen` on the command line overrides it.
listen = "127.0.0.1:8443"
# Extra DNS names or IP addresses for the self-signed certificate (localhost and 127.0.0.1 are
# always included). Takes effect when the certificate is generated, at first start.
hostnames = []

[tls]
# To use a certificate of your own instead of the generated one, give both paths (PEM).
# cert = "/etc/custos/cert.pem"
# key = "/etc/custos/key.pem"

[archive]
# How often open archive objects are made durable, in milliseconds (50 to 1000). A crash loses
# at most this much of a recording.
sync_interval_ms = 1000

[audit]
# How often a signed checkpoint is written while audit entries arrive, in seconds (1 to 3600).
checkpoint_interval_s = 5

[auth]
# Lifetime of a login token, in seconds (300 to 604800).
session_ttl_s = 43200
"#;

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    archive: RawArchive,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    auth: RawAuth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    hostnames: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    sync_interval_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    checkpoint_interval_s: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    session_ttl_s: Option<Spanned<i64>>,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub hostnames: Vec<String>,
    /// Administrator-provided certificate and key, if any.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub sync_interval_ms: u64,
    pub checkpoint_interval_s: u64,
    pub session_ttl_s: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(Path::new(FILE_NAME), "").expect("the empty configuration is valid")
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn valid_hostname(h: &str) -> bool {
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Config {
    /// Reads `DIR/custos.toml`; a missing file means the defaults.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::parse(&path, ""),
            Err(e) => Err(ConfigError {
                path,
                line: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let err = |span: std::ops::Range<usize>, message: String| ConfigError {
            path: path.to_path_buf(),
            line: line_of(text, span.start),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            err(span, e.message().trim().to_string())
        })?;

        let listen = match &raw.server.listen {
            None => "127.0.0.1:8443".parse().expect("valid default"),
            Some(s) => s.get_ref().parse().map_err(|_| {
                err(
                    s.span(),
                    format!(
                        "server.listen {:?} is not an address like 127.0.0.1:8443",
                        s.get_ref()
                    ),
                )
            })?,
        };
        let mut hostnames = Vec::new();
        for h in &raw.server.hostnames {
            if !valid_hostname(h.get_ref()) {
                return Err(err(
                    h.span(),
                    format!(
                        "server.hostnames: {:?} is not a DNS name or IP address",
                        h.get_ref()
                    ),
                ));
            }
            hostnames.push(h.get_ref().clone());
        }
        let tls_files = match (&raw.tls.cert, &raw.tls.key) {
            (None, None) => None,
            (Some(c), Some(k)) => {
                for f in [c, k] {
                    if !Path::new(f.get_ref()).is_file() {
                        return Err(err(
                            f.span(),
                            format!("{:?} does not exist or is not a file", f.get_ref()),
                        ));
                    }
                }
                Some((PathBuf::from(c.get_ref()), PathBuf::from(k.get_ref())))
            }
            (Some(one), None) | (None, Some(one)) => {
                return Err(err(
                    one.span(),
                    "tls.cert and tls.key must be given together".into(),
                ));
            }
        };
        let ranged = |v: &Option<Spanned<i64>>,
                      name: &str,
                      lo: i64,
                      hi: i64,
                      default: i64|
         -> Result<i64, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
                Some(s) => Err(err(
                    s.span(),
                    format!("{name} = {} is out of range ({lo} to {hi})", s.get_ref()),
                )),
            }
        };
        Ok(Config {
            listen,
            hostnames,
            tls_files,
            sync_interval_ms: ranged(
                &raw.archive.sync_interval_ms,
                "archive.sync_interval_ms",
                50,
                1000,
                1000,
            )? as u64,
            checkpoint_interval_s: ranged(
                &raw.audit.checkpoint_interval_s,
                "audit.checkpoint_interval_s",
                1,
                3600,
                5,
            )? as u64,
            session_ttl_s: ranged(
                &raw.auth.session_ttl_s,
                "auth.session_ttl_s",
                300,
                604_800,
                43_200,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("custos.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_default_file_is_valid_and_means_the_defaults() {
        let c = check(DEFAULT_TOML).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.sync_interval_ms, 1000);
        assert_eq!(c.checkpoint_interval_s, 5);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = check("[server]\nlisten = \"nowhere\"\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:2: server.listen \"nowhere\""),
            "{e}"
        );
        let e = check("[server]\n\nbogus = 1\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:3:") && e.contains("bogus"),
            "{e}"
        );
        let e = check("[archive]\nsync_interval_ms = 5000\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:2:") && e.contains("out of range"),
            "{e}"
        );
        let e = check("[server\n").unwrap_err();
        assert!(e.starts_with("custos.toml:1:"), "{e}");
        let e =
            check("[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n").unwrap_err();
        assert!(e.starts_with("custos.toml:2:"), "{e}");
        let e = check("[server]\nhostnames = [\"ok.example\", \"bad host\"]\n").unwrap_err();
        assert!(
            e.starts_with("custos.toml:2:") && e.contains("bad host"),
            "{e}"
        );
    }
}
