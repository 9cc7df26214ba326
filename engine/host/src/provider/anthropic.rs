//! The Anthropic Messages API (`POST {base}/v1/messages`).
//!
//! Requests carry `x-api-key` and `anthropic-version`; tools go out as `tools` with an
//! `input_schema`, a forced tool as `tool_choice: {"type": "tool"}`, tool calls come back as
//! `tool_use` blocks and are answered with `tool_result` blocks. With prompt caching on, the
//! shared prefix is marked with `cache_control` breakpoints (at most four per request): after the
//! system prompt (which caches the tools too, as they come first), after a shared leading block of
//! the first message, and at the end of a multi-turn conversation. Usage keeps
//! `cache_creation_input_tokens` (writes) and `cache_read_input_tokens` (reads) apart from the
//! uncached `input_tokens`.

use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::http::{HttpClient, WarnOnce};
use super::settings::ProviderSettings;
use super::{
    Block, BoxFuture, ChatRequest, ChatResponse, Effort, Message, Provider, ProviderError,
    RetryPolicy, Role, Spent, StopReason, Usage,
};

const NAME: &str = "anthropic";

/// A provider speaking the Anthropic Messages API.
pub struct AnthropicProvider {
    settings: ProviderSettings,
    http: HttpClient,
    url: String,
    warnings: WarnOnce,
}

impl AnthropicProvider {
    /// A provider for these settings.
    pub fn new(settings: ProviderSettings) -> Result<Self, String> {
        HeaderValue::from_str(&settings.anthropic_version).map_err(|_| {
            format!(
                "anthropic_version '{}' is not a valid header value",
                settings.anthropic_version
            )
        })?;
        let http = HttpClient::new(NAME, settings.api_key.clone())?;
        let url = format!("{}/v1/messages", settings.base_url);
        Ok(AnthropicProvider {
            settings,
            http,
            url,
            warnings: WarnOnce::default(),
        })
    }

    /// Warnings printed so far (each once per process), for tests.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.said()
    }

    /// The JSON body of a request.
    pub fn body(&self, request: &ChatRequest) -> Value {
        let cache = self.settings.prompt_cache;
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        body.insert("max_tokens".into(), json!(request.max_tokens));
        if !request.system.is_empty() {
            let system = if cache && request.cache.system {
                json!([{"type": "text", "text": request.system, "cache_control": ephemeral()}])
            } else {
                json!(request.system)
            };
            body.insert("system".into(), system);
        }
        let mut messages: Vec<Value> = request.messages.iter().map(message).collect();
        if cache {
            if request.cache.shared_prefix
                && let Some(block) = messages.first_mut().and_then(|m| m["content"].get_mut(0))
            {
                block["cache_control"] = ephemeral();
            }
            if request.cache.conversation
                && messages.len() > 1
                && let Some(block) = messages
                    .last_mut()
                    .and_then(|m| m["content"].as_array_mut())
                    .and_then(|c| c.last_mut())
            {
                block["cache_control"] = ephemeral();
            }
        }
        body.insert("messages".into(), Value::Array(messages));
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|tool| json!({"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}))
                .collect();
            body.insert("tools".into(), Value::Array(tools));
            let choice = match &request.force_tool {
                Some(name) if request.tools.iter().any(|tool| &tool.name == name) => {
                    json!({"type": "tool", "name": name})
                }
                _ => json!({"type": "auto"}),
            };
            body.insert("tool_choice".into(), choice);
        }
        if let Some(effort) = request.effort {
            if self.settings.supports_effort(&request.model) {
                body.insert(
                    "output_config".into(),
                    json!({"effort": effort_name(effort)}),
                );
            } else {
                self.warnings.warn(format!(
                    "model {} does not take an effort setting; effort is ignored for it (list it in effort_models in corral.toml if it does)",
                    request.model
                ));
            }
        }
        Value::Object(body)
    }

    /// Reads a response body.
    fn answer(&self, body: Value) -> Result<ChatResponse, ProviderError> {
        let usage = parse_usage(&body["usage"]);
        let unusable = |message: String| ProviderError::Transient {
            provider: NAME.to_string(),
            message: self.http.redact(&message),
            retry_after: None,
            spent: usage.map_or(Spent::Unknown, Spent::Tokens),
        };
        let Some(usage) = usage else {
            return Err(unusable(format!(
                "the answer has no usage: {}",
                short(&body)
            )));
        };
        let Some(blocks) = body["content"].as_array() else {
            return Err(unusable(format!(
                "the answer has no content array: {}",
                short(&body)
            )));
        };
        let mut content = Vec::new();
        for block in blocks {
            match block["type"].as_str() {
                Some("text") => {
                    let text = block["text"].as_str().unwrap_or_default();
                    content.push(Block::Text(self.http.redact(text)));
                }
                Some("tool_use") => {
                    let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str())
                    else {
                        return Err(unusable(format!(
                            "a tool_use block lacks its id or name: {block}"
                        )));
                    };
                    content.push(Block::ToolUse {
                        id: id.to_string(),
                        name: name.to_string(),
                        input: self.http.redact_json(block["input"].clone()),
                    });
                }
                // Thinking and other block kinds carry nothing the agent loop uses.
                _ => {}
            }
        }
        let stop = match body["stop_reason"].as_str() {
            Some("end_turn" | "stop_sequence") => StopReason::EndTurn,
            Some("tool_use") => StopReason::ToolUse,
            Some("max_tokens") => StopReason::MaxTokens,
            Some(other) => StopReason::Other(other.to_string()),
            None => StopReason::Other("none".to_string()),
        };
        let model = body["model"]
            .as_str()
            .map_or_else(String::new, str::to_string);
        Ok(ChatResponse {
            content,
            stop,
            usage,
            model,
        })
    }
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn resolve_model(&self, requested: Option<&str>) -> String {
        self.settings.resolve_model(requested)
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let mut headers = vec![
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (
                    HeaderName::from_static("anthropic-version"),
                    HeaderValue::from_str(&self.settings.anthropic_version)
                        .expect("checked in new"),
                ),
            ];
            if let Some(key) = self.http.key() {
                let mut value =
                    HeaderValue::from_str(key.expose()).expect("checked by ApiKey::new");
                value.set_sensitive(true);
                headers.push((HeaderName::from_static("x-api-key"), value));
            }
            let body = self
                .http
                .post_json(&self.url, headers, &self.body(request))
                .await?;
            let mut response = self.answer(body)?;
            if response.model.is_empty() {
                response.model = request.model.clone();
            }
            Ok(response)
        })
    }

    fn prompt_cache(&self) -> bool {
        self.settings.prompt_cache
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.settings.retry
    }
}

fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

fn effort_name(effort: Effort) -> &'static str {
    match effort {
        Effort::Low => "low",
        Effort::Medium => "medium",
        Effort::High => "high",
        Effort::XHigh => "xhigh",
        Effort::Max => "max",
    }
}

fn message(message: &Message) -> Value {
    let role = match message.role {
        Role::User => "user",
        Role::Assistant => "assistant",
    };
    let mut content: Vec<Value> = message
        .content
        .iter()
        .filter_map(|block| match block {
            // The API refuses empty text blocks.
            Block::Text(text) if text.is_empty() => None,
            Block::Text(text) => Some(json!({"type": "text", "text": text})),
            Block::ToolUse { id, name, input } => {
                Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
            }
            Block::ToolResult {
                id,
                content,
                is_error,
            } => {
                let mut result =
                    json!({"type": "tool_result", "tool_use_id": id, "content": content});
                if *is_error {
                    result["is_error"] = json!(true);
                }
                Some(result)
            }
        })
        .collect();
    if content.is_empty() {
        // Every message but a final assistant one must have content; an empty answer stays visible.
        content.push(json!({"type": "text", "text": "(empty)"}));
    }
    json!({"role": role, "content": content})
}

fn parse_usage(usage: &Value) -> Option<Usage> {
    let count = |key: &str| usage[key].as_u64().unwrap_or(0);
    usage.is_object().then(|| Usage {
        input_tokens: count("input_tokens"),
        output_tokens: count("output_tokens"),
        cache_read_tokens: count("cache_read_input_tokens"),
        cache_write_tokens: count("cache_creation_input_tokens"),
    })
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

#[cfg(test)]
mod tests;
