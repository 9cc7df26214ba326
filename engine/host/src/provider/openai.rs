//! OpenAI-compatible Chat Completions (`POST {base}/chat/completions`): OpenAI itself, and the
//! servers that copy its protocol (vLLM, llama.cpp server, Ollama, LiteLLM, OpenRouter).
//!
//! Tools go out as `{"type": "function", "function": {...}}`, calls come back as `tool_calls`
//! whose `arguments` are JSON text, and are answered with `role: "tool"` messages. Schema answers
//! use either the `submit` function tool or, where the server supports it and the configuration
//! asks for it, `response_format: {"type": "json_schema"}`. Caching is automatic on these
//! servers; `prompt_tokens` includes the cached tokens, which are reported apart in
//! `prompt_tokens_details.cached_tokens` (cache writes are not reported).

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Map, Value, json};

use super::SUBMIT_TOOL;
use super::http::{HttpClient, WarnOnce};
use super::settings::{MaxTokensField, ProviderSettings, StructuredOutput};
use super::{
    Block, BoxFuture, ChatRequest, ChatResponse, Effort, Provider, ProviderError, RetryPolicy,
    Role, Spent, StopReason, Usage,
};

const NAME: &str = "openai";

/// A provider speaking OpenAI-compatible Chat Completions.
pub struct OpenAiProvider {
    settings: ProviderSettings,
    http: HttpClient,
    url: String,
    warnings: WarnOnce,
}

impl OpenAiProvider {
    /// A provider for these settings.
    pub fn new(settings: ProviderSettings) -> Result<Self, String> {
        let http = HttpClient::new(NAME, settings.api_key.clone())?;
        let url = format!("{}/chat/completions", settings.base_url);
        Ok(OpenAiProvider {
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
        let response_format = self.settings.structured_output == StructuredOutput::ResponseFormat;
        // With `response_format`, the server shapes the final answer; the submit tool goes away.
        let submit = request.tools.iter().find(|tool| tool.name == SUBMIT_TOOL);
        let tools: Vec<&super::ToolSpec> = request
            .tools
            .iter()
            .filter(|tool| !(response_format && tool.name == SUBMIT_TOOL))
            .collect();

        let mut body = Map::new();
        body.insert("model".into(), json!(request.model));
        let mut messages = Vec::new();
        if !request.system.is_empty() {
            messages.push(json!({"role": "system", "content": request.system}));
        }
        for message in &request.messages {
            push_message(&mut messages, message.role, &message.content);
        }
        body.insert("messages".into(), Value::Array(messages));
        let limit_field = match self.settings.max_tokens_field {
            MaxTokensField::MaxCompletionTokens => "max_completion_tokens",
            MaxTokensField::MaxTokens => "max_tokens",
        };
        body.insert(limit_field.into(), json!(request.max_tokens));
        if !tools.is_empty() {
            let specs: Vec<Value> = tools
                .iter()
                .map(|tool| {
                    json!({"type": "function", "function": {
                        "name": tool.name, "description": tool.description, "parameters": tool.input_schema,
                    }})
                })
                .collect();
            body.insert("tools".into(), Value::Array(specs));
            let choice = match &request.force_tool {
                Some(name) if tools.iter().any(|tool| &tool.name == name) => {
                    json!({"type": "function", "function": {"name": name}})
                }
                _ => json!("auto"),
            };
            body.insert("tool_choice".into(), choice);
        }
        if response_format && let Some(submit) = submit {
            body.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": SUBMIT_TOOL, "schema": submit.input_schema, "strict": false}}),
            );
        }
        if let Some(effort) = request.effort {
            if self.settings.supports_effort(&request.model) {
                body.insert("reasoning_effort".into(), json!(effort_name(effort)));
            } else {
                self.warnings.warn(format!(
                    "model {} does not take a reasoning effort; effort is ignored for it (list it in effort_models in corral.toml if it does)",
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
        let Some(choice) = body["choices"].get(0) else {
            return Err(unusable(format!(
                "the answer has no choices: {}",
                short(&body)
            )));
        };
        let Some(usage) = usage else {
            return Err(unusable(format!(
                "the answer has no usage: {}",
                short(&body)
            )));
        };
        let message = &choice["message"];
        let mut content = Vec::new();
        if let Some(text) = message["content"].as_str()
            && !text.is_empty()
        {
            content.push(Block::Text(self.http.redact(text)));
        }
        for (index, call) in message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(name) = call["function"]["name"].as_str() else {
                return Err(unusable(format!(
                    "a tool call lacks its function name: {call}"
                )));
            };
            let id = call["id"]
                .as_str()
                .map_or_else(|| format!("call_{index}"), str::to_string);
            let input = match &call["function"]["arguments"] {
                // Arguments are JSON text; text that does not parse goes to the model as a string,
                // where validation explains what is wrong.
                Value::String(text) => {
                    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
                }
                Value::Null => json!({}),
                other => other.clone(),
            };
            content.push(Block::ToolUse {
                id,
                name: name.to_string(),
                input: self.http.redact_json(input),
            });
        }
        let has_calls = content
            .iter()
            .any(|block| matches!(block, Block::ToolUse { .. }));
        let stop = match choice["finish_reason"].as_str() {
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            // Some servers say "stop" even when they called tools.
            Some("stop") if has_calls => StopReason::ToolUse,
            Some("stop") => StopReason::EndTurn,
            Some("length") => StopReason::MaxTokens,
            Some(other) => StopReason::Other(other.to_string()),
            None if has_calls => StopReason::ToolUse,
            None => StopReason::EndTurn,
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

impl Provider for OpenAiProvider {
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
            let mut headers = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
            if let Some(key) = self.http.key() {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .expect("checked by ApiKey::new");
                value.set_sensitive(true);
                headers.push((AUTHORIZATION, value));
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

fn effort_name(effort: Effort) -> &'static str {
    match effort {
        Effort::Low => "low",
        Effort::Medium => "medium",
        Effort::High => "high",
        // The Chat Completions levels stop at `xhigh`.
        Effort::XHigh | Effort::Max => "xhigh",
    }
}

/// Appends one message of the conversation as Chat Completions messages: an assistant message
/// with `tool_calls`, one `tool` message per tool result, and a user message for any text.
fn push_message(messages: &mut Vec<Value>, role: Role, blocks: &[Block]) {
    let text: String = blocks
        .iter()
        .filter_map(|block| match block {
            Block::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect();
    match role {
        Role::Assistant => {
            let calls: Vec<Value> = blocks
                .iter()
                .filter_map(|block| match block {
                    Block::ToolUse { id, name, input } => Some(json!({
                        "id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()},
                    })),
                    _ => None,
                })
                .collect();
            let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
            } else if text.is_empty() {
                message["content"] = json!("(empty)");
            }
            messages.push(message);
        }
        Role::User => {
            for block in blocks {
                if let Block::ToolResult {
                    id,
                    content,
                    is_error,
                } = block
                {
                    // The protocol has no error flag for tool results; say it in the content.
                    let content = if *is_error {
                        format!("Error: {content}")
                    } else {
                        content.clone()
                    };
                    messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                }
            }
            if !text.is_empty() {
                messages.push(json!({"role": "user", "content": text}));
            }
        }
    }
}

fn parse_usage(usage: &Value) -> Option<Usage> {
    let prompt = usage["prompt_tokens"].as_u64()?;
    let cached = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0)
        .min(prompt);
    Some(Usage {
        input_tokens: prompt - cached,
        output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
        cache_read_tokens: cached,
        cache_write_tokens: 0,
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
