//! Workflows in other languages, built by their own standard toolchains and run unchanged:
//! `workflows/python` built by componentize-py (CPython as a component, which imports
//! `wasi:sockets` and creates more core instances than a Rust guest).

use std::sync::Arc;

use corral_host::events::RunEvent;
use serde_json::{Value, json};
use tests::guests::python_workflow;
use tests::support::{Run, fixture_repo, result, runtime};

#[tokio::test]
async fn a_python_workflow_built_by_componentize_py_runs_unchanged() {
    let workflow = runtime()
        .load_file(&python_workflow())
        .unwrap_or_else(|e| panic!("the Python workflow loads: {e}"));
    assert!(
        workflow
            .imports()
            .iter()
            .any(|i| i.starts_with("wasi:sockets/")),
        "componentize-py links sockets: {:?}",
        workflow.imports()
    );
    let repo = fixture_repo();
    let run = Run::new(json!({"glob": "src/*.rs"})).root(repo.path());
    let events = Arc::clone(&run.events);
    let report = run.run(&workflow).await;
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
    assert!(answer["budget"]["spent"].as_u64().unwrap() > 0, "{answer}");

    // The network: both attempts failed inside the guest, which caught them and went on.
    let network = answer["network"].as_str().unwrap();
    assert!(network.contains("create_connection denied"), "{network}");
    assert!(
        network.contains("socket.connect denied: PermissionError"),
        "{network}"
    );
    assert!(!network.contains("NOT denied"), "{network}");

    // Progress, and stdout/stderr captured into the log.
    let phases: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Phase { title } => Some(title.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(phases, ["Scan", "Review", "Summary"]);
    let logs: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::Log { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    for line in [
        "python workflow: glob='src/*.rs' maxFiles=3",
        "python workflow: done, 2 reviews",
    ] {
        assert!(logs.contains(&line), "no log line {line:?} in {logs:?}");
    }
    assert!(
        logs.iter().filter(|l| l.starts_with("network: ")).count() == 2,
        "progress.log and stderr each say it once: {logs:?}"
    );
}
