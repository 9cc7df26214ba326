use serde_json::json;

use super::*;
use crate::config::{ProviderKind, ProviderSettings};
use crate::provider::{ApiKey, CacheHints, ToolSpec};

fn provider(cache: bool) -> AnthropicProvider {
    let mut settings = ProviderSettings::new(
        "anthropic",
        ProviderKind::Anthropic,
        "http://127.0.0.1:1",
        Some(ApiKey::new("k").unwrap()),
    );
    settings.prompt_cache = cache;
    AnthropicProvider::new(settings).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "claude-sonnet-4-6".into(),
        system: "be brief".into(),
        messages: vec![
            Message {
                role: Role::User,
                content: vec![Block::Text("shared\n".into()), Block::Text("task".into())],
            },
            Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse {
                    id: "toolu_1".into(),
                    name: "read".into(),
                    input: json!({"path": "a"}),
                }],
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    id: "toolu_1".into(),
                    content: "nope".into(),
                    is_error: true,
                }],
            },
        ],
        tools: vec![ToolSpec {
            name: "read".into(),
            description: "Read".into(),
            input_schema: json!({"type": "object"}),
        }],
        force_tool: None,
        max_tokens: 50,
        effort: None,
        cache: CacheHints {
            system: true,
            shared_prefix: true,
            conversation: true,
        },
    }
}

#[test]
fn requests_follow_the_messages_api() {
    let body = provider(true).body(&request());
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-6",
            "max_tokens": 50,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "shared\n", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "task"},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "nope", "is_error": true,
                     "cache_control": {"type": "ephemeral"}},
                ]},
            ],
            "tools": [{"name": "read", "description": "Read", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "auto"},
        })
    );
}

#[test]
fn without_caching_there_are_no_breakpoints_and_forced_tools_are_named() {
    let mut chat = request();
    chat.force_tool = Some("read".into());
    let body = provider(false).body(&chat);
    assert!(!body.to_string().contains("cache_control"));
    assert_eq!(body["system"], json!("be brief"));
    assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "read"}));
}

#[test]
fn effort_is_sent_where_supported_and_otherwise_ignored_with_one_warning() {
    let anthropic = provider(false);
    let mut chat = request();
    chat.effort = Some(Effort::Low);
    chat.model = "claude-opus-4-7".into();
    assert_eq!(
        anthropic.body(&chat)["output_config"],
        json!({"effort": "low"})
    );
    chat.model = "claude-haiku-4-5".into();
    assert!(anthropic.body(&chat).get("output_config").is_none());
    anthropic.body(&chat);
    assert_eq!(anthropic.warnings().len(), 1);
}

#[test]
fn answers_keep_cache_reads_and_writes_apart() {
    let answer = provider(true)
        .answer(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Reading it."},
                {"type": "tool_use", "id": "toolu_2", "name": "read", "input": {"path": "k"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 30,
                      "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 500},
        }))
        .unwrap();
    assert_eq!(answer.stop, StopReason::ToolUse);
    assert_eq!(
        answer.usage,
        Usage {
            input_tokens: 12,
            output_tokens: 30,
            cache_read_tokens: 500,
            cache_write_tokens: 2000
        }
    );
    assert_eq!(answer.content.len(), 2);
    assert_eq!(answer.model, "claude-sonnet-4-6");
}

#[test]
fn unusable_answers_are_transient_and_say_what_they_cost() {
    let error = provider(true)
        .answer(json!({"usage": {"input_tokens": 1, "output_tokens": 2}}))
        .unwrap_err();
    assert!(matches!(
        error,
        ProviderError::Transient {
            spent: Spent::Tokens(_),
            ..
        }
    ));
    let error = provider(true).answer(json!({"content": []})).unwrap_err();
    assert_eq!(error.spent(), Spent::Unknown);
}
