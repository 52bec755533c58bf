//! Retention policies: files in `policies/` (TOML), parsed strictly with file:line errors, and
//! the pure rules for deciding which policies govern an archive object and when it expires.
//! No I/O beyond reading the files; `retention` applies them to the store.
//!
//! Precedence: a legal hold beats every policy; among the policies that select an object, the
//! longest retention wins; an object no policy selects is kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::crypto::sha256;
use crate::model::DataClass;

#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct PolicyError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Crypto-shred when due.
    Shred,
    /// When due, wait for a person to review before shredding.
    Review,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// An admin with a stated reason may shorten or remove it.
    Governance,
    /// Once installed, it can only be lengthened, by anyone.
    Compliance,
}

/// One validated policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub description: String,
    pub portals: Vec<String>,
    pub skills: Vec<String>,
    pub classes: Vec<DataClass>,
    pub fields: BTreeMap<String, String>,
    pub retain_days: u32,
    pub action: Action,
    pub mode: Mode,
    pub file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default = "star")]
    portals: Vec<String>,
    #[serde(default = "star")]
    skills: Vec<String>,
    classes: Spanned<Vec<String>>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    retain_days: Spanned<i64>,
    #[serde(default = "session_end")]
    trigger: Spanned<String>,
    action: Spanned<String>,
    mode: Spanned<String>,
}

fn star() -> Vec<String> {
    vec!["*".into()]
}

fn session_end() -> Spanned<String> {
    Spanned::new(0..0, "session_end".into())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Parses one policy file.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Policy>, PolicyError> {
    let err = |span: std::ops::Range<usize>, message: String| PolicyError {
        path: path.to_path_buf(),
        line: line_of(text, span.start),
        message,
    };
    let raw: RawFile = toml::from_str(text)
        .map_err(|e| err(e.span().unwrap_or(0..0), e.message().trim().to_string()))?;
    if raw.policy.is_empty() {
        return Err(err(0..0, "no [[policy]] in this file".into()));
    }
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for p in raw.policy {
        let name = p.name.get_ref();
        let slug = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !slug {
            return Err(err(
                p.name.span(),
                format!("policy name {name:?} must be 1-64 characters of a-z, 0-9 and '-'"),
            ));
        }
        let mut classes = Vec::new();
        for c in p.classes.get_ref() {
            let class: DataClass = c
                .parse()
                .map_err(|e: crate::model::ParseError| err(p.classes.span(), e.to_string()))?;
            if !classes.contains(&class) {
                classes.push(class);
            }
        }
        if classes.is_empty() {
            return Err(err(
                p.classes.span(),
                format!("policy {name}: classes must name at least one data class"),
            ));
        }
        let days = *p.retain_days.get_ref();
        if !(1..=36_500).contains(&days) {
            return Err(err(
                p.retain_days.span(),
                format!("policy {name}: retain_days = {days} is out of range (1 to 36500)"),
            ));
        }
        if p.trigger.get_ref() != "session_end" {
            return Err(err(
                p.trigger.span(),
                format!(
                    "policy {name}: trigger {:?} is not supported (only \"session_end\")",
                    p.trigger.get_ref()
                ),
            ));
        }
        let action = match p.action.get_ref().as_str() {
            "shred" => Action::Shred,
            "review" => Action::Review,
            other => {
                return Err(err(
                    p.action.span(),
                    format!("policy {name}: action {other:?} is not \"shred\" or \"review\""),
                ));
            }
        };
        let mode = match p.mode.get_ref().as_str() {
            "governance" => Mode::Governance,
            "compliance" => Mode::Compliance,
            other => {
                return Err(err(
                    p.mode.span(),
                    format!(
                        "policy {name}: mode {other:?} is not \"governance\" or \"compliance\""
                    ),
                ));
            }
        };
        for (what, list) in [("portals", &p.portals), ("skills", &p.skills)] {
            if list.is_empty() || list.iter().any(|x| x.is_empty()) {
                return Err(err(
                    p.name.span(),
                    format!("policy {name}: {what} must list at least one name, or \"*\""),
                ));
            }
        }
        out.push(Policy {
            name: name.clone(),
            description: p.description,
            portals: p.portals,
            skills: p.skills,
            classes,
            fields: p.fields,
            retain_days: days as u32,
            action,
            mode,
            file: file.clone(),
        });
    }
    Ok(out)
}

/// A validated set of policies from a directory, with the hash that identifies it.
#[derive(Clone, Debug)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
    /// SHA-256 over every file's name and bytes, in name order.
    pub hash: [u8; 32],
}

/// Loads and checks every `*.toml` in `dir`; all problems are reported, not just the first.
pub fn load_dir(dir: &Path) -> Result<PolicySet, Vec<PolicyError>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            return Err(vec![PolicyError {
                path: dir.to_path_buf(),
                line: 0,
                message: format!("cannot read the directory: {e}"),
            }]);
        }
    };
    files.sort();
    let mut errors = Vec::new();
    let mut policies: Vec<Policy> = Vec::new();
    let mut hashed = Vec::new();
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(PolicyError {
                    path: f.clone(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        hashed.extend_from_slice(
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .as_bytes(),
        );
        hashed.push(0);
        hashed.extend_from_slice(&sha256(text.as_bytes()));
        match parse_file(f, &text) {
            Ok(ps) => {
                for p in ps {
                    if let Some(other) = policies.iter().find(|q| q.name == p.name) {
                        errors.push(PolicyError {
                            path: f.clone(),
                            line: 0,
                            message: format!("policy {} is also defined in {}", p.name, other.file),
                        });
                    } else {
                        policies.push(p);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if files.is_empty() {
        errors.push(PolicyError {
            path: dir.to_path_buf(),
            line: 0,
            message: "no policy files (*.toml) here".into(),
        });
    }
    if errors.is_empty() {
        Ok(PolicySet {
            policies,
            hash: sha256(&hashed),
        })
    } else {
        Err(errors)
    }
}

/// What a policy is matched against: one archive object of one session.
pub struct Subject<'a> {
    pub portal: &'a str,
    pub skill: &'a str,
    pub class: DataClass,
    pub fields: &'a BTreeMap<String, String>,
}

impl Policy {
    pub fn selects(&self, s: &Subject<'_>) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        any(&self.portals, s.portal)
            && any(&self.skills, s.skill)
            && self.classes.contains(&s.class)
            && self.fields.iter().all(|(k, v)| s.fields.get(k) == Some(v))
    }

    /// Whether `new` may replace this installed policy: a compliance policy may only be kept or
    /// lengthened, never shortened, narrowed or removed.
    pub fn compliance_allows(&self, new: Option<&Policy>) -> Result<(), String> {
        if self.mode != Mode::Compliance {
            return Ok(());
        }
        let Some(n) = new else {
            return Err(format!(
                "policy {} is in compliance mode and cannot be removed",
                self.name
            ));
        };
        if n.mode != Mode::Compliance {
            return Err(format!(
                "policy {} is in compliance mode and cannot be turned into governance mode",
                self.name
            ));
        }
        if n.retain_days < self.retain_days {
            return Err(format!(
                "policy {} is in compliance mode: retention cannot go from {} down to {} days",
                self.name, self.retain_days, n.retain_days
            ));
        }
        if n.portals != self.portals
            || n.skills != self.skills
            || n.classes != self.classes
            || n.fields != self.fields
            || n.action != self.action
        {
            return Err(format!(
                "policy {} is in compliance mode: what it selects and its action cannot change",
                self.name
            ));
        }
        Ok(())
    }
}

/// The policy that governs a subject: the longest retention among those that select it.
pub fn governing<'p>(policies: &'p [Policy], s: &Subject<'_>) -> Option<&'p Policy> {
    policies
        .iter()
        .filter(|p| p.selects(s))
        .max_by_key(|p| (p.retain_days, p.action == Action::Review))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Vec<Policy>, String> {
        parse_file(Path::new("p.toml"), text).map_err(|e| e.to_string())
    }

    const GOOD: &str = "[[policy]]\nname = \"x\"\nclasses = [\"transcript\"]\nretain_days = 30\naction = \"shred\"\nmode = \"governance\"\n";

    #[test]
    fn errors_name_the_line() {
        assert!(one(GOOD).is_ok());
        let e = one(&GOOD.replace("retain_days = 30", "retain_days = 0")).unwrap_err();
        assert!(
            e.starts_with("p.toml:4:") && e.contains("out of range"),
            "{e}"
        );
        let e = one(&GOOD.replace("\"transcript\"", "\"video\"")).unwrap_err();
        assert!(e.starts_with("p.toml:3:") && e.contains("video"), "{e}");
        let e = one(&format!("{GOOD}colour = \"red\"\n")).unwrap_err();
        assert!(e.starts_with("p.toml:7:") && e.contains("colour"), "{e}");
        let e = one(&GOOD.replace("\"shred\"", "\"burn\"")).unwrap_err();
        assert!(e.starts_with("p.toml:5:"), "{e}");
        let e = one(&GOOD.replace("\"governance\"", "\"forever\"")).unwrap_err();
        assert!(e.starts_with("p.toml:6:"), "{e}");
    }

    #[test]
    fn longest_retention_wins_and_compliance_only_lengthens() {
        let mut a = one(GOOD).unwrap().remove(0);
        let mut b = a.clone();
        b.name = "y".into();
        b.retain_days = 90;
        let fields = BTreeMap::new();
        let s = Subject {
            portal: "p",
            skill: "s",
            class: DataClass::Transcript,
            fields: &fields,
        };
        let both = [a.clone(), b.clone()];
        assert_eq!(governing(&both, &s).unwrap().name, "y");
        let other = Subject {
            class: DataClass::Recording,
            ..s
        };
        assert!(governing(&both, &other).is_none());
        a.mode = Mode::Compliance;
        let mut longer = a.clone();
        longer.retain_days = 60;
        assert!(a.compliance_allows(Some(&longer)).is_ok());
        let mut shorter = a.clone();
        shorter.retain_days = 10;
        assert!(
            a.compliance_allows(Some(&shorter))
                .unwrap_err()
                .contains("cannot go from 30 down to 10")
        );
        assert!(a.compliance_allows(None).is_err());
    }
}
