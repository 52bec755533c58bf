//! The web pages in real headless Chromium, driven over WebDriver: a customer asks for help in
//! one browser, agents answer in others.

use serde_json::json;

use crate::util::*;
use crate::webdriver::{Driver, available};

pub(crate) const AGENT_PW: &str = "agent password 123";

pub(crate) struct Stage {
    pub(crate) dir: Dir,
    pub(crate) s: Server,
    pub(crate) admin: String,
    files: tempfile::TempDir,
}

pub(crate) fn stage() -> Stage {
    let dir = Dir::new();
    let one_time = dir.init();
    let pw = dir.secret("agentpw", AGENT_PW);
    for name in ["alice", "bob"] {
        dir.run(&[
            "user",
            "add",
            name,
            "--role",
            "agent",
            "--password-file",
            pw.to_str().unwrap(),
            "--skills",
            "support:general",
        ])
        .ok();
    }
    let s = dir.serve();
    let admin = s.admin(&one_time, "admin password long");
    Stage {
        dir,
        s,
        admin,
        files: tempfile::tempdir().unwrap(),
    }
}

pub(crate) fn agent_login(b: &crate::webdriver::Browser<'_>, base: &str, name: &str) {
    b.goto(&format!("{base}/agent"));
    b.type_into("#login-name", name);
    b.type_into("#login-password", AGENT_PW);
    b.click("#login-submit");
    b.find("#console");
    b.wait_text("#whoami", name);
}

pub(crate) fn panel(id: &str) -> String {
    format!(".session-panel[data-session-id=\"{id}\"]")
}

#[test]
fn customer_and_agents_in_browsers_chat_share_files_transfer_and_rate() {
    if !available() {
        return;
    }
    let st = stage();
    let base = format!("https://{}", st.s.addr);
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let cust = driver.browser(profiles.path().join("customer"));
    let alice = driver.browser(profiles.path().join("alice"));
    let bob = driver.browser(profiles.path().join("bob"));

    // The customer fills the portal's form (the account number arrives prefilled and hidden).
    cust.goto(&format!("{base}/p/support?question=prefilled"));
    cust.type_into("#name", "Grace Customer");
    cust.js("document.getElementById('question').value = '';", json!([]));
    cust.type_into("#question", "The printer prints blank pages");
    cust.click("#submit");
    cust.find("#waiting");
    let url = cust.url();
    let id = url.rsplit('/').next().unwrap().to_string();
    assert!(id.starts_with("sess_"), "{url}");
    cust.wait_text("#queue-position", "1");

    agent_login(&alice, &base, "alice");
    alice.find(&format!(".queue-item[data-request-id=\"{id}\"] .accept"));
    alice.click(&format!(".queue-item[data-request-id=\"{id}\"] .accept"));
    alice.find(&panel(&id));
    cust.wait_text("#status", "alice");

    alice.type_into(&format!("{} .chat-input", panel(&id)), "Hello from Alice");
    alice.click(&format!("{} .send", panel(&id)));
    cust.wait_text("#messages", "Hello from Alice");
    cust.type_into("#chat-input", "Hi Alice, the printer is broken");
    cust.click("#send");
    alice.wait_text(
        &format!("{} .messages", panel(&id)),
        "the printer is broken",
    );

    // Files both ways, with their SHA-256 shown.
    let cpath = st.files.path().join("printer-log.txt");
    let cbytes: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&cpath, &cbytes).unwrap();
    cust.type_into("#file-input", cpath.to_str().unwrap());
    cust.click("#file-send");
    let csha = hex::encode(custos::crypto::sha256(&cbytes));
    alice.wait_text(&format!("{} .files .file .sha256", panel(&id)), &csha);
    let apath = st.files.path().join("driver-fix.cfg");
    let abytes = b"driver = updated\nretries = 3\n".to_vec();
    std::fs::write(&apath, &abytes).unwrap();
    alice.type_into(
        &format!("{} .file-input", panel(&id)),
        apath.to_str().unwrap(),
    );
    alice.click(&format!("{} .file-send", panel(&id)));
    let asha = hex::encode(custos::crypto::sha256(&abytes));
    cust.wait_text("#files .file .sha256", &asha);

    // Alice hands over to Bob, who picks it up in his console.
    alice.type_into(&format!("{} .transfer-agent", panel(&id)), "bob");
    alice.click(&format!("{} .transfer-send", panel(&id)));
    alice.wait_text(&format!("{} .status", panel(&id)), "bob");
    agent_login(&bob, &base, "bob");
    bob.find(&panel(&id));
    bob.type_into(
        &format!("{} .chat-input", panel(&id)),
        "Bob here: try printing again",
    );
    bob.click(&format!("{} .send", panel(&id)));
    cust.wait_text("#messages", "Bob here: try printing again");
    bob.click(&format!("{} .end", panel(&id)));

    // The customer rates the session.
    cust.find("#survey");
    cust.click("#rating-4");
    cust.type_into("#survey-comment", "Quick and friendly");
    cust.click("#survey-submit");
    cust.find("#survey-thanks");

    // What the archive holds matches exactly what was said and sent.
    let v =
        st.s.get(&format!("/api/v1/sessions/{id}"), Some(&st.admin))
            .json()
            .unwrap();
    let chat: Vec<(String, String)> = v["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "chat")
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        chat,
        [
            ("alice".to_string(), "Hello from Alice".to_string()),
            (
                "customer".to_string(),
                "Hi Alice, the printer is broken".to_string()
            ),
            (
                "bob".to_string(),
                "Bob here: try printing again".to_string()
            ),
        ]
    );
    assert_eq!(v["survey"]["rating"], 4);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let data = custos::app::DataDir::new(st.dir.path());
    let mut store = data.open_store().unwrap();
    let keys = custos::keys::Keyring::new(data.master_files().load_keyfile().unwrap());
    for (f, want) in files.iter().zip([&cbytes, &abytes]) {
        let rows = store.read(|tx| tx.files(&id)).unwrap();
        let row = rows
            .iter()
            .find(|r| r.id == f["file_id"].as_str().unwrap())
            .unwrap();
        let got = data
            .archive()
            .read_all(&mut store, &keys, row.object_id.parse().unwrap())
            .unwrap();
        assert_eq!(&got[..], &want[..], "file {} from the archive", row.name);
    }
    drop(store);
    st.dir.run(&["audit", "verify"]).ok();
}

#[test]
fn a_customer_joins_by_connection_code() {
    if !available() {
        return;
    }
    let st = stage();
    let base = format!("https://{}", st.s.addr);
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let alice = driver.browser(profiles.path().join("alice"));
    let cust = driver.browser(profiles.path().join("customer"));
    agent_login(&alice, &base, "alice");
    alice.type_into("#code-ref", "TICKET-99");
    alice.click("#code-new");
    alice.wait_text("#code-value", " ");
    let code = alice.text("#code-value");
    assert_eq!(
        code.chars().filter(char::is_ascii_digit).count(),
        9,
        "{code}"
    );

    cust.goto(&format!("{base}/code"));
    cust.type_into("#code", &code);
    cust.type_into("#name", "Henry");
    cust.click("#submit");
    cust.find("#chat-input");
    let id = cust.url().rsplit('/').next().unwrap().to_string();
    alice.find(&panel(&id));
    cust.type_into("#chat-input", "I was told to use a code");
    cust.click("#send");
    alice.wait_text(
        &format!("{} .messages", panel(&id)),
        "I was told to use a code",
    );
    alice.type_into(&format!("{} .chat-input", panel(&id)), "Welcome, Henry");
    alice.click(&format!("{} .send", panel(&id)));
    cust.wait_text("#messages", "Welcome, Henry");
    let v =
        st.s.get(&format!("/api/v1/sessions/{id}"), Some(&st.admin))
            .json()
            .unwrap();
    assert_eq!(v["ref"], "TICKET-99");
    assert_eq!(v["via"], "code");
}

#[test]
fn an_invite_link_from_the_code_api_fills_in_the_code_and_joins_on_a_press() {
    if !available() {
        return;
    }
    let st = stage();
    let alice = st.s.login("alice", AGENT_PW).0;
    let r = st.s.post(
        "/api/v1/codes",
        Some(&alice),
        serde_json::json!({ "ref": "CRM-7", "ttl_s": 600 }),
    );
    assert_eq!(r.status, 201, "{}", r.error_message());
    let v = r.json().unwrap();
    let digits: String = v["code"]
        .as_str()
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let invite = v["invite_url"].as_str().unwrap();
    assert_eq!(
        invite,
        format!("https://{}/code?code={digits}", st.s.addr),
        "the link points where the caller reached the appliance"
    );
    // Fetching the link (a mail scanner, a link preview) does not use the code up.
    let path = invite.split_once(&st.s.addr).unwrap().1;
    assert_eq!(st.s.get(path, None).status, 200);
    // A link with something other than a code fills in nothing.
    let r = st.s.get("/code?code=%22%3E%3Cscript%3E", None);
    assert!(!String::from_utf8_lossy(&r.body).contains("<script>"));

    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let cust = driver.browser(profiles.path().join("customer"));
    cust.goto(invite);
    let filled = cust.js(
        "return document.querySelector('#code').value;",
        serde_json::json!([]),
    );
    assert_eq!(filled, serde_json::json!(digits));
    cust.type_into("#name", "Ivy");
    cust.click("#submit");
    cust.find("#chat-input");
    let id = cust.url().rsplit('/').next().unwrap().to_string();
    let v =
        st.s.get(&format!("/api/v1/sessions/{id}"), Some(&st.admin))
            .json()
            .unwrap();
    assert_eq!(v["ref"], "CRM-7");
    assert_eq!(v["via"], "code");
}

#[test]
fn the_agent_sends_a_suggested_article_with_one_click() {
    if !available() {
        return;
    }
    let st = stage();
    let article = json!({
        "title": "The VPN disconnects every few minutes",
        "body": "Install the newer VPN client from the software centre, then sign in again.",
        "tags": ["vpn"],
    });
    let r = st.s.call(
        hyper::Method::PUT,
        "/api/v1/kb/articles/vpn-drops",
        Some(&st.admin),
        Some(article),
    );
    assert_eq!(r.status, 200, "{}", r.error_message());
    let base = format!("https://{}", st.s.addr);
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let alice = driver.browser(profiles.path().join("alice"));
    let cust = driver.browser(profiles.path().join("customer"));
    agent_login(&alice, &base, "alice");
    alice.click("#code-new");
    alice.wait_text("#code-value", " ");
    let code = alice.text("#code-value");
    cust.goto(&format!("{base}/code"));
    cust.type_into("#code", &code);
    cust.type_into("#name", "Jan");
    cust.click("#submit");
    cust.find("#chat-input");
    let id = cust.url().rsplit('/').next().unwrap().to_string();
    alice.find(&panel(&id));
    cust.type_into("#chat-input", "My VPN disconnects all the time");
    cust.click("#send");
    let item = format!("{} .kb-item[data-slug=\"vpn-drops\"]", panel(&id));
    alice.wait_text(&item, "The VPN disconnects every few minutes");
    alice.click(&format!("{item} .kb-push"));
    cust.wait_text("#messages", "Install the newer VPN client");
    alice.wait_text(
        &format!("{} .kb-status", panel(&id)),
        "Sent \"The VPN disconnects every few minutes\"",
    );
}

#[test]
fn the_supervisor_dashboard_follows_representatives_and_queues_live() {
    if !available() {
        return;
    }
    let st = stage();
    let base = format!("https://{}", st.s.addr);
    let driver = Driver::start();
    let profiles = tempfile::tempdir().unwrap();
    let sup = driver.browser(profiles.path().join("supervisor"));
    sup.goto(&format!("{base}/dashboard"));
    // An agent may not watch the board.
    sup.type_into("#login-name", "alice");
    sup.type_into("#login-password", AGENT_PW);
    sup.click("#login-submit");
    sup.wait_text("#board-error", "role");
    sup.click("#logout");
    sup.type_into("#login-name", "admin");
    sup.type_into("#login-password", "admin password long");
    sup.click("#login-submit");
    sup.wait_text("#stream-status", "Live");
    sup.wait_text("#queues tbody", "general");

    // alice comes online and a customer waits: the board shows both without a reload.
    let alice = st.s.login("alice", AGENT_PW).0;
    st.s.post(
        "/api/v1/agent/presence",
        Some(&alice),
        json!({ "status": "available" }),
    );
    sup.wait_text("#reps tbody tr[data-agent=\"alice\"]", "available");
    st.s.post(
        "/api/v1/requests",
        None,
        json!({ "portal": "support", "name": "Kim", "question": "q" }),
    );
    sup.wait_text("#total-waiting", "1");
    sup.wait_text("#queues tbody tr[data-queue=\"support/general\"]", "1");
    st.s.post(
        "/api/v1/agent/presence",
        Some(&alice),
        json!({ "status": "away" }),
    );
    sup.wait_text("#reps tbody tr[data-agent=\"alice\"]", "away");
}
