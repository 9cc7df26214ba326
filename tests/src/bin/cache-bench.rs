//! Prompt-cache-aware fan-out, measured: 100 agents whose prompts share a 10k-token context run
//! through the engine's scheduler and agent loop against the fake servers (real HTTP, real wire
//! protocols), once with cache awareness and once without, per protocol.
//!
//! `cargo run -p tests --bin cache-bench [-- AGENTS]`
//!
//! Tokens are counted the fake servers' way (bytes / 4). "billed" is input-equivalent tokens at
//! Anthropic's multipliers (cache writes 1.25×, reads 0.1×); cost uses the built-in prices of the
//! protocol's default model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::agent_loop::{AgentContext, AgentRequest, DEFAULT_MAX_TURNS};
use corral_host::budget::BudgetLedger;
use corral_host::config::CorralConfig;
use corral_host::events::NoEvents;
use corral_host::provider::Usage;
use corral_host::scheduler::AgentScheduler;
use corral_host::schema::OutputSchema;
use serde_json::json;
use tests::fake_llm::{FakeLlm, Protocol};

/// Bytes of the shared context: 10k tokens as the fake servers count them.
const SHARED_BYTES: usize = 40_000;
/// Agents in flight at once (the engine's default).
const CONCURRENCY: usize = 16;
/// What each fake answer takes, so that concurrent requests really overlap.
const LATENCY: Duration = Duration::from_millis(100);

fn shared_context() -> String {
    let mut context = String::from("You review a Rust code base. Here is the code you need:\n");
    let mut line = 0;
    while context.len() < SHARED_BYTES {
        context.push_str(&format!(
            "pub fn item_{line}(x: u32) -> u32 {{ x.wrapping_mul({line}) ^ 0x5f }}\n"
        ));
        line += 1;
    }
    context
}

struct Outcome {
    usage: Usage,
    ok: u64,
    wall: Duration,
    requests: usize,
}

fn run(protocol: Protocol, aware: bool, agents: usize, context: &str) -> Outcome {
    let fake = FakeLlm::start(protocol, Some("bench-key"));
    fake.set_latency(LATENCY);
    let mut settings = fake.settings();
    settings.prompt_cache = aware;
    let agent_context = AgentContext {
        provider: FakeLlm::provider_with(settings),
        ledger: BudgetLedger::new(None),
        tools: None,
        events: Arc::new(NoEvents),
        schema_attempts: corral_host::agent_loop::MAX_SCHEMA_ATTEMPTS,
        pause: None,
        commands: Default::default(),
    };
    let schema = Arc::new(
        OutputSchema::from_value(json!({
            "type": "object",
            "properties": {"bug": {"type": "boolean"}, "why": {"type": "string"}},
            "required": ["bug"],
        }))
        .expect("a valid schema"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let began = Instant::now();
    let stats = runtime.block_on(async {
        let mut scheduler =
            AgentScheduler::new(agent_context, CONCURRENCY, 1000, Arc::new(NoEvents));
        let mut ids = Vec::new();
        for i in 0..agents {
            let request = AgentRequest {
                prompt: format!(
                    "{context}\nTask {i}: does item_{i} overflow? Answer with the submit tool."
                ),
                label: None,
                phase: None,
                model: None,
                effort: None,
                schema: Some(Arc::clone(&schema)),
                tools: None,
                max_tokens: 256,
                output_floor: None,
                max_turns: DEFAULT_MAX_TURNS,
                timeout: None,
                isolated: false,
            };
            ids.push(scheduler.start(request).expect("under the agent cap"));
        }
        while !ids.is_empty() {
            for (id, _) in scheduler.wait(&ids).await {
                ids.retain(|&other| other != id);
            }
        }
        scheduler.stats()
    });
    Outcome {
        usage: stats.usage,
        ok: stats.succeeded,
        wall: began.elapsed(),
        requests: fake.received().len(),
    }
}

fn main() {
    let agents: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let context = shared_context();
    let config = CorralConfig::default();
    println!(
        "{agents} agents, shared context of {} bytes (~{} tokens), {CONCURRENCY} in flight, {} ms per answer\n",
        context.len(),
        context.len() / 4,
        LATENCY.as_millis()
    );
    println!(
        "{:<10} {:<7} {:>4} {:>5} {:>9} {:>11} {:>10} {:>7} {:>10} {:>10} {:>7} {:>8} {:>6}",
        "protocol",
        "cache",
        "ok",
        "reqs",
        "input",
        "cache_write",
        "cache_read",
        "output",
        "total",
        "billed",
        "read %",
        "cost $",
        "wall s"
    );
    for protocol in [Protocol::Anthropic, Protocol::OpenAi] {
        let (name, model) = match protocol {
            Protocol::Anthropic => ("anthropic", "claude-sonnet-4-6"),
            Protocol::OpenAi => ("openai", "gpt-5"),
        };
        let price = config.price(model).expect("a built-in price");
        for aware in [true, false] {
            let outcome = run(protocol, aware, agents, &context);
            let u = outcome.usage;
            let prompt = u.input_tokens + u.cache_write_tokens + u.cache_read_tokens;
            let billed = u.input_tokens as f64
                + 1.25 * u.cache_write_tokens as f64
                + 0.1 * u.cache_read_tokens as f64;
            println!(
                "{:<10} {:<7} {:>4} {:>5} {:>9} {:>11} {:>10} {:>7} {:>10} {:>10.0} {:>6.1}% {:>8.3} {:>6.2}",
                name,
                if aware { "aware" } else { "unaware" },
                outcome.ok,
                outcome.requests,
                u.input_tokens,
                u.cache_write_tokens,
                u.cache_read_tokens,
                u.output_tokens,
                u.total(),
                billed,
                100.0 * u.cache_read_tokens as f64 / prompt.max(1) as f64,
                price.cost(&u),
                outcome.wall.as_secs_f64(),
            );
        }
    }
}
