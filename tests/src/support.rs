//! Shared helpers: one runtime per test process, run shortcuts, fixture directories, the CLI.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use corral_host::events::{CollectEvents, EventSink, RunEvent};
use corral_host::provider::Provider;
use corral_host::provider::sim::SimProvider;
use corral_host::tools::ToolRoot;
use corral_host::{RunLimits, RunOptions, RunReport, Runtime, RuntimeConfig, Workflow};
use serde_json::Value;

use crate::guests::{guest_path, workspace_root};

/// A directory private to this test process (`$TMPDIR/corral-test-NAME-PID`), emptied when it
/// is first named (a process killed earlier with the same id may have left one) and removed
/// with everything in it when the process exits normally, whether its tests passed or not.
#[allow(unsafe_code)]
pub fn process_dir(name: &str) -> PathBuf {
    static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    extern "C" fn remove_dirs() {
        // `try_lock`: never wait at exit for a thread that still holds the list.
        let dirs = DIRS.try_lock().map(|d| d.clone()).unwrap_or_default();
        for dir in dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let dir = std::env::temp_dir().join(format!("corral-test-{name}-{}", std::process::id()));
    let mut dirs = DIRS.lock().unwrap_or_else(|p| p.into_inner());
    if dirs.is_empty() {
        // SAFETY: `remove_dirs` is a plain `extern "C"` function that never unwinds (it ignores
        // every error), as `atexit` requires.
        let registered = unsafe { libc::atexit(remove_dirs) };
        assert_eq!(registered, 0, "atexit registers the cleanup");
    }
    if !dirs.contains(&dir) {
        let _ = std::fs::remove_dir_all(&dir);
        dirs.push(dir.clone());
    }
    dir
}

/// One runtime for the whole test process, as a server would have, with its cache in a
/// directory private to this process.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let cache = process_dir("cache");
        Runtime::new(RuntimeConfig {
            cache_dir: Some(cache),
            ..RuntimeConfig::default()
        })
        .expect("the engine starts")
    })
}

/// Loads a guest built from `tests/guests/` or `workflows/`.
pub fn workflow(name: &str) -> Arc<Workflow> {
    runtime()
        .load_file(&guest_path(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The JavaScript runtime component (the committed artifact `guest-sdk/js-runtime/js_runtime.wasm`).
pub fn js_runtime() -> Arc<Workflow> {
    let path = workspace_root()
        .join("guest-sdk")
        .join("js-runtime")
        .join("js_runtime.wasm");
    runtime()
        .load_file(&path)
        .unwrap_or_else(|e| panic!("loading the JS runtime: {e}"))
}

/// Runs a JavaScript workflow source with `args` on the simulated provider.
pub async fn run_js(source: &str, args: Value) -> RunReport {
    Run::new(args)
        .script("workflow.js", source)
        .run(&js_runtime())
        .await
}

/// A run's configuration with sensible test defaults.
pub struct Run {
    /// The run's arguments.
    pub args: Value,
    /// The tools' root.
    pub root: Option<PathBuf>,
    /// The limits.
    pub limits: RunLimits,
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// The events.
    pub events: Arc<CollectEvents>,
    /// The script, for a script runtime.
    pub script: Option<corral_host::Script>,
}

impl Run {
    /// A run of `args` on a zero-latency simulated provider, default limits, no root.
    pub fn new(args: Value) -> Self {
        Run {
            args,
            root: None,
            limits: RunLimits::default(),
            provider: Arc::new(SimProvider::default()),
            events: Arc::new(CollectEvents::default()),
            script: None,
        }
    }

    /// Runs this script (the workflow must be a script runtime, such as [`js_runtime`]).
    pub fn script(mut self, name: &str, source: &str) -> Self {
        self.script = Some(corral_host::Script {
            name: name.to_string(),
            source: source.to_string(),
        });
        self
    }

    /// Uses this provider.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.provider = provider;
        self
    }

    /// Grants this root.
    pub fn root(mut self, root: &Path) -> Self {
        self.root = Some(root.to_path_buf());
        self
    }

    /// Changes the limits.
    pub fn limits(mut self, change: impl FnOnce(&mut RunLimits)) -> Self {
        change(&mut self.limits);
        self
    }

    /// Runs `workflow` to completion on the process-wide runtime.
    pub async fn run(self, workflow: &Workflow) -> RunReport {
        self.run_on(runtime(), workflow).await
    }

    /// Runs `workflow` (loaded by `runtime`) to completion.
    pub async fn run_on(self, runtime: &Runtime, workflow: &Workflow) -> RunReport {
        let root = self.root.map(|dir| {
            ToolRoot::open(&dir, self.limits.tools.clone()).expect("the test root opens")
        });
        let events: Arc<dyn EventSink> = self.events;
        runtime
            .run(
                workflow,
                RunOptions {
                    args_json: self.args.to_string(),
                    root,
                    limits: self.limits,
                    provider: self.provider,
                    events,
                    script: self.script,
                    journal: None,
                    stop: None,
                    shared: Default::default(),
                    load_only: false,
                },
            )
            .await
    }
}

/// Parses a successful run's result.
pub fn result(report: &RunReport) -> Value {
    match &report.outcome {
        Ok(text) => serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("the result is not JSON ({e}): {text}")),
        Err(error) => panic!("the run failed: {error}"),
    }
}

/// A run's log lines (`progress.log`, and stdout/stderr lines), in order.
pub fn logs(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            RunEvent::Log { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// A run's phase titles, in order.
pub fn phases(events: &[RunEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            RunEvent::Phase { title } => Some(title.clone()),
            _ => None,
        })
        .collect()
}

/// A simulated provider with latency.
pub fn sim(latency_ms: u64) -> Arc<SimProvider> {
    Arc::new(SimProvider::new(Duration::from_millis(latency_ms)))
}

/// Runs `git` in `dir` for fixture setup (the engine itself never shells out).
pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Fixture",
            "-c",
            "user.email=fixture@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed");
}

/// A small repository: source files, an ignored file, two commits and an uncommitted change.
pub fn fixture_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = dir.path();
    let write = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(".gitignore", "target/\n");
    write(
        "src/main.rs",
        "fn main() {\n    let total = add(1, 2);\n    println!(\"{total}\");\n}\n",
    );
    write(
        "src/math.rs",
        "pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n// TODO: overflow\n",
    );
    write("README.md", "# fixture\n");
    write(
        "target/build.rs",
        "// ignored build output, TODO never seen\n",
    );
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "first commit"]);
    write(
        "src/math.rs",
        "pub fn add(a: i32, b: i32) -> i32 {\n    a.wrapping_add(b)\n}\n// TODO: overflow\n",
    );
    git(root, &["commit", "-q", "-am", "wrap on overflow"]);
    write(
        "src/main.rs",
        "fn main() {\n    let total = add(40, 2);\n    println!(\"{total}\");\n}\n",
    );
    dir
}

/// The `corral` binary, built once per test process.
pub fn corral() -> Command {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let binary = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args(["build", "-q", "-p", "corral", "--bin", "corral"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the corral binary failed");
        crate::guests::guest_target_dir()
            .join("debug")
            .join("corral")
    });
    let mut command = Command::new(binary);
    command.env("CORRAL_CACHE_DIR", process_dir("cli-cache"));
    // Never the user's own journal: a test that names no --data-dir gets one of its own.
    command
        .env("CORRAL_DATA_DIR", process_dir("cli-data"))
        .env_remove("XDG_DATA_HOME")
        .env_remove("CORRAL_CONFIG");
    command
}

/// What one `corral` invocation said: its exit code, stdout and stderr.
pub struct Said {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `corral ARGS` in `dir` with its journal in `data` (`CORRAL_DATA_DIR`, which every
/// command reads), the corral.toml of `dir` (never one named by the environment) and `env` set.
pub fn corral_in(dir: &Path, data: &Path, env: &[(&str, &str)], args: &[&str]) -> Said {
    let output = corral()
        .current_dir(dir)
        .env_remove("CORRAL_CONFIG")
        .env("CORRAL_DATA_DIR", data)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("corral runs");
    Said {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Waits until `done` holds, checking every 20 ms; fails naming `what` after two minutes.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
