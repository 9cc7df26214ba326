//! The JavaScript workflows of `workflows/*.js`, each run offline on the simulated provider over
//! the fixture repository, through the real JavaScript runtime and engine.
//!
//! The simulated provider's answers are schema-valid but arbitrary (array lengths, booleans and
//! enums are picked from a hash of the prompt), so these tests check what must hold whatever it
//! answers: the shape of the result, and that the number of agents matches what the result says
//! was done.

use std::sync::Arc;

use corral_host::RunReport;
use corral_host::events::RunEvent;
use serde_json::{Value, json};
use tests::guests::workspace_root;
use tests::support::{Run, fixture_repo, js_runtime, logs, result};

/// Every `workflows/*.js` file, each run by a test below; `every_js_workflow_is_run_by_a_test`
/// keeps this list honest.
const RUN_BY_A_TEST: &[&str] = &[
    "audit.js",
    "judge-panel.js",
    // Run end to end in `changes::migrate_keeps_the_rewrites_whose_tests_pass_and_apply_writes_exactly_those`.
    "migrate.js",
    "review-changes.js",
    "review-diff.js",
    "rubric-retry.js",
];

fn source(file: &str) -> String {
    let path = workspace_root().join("workflows").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Runs `workflows/<file>` over a fresh fixture repository.
async fn run_workflow(file: &str, args: Value) -> (RunReport, Vec<RunEvent>) {
    let repo = fixture_repo();
    run_workflow_in(file, args, |run| run.root(repo.path())).await
}

async fn run_workflow_in(
    file: &str,
    args: Value,
    configure: impl FnOnce(Run) -> Run,
) -> (RunReport, Vec<RunEvent>) {
    let run = configure(Run::new(args).script(file, &source(file)));
    let events = Arc::clone(&run.events);
    let report = run.run(&js_runtime()).await;
    (report, events.events())
}

/// The phases of the agent calls, in the order they were queued.
fn agent_phases(events: &[RunEvent]) -> Vec<Option<String>> {
    events
        .iter()
        .filter_map(|event| match event {
            RunEvent::AgentQueued { phase, .. } => Some(phase.clone()),
            _ => None,
        })
        .collect()
}

fn count(phases: &[Option<String>], phase: &str) -> usize {
    phases
        .iter()
        .filter(|p| p.as_deref() == Some(phase))
        .count()
}

fn array(value: &Value) -> &Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array: {value}"))
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("expected a count: {value}"))
}

#[test]
fn every_js_workflow_is_run_by_a_test() {
    let dir = workspace_root().join("workflows");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".js"))
        .collect();
    found.sort();
    assert_eq!(
        found, RUN_BY_A_TEST,
        "a workflow was added or removed: run it in a test here and list it"
    );
    // Each one's meta names it after its file.
    for file in RUN_BY_A_TEST {
        let stem = file.trim_end_matches(".js");
        assert!(
            source(file).starts_with(&format!("export const meta = {{\n  name: '{stem}',")),
            "{file}: meta.name must be '{stem}'"
        );
    }
}

#[tokio::test]
async fn review_changes_is_the_spec_example_and_keeps_only_verified_findings() {
    let (report, events) = run_workflow("review-changes.js", Value::Null).await;
    let findings = result(&report);
    let phases = agent_phases(&events);
    // Two reviewers, then one verifier per finding; only findings judged real are returned.
    assert_eq!(count(&phases, "Review"), 2);
    let verified = count(&phases, "Verify");
    assert!((2..=4).contains(&verified), "{phases:?}");
    assert_eq!(phases.len(), 2 + verified);
    assert_eq!(report.agents.started as usize, phases.len());
    assert!(array(&findings).len() <= verified);
    for finding in array(&findings) {
        assert!(finding["title"].is_string(), "{finding}");
        assert_eq!(finding["verdict"], json!({ "real": true }));
    }
}

#[tokio::test]
async fn audit_audits_each_file_and_verifies_each_finding() {
    let (report, events) = run_workflow("audit.js", Value::Null).await;
    let outcome = result(&report);
    // The ignored target/ directory is not audited.
    assert_eq!(outcome["pattern"], "**/*.rs");
    assert_eq!(outcome["files"], 2);
    assert_eq!(outcome["failed"], json!([]));
    let findings = number(&outcome["findings"]);
    let confirmed = array(&outcome["confirmed"]);
    assert_eq!(
        confirmed.len() as u64 + number(&outcome["rejected"]) + number(&outcome["unverified"]),
        findings
    );
    for finding in confirmed {
        assert!(
            ["src/main.rs", "src/math.rs"].contains(&finding["path"].as_str().unwrap()),
            "{finding}"
        );
        assert!(number(&finding["line"]) >= 1, "{finding}");
        assert!(
            ["low", "medium", "high"].contains(&finding["severity"].as_str().unwrap()),
            "{finding}"
        );
        assert!(
            finding["title"].is_string() && finding["reason"].is_string(),
            "{finding}"
        );
    }
    // Sorted most severe first.
    let rank = |f: &Value| match f["severity"].as_str().unwrap() {
        "high" => 0,
        "medium" => 1,
        _ => 2,
    };
    assert!(confirmed.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));
    // One auditor per file, one verifier per finding.
    let phases = agent_phases(&events);
    assert_eq!(count(&phases, "Audit"), 2);
    assert_eq!(count(&phases, "Verify") as u64, findings);
    assert_eq!(report.agents.started, 2 + findings);
    assert!(
        events.contains(&RunEvent::Log {
            message: "auditing 2 file(s) matching **/*.rs".to_string()
        }),
        "{events:?}"
    );

    // A pattern that matches nothing is an empty report, with no agent.
    let (report, _) = run_workflow("audit.js", json!({ "glob": "**/*.py" })).await;
    assert_eq!(result(&report)["files"], 0);
    assert_eq!(report.agents.started, 0);
}

#[tokio::test]
async fn review_diff_reviews_every_dimension_and_challenges_every_finding_twice() {
    let (report, events) = run_workflow("review-diff.js", Value::Null).await;
    let outcome = result(&report);
    // The fixture's uncommitted change is in src/main.rs.
    assert_eq!(outcome["files"], json!(["src/main.rs"]));
    assert_eq!(
        outcome["dimensions"],
        json!(["correctness", "security", "performance", "maintainability"])
    );
    let findings = array(&outcome["findings"]);
    let total = findings.len() as u64 + number(&outcome["refuted"]);
    for finding in findings {
        assert!(
            ["minor", "major", "critical"].contains(&finding["severity"].as_str().unwrap()),
            "{finding}"
        );
        assert_eq!(array(&finding["rebuttals"]).len(), 2, "{finding}");
        assert!(finding["dimension"].is_string(), "{finding}");
    }
    assert!(outcome["summary"].is_string());
    // Four reviewers, two challengers per finding, one summary.
    let phases = agent_phases(&events);
    assert_eq!(count(&phases, "Review"), 4);
    assert_eq!(count(&phases, "Challenge") as u64, 2 * total);
    assert_eq!(count(&phases, "Report"), 1);
    assert_eq!(report.agents.started, 4 + 2 * total + 1);

    // A committed range works too; a range with no change needs no agent.
    let (report, _) = run_workflow(
        "review-diff.js",
        json!({ "range": "HEAD~1..HEAD", "dimensions": [{ "name": "correctness", "ask": "bugs" }] }),
    )
    .await;
    let outcome = result(&report);
    assert_eq!(outcome["files"], json!(["src/math.rs"]));
    assert_eq!(outcome["dimensions"], json!(["correctness"]));
    let (report, _) = run_workflow("review-diff.js", json!({ "range": "HEAD..HEAD" })).await;
    assert_eq!(result(&report)["summary"], "nothing to review");
    assert_eq!(report.agents.started, 0);
}

#[tokio::test]
async fn judge_panel_scores_every_attempt_with_every_judge_and_keeps_the_best() {
    let (report, events) =
        run_workflow("judge-panel.js", json!({ "attempts": 4, "judges": 3 })).await;
    let outcome = result(&report);
    let ranking = array(&outcome["ranking"]);
    assert_eq!(ranking.len(), 4);
    for entry in ranking {
        let scores = array(&entry["scores"]);
        assert_eq!(scores.len(), 3, "{entry}");
        assert!(
            scores.iter().all(|s| (1..=10).contains(&number(s))),
            "{entry}"
        );
        let mean = scores.iter().map(number).sum::<u64>() as f64 / 3.0;
        assert!(
            (entry["mean"].as_f64().unwrap() - mean).abs() < 0.01,
            "{entry}"
        );
    }
    // Ranked best first, ties to the earlier attempt; the best keeps its answer.
    assert!(ranking.windows(2).all(|w| {
        let (a, b) = (
            w[0]["mean"].as_f64().unwrap(),
            w[1]["mean"].as_f64().unwrap(),
        );
        a > b || (a == b && number(&w[0]["attempt"]) < number(&w[1]["attempt"]))
    }));
    assert_eq!(outcome["best"]["attempt"], ranking[0]["attempt"]);
    assert_eq!(outcome["best"]["mean"], ranking[0]["mean"]);
    assert!(
        outcome["best"]["answer"]
            .as_str()
            .unwrap()
            .contains("[simulated"),
        "{outcome}"
    );
    let phases = agent_phases(&events);
    assert_eq!(count(&phases, "Attempt"), 4);
    assert_eq!(count(&phases, "Judge"), 12);
    assert_eq!(report.agents.started, 16);

    // Defaults: 3 attempts, 3 judges; bad arguments are refused before any agent starts.
    let (report, _) = run_workflow("judge-panel.js", Value::Null).await;
    assert_eq!(array(&result(&report)["ranking"]).len(), 3);
    assert_eq!(report.agents.started, 3 + 9);
    let (report, _) = run_workflow("judge-panel.js", json!({ "attempts": 0 })).await;
    let Err(corral_host::RunError::Workflow(message)) = &report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert!(
        message.starts_with("RangeError: args.attempts must be a whole number from 1 to 8, not 0"),
        "{message}"
    );
    assert_eq!(report.agents.started, 0);
}

#[tokio::test]
async fn rubric_retry_revises_until_every_criterion_passes_or_attempts_run_out() {
    for max_attempts in [1_u64, 4] {
        let (report, events) =
            run_workflow("rubric-retry.js", json!({ "maxAttempts": max_attempts })).await;
        let outcome = result(&report);
        let attempts = number(&outcome["attempts"]);
        let history = array(&outcome["history"]);
        assert!((1..=max_attempts).contains(&attempts), "{outcome}");
        assert_eq!(history.len() as u64, attempts);
        for (i, round) in history.iter().enumerate() {
            assert_eq!(number(&round["attempt"]), i as u64 + 1);
            assert_eq!(
                number(&round["passed"]) + array(&round["failed"]).len() as u64,
                3,
                "{round}"
            );
        }
        let last_failed = array(&history.last().unwrap()["failed"]).len();
        if outcome["passed"] == true {
            assert_eq!(last_failed, 0);
        } else {
            // It only gives up once every attempt is spent.
            assert_eq!(outcome["passed"], false);
            assert!(last_failed > 0);
            assert_eq!(attempts, max_attempts);
        }
        assert!(outcome["answer"].as_str().unwrap().contains("[simulated"));
        // One writer and three graders per round.
        let phases = agent_phases(&events);
        assert_eq!(count(&phases, "Draft") as u64, attempts);
        assert_eq!(count(&phases, "Grade") as u64, 3 * attempts);
        assert_eq!(report.agents.started, 4 * attempts);
    }

    // A budget too small for another round stops the revisions, and says so. (This one cannot
    // even pay for every grader of the first round: a grader without a verdict fails its
    // criterion.)
    let repo = fixture_repo();
    let (report, events) =
        run_workflow_in("rubric-retry.js", json!({ "maxAttempts": 10 }), |run| {
            run.root(repo.path())
                .limits(|l| l.budget_tokens = Some(15_000))
        })
        .await;
    let outcome = result(&report);
    assert_eq!(outcome["passed"], false, "{outcome}");
    assert_eq!(outcome["attempts"], 1, "{outcome}");
    assert!(report.spent_tokens <= 15_000);
    let logs = logs(&events);
    assert!(
        logs.iter()
            .any(|l| l.starts_with("stopping after 1 attempt(s): ")),
        "{logs:?}"
    );
}
