//! Workflows in other languages, built by their own standard toolchains and run unchanged:
//! `workflows/python` built by componentize-py (CPython as a component, which imports
//! `wasi:sockets` and creates more core instances than a Rust guest) and `workflows/js-component`
//! built by componentize-js (StarlingMonkey, which imports `wasi:http` for `fetch`).

use std::path::Path;
use std::sync::Arc;

use corral_host::events::RunEvent;
use corral_host::{RunError, Workflow};
use serde_json::{Value, json};
use tests::guests::{js_component_workflow, python_workflow};
use tests::support::{Run, fixture_repo, logs, phases, result, runtime};

/// Runs `workflow` over the fixture repository and checks what both example workflows do alike:
/// tools, the start/wait fan-out and the call, the budget, the phases and the log. Returns the
/// result for the checks particular to a language.
async fn run_example(workflow: &Arc<Workflow>, name: &str) -> Value {
    let repo = fixture_repo();
    let run = Run::new(json!({"glob": "src/*.rs"})).root(repo.path());
    let events = Arc::clone(&run.events);
    let report = run.run(workflow).await;
    let answer = result(&report);
    let events = events.events();

    // Tools: glob, grep and read over the root.
    assert_eq!(
        answer["files"],
        json!(["src/main.rs", "src/math.rs"]),
        "{answer}"
    );
    assert_eq!(answer["todoHits"], 1, "{answer}");
    // A fan-out of one reviewer per file (start, then wait), then one summary (call).
    let reviews = answer["reviews"].as_object().unwrap();
    assert_eq!(reviews.len(), 2, "{answer}");
    assert!(reviews.values().all(Value::is_string), "{answer}");
    assert!(answer["summary"].is_string(), "{answer}");
    let finished = events
        .iter()
        .filter(|e| matches!(e, RunEvent::AgentFinished { error: None, .. }))
        .count();
    assert_eq!(finished, 3);
    assert_eq!(
        answer["budget"]["spent"].as_u64(),
        Some(report.spent_tokens),
        "{answer}"
    );
    assert!(report.spent_tokens > 0);

    // Progress, and stdout/stderr captured into the log.
    assert_eq!(phases(&events), ["Scan", "Review", "Summary"]);
    let logs = logs(&events);
    for line in [
        format!("{name} workflow: glob='src/*.rs' maxFiles=3"),
        format!("{name} workflow: done, 2 reviews"),
    ] {
        assert!(logs.contains(&line), "no log line {line:?} in {logs:?}");
    }
    assert!(
        logs.iter().filter(|l| l.starts_with("network: ")).count() == 2,
        "progress.log and stderr each say it once: {logs:?}"
    );
    assert!(!answer["network"].as_str().unwrap().contains("NOT denied"));
    answer
}

/// Loads an example workflow built by another toolchain, which links `linked` (a WASI interface
/// the host denies every use of).
fn load_example(path: &Path, linked: &str) -> Arc<Workflow> {
    let workflow = runtime()
        .load_file(path)
        .unwrap_or_else(|e| panic!("{} loads: {e}", path.display()));
    assert!(
        workflow.imports().iter().any(|i| i.starts_with(linked)),
        "{} links {linked}: {:?}",
        path.display(),
        workflow.imports()
    );
    workflow
}

#[tokio::test]
async fn a_python_workflow_built_by_componentize_py_runs_unchanged() {
    let workflow = load_example(&python_workflow(), "wasi:sockets/");
    let answer = run_example(&workflow, "python").await;

    // The network: both attempts failed inside the guest, which caught them and went on.
    let network = answer["network"].as_str().unwrap();
    assert!(network.contains("create_connection denied"), "{network}");
    assert!(
        network.contains("socket.connect denied: PermissionError"),
        "{network}"
    );
}

#[tokio::test]
async fn a_javascript_workflow_built_by_componentize_js_runs_unchanged() {
    let workflow = load_example(&js_component_workflow(), "wasi:http/outgoing-handler");
    let answer = run_example(&workflow, "js-component").await;

    // `fetch` was refused by the host's deny-all wasi:http and the guest caught the rejection.
    let network = answer["network"].as_str().unwrap();
    assert!(
        network.starts_with("denied: TypeError: NetworkError"),
        "{network}"
    );

    // A string the workflow throws is the run's error, as the WIT `err` case.
    let repo = fixture_repo();
    let report = Run::new(json!({"glob": "["}))
        .root(repo.path())
        .run(&workflow)
        .await;
    match &report.outcome {
        Err(RunError::Workflow(message)) => {
            assert!(message.starts_with("glob failed: "), "{message}");
        }
        other => panic!("expected the workflow's own error, got {other:?}"),
    }
}
