//! A provider's settings, as the providers read them; `crate::config` builds them from
//! `corral.toml`, the built-in tables and the environment.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ApiKey, RetryPolicy};

/// Which wire protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The simulated provider (offline, deterministic).
    Sim,
    /// The Anthropic Messages API.
    Anthropic,
    /// OpenAI-compatible Chat Completions (OpenAI, vLLM, llama.cpp, Ollama, LiteLLM, OpenRouter).
    #[serde(rename = "openai")]
    OpenAi,
}

/// How an OpenAI-compatible provider asks for schema-shaped answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// A `submit` function tool whose arguments are validated (works wherever tools work).
    #[default]
    Tool,
    /// `response_format: {"type": "json_schema", ...}`: the server constrains the answer.
    /// Servers that constrain decoding may then not call the read-only tools.
    ResponseFormat,
}

/// The field an OpenAI-compatible server reads the output limit from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// `max_completion_tokens` (OpenAI's current name; required by its reasoning models).
    #[default]
    MaxCompletionTokens,
    /// `max_tokens` (older servers).
    MaxTokens,
}

/// A provider's settings with every default and environment variable applied.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The provider's name (`anthropic`, `openai`, `local` ...).
    pub name: String,
    /// Its protocol.
    pub kind: ProviderKind,
    /// Endpoint root, without a trailing slash.
    pub base_url: String,
    /// The key, when the provider needs one.
    pub api_key: Option<ApiKey>,
    /// The default model (an alias or an id).
    pub default_model: String,
    /// Aliases → model ids.
    pub models: BTreeMap<String, String>,
    /// Retries and the per-request timeout.
    pub retry: RetryPolicy,
    /// Whether to coordinate and mark shared prefixes for the provider's prompt cache.
    pub prompt_cache: bool,
    /// Model id prefixes that accept an effort setting.
    pub effort_models: Vec<String>,
    /// OpenAI-compatible: how schema answers are asked for.
    pub structured_output: StructuredOutput,
    /// OpenAI-compatible: the output-limit field.
    pub max_tokens_field: MaxTokensField,
    /// Anthropic: the `anthropic-version` header.
    pub anthropic_version: String,
}

impl ProviderSettings {
    /// The model id for an alias or id (`None`: the default model).
    pub fn resolve_model(&self, requested: Option<&str>) -> String {
        let wanted = match requested {
            Some(model) if !model.trim().is_empty() => model.trim(),
            _ => self.default_model.as_str(),
        };
        self.models
            .get(wanted)
            .cloned()
            .unwrap_or_else(|| wanted.to_string())
    }

    /// Whether `model` accepts an effort setting.
    pub fn supports_effort(&self, model: &str) -> bool {
        self.effort_models
            .iter()
            .any(|prefix| model.starts_with(prefix.as_str()))
    }
}
