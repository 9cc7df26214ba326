use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::provider::sim::SimProvider;
use crate::provider::{BoxFuture, ChatResponse};

/// A provider that plays back scripted answers and records what it was asked. An answer of
/// `None` never comes (the request hangs until it is abandoned).
struct Scripted {
    answers: Mutex<VecDeque<Option<Result<ChatResponse, ProviderError>>>>,
    seen: Mutex<Vec<ChatRequest>>,
    policy: RetryPolicy,
    caching: bool,
    /// How long each answer takes.
    latency: Duration,
    /// Answers completed so far, and how many were complete when each request was sent.
    completed: std::sync::atomic::AtomicUsize,
    completed_before: Mutex<Vec<usize>>,
}

impl Scripted {
    fn new(answers: Vec<Result<ChatResponse, ProviderError>>) -> Arc<Self> {
        Scripted::build(
            answers.into_iter().map(Some).collect(),
            fast_policy(),
            false,
            Duration::ZERO,
        )
    }

    fn build(
        answers: Vec<Option<Result<ChatResponse, ProviderError>>>,
        policy: RetryPolicy,
        caching: bool,
        latency: Duration,
    ) -> Arc<Self> {
        Arc::new(Scripted {
            answers: Mutex::new(answers.into()),
            seen: Mutex::new(Vec::new()),
            policy,
            caching,
            latency,
            completed: Default::default(),
            completed_before: Mutex::new(Vec::new()),
        })
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn resolve_model(&self, requested: Option<&str>) -> String {
        requested.unwrap_or("scripted-model").to_string()
    }
    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        use std::sync::atomic::Ordering;
        self.seen.lock().unwrap().push(request.clone());
        self.completed_before
            .lock()
            .unwrap()
            .push(self.completed.load(Ordering::SeqCst));
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .expect("the test scripted enough answers");
        Box::pin(async move {
            let Some(answer) = answer else {
                return std::future::pending().await;
            };
            tokio::time::sleep(self.latency).await;
            self.completed.fetch_add(1, Ordering::SeqCst);
            answer
        })
    }
    fn prompt_cache(&self) -> bool {
        self.caching
    }
    fn retry_policy(&self) -> RetryPolicy {
        self.policy
    }
}

/// Retries without real waiting.
fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        ..RetryPolicy::default()
    }
}

fn submit(input: Value) -> Result<ChatResponse, ProviderError> {
    Ok(ChatResponse {
        content: vec![Block::ToolUse {
            id: "t".into(),
            name: SUBMIT_TOOL.into(),
            input,
        }],
        stop: StopReason::ToolUse,
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
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
        output_floor: None,
        max_turns: DEFAULT_MAX_TURNS,
        timeout: None,
        isolated: false,
    }
}

fn context(provider: Arc<dyn Provider>, budget: Option<u64>) -> AgentContext {
    AgentContext {
        provider,
        ledger: BudgetLedger::new(budget),
        tools: None,
        events: Arc::new(crate::events::NoEvents),
        schema_attempts: crate::agent_loop::MAX_SCHEMA_ATTEMPTS,
        pause: None,
        commands: Default::default(),
    }
}

fn verdict_schema() -> Value {
    json!({"type": "object", "properties": {"real": {"type": "boolean"}}, "required": ["real"]})
}

#[tokio::test]
async fn invalid_submissions_are_sent_back_until_valid() {
    let provider = Scripted::new(vec![
        submit(json!({"real": "yes"})),
        submit(json!({"real": true})),
    ]);
    let output = run_agent(
        &context(provider.clone(), None),
        &request(Some(verdict_schema())),
    )
    .await
    .unwrap();
    assert_eq!(output.json, Some(json!({"real": true})));
    assert_eq!(output.usage.input_tokens, 20);
    let seen = provider.seen.lock().unwrap();
    let Block::ToolResult {
        content, is_error, ..
    } = &seen[1].messages.last().unwrap().content[0]
    else {
        panic!("the second request must carry the validation error")
    };
    assert!(*is_error);
    assert!(content.contains("/real"), "{content}");
}

#[tokio::test]
async fn five_invalid_submissions_are_a_schema_mismatch() {
    let provider = Scripted::new((0..5).map(|_| submit(json!({"real": 1}))).collect());
    let error = run_agent(&context(provider, None), &request(Some(verdict_schema())))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "schema-mismatch");
    assert!(error.to_string().contains("after 5 attempts"), "{error}");
}

#[tokio::test]
async fn requests_that_do_not_fit_the_budget_are_never_sent() {
    let provider = Scripted::new(vec![]);
    let error = run_agent(&context(provider.clone(), Some(50)), &request(None))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "budget-exhausted");
    assert!(provider.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn transient_failures_are_retried_and_fatal_ones_are_not() {
    let transient = || Err(ProviderError::transient("p", "overloaded"));
    let provider = Scripted::new(vec![transient(), submit(json!({"real": false}))]);
    let output = run_agent(&context(provider, None), &request(Some(verdict_schema())))
        .await
        .unwrap();
    assert_eq!(output.json, Some(json!({"real": false})));

    let provider = Scripted::new(vec![Err(ProviderError::fatal("p", "bad key"))]);
    let error = run_agent(&context(provider.clone(), None), &request(None))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "provider");
    assert_eq!(provider.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn slow_agents_time_out() {
    let mut slow = request(None);
    slow.timeout = Some(Duration::from_millis(20));
    let provider = Arc::new(SimProvider::new(Duration::from_secs(5)));
    let error = run_agent(&context(provider, None), &slow)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "timeout");
}

#[tokio::test]
async fn the_simulated_provider_satisfies_schemas_end_to_end() {
    let output = run_agent(
        &context(Arc::new(SimProvider::default()), None),
        &request(Some(verdict_schema())),
    )
    .await
    .unwrap();
    assert!(output.json.unwrap()["real"].is_boolean());
    assert_eq!(output.model, "sim-default");
}

#[test]
fn unknown_tools_are_denied() {
    assert_eq!(
        check_tool_grant(&["read".into(), "shell".into()])
            .unwrap_err()
            .kind(),
        "denied"
    );
    check_tool_grant(&["read".into(), "git".into()]).unwrap();
}

fn text(answer: &str) -> Result<ChatResponse, ProviderError> {
    Ok(ChatResponse {
        content: vec![Block::Text(answer.into())],
        stop: StopReason::EndTurn,
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
        model: "scripted-model".into(),
    })
}

fn transient_after(
    retry_after: Option<Duration>,
    spent: Spent,
) -> Result<ChatResponse, ProviderError> {
    Err(ProviderError::Transient {
        provider: "p".into(),
        message: "overloaded".into(),
        retry_after,
        spent,
    })
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_its_cap() {
    let policy = RetryPolicy {
        max_retry_after: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let provider = Scripted::build(
        vec![
            Some(transient_after(
                Some(Duration::from_secs(7)),
                Spent::Nothing,
            )),
            Some(transient_after(
                Some(Duration::from_secs(3600)),
                Spent::Nothing,
            )),
            Some(text("done")),
        ],
        policy,
        false,
        Duration::ZERO,
    );
    let began = tokio::time::Instant::now();
    let output = run_agent(&context(provider.clone(), None), &request(None))
        .await
        .unwrap();
    assert_eq!(output.text, "done");
    // Paused time advances exactly by the sleeps: 7 s asked for, then an hour capped at 60 s.
    assert_eq!(began.elapsed(), Duration::from_secs(67));
    assert_eq!(provider.seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_without_retry_after_and_gives_up_after_the_last_retry() {
    let policy = RetryPolicy {
        max_retries: 3,
        ..RetryPolicy::default()
    };
    let answers = (0..4)
        .map(|_| Some(transient_after(None, Spent::Nothing)))
        .collect();
    let provider = Scripted::build(answers, policy, false, Duration::ZERO);
    let began = tokio::time::Instant::now();
    let error = run_agent(&context(provider.clone(), None), &request(None))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "provider");
    assert!(
        error.to_string().contains("gave up after 4 attempts"),
        "{error}"
    );
    // Equal jitter: each wait lies in the upper half of 0.5 s, 1 s, 2 s.
    let waited = began.elapsed();
    assert!(
        waited >= Duration::from_millis(1750) && waited <= Duration::from_millis(3500),
        "{waited:?}"
    );
}

#[tokio::test]
async fn every_attempt_is_charged_what_it_cost() {
    let billed = Usage {
        input_tokens: 7,
        output_tokens: 3,
        ..Usage::default()
    };
    let provider = Scripted::new(vec![
        transient_after(None, Spent::Nothing),
        transient_after(None, Spent::Tokens(billed)),
        transient_after(None, Spent::Unknown),
        text("done"),
    ]);
    let agent = context(provider.clone(), Some(1_000_000));
    let output = run_agent(&agent, &request(None)).await.unwrap();
    let worst_case = provider.seen.lock().unwrap()[0].input_bytes() + 100;
    // Refused: nothing; reported: what was reported; unknown: the whole reservation; then the answer.
    assert_eq!(agent.ledger.spent(), 10 + worst_case + 15);
    assert_eq!(agent.ledger.reserved(), 0);
    // The call's usage says what it was charged: the unknown attempt at its worst case.
    assert_eq!(output.usage.input_tokens, 17 + worst_case - 100);
    assert_eq!(output.usage.output_tokens, 8 + 100);
    assert_eq!(output.usage.total(), agent.ledger.spent());
}

#[tokio::test(start_paused = true)]
async fn requests_slower_than_the_timeout_are_abandoned_and_retried() {
    let policy = RetryPolicy {
        request_timeout: Duration::from_secs(30),
        max_retries: 2,
        ..fast_policy()
    };
    let provider = Scripted::build(
        vec![None, Some(text("late but fine"))],
        policy,
        false,
        Duration::ZERO,
    );
    let output = run_agent(&context(provider.clone(), None), &request(None))
        .await
        .unwrap();
    assert_eq!(output.text, "late but fine");

    let provider = Scripted::build(vec![None, None, None], policy, false, Duration::ZERO);
    let agent = context(provider.clone(), Some(1_000_000));
    let error = run_agent(&agent, &request(None)).await.unwrap_err();
    assert_eq!(error.kind(), "timeout");
    assert!(
        error
            .to_string()
            .contains("request timeout of 30s, 3 attempts"),
        "{error}"
    );
    assert_eq!(provider.seen.lock().unwrap().len(), 3);
    assert_eq!(
        agent.ledger.reserved(),
        0,
        "abandoned requests are settled, not left reserved"
    );
    assert!(
        agent.ledger.spent() > 0,
        "an abandoned request may have been billed: it is charged"
    );
}

#[tokio::test(start_paused = true)]
async fn siblings_sharing_a_prefix_wait_for_the_first_to_write_the_cache() {
    let shared = "Context shared by every sibling.\n".repeat(200);
    let provider = Scripted::build(
        (0..4).map(|_| Some(text("ok"))).collect(),
        fast_policy(),
        true,
        Duration::from_secs(2),
    );
    let agent = context(provider.clone(), None);
    let prefixes = Arc::new(SharedPrefixes::default());
    let requests: Vec<AgentRequest> = (0..4)
        .map(|i| AgentRequest {
            prompt: format!("{shared}Task {i}: review file_{i}.rs"),
            ..request(None)
        })
        .collect();
    for sibling in &requests {
        prefixes.register_request(&agent, sibling);
    }
    let runs = requests
        .iter()
        .map(|sibling| run_agent_sharing(&agent, sibling, &prefixes));
    for outcome in futures_join(runs).await {
        assert_eq!(outcome.unwrap().text, "ok");
    }
    let seen = provider.seen.lock().unwrap();
    let completed_before = provider.completed_before.lock().unwrap();
    assert_eq!(completed_before[0], 0);
    assert!(
        completed_before[1..].iter().all(|&done| done >= 1),
        "siblings went after the writer: {completed_before:?}"
    );
    for chat in seen.iter() {
        assert!(chat.cache.system && chat.cache.shared_prefix && !chat.cache.conversation);
        assert_eq!(chat.messages[0].content[0], Block::Text(shared.clone()));
        assert!(
            matches!(&chat.messages[0].content[1], Block::Text(rest) if rest.starts_with("Task "))
        );
    }
}

#[tokio::test]
async fn providers_without_a_cache_get_no_hints_and_whole_prompts() {
    let provider = Scripted::new(vec![text("ok")]);
    let agent = context(provider.clone(), None);
    run_agent(&agent, &request(None)).await.unwrap();
    let seen = provider.seen.lock().unwrap();
    assert_eq!(seen[0].cache, CacheHints::default());
    assert_eq!(
        seen[0].messages[0].content,
        vec![Block::Text("find bugs".into())]
    );
}

#[tokio::test]
async fn the_submit_tool_is_forced_when_it_is_the_only_tool() {
    let provider = Scripted::new(vec![submit(json!({"real": true}))]);
    run_agent(
        &context(provider.clone(), None),
        &request(Some(verdict_schema())),
    )
    .await
    .unwrap();
    assert_eq!(
        provider.seen.lock().unwrap()[0].force_tool.as_deref(),
        Some(SUBMIT_TOOL)
    );
}

/// Runs futures concurrently on the current task and collects their outputs in order.
async fn futures_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<Option<_>> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, output) in handles.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => {
                        *output = Some(value);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("every future finished"))
        .collect()
}

/// Keeps the log lines a run would show.
#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl crate::events::EventSink for Lines {
    fn event(&self, event: &crate::events::RunEvent) {
        if let crate::events::RunEvent::Log { message } = event {
            self.0.lock().unwrap().push(message.clone());
        }
    }
}

#[tokio::test]
async fn a_provider_that_over_reports_usage_is_charged_at_the_worst_case() {
    let lying = |input_tokens: u64, output_tokens: u64| {
        Ok(ChatResponse {
            content: vec![Block::Text("done".into())],
            stop: StopReason::EndTurn,
            usage: Usage {
                input_tokens,
                output_tokens,
                cache_read_tokens: input_tokens,
                cache_write_tokens: input_tokens,
            },
            model: "scripted-model".into(),
        })
    };
    let provider = Scripted::new(vec![lying(10_000_000, 10_000_000), lying(1, 2)]);
    let lines = Arc::new(Lines::default());
    let context = AgentContext {
        events: lines.clone(),
        ..context(provider.clone(), Some(100_000))
    };
    let output = run_agent(&context, &request(None)).await.unwrap();
    let worst = provider.seen.lock().unwrap()[0].input_bytes() + 100;
    assert_eq!(output.usage.total(), worst);
    assert_eq!(output.usage.output_tokens, 100);
    assert_eq!(context.ledger.spent(), worst);
    assert!(context.ledger.spent() <= 100_000);
    let said = lines.0.lock().unwrap().clone();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("scripted reported 40000000 tokens"),
        "{said:?}"
    );
    // An honest answer is charged what it reports, without a warning.
    let output = run_agent(&context, &request(None)).await.unwrap();
    assert_eq!(output.usage.total(), 5);
    assert_eq!(lines.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_agent_keeps_what_it_was_charged_and_schema_attempts_are_configurable() {
    let provider = Scripted::new((0..2).map(|_| submit(json!({"real": 1}))).collect());
    let context = AgentContext {
        schema_attempts: 2,
        ..context(provider.clone(), Some(100_000))
    };
    let (outcome, conversation) = run_agent_recorded(
        &context,
        &request(Some(verdict_schema())),
        &Arc::new(SharedPrefixes::default()),
    )
    .await;
    let error = outcome.unwrap_err();
    assert_eq!(error.kind(), "schema-mismatch");
    assert!(
        error
            .to_string()
            .contains("after 2 attempts (raise --schema-attempts)"),
        "{error}"
    );
    assert_eq!(provider.seen.lock().unwrap().len(), 2);
    assert_eq!(conversation.spend.usage.total(), 30);
    assert_eq!(context.ledger.spent(), 30);
}

#[tokio::test]
async fn later_requests_are_bounded_by_the_input_tokens_reported_for_the_last_one() {
    // A long prompt: its bytes bound the first request, and the budget holds just that.
    let long = AgentRequest {
        prompt: "find bugs in this: ".to_string() + &"x".repeat(3_000),
        ..request(Some(verdict_schema()))
    };
    let probe = Scripted::new(vec![submit(json!({"real": true}))]);
    run_agent(&context(probe.clone(), None), &long)
        .await
        .unwrap();
    let first_bytes = probe.seen.lock().unwrap()[0].input_bytes();
    let budget = first_bytes + 100 + 60;

    // The first answer is invalid and reports 10 input tokens: the correction request is
    // bounded by those plus what was added, not by the whole conversation's bytes again.
    let provider = Scripted::new(vec![
        submit(json!({"real": 1})),
        submit(json!({"real": true})),
    ]);
    let context = context(provider.clone(), Some(budget));
    let output = run_agent(&context, &long).await.unwrap();
    assert_eq!(output.json, Some(json!({"real": true})));
    let seen = provider.seen.lock().unwrap();
    assert!(
        seen[1].input_bytes() + 100 > budget - 15,
        "the second request's bytes alone would not have fitted"
    );
    assert_eq!(context.ledger.spent(), 30);
}

#[tokio::test]
async fn a_call_naming_no_max_tokens_has_its_ceiling_lowered_to_what_the_budget_covers() {
    let provider = Scripted::new(vec![text("short"), text("again")]);
    let context = context(provider.clone(), Some(5_000));
    let unnamed = AgentRequest {
        max_tokens: 8_192,
        output_floor: Some(MIN_OUTPUT_TOKENS),
        ..request(None)
    };
    run_agent(&context, &unnamed).await.unwrap();
    let first = provider.seen.lock().unwrap()[0].clone();
    assert_eq!(
        u64::from(first.max_tokens),
        5_000 - first.input_bytes(),
        "lowered to what the budget could hold"
    );
    // Named, the same ceiling is refused rather than lowered.
    let named = AgentRequest {
        output_floor: None,
        ..unnamed.clone()
    };
    let error = run_agent(&context, &named).await.unwrap_err();
    assert_eq!(error.kind(), "budget-exhausted");
    assert_eq!(provider.seen.lock().unwrap().len(), 1);
    run_agent(&context, &unnamed).await.unwrap();
    assert!(context.ledger.spent() <= 5_000);
}
