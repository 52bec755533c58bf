//! The knowledge base: Markdown articles from a folder and the API, full-text search,
//! suggestions from what the customer wrote, and an article pushed into the chat.

use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};

use crate::util::*;

const AGENT_PW: &str = "agent password 123";

#[test]
fn articles_are_indexed_suggested_from_the_chat_and_pushed_with_one_click() {
    let dir = Dir::new();
    let one_time = dir.init();
    let articles = dir.path().join("articles");
    std::fs::create_dir(&articles).unwrap();
    std::fs::write(
        articles.join("vpn-client.md"),
        "---\ntitle: The VPN disconnects every few minutes\ntags: vpn, network\nwhen: openvpn < 2.6.0\npush_url: https://intranet.example.org/vpn/openvpn-2.6.msi\n---\nInstall OpenVPN 2.6 or later; older clients drop the tunnel on rekeying.\n",
    )
    .unwrap();
    std::fs::write(
        articles.join("printer-offline.md"),
        "# Printer shows offline\n\nTurn the printer off and on, then remove and add it again under Settings > Printers.\n",
    )
    .unwrap();
    // A broken article is skipped, and the rest still load.
    std::fs::write(
        articles.join("broken.md"),
        "---\ncolour: red\n---\n# Broken\n",
    )
    .unwrap();
    let cfg = dir.path().join("custos.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[knowledge]\narticles = \"{}\"\n",
        articles.display()
    ));
    std::fs::write(&cfg, text).unwrap();
    let pw = dir.secret("agentpw", AGENT_PW);
    dir.run(&[
        "user",
        "add",
        "alice",
        "--role",
        "agent",
        "--password-file",
        pw.to_str().unwrap(),
        "--skills",
        "support:general",
    ])
    .ok();
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    let alice = s.login("alice", AGENT_PW).0;

    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "waited 30 s for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let slugs = |s: &Server| -> Vec<String> {
        let v = s.get("/api/v1/kb/articles", Some(&alice)).json().unwrap();
        v["articles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["slug"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for("the folder to be indexed", &|| slugs(&s).len() == 2);
    assert_eq!(slugs(&s), ["printer-offline", "vpn-client"]);
    let vpn = s
        .get("/api/v1/kb/articles/vpn-client", Some(&alice))
        .json()
        .unwrap();
    assert_eq!(vpn["title"], "The VPN disconnects every few minutes");
    assert_eq!(
        vpn["rules"],
        json!([{ "package": "openvpn", "below": "2.6.0" }])
    );
    assert_eq!(s.get("/api/v1/kb/articles/nope", Some(&alice)).status, 404);

    // Search ranks by the words (stemmed: "printers" finds "printer").
    let r = s
        .get("/api/v1/kb/search?q=printers%20offline", Some(&alice))
        .json()
        .unwrap();
    assert_eq!(r["results"][0]["slug"], "printer-offline", "{r}");
    let r = s.get("/api/v1/kb/search?q=%22%20OR%20*", Some(&alice));
    assert_eq!(
        r.status,
        200,
        "FTS syntax in a query is only words: {}",
        r.error_message()
    );

    // Managing articles: admin only, validated.
    for (slug, body, needle) in [
        ("Bad Slug", json!({ "title": "t", "body": "b" }), "slug"),
        ("ok", json!({ "title": "", "body": "b" }), "title"),
        (
            "ok",
            json!({ "title": "t", "body": "b", "rules": [{ "package": "x y", "below": "1" }] }),
            "package < version",
        ),
        (
            "ok",
            json!({ "title": "t", "body": "b", "push_url": "javascript:alert(1)" }),
            "push_url",
        ),
        (
            "ok",
            json!({ "title": "t", "body": "b", "colour": 1 }),
            "unknown field",
        ),
    ] {
        let r = s.call(
            Method::PUT,
            &format!("/api/v1/kb/articles/{}", slug.replace(' ', "%20")),
            Some(&admin),
            Some(body.clone()),
        );
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.error_message().contains(needle),
            "{body}: {}",
            r.error_message()
        );
    }
    let wifi = json!({ "title": "Wi-Fi keeps dropping", "body": "Forget the network, then join it again with the new passphrase.", "tags": ["wifi"] });
    assert_eq!(
        s.call(
            Method::PUT,
            "/api/v1/kb/articles/wifi",
            Some(&alice),
            Some(wifi.clone())
        )
        .status,
        403
    );
    let r = s.call(
        Method::PUT,
        "/api/v1/kb/articles/wifi",
        Some(&admin),
        Some(wifi),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    assert_eq!(slugs(&s).len(), 3);

    // A customer asks about their VPN; the agent gets the VPN article first.
    s.post(
        "/api/v1/agent/presence",
        Some(&alice),
        json!({ "status": "available" }),
    );
    let r = s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Hal", "question": "My VPN keeps disconnecting" }),
    );
    let req = r.json().unwrap();
    let id = req["request_id"].as_str().unwrap().to_string();
    let mut cust = s.ws(
        &id,
        &format!("Customer {}", req["customer_token"].as_str().unwrap()),
    );
    cust.expect("hello");
    let path = format!("/api/v1/sessions/{id}/suggestions");
    assert_eq!(
        s.get(&path, Some(&alice)).status,
        403,
        "not alice's session yet"
    );
    assert_eq!(
        s.post(
            &format!("/api/v1/requests/{id}/accept"),
            Some(&alice),
            json!({})
        )
        .status,
        200
    );
    cust.expect("accepted");
    let sug = s.get(&path, Some(&alice)).json().unwrap();
    assert_eq!(sug["suggestions"][0]["slug"], "vpn-client", "{sug}");
    assert_eq!(sug["suggestions"][0]["reason"], "words");
    assert!(!sug.to_string().contains("printer-offline"), "{sug}");
    // What the customer writes next changes the suggestions.
    cust.send(&json!({ "type": "chat", "text": "Also the printer shows offline" }));
    cust.expect("chat");
    let sug = s.get(&path, Some(&alice)).json().unwrap();
    let found: Vec<&str> = sug["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["slug"].as_str().unwrap())
        .collect();
    assert!(
        found.contains(&"printer-offline") && found.contains(&"vpn-client"),
        "{sug}"
    );

    // Diagnostics from the customer's machine: validated, stored, summarized to the agent, and
    // checked against the version rules (openvpn 2.5.1 is below 2.6.0).
    let ctoken = req["customer_token"].as_str().unwrap().to_string();
    let diag_path = format!("/api/v1/sessions/{id}/diagnostics");
    let diag = json!({
        "v": 1, "collected_at": "2026-11-28T10:00:00Z",
        "os": { "name": "Debian GNU/Linux", "version": "12", "kernel": "6.1.0-18-amd64", "arch": "x86_64", "hostname": "pc-17" },
        "cpu": { "model": "Xeon", "cores": 8, "load": [0.5, 0.4, 0.3] },
        "memory": { "total_bytes": 17179869184u64, "available_bytes": 8589934592u64 },
        "disks": [{ "mount": "/", "fs": "ext4", "total_bytes": 100, "free_bytes": 40 }],
        "network": [{ "name": "eth0", "mac": "52:54:00:12:34:56", "addresses": ["10.0.0.7/24"], "up": true }],
        "processes": [{ "pid": 1, "name": "systemd", "cpu_percent": 0.1, "rss_bytes": 1000 }],
        "packages": { "manager": "dpkg", "list": [{ "name": "openvpn", "version": "2.5.1-3" }, { "name": "bash", "version": "5.2.15-2" }] }
    });
    assert_eq!(
        s.post(&diag_path, Some(&alice), diag.clone()).status,
        403,
        "only the customer's machine sends them"
    );
    let mut bad = diag.clone();
    bad["cpu"]["cores"] = json!(0);
    let r = customer_post(&s, &diag_path, &ctoken, bad);
    assert_eq!(r.status, 400);
    assert!(r.error_message().contains("cores"), "{}", r.error_message());
    let huge = raw(
        &s,
        Method::POST,
        &diag_path,
        &format!("Customer {ctoken}"),
        vec![b' '; 5 * 1024 * 1024],
    );
    assert_eq!(huge.status, 413);
    let r = customer_post(&s, &diag_path, &ctoken, diag);
    assert_eq!(r.status, 201, "{}", r.error_message());
    assert_eq!(r.json().unwrap()["summary"]["packages"], 2);
    let sug = s.get(&path, Some(&alice)).json().unwrap();
    let by_version = sug["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["reason"] == "version")
        .unwrap_or_else(|| panic!("{sug}"));
    assert_eq!(by_version["slug"], "vpn-client");
    assert_eq!(by_version["installed"], "2.5.1-3");
    let got = s.get(&diag_path, Some(&alice)).json().unwrap();
    assert_eq!(got["diagnostics"][0]["os"]["kernel"], "6.1.0-18-amd64");
    assert_eq!(
        s.get(&diag_path, Some(&admin)).status,
        200,
        "admins read any session"
    );
    // The agent asks for fresh diagnostics: the customer's client is told.
    let r = s.post(&format!("{diag_path}/request"), Some(&alice), json!({}));
    assert_eq!(r.status, 202, "{}", r.error_message());
    assert_eq!(cust.expect("diagnostics_request")["by"], "alice");

    // One click: the article with a file to push arrives as a link; one without, as text.
    let r = s.post(
        &format!("/api/v1/sessions/{id}/kb/vpn-client/push"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let got = cust.expect("url");
    assert_eq!(
        got["url"],
        "https://intranet.example.org/vpn/openvpn-2.6.msi"
    );
    assert_eq!(got["title"], "The VPN disconnects every few minutes");
    let r = s.post(
        &format!("/api/v1/sessions/{id}/kb/printer-offline/push"),
        Some(&alice),
        json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let got: Value = cust.expect("chat");
    assert!(
        got["text"]
            .as_str()
            .unwrap()
            .starts_with("Printer shows offline\n\nTurn the printer off"),
        "{got}"
    );
    assert_eq!(got["from"], "agent");
    assert_eq!(
        s.post(
            &format!("/api/v1/sessions/{id}/kb/nope/push"),
            Some(&alice),
            json!({})
        )
        .status,
        404
    );

    // The folder is watched: a new file appears, a deleted one goes, an API article stays.
    std::fs::write(
        articles.join("mfa-reset.md"),
        "# Reset two-factor authentication\n\nAsk your administrator.\n",
    )
    .unwrap();
    std::fs::remove_file(articles.join("printer-offline.md")).unwrap();
    wait_for("the folder change", &|| {
        slugs(&s) == ["mfa-reset", "vpn-client", "wifi"]
    });
    assert_eq!(
        s.call(
            Method::DELETE,
            "/api/v1/kb/articles/wifi",
            Some(&admin),
            None
        )
        .status,
        204
    );
    assert_eq!(
        s.call(
            Method::DELETE,
            "/api/v1/kb/articles/wifi",
            Some(&admin),
            None
        )
        .status,
        404
    );
    let audit = s
        .get("/api/v1/audit/entries?limit=1000", Some(&admin))
        .json()
        .unwrap();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"kb.article.saved") && actions.contains(&"kb.article.deleted"),
        "{actions:?}"
    );
}
