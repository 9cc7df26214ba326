use std::time::Duration;

use super::*;
use crate::budget::BudgetLedger;
use crate::events::NoEvents;
use crate::provider::sim::SimProvider;

fn scheduler(provider: Arc<SimProvider>, max_concurrent: usize, max_agents: u64) -> AgentScheduler {
    let context = AgentContext {
        provider,
        ledger: BudgetLedger::new(None),
        tools: None,
        events: Arc::new(NoEvents),
        schema_attempts: crate::agent_loop::MAX_SCHEMA_ATTEMPTS,
        pause: None,
        commands: Default::default(),
    };
    AgentScheduler::new(context, max_concurrent, max_agents, Arc::new(NoEvents))
}

fn request(prompt: &str) -> AgentRequest {
    AgentRequest {
        max_tokens: 64,
        output_floor: None,
        max_turns: 4,
        ..AgentRequest::new(prompt)
    }
}

async fn wait_all(scheduler: &mut AgentScheduler, mut ids: Vec<u64>) -> Vec<(u64, AgentOutcome)> {
    let mut all = Vec::new();
    while !ids.is_empty() {
        let done = scheduler.wait(&ids).await;
        ids.retain(|id| !done.iter().any(|(d, _)| d == id));
        all.extend(done);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_the_cap_in_flight() {
    let provider = Arc::new(SimProvider::new(Duration::from_millis(5)));
    let mut scheduler = scheduler(Arc::clone(&provider), 4, 1000);
    let ids: Vec<u64> = (0..40)
        .map(|i| scheduler.start(request(&format!("p{i}"))).unwrap())
        .collect();
    let done = wait_all(&mut scheduler, ids).await;
    assert_eq!(done.len(), 40);
    assert!(done.iter().all(|(_, outcome)| outcome.is_ok()));
    assert_eq!(provider.peak_in_flight(), 4);
    assert_eq!(scheduler.stats().peak_in_flight, 4);
    assert_eq!(scheduler.stats().succeeded, 40);
}

#[tokio::test]
async fn the_agent_cap_refuses_the_next_start() {
    let mut scheduler = scheduler(Arc::new(SimProvider::default()), 16, 3);
    for _ in 0..3 {
        scheduler.start(request("x")).unwrap();
    }
    let refused = scheduler.start(request("x")).unwrap_err();
    assert_eq!(refused.kind(), "agent-limit");
    assert!(refused.to_string().contains("--max-agents"));
    assert_eq!(scheduler.stats().refused, 1);
}

#[tokio::test]
async fn wait_hands_back_every_finished_call_at_once() {
    let mut scheduler = scheduler(Arc::new(SimProvider::default()), 16, 100);
    let ids: Vec<u64> = (0..5)
        .map(|_| scheduler.start(request("x")).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let done = scheduler.wait(&ids).await;
    assert_eq!(done.len(), 5);
    let again = scheduler.wait(&ids[..1]).await;
    assert_eq!(again[0].1.as_ref().unwrap_err().kind(), "invalid-input");
}

#[tokio::test]
async fn cancelled_calls_complete_as_cancelled_and_finished_ones_keep_their_outcome() {
    let mut scheduler = scheduler(Arc::new(SimProvider::new(Duration::from_secs(10))), 16, 100);
    let slow = scheduler.start(request("slow")).unwrap();
    scheduler.cancel(slow);
    let done = scheduler.wait(&[slow]).await;
    assert_eq!(done[0].1.as_ref().unwrap_err().kind(), "cancelled");

    let mut scheduler = self::scheduler(Arc::new(SimProvider::default()), 16, 100);
    let fast = scheduler.start(request("fast")).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    scheduler.cancel(fast);
    assert!(scheduler.wait(&[fast]).await[0].1.is_ok());
}

/// A provider with a bug: it panics inside the agent task.
struct Panics;

impl crate::provider::Provider for Panics {
    fn name(&self) -> &str {
        "panics"
    }

    fn resolve_model(&self, _requested: Option<&str>) -> String {
        "m".to_string()
    }

    fn complete<'a>(
        &'a self,
        _request: &'a crate::provider::ChatRequest,
    ) -> crate::provider::BoxFuture<
        'a,
        Result<crate::provider::ChatResponse, crate::provider::ProviderError>,
    > {
        Box::pin(async { panic!("index out of bounds in the provider") })
    }
}

#[tokio::test]
async fn a_panic_in_an_agent_fails_that_call_at_once() {
    let context = AgentContext {
        provider: Arc::new(Panics),
        ledger: BudgetLedger::new(Some(1_000_000)),
        tools: None,
        events: Arc::new(NoEvents),
        schema_attempts: crate::agent_loop::MAX_SCHEMA_ATTEMPTS,
        pause: None,
        commands: Default::default(),
    };
    let mut scheduler = AgentScheduler::new(context, 4, 10, Arc::new(NoEvents));
    let id = scheduler.start(request("x")).unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), scheduler.wait(&[id]))
        .await
        .expect("the panicking call completes instead of hanging the run");
    let error = done[0].1.as_ref().unwrap_err();
    assert_eq!(error.kind(), "provider");
    assert!(
        error
            .to_string()
            .contains("index out of bounds in the provider"),
        "{error}"
    );
    assert_eq!(scheduler.stats().failed_total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_fit_one_after_another_all_finish_under_a_budget_too_small_for_all_at_once() {
    let provider = Arc::new(SimProvider::new(Duration::from_millis(20)));
    let prompt = |i: usize| format!("audit file {i}:\n{}", "let x = 1;\n".repeat(200));
    let worst = AgentRequest::new(prompt(0)).prompt.len() as u64 + 64 + 400;
    // Room for one worst case and a half: three at once would starve each other.
    let budget = worst * 3 / 2;
    let context = AgentContext {
        provider: provider.clone(),
        ledger: BudgetLedger::new(Some(budget)),
        tools: None,
        events: Arc::new(NoEvents),
        schema_attempts: crate::agent_loop::MAX_SCHEMA_ATTEMPTS,
        pause: None,
        commands: Default::default(),
    };
    let ledger = Arc::clone(&context.ledger);
    let mut scheduler = AgentScheduler::new(context, 16, 1000, Arc::new(NoEvents));
    let ids: Vec<u64> = (0..3)
        .map(|i| scheduler.start(request(&prompt(i))).unwrap())
        .collect();
    let done = wait_all(&mut scheduler, ids).await;
    assert!(done.iter().all(|(_, outcome)| outcome.is_ok()), "{done:?}");
    assert!(ledger.spent() <= budget);
    assert_eq!(provider.peak_in_flight(), 1, "they took turns");
}

#[tokio::test]
async fn a_stopper_ends_one_call_as_cancelled_while_the_others_go_on() {
    let mut scheduler = scheduler(Arc::new(SimProvider::new(Duration::from_secs(3600))), 4, 10);
    let stopper = scheduler.stopper();
    let slow = scheduler.start(request("slow")).unwrap();
    let other = scheduler.start(request("other")).unwrap();
    assert!(!stopper.stop(99), "an unknown call");
    assert!(stopper.stop(slow));
    let done = tokio::time::timeout(Duration::from_secs(10), scheduler.wait(&[slow, other]))
        .await
        .expect("the stopped call completes at once");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].0, slow);
    let error = done[0].1.as_ref().unwrap_err();
    assert_eq!(error.kind(), "cancelled");
    assert!(
        error.to_string().contains("corral runs stop --agent"),
        "{error}"
    );
    assert!(!stopper.stop(slow), "already stopped");
    assert_eq!(scheduler.outstanding(), 1, "the other call still runs");
    assert_eq!(scheduler.stats().failed.get("cancelled"), Some(&1));
}
