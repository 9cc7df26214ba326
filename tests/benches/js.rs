//! The JavaScript benchmark: prints one table (BENCH.md).
//!
//! - process start → first agent call for a cached `.js`: spawns the release `corral` binary
//!   with `--events -` and times the first `agent_queued` line;
//! - host overhead per agent call: 2000 `agent()` calls in one script through the JS runtime and
//!   the engine, against the same calls through the scheduler with no wasm, alternated;
//! - the same 2000-call script under Node.js with a stub `agent`, for comparison.
//!
//! Run: `cargo bench -p tests --bench js` (add `-- --quick` for fewer rounds).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::events::NoEvents;
use corral_host::provider::sim::SimProvider;
use corral_host::{RunLimits, RunOptions, Runtime, RuntimeConfig, Script};
use tests::bench::{median, ms, scheduler_only};
use tests::guests::workspace_root;

const CALLS: usize = 2000;

const FIRST_CALL: &str = "export const meta = { name: 'first', description: 'one agent' }\nreturn await agent('hello')\n";

fn fan_out_body() -> String {
    format!(
        "const prompts = Array.from({{ length: {CALLS} }}, (_, i) => `call ${{i}}`)\nconst answers = await Promise.all(prompts.map(p => agent(p)))\nreturn answers.length\n"
    )
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 9 };
    let root = workspace_root();

    // The release binary, as users run it.
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "corral",
            "--bin",
            "corral",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building corral failed");
    let corral = root.join("target").join("release").join("corral");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("first.js");
    std::fs::write(&script, FIRST_CALL).unwrap();
    let cache = dir.path().join("cache");
    let first_call = |cache: &std::path::Path| -> Duration {
        let began = Instant::now();
        let mut child = Command::new(&corral)
            .args([
                "run",
                script.to_str().unwrap(),
                "--no-journal",
                "-q",
                "--events",
                "-",
            ])
            .env("CORRAL_CACHE_DIR", cache)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let mut elapsed = None;
        for line in reader.lines() {
            if elapsed.is_none() && line.unwrap().contains("\"agent_queued\"") {
                elapsed = Some(began.elapsed());
            }
        }
        child.wait().unwrap();
        elapsed.expect("the script starts an agent")
    };
    let cold = first_call(&cache); // compiles the runtime and fills the cache
    let mut warm: Vec<Duration> = (0..if quick { 10 } else { 20 })
        .map(|_| first_call(&cache))
        .collect();
    let warm = median(&mut warm);

    // Per-call overhead, in process.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let js = runtime
        .load_file(
            &root
                .join("guest-sdk")
                .join("js-runtime")
                .join("js_runtime.wasm"),
        )
        .unwrap();
    let source = format!(
        "export const meta = {{ name: 'fan', description: 'fan out' }}\n{}",
        fan_out_body()
    );
    let (mut engine_times, mut baseline_times) = (Vec::new(), Vec::new());
    tokio.block_on(async {
        for round in 0..=rounds {
            let began = Instant::now();
            let report = runtime
                .run(
                    &js,
                    RunOptions {
                        args_json: "null".into(),
                        root: None,
                        limits: RunLimits {
                            max_agents: 1_000_000,
                            ..RunLimits::default()
                        },
                        provider: Arc::new(SimProvider::default()),
                        events: Arc::new(NoEvents),
                        script: Some(Script {
                            name: "fan.js".into(),
                            source: source.clone(),
                        }),
                        journal: None,
                        stop: None,
                        shared: Default::default(),
                        load_only: false,
                    },
                )
                .await;
            let elapsed = began.elapsed();
            assert_eq!(
                report.outcome.as_deref(),
                Ok("2000"),
                "{:?}",
                report.outcome
            );
            let baseline = scheduler_only(CALLS, 16, Duration::ZERO, |i| format!("call {i}")).await;
            if round > 0 {
                engine_times.push(elapsed);
                baseline_times.push(baseline);
            }
        }
    });
    let engine = median(&mut engine_times);
    let baseline = median(&mut baseline_times);
    let overhead = engine.saturating_sub(baseline).as_secs_f64() * 1e6 / CALLS as f64;

    // Node.js with a stub agent.
    let node_script = dir.path().join("fan.mjs");
    std::fs::write(
        &node_script,
        format!(
            "const agent = async (prompt) => `answer to ${{prompt}}`\nconst began = performance.now()\nconst result = await (async () => {{\n{}}})()\nconsole.log(JSON.stringify({{ result, ms: performance.now() - began }}))\n",
            fan_out_body()
        ),
    )
    .unwrap();
    let mut node_inner = Vec::new();
    let mut node_process = Vec::new();
    let node_available = Command::new("node").arg("--version").output().is_ok();
    if node_available {
        for _ in 0..rounds {
            let began = Instant::now();
            let output = Command::new("node").arg(&node_script).output().unwrap();
            node_process.push(began.elapsed());
            let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            node_inner.push(Duration::from_secs_f64(
                parsed["ms"].as_f64().unwrap() / 1e3,
            ));
        }
    }

    println!("corral JavaScript benchmark ({rounds} rounds, medians)");
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| process start → first agent call, cold cache (compiles the runtime) | {:.1} ms | |",
        ms(cold)
    );
    println!(
        "| process start → first agent call, warm cache | {:.2} ms | ≤ 3 ms |",
        ms(warm)
    );
    println!(
        "| {CALLS} agent() calls in JS, whole engine | {:.2} ms | |",
        ms(engine)
    );
    println!(
        "| {CALLS} calls, scheduler only (no wasm) | {:.2} ms | |",
        ms(baseline)
    );
    println!("| host overhead per agent call (JS) | {overhead:.2} µs | ≤ 5 µs |");
    if node_available {
        println!(
            "| the same script under Node.js with a stub agent (script time) | {:.2} ms | |",
            ms(median(&mut node_inner))
        );
        println!(
            "| the same under Node.js, whole process | {:.1} ms | |",
            ms(median(&mut node_process))
        );
    } else {
        println!("| Node.js | not installed | |");
    }
}
