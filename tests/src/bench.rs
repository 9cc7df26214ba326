//! Shared pieces of the bench binaries (`benches/engine.rs`, `benches/js.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::agent_loop::{AgentContext, AgentRequest};
use corral_host::budget::BudgetLedger;
use corral_host::events::NoEvents;
use corral_host::provider::sim::SimProvider;
use corral_host::scheduler::AgentScheduler;

/// The no-wasm baseline: `n` calls with `prompt(i)` through the same scheduler and simulated
/// provider the engine uses, started at once and collected with `wait`, at cap `cap`.
pub async fn scheduler_only(
    n: usize,
    cap: usize,
    latency: Duration,
    prompt: impl Fn(usize) -> String,
) -> Duration {
    let began = Instant::now();
    let context = AgentContext {
        provider: Arc::new(SimProvider::new(latency)),
        ledger: BudgetLedger::new(None),
        tools: None,
        events: Arc::new(NoEvents),
        schema_attempts: corral_host::agent_loop::MAX_SCHEMA_ATTEMPTS,
        pause: None,
        commands: Default::default(),
    };
    let mut scheduler = AgentScheduler::new(context, cap, u64::MAX, Arc::new(NoEvents));
    let mut ids: Vec<u64> = (0..n)
        .map(|i| {
            scheduler
                .start(AgentRequest::new(prompt(i)))
                .expect("no limit is in the way")
        })
        .collect();
    while !ids.is_empty() {
        let done = scheduler.wait(&ids).await;
        ids.retain(|id| !done.iter().any(|(d, _)| d == id));
    }
    began.elapsed()
}

/// The median of some durations.
pub fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Milliseconds, for printing.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// This process's resident memory (`VmRSS`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}
