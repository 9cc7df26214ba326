//! Tests of the executor and the combinators against a fake host; no wasm needed.

use crate::executor::{AgentHost, CallId, DEADLOCK, Outcome, set_host};
use crate::{
    AgentError, AgentOptions, AgentOutput, Effort, Error, MAX_FANOUT, Usage, agent, block_on,
    parallel, pipeline,
};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// A host whose calls finish in id order, `batch` per wait; records what the guest did.
struct FakeHost {
    batch: usize,
    agent_cap: usize,
    state: RefCell<FakeState>,
}

#[derive(Default)]
struct FakeState {
    next_id: CallId,
    /// Started calls not returned by `wait` yet: id → (prompt, cancelled).
    running: BTreeMap<CallId, (String, bool)>,
    cancels: Vec<CallId>,
    waits: Vec<Vec<CallId>>,
    /// `start:<prompt>` and `done:<prompt>`, in order.
    events: Vec<String>,
}

impl FakeHost {
    fn install(batch: usize, agent_cap: usize) -> Rc<Self> {
        let host = Rc::new(Self {
            batch,
            agent_cap,
            state: RefCell::default(),
        });
        set_host(host.clone());
        host
    }

    fn events(&self) -> Vec<String> {
        self.state.borrow().events.clone()
    }

    fn position(&self, event: &str) -> usize {
        self.events()
            .iter()
            .position(|e| e == event)
            .unwrap_or_else(|| panic!("no event {event}"))
    }
}

impl AgentHost for FakeHost {
    fn start(&self, prompt: &str, _options: &AgentOptions) -> Result<CallId, AgentError> {
        let mut state = self.state.borrow_mut();
        if prompt == "refuse" {
            return Err(AgentError::InvalidInput("refused".into()));
        }
        if state.next_id as usize >= self.agent_cap {
            return Err(AgentError::AgentLimit("cap reached".into()));
        }
        state.next_id += 1;
        let id = state.next_id;
        state.running.insert(id, (prompt.to_owned(), false));
        state.events.push(format!("start:{prompt}"));
        Ok(id)
    }

    fn wait(&self, ids: &[CallId]) -> Vec<(CallId, Outcome)> {
        let mut state = self.state.borrow_mut();
        state.waits.push(ids.to_vec());
        let mut finished: Vec<CallId> = ids
            .iter()
            .copied()
            .filter(|id| state.running.contains_key(id))
            .collect();
        finished.sort_unstable();
        finished.truncate(self.batch);
        let mut completions = Vec::new();
        // Handed back newest first, so that result order cannot come from completion order.
        for id in finished.into_iter().rev() {
            let (prompt, cancelled) = state.running.remove(&id).expect("running");
            state.events.push(format!("done:{prompt}"));
            let outcome = if cancelled {
                Err(AgentError::Cancelled("cancelled".into()))
            } else if prompt.starts_with("fail") {
                Err(AgentError::Provider(format!("{prompt} failed")))
            } else {
                Ok(AgentOutput {
                    text: format!("out:{prompt}"),
                    json: None,
                    usage: Usage::default(),
                    model: "fake".into(),
                })
            };
            completions.push((id, outcome));
        }
        completions
    }

    fn cancel(&self, id: CallId) {
        let mut state = self.state.borrow_mut();
        state.cancels.push(id);
        if let Some((_, cancelled)) = state.running.get_mut(&id) {
            *cancelled = true;
        }
    }
}

fn texts(outcomes: Vec<Result<AgentOutput, AgentError>>) -> Vec<String> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Ok(output) => output.text,
            Err(error) => error.kind().to_owned(),
        })
        .collect()
}

#[test]
fn parallel_starts_every_call_before_waiting_and_keeps_input_order() {
    let host = FakeHost::install(1, 100);
    let calls = (0..5).map(|i| agent(format!("p{i}"), AgentOptions::new()));
    let outcomes = block_on(parallel(calls)).unwrap().unwrap();
    assert_eq!(
        texts(outcomes),
        ["out:p0", "out:p1", "out:p2", "out:p3", "out:p4"]
    );
    let state = host.state.borrow();
    assert_eq!(state.waits[0], [1, 2, 3, 4, 5]);
    assert_eq!(state.waits.len(), 5);
}

#[test]
fn concurrent_fan_outs_wait_in_chunks_the_host_accepts() {
    use crate::executor::WAIT_BATCH;
    // Two parallels of 2500 at once: 5000 pending calls, more than one wait may name.
    let host = FakeHost::install(700, 10_000);
    let fan = |side: &'static str| {
        parallel((0..2500).map(move |i| agent(format!("{side}{i}"), AgentOptions::new())))
    };
    let both = block_on(parallel([fan("a"), fan("b")])).unwrap().unwrap();
    for outcomes in both {
        let outcomes = outcomes.unwrap();
        assert_eq!(outcomes.len(), 2500);
        assert!(outcomes.iter().all(Result::is_ok));
    }
    let state = host.state.borrow();
    assert!(state.waits.iter().all(|ids| ids.len() <= WAIT_BATCH));
    assert!(state.waits.iter().any(|ids| ids.len() == WAIT_BATCH));
}

#[test]
fn one_wait_can_finish_several_calls() {
    let host = FakeHost::install(3, 100);
    let calls = (0..7).map(|i| agent(format!("p{i}"), AgentOptions::new()));
    let outcomes = block_on(parallel(calls)).unwrap().unwrap();
    assert_eq!(outcomes.len(), 7);
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(host.state.borrow().waits.len(), 3);
}

#[test]
fn a_synchronous_refusal_resolves_the_call_to_that_error() {
    let _host = FakeHost::install(10, 2);
    let calls = ["a", "refuse", "b", "c"].map(|p| agent(p, AgentOptions::new()));
    let outcomes = block_on(parallel(calls)).unwrap().unwrap();
    assert_eq!(
        texts(outcomes),
        ["out:a", "invalid-input", "out:b", "agent-limit"]
    );
}

#[test]
fn awaiting_something_that_is_not_an_agent_call_is_a_deadlock() {
    let _host = FakeHost::install(1, 10);
    let error = block_on(std::future::pending::<()>()).unwrap_err();
    assert_eq!(error.message(), DEADLOCK);

    let error = block_on(async {
        let _ = agent("first", AgentOptions::new()).await;
        std::future::pending::<()>().await;
    })
    .unwrap_err();
    assert_eq!(error.message(), DEADLOCK);
}

/// Wakes itself once before completing, like a yield.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[test]
fn a_future_that_wakes_itself_is_polled_again_without_waiting() {
    let host = FakeHost::install(1, 10);
    let out = block_on(async {
        YieldOnce(false).await;
        parallel([YieldOnce(false), YieldOnce(false)])
            .await
            .unwrap();
        7
    });
    assert_eq!(out.unwrap(), 7);
    assert!(host.state.borrow().waits.is_empty());
}

#[test]
fn pipeline_items_move_through_stages_without_a_barrier() {
    let host = FakeHost::install(1, 100);
    let results = block_on(
        pipeline([0, 1])
            .stage(|_, item, _| async move {
                Ok(agent(format!("s1-{item}"), AgentOptions::new()).await?.text)
            })
            .stage(|prev, item, _| async move {
                let second = agent(format!("s2-{item}"), AgentOptions::new()).await?;
                Ok(format!("{prev}+{}", second.text))
            })
            .run(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        results,
        [
            Some("out:s1-0+out:s2-0".to_owned()),
            Some("out:s1-1+out:s2-1".to_owned())
        ]
    );
    // Item 0 entered stage 2 while item 1 was still in stage 1.
    assert!(host.position("start:s2-0") < host.position("done:s1-1"));
}

#[test]
fn a_failing_stage_skips_the_remaining_stages_of_that_item_only() {
    let _host = FakeHost::install(4, 100);
    let second_stage_runs = Rc::new(Cell::new(0));
    let counter = second_stage_runs.clone();
    let results = block_on(
        pipeline(["ok", "fail", "fine"])
            .stage(|item, _, _| async move { Ok(agent(item, AgentOptions::new()).await?.text) })
            .stage(move |prev, _, index| {
                counter.set(counter.get() + 1);
                async move { Ok(format!("{index}:{prev}")) }
            })
            .run_results(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(second_stage_runs.get(), 2);
    assert_eq!(results[0].as_deref(), Ok("0:out:ok"));
    assert_eq!(
        results[1].as_ref().unwrap_err().message(),
        "agent call failed: provider: fail failed"
    );
    assert_eq!(results[2].as_deref(), Ok("2:out:fine"));
}

#[test]
fn the_first_stage_receives_the_item_and_its_index() {
    let results = block_on(
        pipeline(vec![10, 20])
            .stage(|prev, item, index| async move {
                assert_eq!(prev, item);
                Ok(prev + index)
            })
            .run(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(results, [Some(10), Some(21)]);
}

#[test]
fn lists_longer_than_the_fanout_limit_are_refused() {
    let ok = block_on(parallel((0..MAX_FANOUT).map(std::future::ready))).unwrap();
    assert_eq!(ok.unwrap().len(), MAX_FANOUT);

    let error = block_on(parallel((0..=MAX_FANOUT).map(std::future::ready)))
        .unwrap()
        .unwrap_err();
    assert!(
        error
            .message()
            .contains("4097 items exceed the limit of 4096"),
        "{error}"
    );

    let error = block_on(pipeline(0..=MAX_FANOUT).run())
        .unwrap()
        .unwrap_err();
    assert!(
        error.message().starts_with("pipeline: 4097 items"),
        "{error}"
    );
}

#[test]
fn dropping_a_running_call_cancels_it_and_discards_its_outcome() {
    let host = FakeHost::install(1, 100);
    let out = block_on(async {
        let mut dropped = agent("dropped", AgentOptions::new());
        dropped.start();
        assert_eq!(dropped.id(), Some(1));
        drop(dropped);
        agent("kept", AgentOptions::new()).await
    })
    .unwrap()
    .unwrap();
    assert_eq!(out.text, "out:kept");
    let state = host.state.borrow();
    assert_eq!(state.cancels, [1]);
    // The abandoned call is waited for too, so the host can forget it.
    assert_eq!(state.waits[0], [2, 1]);
}

#[test]
fn cancelling_calls_resolves_them_to_cancelled() {
    let host = FakeHost::install(10, 100);
    let outcomes = block_on(async {
        let mut calls: Vec<_> = ["a", "b", "c"]
            .map(|p| agent(p, AgentOptions::new()))
            .into();
        calls[0].start();
        calls[1].start();
        calls[1].cancel();
        calls[2].cancel();
        parallel(calls).await.unwrap()
    })
    .unwrap();
    assert_eq!(texts(outcomes), ["out:a", "cancelled", "cancelled"]);
    // The third was cancelled before it started, so the host never saw it.
    assert_eq!(host.state.borrow().cancels, [2]);
    assert_eq!(host.events(), ["start:a", "start:b", "done:b", "done:a"]);
}

#[test]
fn run_workflow_parses_arguments_and_serialises_the_result() {
    let run = |args: &str, fail: bool| {
        crate::__private::run_workflow(args, |args| async move {
            if fail {
                Err(Error::new("it broke"))
            } else {
                Ok(serde_json::json!({ "args": args }))
            }
        })
    };
    assert_eq!(run(r#"{"a":1}"#, false).unwrap(), r#"{"args":{"a":1}}"#);
    assert_eq!(run("null", false).unwrap(), r#"{"args":null}"#);
    assert_eq!(run("", false).unwrap(), r#"{"args":null}"#);
    assert_eq!(
        run("{", false).unwrap_err().split(':').next(),
        Some("the run's arguments are not valid JSON")
    );
    assert_eq!(run("null", true).unwrap_err(), "it broke");
}

#[test]
fn errors_convert_with_question_mark() {
    fn agent_failure() -> Result<(), Error> {
        Err(AgentError::Timeout("took too long".into()))?
    }
    fn tool_failure() -> Result<(), Error> {
        Err(crate::tools::ToolError::NotFound("src/x.rs".into()))?
    }
    fn json_failure() -> Result<(), Error> {
        serde_json::from_str::<serde_json::Value>("{")?;
        Ok(())
    }
    assert_eq!(
        agent_failure().unwrap_err().to_string(),
        "agent call failed: timeout: took too long"
    );
    assert_eq!(
        tool_failure().unwrap_err().to_string(),
        "tool call failed: not-found: src/x.rs"
    );
    assert!(
        json_failure()
            .unwrap_err()
            .to_string()
            .starts_with("json: ")
    );
    assert_eq!(AgentError::AgentLimit(String::new()).kind(), "agent-limit");
    assert_eq!(
        crate::tools::ToolError::NotFound(String::new()).kind(),
        "not-found"
    );
}

#[test]
fn options_are_lowered_with_the_schema_as_json_text() {
    let options = AgentOptions::new()
        .label("l")
        .phase("p")
        .model("haiku")
        .effort(Effort::XHigh)
        .schema(serde_json::json!({"type": "object"}))
        .tools(["read"])
        .max_tokens(1)
        .max_turns(2)
        .timeout_ms(3)
        .to_wit();
    assert_eq!(options.schema.as_deref(), Some(r#"{"type":"object"}"#));
    assert_eq!(options.tools, Some(vec!["read".to_owned()]));
    assert!(matches!(
        options.effort,
        Some(crate::bindings::corral::workflow::agents::Effort::Xhigh)
    ));
    assert_eq!(
        (options.max_tokens, options.max_turns, options.timeout_ms),
        (Some(1), Some(2), Some(3))
    );
    assert_eq!(Effort::parse(Effort::XHigh.as_str()), Some(Effort::XHigh));
}
