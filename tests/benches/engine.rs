//! The engine benchmark: prints one table, measured side by side in one process (BENCH.md).
//!
//! - host overhead per agent call: N calls at 0 ms latency through the whole engine (a wasm
//!   guest fanning out through the SDK) versus the same N calls through the same scheduler with
//!   no wasm at all, alternated A B A B; the difference per call is what the sandbox costs;
//! - slot efficiency: wall time ÷ ideal, ideal = ceil(N / cap) × L' where L' is the latency the
//!   timer actually delivers, measured in the same run;
//! - instantiate time of a cached component.
//!
//! Run: `cargo bench -p tests --bench engine` (add `-- --quick` for fewer rounds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::events::NoEvents;
use corral_host::provider::sim::SimProvider;
use corral_host::record::{ReplayPlan, ReusePolicy};
use corral_host::scheduler::CallJournal;
use corral_host::{RunLimits, RunOptions, Runtime, RuntimeConfig, Workflow};
use corral_store::{Journal, NewRun, RunFinish, RunStatus, RunStore};
use serde_json::json;
use tests::bench::{median, ms, scheduler_only};
use tests::guests::guest_path;

const CALLS: u64 = 2000;
const CAP: usize = 16;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 9 };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let probe = runtime.load_file(&guest_path("probe")).unwrap();

    // Overhead: A (engine) and B (scheduler only), alternated.
    let (mut engine_times, mut baseline_times) = (Vec::new(), Vec::new());
    tokio.block_on(async {
        // Warm-up of both paths.
        engine_run(&runtime, &probe, CALLS, Duration::ZERO).await;
        scheduler_only(CALLS as usize, CAP, Duration::ZERO, |i| {
            format!("probe fan-out call {i}")
        })
        .await;
        for _ in 0..rounds {
            engine_times.push(engine_run(&runtime, &probe, CALLS, Duration::ZERO).await);
            baseline_times.push(
                scheduler_only(CALLS as usize, CAP, Duration::ZERO, |i| {
                    format!("probe fan-out call {i}")
                })
                .await,
            );
        }
    });
    let engine = median(&mut engine_times);
    let baseline = median(&mut baseline_times);
    let overhead = engine.saturating_sub(baseline).as_secs_f64() * 1e6 / CALLS as f64;

    // Journal overhead: the same 2000 calls with and without the journal, alternated.
    let data = tempfile::tempdir().unwrap();
    let journal = Journal::open(&data.path().join("journal.db")).unwrap();
    let (mut journaled_times, mut plain_times) = (Vec::new(), Vec::new());
    tokio.block_on(async {
        for _ in 0..rounds {
            plain_times.push(engine_run(&runtime, &probe, CALLS, Duration::ZERO).await);
            journaled_times.push(
                journaled_run(&runtime, &probe, &journal, CALLS, Duration::ZERO, None)
                    .await
                    .0,
            );
        }
    });
    let plain = median(&mut plain_times);
    let journaled = median(&mut journaled_times);
    let journal_overhead = (journaled.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0;

    // The same at a realistic latency (still tiny: 50 ms per call).
    let (mut journaled_slow, mut plain_slow) = (Vec::new(), Vec::new());
    tokio.block_on(async {
        for _ in 0..rounds.min(3) {
            plain_slow.push(engine_run(&runtime, &probe, 320, Duration::from_millis(50)).await);
            journaled_slow.push(
                journaled_run(
                    &runtime,
                    &probe,
                    &journal,
                    320,
                    Duration::from_millis(50),
                    None,
                )
                .await
                .0,
            );
        }
    });
    let plain_slow = median(&mut plain_slow);
    let journaled_slow = median(&mut journaled_slow);
    let slow_overhead = (journaled_slow.as_secs_f64() / plain_slow.as_secs_f64() - 1.0) * 100.0;

    // Resume: a run of 1000 calls, every one answered from the journal.
    let resume_n = 1000;
    let mut resume_times = Vec::new();
    tokio.block_on(async {
        let (_, original) =
            journaled_run(&runtime, &probe, &journal, resume_n, Duration::ZERO, None).await;
        for _ in 0..rounds.min(5) {
            let began = Instant::now();
            let plan = ReplayPlan::new(
                journal.recorded_calls(&original).unwrap(),
                ReusePolicy::Prefix,
            );
            journaled_run(
                &runtime,
                &probe,
                &journal,
                resume_n,
                Duration::ZERO,
                Some(plan),
            )
            .await;
            resume_times.push(began.elapsed());
        }
    });
    let resume = median(&mut resume_times);

    // Slot efficiency at L = 50 ms.
    let latency = Duration::from_millis(50);
    let n = if quick { 160 } else { 320 };
    let (mut walls, mut delivered) = (Vec::new(), Vec::new());
    tokio.block_on(async {
        for _ in 0..rounds.min(5) {
            let began = Instant::now();
            tokio::time::sleep(latency).await;
            delivered.push(began.elapsed());
            walls.push(engine_run(&runtime, &probe, n, latency).await);
        }
    });
    let delivered = median(&mut delivered);
    let wall = median(&mut walls);
    let ideal = delivered * (n.div_ceil(CAP as u64) as u32);
    let efficiency = wall.as_secs_f64() / ideal.as_secs_f64();

    // Instantiate from the cache: a fresh runtime loads the compiled component from disk.
    let fresh = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let began = Instant::now();
    let cached = fresh.load_file(&guest_path("probe")).unwrap();
    let load_from_cache = began.elapsed();
    assert!(cached.compiled_from_cache());
    let mut instantiations: Vec<Duration> = tokio.block_on(async {
        let mut all = Vec::new();
        for _ in 0..if quick { 50 } else { 200 } {
            let report = fresh
                .run(&cached, options(json!({"mode": "echo"}), Duration::ZERO))
                .await;
            assert!(report.outcome.is_ok());
            all.push(report.instantiate);
        }
        all
    });
    let instantiate = median(&mut instantiations);

    println!("corral engine benchmark ({rounds} rounds, medians)");
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| {CALLS} calls at 0 ms, whole engine (wasm guest) | {:.2} ms | |",
        ms(engine)
    );
    println!(
        "| {CALLS} calls at 0 ms, scheduler only (no wasm) | {:.2} ms | |",
        ms(baseline)
    );
    println!("| host overhead per agent call | {overhead:.2} µs | ≤ 20 µs |");
    println!(
        "| {CALLS} calls at 0 ms without / with the journal | {:.2} ms / {:.2} ms = {journal_overhead:+.1} % | ≤ 5 % |",
        ms(plain),
        ms(journaled)
    );
    println!(
        "| 320 calls at L = 50 ms without / with the journal | {:.1} ms / {:.1} ms = {slow_overhead:+.2} % | |",
        ms(plain_slow),
        ms(journaled_slow)
    );
    println!(
        "| resume of {resume_n} completed calls (read journal + replay run) | {:.2} ms | ≤ 200 ms |",
        ms(resume)
    );
    println!(
        "| timer-delivered latency L' for 50 ms | {:.2} ms | |",
        ms(delivered)
    );
    println!(
        "| {n} calls at cap {CAP}, L = 50 ms: wall / ideal | {:.2} ms / {:.2} ms = {efficiency:.3} | ≤ 1.01 |",
        ms(wall),
        ms(ideal)
    );
    println!(
        "| load compiled component from disk cache | {:.2} ms | |",
        ms(load_from_cache)
    );
    println!(
        "| instantiate (cached, pooled) | {:.1} µs | ≤ 25 µs |",
        instantiate.as_secs_f64() * 1e6
    );
}

fn options(args: serde_json::Value, latency: Duration) -> RunOptions {
    RunOptions {
        args_json: args.to_string(),
        root: None,
        limits: RunLimits {
            max_agents: 1_000_000,
            ..RunLimits::default()
        },
        provider: Arc::new(SimProvider::new(latency)),
        events: Arc::new(NoEvents),
        script: None,
        journal: None,
        stop: None,
        shared: Default::default(),
        load_only: false,
    }
}

async fn engine_run(runtime: &Runtime, probe: &Workflow, n: u64, latency: Duration) -> Duration {
    let began = Instant::now();
    let report = runtime
        .run(probe, options(json!({"mode": "fanout", "n": n}), latency))
        .await;
    let elapsed = began.elapsed();
    let result: serde_json::Value =
        serde_json::from_str(report.outcome.as_ref().expect("the run succeeds")).unwrap();
    assert_eq!(result["ok"], n);
    elapsed
}

async fn journaled_run(
    runtime: &Runtime,
    probe: &Workflow,
    journal: &Journal,
    n: u64,
    latency: Duration,
    replay: Option<ReplayPlan>,
) -> (Duration, String) {
    let began = Instant::now();
    let args = json!({"mode": "fanout", "n": n});
    let run_id = journal
        .begin_run(NewRun {
            workflow: "probe.wasm".into(),
            workflow_hash: probe.hash().into(),
            script: None,
            args: args.to_string(),
            limits: json!({}),
            root: None,
            provider: "sim".into(),
            resumed_from: None,
            tenant: None,
            spec: "{}".into(),
            status: RunStatus::Running,
        })
        .unwrap();
    let mut run_options = options(args, latency);
    run_options.journal = Some(CallJournal {
        recorder: journal.recorder(&run_id),
        replay,
    });
    let report = runtime.run(probe, run_options).await;
    // What the run service does at the end of every recorded run.
    journal
        .finish_run(
            &run_id,
            RunFinish {
                status: RunStatus::Succeeded,
                result: report.outcome.clone().ok(),
                error: None,
                agents: report.agents.started,
                usage: report.agents.usage,
                cost: 0.0,
            },
        )
        .unwrap();
    let elapsed = began.elapsed();
    assert!(report.outcome.is_ok());
    (elapsed, run_id)
}
