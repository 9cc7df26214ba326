//! LLM providers behind one trait. Only this module (and its submodules) does network I/O.
//!
//! A provider answers one request of a conversation: the agent loop (`crate::agent_loop`) owns
//! the conversation, the tools and the schema retries; a provider only translates a
//! [`ChatRequest`] to its wire protocol and the answer back to a [`ChatResponse`].

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

pub mod sim;

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
        Message { role: Role::User, content: vec![Block::Text(text.into())] }
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    },
    /// Not worth retrying (bad request, authentication, spend limits, unparsable answers).
    #[error("{provider}: {message}")]
    Fatal {
        /// Provider name.
        provider: String,
        /// What went wrong.
        message: String,
    },
}

/// A backend that answers chat requests.
pub trait Provider: Send + Sync + 'static {
    /// Short name for messages and the journal (`sim`, `anthropic`, `openai`).
    fn name(&self) -> &str;

    /// Resolves a model alias (`haiku`, `sonnet`, `opus`) or `None` (the default) to a model id.
    fn resolve_model(&self, requested: Option<&str>) -> String;

    /// Answers one request.
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;
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
    serde_json::to_vec(value).map(|bytes| bytes.len()).unwrap_or(0)
}
