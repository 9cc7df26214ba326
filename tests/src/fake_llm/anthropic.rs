//! The Anthropic side of the fake: request validation, answers, errors and cache accounting.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hasher};

use serde_json::{Value, json};

use super::{
    Answer, Content, Failure, MIN_CACHE_TOKENS, PromptUsage, Protocol, invalid, output_tokens,
    tokens,
};

const TOP_LEVEL: [&str; 16] = [
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "thinking",
    "output_config",
    "service_tier",
    "container",
];

/// An error answer: `{"type": "error", "error": {"type", "message"}, "request_id"}`.
pub(super) fn error(status: u16, kind: &str, message: &str, details: Option<Value>) -> Answer {
    let mut error = json!({"type": kind, "message": message});
    if let Some(details) = details {
        error["details"] = details;
    }
    Answer::json(
        status,
        json!({"type": "error", "error": error, "request_id": "req_fake"}),
    )
}

pub(super) fn failure(failure: &Failure) -> Answer {
    match failure {
        Failure::RateLimited { retry_after } => {
            let mut answer = error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
                None,
            );
            if let Some(value) = retry_after {
                answer
                    .headers
                    .push(("retry-after".to_string(), value.clone()));
            }
            answer
        }
        Failure::Overloaded => error(529, "overloaded_error", "Overloaded", None),
        Failure::ServerError => error(500, "api_error", "Internal server error", None),
        Failure::SpendLimit => error(
            429,
            "rate_limit_error",
            "Your organization has reached its monthly spend limit",
            Some(json!({"error_code": "enforced_spend_limit_reached"})),
        ),
        Failure::BadRequest(message) => error(400, "invalid_request_error", message, None),
    }
}

/// Checks a request against the Messages API; the `Err` is the answer to send instead.
pub(super) fn check(
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    key: Option<&str>,
    bytes: &[u8],
    body: &Value,
) -> Result<(), Answer> {
    if path != "/v1/messages" || method != "POST" {
        return Err(error(
            404,
            "not_found_error",
            &format!("Not found: {method} {path}"),
            None,
        ));
    }
    if let Some(key) = key
        && headers.get("x-api-key").map(String::as_str) != Some(key)
    {
        return Err(error(
            401,
            "authentication_error",
            "invalid x-api-key",
            None,
        ));
    }
    let bad = |message: String| invalid(Protocol::Anthropic, message);
    if !headers.contains_key("anthropic-version") {
        return Err(bad("anthropic-version: header is required".to_string()));
    }
    if !headers
        .get("content-type")
        .is_some_and(|value| value.starts_with("application/json"))
    {
        return Err(bad("content-type must be application/json".to_string()));
    }
    let Some(object) = body.as_object() else {
        let text = String::from_utf8_lossy(bytes);
        return Err(bad(format!(
            "The request body is not valid JSON: {}",
            text.chars().take(80).collect::<String>()
        )));
    };
    validate(object).map_err(bad)
}

fn validate(body: &serde_json::Map<String, Value>) -> Result<(), String> {
    if let Some(extra) = body.keys().find(|key| !TOP_LEVEL.contains(&key.as_str())) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("model: Field required".to_string());
    }
    if body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .is_none_or(|n| n < 1)
    {
        return Err("max_tokens: Field required (an integer of at least 1)".to_string());
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err("stream: this fake server does not stream".to_string());
    }
    let mut breakpoints = 0;
    match body.get("system") {
        None | Some(Value::String(_)) => {}
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                text_block(block, &format!("system.{i}"), &mut breakpoints)?;
            }
        }
        Some(_) => {
            return Err(
                "system: Input should be a valid string or list of text blocks".to_string(),
            );
        }
    }
    let mut tool_names = Vec::new();
    if let Some(tools) = body.get("tools") {
        let tools = tools
            .as_array()
            .ok_or("tools: Input should be a valid list")?;
        for (i, tool) in tools.iter().enumerate() {
            let name = tool["name"]
                .as_str()
                .ok_or(format!("tools.{i}.name: Field required"))?;
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid_name {
                return Err(format!(
                    "tools.{i}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                ));
            }
            if tool_names.contains(&name) {
                return Err(format!("tools: Tool names must be unique ({name})"));
            }
            tool_names.push(name);
            if tool["input_schema"]["type"] != "object" {
                return Err(format!(
                    "tools.{i}.input_schema.type: Input should be 'object'"
                ));
            }
            if !tool["description"].is_null() && !tool["description"].is_string() {
                return Err(format!(
                    "tools.{i}.description: Input should be a valid string"
                ));
            }
            cache_control(tool, &format!("tools.{i}"), &mut breakpoints)?;
        }
    }
    if let Some(choice) = body.get("tool_choice") {
        if tool_names.is_empty() {
            return Err("tool_choice: may only be specified while providing tools".to_string());
        }
        match choice["type"].as_str() {
            Some("auto" | "any" | "none") => {}
            Some("tool") => {
                let name = choice["name"]
                    .as_str()
                    .ok_or("tool_choice.name: Field required")?;
                if !tool_names.contains(&name) {
                    return Err(format!("tool_choice.name: no tool named {name}"));
                }
            }
            _ => {
                return Err(
                    "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'".to_string(),
                );
            }
        }
    }
    if let Some(config) = body.get("output_config") {
        let effort = config["effort"].as_str();
        if !matches!(effort, Some("low" | "medium" | "high" | "xhigh" | "max"))
            || config.as_object().is_some_and(|o| o.len() != 1)
        {
            return Err(
                "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
                    .to_string(),
            );
        }
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_string());
    }
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages.{i}");
        let role = message["role"]
            .as_str()
            .ok_or(format!("{at}.role: Field required"))?;
        if i == 0 && role != "user" {
            return Err("messages.0.role: the first message must use the user role".to_string());
        }
        let blocks: Vec<Value> = match &message["content"] {
            Value::String(text) if !text.is_empty() => vec![json!({"type": "text", "text": text})],
            Value::Array(blocks) if !blocks.is_empty() => blocks.clone(),
            _ => {
                return Err(format!(
                    "{at}.content: messages must have non-empty content"
                ));
            }
        };
        let mut tool_uses = Vec::new();
        let mut results = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("{at}.content.{j}");
            match (role, block["type"].as_str()) {
                (_, Some("text")) => text_block(block, &at, &mut breakpoints)?,
                ("assistant", Some("tool_use")) => {
                    let id = block["id"]
                        .as_str()
                        .ok_or(format!("{at}.id: Field required"))?;
                    if block["name"].as_str().is_none() {
                        return Err(format!("{at}.name: Field required"));
                    }
                    if !block["input"].is_object() {
                        return Err(format!("{at}.input: Input should be a valid dictionary"));
                    }
                    cache_control(block, &at, &mut breakpoints)?;
                    tool_uses.push(id.to_string());
                }
                ("user", Some("tool_result")) => {
                    let id = block["tool_use_id"]
                        .as_str()
                        .ok_or(format!("{at}.tool_use_id: Field required"))?;
                    if !matches!(
                        block["content"],
                        Value::String(_) | Value::Array(_) | Value::Null
                    ) {
                        return Err(format!(
                            "{at}.content: Input should be a valid string or list"
                        ));
                    }
                    if !matches!(block["is_error"], Value::Bool(_) | Value::Null) {
                        return Err(format!("{at}.is_error: Input should be a valid boolean"));
                    }
                    cache_control(block, &at, &mut breakpoints)?;
                    results.push(id.to_string());
                }
                (role, kind) => {
                    return Err(format!(
                        "{at}: a {role} message cannot hold a {kind:?} block"
                    ));
                }
            }
        }
        if role == "user" {
            if let Some(unknown) = results.iter().find(|id| !pending_tool_uses.contains(id)) {
                return Err(format!(
                    "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {unknown}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
            if let Some(missing) = pending_tool_uses.iter().find(|id| !results.contains(id)) {
                return Err(format!(
                    "{at}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}. Each `tool_use` block must have a corresponding `tool_result` block in the next message."
                ));
            }
        }
        pending_tool_uses = tool_uses;
    }
    if breakpoints > 4 {
        return Err(format!(
            "A maximum of 4 blocks with cache_control may be provided. Found {breakpoints}."
        ));
    }
    Ok(())
}

fn text_block(block: &Value, at: &str, breakpoints: &mut usize) -> Result<(), String> {
    if block["type"] != "text" {
        return Err(format!("{at}.type: Input should be 'text'"));
    }
    match block["text"].as_str() {
        Some(text) if !text.is_empty() => {}
        _ => return Err(format!("{at}.text: text content blocks must be non-empty")),
    }
    cache_control(block, at, breakpoints)
}

fn cache_control(block: &Value, at: &str, breakpoints: &mut usize) -> Result<(), String> {
    let Some(control) = block.get("cache_control") else {
        return Ok(());
    };
    if control["type"] != "ephemeral"
        || !matches!(
            control.get("ttl").and_then(Value::as_str),
            None | Some("5m" | "1h")
        )
    {
        return Err(format!(
            "{at}.cache_control: Input should be {{\"type\": \"ephemeral\"}} with an optional ttl of 5m or 1h"
        ));
    }
    *breakpoints += 1;
    Ok(())
}

/// The prompt in cache order (tools, system, messages) as canonical pieces, each with whether a
/// breakpoint follows it. `cache_control` itself is not part of the text.
fn pieces(body: &Value) -> Vec<(String, bool)> {
    let strip = |block: &Value| {
        let mut block = block.clone();
        if let Some(object) = block.as_object_mut() {
            object.remove("cache_control");
        }
        block.to_string()
    };
    let marked = |block: &Value| block.get("cache_control").is_some();
    let mut pieces = Vec::new();
    for tool in body["tools"].as_array().into_iter().flatten() {
        pieces.push((strip(tool), marked(tool)));
    }
    match &body["system"] {
        Value::String(text) => pieces.push((text.clone(), false)),
        Value::Array(blocks) => {
            pieces.extend(blocks.iter().map(|block| (strip(block), marked(block))))
        }
        _ => {}
    }
    for message in body["messages"].as_array().into_iter().flatten() {
        pieces.push((
            format!("<{}>", message["role"].as_str().unwrap_or("")),
            false,
        ));
        match &message["content"] {
            Value::String(text) => pieces.push((text.clone(), false)),
            Value::Array(blocks) => {
                pieces.extend(blocks.iter().map(|block| (strip(block), marked(block))))
            }
            _ => {}
        }
    }
    pieces
}

/// The prompt side of a request's usage, looked up in `cache` when the request arrives: a read
/// needs a prefix that an earlier answered request wrote.
pub(super) fn prompt_usage(body: &Value, cache: &HashSet<u64>) -> PromptUsage {
    let mut hasher = DefaultHasher::new();
    let mut bytes = 0;
    let mut breakpoints = Vec::new();
    for (piece, marked) in pieces(body) {
        hasher.write(piece.as_bytes());
        hasher.write_u8(0xff);
        bytes += piece.len() + 1;
        if marked {
            breakpoints.push((tokens(bytes), hasher.finish()));
        }
    }
    let total = tokens(bytes);
    let read = breakpoints
        .iter()
        .filter(|(_, hash)| cache.contains(hash))
        .map(|(len, _)| *len)
        .max()
        .unwrap_or(0);
    let written = match breakpoints.last() {
        Some(&(len, hash)) if len >= MIN_CACHE_TOKENS && !cache.contains(&hash) => len - read,
        _ => 0,
    };
    let writes = breakpoints
        .into_iter()
        .filter(|&(len, _)| len >= MIN_CACHE_TOKENS)
        .map(|(_, hash)| hash)
        .collect();
    PromptUsage {
        usage: json!({
            "input_tokens": total - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
        }),
        writes,
    }
}

pub(super) fn respond(body: &Value, content: Content, serial: u64, mut usage: Value) -> Answer {
    let output = output_tokens(&content, body["max_tokens"].as_u64().unwrap_or(1));
    let (blocks, stop) = match content {
        Content::Text(text) => (json!([{"type": "text", "text": text}]), "end_turn"),
        Content::Tool { name, input } => (
            json!([{"type": "tool_use", "id": format!("toolu_fake_{serial}"), "name": name, "input": input}]),
            "tool_use",
        ),
    };
    usage["output_tokens"] = json!(output);
    let answer = json!({
        "id": format!("msg_fake_{serial}"),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage,
    });
    Answer {
        status: 200,
        headers: Vec::new(),
        body: answer.to_string(),
        usage,
    }
}
