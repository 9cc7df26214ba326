//! The OpenAI side of the fake: request validation, answers, errors and automatic caching.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hasher};

use serde_json::{Value, json};

use super::{
    Answer, Content, Failure, MIN_CACHE_TOKENS, PromptUsage, Protocol, invalid, output_tokens,
    tokens,
};

const TOP_LEVEL: [&str; 24] = [
    "model",
    "messages",
    "tools",
    "tool_choice",
    "max_tokens",
    "max_completion_tokens",
    "response_format",
    "reasoning_effort",
    "temperature",
    "top_p",
    "n",
    "stop",
    "stream",
    "stream_options",
    "seed",
    "user",
    "parallel_tool_calls",
    "prompt_cache_key",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "metadata",
    "store",
];

/// Automatic caching works on prefixes that grow in steps of this many tokens.
const CACHE_STEP_TOKENS: u64 = 128;

fn error(status: u16, kind: &str, message: &str, code: Option<&str>) -> Answer {
    Answer::json(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

pub(super) fn failure(failure: &Failure) -> Answer {
    match failure {
        Failure::RateLimited { retry_after } => {
            let mut answer = error(
                429,
                "requests",
                "Rate limit reached for requests. Please try again later.",
                Some("rate_limit_exceeded"),
            );
            if let Some(value) = retry_after {
                answer
                    .headers
                    .push(("retry-after".to_string(), value.clone()));
            }
            answer
        }
        Failure::Overloaded => error(
            503,
            "server_error",
            "The engine is currently overloaded, please try again later",
            None,
        ),
        Failure::ServerError => error(
            500,
            "server_error",
            "The server had an error while processing your request.",
            None,
        ),
        Failure::SpendLimit => error(
            429,
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
            Some("insufficient_quota"),
        ),
        Failure::BadRequest(message) => error(400, "invalid_request_error", message, None),
    }
}

/// Checks a request against Chat Completions; the `Err` is the answer to send instead.
pub(super) fn check(
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    key: Option<&str>,
    bytes: &[u8],
    body: &Value,
) -> Result<(), Answer> {
    if path != "/v1/chat/completions" || method != "POST" {
        return Err(error(
            404,
            "invalid_request_error",
            &format!("Invalid URL ({method} {path})"),
            None,
        ));
    }
    if let Some(key) = key
        && headers.get("authorization").map(String::as_str)
            != Some(format!("Bearer {key}").as_str())
    {
        return Err(error(
            401,
            "invalid_request_error",
            "Incorrect API key provided.",
            Some("invalid_api_key"),
        ));
    }
    let bad = |message: String| invalid(Protocol::OpenAi, message);
    let Some(object) = body.as_object() else {
        let text = String::from_utf8_lossy(bytes);
        return Err(bad(format!(
            "We could not parse the JSON body of your request: {}",
            text.chars().take(80).collect::<String>()
        )));
    };
    validate(object).map_err(bad)
}

fn validate(body: &serde_json::Map<String, Value>) -> Result<(), String> {
    if let Some(extra) = body.keys().find(|key| !TOP_LEVEL.contains(&key.as_str())) {
        return Err(format!("Unrecognized request argument supplied: {extra}"));
    }
    if body
        .get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("you must provide a model parameter".to_string());
    }
    if body.contains_key("max_tokens") && body.contains_key("max_completion_tokens") {
        return Err("max_tokens and max_completion_tokens cannot both be set".to_string());
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(value) = body.get(field)
            && value.as_u64().is_none_or(|n| n < 1)
        {
            return Err(format!(
                "Invalid '{field}': expected an integer of at least 1"
            ));
        }
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err("stream: this fake server does not stream".to_string());
    }
    if let Some(effort) = body.get("reasoning_effort")
        && !matches!(
            effort.as_str(),
            Some("none" | "minimal" | "low" | "medium" | "high" | "xhigh")
        )
    {
        return Err(format!("Invalid value for 'reasoning_effort': {effort}"));
    }
    let mut tool_names = Vec::new();
    if let Some(tools) = body.get("tools") {
        let tools = tools
            .as_array()
            .ok_or("Invalid type for 'tools': expected an array")?;
        for (i, tool) in tools.iter().enumerate() {
            if tool["type"] != "function" {
                return Err(format!(
                    "Invalid value for 'tools[{i}].type': expected 'function'"
                ));
            }
            let name = tool["function"]["name"].as_str().ok_or(format!(
                "Missing required parameter: 'tools[{i}].function.name'"
            ))?;
            if !valid_name(name) {
                return Err(format!(
                    "Invalid 'tools[{i}].function.name': string does not match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            if !matches!(
                tool["function"]["parameters"],
                Value::Object(_) | Value::Null
            ) {
                return Err(format!(
                    "Invalid type for 'tools[{i}].function.parameters': expected an object"
                ));
            }
            tool_names.push(name);
        }
    }
    if let Some(choice) = body.get("tool_choice") {
        if tool_names.is_empty() {
            return Err("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified".to_string());
        }
        match choice {
            Value::String(mode) if matches!(mode.as_str(), "none" | "auto" | "required") => {}
            Value::Object(_) if choice["type"] == "function" => {
                let name = choice["function"]["name"]
                    .as_str()
                    .ok_or("Missing required parameter: 'tool_choice.function.name'")?;
                if !tool_names.contains(&name) {
                    return Err(format!(
                        "Invalid value for 'tool_choice': no function named '{name}' was specified in 'tools'"
                    ));
                }
            }
            _ => return Err("Invalid value for 'tool_choice'".to_string()),
        }
    }
    if let Some(format) = body.get("response_format") {
        match format["type"].as_str() {
            Some("text" | "json_object") => {}
            Some("json_schema") => {
                let name = format["json_schema"]["name"]
                    .as_str()
                    .ok_or("Missing required parameter: 'response_format.json_schema.name'")?;
                if !valid_name(name) {
                    return Err("Invalid 'response_format.json_schema.name'".to_string());
                }
                if !format["json_schema"]["schema"].is_object() {
                    return Err(
                        "Invalid type for 'response_format.json_schema.schema': expected an object"
                            .to_string(),
                    );
                }
            }
            _ => return Err("Invalid value for 'response_format.type'".to_string()),
        }
    }
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("Missing required parameter: 'messages'")?;
    if messages.is_empty() {
        return Err(
            "Invalid 'messages': empty array. Expected an array with minimum length 1".to_string(),
        );
    }
    let mut pending: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"]
            .as_str()
            .ok_or(format!("Missing required parameter: 'messages[{i}].role'"))?;
        if role != "tool" && !pending.is_empty() {
            return Err(format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                pending.join(", ")
            ));
        }
        match role {
            "system" | "developer" | "user" => {
                if !matches!(&message["content"], Value::String(text) if !text.is_empty())
                    && !message["content"].is_array()
                {
                    return Err(format!(
                        "Invalid 'messages[{i}].content': expected a non-empty string or an array"
                    ));
                }
            }
            "assistant" => {
                let calls = message["tool_calls"].as_array();
                if message["content"].is_null() && calls.is_none_or(Vec::is_empty) {
                    return Err(format!(
                        "Invalid 'messages[{i}]': an assistant message needs content or tool_calls"
                    ));
                }
                for (j, call) in calls.into_iter().flatten().enumerate() {
                    let id = call["id"].as_str().ok_or(format!(
                        "Missing required parameter: 'messages[{i}].tool_calls[{j}].id'"
                    ))?;
                    if call["type"] != "function" || call["function"]["name"].as_str().is_none() {
                        return Err(format!(
                            "Invalid 'messages[{i}].tool_calls[{j}]': expected a function call with a name"
                        ));
                    }
                    if !call["function"]["arguments"].is_string() {
                        return Err(format!(
                            "Invalid type for 'messages[{i}].tool_calls[{j}].function.arguments': expected a string"
                        ));
                    }
                    pending.push(id.to_string());
                }
            }
            "tool" => {
                let id = message["tool_call_id"].as_str().ok_or(format!(
                    "Missing required parameter: 'messages[{i}].tool_call_id'"
                ))?;
                let Some(position) = pending.iter().position(|pending| pending == id) else {
                    return Err(format!(
                        "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls' ({id})"
                    ));
                };
                pending.remove(position);
                if !message["content"].is_string() && !message["content"].is_array() {
                    return Err(format!(
                        "Invalid 'messages[{i}].content': expected a string"
                    ));
                }
            }
            other => return Err(format!("Invalid value for 'messages[{i}].role': '{other}'")),
        }
    }
    if !pending.is_empty() {
        return Err(format!(
            "The following tool_call_ids did not have response messages: {}",
            pending.join(", ")
        ));
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The prompt side of a request's usage with automatic prefix caching, looked up when the
/// request arrives: prefixes from 1024 tokens on, in 128-token steps, are written when answered;
/// a later request reads the longest one it starts with.
pub(super) fn prompt_usage(body: &Value, cache: &HashSet<u64>) -> PromptUsage {
    let mut prompt = body["tools"].to_string();
    for message in body["messages"].as_array().into_iter().flatten() {
        prompt.push_str(&message.to_string());
    }
    let total = tokens(prompt.len());
    let mut hasher = DefaultHasher::new();
    let mut cached = 0;
    let mut steps = Vec::new();
    let step_bytes = (CACHE_STEP_TOKENS * 4) as usize;
    let mut at = 0;
    while at + step_bytes <= prompt.len() {
        hasher.write(&prompt.as_bytes()[at..at + step_bytes]);
        at += step_bytes;
        let len = tokens(at);
        if len >= MIN_CACHE_TOKENS {
            let hash = hasher.finish();
            if cache.contains(&hash) {
                cached = len;
            }
            steps.push(hash);
        }
    }
    PromptUsage {
        usage: json!({"prompt_tokens": total, "prompt_tokens_details": {"cached_tokens": cached}}),
        writes: steps,
    }
}

pub(super) fn respond(body: &Value, content: Content, serial: u64, mut usage: Value) -> Answer {
    let max = body["max_completion_tokens"]
        .as_u64()
        .or(body["max_tokens"].as_u64())
        .unwrap_or(1);
    let output = output_tokens(&content, max);
    let (message, finish) = match content {
        Content::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
        Content::Tool { name, input } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": format!("call_fake_{serial}"), "type": "function",
                "function": {"name": name, "arguments": input.to_string()},
            }]}),
            "tool_calls",
        ),
    };
    let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
    usage["completion_tokens"] = json!(output);
    usage["total_tokens"] = json!(prompt + output);
    usage["completion_tokens_details"] = json!({"reasoning_tokens": 0});
    let answer = json!({
        "id": format!("chatcmpl-fake-{serial}"),
        "object": "chat.completion",
        "created": 1_700_000_000u64 + serial,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage,
    });
    Answer {
        status: 200,
        headers: Vec::new(),
        body: answer.to_string(),
        usage,
    }
}
