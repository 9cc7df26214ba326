//! SCRIPT-API.md, rule by rule, through the real JavaScript runtime component and the real
//! engine: one test per rule (named after it), snapshots of every error the front end reports
//! before a run starts, and scripts that misbehave on purpose.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use corral_host::agent_loop::SUBMIT_TOOL;
use corral_host::events::RunEvent;
use corral_host::provider::sim::SimProvider;
use corral_host::provider::{
    Block, BoxFuture, ChatRequest, ChatResponse, Provider, ProviderError, StopReason, Usage,
};
use corral_host::{LimitExceeded, RunError, RunReport};
use expect_test::{Expect, expect};
use serde_json::{Value, json};
use tests::support::{Run, fixture_repo, js_runtime, logs, result, run_js, sim};

/// The message of a run that failed with a thrown error.
#[track_caller]
fn thrown(report: &RunReport) -> &str {
    match &report.outcome {
        Err(RunError::Workflow(message)) => message,
        other => panic!("expected a thrown error, got {other:?}"),
    }
}

/// Runs `source` on the simulated provider with `args` and `root`, keeping its events.
async fn run_with_events(
    source: &str,
    args: Value,
    root: Option<&Path>,
) -> (RunReport, Vec<RunEvent>) {
    let mut run = Run::new(args).script("workflow.js", source);
    if let Some(root) = root {
        run = run.root(root);
    }
    let events = Arc::clone(&run.events);
    let report = run.run(&js_runtime()).await;
    (report, events.events())
}

/// Answers like the simulated provider, except that a prompt containing `provider-failure`
/// fails for good and a schema call whose prompt contains `always-invalid` submits an invalid
/// object every time. Counts requests.
#[derive(Default)]
struct ScriptedProvider {
    sim: SimProvider,
    requests: AtomicU64,
}

impl Provider for ScriptedProvider {
    fn name(&self) -> &str {
        "scripted"
    }

    fn resolve_model(&self, requested: Option<&str>) -> String {
        self.sim.resolve_model(requested)
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let prompt = request.messages.first().map_or(String::new(), |message| {
            message
                .content
                .iter()
                .filter_map(|block| match block {
                    Block::Text(text) => Some(text.as_str()),
                    _ => None,
                })
                .collect()
        });
        if prompt.contains("provider-failure") {
            return Box::pin(async {
                Err(ProviderError::fatal("scripted", "the account is suspended"))
            });
        }
        if prompt.contains("always-invalid") {
            return Box::pin(async move {
                Ok(ChatResponse {
                    content: vec![Block::ToolUse {
                        id: format!("call-{}", request.messages.len()),
                        name: SUBMIT_TOOL.to_string(),
                        input: json!({ "wrong": true }),
                    }],
                    stop: StopReason::ToolUse,
                    usage: Usage {
                        input_tokens: 10,
                        output_tokens: 5,
                        ..Usage::default()
                    },
                    model: request.model.clone(),
                })
            });
        }
        self.sim.complete(request)
    }
}

// ---- Script shape -------------------------------------------------------------------------------

#[tokio::test]
async fn rule_01_meta_is_a_pure_literal_with_a_name_and_a_description() {
    let meta = json!({
        "name": "full-meta",
        "description": "Uses every meta field",
        "whenToUse": "in tests",
        "phases": [{ "title": "Review", "detail": "read it", "model": "haiku" }, { "title": "Verify" }],
    });
    let source = "export const meta = {\n  name: 'full-meta', description: `Uses every meta field`, \
                  whenToUse: \"in tests\",\n  phases: [{ title: 'Review', detail: 'read it', model: \
                  'haiku' }, { title: 'Verify' }],\n}\nreturn meta";
    assert_eq!(result(&run_js(source, Value::Null).await), meta);
    // Meta is optional.
    assert_eq!(result(&run_js("return 1", Value::Null).await), json!(1));

    for (source, expected) in [
        (
            "const NAME = 'x'\nexport const meta = { name: NAME, description: 'd' }",
            "workflow.js:2:1: `export const meta = { ... }` must be the first statement",
        ),
        (
            "export const meta = { name: 'x', description: 'd', phases: PHASES }",
            "workflow.js:1:60: `PHASES` is a variable or expression",
        ),
        (
            "export const meta = { name: 'x', description: 'd', ...extra }",
            "workflow.js:1:52: a spread (`...`)",
        ),
        (
            "export const meta = { name: 'x', description: 'd', when: f() }",
            "workflow.js:1:58: `f` is a variable or expression",
        ),
        (
            "export const meta = { name: 'x', description: `v${1}` }",
            "workflow.js:1:47: a template with `${}` substitutions",
        ),
        (
            "export const meta = { name: 'x' }",
            "workflow.js:1:21: meta.description is required",
        ),
        (
            "export const meta = { description: 'd' }",
            "workflow.js:1:21: meta.name is required",
        ),
        (
            "export const meta = { name: 'x', description: 'd', phases: [{ detail: 'no title' }] }",
            "workflow.js:1:21: meta.phases[0].title is required",
        ),
    ] {
        let (report, events) = run_with_events(
            &format!("{source}\nlog('the script ran')"),
            Value::Null,
            None,
        )
        .await;
        match &report.outcome {
            Err(RunError::Script(message)) => {
                assert!(message.starts_with(expected), "{source}:\n{message}")
            }
            other => panic!("{source}: expected an error before the run, got {other:?}"),
        }
        assert!(logs(&events).is_empty(), "{source}: the script ran");
    }
}

#[tokio::test]
async fn rule_02_top_level_await_and_return_give_the_result() {
    let report = run_js(
        "const answer = await agent('say hello')\nconst n = await Promise.resolve(41)\n\
         if (n > 40) return { n: n + 1, answered: typeof answer, list: [1, 'two', null, true] }\n\
         return 'not reached'",
        Value::Null,
    )
    .await;
    assert_eq!(
        result(&report),
        json!({ "n": 42, "answered": "string", "list": [1, "two", null, true] })
    );
    assert_eq!(report.agents.started, 1);
    // No `return` is a null result; a value JSON cannot hold is an error that says so.
    assert_eq!(
        result(&run_js("const x = 1", Value::Null).await),
        Value::Null
    );
    let report = run_js("return { big: 10n }", Value::Null).await;
    assert!(
        thrown(&report).contains("the workflow's result cannot be turned into JSON"),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn rule_03_import_require_and_typescript_fail_before_the_run_with_line_and_column() {
    for (source, position) in [
        (
            "import fs from 'fs'",
            "workflow.js:2:1: `import` is not supported",
        ),
        (
            "const m = await import('./other.js')",
            "workflow.js:2:17: dynamic `import()` is not supported",
        ),
        (
            "const fs = require('fs')",
            "workflow.js:2:12: `require()` is not supported",
        ),
        ("const n: number = 1", "workflow.js:2:8: SyntaxError"),
        (
            "interface Finding { title: string }",
            "workflow.js:2:1: SyntaxError",
        ),
        ("const x = (1 + ;", "workflow.js:2:16: SyntaxError"),
    ] {
        // The log line before the bad statement shows that nothing ran.
        let (report, events) = run_with_events(
            &format!("log('the script ran')\n{source}"),
            Value::Null,
            None,
        )
        .await;
        match &report.outcome {
            Err(RunError::Script(message)) => {
                assert!(message.starts_with(position), "{source}:\n{message}")
            }
            other => panic!("{source}: expected an error before the run, got {other:?}"),
        }
        assert!(logs(&events).is_empty(), "{source}: the script ran");
        assert_eq!(report.agents.started, 0);
    }
    // Names that merely look like the forbidden ones are fine.
    let report = run_js(
        "const o = { import: 1, require: 2 }\nreturn o.import + o.require",
        Value::Null,
    )
    .await;
    assert_eq!(result(&report), json!(3));
}

#[tokio::test]
async fn rule_04_no_clock_no_randomness_no_timers_but_explicit_dates_work() {
    for (expression, says) in [
        ("Date.now()", "Date.now() is not available in a workflow"),
        (
            "Math.random()",
            "Math.random() is not available in a workflow",
        ),
        (
            "new Date()",
            "new Date() without an argument is not available",
        ),
        ("Date()", "Date() without `new` is not available"),
        ("setTimeout(() => {}, 10)", "setTimeout() is not available"),
        ("fetch('https://example.com')", "fetch() is not available"),
    ] {
        let report = run_js(&format!("return {expression}"), Value::Null).await;
        let message = thrown(&report);
        assert!(message.contains(says), "{expression}: {message}");
        assert!(
            message.contains("deterministic") || message.contains("there is no"),
            "{message}"
        );
        // A script can catch it, like any error.
        let caught = run_js(
            &format!("try {{ {expression}; return 'no error' }} catch (e) {{ return e.name }}"),
            Value::Null,
        )
        .await;
        assert_eq!(result(&caught), json!("Error"), "{expression}");
    }
    let report = run_js(
        "const d = new Date(Date.UTC(2024, 1, 29))\n\
         return [new Date(0).toISOString(), new Date('2024-03-01T12:00:00Z').getTime(),\n\
                 d.toISOString(), d instanceof Date, typeof process, typeof require]",
        Value::Null,
    )
    .await;
    assert_eq!(
        result(&report),
        json!([
            "1970-01-01T00:00:00.000Z",
            1_709_294_400_000_u64,
            "2024-02-29T00:00:00.000Z",
            true,
            "undefined",
            "undefined"
        ])
    );
}

#[tokio::test]
async fn rule_05_args_is_the_parsed_json_of_the_run_arguments() {
    let args = json!({ "files": ["a.rs", "b.rs"], "depth": 2, "strict": true, "note": null });
    let report = run_js(
        "return { args, files: args.files.length, depth: args.depth * 2 }",
        args.clone(),
    )
    .await;
    assert_eq!(
        result(&report),
        json!({ "args": args, "files": 2, "depth": 4 })
    );
    // `null` is passed as `null` (no arguments at all, `undefined`, is rule 19's test).
    let report = run_js("return [typeof args, args === null]", Value::Null).await;
    assert_eq!(result(&report), json!(["object", true]));
    let report = run_js("return args", json!([1, "two"])).await;
    assert_eq!(result(&report), json!([1, "two"]));
}

// ---- Functions ------------------------------------------------------------------------------

#[tokio::test]
async fn rule_06_agent_resolves_to_text_or_to_the_validated_object() {
    let source = r#"
const VERDICT = { type: 'object', properties: {
  real: { type: 'boolean' }, severity: { enum: ['low', 'high'] }, why: { type: 'string' } },
  required: ['real', 'severity', 'why'] }
const text = await agent('Summarise the change.')
const verdict = await agent('Judge the change.', {
  schema: VERDICT, label: 'judge', phase: 'Verify', model: 'haiku', effort: 'high',
  tools: ['read', 'grep'], maxTokens: 500, maxTurns: 3, timeoutMs: 60000 })
return { text, verdict }
"#;
    let repo = fixture_repo();
    let (report, events) = run_with_events(source, Value::Null, Some(repo.path())).await;
    let outcome = result(&report);
    let text = outcome["text"].as_str().unwrap();
    assert!(text.contains("Summarise the change."), "{text}");
    let verdict = &outcome["verdict"];
    assert!(verdict["real"].is_boolean(), "{verdict}");
    assert!(
        ["low", "high"].contains(&verdict["severity"].as_str().unwrap()),
        "{verdict}"
    );
    assert!(verdict["why"].is_string(), "{verdict}");
    assert!(events.contains(&RunEvent::AgentQueued {
        id: 2,
        label: Some("judge".to_string()),
        phase: Some("Verify".to_string()),
    }));
    assert!(events.iter().any(|event| matches!(event,
        RunEvent::AgentFinished { id: 2, error: None, model, .. } if model == "sim-haiku")));

    // A schema that can never be satisfied throws before any agent starts.
    let report = run_js(
        "try {\n  await agent('x', { schema: { type: 'object', properties: { n: { type: 'integer', \
         minimum: 5, maximum: 1 } }, required: ['n'] } })\n} catch (e) { return [e.code, e.message] }",
        Value::Null,
    )
    .await;
    let outcome = result(&report);
    assert_eq!(outcome[0], "invalid-input");
    assert!(
        outcome[1]
            .as_str()
            .unwrap()
            .contains("can never be satisfied"),
        "{outcome}"
    );
    assert_eq!(report.agents.started, 0);

    // Bad options are a TypeError that names the option.
    let report = run_js("await agent('x', { effort: 'extreme' })", Value::Null).await;
    assert!(
        thrown(&report).starts_with("TypeError: agent(prompt, opts): opts.effort must be one of"),
        "{:?}",
        report.outcome
    );
    let report = run_js("await agent(42)", Value::Null).await;
    assert!(
        thrown(&report).contains("prompt must be a string, not number"),
        "{:?}",
        report.outcome
    );

    // Output that never matches the schema goes back to the model, up to 5 attempts, then throws
    // with the last validation error.
    let provider = Arc::new(ScriptedProvider::default());
    let report = Run::new(Value::Null)
        .script(
            "workflow.js",
            "try {\n  await agent('always-invalid', { schema: { type: 'object', properties: { ok: \
             { type: 'boolean' } }, required: ['ok'] } })\n} catch (e) { return [e.code, e.message] }",
        )
        .provider(provider.clone())
        .run(&js_runtime())
        .await;
    let outcome = result(&report);
    assert_eq!(outcome[0], "schema-mismatch", "{outcome}");
    assert!(outcome[1].as_str().unwrap().contains("ok"), "{outcome}");
    assert_eq!(provider.requests.load(Ordering::SeqCst), 5);

    // A terminal provider error resolves to null, and the progress log says why.
    let provider = Arc::new(ScriptedProvider::default());
    let run = Run::new(Value::Null)
        .script(
            "workflow.js",
            "const a = await agent('provider-failure', { label: 'doomed' })\n\
             const b = await agent('fine')\nreturn [a, typeof b]",
        )
        .provider(provider);
    let events = Arc::clone(&run.events);
    let report = run.run(&js_runtime()).await;
    assert_eq!(result(&report), json!([null, "string"]));
    let logs = logs(&events.events());
    assert!(
        logs.iter()
            .any(|l| l.starts_with("agent 'doomed' returned null:") && l.contains("suspended")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn rule_07_parallel_waits_for_every_thunk_and_a_throwing_thunk_yields_null() {
    let source = r#"
const results = await parallel([
  () => agent('first'),
  () => { throw new Error('sync failure') },
  async () => { await agent('before failing'); throw new TypeError('async failure') },
  () => agent('last').then(text => text.length > 0),
  () => 'plain value',
  agent('a promise instead of a thunk'),
])
return results.map(r => r === null ? null : typeof r === 'string' ? 'text' : r)
"#;
    let run = Run::new(Value::Null)
        .script("workflow.js", source)
        .provider(sim(20));
    let events = Arc::clone(&run.events);
    let report = run.run(&js_runtime()).await;
    // Every slot is settled (a barrier), in the order of the thunks.
    assert_eq!(
        result(&report),
        json!(["text", null, null, true, "text", "text"])
    );
    assert_eq!(report.agents.started, 4);
    let logs = logs(&events.events());
    assert!(
        logs.contains(
            &"parallel failed for item 1, which becomes null: Error: sync failure".to_string()
        ),
        "{logs:?}"
    );
    assert!(
        logs.contains(
            &"parallel failed for item 2, which becomes null: TypeError: async failure".to_string()
        ),
        "{logs:?}"
    );
    // It never rejects, even when every thunk throws; an empty list is an empty result.
    let report = run_js(
        "return [await parallel([() => { throw 1 }, () => Promise.reject(2)]), await parallel([])]",
        Value::Null,
    )
    .await;
    assert_eq!(result(&report), json!([[null, null], []]));
    let report = run_js("await parallel('not a list')", Value::Null).await;
    assert!(
        thrown(&report).starts_with(
            "TypeError: parallel(thunks): the first argument must be an array, not string"
        ),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn rule_08_pipeline_has_no_barrier_keeps_item_order_and_nulls_failed_items() {
    // Item `fast` needs one agent call in stage 1, item `slow` needs two in a row: `fast` enters
    // stage 2 while `slow` is still in stage 1.
    let source = r#"
const seen = []
const results = await pipeline(['fast', 'slow', 'broken'],
  async (prev, item, index) => {
    seen.push(['stage 1', prev, item, index])
    if (item === 'broken') throw new Error('stage 1 cannot handle it')
    await agent(`first ${item}`)
    if (item === 'slow') await agent('second slow')
    log(`stage 1 done: ${item}`)
    return `${item}:1`
  },
  (prev, item, index) => {
    log(`stage 2 start: ${item}`)
    seen.push(['stage 2', prev, item, index])
    return { prev, item, index }
  },
  (prev, item, index) => `${prev.prev}:${item}:${index}:3`,
)
return { results, seen }
"#;
    let run = Run::new(Value::Null)
        .script("workflow.js", source)
        .provider(sim(20));
    let events = Arc::clone(&run.events);
    let report = run.run(&js_runtime()).await;
    let outcome = result(&report);
    // Results in item order; the item whose stage threw is null and skipped its later stages.
    assert_eq!(
        outcome["results"],
        json!(["fast:1:fast:0:3", "slow:1:slow:1:3", null])
    );
    // Each stage is called as stage(previousResult, originalItem, index).
    assert_eq!(
        outcome["seen"],
        json!([
            ["stage 1", "fast", "fast", 0],
            ["stage 1", "slow", "slow", 1],
            ["stage 1", "broken", "broken", 2],
            ["stage 2", "fast:1", "fast", 0],
            ["stage 2", "slow:1", "slow", 1],
        ])
    );
    let logs = logs(&events.events());
    let at = |line: &str| {
        logs.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no log line {line:?} in {logs:?}"))
    };
    assert!(
        at("stage 2 start: fast") < at("stage 1 done: slow"),
        "no barrier: {logs:?}"
    );
    assert!(
        logs.iter().any(|l| l
            == "pipeline stage 1 failed for item 2, which becomes null: Error: stage 1 cannot handle it"),
        "{logs:?}"
    );
    assert_eq!(report.agents.started, 3);
    let report = run_js("await pipeline([1], x => x, 'not a stage')", Value::Null).await;
    assert!(
        thrown(&report).contains("stage 2 must be a function, not string"),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn rule_09_parallel_and_pipeline_refuse_more_than_4096_items() {
    let report = run_js(
        "const n = await parallel(Array.from({ length: 4096 }, (_, i) => () => i))\n\
         const m = await pipeline(Array.from({ length: 4096 }, (_, i) => i), x => x + 1)\n\
         return [n.length, n[4095], m.length, m[4095]]",
        Value::Null,
    )
    .await;
    assert_eq!(result(&report), json!([4096, 4095, 4096, 4096]));
    for call in [
        "parallel(Array.from({ length: 4097 }, () => () => agent('x')))",
        "pipeline(Array.from({ length: 4097 }, (_, i) => i), x => agent(`x${x}`))",
    ] {
        let report = run_js(&format!("await {call}"), Value::Null).await;
        let message = thrown(&report);
        assert!(
            message.starts_with("RangeError: ")
                && message.contains("4097 items is more than the limit of 4096; process them in batches of at most 4096"),
            "{message}"
        );
        assert_eq!(report.agents.started, 0, "{call}");
    }
}

#[tokio::test]
async fn rule_10_phase_groups_later_agents_and_log_writes_progress() {
    let source = r#"
agent('before any phase')
phase('Review')
await agent('in review')
await agent('explicitly verify', { phase: 'Verify' })
phase('Report')
await agent('in report')
log('done:', 3, 'agents', { ok: true }, [1, 2])
"#;
    let (report, events) = run_with_events(source, Value::Null, None).await;
    result(&report);
    let phases: Vec<(&str, Option<&str>)> = events
        .iter()
        .filter_map(|event| match event {
            RunEvent::Phase { title } => Some(("phase", Some(title.as_str()))),
            RunEvent::AgentQueued { phase, .. } => Some(("agent", phase.as_deref())),
            _ => None,
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("agent", None),
            ("phase", Some("Review")),
            ("agent", Some("Review")),
            ("agent", Some("Verify")),
            ("phase", Some("Report")),
            ("agent", Some("Report")),
        ]
    );
    assert_eq!(logs(&events), ["done: 3 agents {\"ok\":true} [1,2]"]);
}

#[tokio::test]
async fn rule_11_budget_reports_total_spent_remaining_and_agent_throws_once_it_is_spent() {
    let report = run_js(
        "const before = budget.spent()\nawait agent('spend a little')\n\
         return [budget.total, before, budget.spent() > 0, budget.remaining() === Infinity]",
        Value::Null,
    )
    .await;
    assert_eq!(result(&report), json!([null, 0, true, true]));

    let source = r#"
const first = { total: budget.total, spent: budget.spent(), remaining: budget.remaining() }
let calls = 0
let error
while (calls < 1000) {
  try {
    await agent(`call ${calls}`, { maxTokens: 64 })
    calls++
    if (budget.remaining() !== budget.total - budget.spent()) throw new Error('the ledger does not add up')
  } catch (e) {
    error = { name: e.name, code: e.code, message: e.message }
    break
  }
}
return { first, calls, error, spent: budget.spent(), remaining: budget.remaining() }
"#;
    let report = Run::new(Value::Null)
        .script("workflow.js", source)
        .limits(|l| l.budget_tokens = Some(3000))
        .run(&js_runtime())
        .await;
    let outcome = result(&report);
    assert_eq!(
        outcome["first"],
        json!({ "total": 3000, "spent": 0, "remaining": 3000 })
    );
    let calls = outcome["calls"].as_u64().unwrap();
    assert!((2..1000).contains(&calls), "{outcome}");
    assert_eq!(outcome["error"]["code"], "budget-exhausted", "{outcome}");
    assert!(
        outcome["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token budget exhausted"),
        "{outcome}"
    );
    let spent = outcome["spent"].as_u64().unwrap();
    assert_eq!(outcome["remaining"].as_u64().unwrap(), 3000 - spent);
    assert!(spent <= 3000 && report.spent_tokens == spent, "{outcome}");
}

/// A root holding the workflows of the rule 12 test.
fn workflow_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "workflows/count.js",
        "export const meta = { name: 'count', description: 'Starts args.n agents, one by one' }\n\
         const answers = []\n\
         for (let i = 0; i < args.n; i++) {\n\
           try { answers.push(typeof await agent(`count ${i}`)) }\n\
           catch (e) { answers.push(e.code) }\n\
         }\n\
         return { answers, spent: budget.spent(), meta: meta.name }\n",
    );
    write(
        "nests.js",
        "export const meta = { name: 'nests', description: 'Tries to nest a workflow' }\n\
         return await workflow('count', { n: 1 })\n",
    );
    write(
        "bad-meta.js",
        "export const meta = { name: 'bad' }\nreturn 1\n",
    );
    dir
}

#[tokio::test]
async fn rule_12_workflow_runs_another_workflow_inline_sharing_caps_and_budget() {
    let root = workflow_root();
    let source = r#"
const meta = 'the caller keeps its own names'
await agent('caller')
const child = await workflow('count', { n: 3 })
return { child, spent: budget.spent(), meta, args: args ?? null }
"#;
    let report = Run::new(Value::Null)
        .script("workflow.js", source)
        .root(root.path())
        .limits(|l| l.max_agents = 3)
        .run(&js_runtime())
        .await;
    let outcome = result(&report);
    // The caller's agent and the child's count against the same cap of 3: the child's third
    // call is refused.
    assert_eq!(
        outcome["child"]["answers"],
        json!(["string", "string", "agent-limit"])
    );
    assert_eq!(outcome["child"]["meta"], "count");
    assert_eq!(outcome["meta"], "the caller keeps its own names");
    assert_eq!(outcome["args"], Value::Null);
    // One budget: what the child saw spent includes the caller's call, and nothing ran after it.
    assert_eq!(outcome["child"]["spent"], outcome["spent"]);
    assert_eq!(outcome["spent"].as_u64().unwrap(), report.spent_tokens);
    assert_eq!(report.agents.started, 3);

    // By path, and concurrently.
    let report = Run::new(Value::Null)
        .script(
            "workflow.js",
            "const runs = await parallel([1, 2].map(n => () => workflow('workflows/count.js', { n })))\n\
             return runs.map(r => r.answers.length)",
        )
        .root(root.path())
        .run(&js_runtime())
        .await;
    assert_eq!(result(&report), json!([1, 2]));
    assert_eq!(report.agents.started, 3);

    // Nesting stops at one level; failures name the workflow and are catchable.
    let cases = [
        (
            "workflow('nests.js')",
            "WorkflowError [nesting]: workflow(\"count\"): workflows nest one level only",
        ),
        (
            "workflow('missing')",
            "WorkflowError [not-found]: workflow(\"missing\"): no such workflow in the run's root \
             (looked for .corral/workflows/missing.js, .claude/workflows/missing.js, \
             workflows/missing.js, a script whose meta.name is \"missing\" in",
        ),
        (
            "workflow('bad-meta.js')",
            "WorkflowError [invalid-script]: workflow(\"bad-meta.js\"): the workflow cannot run; \
             fix it and try again:\nbad-meta.js:1:21: meta.description is required",
        ),
        (
            "workflow('../outside.js')",
            "ToolError [denied]: workflow(\"../outside.js\")",
        ),
    ];
    for (call, expected) in cases {
        let report = Run::new(Value::Null)
            .script("workflow.js", &format!("return await {call}"))
            .root(root.path())
            .run(&js_runtime())
            .await;
        let message = thrown(&report);
        assert!(message.starts_with(expected), "{call}:\n{message}");
        assert_eq!(report.agents.started, 0, "{call}");
    }
    // Without a root there is nothing to read a workflow from.
    let report = run_js("await workflow('count')", Value::Null).await;
    let message = thrown(&report);
    assert!(
        message
            .starts_with("ToolError [denied]: workflow(\"count\"): this run has no root directory"),
        "{message}"
    );
}

// ---- Tools ------------------------------------------------------------------------------------

#[tokio::test]
async fn rule_13_tools_read_the_root_and_nothing_else() {
    let repo = fixture_repo();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        repo.path().join("link-out"),
    )
    .unwrap();
    let source = r#"
const code = async (f) => { try { await f(); return 'no error' } catch (e) { return e.code } }
return {
  read: await tools.read('src/math.rs'),
  glob: tools.glob('**/*.rs'),
  grep: tools.grep('todo', { ignoreCase: true, glob: '**/*.rs', maxMatches: 5 }),
  log: tools.git.log({ max: 5 }).map(c => c.summary),
  mathLog: tools.git.log({ path: 'src/math.rs' }).length,
  show: tools.git.show('HEAD~1', 'src/math.rs').includes('a + b'),
  diff: tools.git.diff().includes('+    let total = add(40, 2);'),
  status: tools.git.status(),
  denied: [await code(() => tools.read('../secret.txt')), await code(() => tools.read('/etc/passwd')),
           await code(() => tools.read('link-out')), await code(() => tools.glob('../**'))],
  notFound: [await code(() => tools.read('src/nope.rs')), await code(() => tools.git.show('no-such-rev'))],
}
"#;
    let report = Run::new(Value::Null)
        .script("workflow.js", source)
        .root(repo.path())
        .run(&js_runtime())
        .await;
    let outcome = result(&report);
    assert_eq!(
        outcome["read"],
        "pub fn add(a: i32, b: i32) -> i32 {\n    a.wrapping_add(b)\n}\n// TODO: overflow\n"
    );
    // .gitignore is honoured: target/build.rs is neither listed nor searched.
    assert_eq!(outcome["glob"], json!(["src/main.rs", "src/math.rs"]));
    assert_eq!(
        outcome["grep"],
        json!([{ "path": "src/math.rs", "line": 4, "text": "// TODO: overflow" }])
    );
    assert_eq!(outcome["log"], json!(["wrap on overflow", "first commit"]));
    assert_eq!(outcome["mathLog"], 2);
    assert_eq!(outcome["show"], true);
    assert_eq!(outcome["diff"], true);
    let status = outcome["status"].as_array().unwrap();
    assert!(
        status.contains(&json!({ "path": "src/main.rs", "status": "modified" }))
            && status.contains(&json!({ "path": "link-out", "status": "untracked" })),
        "{outcome}"
    );
    assert_eq!(
        outcome["denied"],
        json!(["denied", "denied", "denied", "denied"])
    );
    assert_eq!(outcome["notFound"][0], "not-found");
    assert!(
        ["not-found", "invalid-input"].contains(&outcome["notFound"][1].as_str().unwrap()),
        "{outcome}"
    );

    // An uncaught tool error names the call, the code and the script's line.
    let report = Run::new(Value::Null)
        .script("workflow.js", "\nreturn tools.read('src/nope.rs')")
        .root(repo.path())
        .run(&js_runtime())
        .await;
    let message = thrown(&report);
    assert!(
        message.starts_with("ToolError [not-found]: tools.read(\"src/nope.rs\"): "),
        "{message}"
    );
    assert!(message.contains("(workflow.js:2:"), "{message}");
}

// ---- Limits -----------------------------------------------------------------------------------

#[tokio::test]
async fn rule_14_at_most_16_agents_run_at_once_and_1000_per_run() {
    let provider = sim(20);
    let report = Run::new(Value::Null)
        .script(
            "workflow.js",
            "const r = await parallel(Array.from({ length: 40 }, (_, i) => () => agent(`call ${i}`)))\n\
             return r.filter(x => typeof x === 'string').length",
        )
        .provider(provider.clone())
        .run(&js_runtime())
        .await;
    assert_eq!(result(&report), json!(40));
    // Further calls queued: the provider never saw more than 16 at once.
    assert_eq!(provider.peak_in_flight(), 16);
    assert_eq!(report.agents.peak_in_flight, 16);

    let source = r#"
const answers = await parallel(Array.from({ length: 1000 }, (_, i) => () => agent(`call ${i}`)))
try {
  await agent('the 1001st')
  return 'not refused'
} catch (e) {
  return { ok: answers.filter(a => typeof a === 'string').length, code: e.code, message: e.message }
}
"#;
    let report = run_js(source, Value::Null).await;
    let outcome = result(&report);
    assert_eq!(outcome["ok"], 1000);
    assert_eq!(outcome["code"], "agent-limit");
    assert!(
        outcome["message"].as_str().unwrap().contains("1000"),
        "{outcome}"
    );
    assert_eq!(report.agents.started, 1000);
}

// ---- Front-end errors: each names line:column and says how to fix it --------------------------

/// Runs a script that must be refused before it runs, and checks the message.
async fn refused(source: &str, expected: Expect) {
    let (report, events) = run_with_events(source, Value::Null, None).await;
    let Err(RunError::Script(message)) = &report.outcome else {
        panic!("expected an error before the run, got {:?}", report.outcome)
    };
    assert!(events.is_empty(), "the script ran: {events:?}");
    expected.assert_eq(message);
}

#[tokio::test]
async fn check_error_non_literal_meta() {
    refused(
        "export const meta = {\n  name: 'x',\n  description: describe('x'),\n}\n",
        expect!["workflow.js:3:16: `describe` is a variable or expression: meta must be a pure literal: write every value out (no variables, calls, spreads, computed keys or `${}` in templates)"],
    )
    .await;
    refused(
        "export const meta = { name: `review-${kind}`, description: 'd' }\n",
        expect!["workflow.js:1:29: a template with `${}` substitutions: meta must be a pure literal: write every value out (no variables, calls, spreads, computed keys or `${}` in templates)"],
    )
    .await;
    refused(
        "export const meta = { ...defaults, name: 'x', description: 'd' }\n",
        expect!["workflow.js:1:23: a spread (`...`): meta must be a pure literal: write every value out (no variables, calls, spreads, computed keys or `${}` in templates)"],
    )
    .await;
    refused(
        "const name = 'x'\nexport const meta = { name, description: 'd' }\n",
        expect!["workflow.js:2:1: `export const meta = { ... }` must be the first statement of the script: move it to the top"],
    )
    .await;
}

#[tokio::test]
async fn check_error_missing_name_or_description() {
    refused(
        "export const meta = {\n  description: 'Reviews a diff',\n}\n",
        expect!["workflow.js:1:21: meta.name is required: meta needs `name` (a short kebab-case name) and `description` (one sentence saying what the workflow does)"],
    )
    .await;
    refused(
        "export const meta = {\n  name: 'review',\n}\n",
        expect!["workflow.js:1:21: meta.description is required: meta needs `name` (a short kebab-case name) and `description` (one sentence saying what the workflow does)"],
    )
    .await;
    refused(
        "export const meta = { name: 'review', description: '' }\n",
        expect!["workflow.js:1:21: meta.description must not be empty: write one sentence saying what the workflow does"],
    )
    .await;
}

#[tokio::test]
async fn check_error_import() {
    refused(
        "export const meta = { name: 'x', description: 'd' }\nimport { helper } from './lib.js'\n",
        expect!["workflow.js:2:1: `import` is not supported: a workflow is one self-contained script; remove the import and copy the code you need into it (agent, parallel, pipeline, phase, log, budget, tools and args are globals)"],
    )
    .await;
}

#[tokio::test]
async fn check_error_dynamic_import() {
    refused("const lib = await import('./lib.js')\n", expect!["workflow.js:1:19: dynamic `import()` is not supported: a workflow is one self-contained script; copy the code you need into it"]).await;
}

#[tokio::test]
async fn check_error_require() {
    refused(
        "const fs = require('fs')\nreturn fs.readFileSync('x')\n",
        expect!["workflow.js:1:12: `require()` is not supported: a workflow is one self-contained script; remove it and copy the code you need into it (there is no filesystem, process or network API)"],
    )
    .await;
}

#[tokio::test]
async fn check_error_typescript_syntax() {
    refused(
        "interface Finding {\n  title: string\n}\nreturn []\n",
        expect![[r#"
            workflow.js:1:1: SyntaxError: unexpected token in expression: 'interface'
            workflow.js:1:1: this looks like TypeScript; workflows are plain JavaScript: remove type annotations, interfaces, type aliases and `as` casts"#]],
    )
    .await;
    refused(
        "const findings: string[] = []\nreturn findings\n",
        expect![[r#"
            workflow.js:1:15: SyntaxError: missing initializer for variable
            workflow.js:1:15: this looks like TypeScript; workflows are plain JavaScript: remove type annotations, interfaces, type aliases and `as` casts"#]],
    )
    .await;
    refused(
        "function score(finding: object) {\n  return 1\n}\nreturn score({})\n",
        expect![[r#"
            workflow.js:1:23: SyntaxError: Unexpected token ':'
            workflow.js:1:23: this looks like TypeScript; workflows are plain JavaScript: remove type annotations, interfaces, type aliases and `as` casts"#]],
    )
    .await;
    refused(
        "const text = await agent('x') as string\nreturn text\n",
        expect![[r#"
            workflow.js:1:31: SyntaxError: expecting ';'
            workflow.js:1:31: this looks like TypeScript; workflows are plain JavaScript: remove type annotations, interfaces, type aliases and `as` casts"#]],
    )
    .await;
}

#[tokio::test]
async fn check_error_plain_syntax_error() {
    refused(
        "const items = [1, 2\nreturn items\n",
        expect![[r#"
        workflow.js:2:1: SyntaxError: Unexpected token 'return'
        workflow.js:1:15: this `[` is never closed: add the missing `]`"#]],
    )
    .await;
    refused("if (args) {\n  log('open')\n", expect![[r#"
        workflow.js:3:1: SyntaxError: the script ends too early: a bracket, string, template or statement is still open
        workflow.js:1:11: this `{` is never closed: add the missing `}`"#]]).await;
    refused("const s = 'never closed\nreturn s\n", expect![[r#"
        workflow.js:1:11: SyntaxError: unexpected end of string
        workflow.js:1:11: this string is never closed on its line: add `'`, or use a template literal (`...`) for text over several lines"#]]).await;
}

#[tokio::test]
async fn check_error_unsatisfiable_schema() {
    // Schemas are values the script computes, so this is found when agent() is called: it throws
    // before any agent starts, and the stack names the line and column of the call.
    let source = "const SCHEMA = { type: 'object',\n  properties: { score: { type: 'integer', \
                  minimum: 10, maximum: 1 } },\n  required: ['score'] }\n\
                  const graded = await agent('grade it', { schema: SCHEMA })\nreturn graded\n";
    let report = run_js(source, Value::Null).await;
    assert_eq!(report.agents.started, 0);
    expect![[r#"
        AgentError [invalid-input]: agent() failed: the schema can never be satisfied: required property 'score' can never be satisfied: #/properties/score has minimum 10 greater than maximum 1; change opts.schema so that at least one object satisfies it (no agent was started)
            at <anonymous> (workflow.js:4:50)"#]].assert_eq(thrown(&report));
    let report = run_js(
        "return await agent('x', { schema: { type: 'array', items: { type: 'string' } } })",
        Value::Null,
    )
    .await;
    expect![[r#"
        AgentError [invalid-input]: agent() failed: the schema's root must be an object schema ({"type": "object", ...}); wrap other values in a property (in opts.schema; no agent was started)
            at <anonymous> (workflow.js:1:13)"#]].assert_eq(thrown(&report));
}

// ---- Scripts that misbehave on purpose --------------------------------------------------------

#[tokio::test]
async fn a_script_that_throws_ends_its_run_with_the_error_and_its_line() {
    let source = "function check(findings) {\n  if (findings.length === 0) throw new RangeError('no findings to report')\n}\ncheck([])\n";
    let report = run_js(source, Value::Null).await;
    expect![[r#"
        RangeError: no findings to report
            at check (workflow.js:2:40)
            at <anonymous> (workflow.js:4:1)"#]]
    .assert_eq(thrown(&report));
    let report = run_js("throw { reason: 'a plain object' }", Value::Null).await;
    expect![[r#"uncaught exception: {"reason":"a plain object"}"#]].assert_eq(thrown(&report));
}

#[tokio::test]
async fn a_script_that_never_settles_is_reported_as_deadlocked() {
    let report = run_js(
        "await agent('this one finishes')\nawait new Promise(() => {})\nreturn 'never'",
        Value::Null,
    )
    .await;
    assert_eq!(report.agents.started, 1);
    expect!["workflow.js: workflow deadlocked: the script is waiting for a promise that nothing will settle (no agent call is pending). Await only promises from agent(), parallel(), pipeline() or async functions built on them; a hand-made `new Promise` must be resolved by the script"].assert_eq(thrown(&report));
}

#[tokio::test]
async fn a_script_that_exhausts_memory_gets_a_catchable_out_of_memory_error() {
    let grow = "const big = []\nwhile (true) big.push('x'.repeat(1000) + big.length)";
    let report = run_js(grow, Value::Null).await;
    expect![[r#"
        InternalError: out of memory (the script's JavaScript heap is limited to 192 MiB; keep fewer or smaller values alive)
            at <anonymous> (workflow.js:2:27)"#]].assert_eq(thrown(&report));
    // The script can catch it and go on once it lets go of the memory.
    let report = run_js(
        &format!(
            "try {{\n  {}\n}} catch (e) {{\n  return [String(e), 'recovered']\n}}",
            grow.replace('\n', "\n  ")
        ),
        Value::Null,
    )
    .await;
    assert_eq!(
        result(&report),
        json!(["InternalError: out of memory", "recovered"])
    );
    // Below the script heap's own limit, the host's memory limit ends the run.
    let report = Run::new(Value::Null)
        .script("workflow.js", grow)
        .limits(|l| l.max_memory = 64 << 20)
        .run(&js_runtime())
        .await;
    let Err(RunError::Limit(LimitExceeded::Memory { limit, .. })) = report.outcome else {
        panic!("{:?}", report.outcome)
    };
    assert_eq!(limit, 64 << 20);
}

#[tokio::test]
async fn a_script_that_loops_forever_hits_the_cpu_limit() {
    let report = Run::new(Value::Null)
        .script("workflow.js", "log('spinning')\nwhile (true) {}")
        .limits(|l| l.max_cpu = Duration::from_millis(300))
        .run(&js_runtime())
        .await;
    assert_eq!(
        report.outcome,
        Err(RunError::Limit(LimitExceeded::Cpu(Duration::from_millis(
            300
        ))))
    );
    expect!["guest CPU limit exceeded: the workflow computed for more than 300ms (raise --max-cpu, or find the loop that never ends)"].assert_eq(&report.outcome.unwrap_err().to_string());
}
