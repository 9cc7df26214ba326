//! A real `corral serve` for tests: started on 127.0.0.1:0 in a temporary data directory, driven
//! through a real HTTP client (reqwest), stopped with SIGTERM or `kill -9`, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::corral;

/// A running server.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its data directory.
    pub data: PathBuf,
    /// What it printed on stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts `corral serve` over `data` with extra flags and environment variables.
    pub fn start(data: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut command = corral();
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("corral serve starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = sender.send(url);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "corral serve did not start: {}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        TestServer {
            child,
            url,
            data: data.to_path_buf(),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("the server can be waited on") {
                return status;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A client with `token`.
    pub fn client(&self, token: &str) -> Api {
        Api::new(&self.url, Some(token))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `corral` with `args` over `data`, asserting success; returns stdout.
pub fn corral_ok(data: &Path, args: &[&str]) -> String {
    let output = corral()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("corral runs");
    assert!(
        output.status.success(),
        "corral {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Adds tenant `name` with extra `corral tenants add` flags and returns a new token for it.
pub fn tenant_with_token(data: &Path, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["tenants", "add", name];
    args.extend_from_slice(flags);
    corral_ok(data, &args);
    corral_ok(data, &["tokens", "create", name])
        .trim()
        .to_string()
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
    /// The body as text.
    pub text: String,
    /// The `Content-Type` header (empty when absent).
    pub content_type: String,
}

/// A blocking client over reqwest.
pub struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    /// A client of `base` sending `token`.
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.to_string(),
            token: token.map(str::to_string),
            client: reqwest::Client::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
        }
    }

    /// Sends a request with an optional body and content type.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(kind) = content_type {
            request = request.header("content-type", kind);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.expect("the server answers");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let text = response.text().await.expect("a body");
            Answer {
                status,
                json: serde_json::from_str(&text).unwrap_or(Value::Null),
                text,
                content_type,
            }
        })
    }

    /// GET.
    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, None)
    }

    /// POST a JSON value.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(
            "POST",
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    }

    /// Uploads a script, returning its hash.
    pub fn upload_script(&self, name: &str, source: &str) -> String {
        let answer = self.send(
            "PUT",
            &format!("/v1/workflows?name={name}"),
            Some("application/javascript"),
            Some(source.as_bytes().to_vec()),
        );
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.json["hash"].as_str().expect("a hash").to_string()
    }

    /// Submits a run, returning its id.
    pub fn submit(&self, body: &Value) -> String {
        let answer = self.post("/v1/runs", body);
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer.json["id"].as_str().expect("an id").to_string()
    }

    /// Waits until run `id` has a final status, and returns its detail.
    pub fn wait(&self, id: &str) -> Value {
        let began = Instant::now();
        loop {
            let answer = self.get(&format!("/v1/runs/{id}"));
            assert_eq!(answer.status, 200, "{}", answer.text);
            let status = answer.json["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if !matches!(status.as_str(), "queued" | "running") {
                return answer.json;
            }
            assert!(
                began.elapsed() < Duration::from_secs(120),
                "run {id} did not finish: {}",
                answer.text
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Reads the SSE stream of run `id` (after event `after`, via `Last-Event-ID`) until it ends
    /// or `max` events came: (id, JSON) pairs.
    pub fn events(&self, id: &str, after: Option<u64>, max: usize) -> Vec<(u64, Value)> {
        self.stream(&format!("/v1/runs/{id}/events"), after, max)
    }

    /// Reads the SSE stream at `path` until it ends or `max` events came: (id, JSON) pairs, the
    /// id 0 for an event without one.
    pub fn stream(&self, path: &str, after: Option<u64>, max: usize) -> Vec<(u64, Value)> {
        self.stream_connected(path, after, max, || {})
    }

    /// [`Api::stream`], calling `connected` once the server has answered the request's headers
    /// (for `/v1/events`: once it is subscribed, so nothing after that is missed).
    pub fn stream_connected(
        &self,
        path: &str,
        after: Option<u64>,
        max: usize,
        connected: impl FnOnce(),
    ) -> Vec<(u64, Value)> {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        self.runtime.block_on(async {
            let mut response = request.send().await.expect("the server answers");
            assert_eq!(response.status().as_u16(), 200);
            connected();
            let (mut buffer, mut events) = (String::new(), Vec::new());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while events.len() < max {
                let chunk = tokio::time::timeout_at(deadline, response.chunk())
                    .await
                    .expect("the event stream goes on")
                    .expect("the stream reads");
                let Some(chunk) = chunk else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let (mut seq, mut data) = (None, None);
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                            seq = v.trim().parse().ok();
                        }
                        if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:"))
                        {
                            data = serde_json::from_str(v.trim()).ok();
                        }
                    }
                    if let Some(data) = data {
                        events.push((seq.unwrap_or(0), data));
                    }
                }
            }
            events
        })
    }
}
