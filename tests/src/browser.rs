//! A real headless Chromium for the dashboard tests, driven over W3C WebDriver through Debian's
//! `chromedriver` (which `.ci/run` installs with `chromium`). Only what the tests use: open a
//! page, find elements by CSS, click, type, read text and attributes, run a script, take a
//! screenshot. Chromium starts with a fresh profile in a temporary directory and every
//! background-networking feature off (this machine's network is closed); both processes end when
//! the [`Browser`] is dropped. A test that panics leaves a screenshot of the page behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The key WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for the page waits before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// One headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    screenshots: PathBuf,
    name: String,
    _profile: tempfile::TempDir,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium at `width`×`height`; a failing test saves
    /// `screenshots/NAME-failure.png`.
    pub fn start(name: &str, screenshots: &Path, width: u32, height: u32) -> Browser {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("an address").port()
        };
        let profile = tempfile::tempdir().expect("a profile directory");
        // Chromium keeps scratch directories in $TMPDIR: inside the profile, they go with it.
        let scratch = profile.path().join("tmp");
        std::fs::create_dir(&scratch).expect("a scratch directory");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", &scratch)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver; .ci/run installs it)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: reqwest::Client::new(),
            runtime,
            screenshots: screenshots.to_path_buf(),
            name: name.to_string(),
            _profile: profile,
        };
        let began = Instant::now();
        while browser.raw("GET", "/status", None).is_err() {
            assert!(began.elapsed() < WAIT, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-extensions".to_string(),
            format!("--window-size={width},{height}"),
            format!(
                "--user-data-dir={}",
                browser._profile.path().join("profile").display()
            ),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium(), "args": args},
        }}});
        let answer = browser
            .raw("POST", "/session", Some(capabilities))
            .expect("a Chromium session starts");
        browser.session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session in {answer}"))
            .to_string();
        browser
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(WAIT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let value: Value = response.json().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("{status}: {}", value["value"]));
            }
            Ok(value)
        })
    }

    /// A command of this session; panics on a WebDriver error.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        match self.raw(method, &path, body) {
            Ok(value) => value["value"].clone(),
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        }
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})));
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Every element matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|id| Element(id.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first element matching `css`, once there is one.
    pub fn find(&self, css: &str) -> Element {
        let mut found = None;
        self.wait(&format!("an element `{css}`"), || {
            found = self.find_all(css).into_iter().next();
            found.is_some()
        });
        found.expect("found")
    }

    /// Waits until `done` holds, polling the page; fails after [`WAIT`].
    pub fn wait(&self, what: &str, mut done: impl FnMut() -> bool) {
        let began = Instant::now();
        while !done() {
            assert!(began.elapsed() < WAIT, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the first element matching `css` has text satisfying `ok`; returns the text.
    pub fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let began = Instant::now();
        loop {
            if let Some(element) = self.find_all(css).into_iter().next() {
                // The element may be replaced between finding and reading it.
                if let Some(text) = self.try_text(&element) {
                    if ok(&text) {
                        return text;
                    }
                    last = text;
                }
            }
            assert!(
                began.elapsed() < WAIT,
                "timed out waiting for the text of `{css}`; last: {last:?}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Clicks `element`.
    pub fn click(&self, element: &Element) {
        self.command(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        );
    }

    /// Clicks the first element matching `css`.
    pub fn click_css(&self, css: &str) {
        let element = self.find(css);
        self.click(&element);
    }

    /// Sets an input's or a textarea's value, as typing it would (clears it first).
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.command(
            "POST",
            &format!("/element/{}/clear", element.0),
            Some(json!({})),
        );
        if !text.is_empty() {
            self.command(
                "POST",
                &format!("/element/{}/value", element.0),
                Some(json!({"text": text})),
            );
        }
    }

    /// `element`'s visible text (`None` when it left the page).
    pub fn try_text(&self, element: &Element) -> Option<String> {
        let path = format!("/session/{}/element/{}/text", self.session, element.0);
        self.raw("GET", &path, None)
            .ok()
            .and_then(|v| v["value"].as_str().map(str::to_string))
    }

    /// The visible text of the first element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.try_text(&element).unwrap_or_default()
    }

    /// An attribute (or property, such as `value`) of the first element matching `css`.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css);
        let value = self.command(
            "GET",
            &format!("/element/{}/property/{name}", element.0),
            None,
        );
        match value {
            Value::Null => {
                let attribute = self.command(
                    "GET",
                    &format!("/element/{}/attribute/{name}", element.0),
                    None,
                );
                attribute.as_str().map(str::to_string)
            }
            Value::String(text) => Some(text),
            other => Some(other.to_string()),
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; returns its value.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Presses a key (a WebDriver key code such as `"\u{E004}"` for Tab) in the focused element.
    pub fn press(&self, key: &str) {
        let actions = json!({"actions": [{
            "type": "key", "id": "keyboard",
            "actions": [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}],
        }]});
        self.command("POST", "/actions", Some(actions));
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }

    /// Saves a screenshot as `screenshots/FILE`; returns its path.
    pub fn save_screenshot(&self, file: &str) -> PathBuf {
        std::fs::create_dir_all(&self.screenshots).expect("the screenshot directory");
        let path = self.screenshots.join(file);
        std::fs::write(&path, self.screenshot()).expect("the screenshot is written");
        path
    }
}

/// Debian's Chromium.
fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("/usr/bin/chromium")
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.session.is_empty() {
            let file = format!("{}-failure.png", self.name);
            let path = self.screenshots.join(&file);
            let saved = std::fs::create_dir_all(&self.screenshots).is_ok()
                && self
                    .raw(
                        "GET",
                        &format!("/session/{}/screenshot", self.session),
                        None,
                    )
                    .ok()
                    .and_then(|v| {
                        base64::engine::general_purpose::STANDARD
                            .decode(v["value"].as_str()?)
                            .ok()
                    })
                    .is_some_and(|png| std::fs::write(&path, png).is_ok());
            if saved {
                eprintln!("the page at the failure: {}", path.display());
            }
        }
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
