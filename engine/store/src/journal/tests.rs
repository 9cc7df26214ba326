use serde_json::json;

use super::*;
use corral_host::record::describe_call;

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
        tenant: None,
        spec: r#"{"spec": true}"#.into(),
        status: RunStatus::Running,
    }
}

#[test]
fn a_run_and_its_calls_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal.db")).unwrap();
    let run = journal.begin_run(new_run()).unwrap();
    for (seq, prompt) in [(1, "a"), (2, "b")] {
        let described = describe_call(&request(prompt), "sim-default");
        journal
            .recorder(&run)
            .call_queued(seq, described, &request(prompt), "sim-default");
    }
    let recorder = journal.recorder(&run);
    let first = output("first");
    recorder.call_finished(
        1,
        &Ok(first.clone()),
        &first.usage,
        false,
        Some(now_ms()),
        None,
    );
    // A failed call keeps what it was charged.
    let charged = Usage {
        input_tokens: 70,
        output_tokens: 5,
        ..Usage::default()
    };
    recorder.call_finished(
        2,
        &Err(AgentError::Timeout("slow".into())),
        &charged,
        false,
        None,
        Some("[conversation]".into()),
    );
    journal.phase(&run, "Scan");
    journal.log(&run, "scanning");
    journal
        .finish_run(
            &run,
            RunFinish {
                status: RunStatus::Succeeded,
                result: Some("42".into()),
                error: None,
                agents: 2,
                usage: output("x").usage,
                cost: 0.5,
            },
        )
        .unwrap();

    let all = RunFilter {
        limit: 10,
        ..RunFilter::default()
    };
    let runs = journal.list_runs(&all).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].agents, 2);
    assert_eq!(runs[0].cost, 0.5);
    let detail = journal.run_detail(&run).unwrap();
    assert_eq!(
        journal.run_summary(&run).unwrap(),
        Some(detail.summary.clone())
    );
    assert_eq!(journal.run_summary("nosuchrun").unwrap(), None);
    assert_eq!(detail.result.as_deref(), Some("42"));
    assert_eq!(detail.spec.as_deref(), Some(r#"{"spec": true}"#));
    assert!(!journal.stop_requested(&run).unwrap());
    journal.request_stop(&run).unwrap();
    assert!(journal.stop_requested(&run).unwrap());
    // A finished run's stop request asks nobody.
    assert!(journal.stop_requests().unwrap().is_empty());
    assert_eq!(detail.calls.len(), 2);
    assert_eq!(detail.calls[0].status, CallStatus::Ok);
    assert_eq!(detail.calls[0].label.as_deref(), Some("label a"));
    assert_eq!(detail.calls[1].error_kind.as_deref(), Some("timeout"));
    assert_eq!(detail.calls[1].usage, charged);
    assert_eq!(
        detail.events,
        vec![
            LogEntry {
                kind: "phase".into(),
                text: "Scan".into(),
                at_ms: detail.events[0].at_ms
            },
            LogEntry {
                kind: "log".into(),
                text: "scanning".into(),
                at_ms: detail.events[1].at_ms
            },
        ]
    );

    let recorded = journal.recorded_calls(&run).unwrap();
    assert_eq!(recorded[0].output, Some(output("first")));
    assert_eq!(recorded[1].output, None);
    let transcript = journal.call_transcript(&run, 2).unwrap().unwrap();
    assert_eq!(transcript.prompt, "b");
    assert_eq!(transcript.transcript.as_deref(), Some("[conversation]"));
    assert_eq!(
        journal
            .call_transcript(&run, 1)
            .unwrap()
            .unwrap()
            .transcript,
        None
    );
    assert_eq!(journal.resolve_id(&run[..6]).unwrap(), run);
    assert!(matches!(
        journal.resolve_id("zzzzzzzzzz"),
        Err(StoreError::UnknownRun(_))
    ));
    // Ids are taken literally: LIKE wildcards and the empty string name no run.
    for pattern in ["", "%", "_", "%%", &format!("{}_", &run[..5])] {
        assert!(
            matches!(journal.resolve_id(pattern), Err(StoreError::UnknownRun(_))),
            "{pattern:?} matched a run"
        );
    }
}

#[test]
fn events_page_by_sequence_and_runs_filter_by_tenant_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("journal.db")).unwrap();
    let acme = journal
        .begin_run(NewRun {
            tenant: Some("acme".into()),
            ..new_run()
        })
        .unwrap();
    let other = journal
        .begin_run(NewRun {
            tenant: Some("globex".into()),
            status: RunStatus::Queued,
            ..new_run()
        })
        .unwrap();
    for seq in 1..=5 {
        journal.event(&acme, seq, format!("{{\"n\":{seq}}}"));
    }
    journal.flush().unwrap();
    let page = journal.events_after(&acme, 2, 2).unwrap();
    assert_eq!(
        page,
        vec![(3, r#"{"n":3}"#.to_string()), (4, r#"{"n":4}"#.to_string())]
    );
    assert!(journal.events_after(&other, 0, 10).unwrap().is_empty());

    let of = |tenant: &str, status: Option<RunStatus>| {
        journal
            .list_runs(&RunFilter {
                tenant: Some(tenant.into()),
                status,
                limit: 10,
                before: None,
            })
            .unwrap()
            .into_iter()
            .map(|run| run.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("acme", None), vec![acme.clone()]);
    assert_eq!(of("globex", Some(RunStatus::Queued)), vec![other.clone()]);
    assert!(of("globex", Some(RunStatus::Running)).is_empty());
    journal.request_stop(&other).unwrap();
    assert_eq!(journal.stop_requests().unwrap(), vec![other.clone()]);
    let unfinished: Vec<String> = journal
        .unfinished_runs()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(unfinished, vec![acme, other]);
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
