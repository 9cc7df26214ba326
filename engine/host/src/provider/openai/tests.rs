use serde_json::json;

use super::*;
use crate::config::{ProviderKind, ProviderSettings};
use crate::provider::{CacheHints, Message, ToolSpec};

fn provider(structured: StructuredOutput) -> OpenAiProvider {
    let mut settings =
        ProviderSettings::new("local", ProviderKind::OpenAi, "http://127.0.0.1:1/v1", None);
    settings.structured_output = structured;
    OpenAiProvider::new(settings).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "gpt-5".into(),
        system: "be brief".into(),
        messages: vec![
            Message {
                role: Role::User,
                content: vec![Block::Text("shared\n".into()), Block::Text("task".into())],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    Block::Text("Looking.".into()),
                    Block::ToolUse {
                        id: "call_1".into(),
                        name: "read".into(),
                        input: json!({"path": "a"}),
                    },
                ],
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    id: "call_1".into(),
                    content: "nope".into(),
                    is_error: true,
                }],
            },
        ],
        tools: vec![
            ToolSpec {
                name: "read".into(),
                description: "Read".into(),
                input_schema: json!({"type": "object"}),
            },
            ToolSpec {
                name: SUBMIT_TOOL.into(),
                description: "Submit".into(),
                input_schema: json!({"type": "object", "required": ["ok"]}),
            },
        ],
        force_tool: None,
        max_tokens: 50,
        effort: Some(Effort::High),
        cache: CacheHints::default(),
    }
}

#[test]
fn requests_follow_chat_completions() {
    let body = provider(StructuredOutput::Tool).body(&request());
    assert_eq!(
        body,
        json!({
            "model": "gpt-5",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "shared\ntask"},
                {"role": "assistant", "content": "Looking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": "{\"path\":\"a\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Error: nope"},
            ],
            "max_completion_tokens": 50,
            "tools": [
                {"type": "function", "function": {"name": "read", "description": "Read", "parameters": {"type": "object"}}},
                {"type": "function", "function": {"name": "submit", "description": "Submit",
                 "parameters": {"type": "object", "required": ["ok"]}}},
            ],
            "tool_choice": "auto",
            "reasoning_effort": "high",
        })
    );
}

#[test]
fn response_format_replaces_the_submit_tool() {
    let mut chat = request();
    chat.force_tool = Some(SUBMIT_TOOL.into());
    let body = provider(StructuredOutput::ResponseFormat).body(&chat);
    assert_eq!(body["tools"].as_array().unwrap().len(), 1);
    assert_eq!(body["tool_choice"], json!("auto"));
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {
            "name": "submit", "schema": {"type": "object", "required": ["ok"]}, "strict": false}})
    );
}

#[test]
fn answers_report_cached_tokens_apart_and_parse_tool_arguments() {
    let answer = provider(StructuredOutput::Tool)
        .answer(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-5",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": null,
                "tool_calls": [{"id": "call_9", "type": "function",
                                "function": {"name": "submit", "arguments": "{\"ok\":true}"}}],
            }}],
            "usage": {"prompt_tokens": 2000, "completion_tokens": 20, "total_tokens": 2020,
                      "prompt_tokens_details": {"cached_tokens": 1536}},
        }))
        .unwrap();
    assert_eq!(answer.stop, StopReason::ToolUse);
    assert_eq!(
        answer.content,
        vec![Block::ToolUse {
            id: "call_9".into(),
            name: "submit".into(),
            input: json!({"ok": true})
        }]
    );
    assert_eq!(
        answer.usage,
        Usage {
            input_tokens: 464,
            output_tokens: 20,
            cache_read_tokens: 1536,
            cache_write_tokens: 0
        }
    );
}

#[test]
fn effort_on_models_without_it_is_dropped_with_one_warning() {
    let openai = provider(StructuredOutput::Tool);
    let mut chat = request();
    chat.model = "llama-3".into();
    assert!(openai.body(&chat).get("reasoning_effort").is_none());
    openai.body(&chat);
    assert_eq!(openai.warnings().len(), 1);
}
