use serde_json::json;

use super::*;

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
        max_turns: 4,
        timeout: None,
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
    }
}

fn new_run() -> NewRun {
    NewRun {
        workflow: "probe.wasm".into(),
        workflow_hash: "abc".into(),
        script: None,
        args: "{}".into(),
        limits: json!({"max_concurrent": 16}),
        root: None,
        provider: "sim".into(),
        resumed_from: None,
        argv: vec!["run".into(), "probe.wasm".into()],
        cwd: "/tmp".into(),
    }
}

#[test]
fn a_run_and_its_calls_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal.db")).unwrap();
    let run = journal.begin_run(new_run()).unwrap();
    for (seq, prompt) in [(1, "a"), (2, "b")] {
        let described = describe_call(&request(prompt), "sim-default");
        journal.call_queued(&run, seq, described, &request(prompt), "sim-default");
    }
    journal.call_finished(&run, 1, &Ok(output("first")), false, Some(now_ms()), None);
    journal.call_finished(
        &run,
        2,
        &Err(AgentError::Timeout("slow".into())),
        false,
        None,
        Some("[conversation]".into()),
    );
    journal.phase(&run, "Scan");
    journal.log(&run, "scanning");
    journal
        .finish_run(
            &run,
            RunStatus::Succeeded,
            Some("42".into()),
            None,
            2,
            output("x").usage,
        )
        .unwrap();

    let runs = journal.list_runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, "succeeded");
    assert_eq!(runs[0].agents, 2);
    let detail = journal.run_detail(&run).unwrap();
    assert_eq!(detail.result.as_deref(), Some("42"));
    assert_eq!(detail.argv, ["run", "probe.wasm"]);
    assert!(!journal.stop_requested(&run).unwrap());
    journal.request_stop(&run).unwrap();
    assert!(journal.stop_requested(&run).unwrap());
    assert_eq!(detail.calls.len(), 2);
    assert_eq!(detail.calls[0].status, "ok");
    assert_eq!(detail.calls[0].label.as_deref(), Some("label a"));
    assert_eq!(detail.calls[1].error_kind.as_deref(), Some("timeout"));
    assert_eq!(
        detail.events,
        vec![
            ("phase".into(), "Scan".into(), detail.events[0].2),
            ("log".into(), "scanning".into(), detail.events[1].2)
        ]
    );

    let recorded = journal.recorded_calls(&run).unwrap();
    assert_eq!(recorded[0].output, Some(output("first")));
    assert_eq!(recorded[1].output, None);
    let (prompt, _, transcript) = journal.call_transcript(&run, 2).unwrap().unwrap();
    assert_eq!(prompt, "b");
    assert_eq!(transcript.as_deref(), Some("[conversation]"));
    assert_eq!(journal.call_transcript(&run, 1).unwrap().unwrap().2, None);
    assert_eq!(journal.resolve_id(&run[..6]).unwrap(), run);
    assert!(matches!(
        journal.resolve_id("zzzzzzzzzz"),
        Err(JournalError::UnknownRun(_))
    ));
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

#[test]
fn times_format_as_utc() {
    assert_eq!(format_time(0), "1970-01-01 00:00:00");
    assert_eq!(format_time(1_795_000_000_000), "2026-11-18 11:06:40");
}

#[test]
fn run_ids_are_unique() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_run_id()).collect();
    assert_eq!(ids.len(), 1000);
}
