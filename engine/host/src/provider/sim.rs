//! The simulated provider: deterministic, offline, free.
//!
//! It lets workflows run end to end without a network: for a request that offers the schema submit
//! tool it submits a valid instance generated from the schema; otherwise it answers with
//! deterministic text. Usage is estimated from text length (about four bytes per token). An
//! optional latency makes it useful for measuring scheduling, and it counts requests in flight so
//! tests can observe the concurrency cap from the provider's side.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::SUBMIT_TOOL;
use super::{
    Block, BoxFuture, ChatRequest, ChatResponse, Provider, ProviderError, StopReason, Usage,
};
use crate::schema::example_instance;

/// The simulated provider.
#[derive(Debug, Default)]
pub struct SimProvider {
    latency: Duration,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    requests: AtomicU64,
}

impl SimProvider {
    /// A provider that answers after `latency`.
    pub fn new(latency: Duration) -> Self {
        SimProvider {
            latency,
            ..SimProvider::default()
        }
    }

    /// The most requests that were ever in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Requests answered or in flight so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Decrements the in-flight count even when the request future is dropped (cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Provider for SimProvider {
    fn name(&self) -> &str {
        "sim"
    }

    fn resolve_model(&self, requested: Option<&str>) -> String {
        match requested {
            None | Some("") => "sim-default".to_string(),
            Some(alias @ ("haiku" | "sonnet" | "opus")) => format!("sim-{alias}"),
            Some(model) => model.to_string(),
        }
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
            let _in_flight = InFlight(&self.in_flight);
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            answer(request)
        })
    }
}

/// Bytes of output one token stands for when the simulator bounds an answer by `max_tokens`.
const BYTES_PER_TOKEN: usize = 4;

fn answer(request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
    let seed = fnv1a(request);
    let submit = request.tools.iter().find(|tool| tool.name == SUBMIT_TOOL);
    let (content, stop, output_bytes) = match submit {
        Some(tool) => {
            // Like a real model, the simulator cannot answer more than max_tokens can hold.
            let room = (request.max_tokens as usize).saturating_mul(BYTES_PER_TOKEN);
            let input = example_instance(&tool.input_schema, seed, room)
                .map_err(|reason| ProviderError::fatal("sim", reason))?;
            let bytes = input.to_string().len();
            let block = Block::ToolUse {
                id: format!("sim-{seed:016x}"),
                name: SUBMIT_TOOL.to_string(),
                input,
            };
            (vec![block], StopReason::ToolUse, bytes)
        }
        None => {
            let prompt = last_user_text(request);
            let head: String = prompt.chars().take(120).collect();
            let text = format!(
                "[simulated {} answer {:04x}] {head}",
                request.model,
                seed & 0xffff
            );
            let bytes = text.len();
            (vec![Block::Text(text)], StopReason::EndTurn, bytes)
        }
    };
    let usage = Usage {
        input_tokens: request.input_bytes().div_ceil(4),
        output_tokens: (output_bytes as u64)
            .div_ceil(4)
            .min(u64::from(request.max_tokens)),
        cache_read_tokens: 0,
        cache_write_tokens: 0,
    };
    Ok(ChatResponse {
        content,
        stop,
        usage,
        model: request.model.clone(),
    })
}

fn last_user_text(request: &ChatRequest) -> &str {
    request
        .messages
        .iter()
        .rev()
        .flat_map(|message| message.content.iter())
        .find_map(|block| match block {
            Block::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// A stable hash of what the request asks, so the same request always gets the same answer.
fn fnv1a(request: &ChatRequest) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(request.model.as_bytes());
    feed(request.system.as_bytes());
    feed(&(request.messages.len() as u64).to_le_bytes());
    feed(last_user_text(request).as_bytes());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Message, ToolSpec};
    use serde_json::json;

    fn request(tools: Vec<ToolSpec>) -> ChatRequest {
        ChatRequest {
            model: "sim-default".into(),
            system: "system".into(),
            messages: vec![Message::user_text("audit main.rs")],
            tools,
            force_tool: None,
            max_tokens: 100,
            effort: None,
            cache: Default::default(),
        }
    }

    #[tokio::test]
    async fn text_answers_are_deterministic() {
        let sim = SimProvider::default();
        let a = sim.complete(&request(vec![])).await.unwrap();
        let b = sim.complete(&request(vec![])).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.stop, StopReason::EndTurn);
        assert!(matches!(&a.content[0], Block::Text(t) if t.contains("audit main.rs")));
        assert_eq!(sim.requests(), 2);
    }

    #[tokio::test]
    async fn schema_requests_submit_a_valid_instance() {
        let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]});
        let submit = ToolSpec {
            name: SUBMIT_TOOL.into(),
            description: String::new(),
            input_schema: schema,
        };
        let answer = SimProvider::default()
            .complete(&request(vec![submit]))
            .await
            .unwrap();
        assert_eq!(answer.stop, StopReason::ToolUse);
        let Block::ToolUse { input, .. } = &answer.content[0] else {
            panic!("expected a tool use")
        };
        assert!(input["ok"].is_boolean());
        assert!(answer.usage.output_tokens <= 100);
    }

    #[test]
    fn aliases_resolve_to_sim_models() {
        let sim = SimProvider::default();
        assert_eq!(sim.resolve_model(Some("haiku")), "sim-haiku");
        assert_eq!(sim.resolve_model(None), "sim-default");
        assert_eq!(sim.resolve_model(Some("gpt-x")), "gpt-x");
    }
}
