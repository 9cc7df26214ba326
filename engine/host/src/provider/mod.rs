//! LLM providers behind one trait. Only this module (and its submodules) does network I/O.
//!
//! A provider answers one request of a conversation: the agent loop (`crate::agent_loop`) owns
//! the conversation, the tools and the schema retries; a provider only translates a
//! [`ChatRequest`] to its wire protocol and the answer back to a [`ChatResponse`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

pub mod anthropic;
mod http;
pub mod openai;
pub mod retry;
pub mod settings;
pub mod sim;

/// The name of the tool a schema'd call answers through.
pub const SUBMIT_TOOL: &str = "submit";

pub use http::ApiKey;
pub use retry::RetryPolicy;

/// A boxed future, so that providers can be chosen at run time (`dyn Provider`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The host, speaking for the workflow (prompts, tool results).
    User,
    /// The model.
    Assistant,
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Plain text.
    Text(String),
    /// The model asks to run a tool.
    ToolUse {
        /// Provider-assigned id, echoed by the matching [`Block::ToolResult`].
        id: String,
        /// Tool name.
        name: String,
        /// Tool input (a JSON object).
        input: Value,
    },
    /// The host's answer to a [`Block::ToolUse`].
    ToolResult {
        /// The id of the tool use this answers.
        id: String,
        /// The tool's output, or the error text.
        content: String,
        /// Whether `content` is an error.
        is_error: bool,
    },
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: Vec<Block>,
}

impl Message {
    /// A user message holding one text block.
    pub fn user_text(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: vec![Block::Text(text.into())],
        }
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Name the model uses to call it.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its input.
    pub input_schema: Value,
}

/// How hard the model should think.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    /// Least reasoning.
    Low,
    /// Default reasoning.
    Medium,
    /// More reasoning.
    High,
    /// Even more reasoning.
    XHigh,
    /// Most reasoning the provider offers.
    Max,
}

/// One request to a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Provider model id (aliases are resolved before this point).
    pub model: String,
    /// System prompt.
    pub system: String,
    /// The conversation so far; the last message is the user's.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Force the model to call this tool (used for the schema submit tool when supported).
    pub force_tool: Option<String>,
    /// Maximum output tokens.
    pub max_tokens: u32,
    /// Requested reasoning effort, if any.
    pub effort: Option<Effort>,
    /// Which parts of the request are worth caching (providers without a prompt cache ignore it).
    pub cache: CacheHints,
}

/// Where a provider with a prompt cache should mark the request as cacheable.
///
/// Caches work on prefixes, in the order tools, system prompt, messages: everything up to a
/// marked point can be written once and read by later requests that start the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheHints {
    /// The tools and the system prompt are shared with sibling requests.
    pub system: bool,
    /// The first block of the first message is a prompt prefix shared with sibling requests.
    pub shared_prefix: bool,
    /// The conversation so far will be sent again next turn (a multi-turn agent).
    pub conversation: bool,
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It finished its answer.
    EndTurn,
    /// It wants tool results.
    ToolUse,
    /// It hit `max_tokens`.
    MaxTokens,
    /// Anything else the provider reported.
    Other(String),
}

/// Token usage of one provider request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
}

impl Usage {
    /// Every token this usage counts, which is what the budget charges.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }

    /// This usage bounded by what a request can really cost: input, cache reads and cache
    /// writes together at most `input` tokens, output at most `output`.
    pub fn clamped(&self, input: u64, output: u64) -> Usage {
        let mut room = input;
        let mut take = |tokens: u64| {
            let taken = tokens.min(room);
            room -= taken;
            taken
        };
        Usage {
            input_tokens: take(self.input_tokens),
            cache_read_tokens: take(self.cache_read_tokens),
            cache_write_tokens: take(self.cache_write_tokens),
            output_tokens: self.output_tokens.min(output),
        }
    }

    /// Adds another usage to this one.
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
    }
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// What the model said.
    pub content: Vec<Block>,
    /// Why it stopped.
    pub stop: StopReason,
    /// What the request cost.
    pub usage: Usage,
    /// The model id that answered.
    pub model: String,
}

/// What a failed request may have cost, which decides how its budget reservation is settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Spent {
    /// Nothing: the request was refused or never arrived (HTTP errors, connection refused).
    #[default]
    Nothing,
    /// The provider may have processed and billed it, but did not say how much (a timeout, an
    /// unreadable answer); the reservation is charged in full so the budget stays an upper bound.
    Unknown,
    /// The provider reported this usage, though the answer was unusable.
    Tokens(Usage),
}

/// A provider failure.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    /// Worth retrying (rate limits, overload, server errors, connection failures).
    #[error("{provider}: {message} (transient)")]
    Transient {
        /// Provider name.
        provider: String,
        /// What went wrong.
        message: String,
        /// How long the provider asked us to wait (`retry-after`), if it said.
        retry_after: Option<Duration>,
        /// What the attempt may have cost.
        spent: Spent,
    },
    /// Not worth retrying (bad request, authentication).
    #[error("{provider}: {message}")]
    Fatal {
        /// Provider name.
        provider: String,
        /// What went wrong.
        message: String,
        /// What the attempt may have cost.
        spent: Spent,
    },
    /// The account's usage or spend limit is reached: no request succeeds until someone lifts
    /// it, so a run pauses (to be resumed) rather than failing its agents one by one. Refused
    /// requests are not billed.
    #[error("{provider}: {message}")]
    UsageLimit {
        /// Provider name.
        provider: String,
        /// What the provider said.
        message: String,
    },
}

impl ProviderError {
    /// A transient failure that cost nothing and names no wait.
    pub fn transient(provider: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError::Transient {
            provider: provider.into(),
            message: message.into(),
            retry_after: None,
            spent: Spent::Nothing,
        }
    }

    /// A fatal failure that cost nothing.
    pub fn fatal(provider: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError::Fatal {
            provider: provider.into(),
            message: message.into(),
            spent: Spent::Nothing,
        }
    }

    /// What the failed attempt may have cost.
    pub fn spent(&self) -> Spent {
        match self {
            ProviderError::Transient { spent, .. } | ProviderError::Fatal { spent, .. } => *spent,
            ProviderError::UsageLimit { .. } => Spent::Nothing,
        }
    }
}

/// A backend that answers chat requests.
pub trait Provider: Send + Sync + 'static {
    /// Short name for messages and the journal (`sim`, `anthropic`, `openai`).
    fn name(&self) -> &str;

    /// Resolves a model alias (`haiku`, `sonnet`, `opus`) or `None` (the default) to a model id.
    fn resolve_model(&self, requested: Option<&str>) -> String;

    /// Answers one request.
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;

    /// Whether the provider keeps a prompt cache that sibling requests sharing a prefix can read.
    /// The agent loop then marks shared prefixes and sends the first request of a group of
    /// siblings before the others, so that they read the cache instead of each writing it.
    fn prompt_cache(&self) -> bool {
        false
    }

    /// How failed requests are retried, and how long one request may take.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }
}

impl ChatRequest {
    /// Bytes of everything the request sends as input (system, messages, tool definitions).
    ///
    /// Tokenizers in use encode at least one byte per token, so this is an upper bound of the
    /// request's input tokens, which is what a budget reservation needs.
    pub fn input_bytes(&self) -> u64 {
        let mut bytes = self.system.len() + self.model.len();
        for message in &self.messages {
            bytes += 8;
            for block in &message.content {
                bytes += match block {
                    Block::Text(text) => text.len(),
                    Block::ToolUse { id, name, input } => id.len() + name.len() + json_len(input),
                    Block::ToolResult { id, content, .. } => id.len() + content.len() + 8,
                };
            }
        }
        for tool in &self.tools {
            bytes += tool.name.len() + tool.description.len() + json_len(&tool.input_schema);
        }
        bytes as u64
    }
}

fn json_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|bytes| bytes.len())
        .unwrap_or(0)
}
