//! The details of SCRIPT-API.md's script format (issue 11) through the real JavaScript runtime
//! and the real engine: `args` exactly as given (rule 19), `workflow({ scriptPath })` and saved
//! workflows found by name (rule 16), `meta.phases[].model` as the default model of a phase's
//! agents, the warning for a phase `meta.phases` does not list, and `meta.whenToUse` in
//! `corral inspect`.

use std::path::Path;
use std::sync::Arc;

use corral_host::events::{CollectEvents, RunEvent};
use corral_host::provider::sim::SimProvider;
use corral_host::{RunError, RunLimits, RunOptions, RunReport, Workflow};
use serde_json::{Value, json};
use tests::support::{Run, corral, js_runtime, result, runtime, workflow};

/// Runs `workflow` with `args_json` exactly as the host would pass it, with `script` if any.
async fn run_raw(workflow: &Workflow, args_json: &str, script: Option<&str>) -> RunReport {
    runtime()
        .run(
            workflow,
            RunOptions {
                args_json: args_json.to_string(),
                root: None,
                limits: RunLimits::default(),
                provider: Arc::new(SimProvider::default()),
                events: Arc::new(CollectEvents::default()),
                script: script.map(|source| corral_host::Script {
                    name: "workflow.js".to_string(),
                    source: source.to_string(),
                }),
                journal: None,
                stop: None,
                shared: Default::default(),
                load_only: false,
            },
        )
        .await
}

const ARGS_SHAPE: &str =
    "return args === undefined ? 'undefined' : args === null ? 'null' : { given: args }";

#[tokio::test]
async fn rule_19_args_are_undefined_when_none_and_null_for_null() {
    let js = js_runtime();
    for (args_json, expected) in [
        // The host's text for "no arguments".
        ("", json!("undefined")),
        ("null", json!("null")),
        ("0", json!({ "given": 0 })),
        ("{\"a\":null}", json!({ "given": { "a": null } })),
    ] {
        let report = run_raw(&js, args_json, Some(ARGS_SHAPE)).await;
        assert_eq!(result(&report), expected, "args_json {args_json:?}");
    }
    // A Rust guest reads no arguments as `Value::Null`, not as invalid JSON.
    let report = run_raw(&workflow("probe"), "", None).await;
    match &report.outcome {
        Err(RunError::Workflow(message)) => assert!(
            message.contains("probe: the arguments need a string \"mode\""),
            "{message}"
        ),
        other => panic!("expected the probe's own error, got {other:?}"),
    }
}

#[test]
fn rule_19_the_cli_passes_null_as_null_and_no_args_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("shape.js");
    std::fs::write(&script, ARGS_SHAPE).unwrap();
    let script = script.to_str().unwrap();
    for (args, expected) in [
        (Some("null"), "\"null\""),
        (Some("[1]"), "{\"given\":[1]}"),
        (None, "\"undefined\""),
    ] {
        let mut command = corral();
        command.args(["run", script, "-q", "--no-journal"]);
        if let Some(args) = args {
            command.args(["--args", args]);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim_end(),
            expected,
            "--args {args:?}"
        );
    }
}

/// Writes `files` (path, text) under a fresh directory.
fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// A saved workflow with `meta.name` `name` that says which file it is and what args it got.
fn saved(name: &str) -> String {
    format!(
        "export const meta = {{ name: '{name}', description: 'says who it is' }}\n\
         return {{ from: '{name}', args: args === undefined ? 'undefined' : args }}\n"
    )
}

#[tokio::test]
async fn rule_16_workflow_takes_a_script_path_or_the_name_of_a_saved_workflow() {
    let corral_review = saved("corral-review");
    let claude_review = saved("claude-review");
    let claude_triage = saved("claude-triage");
    let plain_review = saved("plain-review");
    let audit = saved("audit-files");
    let helper = saved("helper");
    let hidden = saved("hidden-by-meta");
    let root = root_with(&[
        (".claude/workflows/x.js", &hidden),
        (".corral/workflows/review.js", &corral_review),
        (".claude/workflows/review.js", &claude_review),
        (".claude/workflows/triage.js", &claude_triage),
        ("workflows/review.js", &plain_review),
        ("workflows/audit.js", &audit),
        ("scripts/deep/helper.js", &helper),
    ]);
    let source = "return await Promise.all([\n\
                    workflow({ scriptPath: 'scripts/deep/helper.js' }, { n: 1 }),\n\
                    workflow({ scriptPath: 'scripts/deep/helper.js' }, null),\n\
                    workflow('review'),\n\
                    workflow('triage'),\n\
                    workflow('audit-files', { n: 2 }),\n\
                    workflow('hidden-by-meta'),\n\
                  ])";
    let report = Run::new(Value::Null)
        .script("workflow.js", source)
        .root(root.path())
        .run(&js_runtime())
        .await;
    assert_eq!(
        result(&report),
        json!([
            { "from": "helper", "args": { "n": 1 } },
            { "from": "helper", "args": null },
            // By file name: .corral/workflows/ before .claude/workflows/ before workflows/.
            { "from": "corral-review", "args": "undefined" },
            { "from": "claude-triage", "args": "undefined" },
            // By meta.name, when no file has the name.
            { "from": "audit-files", "args": { "n": 2 } },
            // … in the hidden directories too.
            { "from": "hidden-by-meta", "args": "undefined" },
        ])
    );

    for (call, expected) in [
        (
            "workflow('helper')",
            "WorkflowError [not-found]: workflow(\"helper\"): no such workflow in the run's root \
             (looked for .corral/workflows/helper.js, .claude/workflows/helper.js, \
             workflows/helper.js, a script whose meta.name is \"helper\" in",
        ),
        (
            "workflow({ scriptPath: 'scripts/nope.js' })",
            "ToolError [not-found]: workflow({ scriptPath: \"scripts/nope.js\" }): ",
        ),
        (
            "workflow({ scriptPath: '../outside.js' })",
            "ToolError [denied]: workflow({ scriptPath: \"../outside.js\" }): ",
        ),
    ] {
        let report = Run::new(Value::Null)
            .script("workflow.js", &format!("return await {call}"))
            .root(root.path())
            .run(&js_runtime())
            .await;
        match &report.outcome {
            Err(RunError::Workflow(message)) => {
                assert!(message.starts_with(expected), "{call}:\n{message}")
            }
            other => panic!("{call}: expected a thrown error, got {other:?}"),
        }
    }
}

/// Runs `source` on the simulated provider with `root`, keeping its events.
async fn run_with_events(source: &str, root: Option<&Path>) -> (RunReport, Vec<RunEvent>) {
    let mut run = Run::new(Value::Null).script("workflow.js", source);
    if let Some(root) = root {
        run = run.root(root);
    }
    let events = Arc::clone(&run.events);
    let report = run.run(&js_runtime()).await;
    (report, events.events())
}

/// The phase and model of every agent call that finished, in call order.
fn agent_models(events: &[RunEvent]) -> Vec<(Option<String>, String)> {
    let mut finished: Vec<(u64, Option<String>, String)> = events
        .iter()
        .filter_map(|event| match event {
            RunEvent::AgentFinished {
                id, phase, model, ..
            } => Some((*id, phase.clone(), model.clone())),
            _ => None,
        })
        .collect();
    finished.sort();
    finished
        .into_iter()
        .map(|(_, phase, model)| (phase, model))
        .collect()
}

#[tokio::test]
async fn rule_16_a_phase_model_is_the_default_model_of_the_agents_in_that_phase() {
    let source = "export const meta = { name: 'models', description: 'd', phases: [\n\
                    { title: 'Review', model: 'opus' }, { title: 'Verify', model: 'haiku' }, { title: 'Report' }] }\n\
                  await agent('before any phase')\n\
                  phase('Review')\n\
                  await agent('in review')\n\
                  await agent('in review with its own model', { model: 'sonnet' })\n\
                  await agent('verify, by its option', { phase: 'Verify' })\n\
                  phase('Report')\n\
                  await agent('in report')\n";
    let (report, events) = run_with_events(source, None).await;
    result(&report);
    let phase = |p: &str| Some(p.to_string());
    assert_eq!(
        agent_models(&events),
        [
            (None, "sim-default".to_string()),
            (phase("Review"), "sim-opus".to_string()),
            (phase("Review"), "sim-sonnet".to_string()),
            (phase("Verify"), "sim-haiku".to_string()),
            (phase("Report"), "sim-default".to_string()),
        ]
    );

    // A nested workflow's agents take the models of its own meta.phases.
    let child = "export const meta = { name: 'child', description: 'd', phases: [{ title: 'Review', model: 'haiku' }] }\n\
                 phase('Review')\n\
                 return await agent('child')\n";
    let root = root_with(&[("workflows/child.js", child)]);
    let source = "export const meta = { name: 'parent', description: 'd', phases: [{ title: 'Review', model: 'opus' }] }\n\
                  phase('Review')\n\
                  await agent('parent, before')\n\
                  await workflow('child')\n\
                  await agent('parent, after')\n";
    let (report, events) = run_with_events(source, Some(root.path())).await;
    result(&report);
    let models: Vec<String> = agent_models(&events).into_iter().map(|(_, m)| m).collect();
    assert_eq!(models, ["sim-opus", "sim-haiku", "sim-opus"]);
}

#[tokio::test]
async fn rule_16_a_phase_missing_from_meta_phases_is_warned_about_once() {
    let source = "export const meta = { name: 'phases', description: 'd', phases: [{ title: 'Review' }] }\n\
                  for (const title of ['Review', 'Deploy', 'Review', 'Deploy']) phase(title)\n\
                  log('done')\n";
    let (report, events) = run_with_events(source, None).await;
    result(&report);
    let lines: Vec<String> = events
        .iter()
        .filter_map(|event| match event {
            RunEvent::Phase { title } => Some(format!("phase {title}")),
            RunEvent::Log { message } => Some(format!("log {message}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            "phase Review",
            "phase Deploy",
            "log phase(\"Deploy\"): this title is not in meta.phases (it lists \"Review\"); add \
             { title: \"Deploy\" } to meta.phases so that plans and progress know the phase, or \
             use one of its titles",
            "phase Review",
            "phase Deploy",
            "log done",
        ]
    );
}

#[test]
fn inspect_shows_when_to_use_and_the_phase_models() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("audit.js");
    std::fs::write(
        &script,
        "export const meta = {\n  name: 'audit',\n  description: 'Audits the code',\n  \
         whenToUse: 'Before a release,\\n  or when taking over a code base',\n  \
         phases: [{ title: 'Scan', model: 'haiku' }, { title: 'Report' }],\n}\nreturn 1\n",
    )
    .unwrap();
    let output = corral()
        .args(["inspect", script.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let meta: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("meta:"))
        .collect();
    assert_eq!(
        meta,
        [
            "meta:     { name: 'audit', description: 'Audits the code', whenToUse: 'Before a \
             release,\\n or when taking over a code base', phases: [{ title: 'Scan', model: \
             'haiku' }, { title: 'Report' }], }",
            "whenToUse: Before a release, or when taking over a code base",
            "phases:   Scan (model haiku), Report",
        ],
        "{text}"
    );
}
