//! The languages benchmark: the same kind of workflow written four ways, side by side in one
//! process (BENCH.md), printed as one table:
//!
//! - Rust: `workflows/audit-files`, built with the guest SDK;
//! - QuickJS: `workflows/audit.js` on the bundled JavaScript runtime;
//! - componentize-js: `workflows/js-component`, built by componentize-js (SpiderMonkey);
//! - Python: `workflows/python`, built by componentize-py (CPython).
//!
//! For each: the component's size; cold compile (a fresh engine over an empty cache: Cranelift);
//! load from the disk cache (a fresh engine over the filled cache); start → first agent call of a
//! loaded component (from `Runtime::run`: instantiate, run to its first `agent`); and resident
//! memory per run, with `RUNS` runs at once each suspended waiting on a slow agent. The guests are
//! measured one after another in this process, so memory an earlier guest's runs gave back may
//! serve a later one's: read the resident column as a lower bound. Before its first agent call
//! the componentize-js and Python workflows also try the network and grep; the others only glob
//! and read.
//!
//! Run: `cargo bench -p tests --bench languages` (add `-- --quick` for fewer rounds). It needs
//! componentize-py and componentize-js as `.ci/run` installs them.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_host::events::{EventSink, RunEvent};
use corral_host::provider::sim::SimProvider;
use corral_host::tools::ToolRoot;
use corral_host::{RunLimits, RunOptions, Runtime, RuntimeConfig, Script, Workflow};
use tests::bench::{median, ms, rss_bytes};
use tests::guests::{guest_path, js_component_workflow, python_workflow, workspace_root};
use tokio::sync::Notify;

/// Runs at once for the resident-memory measure.
const RUNS: usize = 64;

/// One workflow, as a guest of one language.
struct Guest {
    language: &'static str,
    component: std::path::PathBuf,
    script: Option<Script>,
    args: &'static str,
}

/// Notes when a run queues its first agent call, and stops the run then or when told.
struct FirstCall {
    began: Mutex<Option<Instant>>,
    at: Mutex<Option<Instant>>,
    stop: Notify,
    stop_at_first_call: bool,
}

impl FirstCall {
    fn new(stop_at_first_call: bool) -> Arc<Self> {
        Arc::new(FirstCall {
            began: Mutex::new(None),
            at: Mutex::new(None),
            stop: Notify::new(),
            stop_at_first_call,
        })
    }

    fn reached(&self) -> Option<Instant> {
        *self.at.lock().unwrap()
    }

    /// From the call of `Runtime::run` to the first agent call.
    fn first_call(&self) -> Option<Duration> {
        Some(self.reached()? - (*self.began.lock().unwrap())?)
    }
}

impl EventSink for FirstCall {
    fn event(&self, event: &RunEvent) {
        if matches!(event, RunEvent::AgentQueued { .. }) {
            let mut at = self.at.lock().unwrap();
            if at.is_none() {
                *at = Some(Instant::now());
                if self.stop_at_first_call {
                    self.stop.notify_one();
                }
            }
        }
    }
}

fn guests() -> Vec<Guest> {
    let root = workspace_root();
    let audit_js = std::fs::read_to_string(root.join("workflows/audit.js")).unwrap();
    vec![
        Guest {
            language: "Rust (guest SDK)",
            component: guest_path("audit-files"),
            script: None,
            args: r#"{"glob": "src/*.rs", "max_files": 3}"#,
        },
        Guest {
            language: "JavaScript, bundled QuickJS",
            component: root.join("guest-sdk/js-runtime/js_runtime.wasm"),
            script: Some(Script {
                name: "audit.js".into(),
                source: audit_js,
            }),
            args: r#"{"glob": "src/*.rs", "maxFiles": 3}"#,
        },
        Guest {
            language: "JavaScript, componentize-js",
            component: js_component_workflow(),
            script: None,
            args: r#"{"glob": "src/*.rs", "maxFiles": 3}"#,
        },
        Guest {
            language: "Python, componentize-py",
            component: python_workflow(),
            script: None,
            args: r#"{"glob": "src/*.rs", "maxFiles": 3}"#,
        },
    ]
}

fn engine(cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_path_buf()),
        max_live_runs: RUNS as u32 + 8,
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// Starts a run of `guest` that is stopped when `stop` is notified; `sink` sees its events.
fn start_run(
    runtime: &Arc<Runtime>,
    workflow: &Arc<Workflow>,
    guest: &Guest,
    root: &Path,
    sink: Arc<FirstCall>,
    latency: Duration,
) -> tokio::task::JoinHandle<()> {
    let (runtime, workflow) = (Arc::clone(runtime), Arc::clone(workflow));
    let stop_on = Arc::clone(&sink);
    let began = Arc::clone(&sink);
    let options = RunOptions {
        args_json: guest.args.to_string(),
        root: Some(ToolRoot::open(root, RunLimits::default().tools).unwrap()),
        limits: RunLimits::default(),
        provider: Arc::new(SimProvider::new(latency)),
        events: sink,
        script: guest.script.clone(),
        journal: None,
        stop: Some(Box::pin(async move { stop_on.stop.notified().await })),
        shared: Default::default(),
        load_only: false,
    };
    tokio::spawn(async move {
        *began.began.lock().unwrap() = Some(Instant::now());
        let report = runtime.run(&workflow, options).await;
        assert!(
            report.agents.started > 0,
            "the run started no agent: {:?}",
            report.outcome
        );
    })
}

struct Row {
    language: &'static str,
    size: u64,
    cold: Duration,
    warm_load: Duration,
    first_call: Duration,
    rss_per_run: f64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (cold_rounds, rounds) = if quick { (1, 5) } else { (3, 15) };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let repo = tests::support::fixture_repo();
    let mut rows = Vec::new();
    for guest in guests() {
        let size = std::fs::metadata(&guest.component).unwrap().len();
        let dir = tempfile::tempdir().unwrap();

        // Cold: a fresh engine over an empty cache compiles the component.
        let mut cold = Vec::new();
        for round in 0..cold_rounds {
            let cache = dir.path().join(format!("cold-{round}"));
            let runtime = engine(&cache);
            let began = Instant::now();
            runtime.load_file(&guest.component).unwrap();
            cold.push(began.elapsed());
        }
        let cache = dir.path().join("cold-0");

        // Warm: a fresh engine reads the compiled component from the disk cache.
        let mut warm = Vec::new();
        for _ in 0..rounds {
            let runtime = engine(&cache);
            let began = Instant::now();
            runtime.load_file(&guest.component).unwrap();
            warm.push(began.elapsed());
        }

        // A loaded component: start → its first agent call, then the run is stopped.
        let runtime = Arc::new(engine(&cache));
        let workflow = runtime.load_file(&guest.component).unwrap();
        let mut first = Vec::new();
        tokio.block_on(async {
            for round in 0..=rounds {
                let sink = FirstCall::new(true);
                let run = start_run(
                    &runtime,
                    &workflow,
                    &guest,
                    repo.path(),
                    Arc::clone(&sink),
                    Duration::ZERO,
                );
                run.await.unwrap();
                let first_call = sink.first_call().expect("an agent call was queued");
                if round > 0 {
                    first.push(first_call);
                }
            }
        });

        // Resident memory: RUNS runs at once, each suspended waiting on a slow agent.
        let rss_per_run = tokio.block_on(async {
            let before = rss_bytes();
            let mut sinks = Vec::new();
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                let sink = FirstCall::new(false);
                runs.push(start_run(
                    &runtime,
                    &workflow,
                    &guest,
                    repo.path(),
                    Arc::clone(&sink),
                    Duration::from_secs(600),
                ));
                sinks.push(sink);
            }
            let deadline = Instant::now() + Duration::from_secs(300);
            while sinks.iter().any(|s| s.reached().is_none()) {
                // A run that ended before its first agent call would be waited for forever:
                // await it instead, which shows why it ended.
                if let Some(index) = runs.iter().position(tokio::task::JoinHandle::is_finished) {
                    runs.swap_remove(index).await.unwrap();
                    panic!("a {} run ended before its first agent call", guest.language);
                }
                assert!(
                    Instant::now() < deadline,
                    "{RUNS} {} runs did not all reach their first agent call in 5 minutes",
                    guest.language
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = rss_bytes();
            for sink in &sinks {
                sink.stop.notify_one();
            }
            for run in runs {
                run.await.unwrap();
            }
            after.saturating_sub(before) as f64 / RUNS as f64
        });
        rows.push(Row {
            language: guest.language,
            size,
            cold: median(&mut cold),
            warm_load: median(&mut warm),
            first_call: median(&mut first),
            rss_per_run,
        });
    }

    println!(
        "corral languages benchmark (medians; cold of {cold_rounds}, others of {rounds}; resident memory with {RUNS} suspended runs)"
    );
    println!(
        "| guest | component | cold compile | load from cache | start → first agent call | resident per run |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {:.1} MB | {:.0} ms | {:.1} ms | {:.2} ms | {:.2} MiB |",
            row.language,
            row.size as f64 / 1e6,
            ms(row.cold),
            ms(row.warm_load),
            ms(row.first_call),
            row.rss_per_run / f64::from(1 << 20),
        );
    }
}
