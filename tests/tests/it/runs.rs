//! Whole runs: results, phases, the budget, the agent cap, cancellation, the compiled cache,
//! and the example workflow over a real directory.

use corral_host::events::RunEvent;
use corral_host::{RunError, Runtime, RuntimeConfig};
use serde_json::json;
use tests::guests::guest_path;
use tests::support::{Run, fixture_repo, phases, result, sim, workflow};

#[tokio::test]
async fn a_workflow_returns_its_result() {
    let report = Run::new(json!({"mode": "echo", "x": [1, 2]}))
        .run(&workflow("probe"))
        .await;
    assert_eq!(result(&report), json!({"mode": "echo", "x": [1, 2]}));
    assert_eq!(report.agents.started, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_agents_in_flight_than_the_cap() {
    let provider = sim(20);
    let report = Run::new(json!({"mode": "fanout", "n": 60}))
        .provider(provider.clone())
        .limits(|l| l.max_concurrent = 5)
        .run(&workflow("probe"))
        .await;
    assert_eq!(result(&report)["ok"], 60);
    assert_eq!(
        provider.peak_in_flight(),
        5,
        "the provider saw the cap exactly"
    );
    assert_eq!(report.agents.peak_in_flight, 5);
}

#[tokio::test]
async fn the_default_cap_is_sixteen() {
    let provider = sim(20);
    let report = Run::new(json!({"mode": "fanout", "n": 100}))
        .provider(provider.clone())
        .run(&workflow("probe"))
        .await;
    assert_eq!(result(&report)["ok"], 100);
    assert_eq!(provider.peak_in_flight(), 16);
}

#[tokio::test]
async fn the_1001st_agent_is_refused() {
    let report = Run::new(json!({"mode": "fanout", "n": 1001}))
        .run(&workflow("probe"))
        .await;
    let outcome = result(&report);
    assert_eq!(outcome["ok"], 1000);
    assert_eq!(outcome["errors"], json!({"agent-limit": 1}));
    assert_eq!(report.agents.started, 1000);
    assert_eq!(report.agents.refused, 1);
}

#[tokio::test]
async fn the_agent_cap_is_configurable_and_counts_host_batches() {
    let report = Run::new(json!({"mode": "host-parallel", "n": 12}))
        .limits(|l| l.max_agents = 10)
        .run(&workflow("probe"))
        .await;
    assert_eq!(result(&report)["errors"], json!({"agent-limit": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wide_fan_out_never_overshoots_the_budget() {
    for (latency, budget) in [(0, 20_000), (5, 7_919), (1, 100_000)] {
        let report =
            Run::new(json!({"mode": "fanout", "n": 1000, "schema": true, "max_tokens": 64}))
                .provider(sim(latency))
                .limits(|l| l.budget_tokens = Some(budget))
                .run(&workflow("probe"))
                .await;
        let outcome = result(&report);
        assert!(
            report.spent_tokens <= budget,
            "spent {} of {budget}",
            report.spent_tokens
        );
        assert!(outcome["ok"].as_u64().unwrap() > 0, "{outcome}");
        assert!(
            outcome["errors"]["budget-exhausted"].as_u64().unwrap() > 0,
            "{outcome}"
        );
        assert_eq!(
            report.agents.usage.input_tokens + report.agents.usage.output_tokens,
            report.spent_tokens
        );
    }
}

#[tokio::test]
async fn the_guest_reads_its_budget() {
    let report = Run::new(json!({"mode": "budget"}))
        .limits(|l| l.budget_tokens = Some(5000))
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        result(&report),
        json!({"total": 5000, "spent": 0, "remaining": 5000})
    );
    let report = Run::new(json!({"mode": "budget"}))
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        result(&report),
        json!({"total": null, "spent": 0, "remaining": null})
    );
}

#[tokio::test]
async fn cancelled_calls_complete_as_cancelled() {
    let report = Run::new(json!({"mode": "cancel"}))
        .provider(sim(200))
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        result(&report)["outcomes"],
        json!(["ok", "cancelled", "ok"])
    );
}

#[tokio::test]
async fn schema_calls_return_validated_json() {
    let schema = json!({"type": "object", "properties": {"verdict": {"enum": ["real", "refuted"]}}, "required": ["verdict"]});
    let report = Run::new(json!({"mode": "agent", "schema": schema}))
        .run(&workflow("probe"))
        .await;
    let outcome = result(&report);
    assert!(
        ["real", "refuted"].contains(&outcome["ok"]["json"]["verdict"].as_str().unwrap()),
        "{outcome}"
    );
}

#[tokio::test]
async fn invalid_agent_options_are_refused_before_anything_starts() {
    let cases = [
        (
            json!({"schema": {"type": "array"}}),
            "invalid-input",
            "root must be an object schema",
        ),
        (
            json!({"schema": {"type": "object", "properties": {"a": false}, "required": ["a"]}}),
            "invalid-input",
            "can never be satisfied",
        ),
        (
            json!({"tools": ["shell"]}),
            "denied",
            "unknown agent tool 'shell'",
        ),
        (
            json!({"max_tokens": 1_000_000}),
            "invalid-input",
            "--max-output-tokens",
        ),
    ];
    for (options, kind, message) in cases {
        let mut args = options.clone();
        args["mode"] = json!("agent");
        let report = Run::new(args).run(&workflow("probe")).await;
        let outcome = result(&report);
        assert_eq!(outcome["error"], kind, "{options}: {outcome}");
        assert!(
            outcome["message"].as_str().unwrap().contains(message),
            "{options}: {outcome}"
        );
        assert_eq!(report.agents.started, 0);
    }
}

#[tokio::test]
async fn phases_and_logs_reach_the_events() {
    let run = Run::new(json!({"mode": "phases"}));
    let events = run.events.clone();
    let report = run.run(&workflow("probe")).await;
    result(&report);
    let events = events.events();
    let phases = phases(&events);
    assert!(phases.len() >= 2, "{events:?}");
    let queued_phase = events.iter().find_map(|e| match e {
        RunEvent::AgentQueued { phase, .. } => phase.clone(),
        _ => None,
    });
    assert_eq!(
        queued_phase.as_deref(),
        Some(phases[0].as_str()),
        "agents belong to the current phase"
    );
    assert!(events.iter().any(|e| matches!(e, RunEvent::Log { .. })));
}

#[tokio::test]
async fn workflow_errors_and_crashes_are_told_apart() {
    let report = Run::new(json!({"mode": "fail", "message": "no files to audit"}))
        .run(&workflow("probe"))
        .await;
    assert_eq!(
        report.outcome,
        Err(RunError::Workflow("no files to audit".into()))
    );

    let report = Run::new(json!({"mode": "panic"}))
        .run(&workflow("probe"))
        .await;
    let Err(RunError::Crashed(message)) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        message.contains("unreachable") && message.contains("probe panicked on purpose"),
        "{message}"
    );

    let report = Run::new(json!({"mode": "deadlock"}))
        .run(&workflow("probe"))
        .await;
    let Err(RunError::Workflow(message)) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(message.contains("deadlocked"), "{message}");
}

#[tokio::test]
async fn a_second_process_loads_the_compiled_component_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let first = Runtime::new(config()).unwrap();
    assert!(
        !first
            .load_file(&guest_path("probe"))
            .unwrap()
            .compiled_from_cache()
    );
    let second = Runtime::new(config()).unwrap();
    let loaded = second.load_file(&guest_path("probe")).unwrap();
    assert!(
        loaded.compiled_from_cache(),
        "no Cranelift work the second time"
    );
    let report = Run::new(json!({"mode": "echo"}))
        .run_on(&second, &loaded)
        .await;
    result(&report);
}

#[tokio::test]
async fn the_audit_workflow_runs_over_a_real_directory() {
    let repo = fixture_repo();
    let report = Run::new(json!({"glob": "**/*.rs"}))
        .root(repo.path())
        .run(&workflow("audit-files"))
        .await;
    let outcome = result(&report);
    assert_eq!(
        outcome["files"],
        json!(["src/main.rs", "src/math.rs"]),
        "{outcome}"
    );
    assert!(outcome["summary"].is_string(), "{outcome}");
    assert!(outcome["findings"].is_array(), "{outcome}");
    // One scan per file, one verification per finding, one summary.
    assert!(report.agents.started >= 3, "{:?}", report.agents);
    assert_eq!(report.agents.failed_total(), 0);
}

#[tokio::test]
async fn clocks_and_random_numbers_are_virtual_and_replay_identically() {
    let first = result(
        &Run::new(json!({"mode": "entropy"}))
            .run(&workflow("probe"))
            .await,
    );
    let second = result(
        &Run::new(json!({"mode": "entropy"}))
            .run(&workflow("probe"))
            .await,
    );
    assert_eq!(
        first, second,
        "the same workflow and arguments see the same time and randomness"
    );
    // The virtual wall clock starts at 2025-01-01T00:00:00Z, not at the host's time.
    let wall = first["wall_micros"].as_u64().unwrap();
    assert!(
        (1_735_689_600_000_000..1_735_689_601_000_000).contains(&wall),
        "{first}"
    );
    // The environment is empty: nothing of the host's (API keys included) reaches the guest.
    assert_eq!(first["env_vars"], 0, "{first}");
    assert_eq!(first["cli_args"], 0, "{first}");
    let other = result(
        &Run::new(json!({"mode": "entropy", "salt": 1}))
            .run(&workflow("probe"))
            .await,
    );
    assert_ne!(
        first["random_hash"], other["random_hash"],
        "other arguments, other seed"
    );
}
