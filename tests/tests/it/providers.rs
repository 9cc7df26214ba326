//! Real providers over their real wire protocols, against the fake servers on 127.0.0.1: the
//! probe guest runs agents through the whole engine, and the requests the fake server receives
//! are checked field by field.

use std::sync::Arc;
use std::time::Duration;

use corral_host::RunReport;
use corral_host::config::StructuredOutput;
use corral_host::events::RunEvent;
use corral_host::provider::anthropic::AnthropicProvider;
use corral_host::provider::{
    Block, CacheHints, ChatRequest, Message, Provider, ProviderError, Role,
};
use serde_json::{Value, json};
use tests::fake_llm::{Failure, FakeLlm, Protocol, Received, Reply};
use tests::support::{Run, fixture_repo, result, workflow};

const PROTOCOLS: [Protocol; 2] = [Protocol::Anthropic, Protocol::OpenAi];

/// Runs the probe guest with `args` against `provider`; returns the report and every log line.
async fn probe(
    args: Value,
    provider: Arc<dyn Provider>,
    root: Option<&std::path::Path>,
) -> (RunReport, Vec<String>) {
    let mut run = Run::new(args).provider(provider);
    if let Some(root) = root {
        run = run.root(root);
    }
    let events = Arc::clone(&run.events);
    let report = run.run(&workflow("probe")).await;
    let logs = events
        .events()
        .into_iter()
        .filter_map(|event| match event {
            RunEvent::Log { message } => Some(message),
            _ => None,
        })
        .collect();
    (report, logs)
}

/// The `{"ok": output}` of a probe `agent` run.
fn agent_output(report: &RunReport) -> Value {
    let outcome = result(report);
    assert!(outcome["ok"].is_object(), "the agent failed: {outcome}");
    outcome["ok"].clone()
}

fn tool_names(protocol: Protocol, body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|tool| match protocol {
            Protocol::Anthropic => tool["name"].as_str().unwrap().to_string(),
            Protocol::OpenAi => tool["function"]["name"].as_str().unwrap().to_string(),
        })
        .collect()
}

fn usage_sum(received: &[Received], field: &str) -> u64 {
    received
        .iter()
        .map(|r| r.usage[field].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test]
async fn anthropic_multi_turn_tool_use() {
    let repo = fixture_repo();
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key-anthropic"));
    fake.script([
        Reply::tool("read", json!({"path": "src/math.rs"})),
        Reply::text("add wraps on overflow"),
    ]);
    let args = json!({"mode": "agent", "prompt": "What does add do?", "tools": ["read", "grep"], "max_tokens": 300});
    let (report, _) = probe(args, fake.provider(), Some(repo.path())).await;
    let output = agent_output(&report);
    assert_eq!(output["text"], "add wraps on overflow");
    assert_eq!(output["model"], "claude-sonnet-4-6");

    let received = fake.received();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(
        (first.method.as_str(), first.path.as_str(), first.status),
        ("POST", "/v1/messages", 200)
    );
    assert_eq!(first.headers["x-api-key"], "test-key-anthropic");
    assert_eq!(first.headers["anthropic-version"], "2023-06-01");
    assert_eq!(first.headers["content-type"], "application/json");
    let body = &first.body;
    assert_eq!(body["model"], "claude-sonnet-4-6");
    assert_eq!(body["max_tokens"], 300);
    assert!(
        body["system"][0]["text"]
            .as_str()
            .unwrap()
            .contains("non-interactively")
    );
    assert_eq!(
        body["system"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(tool_names(Protocol::Anthropic, body), ["read", "grep"]);
    assert_eq!(
        body["tools"][0]["input_schema"]["required"],
        json!(["path"])
    );
    assert_eq!(body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "What does add do?"}]}])
    );
    assert!(body.get("output_config").is_none());

    let second = &received[1].body;
    let messages = second["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    assert_eq!(
        messages[1],
        json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_fake_1", "name": "read", "input": {"path": "src/math.rs"}},
        ]})
    );
    let result_block = &messages[2]["content"][0];
    assert_eq!(result_block["type"], "tool_result");
    assert_eq!(result_block["tool_use_id"], "toolu_fake_1");
    assert!(
        result_block["content"]
            .as_str()
            .unwrap()
            .contains("a.wrapping_add(b)")
    );
    assert!(result_block.get("is_error").is_none());
    assert_eq!(
        result_block["cache_control"],
        json!({"type": "ephemeral"}),
        "the conversation is cached turn by turn"
    );

    let usage = &output["usage"];
    assert_eq!(usage["input_tokens"], usage_sum(&received, "input_tokens"));
    assert_eq!(
        usage["output_tokens"],
        usage_sum(&received, "output_tokens")
    );
    assert_eq!(
        report.agents.usage.total(),
        report.spent_tokens,
        "the budget charged what was reported"
    );
}

#[tokio::test]
async fn openai_multi_turn_tool_use() {
    let repo = fixture_repo();
    let fake = FakeLlm::start(Protocol::OpenAi, Some("test-key-openai"));
    fake.script([
        Reply::tool("grep", json!({"pattern": "TODO"})),
        Reply::text("one TODO"),
    ]);
    let args = json!({"mode": "agent", "prompt": "Find TODOs", "tools": ["grep"], "max_tokens": 200, "model": "haiku"});
    let (report, _) = probe(args, fake.provider(), Some(repo.path())).await;
    let output = agent_output(&report);
    assert_eq!(output["text"], "one TODO");
    assert_eq!(output["model"], "gpt-5-mini");

    let received = fake.received();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(
        (first.path.as_str(), first.status),
        ("/v1/chat/completions", 200)
    );
    assert_eq!(first.headers["authorization"], "Bearer test-key-openai");
    let body = &first.body;
    assert_eq!(body["model"], "gpt-5-mini");
    assert_eq!(body["max_completion_tokens"], 200);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "Find TODOs"})
    );
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(tool_names(Protocol::OpenAi, body), ["grep"]);
    assert_eq!(body["tool_choice"], "auto");

    let messages = received[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 4);
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_fake_1", "type": "function", "function": {"name": "grep", "arguments": "{\"pattern\":\"TODO\"}"}},
        ]})
    );
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], "call_fake_1");
    assert!(
        messages[3]["content"]
            .as_str()
            .unwrap()
            .contains("src/math.rs:4:// TODO: overflow")
    );
}

#[tokio::test]
async fn invalid_schema_output_goes_back_until_valid() {
    for protocol in PROTOCOLS {
        let fake = FakeLlm::start(protocol, Some("k"));
        fake.script([
            Reply::submit(json!({"answer": 5})),
            Reply::submit(json!({"answer": "fine", "score": 2})),
        ]);
        let (report, _) = probe(
            json!({"mode": "agent", "schema": true}),
            fake.provider(),
            None,
        )
        .await;
        let output = agent_output(&report);
        assert_eq!(
            output["json"],
            json!({"answer": "fine", "score": 2}),
            "{protocol:?}"
        );

        let received = fake.received();
        assert_eq!(received.len(), 2, "{protocol:?}");
        let (first, second) = (&received[0].body, &received[1].body);
        match protocol {
            Protocol::Anthropic => {
                assert_eq!(
                    first["tool_choice"],
                    json!({"type": "tool", "name": "submit"})
                );
                assert_eq!(
                    first["tools"][0]["input_schema"]["required"],
                    json!(["answer"])
                );
                let result_block = &second["messages"][2]["content"][0];
                assert_eq!(result_block["is_error"], true);
                assert!(
                    result_block["content"]
                        .as_str()
                        .unwrap()
                        .contains("/answer"),
                    "{result_block}"
                );
            }
            Protocol::OpenAi => {
                assert_eq!(
                    first["tool_choice"],
                    json!({"type": "function", "function": {"name": "submit"}})
                );
                let tool_message = &second["messages"][3];
                assert_eq!(tool_message["role"], "tool");
                assert!(
                    tool_message["content"]
                        .as_str()
                        .unwrap()
                        .starts_with("Error: Invalid"),
                    "{tool_message}"
                );
            }
        }
    }
}

#[tokio::test]
async fn openai_response_format_asks_the_server_for_the_schema() {
    let fake = FakeLlm::start(Protocol::OpenAi, None);
    fake.script([
        Reply::text("{\"answer\": 1}"),
        Reply::text("{\"answer\": \"ok\"}"),
    ]);
    let mut settings = fake.settings();
    settings.structured_output = StructuredOutput::ResponseFormat;
    let (report, _) = probe(
        json!({"mode": "agent", "schema": true}),
        FakeLlm::provider_with(settings),
        None,
    )
    .await;
    assert_eq!(agent_output(&report)["json"], json!({"answer": "ok"}));

    let received = fake.received();
    assert!(
        !received[0].headers.contains_key("authorization"),
        "a server without a key gets none"
    );
    let first = &received[0].body;
    assert!(first.get("tools").is_none() && first.get("tool_choice").is_none());
    assert_eq!(first["response_format"]["type"], "json_schema");
    assert_eq!(first["response_format"]["json_schema"]["name"], "submit");
    assert_eq!(
        first["response_format"]["json_schema"]["schema"]["required"],
        json!(["answer"])
    );
    let retry = &received[1].body["messages"];
    assert_eq!(
        retry[2],
        json!({"role": "assistant", "content": "{\"answer\": 1}"})
    );
    assert!(
        retry[3]["content"]
            .as_str()
            .unwrap()
            .contains("must be JSON that matches the schema")
    );
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_request() {
    for protocol in PROTOCOLS {
        let fake = FakeLlm::start(protocol, Some("k"));
        fake.script([
            Reply::rate_limited(1),
            Reply::Fail(Failure::Overloaded),
            Reply::Fail(Failure::ServerError),
            Reply::Garbage,
            Reply::text("finally"),
        ]);
        let (report, _) = probe(
            json!({"mode": "agent", "prompt": "hello"}),
            fake.provider(),
            None,
        )
        .await;
        assert_eq!(agent_output(&report)["text"], "finally", "{protocol:?}");
        let received = fake.received();
        let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
        let overloaded = if protocol == Protocol::Anthropic {
            529
        } else {
            503
        };
        assert_eq!(statuses, [429, overloaded, 500, 200, 200], "{protocol:?}");
        assert!(
            received.iter().all(|r| r.body == received[0].body),
            "every attempt sends the same request"
        );
        // The garbage answer may have been billed, so its reservation (input bytes and the
        // default 8192 output tokens) stays charged, and the call's usage counts it.
        assert!(report.spent_tokens > 8192, "{protocol:?}");
        assert_eq!(
            report.spent_tokens,
            report.agents.usage.total(),
            "{protocol:?}"
        );
    }
}

#[tokio::test]
async fn spend_limits_and_bad_requests_are_not_retried() {
    for protocol in PROTOCOLS {
        for failure in [
            Failure::SpendLimit,
            Failure::BadRequest("messages: too long".into()),
        ] {
            let fake = FakeLlm::start(protocol, Some("k"));
            fake.script([Reply::Fail(failure.clone()), Reply::text("never")]);
            let (report, _) = probe(json!({"mode": "agent"}), fake.provider(), None).await;
            assert_eq!(fake.received().len(), 1, "{protocol:?} {failure:?}");
            assert_eq!(report.spent_tokens, 0, "refused requests cost nothing");
            if failure == Failure::SpendLimit {
                // The account is out of money: the run pauses instead of failing the agent.
                let Err(corral_host::RunError::Paused(reason)) = &report.outcome else {
                    panic!("{protocol:?}: not paused: {:?}", report.outcome);
                };
                assert!(reason.contains("spend limit or quota"), "{reason}");
                assert_eq!(report.agents.failed_total(), 0);
            } else {
                let outcome = result(&report);
                assert_eq!(
                    outcome["error"], "provider",
                    "{protocol:?} {failure:?}: {outcome}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_response_slower_than_the_request_timeout_is_abandoned() {
    for protocol in PROTOCOLS {
        let fake = FakeLlm::start(protocol, Some("k"));
        fake.script([
            Reply::text("too late").delayed(Duration::from_secs(5)),
            Reply::text("in time"),
        ]);
        let mut settings = fake.settings();
        settings.retry.request_timeout = Duration::from_millis(300);
        settings.retry.max_retries = 1;
        let provider = FakeLlm::provider_with(settings);
        let (report, _) = probe(json!({"mode": "agent"}), Arc::clone(&provider), None).await;
        assert_eq!(agent_output(&report)["text"], "in time", "{protocol:?}");

        fake.script([
            Reply::text("late").delayed(Duration::from_secs(5)),
            Reply::text("late").delayed(Duration::from_secs(5)),
        ]);
        let (report, _) = probe(json!({"mode": "agent"}), provider, None).await;
        let outcome = result(&report);
        assert_eq!(outcome["error"], "timeout", "{protocol:?}: {outcome}");
        assert!(
            outcome["message"]
                .as_str()
                .unwrap()
                .contains("request timeout of 300ms, 2 attempts"),
            "{outcome}"
        );
    }
}

/// A schema whose description makes the tools part of the prompt larger than the smallest
/// cacheable prefix, so that sibling agents share a cacheable prefix.
fn large_schema() -> Value {
    let context =
        "Report whether the file has a bug, judged against the project's rules. ".repeat(90);
    json!({
        "type": "object",
        "description": context,
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    })
}

#[tokio::test]
async fn siblings_read_the_prefix_the_first_one_wrote() {
    for protocol in PROTOCOLS {
        let fake = FakeLlm::start(protocol, Some("k"));
        fake.set_latency(Duration::from_millis(50));
        let args = json!({"mode": "fanout", "n": 8, "schema": large_schema()});
        let (report, _) = probe(args, fake.provider(), None).await;
        assert_eq!(result(&report)["ok"], 8, "{protocol:?}");

        let received = fake.received();
        assert_eq!(received.len(), 8);
        let read = |r: &Received| match protocol {
            Protocol::Anthropic => r.usage["cache_read_input_tokens"].as_u64().unwrap(),
            Protocol::OpenAi => r.usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        };
        assert_eq!(
            read(&received[0]),
            0,
            "{protocol:?}: nothing to read before the first write"
        );
        assert!(
            received[1..].iter().all(|r| read(r) > 0),
            "{protocol:?}: every sibling read the prefix"
        );
        if protocol == Protocol::Anthropic {
            assert!(
                received[0].usage["cache_creation_input_tokens"]
                    .as_u64()
                    .unwrap()
                    >= 1024
            );
            assert!(
                received[1..]
                    .iter()
                    .all(|r| r.usage["cache_creation_input_tokens"] == 0)
            );
            assert!(
                received
                    .iter()
                    .all(|r| r.body["system"][0]["cache_control"]["type"] == "ephemeral")
            );
        }
        let usage = report.agents.usage;
        assert_eq!(
            usage.cache_read_tokens,
            received.iter().map(read).sum::<u64>()
        );
        assert!(
            usage.cache_read_tokens > usage.input_tokens + usage.cache_write_tokens,
            "{protocol:?}: {usage:?}"
        );
        assert_eq!(report.agents.usage_by_phase[""], usage);
    }
}

#[tokio::test]
async fn without_cache_awareness_nothing_is_marked_or_read() {
    let fake = FakeLlm::start(Protocol::Anthropic, Some("k"));
    let mut settings = fake.settings();
    settings.prompt_cache = false;
    let args = json!({"mode": "fanout", "n": 4, "schema": large_schema()});
    let (report, _) = probe(args, FakeLlm::provider_with(settings), None).await;
    assert_eq!(result(&report)["ok"], 4);
    assert!(
        fake.received()
            .iter()
            .all(|r| !r.body.to_string().contains("cache_control"))
    );
    assert_eq!(
        report.agents.usage.cache_read_tokens + report.agents.usage.cache_write_tokens,
        0
    );
}

#[tokio::test]
async fn effort_is_mapped_where_supported_and_otherwise_ignored_with_one_warning() {
    let fake = FakeLlm::start(Protocol::Anthropic, Some("k"));
    let provider = Arc::new(AnthropicProvider::new(fake.settings()).unwrap());
    for model in ["opus", "haiku", "haiku"] {
        let (report, _) = probe(
            json!({"mode": "agent", "effort": "low", "model": model}),
            provider.clone(),
            None,
        )
        .await;
        agent_output(&report);
    }
    let received = fake.received();
    assert_eq!(received[0].body["output_config"], json!({"effort": "low"}));
    assert!(
        received[1].body.get("output_config").is_none()
            && received[2].body.get("output_config").is_none()
    );
    assert_eq!(provider.warnings().len(), 1, "{:?}", provider.warnings());
}

#[tokio::test]
async fn malformed_requests_are_rejected_in_the_provider_format() {
    let orphan_result = ChatRequest {
        model: "m".into(),
        system: String::new(),
        messages: vec![Message {
            role: Role::User,
            content: vec![Block::ToolResult {
                id: "nobody".into(),
                content: "x".into(),
                is_error: false,
            }],
        }],
        tools: Vec::new(),
        force_tool: None,
        max_tokens: 10,
        effort: None,
        cache: CacheHints::default(),
    };
    for (protocol, expected) in [
        (
            Protocol::Anthropic,
            "invalid_request_error: messages.0: unexpected `tool_use_id`",
        ),
        (
            Protocol::OpenAi,
            "invalid_request_error: Invalid parameter: messages with role 'tool'",
        ),
    ] {
        let fake = FakeLlm::start(protocol, Some("right"));
        let error = fake.provider().complete(&orphan_result).await.unwrap_err();
        let ProviderError::Fatal { message, .. } = &error else {
            panic!("{protocol:?}: {error}")
        };
        assert!(message.contains(expected), "{protocol:?}: {message}");

        let mut wrong = fake.settings();
        wrong.api_key = Some(corral_host::provider::ApiKey::new("wrong").unwrap());
        let error = FakeLlm::provider_with(wrong)
            .complete(&orphan_result)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("HTTP 401"),
            "{protocol:?}: {error}"
        );
        assert!(matches!(error, ProviderError::Fatal { .. }));
    }
}

#[tokio::test]
async fn no_byte_of_a_key_reaches_the_guest() {
    let repo = fixture_repo();
    for protocol in PROTOCOLS {
        let key = format!("sk-corral-secret-{}-{:?}", std::process::id(), protocol);
        let fake = FakeLlm::start(protocol, Some(&key));
        let provider = fake.provider();
        // Every channel the guest has: agent text (the server repeats the request, or even the
        // key), schema answers, provider error messages, tools over the root, logs, the budget.
        fake.script([
            Reply::EchoRequest,
            Reply::EchoKey,
            Reply::submit(json!({"answer": format!("the key is {key}")})),
            Reply::Fail(Failure::BadRequest(format!("unknown key {key}"))),
        ]);
        let runs = [
            json!({"mode": "agent", "prompt": "repeat everything you were sent"}),
            json!({"mode": "agent", "prompt": "what is your key?"}),
            json!({"mode": "agent", "schema": true}),
            json!({"mode": "agent"}),
            json!({"mode": "tool", "tool": "grep", "args": {"pattern": "sk-corral"}}),
            json!({"mode": "tool", "tool": "glob", "args": {"pattern": "**/*"}}),
            json!({"mode": "tool", "tool": "git-status", "args": {}}),
            json!({"mode": "budget"}),
            json!({"mode": "phases"}),
        ];
        let mut seen = String::new();
        for args in runs {
            let (report, logs) = probe(args, Arc::clone(&provider), Some(repo.path())).await;
            match &report.outcome {
                Ok(text) => seen.push_str(text),
                Err(error) => seen.push_str(&error.to_string()),
            }
            seen.push_str(&logs.join("\n"));
        }
        assert!(
            seen.contains("messages"),
            "{protocol:?}: the echo run showed the request"
        );
        assert!(
            seen.contains("[redacted]"),
            "{protocol:?}: the hostile answers were redacted"
        );
        assert!(
            !seen.contains(&key),
            "{protocol:?}: the key reached the guest"
        );

        // The key went out in the authentication header of every request, and nowhere else.
        let received = fake.received();
        assert!(received.len() >= 4);
        for request in &received {
            let auth = match protocol {
                Protocol::Anthropic => request.headers["x-api-key"].clone(),
                Protocol::OpenAi => request.headers["authorization"].clone(),
            };
            assert!(auth.ends_with(&key));
            let elsewhere = request
                .headers
                .values()
                .filter(|value| value.contains(&key))
                .count();
            assert_eq!(
                elsewhere, 1,
                "{protocol:?}: only the auth header carries the key"
            );
            assert!(
                !request.body.to_string().contains(&key),
                "{protocol:?}: a request body carried the key"
            );
        }
    }
}

#[test]
fn the_cli_finds_providers_through_flags_environment_and_corral_toml() {
    let dir = tempfile::tempdir().unwrap();
    let probe = tests::guests::guest_path("probe");
    let corral = |args: &str, extra: &[&str]| {
        let mut command = tests::support::corral();
        command
            .current_dir(dir.path())
            .env_remove("CORRAL_CONFIG")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_BASE_URL")
            .args(["run", probe.to_str().unwrap(), "-q", "--args", args])
            .args(extra);
        command
    };

    let anthropic = FakeLlm::start(Protocol::Anthropic, Some("cli-key"));
    let output = corral(
        r#"{"mode": "agent", "prompt": "hi"}"#,
        &["--provider", "anthropic", "--model", "haiku"],
    )
    .env("ANTHROPIC_BASE_URL", anthropic.url())
    .env("ANTHROPIC_API_KEY", "cli-key")
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("fake answer 1"), "{stdout}");
    assert_eq!(anthropic.received()[0].body["model"], "claude-haiku-4-5");

    let output = corral(r#"{"mode": "agent"}"#, &["--provider", "anthropic"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("provider 'anthropic' needs an API key: set ANTHROPIC_API_KEY"),
        "{stderr}"
    );

    let local = FakeLlm::start(Protocol::OpenAi, None);
    let config = format!(
        "default_provider = \"local\"\n\n[providers.local]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"local-model\"\n",
        local.url()
    );
    std::fs::write(dir.path().join("corral.toml"), config).unwrap();
    let output = corral(r#"{"mode": "agent", "schema": true}"#, &[])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received = local.received();
    assert_eq!(received[0].body["model"], "local-model");
    assert!(!received[0].headers.contains_key("authorization"));
}
