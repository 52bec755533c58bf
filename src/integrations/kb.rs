//! The knowledge base: Markdown articles (from a folder, or managed through the API) indexed
//! with SQLite FTS5, suggested to the agent from what the customer wrote and from the machine's
//! diagnostics, and pushed into the chat with one click.
//!
//! An article file is `SLUG.md`: an optional front matter block, then Markdown.
//!
//! ```text
//! ---
//! title: Update the VPN client
//! tags: vpn, network
//! when: openvpn < 2.6.0; network-manager-openvpn < 1.10
//! push_url: https://intranet.example.org/vpn/openvpn-2.6.msi
//! ---
//! # Update the VPN client
//! ...
//! ```
//!
//! `when` rules are checked against the installed packages in the session's diagnostics: a
//! package installed below the version makes the article a suggestion, with its `push_url` (a
//! file or page to send) offered beside it.

use std::cmp::Ordering;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::app::App;
use crate::model::now_rfc3339;
use crate::store::KbArticle;

pub const MAX_ARTICLE_BYTES: usize = 256 * 1024;

pub fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 80
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Parses `package < version` rules separated by `;`.
pub fn parse_rules(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (p, v) = part
            .split_once('<')
            .ok_or_else(|| format!("rule {part:?} is not like \"package < version\""))?;
        let (p, v) = (p.trim(), v.trim());
        if p.is_empty()
            || v.is_empty()
            || p.contains(char::is_whitespace)
            || v.contains(char::is_whitespace)
        {
            return Err(format!("rule {part:?} is not like \"package < version\""));
        }
        out.push((p.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Parses an article file.
pub fn parse_article(slug: &str, text: &str) -> Result<KbArticle, String> {
    if !valid_slug(slug) {
        return Err(format!(
            "{slug:?}: a file name must be 1-80 characters of a-z, 0-9, '-' or '_' before .md"
        ));
    }
    if text.len() > MAX_ARTICLE_BYTES {
        return Err(format!("{slug}: larger than {MAX_ARTICLE_BYTES} bytes"));
    }
    let (mut title, mut tags, mut rules, mut push_url) = (None, Vec::new(), Vec::new(), None);
    let body = if let Some(rest) = text.strip_prefix("---\n") {
        let end = rest
            .find("\n---\n")
            .or_else(|| rest.strip_suffix("\n---").map(str::len))
            .ok_or_else(|| format!("{slug}: the front matter has no closing ---"))?;
        for (i, line) in rest[..end].lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (k, v) = line.split_once(':').ok_or_else(|| {
                format!("{slug}: front matter line {} is not \"key: value\"", i + 2)
            })?;
            let v = v.trim();
            match k.trim() {
                "title" => title = Some(v.to_string()),
                "tags" => {
                    tags = v
                        .split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect()
                }
                "when" => rules.extend(parse_rules(v).map_err(|e| format!("{slug}: {e}"))?),
                "push_url" => {
                    super::http::parse_url(v).map_err(|e| format!("{slug}: push_url: {e}"))?;
                    push_url = Some(v.to_string());
                }
                other => {
                    return Err(format!(
                        "{slug}: unknown front matter key {other:?} (title, tags, when, push_url)"
                    ));
                }
            }
        }
        rest.get(end + 5..).unwrap_or("")
    } else {
        text
    };
    let title = title
        .or_else(|| {
            body.lines()
                .find_map(|l| l.strip_prefix("# "))
                .map(|t| t.trim().to_string())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{slug}: no title (a \"title:\" line or a \"# \" heading)"))?;
    Ok(KbArticle {
        slug: slug.to_string(),
        title,
        body: body.trim().to_string(),
        tags,
        source: "folder".into(),
        push_url,
        rules,
        updated_at: now_rfc3339(),
    })
}

/// Compares versions as dpkg does, closely enough for rules: an optional epoch, then runs of
/// digits compared as numbers and other runs compared character by character, with `~` sorting
/// before everything (so 1.0~rc1 < 1.0).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let split_epoch = |v: &str| -> (u64, String) {
        match v.split_once(':') {
            Some((e, rest)) if e.bytes().all(|c| c.is_ascii_digit()) && !e.is_empty() => {
                (e.parse().unwrap_or(0), rest.to_string())
            }
            _ => (0, v.to_string()),
        }
    };
    let (ea, ra) = split_epoch(a);
    let (eb, rb) = split_epoch(b);
    ea.cmp(&eb)
        .then_with(|| compare_rest(ra.as_bytes(), rb.as_bytes()))
}

fn order(c: Option<&u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_alphabetic() => i32::from(*c),
        Some(c) => i32::from(*c) + 256,
    }
}

fn compare_rest(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while !a.is_empty() || !b.is_empty() {
        // Non-digit runs.
        loop {
            let (ca, cb) = (
                a.first().filter(|c| !c.is_ascii_digit()),
                b.first().filter(|c| !c.is_ascii_digit()),
            );
            if ca.is_none() && cb.is_none() {
                break;
            }
            match order(ca).cmp(&order(cb)) {
                Ordering::Equal => {
                    a = &a[1..];
                    b = &b[1..];
                }
                o => return o,
            }
        }
        // Digit runs, as numbers.
        let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
        let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
        let o = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
        if o != Ordering::Equal {
            return o;
        }
        a = &a[na..];
        b = &b[nb..];
    }
    Ordering::Equal
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|c| **c == b'0').count();
    &d[z..]
}

/// Words worth searching for, as an FTS5 query (`"w1" OR "w2" ...`), or None.
pub fn fts_query(text: &str) -> Option<String> {
    const STOP: &[&str] = &[
        "the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "her", "was", "one",
        "our", "out", "has", "have", "had", "his", "how", "its", "may", "new", "now", "see", "two",
        "who", "did", "get", "got", "him", "let", "she", "too", "use", "that", "this", "with",
        "from", "they", "will", "would", "there", "their", "what", "when", "which", "your",
        "about", "could", "does", "just", "into", "than", "then", "them", "these", "some", "been",
        "were", "hello", "thanks", "thank", "please", "help", "need", "want", "hi",
    ];
    let mut words: Vec<String> = Vec::new();
    for w in text.split(|c: char| !c.is_alphanumeric()) {
        let w = w.to_lowercase();
        if w.chars().count() >= 3 && !STOP.contains(&w.as_str()) && !words.contains(&w) {
            words.push(w);
        }
        if words.len() >= 24 {
            break;
        }
    }
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

/// Suggestions for a session: articles matching the customer's words, and articles whose
/// version rules match the installed packages.
pub async fn suggest(
    app: &Arc<App>,
    words: String,
    packages: Vec<(String, String)>,
) -> Result<Vec<Value>, crate::store::StoreError> {
    let query = fts_query(&words);
    app.db(move |s| {
        s.read(|tx| {
            let mut out: Vec<Value> = Vec::new();
            for (slug, package, below) in tx.kb_rules()? {
                if let Some((_, v)) = packages.iter().find(|(p, _)| p == &package)
                    && compare_versions(v, &below) == Ordering::Less
                    && let Some(a) = tx.kb_get(&slug)?
                {
                    out.push(json!({
                        "slug": a.slug, "title": a.title, "push_url": a.push_url,
                        "reason": "version", "package": package, "installed": v, "below": below,
                    }));
                }
            }
            if let Some(q) = query {
                for (slug, title, snippet) in tx.kb_search(&q, 5)? {
                    if !out.iter().any(|o| o["slug"] == slug.as_str()) {
                        let push_url = tx.kb_get(&slug)?.and_then(|a| a.push_url);
                        out.push(json!({ "slug": slug, "title": title, "snippet": snippet, "push_url": push_url, "reason": "words" }));
                    }
                }
            }
            Ok(out)
        })
    })
    .await
}

/// What a folder holds: (slug, text) per `*.md` file, and errors for files that cannot be read.
fn read_folder(dir: &Path) -> (Vec<KbArticle>, Vec<String>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (ok, vec![format!("cannot read {}", dir.display())]);
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "md") {
            continue;
        }
        let slug = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        match std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|t| parse_article(&slug, &t))
        {
            Ok(a) => ok.push(a),
            Err(e) => bad.push(e),
        }
    }
    (ok, bad)
}

/// A cheap fingerprint of the folder: names, sizes and modification times.
fn fingerprint(dir: &Path) -> Vec<(String, u64, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().ok(),
            ))
        })
        .collect();
    v.sort();
    v
}

/// Indexes the folder now; returns (articles indexed, errors).
pub async fn index_folder(
    app: &Arc<App>,
    dir: &Path,
) -> Result<(usize, Vec<String>), crate::store::StoreError> {
    let (articles, errors) = read_folder(dir);
    for e in &errors {
        tracing::warn!(error = %e, "a knowledge-base article was skipped");
    }
    let n = articles.len();
    app.db(move |s| {
        s.write(|tx| {
            let present: Vec<String> = articles.iter().map(|a| a.slug.clone()).collect();
            for old in tx.kb_list()? {
                if old.source == "folder" && !present.contains(&old.slug) {
                    tx.kb_delete(&old.slug)?;
                }
            }
            for a in &articles {
                // An article managed through the API keeps precedence over a file of the same name.
                if tx.kb_get(&a.slug)?.is_none_or(|o| o.source == "folder") {
                    tx.kb_upsert(a)?;
                }
            }
            Ok(())
        })
    })
    .await?;
    Ok((n, errors))
}

/// Indexes the folder at start and again whenever it changes (checked every few seconds).
pub async fn watch(app: Arc<App>, dir: std::path::PathBuf) {
    let mut stop = app.stop.subscribe();
    let mut last = None;
    loop {
        let fp = fingerprint(&dir);
        if last.as_ref() != Some(&fp) {
            match index_folder(&app, &dir).await {
                Ok((n, _)) => tracing::info!(articles = n, "knowledge base indexed"),
                Err(e) => tracing::error!(error = %e, "cannot index the knowledge base"),
            }
            last = Some(fp);
        }
        tokio::select! {
            _ = async { drop(stop.wait_for(|s| *s).await) } => return,
            _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_like_dpkg() {
        for (a, b, o) in [
            ("1.0", "1.0", Ordering::Equal),
            ("1.2", "1.10", Ordering::Less),
            ("2.6.0", "2.5.11", Ordering::Greater),
            ("1.0~rc1", "1.0", Ordering::Less),
            ("1:0.9", "2.0", Ordering::Greater),
            ("3.0.11-1~deb12u2", "3.0.13", Ordering::Less),
            ("1.0a", "1.0", Ordering::Greater),
            ("1.001", "1.1", Ordering::Equal),
        ] {
            assert_eq!(compare_versions(a, b), o, "{a} vs {b}");
        }
    }

    #[test]
    fn articles_parse_with_and_without_front_matter() {
        let a = parse_article(
            "vpn",
            "---\ntitle: Update the VPN client\ntags: vpn, network\nwhen: openvpn < 2.6.0; nm-openvpn < 1.10\npush_url: https://intranet.example.org/vpn.msi\n---\n# Heading\nBody text.\n",
        )
        .unwrap();
        assert_eq!(a.title, "Update the VPN client");
        assert_eq!(a.tags, ["vpn", "network"]);
        assert_eq!(
            a.rules,
            [
                ("openvpn".into(), "2.6.0".into()),
                ("nm-openvpn".into(), "1.10".into())
            ]
        );
        assert_eq!(a.body, "# Heading\nBody text.");
        let b = parse_article("printer", "# Printer offline\nSteps.").unwrap();
        assert_eq!(b.title, "Printer offline");
        for (slug, text, want) in [
            ("Bad Name", "# x", "file name"),
            ("x", "---\ntitle: t\n", "closing ---"),
            (
                "x",
                "---\ncolour: red\n---\n# t",
                "unknown front matter key",
            ),
            ("x", "---\nwhen: openssl 3.0\n---\n# t", "package < version"),
            ("x", "no heading", "no title"),
            ("x", "---\npush_url: ftp://x\n---\n# t", "push_url"),
        ] {
            let e = parse_article(slug, text).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn queries_keep_content_words_once() {
        assert_eq!(
            fts_query("Hello, my VPN won't connect; the VPN says TLS error").unwrap(),
            "\"vpn\" OR \"won\" OR \"connect\" OR \"says\" OR \"tls\" OR \"error\""
        );
        assert_eq!(fts_query("hi, thanks!"), None);
    }
}
