//! A small WebDriver client (W3C protocol over HTTP to a local chromedriver) driving real
//! headless Chromium. Written here rather than pulled in, to keep the dependency tree lean; it
//! speaks only what the browser tests need.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

/// Chromium and chromedriver, or `None` (announced loudly) when they are not installed outside
/// CI. In CI a missing browser fails the test.
pub fn available() -> bool {
    let ok = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new("/usr/bin/chromedriver").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "chromium and chromedriver are required in CI (Debian packages chromium, chromium-driver)"
            );
        }
        eprintln!(
            "\n*** SKIPPED: chromium or chromedriver is not installed (not in CI, so this is a skip) ***\n"
        );
    }
    ok
}

/// A running chromedriver.
pub struct Driver {
    child: Child,
    port: u16,
    rt: tokio::runtime::Runtime,
}

impl Driver {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let d = Driver { child, port, rt };
        let start = Instant::now();
        while d.call("GET", "/status", None).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let port = self.port;
        let (method, path) = (method.to_string(), path.to_string());
        self.rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let bytes = body.map(|b| b.to_string()).unwrap_or_default();
            let req = hyper::Request::builder()
                .method(method.as_str())
                .uri(&path)
                .header("host", format!("127.0.0.1:{port}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(bytes)))
                .map_err(|e| e.to_string())?;
            let res = tokio::time::timeout(Duration::from_secs(60), send.send_request(req))
                .await
                .map_err(|_| "webdriver timeout".to_string())?
                .map_err(|e| e.to_string())?;
            let body = res
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            if let Some(err) = v["value"].get("error") {
                return Err(format!("{err}: {}", v["value"]["message"]));
            }
            Ok(v["value"].clone())
        })
    }

    /// A new headless browser with its own profile.
    pub fn browser(&self, profile: PathBuf) -> Browser<'_> {
        self.browser_with(profile, &[])
    }

    /// A new headless browser with its own profile and extra command-line switches.
    pub fn browser_with(&self, profile: PathBuf, extra: &[&str]) -> Browser<'_> {
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
            },
        } } });
        let v = self
            .call("POST", "/session", Some(caps))
            .expect("new browser session");
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver answered {v}"))
            .to_string();
        Browser { d: self, id }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Browser<'d> {
    d: &'d Driver,
    id: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.id)
    }

    pub fn goto(&self, url: &str) {
        self.d
            .call("POST", &self.path("/url"), Some(json!({ "url": url })))
            .expect("navigate");
    }

    pub fn url(&self) -> String {
        self.d
            .call("GET", &self.path("/url"), None)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn find_now(&self, css: &str) -> Option<String> {
        self.d
            .call(
                "POST",
                &self.path("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()
            .map(|v| {
                v[ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("find {css}: {v}"))
                    .to_string()
            })
    }

    /// Waits (up to 20 s) for an element matching `css` that is displayed.
    pub fn find(&self, css: &str) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find_now(css)
                && self
                    .d
                    .call("GET", &self.path(&format!("/element/{e}/displayed")), None)
                    .ok()
                    == Some(json!(true))
            {
                return e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no visible element {css:?} on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.d
            .call(
                "POST",
                &self.path(&format!("/element/{e}/click")),
                Some(json!({})),
            )
            .unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.d
            .call(
                "POST",
                &self.path(&format!("/element/{e}/value")),
                Some(json!({ "text": text })),
            )
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.d
            .call("GET", &self.path(&format!("/element/{e}/text")), None)
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Moves the mouse to (`dx`, `dy`) from the centre of the element matching `css` and
    /// clicks there (W3C actions: the browser makes real pointer events).
    pub fn click_at(&self, css: &str, dx: i64, dy: i64) {
        let mut origin = serde_json::Map::new();
        origin.insert(ELEMENT.to_string(), json!(self.find(css)));
        let actions = json!({ "actions": [{
            "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" },
            "actions": [
                { "type": "pointerMove", "duration": 0, "x": dx, "y": dy, "origin": origin },
                { "type": "pointerDown", "button": 0 },
                { "type": "pointerUp", "button": 0 },
            ],
        }] });
        self.d
            .call("POST", &self.path("/actions"), Some(actions))
            .unwrap_or_else(|err| panic!("click in {css}: {err}"));
    }

    /// Presses the mouse at `from` and releases it at `to` (offsets from the centre of the
    /// element matching `css`), moving through ten steps between.
    pub fn drag(&self, css: &str, from: (i64, i64), to: (i64, i64)) {
        let mut origin = serde_json::Map::new();
        origin.insert(ELEMENT.to_string(), json!(self.find(css)));
        let mut acts = vec![
            json!({ "type": "pointerMove", "duration": 0, "x": from.0, "y": from.1, "origin": origin }),
            json!({ "type": "pointerDown", "button": 0 }),
        ];
        for i in 1..=10 {
            let x = from.0 + (to.0 - from.0) * i / 10;
            let y = from.1 + (to.1 - from.1) * i / 10;
            acts.push(
                json!({ "type": "pointerMove", "duration": 10, "x": x, "y": y, "origin": origin }),
            );
        }
        acts.push(json!({ "type": "pointerUp", "button": 0 }));
        let actions = json!({ "actions": [{
            "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" }, "actions": acts,
        }] });
        self.d
            .call("POST", &self.path("/actions"), Some(actions))
            .unwrap_or_else(|err| panic!("drag in {css}: {err}"));
    }

    /// Types `text` into whatever has the focus, key by key (`\u{E007}` is Enter).
    pub fn keys(&self, text: &str) {
        let mut acts = Vec::new();
        for c in text.chars() {
            acts.push(json!({ "type": "keyDown", "value": c.to_string() }));
            acts.push(json!({ "type": "keyUp", "value": c.to_string() }));
        }
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": acts }] });
        self.d
            .call("POST", &self.path("/actions"), Some(actions))
            .unwrap_or_else(|err| panic!("keys: {err}"));
    }

    /// Runs JavaScript in the page and returns its result.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.d
            .call(
                "POST",
                &self.path("/execute/sync"),
                Some(json!({ "script": script, "args": args })),
            )
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Waits (up to 20 s) until the page's text content matching `css` contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str) {
        let start = Instant::now();
        loop {
            let all = self.js("return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent).join('\\n');", json!([css]));
            if all.as_str().is_some_and(|t| t.contains(needle)) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{needle:?} never appeared in {css:?}; it holds {all}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.d.call("DELETE", &self.path(""), None);
    }
}
