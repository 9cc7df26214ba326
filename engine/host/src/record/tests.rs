use serde_json::json;

use super::*;
use crate::provider::Usage;

fn request(prompt: &str) -> AgentRequest {
    AgentRequest {
        prompt: prompt.into(),
        label: Some(format!("label {prompt}")),
        phase: Some("Scan".into()),
        model: None,
        effort: None,
        schema: None,
        tools: None,
        max_tokens: 100,
        output_floor: None,
        max_turns: 4,
        timeout: None,
        isolated: false,
    }
}

fn output(text: &str) -> AgentOutput {
    AgentOutput {
        text: text.into(),
        json: Some(json!({"t": text})),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 3,
            cache_read_tokens: 2,
            cache_write_tokens: 1,
        },
        model: "sim-default".into(),
        changes: Vec::new(),
    }
}

#[test]
fn keys_change_with_prompt_options_and_model() {
    let base = call_key(&request("a"), "m");
    assert_eq!(base, call_key(&request("a"), "m"));
    assert_ne!(base, call_key(&request("b"), "m"));
    assert_ne!(base, call_key(&request("a"), "other"));
    let mut more_tokens = request("a");
    more_tokens.max_tokens = 200;
    assert_ne!(base, call_key(&more_tokens, "m"));
    // Labels and phases are presentation, not part of what is asked.
    let mut relabelled = request("a");
    relabelled.label = Some("x".into());
    assert_eq!(base, call_key(&relabelled, "m"));
}

fn recorded(key: &str, seq: u64, done: bool) -> RecordedCall {
    RecordedCall {
        seq,
        key: key.into(),
        output: done.then(|| output(key)),
    }
}

#[test]
fn prefix_replay_stops_at_the_first_changed_call() {
    let calls = vec![
        recorded("a", 1, true),
        recorded("b", 2, false),
        recorded("c", 3, true),
        recorded("d", 4, true),
    ];
    let mut plan = ReplayPlan::new(calls, ReusePolicy::Prefix);
    assert_eq!(plan.answer(1, "a"), Some(output("a")));
    assert_eq!(plan.answer(2, "b"), None, "unfinished: runs live");
    assert_eq!(
        plan.answer(3, "c"),
        Some(output("c")),
        "still the unchanged prefix"
    );
    assert_eq!(plan.answer(4, "changed"), None);
    assert_eq!(
        plan.answer(5, "d"),
        None,
        "after a change everything runs live"
    );
}

#[test]
fn reuse_all_matches_by_key_once_each() {
    let calls = vec![
        recorded("a", 1, true),
        recorded("b", 2, true),
        recorded("a", 3, true),
    ];
    let mut plan = ReplayPlan::new(calls, ReusePolicy::All);
    assert_eq!(plan.answer(1, "b"), Some(output("b")));
    assert_eq!(plan.answer(2, "a"), Some(output("a")));
    assert_eq!(plan.answer(3, "a"), Some(output("a")));
    assert_eq!(
        plan.answer(4, "a"),
        None,
        "each recorded answer is used once"
    );
}
