//! Remote diagnostics: the document a client uploads about its machine
//! (docs/formats/diagnostics.md), validated here with every limit, and the short summary the
//! agent sees. Pure.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub const VERSION: u32 = 1;
/// The largest upload accepted.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;
const MAX_PACKAGES: usize = 50_000;
const MAX_PROCESSES: usize = 1000;
const MAX_ITEMS: usize = 256;
const MAX_STR: usize = 1000;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostics {
    pub v: u32,
    pub collected_at: String,
    pub os: Os,
    #[serde(default)]
    pub hardware: Option<Hardware>,
    #[serde(default)]
    pub cpu: Option<Cpu>,
    #[serde(default)]
    pub memory: Option<Memory>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub network: Vec<Interface>,
    #[serde(default)]
    pub processes: Vec<Process>,
    #[serde(default)]
    pub packages: Option<Packages>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Os {
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub arch: String,
    #[serde(default)]
    pub hostname: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hardware {
    #[serde(default)]
    pub vendor: String,
    #[serde(default)]
    pub model: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub model: String,
    pub cores: u32,
    #[serde(default)]
    pub load: Vec<f64>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub mount: String,
    #[serde(default)]
    pub fs: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub up: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    #[serde(default)]
    pub cpu_percent: f64,
    #[serde(default)]
    pub rss_bytes: u64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Packages {
    /// `dpkg` or `rpm` (or another manager the client names).
    pub manager: String,
    pub list: Vec<Package>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub version: String,
}

fn check_str(what: &str, s: &str) -> Result<(), String> {
    if s.chars().count() > MAX_STR || s.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "{what} must be at most {MAX_STR} characters without control characters"
        ));
    }
    Ok(())
}

/// Parses and checks an upload; the error names the first problem.
pub fn parse(body: &[u8]) -> Result<Diagnostics, String> {
    if body.len() > MAX_BYTES {
        return Err(format!("diagnostics must be at most {MAX_BYTES} bytes"));
    }
    let d: Diagnostics = serde_json::from_slice(body).map_err(|e| format!("diagnostics: {e}"))?;
    if d.v != VERSION {
        return Err(format!(
            "diagnostics version {} is not supported (this appliance reads {VERSION})",
            d.v
        ));
    }
    crate::model::parse_time(&d.collected_at).map_err(|e| format!("collected_at: {e}"))?;
    if d.os.name.trim().is_empty() {
        return Err("os.name must not be empty".into());
    }
    for (what, s) in [
        ("os.name", &d.os.name),
        ("os.version", &d.os.version),
        ("os.kernel", &d.os.kernel),
        ("os.arch", &d.os.arch),
        ("os.hostname", &d.os.hostname),
    ] {
        check_str(what, s)?;
    }
    if let Some(h) = &d.hardware {
        check_str("hardware.vendor", &h.vendor)?;
        check_str("hardware.model", &h.model)?;
    }
    if let Some(c) = &d.cpu {
        check_str("cpu.model", &c.model)?;
        if c.cores == 0
            || c.cores > 4096
            || c.load.len() > 3
            || c.load.iter().any(|l| !l.is_finite() || *l < 0.0)
        {
            return Err(
                "cpu: cores must be 1 to 4096 and load at most three non-negative numbers".into(),
            );
        }
    }
    if let Some(m) = &d.memory
        && m.available_bytes > m.total_bytes
    {
        return Err("memory.available_bytes is larger than memory.total_bytes".into());
    }
    if d.disks.len() > MAX_ITEMS || d.network.len() > MAX_ITEMS {
        return Err(format!(
            "disks and network may list at most {MAX_ITEMS} entries each"
        ));
    }
    for (i, x) in d.disks.iter().enumerate() {
        check_str(&format!("disks[{i}].mount"), &x.mount)?;
        check_str(&format!("disks[{i}].fs"), &x.fs)?;
        if x.free_bytes > x.total_bytes {
            return Err(format!("disks[{i}]: free_bytes is larger than total_bytes"));
        }
    }
    for (i, n) in d.network.iter().enumerate() {
        check_str(&format!("network[{i}].name"), &n.name)?;
        check_str(&format!("network[{i}].mac"), &n.mac)?;
        if n.addresses.len() > MAX_ITEMS {
            return Err(format!(
                "network[{i}].addresses lists more than {MAX_ITEMS}"
            ));
        }
        for a in &n.addresses {
            check_str(&format!("network[{i}].addresses"), a)?;
        }
    }
    if d.processes.len() > MAX_PROCESSES {
        return Err(format!("processes may list at most {MAX_PROCESSES}"));
    }
    for (i, p) in d.processes.iter().enumerate() {
        check_str(&format!("processes[{i}].name"), &p.name)?;
        if !p.cpu_percent.is_finite() || p.cpu_percent < 0.0 {
            return Err(format!(
                "processes[{i}].cpu_percent must be a non-negative number"
            ));
        }
    }
    if let Some(p) = &d.packages {
        check_str("packages.manager", &p.manager)?;
        if p.list.len() > MAX_PACKAGES {
            return Err(format!("packages.list may hold at most {MAX_PACKAGES}"));
        }
        for (i, x) in p.list.iter().enumerate() {
            if x.name.is_empty() || x.version.is_empty() {
                return Err(format!(
                    "packages.list[{i}]: name and version must not be empty"
                ));
            }
            check_str(&format!("packages.list[{i}].name"), &x.name)?;
            check_str(&format!("packages.list[{i}].version"), &x.version)?;
        }
    }
    Ok(d)
}

impl Diagnostics {
    /// What the agent sees at a glance.
    pub fn summary(&self) -> Value {
        json!({
            "os": format!("{} {}", self.os.name, self.os.version).trim().to_string(),
            "kernel": self.os.kernel,
            "hostname": self.os.hostname,
            "cpu": self.cpu.as_ref().map(|c| format!("{} ({} cores)", c.model, c.cores)),
            "memory_total_bytes": self.memory.as_ref().map(|m| m.total_bytes),
            "disks": self.disks.len(),
            "interfaces": self.network.len(),
            "processes": self.processes.len(),
            "packages": self.packages.as_ref().map_or(0, |p| p.list.len()),
            "collected_at": self.collected_at,
        })
    }

    /// Installed packages as (name, version), for knowledge-base version rules.
    pub fn package_versions(&self) -> Vec<(String, String)> {
        self.packages
            .as_ref()
            .map(|p| {
                p.list
                    .iter()
                    .map(|x| (x.name.clone(), x.version.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        json!({
            "v": 1, "collected_at": "2026-11-28T10:00:00Z",
            "os": { "name": "Debian GNU/Linux", "version": "12", "kernel": "6.1.0-18-amd64", "arch": "x86_64", "hostname": "pc-17" },
            "cpu": { "model": "Xeon", "cores": 8, "load": [0.5, 0.4, 0.3] },
            "memory": { "total_bytes": 16, "available_bytes": 8 },
            "disks": [{ "mount": "/", "fs": "ext4", "total_bytes": 100, "free_bytes": 40 }],
            "packages": { "manager": "dpkg", "list": [{ "name": "openvpn", "version": "2.5.1-3" }] }
        })
    }

    #[test]
    fn a_valid_document_and_each_kind_of_bad_one() {
        let d = parse(doc().to_string().as_bytes()).unwrap();
        assert_eq!(
            d.package_versions(),
            [("openvpn".to_string(), "2.5.1-3".to_string())]
        );
        assert_eq!(d.summary()["os"], "Debian GNU/Linux 12");
        let cases: &[(&str, Value, &str)] = &[
            ("/v", json!(2), "version 2"),
            ("/collected_at", json!("yesterday"), "collected_at"),
            ("/os/name", json!(""), "os.name"),
            ("/os/kernel", json!("a\u{0}b"), "os.kernel"),
            ("/cpu/cores", json!(0), "cores"),
            ("/memory/available_bytes", json!(99), "larger"),
            ("/disks/0/free_bytes", json!(101), "disks[0]"),
            ("/packages/list/0/version", json!(""), "packages.list[0]"),
            ("/extra", json!(1), "unknown field"),
        ];
        for (ptr, val, needle) in cases {
            let mut v = doc();
            if *ptr == "/extra" {
                v["extra"] = val.clone();
            } else {
                *v.pointer_mut(ptr).unwrap() = val.clone();
            }
            let e = parse(v.to_string().as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{ptr}: {e}");
        }
        assert!(parse(b"not json").unwrap_err().starts_with("diagnostics:"));
    }
}
