//! The server benchmark (BENCH.md, "Server"): `corral serve`'s API driven by an HTTP client in
//! the same process, printing one table.
//!
//! - multi-tenant fan-out: 10 tenants × 10 runs × 100 agents at L = 50 ms through a 64-slot pool:
//!   wall ÷ ideal (ideal = ceil(10000 / 64) × L', L' measured in the same run), and each tenant's
//!   share of slot time against its weight while all are busy (half the tenants weigh 2);
//! - p50 / p99 latency of `POST /v1/runs` and `GET /v1/runs/{id}` under that load;
//! - density: resident memory per suspended JS run (1000 runs, each waiting on a slow agent);
//! - journaled agent calls per second at 0 ms latency through the server (5 runs × 4000 agents).
//!
//! Run: `cargo bench -p tests --bench server`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::config::CorralConfig;
use corral_host::{Runtime, RuntimeConfig};
use corral_service::tenancy::{Quota, Tenancy, TenantSettings, add_tenant, new_token};
use corral_service::{BundledRuntime, RunService, ServiceConfig};
use corral_store::{Journal, RunStore};
use serde_json::{Value, json};
use tests::bench::{median, ms, rss_bytes};

const FANOUT: &str = "const r = await parallel(Array.from({ length: args.n }, (_, i) => () => agent(`call ${i}`, { maxTokens: 64 })))
return r.length";
const ONE_SLOW: &str = "return await agent('wait for me', { maxTokens: 64 })";

struct Bench {
    client: reqwest::Client,
    base: String,
}

impl Bench {
    async fn send(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value, Duration) {
        let began = Instant::now();
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        (status, value, began.elapsed())
    }

    async fn upload(&self, token: &str, source: &str) -> String {
        let response = self
            .client
            .put(format!("{}/v1/workflows", self.base))
            .bearer_auth(token)
            .header("content-type", "application/javascript")
            .body(source.to_string())
            .send()
            .await
            .unwrap();
        let value: Value = response.json().await.unwrap();
        value["hash"].as_str().expect("uploaded").to_string()
    }
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

fn tenant(store: &dyn RunStore, name: &str, quota: Quota) -> String {
    let settings = TenantSettings {
        quota,
        ..TenantSettings::default()
    };
    add_tenant(store, name, &settings).unwrap();
    let (row, secret) = new_token(name, false, None).unwrap();
    store.put_token(&row).unwrap();
    secret
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn RunStore> = Arc::new(Journal::open(&dir.path().join("journal.db")).unwrap());
    let js =
        std::fs::read(tests::guests::workspace_root().join("guest-sdk/js-runtime/js_runtime.wasm"))
            .unwrap();
    let hash = std::fs::read_to_string(
        tests::guests::workspace_root().join("guest-sdk/js-runtime/js_runtime.wasm.sha256"),
    )
    .unwrap();
    let bundled = BundledRuntime {
        name: "js_runtime.wasm",
        bytes: Box::leak(js.into_boxed_slice()),
        hash: Box::leak(
            hash.split_whitespace()
                .next()
                .unwrap()
                .to_string()
                .into_boxed_str(),
        ),
        extensions: &["js"],
        content_types: &["application/javascript"],
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(dir.path().join("cache")),
        max_live_runs: 1100,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let config = CorralConfig::default();
    let tenancy = Tenancy::new(&config, Arc::clone(&store), 64).unwrap();
    let service = RunService::new(ServiceConfig {
        runtime: Arc::new(runtime),
        store: Some(Arc::clone(&store)),
        config,
        env: BTreeMap::new(),
        bundled: vec![bundled],
        tenancy: None,
    })
    .with_tenancy(Arc::new(tenancy));

    let tenants: Vec<(String, u32)> = (0..10)
        .map(|i| {
            let weight = if i % 2 == 0 { 1 } else { 2 };
            let quota = Quota {
                weight,
                ..Quota::default()
            };
            (tenant(store.as_ref(), &format!("t{i}"), quota), weight)
        })
        .collect();
    let dense = tenant(
        store.as_ref(),
        "dense",
        Quota {
            runs: 1000,
            queued_runs: 1000,
            agents_in_flight: 1000,
            ..Quota::default()
        },
    );
    let fast = tenant(
        store.as_ref(),
        "fast",
        Quota {
            agents_per_run: 100_000,
            agents_in_flight: 64,
            budget_per_run: 100_000_000,
            tokens_per_day: u64::MAX / 4,
            tokens_per_month: u64::MAX / 4,
            ..Quota::default()
        },
    );

    tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(corral_server::serve(
            service.clone(),
            listener,
            corral_server::ServerOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let bench = Arc::new(Bench {
            client: reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap(),
            base,
        });

        // L': what a 50 ms timer delivers here.
        let mut sleeps = Vec::new();
        for _ in 0..20 {
            let began = Instant::now();
            tokio::time::sleep(Duration::from_millis(50)).await;
            sleeps.push(began.elapsed());
        }
        let latency = median(&mut sleeps);

        // Warm the compile cache: the first script compiles the runtime.
        let warm = bench.upload(&tenants[0].0, FANOUT).await;
        let (_, answer, _) = bench
            .send(&tenants[0].0, reqwest::Method::POST, "/v1/runs", Some(json!({"workflow": warm, "args": {"n": 1}})))
            .await;
        wait_all(&bench, &[(tenants[0].0.clone(), answer["id"].as_str().unwrap().to_string())], &mut Vec::new()).await;

        // 1. 10 tenants × 10 runs × 100 agents at 50 ms.
        let mut hashes = Vec::new();
        for (token, _) in &tenants {
            hashes.push(bench.upload(token, FANOUT).await);
        }
        let began = Instant::now();
        let began_ms = corral_host::record::now_ms();
        let mut submits = Vec::new();
        for round in 0..10 {
            for (i, (token, _)) in tenants.iter().enumerate() {
                let bench = Arc::clone(&bench);
                let (token, hash) = (token.clone(), hashes[i].clone());
                submits.push(tokio::spawn(async move {
                    let (status, answer, took) = bench
                        .send(&token, reqwest::Method::POST, "/v1/runs", Some(json!({"workflow": hash, "args": {"n": 100}, "sim_latency_ms": 50})))
                        .await;
                    assert_eq!(status, 201, "{answer} (round {round})");
                    (token, answer["id"].as_str().unwrap().to_string(), took)
                }));
            }
        }
        let mut runs = Vec::new();
        let mut post_latency = Vec::new();
        for submit in submits {
            let (token, id, took) = submit.await.unwrap();
            runs.push((token, id));
            post_latency.push(took);
        }
        let ideal = latency * 10_000usize.div_ceil(64) as u32;
        // Shares of slot time while every tenant is busy: between 20 % and 60 % of the ideal.
        let pool = service.tenancy().unwrap().pool().clone();
        let sampler = tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(began + ideal / 5)).await;
            let early = pool.stats();
            tokio::time::sleep_until(tokio::time::Instant::from_std(began + ideal * 3 / 5)).await;
            let late = pool.stats();
            (early, late)
        });
        let mut get_latency = Vec::new();
        wait_all(&bench, &runs, &mut get_latency).await;
        // From the first submit to the last run's recorded end (not to when polling saw it).
        let last_end = runs
            .iter()
            .filter_map(|(_, id)| store.run_detail(id).ok()?.summary.finished_ms)
            .max()
            .unwrap();
        let wall = Duration::from_millis((last_end - began_ms).max(0) as u64);
        let (early, late) = sampler.await.unwrap();
        let busy = |name: &str| {
            late[name].busy.as_secs_f64() - early.get(name).map_or(0.0, |s| s.busy.as_secs_f64())
        };
        let total_weight: u32 = tenants.iter().map(|(_, w)| w).sum();
        let total_busy: f64 = (0..10).map(|i| busy(&format!("t{i}"))).sum();
        let mut worst_share = 0.0f64;
        for (i, (_, weight)) in tenants.iter().enumerate() {
            let share = busy(&format!("t{i}")) / total_busy;
            let fair = f64::from(*weight) / f64::from(total_weight);
            worst_share = worst_share.max(((share - fair) / fair).abs());
        }
        let p = |values: &mut Vec<Duration>, q| ms(percentile(values, q));

        // 2. Density: 1000 suspended JS runs.
        let slow = bench.upload(&dense, ONE_SLOW).await;
        let before = rss_bytes();
        let mut waiting = Vec::new();
        for _ in 0..1000 {
            let (status, answer, _) = bench
                .send(&dense, reqwest::Method::POST, "/v1/runs", Some(json!({"workflow": slow, "sim_latency_ms": 600_000})))
                .await;
            assert_eq!(status, 201, "{answer}");
            waiting.push(answer["id"].as_str().unwrap().to_string());
        }
        // Every run has started its agent and is suspended waiting on it.
        loop {
            let listed = bench.send(&dense, reqwest::Method::GET, "/v1/runs?status=running&limit=500", None).await.1;
            let running = listed["runs"].as_array().map_or(0, |r| r.len());
            let all_started = stats_agents(&service) >= 1000;
            if running >= 500 && all_started {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_bytes();
        let per_run = (after.saturating_sub(before)) as f64 / 1000.0;
        for id in &waiting {
            bench.send(&dense, reqwest::Method::POST, &format!("/v1/runs/{id}/stop"), None).await;
        }

        // 3. Journaled calls per second at 0 ms.
        let many = bench.upload(&fast, FANOUT).await;
        let began = Instant::now();
        let mut fast_runs = Vec::new();
        for _ in 0..5 {
            let (status, answer, _) = bench
                .send(&fast, reqwest::Method::POST, "/v1/runs", Some(json!({"workflow": many, "args": {"n": 4000}, "limits": {"max_concurrent": 64, "max_agents": 4000}})))
                .await;
            assert_eq!(status, 201, "{answer}");
            fast_runs.push((fast.clone(), answer["id"].as_str().unwrap().to_string()));
        }
        wait_all(&bench, &fast_runs, &mut Vec::new()).await;
        let calls_per_second = 20_000.0 / began.elapsed().as_secs_f64();

        println!("| measure | result | target |");
        println!("|---|---|---|");
        println!(
            "| 10 tenants × 10 runs × 100 agents at L = 50 ms (L' = {:.1} ms), 64 slots: wall ÷ ideal | {:.2} s ÷ {:.2} s = {:.3} | ≤ 1.02 |",
            ms(latency),
            wall.as_secs_f64(),
            ideal.as_secs_f64(),
            wall.as_secs_f64() / ideal.as_secs_f64()
        );
        println!(
            "| worst tenant's share of slot time against its weight (weights 1 and 2, all busy) | {:+.1} % | within ±5 % |",
            worst_share * 100.0
        );
        println!(
            "| POST /v1/runs under that load, p50 / p99 | {:.2} ms / {:.2} ms | |",
            p(&mut post_latency, 0.5),
            p(&mut post_latency, 0.99)
        );
        println!(
            "| GET /v1/runs/{{id}} under that load, p50 / p99 | {:.2} ms / {:.2} ms | |",
            p(&mut get_latency, 0.5),
            p(&mut get_latency, 0.99)
        );
        println!(
            "| resident memory per suspended JS run (1000 runs) | {:.0} KiB = {:.0} runs per GiB | ≥ 5000 runs per GiB |",
            per_run / 1024.0,
            (1u64 << 30) as f64 / per_run
        );
        println!(
            "| journaled agent calls per second at 0 ms through the server (5 runs × 4000) | {calls_per_second:.0}/s | ≥ 50k/s |"
        );
        let _ = stop.send(());
        let _ = server.await;
    });
}

/// Agents holding or waiting for the shared pool.
fn stats_agents(service: &RunService) -> usize {
    service
        .tenancy()
        .unwrap()
        .pool()
        .stats()
        .values()
        .map(|s| s.in_use + s.waiting)
        .sum()
}

async fn wait_all(bench: &Bench, runs: &[(String, String)], latencies: &mut Vec<Duration>) {
    let mut pending: Vec<&(String, String)> = runs.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for run in pending {
            let (_, answer, took) = bench
                .send(
                    &run.0,
                    reqwest::Method::GET,
                    &format!("/v1/runs/{}", run.1),
                    None,
                )
                .await;
            latencies.push(took);
            let status = answer["status"].as_str().unwrap_or("");
            match status {
                "queued" | "running" => still.push(run),
                "succeeded" => {}
                other => panic!("run {} ended {other}: {answer}", run.1),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
