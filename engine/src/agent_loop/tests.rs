use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::provider::sim::SimProvider;
use crate::provider::{BoxFuture, ChatResponse};

/// A provider that plays back scripted answers and records what it was asked.
struct Scripted {
    answers: Mutex<VecDeque<Result<ChatResponse, ProviderError>>>,
    seen: Mutex<Vec<ChatRequest>>,
}

impl Scripted {
    fn new(answers: Vec<Result<ChatResponse, ProviderError>>) -> Arc<Self> {
        Arc::new(Scripted { answers: Mutex::new(answers.into()), seen: Mutex::new(Vec::new()) })
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn resolve_model(&self, requested: Option<&str>) -> String {
        requested.unwrap_or("scripted-model").to_string()
    }
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        self.seen.lock().unwrap().push(request.clone());
        let answer = self.answers.lock().unwrap().pop_front().expect("the test scripted enough answers");
        Box::pin(async move { answer })
    }
}

fn submit(input: Value) -> Result<ChatResponse, ProviderError> {
    Ok(ChatResponse {
        content: vec![Block::ToolUse { id: "t".into(), name: SUBMIT_TOOL.into(), input }],
        stop: StopReason::ToolUse,
        usage: Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() },
        model: "scripted-model".into(),
    })
}

fn request(schema: Option<Value>) -> AgentRequest {
    AgentRequest {
        prompt: "find bugs".into(),
        label: None,
        phase: None,
        model: None,
        effort: None,
        schema: schema.map(|s| Arc::new(OutputSchema::from_value(s).unwrap())),
        tools: None,
        max_tokens: 100,
        max_turns: DEFAULT_MAX_TURNS,
        timeout: None,
    }
}

fn context(provider: Arc<dyn Provider>, budget: Option<u64>) -> AgentContext {
    AgentContext { provider, ledger: BudgetLedger::new(budget), tools: None }
}

fn verdict_schema() -> Value {
    json!({"type": "object", "properties": {"real": {"type": "boolean"}}, "required": ["real"]})
}

#[tokio::test]
async fn invalid_submissions_are_sent_back_until_valid() {
    let provider = Scripted::new(vec![submit(json!({"real": "yes"})), submit(json!({"real": true}))]);
    let output = run_agent(&context(provider.clone(), None), &request(Some(verdict_schema()))).await.unwrap();
    assert_eq!(output.json, Some(json!({"real": true})));
    assert_eq!(output.usage.input_tokens, 20);
    let seen = provider.seen.lock().unwrap();
    let Block::ToolResult { content, is_error, .. } = &seen[1].messages.last().unwrap().content[0] else {
        panic!("the second request must carry the validation error")
    };
    assert!(*is_error);
    assert!(content.contains("/real"), "{content}");
}

#[tokio::test]
async fn five_invalid_submissions_are_a_schema_mismatch() {
    let provider = Scripted::new((0..5).map(|_| submit(json!({"real": 1}))).collect());
    let error = run_agent(&context(provider, None), &request(Some(verdict_schema()))).await.unwrap_err();
    assert_eq!(error.kind(), "schema-mismatch");
    assert!(error.to_string().contains("after 5 attempts"), "{error}");
}

#[tokio::test]
async fn requests_that_do_not_fit_the_budget_are_never_sent() {
    let provider = Scripted::new(vec![]);
    let error = run_agent(&context(provider.clone(), Some(50)), &request(None)).await.unwrap_err();
    assert_eq!(error.kind(), "budget-exhausted");
    assert!(provider.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn transient_failures_are_retried_and_fatal_ones_are_not() {
    let transient = || Err(ProviderError::Transient { provider: "p".into(), message: "overloaded".into() });
    let provider = Scripted::new(vec![transient(), submit(json!({"real": false}))]);
    let output = run_agent(&context(provider, None), &request(Some(verdict_schema()))).await.unwrap();
    assert_eq!(output.json, Some(json!({"real": false})));

    let provider = Scripted::new(vec![Err(ProviderError::Fatal { provider: "p".into(), message: "bad key".into() })]);
    let error = run_agent(&context(provider.clone(), None), &request(None)).await.unwrap_err();
    assert_eq!(error.kind(), "provider");
    assert_eq!(provider.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn slow_agents_time_out() {
    let mut slow = request(None);
    slow.timeout = Some(Duration::from_millis(20));
    let provider = Arc::new(SimProvider::new(Duration::from_secs(5)));
    let error = run_agent(&context(provider, None), &slow).await.unwrap_err();
    assert_eq!(error.kind(), "timeout");
}

#[tokio::test]
async fn the_simulated_provider_satisfies_schemas_end_to_end() {
    let output = run_agent(&context(Arc::new(SimProvider::default()), None), &request(Some(verdict_schema()))).await.unwrap();
    assert!(output.json.unwrap()["real"].is_boolean());
    assert_eq!(output.model, "sim-default");
}

#[test]
fn unknown_tools_are_denied() {
    assert_eq!(check_tool_grant(&["read".into(), "shell".into()]).unwrap_err().kind(), "denied");
    check_tool_grant(&["read".into(), "git".into()]).unwrap();
}
