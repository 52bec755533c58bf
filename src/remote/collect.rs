//! Collects the diagnostics document (docs/formats/diagnostics.md) on a Linux machine, from
//! `/proc`, `/sys` and `/etc/os-release`, the package manager (`dpkg-query` or `rpm`) and
//! `ip -j addr`. Every part is best effort: what cannot be read is left out, never guessed.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

/// Processes reported, the busiest first.
const TOP_PROCESSES: usize = 50;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Keeps a string within the document's rules (at most 1,000 characters, no control characters).
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .take(1000)
        .collect()
}

fn os() -> Value {
    let release: HashMap<String, String> = read("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    json!({
        "name": clean(release.get("NAME").map_or("Linux", String::as_str)),
        "version": clean(release.get("VERSION_ID").or(release.get("VERSION")).map_or("", String::as_str)),
        "kernel": clean(&read("/proc/sys/kernel/osrelease").unwrap_or_default()),
        "arch": std::env::consts::ARCH,
        "hostname": clean(&read("/proc/sys/kernel/hostname").unwrap_or_default()),
    })
}

fn cpu() -> Option<Value> {
    let info = read("/proc/cpuinfo")?;
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map_or("unknown", |(_, m)| m.trim());
    let cores = info
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .clamp(1, 4096);
    let load: Vec<f64> = read("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some(json!({ "model": clean(model), "cores": cores, "load": load }))
}

fn memory() -> Option<Value> {
    let info = read("/proc/meminfo")?;
    let kb = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    let total = kb("MemTotal:")?;
    let available = kb("MemAvailable:").unwrap_or(0).min(total);
    Some(json!({ "total_bytes": total, "available_bytes": available }))
}

fn disks() -> Vec<Value> {
    const REAL: [&str; 8] = [
        "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "ntfs", "zfs",
    ];
    let mounts = read("/proc/mounts").unwrap_or_default();
    let mut out = Vec::new();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(mount), Some(fs)) = (f.get(1), f.get(2)) else {
            continue;
        };
        if !REAL.contains(fs) || out.len() >= 256 {
            continue;
        }
        if let Ok(v) = rustix::fs::statvfs(*mount) {
            let total = v.f_blocks.saturating_mul(v.f_frsize);
            let free = v.f_bavail.saturating_mul(v.f_frsize).min(total);
            out.push(json!({ "mount": clean(mount), "fs": fs, "total_bytes": total, "free_bytes": free }));
        }
    }
    out
}

fn network() -> Vec<Value> {
    let mut addrs: HashMap<String, Vec<String>> = HashMap::new();
    if let Ok(o) = Command::new("ip").args(["-j", "addr"]).output()
        && let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&o.stdout)
    {
        for i in list {
            let name = i["ifname"].as_str().unwrap_or_default().to_string();
            for a in i["addr_info"].as_array().into_iter().flatten().take(256) {
                if let (Some(ip), Some(p)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                    addrs
                        .entry(name.clone())
                        .or_default()
                        .push(format!("{ip}/{p}"));
                }
            }
        }
    }
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names.into_iter().take(256) {
        let base = format!("/sys/class/net/{name}");
        out.push(json!({
            "name": clean(&name),
            "mac": clean(&read(&format!("{base}/address")).unwrap_or_default()),
            "addresses": addrs.remove(&name).unwrap_or_default(),
            "up": read(&format!("{base}/operstate")).is_some_and(|s| s == "up" || s == "unknown"),
        }));
    }
    out
}

/// Per process: name, CPU ticks (user + system) and resident bytes.
fn process_table() -> HashMap<u32, (String, u64, u64)> {
    let page = 4096u64;
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some(stat) = read(&format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The name is in parentheses and may hold spaces; fields follow the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let num = |i: usize| rest.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        // After the name: state(0) ... utime(11) stime(12) ... rss(21).
        out.insert(pid, (name, num(11) + num(12), num(21) * page));
    }
    out
}

fn processes() -> Vec<Value> {
    let ticks_per_s = 100.0;
    let interval = Duration::from_millis(250);
    let before = process_table();
    std::thread::sleep(interval);
    let after = process_table();
    let mut list: Vec<(u32, String, f64, u64)> = after
        .into_iter()
        .map(|(pid, (name, ticks, rss))| {
            let used = ticks.saturating_sub(before.get(&pid).map_or(ticks, |b| b.1));
            let pct = used as f64 / ticks_per_s / interval.as_secs_f64() * 100.0;
            (pid, name, pct, rss)
        })
        .collect();
    list.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.3.cmp(&a.3)));
    list.into_iter()
        .take(TOP_PROCESSES)
        .map(|(pid, name, pct, rss)| {
            json!({ "pid": pid, "name": clean(&name), "cpu_percent": (pct * 10.0).round() / 10.0, "rss_bytes": rss })
        })
        .collect()
}

fn packages() -> Option<Value> {
    let tries: [(&str, &str, &[&str]); 2] = [
        (
            "dpkg",
            "dpkg-query",
            &["-W", "-f", "${Package}\t${Version}\n"],
        ),
        (
            "rpm",
            "rpm",
            &["-qa", "--qf", "%{NAME}\t%{VERSION}-%{RELEASE}\n"],
        ),
    ];
    for (manager, cmd, args) in tries {
        let Ok(o) = Command::new(cmd).args(args).output() else {
            continue;
        };
        if !o.status.success() {
            continue;
        }
        let list: Vec<Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .take(50_000)
            .map(|(n, v)| json!({ "name": clean(n), "version": clean(v) }))
            .collect();
        return Some(json!({ "manager": manager, "list": list }));
    }
    None
}

/// The whole document.
pub fn collect() -> Value {
    let mut doc = json!({
        "v": crate::session::diagnostics::VERSION,
        "collected_at": crate::model::now_rfc3339(),
        "os": os(),
        "disks": disks(),
        "network": network(),
        "processes": processes(),
    });
    let vendor = read("/sys/class/dmi/id/sys_vendor");
    let model = read("/sys/class/dmi/id/product_name");
    if vendor.is_some() || model.is_some() {
        doc["hardware"] = json!({
            "vendor": clean(&vendor.unwrap_or_default()),
            "model": clean(&model.unwrap_or_default()),
        });
    }
    if let Some(c) = cpu() {
        doc["cpu"] = c;
    }
    if let Some(m) = memory() {
        doc["memory"] = m;
    }
    if let Some(p) = packages() {
        doc["packages"] = p;
    }
    doc
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_yields_a_valid_document() {
        let doc = super::collect();
        let bytes = serde_json::to_vec(&doc).unwrap();
        let parsed = crate::session::diagnostics::parse(&bytes).expect("valid document");
        assert!(!parsed.os.name.is_empty());
        assert!(!parsed.os.kernel.is_empty());
        assert!(!parsed.processes.is_empty(), "this test itself runs");
        assert!(parsed.memory.is_some_and(|m| m.total_bytes > 0));
        assert!(
            doc["network"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == "lo")
        );
    }
}
