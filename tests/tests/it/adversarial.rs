//! The adversarial suite: what an audit of the sandbox tried, kept as tests. Each case attacks
//! one property the README claims, asserts the clear error that names the limit or the refusal,
//! and that nothing from outside the root shows up in any output.
//!
//! Categories here: git confinement through a script, FIFOs and slow searches against
//! `--timeout` and `--max-tool-time`, host memory amplification (schemas, option strings,
//! prompts), log and phase floods, agent and batch caps, budgets with lying providers, schema
//! edge cases on the simulator, guest CPU/memory/stack/JSON depth, deterministic clocks,
//! malformed components and scripts, and CLI flag overflow. The tool root's own attack cases
//! (git metadata, FIFOs, bombs) are unit tests in `engine/host/src/tools/attacks.rs`.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_host::events::RunEvent;
use corral_host::provider::{
    Block, BoxFuture, ChatRequest, ChatResponse, Provider, ProviderError, StopReason, Usage,
};
use corral_host::{LimitExceeded, RunError, RunReport};
use serde_json::{Value, json};
use tests::support::{Run, corral, js_runtime, result};

const SECRET: &str = "TOP SECRET";

fn git(dir: &Path, args: &[&str]) {
    tests::support::git(dir, args);
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

async fn js(source: &str) -> RunReport {
    Run::new(Value::Null)
        .script("attack.js", source)
        .run(&js_runtime())
        .await
}

async fn js_with(source: &str, run: Run) -> RunReport {
    run.script("attack.js", source).run(&js_runtime()).await
}

/// Every text a run produced: its result or error, and every event.
fn everything(report: &RunReport, run_events: &[RunEvent]) -> String {
    format!("{:?} {:?}", report.outcome, run_events)
}

fn limit(report: &RunReport) -> &LimitExceeded {
    match &report.outcome {
        Err(RunError::Limit(limit)) => limit,
        other => panic!("expected a limit, got {other:?}"),
    }
}

// ---- git confinement, through a script ----

#[tokio::test]
async fn a_script_cannot_read_a_repository_outside_the_root_through_git_metadata() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.txt"), format!("{SECRET}\n")).unwrap();
    git(outside.path(), &["init", "-q"]);
    git(outside.path(), &["add", "-A"]);
    git(outside.path(), &["commit", "-q", "-m", SECRET]);
    type Plant<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: [(&str, Plant); 3] = [
        (
            "gitdir file",
            Box::new(|root: &Path| {
                let pointer = format!("gitdir: {}\n", outside.path().join(".git").display());
                fs::write(root.join(".git"), pointer).unwrap();
            }),
        ),
        (
            "symlinked .git",
            Box::new(|root: &Path| {
                std::os::unix::fs::symlink(outside.path().join(".git"), root.join(".git")).unwrap();
            }),
        ),
        (
            "alternates",
            Box::new(|root: &Path| {
                git(root, &["init", "-q"]);
                let info = root.join(".git/objects/info");
                fs::create_dir_all(&info).unwrap();
                let objects = outside.path().join(".git/objects");
                fs::write(info.join("alternates"), format!("{}\n", objects.display())).unwrap();
            }),
        ),
    ];
    for (name, plant) in cases {
        let root = tempfile::tempdir().unwrap();
        plant(root.path());
        let run = Run::new(Value::Null).root(root.path());
        let run_events = Arc::clone(&run.events);
        let report = js_with(
            "const out = []\n\
             for (const call of [() => tools.git.show('HEAD', 'secret.txt'), () => tools.git.log({}),\n\
               () => tools.git.status(), () => tools.git.diff()]) {\n\
               try { out.push(['ok', JSON.stringify(await call())]) } catch (e) { out.push([e.code, e.message]) }\n\
             }\n\
             return out",
            run,
        )
        .await;
        let answers = result(&report);
        for answer in answers.as_array().unwrap() {
            assert_eq!(answer[0], "denied", "{name}: {answer}");
        }
        let all = everything(&report, &run_events.events());
        assert!(!all.contains(SECRET), "{name}: {all}");
    }
}

#[tokio::test]
async fn a_fifo_named_gitignore_does_not_hang_a_script() {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("a.txt"), "x\n").unwrap();
    mkfifo(&root.path().join(".gitignore"));
    let report = js_with(
        "const out = []\n\
         for (const call of [() => tools.glob('*'), () => tools.grep('x'), () => tools.read('.gitignore')]) {\n\
           try { await call(); out.push('ok') } catch (e) { out.push(e.code) }\n\
         }\n\
         return out",
        Run::new(Value::Null)
            .root(root.path())
            .limits(|l| l.timeout = Duration::from_secs(20)),
    )
    .await;
    assert_eq!(
        result(&report),
        json!(["denied", "denied", "invalid-input"])
    );
}

/// A root where `a[ab]{30}c` is slow: many long lines of `ab`.
fn slow_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let text = ("ab".repeat(40) + "\n").repeat(20_000);
    for i in 0..30 {
        fs::write(root.path().join(format!("f{i}.txt")), &text).unwrap();
    }
    root
}

#[tokio::test]
async fn tool_time_is_limited_and_reported() {
    let root = slow_root();
    let report = js_with(
        "try { await tools.grep('a[ab]{30}c'); return 'finished' } catch (e) { return [e.code, e.message] }",
        Run::new(Value::Null)
            .root(root.path())
            // Long enough to dwarf the guest's own CPU time (a few ms), whatever the load.
            .limits(|l| l.tools.max_tool_time = Duration::from_millis(50)),
    )
    .await;
    let answer = result(&report);
    assert_eq!(answer[0], "limit", "{answer}");
    assert!(
        answer[1].as_str().unwrap().contains("--max-tool-time"),
        "{answer}"
    );
    assert!(report.tool_time >= Duration::from_millis(50));
    // Tool time is host time: the guest's CPU time does not include it.
    assert!(
        report.guest_cpu < report.tool_time,
        "guest CPU {:?}, tool time {:?}",
        report.guest_cpu,
        report.tool_time
    );
}

#[test]
fn the_process_exits_at_its_timeout_even_inside_a_slow_tool_call() {
    let root = slow_root();
    let script = root.path().join("slow.js");
    fs::write(
        &script,
        "for (;;) { await tools.grep('a[ab]{30}c[ab]{2}') }",
    )
    .unwrap();
    let began = Instant::now();
    let output = corral()
        .args(["run", "--no-journal", "--timeout", "1s", "--root"])
        .arg(root.path())
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("run timeout exceeded"), "{stderr}");
    assert!(stderr.contains("s tools"), "{stderr}");
    assert!(began.elapsed() < Duration::from_secs(30), "{stderr}");
}

// ---- host memory the guest controls ----

#[tokio::test]
async fn option_strings_are_bounded() {
    for option in ["label", "phase", "model"] {
        let source = format!(
            "try {{ await agent('x', {{ {option}: 'a'.repeat(2048) }}); return 'accepted' }} \
             catch (e) {{ return [e.code, e.message] }}"
        );
        let answer = result(&js(&source).await);
        assert_eq!(answer[0], "invalid-input", "{option}: {answer}");
        let message = answer[1].as_str().unwrap();
        assert!(
            message.contains(&format!("the {option} is 2048 bytes")),
            "{message}"
        );
        assert!(message.contains("--max-option-bytes"), "{message}");
    }
    // A phase title is a progress call: too long ends the run, naming the limit.
    let report = js("phase('p'.repeat(1 << 20)); return 1").await;
    assert!(matches!(
        limit(&report),
        LimitExceeded::Option {
            what: "phase title",
            ..
        }
    ));
    assert!(
        report
            .outcome
            .unwrap_err()
            .to_string()
            .contains("--max-option-bytes")
    );
}

#[tokio::test]
async fn schemas_are_bounded_in_size_and_number_before_any_is_compiled() {
    let schema = |i: usize| {
        format!(
            "{{ type: 'object', properties: {{ f{i}: {{ type: 'string' }} }}, required: ['f{i}'] }}"
        )
    };
    // Distinct schemas past --max-schemas are refused.
    let calls: Vec<String> = (0..6)
        .map(|i| {
            format!(
                "async () => {{ try {{ await agent('x', {{ schema: {} }}); return 'ok' }} catch (e) {{ return e.message }} }}",
                schema(i)
            )
        })
        .collect();
    let source = format!(
        "const out = []\nfor (const f of [{}]) out.push(await f())\nreturn out",
        calls.join(", ")
    );
    let report = js_with(&source, Run::new(Value::Null).limits(|l| l.max_schemas = 5)).await;
    let answers = result(&report);
    assert_eq!(answers[4], "ok");
    let refused = answers[5].as_str().unwrap();
    assert!(refused.contains("5 distinct output schemas"), "{refused}");
    assert!(refused.contains("--max-schemas"), "{refused}");
    // One schema over --max-schema-bytes.
    let big = "try { await agent('x', { schema: { type: 'object', description: 'd'.repeat(70000) } }); \
               return 'ok' } catch (e) { return e.message }";
    let message = result(&js(big).await);
    assert!(
        message.as_str().unwrap().contains("--max-schema-bytes"),
        "{message}"
    );
    // Past the agent cap, a new schema is refused as agent-limit before it is compiled or even
    // checked: the 11th and 12th schemas are invalid, and the answer is still agent-limit.
    let source = "const out = []\n\
         for (let i = 0; i < 12; i++) {\n\
           const schema = i < 10 ? { type: 'object', description: 'd'.repeat(60000) + i } : { type: 'array' }\n\
           try { await agent('x', { schema }); out.push('ok') }\n\
           catch (e) { out.push(e.code) }\n\
         }\n\
         return out";
    let report = js_with(
        source,
        Run::new(Value::Null).limits(|l| {
            l.max_agents = 10;
            l.max_schemas = 1000;
        }),
    )
    .await;
    let answers = result(&report);
    assert_eq!(answers[9], "ok");
    assert_eq!(answers[10], "agent-limit");
    assert_eq!(answers[11], "agent-limit");
}

#[tokio::test]
async fn prompt_bytes_of_a_whole_run_are_bounded() {
    let report = js_with(
        "const big = 'p'.repeat(512 * 1024)\n\
         const out = await parallel(Array.from({ length: 40 }, (_, i) => async () => {\n\
           try { await agent(big + i); return 'ok' } catch (e) { return e.code + ': ' + e.message }\n\
         }))\n\
         return out",
        Run::new(Value::Null).limits(|l| l.max_run_prompt_bytes = 8 << 20),
    )
    .await;
    let answers = result(&report);
    let ok = answers
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| *a == "ok")
        .count();
    assert_eq!(ok, 15, "{answers}");
    let refused = answers[39].as_str().unwrap();
    assert!(refused.starts_with("agent-limit"), "{refused}");
    assert!(refused.contains("--max-run-prompt-bytes"), "{refused}");
}

// ---- log, phase and event floods ----

#[tokio::test]
async fn empty_phases_and_logs_cost_against_the_log_limit() {
    for call in ["phase('')", "log('')"] {
        let report = js_with(
            &format!("for (let i = 0; i < 3000000; i++) {call}\nreturn 'flooded'"),
            Run::new(Value::Null).limits(|l| l.max_log_bytes = 1 << 20),
        )
        .await;
        assert_eq!(limit(&report), &LimitExceeded::Log(1 << 20), "{call}");
    }
}

#[tokio::test]
async fn a_newline_flood_costs_per_line() {
    for call in [
        "log('\\n'.repeat(1000000))",
        "console.log('\\n'.repeat(1000000))",
    ] {
        let report = js_with(
            &format!("{call}\nreturn 'flooded'"),
            Run::new(Value::Null).limits(|l| l.max_log_bytes = 1 << 20),
        )
        .await;
        assert_eq!(limit(&report), &LimitExceeded::Log(1 << 20), "{call}");
    }
}

// ---- budgets with a lying provider ----

/// A provider that claims every request cost twenty million tokens.
struct OverReports;

impl Provider for OverReports {
    fn name(&self) -> &str {
        "liar"
    }

    fn resolve_model(&self, _requested: Option<&str>) -> String {
        "liar-1".to_string()
    }

    fn complete<'a>(
        &'a self,
        _request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async {
            Ok(ChatResponse {
                content: vec![Block::Text("fine".into())],
                stop: StopReason::EndTurn,
                usage: Usage {
                    input_tokens: 10_000_000,
                    output_tokens: 10_000_000,
                    ..Usage::default()
                },
                model: "liar-1".into(),
            })
        })
    }
}

#[tokio::test]
async fn a_provider_that_over_reports_never_pushes_spent_past_the_budget() {
    let run = Run::new(Value::Null)
        .provider(Arc::new(OverReports))
        .limits(|l| {
            l.budget_tokens = Some(100_000);
            l.max_output_tokens = 1000;
        });
    let run_events = Arc::clone(&run.events);
    let report = js_with(
        "const out = []\n\
         for (let i = 0; i < 200; i++) {\n\
           try { await agent('hello ' + i); out.push('ok') } catch (e) { out.push(e.code); break }\n\
         }\n\
         return { ok: out.filter(x => x === 'ok').length, last: out[out.length - 1], remaining: budget.remaining() }",
        run,
    )
    .await;
    let answer = result(&report);
    assert_eq!(answer["last"], "budget-exhausted", "{answer}");
    assert!(report.spent_tokens <= 100_000, "{}", report.spent_tokens);
    let warnings: Vec<String> = run_events
        .events()
        .into_iter()
        .filter_map(|event| match event {
            RunEvent::Log { message } if message.contains("warning: liar reported") => {
                Some(message)
            }
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len() as u64, answer["ok"].as_u64().unwrap());
    assert!(warnings[0].contains("20000000 tokens"), "{warnings:?}");
}

#[test]
fn a_budget_checked_run_keeps_its_tools() {
    // The budget check dry-runs the workflow first; the real run must still have its tools.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), "inside\n").unwrap();
    let script = dir.path().join("read.js");
    fs::write(
        &script,
        "const text = await tools.read('a.txt')\nawait agent('summarise ' + text)\nreturn text",
    )
    .unwrap();
    let output = corral()
        .args(["run", "--no-journal", "--budget-tokens", "100000", "--root"])
        .arg(dir.path())
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "\"inside\\n\""
    );
}

// ---- schema edge cases on the simulator ----

#[tokio::test]
async fn schemas_the_simulator_cannot_answer_fail_the_call_clearly() {
    // A terminal provider error makes `agent()` resolve to null (rule 6); the call is counted
    // as a provider failure, at once.
    for schema in [
        "{ type: 'object', properties: { s: { type: 'string', minLength: 1e7 } }, required: ['s'] }",
        "{ type: 'object', properties: { a: { type: 'array', minItems: 1e8 } }, required: ['a'] }",
    ] {
        let source = format!("return await agent('x', {{ schema: {schema} }})");
        let report = js_with(
            &source,
            Run::new(Value::Null).limits(|l| l.timeout = Duration::from_secs(20)),
        )
        .await;
        assert_eq!(result(&report), Value::Null, "{schema}");
        assert_eq!(report.agents.failed.get("provider"), Some(&1), "{schema}");
    }
    // Integer bounds at the ends of i64 and beyond: an answer, not a panic.
    let source = "return await agent('x', { schema: { type: 'object', properties: { n: { type: 'integer', minimum: -1e19, maximum: 1e19 } }, required: ['n'] } })";
    let answer = result(&js(source).await);
    assert!(answer["n"].is_i64(), "{answer}");
    // Nested deeper than 16: satisfied, not a false schema-mismatch.
    let mut schema = "{ type: 'string' }".to_string();
    for _ in 0..30 {
        schema = format!("{{ type: 'object', properties: {{ x: {schema} }}, required: ['x'] }}");
    }
    let answer = result(&js(&format!("return await agent('x', {{ schema: {schema} }})")).await);
    assert!(answer["x"]["x"]["x"].is_object(), "{answer}");
}

#[test]
fn plan_does_not_green_light_a_run_whose_agents_the_simulator_cannot_answer() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("huge.js");
    fs::write(
        &script,
        "return await agent('x', { schema: { type: 'object', properties: { s: { type: 'string', minLength: 1e7 } }, required: ['s'] } })",
    )
    .unwrap();
    let plan = corral()
        .args(["plan", "--timeout", "20s"])
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert_eq!(plan.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("1 provider"), "{stderr}");
    assert!(
        stderr.contains("cannot be checked against a budget"),
        "{stderr}"
    );
    let run = corral()
        .args(["run", "--no-journal", "--budget-tokens", "100000"])
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_ne!(run.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("cannot check the run against its budget"),
        "{stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
}

// ---- guest CPU, memory, stack, clocks ----

#[tokio::test]
async fn guest_resource_attacks_end_with_the_named_limit() {
    let report = js_with(
        "for (;;) {}",
        Run::new(Value::Null).limits(|l| l.max_cpu = Duration::from_millis(300)),
    )
    .await;
    assert_eq!(
        limit(&report),
        &LimitExceeded::Cpu(Duration::from_millis(300))
    );
    let report = js_with(
        "const a = []; for (;;) a.push('x'.repeat(1 << 16) + a.length)",
        Run::new(Value::Null).limits(|l| l.max_memory = 64 << 20),
    )
    .await;
    assert!(
        matches!(limit(&report), LimitExceeded::Memory { .. }),
        "{:?}",
        report.outcome
    );
    // Deep values and recursion through built-ins are catchable errors, never "call stack
    // exhausted" traps that try/catch cannot see.
    for attack in [
        "JSON.parse('['.repeat(3000) + ']'.repeat(3000))",
        "let v = 1; for (let i = 0; i < 3000; i++) v = [v]; JSON.stringify(v)",
        "const o = { get x() { return o.x } }; o.x",
        "const o = { toString() { return String(o) } }; String(o)",
        "let p = {}; for (let i = 0; i < 3000; i++) p = new Proxy(p, {}); p.x",
        "async function f(n) { return await f(n + 1) } await f(0)",
        "eval('('.repeat(3000) + '1' + ')'.repeat(3000))",
        "eval('['.repeat(20000) + ']'.repeat(20000))",
        "eval('f('.repeat(5000) + ')'.repeat(5000))",
        "eval('-'.repeat(20000) + '1')",
        "eval('a='.repeat(20000) + '1')",
        "eval('1?'.repeat(5000) + '1' + ':1'.repeat(5000))",
        "eval('({a:'.repeat(5000) + '1' + '})'.repeat(5000))",
        "eval('function f(){'.repeat(3000) + '}'.repeat(3000))",
    ] {
        let source = format!("try {{ {attack}; return 'no error' }} catch (e) {{ return e.name }}");
        let report = js(&source).await;
        match &report.outcome {
            Ok(text) => assert_ne!(text, "\"no error\"", "{attack}"),
            Err(error) => panic!("{attack}: {error}"),
        }
    }
    // A deep result is refused with the limit's name, not a trap.
    let report = js("let v = 1; for (let i = 0; i < 3000; i++) v = [v]; return v").await;
    let message = report.outcome.unwrap_err().to_string();
    assert!(message.contains("MAX_JSON_DEPTH"), "{message}");
    // Plain recursion is a catchable RangeError.
    let answer = result(
        &js("const f = (n) => f(n + 1) + 1\ntry { f(0) } catch (e) { return e.name }").await,
    );
    assert_eq!(answer, "RangeError");
    // Clocks and randomness are refused: runs replay deterministically.
    for call in ["Date.now()", "Math.random()", "new Date()"] {
        let answer = result(
            &js(&format!(
                "try {{ {call}; return 'allowed' }} catch (e) {{ return 'refused' }}"
            ))
            .await,
        );
        assert_eq!(answer, "refused", "{call}");
    }
}

// ---- agent and batch caps ----

#[tokio::test]
async fn agent_and_concurrency_caps_hold_under_a_flood() {
    let report = js_with(
        "const out = await parallel(Array.from({ length: 300 }, () => async () => {\n\
           try { await agent('x'); return 'ok' } catch (e) { return e.code }\n\
         }))\n\
         return { ok: out.filter(x => x === 'ok').length, refused: out.filter(x => x === 'agent-limit').length }",
        Run::new(Value::Null)
            .provider(tests::support::sim(10))
            .limits(|l| {
                l.max_agents = 100;
                l.max_concurrent = 4;
            }),
    )
    .await;
    assert_eq!(result(&report), json!({"ok": 100, "refused": 200}));
    assert_eq!(report.agents.peak_in_flight, 4);
}

// ---- malformed components and scripts ----

#[test]
fn malformed_workflows_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 5] = [
        ("empty.wasm", b"", "wasm"),
        ("garbage.wasm", b"\x00asm\x0d\x00\x01\x00garbage", "wasm"),
        ("text.wasm", b"hello", "wasm"),
        ("core.wasm", b"\x00asm\x01\x00\x00\x00", "component"),
        ("nul.js", b"return 'a\x00b'", "nul.js:1:10"),
    ];
    for (name, bytes, says) in cases {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let output = corral()
            .args(["run", "--no-journal"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code().unwrap();
        assert!(code != 0 && code != 101, "{name}: {code} {stderr}");
        assert!(stderr.contains("error"), "{name}: {stderr}");
        assert!(stderr.to_lowercase().contains(says), "{name}: {stderr}");
    }
}

// ---- CLI flag overflow ----

#[test]
fn out_of_range_flags_are_usage_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("w.js");
    fs::write(&script, "return 1").unwrap();
    for flags in [
        ["--timeout", "100000000000000000000000h"].as_slice(),
        &["--max-cpu", "99999999999999999999999999999"],
        &["--max-tool-time", "1e400"],
        &["--max-memory", "99999999999999999999999"],
        &["--max-memory", "17GiB"],
        &["--max-concurrent", "0"],
        &["--max-agents", "-1"],
        &["--budget-tokens", "1e99"],
        &["--max-batch", "99999999999999999999999"],
        &["--max-git-entries", "-5"],
        &["--max-option-bytes", "12 bananas"],
        &["--sim-latency", "99999999999999999999h"],
    ] {
        let output = corral()
            .args(["run", "--no-journal"])
            .args(flags)
            .arg(&script)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code().unwrap();
        assert!(code == 2 || code == 4, "{flags:?}: exit {code}: {stderr}");
        assert!(stderr.contains("error"), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_guest_reaches_no_network_not_even_a_listener_on_loopback() {
    // A listener the guest is pointed at: nothing may ever connect to it, nor get a datagram.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind(listener.local_addr().unwrap()).unwrap();
    udp.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let report = Run::new(json!({"mode": "network", "addr": addr}))
        .run(&tests::support::workflow("probe"))
        .await;
    let tried = result(&report);
    // Each attempt failed inside the guest, as an error it can read, and the run went on.
    for attempt in ["connect", "listen", "udp"] {
        let said = tried[attempt].as_str().unwrap();
        assert!(said.starts_with("PermissionDenied"), "{attempt}: {said}");
    }
    let lookup = tried["lookup"].as_str().unwrap();
    assert_ne!(lookup, "succeeded", "a name lookup went through");
    assert!(
        listener.accept().is_err(),
        "the guest connected to the listener"
    );
    assert!(
        udp.recv_from(&mut [0; 16]).is_err(),
        "the guest sent a datagram"
    );
}

#[tokio::test]
async fn a_guests_http_request_is_denied_and_reaches_no_server() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    let probe = tests::support::workflow("probe");
    let report = Run::new(json!({"mode": "http", "authority": authority, "header_bytes": 1000}))
        .run(&probe)
        .await;
    let tried = result(&report);
    // Sending fails inside the guest with the WASI error for a denied request.
    assert_eq!(
        tried["send"], "failed: ErrorCode::HttpRequestDenied",
        "{tried}"
    );
    assert_eq!(tried["header"], "accepted", "{tried}");
    assert!(
        listener.accept().is_err(),
        "the guest's request reached the listener"
    );

    // Building headers is bounded too: past the limit the run ends, naming it.
    let limit = corral_host::limits::MAX_HTTP_FIELD_BYTES;
    let report =
        Run::new(json!({"mode": "http", "authority": authority, "header_bytes": limit * 4}))
            .run(&probe)
            .await;
    match &report.outcome {
        Err(RunError::Limit(LimitExceeded::HttpFields(n))) => assert_eq!(*n, limit),
        other => panic!("expected the HTTP header limit, got {other:?}"),
    }
}
