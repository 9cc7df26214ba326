//! The JavaScript API against a fake host, on the host target: one or more tests per rule of
//! SCRIPT-API.md (named after it), plus the event loop's and the error messages' behaviour.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::*;
use crate::bindings::corral::workflow::agents::{AgentOutput, Isolated};
use crate::bindings::corral::workflow::tools::{
    Change, CommandOutput, Commit, GrepMatch, StatusEntry,
};
use crate::bindings::corral::workflow::types::Usage;

type Respond = Box<dyn Fn(&str, &AgentOptions) -> Result<AgentOutput, AgentError>>;

/// How many finished calls one `wait` hands back.
#[derive(Clone, Copy)]
enum Finish {
    /// Every call asked about, newest first (to show that order does not leak into results).
    AllNewestFirst,
    /// Only the oldest call asked about.
    Oldest,
}

struct FakeHost {
    next_id: Cell<CallId>,
    /// Prompts and options of started calls, by id.
    started: RefCell<BTreeMap<CallId, (String, AgentOptions)>>,
    /// Whether `start` refuses calls, and how.
    refuse: RefCell<Option<AgentError>>,
    respond: Respond,
    finish: Finish,
    /// `start p`, `finish p`, `phase t`, `log m`, `cancel p` in the order they happened.
    events: RefCell<Vec<String>>,
    /// The ids each `wait` asked about.
    waits: RefCell<Vec<Vec<CallId>>>,
    budget: Option<u64>,
    spent: u64,
    files: BTreeMap<&'static str, &'static str>,
}

fn output(text: &str, json: Option<String>) -> AgentOutput {
    AgentOutput {
        text: text.to_owned(),
        json,
        usage: Usage {
            input_tokens: 1,
            output_tokens: 1,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        },
        model: "fake".to_owned(),
    }
}

/// Answers `echo: <prompt>`, or for a schema `{"prompt": <prompt>}`.
fn echo() -> Respond {
    Box::new(|prompt, options| {
        Ok(match options.schema {
            Some(_) => output(
                "",
                Some(serde_json::json!({ "prompt": prompt }).to_string()),
            ),
            None => output(&format!("echo: {prompt}"), None),
        })
    })
}

impl FakeHost {
    fn new(respond: Respond) -> FakeHost {
        FakeHost {
            next_id: Cell::new(1),
            started: RefCell::new(BTreeMap::new()),
            refuse: RefCell::new(None),
            respond,
            finish: Finish::AllNewestFirst,
            events: RefCell::new(Vec::new()),
            waits: RefCell::new(Vec::new()),
            budget: None,
            spent: 0,
            files: BTreeMap::from([("README.md", "# hello\n"), ("src/lib.rs", "fn main() {}\n")]),
        }
    }

    fn event(&self, e: String) {
        self.events.borrow_mut().push(e);
    }

    fn events(&self) -> Vec<String> {
        self.events.borrow().clone()
    }

    fn logs(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| e.strip_prefix("log ").map(str::to_owned))
            .collect()
    }
}

impl Host for FakeHost {
    fn agent_start(&self, prompt: &str, options: &AgentOptions) -> Result<CallId, AgentError> {
        if let Some(error) = self.refuse.borrow().clone() {
            return Err(error);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.started
            .borrow_mut()
            .insert(id, (prompt.to_owned(), options.clone()));
        self.event(format!("start {prompt}"));
        Ok(id)
    }

    fn agent_start_isolated(
        &self,
        prompt: &str,
        options: &AgentOptions,
    ) -> Result<CallId, AgentError> {
        self.event(format!("isolated {prompt}"));
        self.agent_start(prompt, options)
    }

    fn isolated_changes(&self, id: CallId) -> Result<Isolated, ToolError> {
        Ok(Isolated {
            files: vec![Change {
                path: format!("f{id}.txt"),
                kind: "added".to_owned(),
                bytes: 3,
            }],
            diff: format!("diff of {id}"),
        })
    }

    fn keep_changes(&self, id: CallId) -> Result<Vec<String>, ToolError> {
        self.event(format!("keep {id}"));
        Ok(vec![format!("f{id}.txt")])
    }

    fn discard_changes(&self, id: CallId) {
        self.event(format!("discard {id}"));
    }

    fn agent_wait(&self, ids: &[CallId]) -> Vec<Completion> {
        // The host's default --max-batch: past it, the real host ends the run.
        assert!(
            ids.len() <= 4096,
            "batch limit exceeded: the workflow passed {} entries in one wait",
            ids.len()
        );
        self.waits.borrow_mut().push(ids.to_vec());
        let chosen: Vec<CallId> = match self.finish {
            Finish::AllNewestFirst => ids.iter().rev().copied().collect(),
            Finish::Oldest => ids.iter().min().into_iter().copied().collect(),
        };
        chosen
            .into_iter()
            .map(|id| {
                let (prompt, options) = self.started.borrow()[&id].clone();
                self.event(format!("finish {prompt}"));
                Completion {
                    id,
                    outcome: (self.respond)(&prompt, &options),
                }
            })
            .collect()
    }

    fn agent_cancel(&self, id: CallId) {
        let prompt = self.started.borrow()[&id].0.clone();
        self.event(format!("cancel {prompt}"));
    }

    fn read(&self, path: &str) -> Result<String, ToolError> {
        if path.starts_with("..") || path.starts_with('/') {
            return Err(ToolError::Denied(format!("{path} is outside the root")));
        }
        self.files
            .get(path)
            .map(|s| (*s).to_owned())
            .ok_or_else(|| ToolError::NotFound(format!("no file {path}")))
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, ToolError> {
        if pattern == "[" {
            return Err(ToolError::InvalidInput("unclosed [".to_owned()));
        }
        // `dir/*.js`: the scripts directly in `dir` (how `workflow(name)` looks for a meta.name).
        if let Some(dir) = pattern.strip_suffix("/*.js") {
            return Ok(self
                .files
                .keys()
                .filter_map(|p| p.strip_prefix(dir)?.strip_prefix('/').map(|rest| (p, rest)))
                .filter(|(_, rest)| rest.ends_with(".js") && !rest.contains('/'))
                .map(|(p, _)| (*p).to_owned())
                .collect());
        }
        Ok(self
            .files
            .keys()
            .filter(|p| pattern == "**" || p.ends_with(".rs"))
            .map(|p| (*p).to_owned())
            .collect())
    }

    fn grep(&self, pattern: &str, options: &GrepOptions) -> Result<Vec<GrepMatch>, ToolError> {
        self.event(format!(
            "grep {pattern} {:?} {} {:?}",
            options.glob, options.ignore_case, options.max_matches
        ));
        Ok(vec![GrepMatch {
            path: "src/lib.rs".to_owned(),
            line: 1,
            text: "fn main() {}".to_owned(),
        }])
    }

    fn git_log(&self, path: Option<&str>, max: Option<u32>) -> Result<Vec<Commit>, ToolError> {
        self.event(format!("git log {path:?} {max:?}"));
        Ok(vec![Commit {
            id: "abc".to_owned(),
            author: "A".to_owned(),
            time: 1_700_000_000,
            summary: "init".to_owned(),
        }])
    }

    fn git_show(&self, rev: &str, path: Option<&str>) -> Result<String, ToolError> {
        Ok(format!("show {rev} {path:?}"))
    }

    fn git_diff(&self, range: Option<&str>) -> Result<String, ToolError> {
        Ok(format!("diff {range:?}"))
    }

    fn git_status(&self) -> Result<Vec<StatusEntry>, ToolError> {
        Ok(vec![StatusEntry {
            path: "a.txt".to_owned(),
            status: "modified".to_owned(),
        }])
    }

    fn write(&self, path: &str, text: &str) -> Result<(), ToolError> {
        self.event(format!("write {path} {text:?}"));
        Ok(())
    }

    fn edit(&self, path: &str, old: &str, new: &str) -> Result<(), ToolError> {
        if old == "absent" {
            return Err(ToolError::InvalidInput(format!(
                "edit of {path:?}: the text to replace does not occur in the file"
            )));
        }
        self.event(format!("edit {path} {old:?} {new:?}"));
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), ToolError> {
        self.event(format!("remove {path}"));
        Ok(())
    }

    fn revert(&self, path: &str) -> Result<(), ToolError> {
        self.event(format!("revert {path}"));
        Ok(())
    }

    fn changes(&self) -> Vec<Change> {
        vec![Change {
            path: "a.txt".to_owned(),
            kind: "modified".to_owned(),
            bytes: 3,
        }]
    }

    fn run(
        &self,
        command: &str,
        args: &[String],
        timeout_ms: Option<u32>,
    ) -> Result<CommandOutput, ToolError> {
        if command != "node" {
            return Err(ToolError::Denied(format!("running {command:?} is denied")));
        }
        Ok(CommandOutput {
            code: 1,
            stdout: format!("{command} {args:?} {timeout_ms:?}"),
            stderr: "failed".to_owned(),
        })
    }

    fn phase(&self, title: &str) {
        self.event(format!("phase {title}"));
    }

    fn log(&self, message: &str) {
        self.event(format!("log {message}"));
    }

    fn budget_total(&self) -> Option<u64> {
        self.budget
    }

    fn budget_spent(&self) -> u64 {
        self.spent
    }

    fn budget_remaining(&self) -> Option<u64> {
        self.budget.map(|b| b - self.spent)
    }
}

fn run_on(host: &Rc<FakeHost>, source: &str, args: &str) -> Result<String, String> {
    let workflow = Workflow::load("test.js", source, host.clone(), Limits::default())?;
    workflow.run(args)
}

fn run(source: &str) -> Result<String, String> {
    run_on(&Rc::new(FakeHost::new(echo())), source, "null")
}

#[track_caller]
fn ok(source: &str) -> String {
    run(source).unwrap_or_else(|e| panic!("the script failed:\n{e}"))
}

#[track_caller]
fn err(source: &str) -> String {
    match run(source) {
        Ok(json) => panic!("the script should fail, but returned {json}"),
        Err(e) => e,
    }
}

#[test]
fn rule_01_meta_is_a_pure_literal_and_stays_readable() {
    assert_eq!(
        ok("export const meta = { name: 'n', description: 'd' }\nreturn meta.name"),
        "\"n\""
    );
    let error = err("export const meta = { name: NAME, description: 'd' }");
    assert!(
        error.starts_with("test.js:1:29: `NAME` is a variable"),
        "{error}"
    );
    assert!(err("export const meta = { name: 'n' }").contains("meta.description is required"));
}

#[test]
fn rule_02_top_level_await_and_return() {
    assert_eq!(ok("return 1 + 1"), "2");
    assert_eq!(
        ok("const x = await Promise.resolve(5)\nreturn { x, list: [1, 'a', null] }"),
        r#"{"x":5,"list":[1,"a",null]}"#
    );
    assert_eq!(ok("const x = 1"), "null");
    assert_eq!(ok("return undefined"), "null");
    let error = err("return 10n");
    assert!(error.contains("cannot be turned into JSON"), "{error}");
}

#[test]
fn rule_02_a_result_without_a_json_form_is_an_error_not_null() {
    for (script, what) in [
        ("return () => 1", "a function"),
        ("return async function f() {}", "a function"),
        ("return Symbol('s')", "a symbol"),
        (
            "return { toJSON() {} }",
            "a value whose toJSON() gives no JSON value",
        ),
    ] {
        let error = err(script);
        assert!(
            error.starts_with(&format!(
                "test.js: the workflow returned {what}, which has no JSON form; return \
                 JSON-serialisable data"
            )),
            "{script}: {error}"
        );
    }
    // Inside the result, JSON's own rules hold: null in arrays, left out of objects.
    assert_eq!(
        ok("return [() => 1, undefined, Symbol('s')]"),
        "[null,null,null]"
    );
    assert_eq!(
        ok("return { f() {}, u: undefined, s: Symbol('s'), n: 1 }"),
        r#"{"n":1}"#
    );
    // No `return` at all is still `null`.
    assert_eq!(ok("return undefined"), "null");
}

#[test]
fn rule_03_imports_typescript_and_syntax_errors_fail_before_running() {
    let host = Rc::new(FakeHost::new(echo()));
    let error = Workflow::load(
        "x.js",
        "import fs from 'fs'\nagent('never')",
        host.clone(),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(
        error.starts_with("x.js:1:1: `import` is not supported"),
        "{error}"
    );
    let error = err("const m = await import('x')");
    assert!(
        error.starts_with("test.js:1:17: dynamic `import()`"),
        "{error}"
    );
    let error = err("\nconst r = require('x')");
    assert!(error.starts_with("test.js:2:11: `require()`"), "{error}");

    let error = err("const x = 1\nconst y = (1 + ;\n");
    assert!(error.starts_with("test.js:2:16: SyntaxError:"), "{error}");
    // QuickJS stops in the wrapper after the script: the error names the script's end.
    let error = err("if (x) {\n  log(1)\n");
    assert!(
        error.starts_with("test.js:3:1: SyntaxError: the script ends too early"),
        "{error}"
    );
    assert!(
        error.contains("test.js:1:8: this `{` is never closed"),
        "{error}"
    );
    let error = err("const x: number = 1");
    assert!(error.starts_with("test.js:1:8: SyntaxError:"), "{error}");
    assert!(
        error.contains("test.js:1:8: this looks like TypeScript"),
        "{error}"
    );
    assert!(host.events().is_empty());
}

#[test]
fn rule_03_a_nul_character_is_refused_with_its_line_and_column() {
    let host = Rc::new(FakeHost::new(echo()));
    let error = Workflow::load(
        "nul.js",
        "const a = 1\nconst s = 'x\0y'\nagent('never')",
        host.clone(),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(
        error.starts_with(
            "nul.js:2:13: a NUL character (U+0000) is inside this string literal, and the runtime \
             cannot compile a script that contains one: write it as the escape `\\u0000` instead"
        ),
        "{error}"
    );
    let error = err("log(`a\0`)");
    assert!(
        error.starts_with("test.js:1:7: a NUL character (U+0000) is inside this template literal"),
        "{error}"
    );
    let error = err("return 1 // \0");
    assert!(
        error.starts_with("test.js:1:13: the script contains a NUL character (U+0000) here"),
        "{error}"
    );
    // A nested workflow's script is checked the same way.
    let mut fake = FakeHost::new(echo());
    fake.files.insert("nul.js", "\nreturn '\0'");
    let error = run_on(&Rc::new(fake), "await workflow('nul.js')", "null").unwrap_err();
    assert!(
        error.contains("[invalid-script]: workflow(\"nul.js\"): the workflow cannot run; fix it and \
                        try again:\nnul.js:2:9: a NUL character (U+0000) is inside this string literal"),
        "{error}"
    );
    assert!(host.events().is_empty());
}

#[test]
fn rule_03_nesting_past_the_parsers_limit_is_refused_before_it_runs() {
    let deep = format!("return {}1{}", "[".repeat(101), "]".repeat(101));
    let error = err(&deep);
    assert!(
        error.starts_with(
            "test.js:1:108: brackets and prefix operators nest more than 100 deep here, the most \
             the workflow runtime compiles (MAX_NESTING)"
        ),
        "{error}"
    );
    assert!(err(&format!("return {}1", "!".repeat(101))).contains("(MAX_NESTING)"));
    // (The front end's tests check the boundary itself; on the host target QuickJS's own stack
    // check, which measures native frames there, stops a parse well before 100 levels.)
    assert_eq!(
        ok(&format!("return {}1{}", "[".repeat(30), "]".repeat(30))).len(),
        61
    );
    // Code compiled at run time by the Function constructors is held to the same limit.
    let result = ok("const out = []\n\
        for (const make of [Function, (async () => {}).constructor, function* () {}.constructor]) {\n\
          try { make('return ' + '['.repeat(200)) } catch (e) { out.push(e.name, e.message.split(':')[0]) }\n\
        }\n\
        out.push(Function('a', 'return a + 1')(2), await (async () => {}).constructor('return 7')())\n\
        return out");
    assert_eq!(
        result,
        r#"["SyntaxError","Function()","SyntaxError","AsyncFunction()","SyntaxError","GeneratorFunction()",3,7]"#
    );
}

#[test]
fn rule_04_no_clock_no_randomness() {
    for expr in [
        "Date.now()",
        "Math.random()",
        "new Date()",
        "Date()",
        "performance.now()",
        "setTimeout(() => {}, 1)",
    ] {
        let error = err(&format!("return {expr}"));
        assert!(
            error.contains("is not available in a workflow: runs must replay deterministically"),
            "{expr}: {error}"
        );
        assert!(error.contains("test.js:1:"), "{expr}: {error}");
    }
    assert_eq!(
        ok("return new Date(0).toISOString()"),
        "\"1970-01-01T00:00:00.000Z\""
    );
    assert_eq!(
        ok("return [Date.UTC(2020, 0, 1), new Date(0) instanceof Date, typeof Date.parse]"),
        "[1577836800000,true,\"function\"]"
    );
}

#[test]
fn rule_05_args() {
    let host = Rc::new(FakeHost::new(echo()));
    assert_eq!(
        run_on(&host, "return args.files.length", r#"{"files":["a","b"]}"#).unwrap(),
        "2"
    );
    assert_eq!(
        run_on(&host, "return typeof args", "").unwrap(),
        "\"undefined\""
    );
    assert!(
        run_on(&host, "return args", "{nope")
            .unwrap_err()
            .starts_with("args are not valid JSON")
    );
}

#[test]
fn rule_06_agent_resolves_to_text_or_to_the_schema_object() {
    let host = Rc::new(FakeHost::new(echo()));
    let result = run_on(
        &host,
        "const [a, b] = await Promise.all([agent('hi'), agent('obj', { schema: { type: 'object' }, label: 'L', \
         phase: 'P', model: 'haiku', effort: 'high', tools: ['read'], maxTokens: 100, maxTurns: 3, timeoutMs: 5000 })])\n\
         return { a, b }",
        "null",
    )
    .unwrap();
    assert_eq!(result, r#"{"a":"echo: hi","b":{"prompt":"obj"}}"#);
    let started = host.started.borrow();
    let (_, options) = &started[&2];
    assert_eq!(options.schema.as_deref(), Some(r#"{"type":"object"}"#));
    assert_eq!(options.label.as_deref(), Some("L"));
    assert_eq!(options.phase.as_deref(), Some("P"));
    assert_eq!(options.model.as_deref(), Some("haiku"));
    assert!(matches!(options.effort, Some(Effort::High)));
    assert_eq!(options.tools, Some(vec!["read".to_owned()]));
    assert_eq!(
        (options.max_tokens, options.max_turns, options.timeout_ms),
        (Some(100), Some(3), Some(5000))
    );
}

#[test]
fn rule_06_agent_null_on_cancel_and_provider_error_and_throws_otherwise() {
    let host = Rc::new(FakeHost::new(Box::new(|prompt, _| match prompt {
        "cancel" => Err(AgentError::Cancelled("stopped".to_owned())),
        "provider" => Err(AgentError::Provider("500 after retries".to_owned())),
        "schema" => Err(AgentError::SchemaMismatch(
            "/real: expected boolean".to_owned(),
        )),
        "budget" => Err(AgentError::BudgetExhausted(
            "needs 900 tokens, 10 left".to_owned(),
        )),
        _ => Err(AgentError::Timeout("30 s".to_owned())),
    })));
    let script = "const out = []\n\
        out.push(await agent('cancel'), await agent('provider'))\n\
        for (const p of ['schema', 'budget', 'timeout']) {\n\
          try { await agent(p, { label: p }) } catch (e) { out.push([e.name, e.code, e.message]) }\n\
        }\n\
        return out";
    let result: serde_json::Value =
        serde_json::from_str(&run_on(&host, script, "null").unwrap()).unwrap();
    assert_eq!(
        result,
        serde_json::json!([
            null,
            null,
            [
                "AgentError",
                "schema-mismatch",
                "agent 'schema' failed: /real: expected boolean"
            ],
            [
                "AgentError",
                "budget-exhausted",
                "agent 'budget' failed: needs 900 tokens, 10 left"
            ],
            ["AgentError", "timeout", "agent 'timeout' failed: 30 s"]
        ])
    );
    assert!(
        host.logs()
            .iter()
            .any(|l| l == "agent call 2 returned null: 500 after retries"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn rule_06_agent_refused_at_start_rejects() {
    let host = Rc::new(FakeHost::new(echo()));
    *host.refuse.borrow_mut() = Some(AgentError::AgentLimit("1000 agents".to_owned()));
    let result = run_on(
        &host,
        "try { await agent('x') } catch (e) { return [e.code, e.message] }",
        "null",
    )
    .unwrap();
    assert_eq!(result, r#"["agent-limit","agent() failed: 1000 agents"]"#);
    let error = run_on(&host, "await agent('x')", "null").unwrap_err();
    assert!(
        error.starts_with("AgentError [agent-limit]: agent() failed: 1000 agents"),
        "{error}"
    );
}

#[test]
fn rule_06_agent_checks_its_arguments() {
    let error = err("await agent('x', { maxTokens: 'many' })");
    assert!(
        error.starts_with("TypeError: agent(prompt, opts): opts.maxTokens must be a whole number"),
        "{error}"
    );
    assert!(err("await agent('x', { effort: 'ultra' })").contains("opts.effort must be one of"));
    assert!(err("await agent(42)").contains("prompt must be a string, not number"));
    let host = Rc::new(FakeHost::new(echo()));
    run_on(
        &host,
        "await agent('a', { colour: 1 }); await agent('b', { colour: 2 })",
        "null",
    )
    .unwrap();
    let warnings: Vec<_> = host
        .logs()
        .into_iter()
        .filter(|l| l.contains("colour"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn rule_07_parallel_keeps_order_and_turns_failures_into_null() {
    let host = Rc::new(FakeHost::new(echo()));
    let result = run_on(
        &host,
        "return await parallel([() => agent('a'), () => { throw new Error('no') }, async () => agent('c'), () => 4, agent('e')])",
        "null",
    )
    .unwrap();
    assert_eq!(result, r#"["echo: a",null,"echo: c",4,"echo: e"]"#);
    assert!(
        host.logs()
            .iter()
            .any(|l| l == "parallel failed for item 1, which becomes null: Error: no"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn rule_07_a_batch_logs_the_first_failure_of_each_kind_and_counts_the_rest() {
    let host = Rc::new(FakeHost::new(echo()));
    let result = run_on(
        &host,
        "const spent = () => { const e = new Error('token budget exhausted'); e.code = 'budget-exhausted'; throw e }\n\
         const out = await parallel([...Array.from({ length: 500 }, () => spent), () => { throw new TypeError('bad') }, () => 1])\n\
         await pipeline([1, 2, 3], (x) => { if (x > 1) throw new RangeError('big') ; return x })\n\
         return out.filter((x) => x === null).length",
        "null",
    )
    .unwrap();
    assert_eq!(result, "501");
    assert_eq!(
        host.logs(),
        [
            "parallel failed for item 0, which becomes null: Error [budget-exhausted]: token budget exhausted",
            "parallel failed for item 500, which becomes null: TypeError: bad",
            "parallel failed for 499 more items with budget-exhausted (as item 0 did), which become null",
            "pipeline stage 1 failed for item 1, which becomes null: RangeError: big",
            "pipeline stage 1 failed for 1 more item with RangeError (as item 1 did), which becomes null",
        ]
    );
}

#[test]
fn rule_08_pipeline_has_no_barrier_and_keeps_order() {
    let mut fake = FakeHost::new(echo());
    fake.finish = Finish::Oldest;
    let host = Rc::new(fake);
    let result = run_on(
        &host,
        "return await pipeline(['A', 'B'], (p, item, i) => agent(`${p}1`), (prev, item, i) => agent(`${item}2 ${prev} ${i}`))",
        "null",
    )
    .unwrap();
    assert_eq!(result, r#"["echo: A2 echo: A1 0","echo: B2 echo: B1 1"]"#);
    // A's second stage starts before B's first stage finishes.
    assert_eq!(
        host.events(),
        [
            "start A1",
            "start B1",
            "finish A1",
            "start A2 echo: A1 0",
            "finish B1",
            "start B2 echo: B1 1",
            "finish A2 echo: A1 0",
            "finish B2 echo: B1 1"
        ]
    );
}

#[test]
fn rule_08_pipeline_stage_that_throws_skips_the_rest() {
    let host = Rc::new(FakeHost::new(echo()));
    let result = run_on(
        &host,
        "let third = 0\n\
         const r = await pipeline([1, 2, 3], (x) => { if (x === 2) throw new Error('two'); return x * 10 }, (x) => { third++; return x + 1 })\n\
         return [r, third]",
        "null",
    )
    .unwrap();
    assert_eq!(result, "[[11,null,31],2]");
    assert!(
        host.logs()
            .iter()
            .any(|l| l == "pipeline stage 1 failed for item 1, which becomes null: Error: two")
    );
}

#[test]
fn rule_09_lists_longer_than_4096_are_refused() {
    let error = err("await parallel(Array.from({ length: 4097 }, () => () => 1))");
    assert!(
        error
            .starts_with("RangeError: parallel(thunks): 4097 items is more than the limit of 4096"),
        "{error}"
    );
    let error = err("await pipeline(new Array(5000).fill(1), x => x)");
    assert!(
        error.starts_with("RangeError: pipeline(items, ...stages): 5000 items"),
        "{error}"
    );
    assert_eq!(
        ok("return (await parallel(Array.from({ length: 4096 }, (_, i) => () => i))).length"),
        "4096"
    );
}

#[test]
fn rule_09_a_wait_asks_about_at_most_wait_batch_calls() {
    // Two parallel() calls of 2500 agents each, at once: 5000 calls pending, more than the host
    // lets one `wait` ask about (the fake host, like the real one, refuses more than 4096).
    let host = Rc::new(FakeHost::new(echo()));
    let result = run_on(
        &host,
        "const fan = (p) => parallel(Array.from({ length: 2500 }, (_, i) => () => agent(`${p}${i}`)))\n\
         const [a, b] = await Promise.all([fan('a'), fan('b')])\n\
         return [a.length, b.length, a[2499], b[0]]",
        "null",
    )
    .unwrap();
    assert_eq!(result, r#"[2500,2500,"echo: a2499","echo: b0"]"#);
    let waits = host.waits.borrow();
    assert!(waits.iter().all(|ids| ids.len() <= WAIT_BATCH));
    // The oldest calls first: the host runs them first.
    assert_eq!(waits[0], (1..=WAIT_BATCH as u64).collect::<Vec<_>>());
    assert_eq!(waits.iter().map(Vec::len).sum::<usize>(), 5000);
}

#[test]
fn rule_10_phase_and_log() {
    let host = Rc::new(FakeHost::new(echo()));
    run_on(
        &host,
        "phase('Review')\nlog('found', 3, { a: 1 })\nconsole.log('via console')",
        "null",
    )
    .unwrap();
    assert_eq!(
        host.events(),
        ["phase Review", "log found 3 {\"a\":1}", "log via console"]
    );
}

#[test]
fn rule_11_budget() {
    let mut fake = FakeHost::new(echo());
    fake.budget = Some(1000);
    fake.spent = 250;
    let host = Rc::new(fake);
    assert_eq!(
        run_on(
            &host,
            "return [budget.total, budget.spent(), budget.remaining()]",
            "null"
        )
        .unwrap(),
        "[1000,250,750]"
    );
    assert_eq!(
        ok("return [budget.total, budget.spent(), budget.remaining() === Infinity]"),
        "[null,0,true]"
    );
}

/// A host whose root holds `workflows/child.js` (returns its args and an agent's answer),
/// `nests.js` (tries to start another workflow) and `broken.js` (an `import`).
fn host_with_workflows() -> Rc<FakeHost> {
    let mut fake = FakeHost::new(echo());
    fake.files.insert(
        "workflows/child.js",
        "export const meta = { name: 'child', description: 'd' }\n\
         const answer = await agent(`child ${args.n}`)\n\
         return { args, answer, meta: meta.name }",
    );
    fake.files.insert(
        "nests.js",
        "return await workflow('workflows/child.js', { n: 1 })",
    );
    fake.files.insert("broken.js", "\nimport x from 'y'");
    fake.files
        .insert("throws.js", "\nthrow new Error('child failed')");
    Rc::new(fake)
}

#[test]
fn rule_12_workflow_runs_another_script_inline() {
    let host = host_with_workflows();
    let source = "const meta = 'parent'\n\
                  const [a, b] = await parallel([() => workflow('child', { n: 1 }), () => workflow('workflows/child.js', { n: 2 })])\n\
                  return { a, b, args: args ?? null, meta }";
    let result: serde_json::Value =
        serde_json::from_str(&run_on(&host, source, "null").unwrap()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({
            "a": { "args": { "n": 1 }, "answer": "echo: child 1", "meta": "child" },
            "b": { "args": { "n": 2 }, "answer": "echo: child 2", "meta": "child" },
            "args": null,
            "meta": "parent",
        })
    );
}

#[test]
fn rule_12_workflow_nests_one_level_only() {
    let host = host_with_workflows();
    let error = run_on(&host, "return await workflow('nests.js')", "null").unwrap_err();
    assert!(
        error.starts_with("WorkflowError [nesting]: workflow(\"workflows/child.js\"): workflows nest one level only"),
        "{error}"
    );
    assert!(error.contains("(nests.js:1:"), "{error}");
    assert!(host.events().is_empty(), "{:?}", host.events());
}

#[test]
fn rule_12_a_nested_workflow_cannot_nest_by_any_route() {
    // Each script runs as a nested workflow and tries to start `workflows/child.js` (whose agent
    // would log `start child ...`) another way than its own `workflow`. In its realm every
    // `workflow` is the one that refuses, and nothing of the top-level realm is reachable.
    let nesting = "WorkflowError [nesting]";
    let routes = [
        (
            "global.js",
            "return await globalThis.workflow('workflows/child.js', { n: 1 })",
            nesting,
        ),
        (
            "function.js",
            "return await Function('return workflow')()('workflows/child.js', { n: 1 })",
            nesting,
        ),
        (
            "eval.js",
            "return await (0, eval)('workflow')('workflows/child.js', { n: 1 })",
            nesting,
        ),
        (
            "constructor.js",
            "return await agent.constructor('return workflow')()('workflows/child.js', { n: 1 })",
            nesting,
        ),
        (
            "args.js",
            "return await args.constructor.constructor('return workflow')()('workflows/child.js', { n: 1 })",
            nesting,
        ),
        // The top-level script stored its `workflow` in a global of its own realm.
        (
            "captured.js",
            "return await globalThis.leaked('workflows/child.js', { n: 1 })",
            "TypeError: not a function",
        ),
        // CallSite.getFunction() would hand out the functions on the stack.
        (
            "stack.js",
            "Error.prepareStackTrace = (e, sites) => sites.map((s) => s.getFunction())\n\
             return await new Error().stack.find((f) => f?.name === 'workflow')('workflows/child.js', { n: 1 })",
            "TypeError: Error.prepareStackTrace is not available in a workflow",
        ),
        // The audit's 50 levels: a workflow that starts itself.
        (
            "recursive.js",
            "return await globalThis.workflow('recursive.js')",
            nesting,
        ),
    ];
    let mut fake = Rc::into_inner(host_with_workflows()).unwrap();
    for (path, source, _) in routes {
        fake.files.insert(path, source);
    }
    let host = Rc::new(fake);
    for (path, _, expected) in routes {
        let outcome = run_on(
            &host,
            &format!(
                "globalThis.leaked = workflow\n\
                 try {{ await workflow('{path}', {{ n: 0 }}); return 'nested again' }}\n\
                 catch (e) {{ return e.code ? `${{e.name}} [${{e.code}}]: ${{e.message}}` : `${{e.name}}: ${{e.message}}` }}"
            ),
            "null",
        )
        .unwrap();
        assert!(
            outcome.starts_with(&format!("\"{expected}")),
            "{path}: {outcome}"
        );
    }
    assert!(
        !host.events().iter().any(|e| e.starts_with("start child")),
        "{:?}",
        host.events()
    );
}

#[test]
fn rule_12_a_nested_workflow_shares_no_globals_and_crosses_as_json() {
    let mut fake = FakeHost::new(echo());
    fake.files.insert(
        "inner.js",
        "agent('forgotten')\n\
         return { secret: typeof secret, args, date: new Date(0), f() {} }",
    );
    fake.files.insert("function.js", "return () => 1");
    // What crosses is made by the realm's own bounded stringify, not by the global it replaced.
    fake.files.insert(
        "object.js",
        "JSON.stringify = () => '['.repeat(100000)\nthrow { code: 'custom', items: [1, 2] }",
    );
    fake.files.insert(
        "typed.js",
        "const e = new TypeError('bad'); e.code = 'mine'; throw e",
    );
    let host = Rc::new(fake);
    let result = run_on(
        &host,
        "globalThis.secret = 1\n\
         const inner = await workflow('inner.js', { n: 1 })\n\
         const errors = []\n\
         for (const w of ['function.js', 'object.js', 'typed.js']) {\n\
           try { await workflow(w) } catch (e) { errors.push(e instanceof Error ? [e.name, e.code, e instanceof TypeError, e.message] : e) }\n\
         }\n\
         return { inner, errors }",
        "null",
    )
    .unwrap();
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result["inner"],
        serde_json::json!({ "secret": "undefined", "args": { "n": 1 }, "date": "1970-01-01T00:00:00.000Z" })
    );
    assert_eq!(result["errors"][0][0], "WorkflowError");
    assert_eq!(result["errors"][0][1], "invalid-result");
    assert!(
        result["errors"][0][3]
            .as_str()
            .unwrap()
            .starts_with("workflow(\"function.js\"): the workflow returned a function"),
        "{result}"
    );
    assert_eq!(
        result["errors"][1],
        serde_json::json!({ "code": "custom", "items": [1, 2] })
    );
    assert_eq!(
        result["errors"][2],
        serde_json::json!(["TypeError", "mine", true, "bad"])
    );
    // The call the nested workflow left running was cancelled when it returned.
    assert!(
        host.events().iter().any(|e| e == "cancel forgotten"),
        "{:?}",
        host.events()
    );
}

#[test]
fn rule_12_workflow_errors_name_the_file() {
    let host = host_with_workflows();
    let error = run_on(&host, "await workflow('missing')", "null").unwrap_err();
    assert!(
        error.starts_with(
            "WorkflowError [not-found]: workflow(\"missing\"): no such workflow in the run's root \
             (looked for .corral/workflows/missing.js, .claude/workflows/missing.js, \
             workflows/missing.js, a script whose meta.name is \"missing\" in .corral/workflows/, \
             .claude/workflows/, workflows/); save it in one of those directories, or pass \
             { scriptPath: 'path/from/the/root.js' }"
        ),
        "{error}"
    );
    let error = run_on(&host, "await workflow('gone.js')", "null").unwrap_err();
    assert!(
        error.contains(".claude/workflows/, workflows/, gone.js); save it"),
        "{error}"
    );
    let error = run_on(&host, "await workflow('broken.js')", "null").unwrap_err();
    assert!(
        error.contains("[invalid-script]: workflow(\"broken.js\"): the workflow cannot run; fix it and try again:\nbroken.js:2:1: `import` is not supported"),
        "{error}"
    );
    let error = run_on(&host, "await workflow('throws.js')", "null").unwrap_err();
    assert!(error.starts_with("Error: child failed\n"), "{error}");
    assert!(error.contains("(throws.js:2:11)"), "{error}");
    let error = run_on(&host, "await workflow('../x.js')", "null").unwrap_err();
    assert!(
        error.starts_with("ToolError [denied]: workflow(\"../x.js\")"),
        "{error}"
    );
    let error = run_on(
        &host,
        "await workflow('child', { f() {} , big: 10n })",
        "null",
    )
    .unwrap_err();
    assert!(error.contains("args must be JSON-serialisable"), "{error}");
}

/// A host whose root holds saved workflows in every directory `workflow(name)` looks in.
fn host_with_saved_workflows() -> Rc<FakeHost> {
    let mut fake = FakeHost::new(echo());
    let returns = |name: &'static str| -> &'static str {
        Box::leak(
            format!(
                "export const meta = {{ name: '{name}', description: 'd' }}\n\
                 return {{ from: '{name}', args: args === undefined ? 'undefined' : args }}"
            )
            .into_boxed_str(),
        )
    };
    for (path, meta_name) in [
        (".corral/workflows/review.js", "corral-review"),
        (".claude/workflows/review.js", "claude-review"),
        (".claude/workflows/triage-v2.js", "triage"),
        ("workflows/review.js", "plain-review"),
        ("workflows/audit.js", "audit-files"),
        ("workflows/zz-audit.js", "audit-files"),
        ("tools/deep/helper.js", "helper"),
        ("local.js", "local"),
    ] {
        fake.files.insert(path, returns(meta_name));
    }
    fake.files
        .insert("workflows/broken.js", "import x from 'y'");
    Rc::new(fake)
}

#[test]
fn rule_16_workflow_takes_a_script_path_or_a_saved_name() {
    let host = host_with_saved_workflows();
    let result = run_on(
        &host,
        "return await Promise.all([\n\
           workflow({ scriptPath: 'tools/deep/helper.js' }, { n: 1 }),\n\
           workflow('tools/deep/helper.js'),\n\
           workflow('review'),\n\
           workflow('review.js'),\n\
           workflow('triage'),\n\
           workflow('audit-files'),\n\
           workflow('local.js'),\n\
         ])",
        "",
    )
    .unwrap();
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result,
        serde_json::json!([
            { "from": "helper", "args": { "n": 1 } },
            { "from": "helper", "args": "undefined" },
            // By file name, .corral/workflows/ first.
            { "from": "corral-review", "args": "undefined" },
            { "from": "corral-review", "args": "undefined" },
            // By meta.name when no file has the name; the first directory's first file wins.
            { "from": "triage", "args": "undefined" },
            { "from": "audit-files", "args": "undefined" },
            // A `.js` name that no directory holds is still a file at the root.
            { "from": "local", "args": "undefined" },
        ])
    );

    // A name never reaches outside the directories: `helper` is only a scriptPath.
    let error = run_on(&host, "await workflow('helper')", "").unwrap_err();
    assert!(
        error.starts_with("WorkflowError [not-found]: workflow(\"helper\"): no such workflow"),
        "{error}"
    );
    let error = run_on(&host, "await workflow({ scriptPath: 'nope.js' })", "").unwrap_err();
    assert!(
        error.starts_with("ToolError [not-found]: workflow({ scriptPath: \"nope.js\" }): "),
        "{error}"
    );
    let error = run_on(&host, "await workflow({ scriptPath: '../x.js' })", "").unwrap_err();
    assert!(
        error.starts_with("ToolError [denied]: workflow({ scriptPath: \"../x.js\" }): "),
        "{error}"
    );
    let error = run_on(&host, "await workflow('broken')", "").unwrap_err();
    assert!(
        error.contains(
            "[invalid-script]: workflow(\"broken\"): the workflow cannot run; fix it and try \
             again:\nworkflows/broken.js:1:1: `import` is not supported"
        ),
        "{error}"
    );
    for (call, expected) in [
        (
            "workflow({ path: 'x.js' })",
            "TypeError: workflow({ scriptPath }, args): scriptPath must be a string, not undefined",
        ),
        (
            "workflow(42)",
            "TypeError: workflow(nameOrPath, args): the first argument must be a workflow's name, a path relative to the root, or { scriptPath }, not number",
        ),
        (
            "workflow(null)",
            "TypeError: workflow(nameOrPath, args): the first argument must be a workflow's name, a path relative to the root, or { scriptPath }, not null",
        ),
    ] {
        let error = run_on(&host, &format!("await {call}"), "").unwrap_err();
        assert!(error.starts_with(expected), "{call}: {error}");
    }
}

#[test]
fn rule_16_a_nested_workflow_cannot_nest_by_script_path_either() {
    let mut fake = Rc::into_inner(host_with_saved_workflows()).unwrap();
    fake.files.insert(
        "nests.js",
        "return await workflow({ scriptPath: 'local.js' })",
    );
    let host = Rc::new(fake);
    let error = run_on(&host, "return await workflow('nests.js')", "").unwrap_err();
    assert!(
        error.starts_with(
            "WorkflowError [nesting]: workflow({ scriptPath: \"local.js\" }): workflows nest one \
             level only"
        ),
        "{error}"
    );
}

/// The model each started agent was given, by prompt.
fn models(host: &FakeHost) -> Vec<(String, Option<String>)> {
    host.started
        .borrow()
        .values()
        .map(|(prompt, options)| (prompt.clone(), options.model.clone()))
        .collect()
}

#[test]
fn rule_16_a_phase_model_is_the_default_model_of_its_agents() {
    let host = Rc::new(FakeHost::new(echo()));
    let source = "export const meta = { name: 'n', description: 'd', phases: [\n\
                    { title: 'Review', model: 'opus' }, { title: 'Verify', model: 'haiku' }, { title: 'Report' }] }\n\
                  await agent('before any phase')\n\
                  phase('Review')\n\
                  await agent('in review')\n\
                  await agent('in review, own model', { model: 'sonnet' })\n\
                  await agent('in review, model null', { model: null })\n\
                  await agent('verify by option', { phase: 'Verify' })\n\
                  phase('Report')\n\
                  await agent('in report')\n\
                  await agent('review by option', { phase: 'Review' })\n";
    run_on(&host, source, "").unwrap();
    let some = |m: &str| Some(m.to_owned());
    assert_eq!(
        models(&host),
        [
            ("before any phase".to_owned(), None),
            ("in review".to_owned(), some("opus")),
            ("in review, own model".to_owned(), some("sonnet")),
            ("in review, model null".to_owned(), some("opus")),
            ("verify by option".to_owned(), some("haiku")),
            ("in report".to_owned(), None),
            ("review by option".to_owned(), some("opus")),
        ]
    );
    // Phases are not the agent's to name: the host still puts them in the current one.
    assert_eq!(host.started.borrow()[&2].1.phase, None);

    // Each script's own meta: a nested workflow's phases give its agents their models, and the
    // run's current phase is the last one entered in any of them.
    let mut fake = FakeHost::new(echo());
    fake.files.insert(
        "workflows/child.js",
        "export const meta = { name: 'child', description: 'd', phases: [{ title: 'Review', model: 'child-model' }] }\n\
         phase('Review')\n\
         return await agent('child in review')",
    );
    let host = Rc::new(fake);
    let source = "export const meta = { name: 'n', description: 'd', phases: [{ title: 'Review', model: 'parent-model' }] }\n\
                  await workflow('child')\n\
                  await agent('parent after the child')";
    run_on(&host, source, "").unwrap();
    assert_eq!(
        models(&host),
        [
            ("child in review".to_owned(), Some("child-model".to_owned())),
            (
                "parent after the child".to_owned(),
                Some("parent-model".to_owned())
            ),
        ]
    );
}

#[test]
fn rule_16_a_phase_missing_from_meta_phases_is_warned_about_once() {
    let host = Rc::new(FakeHost::new(echo()));
    let source = "export const meta = { name: 'n', description: 'd', phases: [{ title: 'Review' }, { title: 'Verify' }] }\n\
                  for (const title of ['Review', 'Deploy', 'Verify', 'Deploy', 'Cleanup', 'Deploy']) phase(title)";
    run_on(&host, source, "").unwrap();
    let warning = |title: &str| {
        format!(
            "log phase({title:?}): this title is not in meta.phases (it lists \"Review\", \
             \"Verify\"); add {{ title: {title:?} }} to meta.phases so that plans and progress \
             know the phase, or use one of its titles"
        )
    };
    assert_eq!(
        host.events(),
        [
            "phase Review".to_owned(),
            "phase Deploy".to_owned(),
            warning("Deploy"),
            "phase Verify".to_owned(),
            "phase Deploy".to_owned(),
            "phase Cleanup".to_owned(),
            warning("Cleanup"),
            "phase Deploy".to_owned(),
        ]
    );
    // Without meta.phases (or without meta) there is nothing to compare with.
    for source in [
        "phase('Anything')",
        "export const meta = { name: 'n', description: 'd' }\nphase('Anything')",
    ] {
        let host = Rc::new(FakeHost::new(echo()));
        run_on(&host, source, "").unwrap();
        assert_eq!(host.events(), ["phase Anything"], "{source}");
    }
    // `phases: []` lists none: every title is warned about.
    let host = Rc::new(FakeHost::new(echo()));
    run_on(
        &host,
        "export const meta = { name: 'n', description: 'd', phases: [] }\nphase('A')",
        "",
    )
    .unwrap();
    assert!(
        host.logs()[0].contains("(it lists none)"),
        "{:?}",
        host.logs()
    );
}

#[test]
fn rule_15_agent_type_is_not_implemented_and_is_ignored_once_with_a_log_line() {
    let host = Rc::new(FakeHost::new(echo()));
    let source = "const a = await agent('one', { agentType: 'reviewer' })\n\
                  const b = await agent('two', { agentType: 'reviewer' })\n\
                  return [a, b]";
    assert_eq!(
        run_on(&host, source, "").unwrap(),
        "[\"echo: one\",\"echo: two\"]"
    );
    let options = "(options: label, phase, model, effort, schema, tools, maxTokens, maxTurns, \
                   timeoutMs, isolation)";
    assert_eq!(
        host.logs(),
        [format!(
            "agent(): unknown option `agentType` is ignored {options}"
        )]
    );
}

#[test]
fn rule_15_an_isolated_agent_resolves_to_its_result_and_its_changes() {
    let host = Rc::new(FakeHost::new(echo()));
    let source = "const a = await agent('one', { isolation: 'worktree' })\n\
                  const b = await agent('two', { isolation: 'worktree' })\n\
                  const kept = a.changes.keep()\n\
                  b.changes.drop()\n\
                  let twice; try { a.changes.keep() } catch (e) { twice = e.message }\n\
                  let bad; try { await agent('x', { isolation: 'branch' }) } catch (e) { bad = e.message }\n\
                  return [a.result, a.changes.files, a.changes.diff, kept, b.result, twice, bad]";
    let result: serde_json::Value =
        serde_json::from_str(&run_on(&host, source, "").unwrap()).unwrap();
    assert_eq!(
        result,
        serde_json::json!([
            "echo: one",
            [{ "path": "f1.txt", "kind": "added", "bytes": 3 }],
            "diff of 1",
            ["f1.txt"],
            "echo: two",
            "changes.keep(): these changes were already kept; keep or drop them once",
            "agent(prompt, opts): opts.isolation must be 'worktree'"
        ])
    );
    let events = host.events();
    assert!(events.contains(&"isolated one".to_owned()), "{events:?}");
    assert!(events.contains(&"keep 1".to_owned()), "{events:?}");
    assert!(events.contains(&"discard 2".to_owned()), "{events:?}");
    assert!(!events.contains(&"keep 2".to_owned()), "{events:?}");
}

#[test]
fn rule_19_args_are_exactly_as_given() {
    let host = Rc::new(FakeHost::new(echo()));
    let shape = "return args === undefined ? 'undefined' : args === null ? 'null' : args";
    // The host passes empty text when the run has no arguments.
    assert_eq!(run_on(&host, shape, "").unwrap(), "\"undefined\"");
    assert_eq!(run_on(&host, shape, " \n").unwrap(), "\"undefined\"");
    assert_eq!(run_on(&host, shape, "null").unwrap(), "\"null\"");
    assert_eq!(run_on(&host, shape, " null ").unwrap(), "\"null\"");
    assert_eq!(run_on(&host, shape, "0").unwrap(), "0");
    assert_eq!(run_on(&host, shape, "false").unwrap(), "false");
    assert_eq!(run_on(&host, shape, "\"\"").unwrap(), "\"\"");
    // A nested workflow's args likewise: none is `undefined`, `null` is `null`.
    let mut fake = FakeHost::new(echo());
    fake.files.insert("workflows/shape.js", shape);
    let host = Rc::new(fake);
    assert_eq!(
        run_on(
            &host,
            "return [await workflow('shape'), await workflow('shape', null), await workflow('shape', undefined), await workflow('shape', 0)]",
            "",
        )
        .unwrap(),
        "[\"undefined\",\"null\",\"undefined\",0]"
    );
}

#[test]
fn rule_13_tools() {
    let host = Rc::new(FakeHost::new(echo()));
    let result = run_on(
        &host,
        "return [tools.read('README.md'), await tools.glob('**/*.rs'), tools.grep('main', { glob: '*.rs', ignoreCase: true, maxMatches: 5 }),\n\
         tools.git.log({ path: 'src', max: 2 }), tools.git.show('HEAD', 'a'), tools.git.diff(), tools.git.status()]",
        "null",
    )
    .unwrap();
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result,
        serde_json::json!(["# hello\n", ["src/lib.rs"], [{ "path": "src/lib.rs", "line": 1, "text": "fn main() {}" }],
            [{ "id": "abc", "author": "A", "time": 1_700_000_000, "summary": "init" }], "show HEAD Some(\"a\")", "diff None",
            [{ "path": "a.txt", "status": "modified" }]])
    );
    assert_eq!(
        host.events(),
        [
            "grep main Some(\"*.rs\") true Some(5)",
            "git log Some(\"src\") Some(2)"
        ]
    );
}

#[test]
fn rule_17_and_18_writes_and_commands() {
    let host = Rc::new(FakeHost::new(echo()));
    let result = run_on(
        &host,
        "tools.write('a.txt', 'new'); tools.edit('a.txt', 'ne', 'o'); tools.remove('b.txt'); tools.revert('b.txt');\n\
         let missing; try { tools.edit('a.txt', 'absent', 'x') } catch (e) { missing = e.code }\n\
         let denied; try { tools.run('sh', ['-c', 'x']) } catch (e) { denied = e.code }\n\
         return [tools.changes(), await tools.run('node', ['--test', 'a.test.js'], { timeoutMs: 500 }), tools.run('node'), missing, denied]",
        "null",
    )
    .unwrap();
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result,
        serde_json::json!([[{ "path": "a.txt", "kind": "modified", "bytes": 3 }],
            { "code": 1, "stdout": "node [\"--test\", \"a.test.js\"] Some(500)", "stderr": "failed" },
            { "code": 1, "stdout": "node [] None", "stderr": "failed" }, "invalid-input", "denied"])
    );
    assert_eq!(
        host.events(),
        [
            "write a.txt \"new\"",
            "edit a.txt \"ne\" \"o\"",
            "remove b.txt",
            "revert b.txt"
        ]
    );
    for (call, message) in [
        (
            "tools.write('a.txt', 5)",
            "tools.write(path, text): text must be a string",
        ),
        (
            "tools.run('node', '--test')",
            "args must be an array of strings, not string",
        ),
        (
            "tools.run('node', [1])",
            "tools.run(command, args, opts): args[0] must be a string",
        ),
        (
            "tools.run('node', [], { timeoutMs: -1 })",
            "opts.timeoutMs must be a whole number",
        ),
    ] {
        let error = err(call);
        assert!(error.contains(message), "{call}: {error}");
    }
}

#[test]
fn rule_13_tool_errors_carry_a_code() {
    let result = ok("const codes = []\n\
        for (const p of ['../etc/passwd', 'missing.txt']) { try { tools.read(p) } catch (e) { codes.push(e.code, e.name) } }\n\
        try { tools.glob('[') } catch (e) { codes.push(e.code) }\n\
        return codes");
    assert_eq!(
        result,
        r#"["denied","ToolError","not-found","ToolError","invalid-input"]"#
    );
    let error = err("\ntools.read('missing.txt')");
    assert!(
        error.starts_with(
            "ToolError [not-found]: tools.read(\"missing.txt\"): no file missing.txt\n"
        ),
        "{error}"
    );
    assert!(error.contains("test.js:2:"), "{error}");
    assert!(err("tools.read(3)").contains("tools.read(path): path must be a string, not number"));
}

#[test]
fn uncaught_errors_carry_the_stack_with_line_numbers() {
    let error = err("function inner() {\n  throw new Error('boom')\n}\ninner()");
    assert!(error.starts_with("Error: boom\n"), "{error}");
    assert!(error.contains("at inner (test.js:2:13)"), "{error}");
    assert!(error.contains("(test.js:4:1)"), "{error}");
    // Columns of line 1 are those of the script, not of the wrapper around it.
    let error = err("throw new TypeError('first line')");
    assert!(error.contains("at <anonymous> (test.js:1:11)"), "{error}");
    assert!(!error.contains(PRELUDE_NAME), "{error}");
    assert_eq!(err("throw 'text'"), "uncaught exception: \"text\"");
}

#[test]
fn a_script_that_never_settles_is_deadlocked() {
    let error = err("await new Promise(() => {})");
    assert!(error.starts_with("test.js: workflow deadlocked"), "{error}");
}

#[test]
fn calls_left_running_are_cancelled() {
    let host = Rc::new(FakeHost::new(echo()));
    assert_eq!(
        run_on(&host, "agent('forgotten')\nreturn 1", "null").unwrap(),
        "1"
    );
    assert_eq!(host.events(), ["start forgotten", "cancel forgotten"]);
}

#[test]
fn out_of_memory_is_catchable() {
    let host = Rc::new(FakeHost::new(echo()));
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let grow = "a = []; while (true) a.push('x'.repeat(100000) + a.length)";
    let caught = Workflow::load(
        "m.js",
        &format!("let a\ntry {{ {grow} }} catch (e) {{ a = null; return String(e) }}"),
        host.clone(),
        limits,
    )
    .unwrap()
    .run("null")
    .unwrap();
    assert_eq!(caught, "\"InternalError: out of memory\"");
    let error = Workflow::load("m.js", &format!("let a\n{grow}"), host, limits)
        .unwrap()
        .run("null")
        .unwrap_err();
    assert!(
        error.starts_with(
            "InternalError: out of memory (the script's JavaScript heap is limited to 16 MiB"
        ),
        "{error}"
    );
}

#[test]
fn out_of_memory_is_named_even_when_the_heap_is_full_to_the_byte() {
    // Many small values fill the heap so closely that, with QuickJS's own limit, not even the
    // error object fitted and the script saw `null`.
    let host = Rc::new(FakeHost::new(echo()));
    let limits = Limits {
        memory: 16 << 20,
        ..Limits::default()
    };
    let grow = "a = []; while (true) a.push('x' + a.length)";
    let caught = Workflow::load(
        "m.js",
        &format!("let a\ntry {{ {grow} }} catch (e) {{ a = null; return String(e) }}"),
        host.clone(),
        limits,
    )
    .unwrap()
    .run("null")
    .unwrap();
    assert_eq!(caught, "\"InternalError: out of memory\"");
    let error = Workflow::load("m.js", &format!("let a\n{grow}"), host, limits)
        .unwrap()
        .run("null")
        .unwrap_err();
    assert!(
        error.starts_with(
            "InternalError: out of memory (the script's JavaScript heap is limited to 16 MiB"
        ),
        "{error}"
    );
}

#[test]
fn runaway_recursion_is_a_catchable_range_error() {
    assert_eq!(
        ok("function f(n) { return f(n + 1) + 1 }\ntry { f(0) } catch (e) { return e.name }"),
        "\"RangeError\""
    );
    let error = err("function f(n) { return f(n + 1) + 1 }\nf(0)");
    assert!(
        error.starts_with("RangeError: Maximum call stack size exceeded (a recursion"),
        "{error}"
    );
}

/// A script line defining `deep(n)`: `n` arrays around `1`.
const DEEP: &str =
    "const deep = (n) => { let v = 1; for (let i = 0; i < n; i++) v = [v]; return v }\n";

#[test]
fn deep_json_is_a_catchable_range_error_that_names_the_limit() {
    // On wasm32, 3000 levels ended the run with "wasm trap: call stack exhausted".
    let result = ok(&format!(
        "{DEEP}const out = []\n\
         for (const f of [() => JSON.stringify(deep(3000)), () => JSON.parse('['.repeat(3000) + ']'.repeat(3000)),\n\
                          () => JSON.stringify({{ a: deep(200) }}, (k, v) => v, 2), () => JSON.stringify(deep(200), ['a'])]) {{\n\
           try {{ f(); out.push('no error') }} catch (e) {{ out.push([e.name, e.message.split(':')[0], e.message.includes('more than 127 deep') && e.message.includes('MAX_JSON_DEPTH')]) }}\n\
         }}\n\
         // At the limit, both work.\n\
         out.push(JSON.stringify(JSON.parse(JSON.stringify(deep(127)))).length)\n\
         return out"
    ));
    assert_eq!(
        result,
        r#"[["RangeError","JSON.stringify",true],["RangeError","JSON.parse",true],["RangeError","JSON.stringify",true],["RangeError","JSON.stringify",true],255]"#
    );
}

#[test]
fn the_runtimes_own_json_conversions_are_bounded_too() {
    // The result.
    let error = err(&format!("{DEEP}return deep(3000)"));
    assert!(
        error.starts_with(
            "test.js: the workflow's result cannot be turned into JSON: RangeError: JSON.stringify: \
             the value nests arrays and objects more than 127 deep"
        ),
        "{error}"
    );
    // A thrown value, log lines, a schema, a nested workflow's args.
    let error = err(&format!("{DEEP}throw deep(3000)"));
    assert!(error.starts_with("uncaught exception: "), "{error}");
    let host = host_with_workflows();
    let result = run_on(
        &host,
        &format!(
            "{DEEP}log(deep(3000))\n\
             const out = []\n\
             try {{ await agent('x', {{ schema: {{ type: 'object', properties: {{ a: deep(3000) }} }} }}) }} catch (e) {{ out.push(e.name) }}\n\
             try {{ await workflow('child', deep(3000)) }} catch (e) {{ out.push(e.message.split(': ').slice(0, 3).join(': ')) }}\n\
             return out"
        ),
        "null",
    )
    .unwrap();
    assert_eq!(
        result,
        r#"["RangeError","workflow(nameOrPath, args): args must be JSON-serialisable: RangeError"]"#
    );
    assert_eq!(host.logs().len(), 1, "{:?}", host.logs());
    assert!(!host.events().iter().any(|e| e.starts_with("start")));

    // JSON from the host: args, and an agent's output.
    let deep_json = format!("{}1{}", "[".repeat(3000), "]".repeat(3000));
    let error = run_on(&Rc::new(FakeHost::new(echo())), "return 1", &deep_json).unwrap_err();
    assert!(
        error.starts_with("args nest arrays and objects more than 127 deep (at character 127)"),
        "{error}"
    );
    let json = deep_json.clone();
    let host = Rc::new(FakeHost::new(Box::new(move |_, _| {
        Ok(output("", Some(json.clone())))
    })));
    let result = run_on(
        &host,
        "try { await agent('x', { schema: { type: 'object' }, label: 'deep' }) } catch (e) { return [e.name, e.code, e.message.split(' (')[0]] }",
        "null",
    )
    .unwrap();
    assert_eq!(
        result,
        r#"["AgentError","invalid-output","agent 'deep' returned JSON nested more than 127 deep"]"#
    );
}

#[test]
fn bounded_json_keeps_the_builtins_behaviour() {
    let result = ok(
        "const o = { b: 1, a: [1, { c: 2, d: 3 }], toString() {} }\n\
         const cycle = {}; cycle.self = cycle\n\
         const out = [\n\
           JSON.stringify(o),\n\
           JSON.stringify(o, ['a', 'c', 'zz']),\n\
           JSON.stringify(o, (k, v) => (k === 'b' ? undefined : v)),\n\
           JSON.stringify({ a: [1] }, null, 2),\n\
           JSON.stringify([new Number(1), new String('s'), new Boolean(false), new Date(0), undefined, () => 1]),\n\
           JSON.stringify({ toJSON(key) { return { key } } }),\n\
           JSON.stringify(undefined),\n\
           JSON.parse('{\"a\":[1,2],\"__proto__\":1}').__proto__,\n\
           JSON.parse('[1, 2]', (k, v, context) => (k === '0' ? context.source : v)),\n\
           JSON.stringify.length, JSON.parse.length,\n\
         ]\n\
         for (const f of [() => JSON.stringify(cycle), () => JSON.stringify(1n), () => JSON.parse('{')]) {\n\
           try { f() } catch (e) { out.push(e.name) }\n\
         }\n\
         return out",
    );
    assert_eq!(
        result,
        r#"["{\"b\":1,\"a\":[1,{\"c\":2,\"d\":3}]}","{\"a\":[1,{\"c\":2}]}","{\"a\":[1,{\"c\":2,\"d\":3}]}","{\n  \"a\": [\n    1\n  ]\n}","[1,\"s\",false,\"1970-01-01T00:00:00.000Z\",null,null]","{\"key\":\"\"}",null,1,["1",2],3,2,"TypeError","TypeError","SyntaxError"]"#
    );
}

#[test]
fn recursion_through_built_ins_is_a_catchable_range_error() {
    // On wasm32 with the old stack limit (192 KiB), each of these exhausted the native stack
    // before QuickJS's check fired, ending the run with an uncatchable trap.
    for recursion in [
        "const o = { get x() { return o.x } }; o.x",
        "const o = { toString() { return String(o) } }; String(o)",
        "async function f(n) { return await f(n + 1) } await f(0)",
        "function* g() { yield* g() } [...g()]",
        "let v = []; for (let i = 0; i < 100000; i++) v = [v]; v.flat(Infinity)",
        "let v = []; for (let i = 0; i < 100000; i++) v = [v]; String(v)",
    ] {
        assert_eq!(
            ok(&format!(
                "try {{ {recursion} }} catch (e) {{ return e.name }}"
            )),
            "\"RangeError\"",
            "{recursion}"
        );
    }
    // Proxies wrapping proxies are bounded where they are made.
    let result = ok("let p = {}\n\
        try { for (let i = 0; i < 1000; i++) p = new Proxy(p, {}) } catch (e) { return [e.name, e.message.split(':')[0], e.message.includes('MAX_PROXY_DEPTH')] }");
    assert_eq!(result, r#"["RangeError","new Proxy()",true]"#);
    assert_eq!(
        ok(
            "let p = {}; for (let i = 0; i < 100; i++) p = Proxy.revocable(p, {}).proxy\n\
            try { Proxy.revocable(p, {}) } catch (e) { return e.name }"
        ),
        "\"RangeError\""
    );
}

#[test]
fn a_script_runs_once() {
    let host = Rc::new(FakeHost::new(echo()));
    let workflow = Workflow::load("x.js", "return 1", host, Limits::default()).unwrap();
    assert_eq!(workflow.run("null").unwrap(), "1");
    assert!(workflow.run("null").unwrap_err().contains("already run"));
}

#[test]
fn code_cannot_escape_the_wrapper_at_load_time() {
    let host = Rc::new(FakeHost::new(echo()));
    let error = Workflow::load(
        "x.js",
        "1\n}); agent('early'); (async function () {",
        host.clone(),
        Limits::default(),
    )
    .err()
    .unwrap();
    assert!(error.starts_with("x.js:"), "{error}");
    assert!(host.events().is_empty(), "{:?}", host.events());
}

#[test]
fn the_spec_example_runs() {
    let mut fake = FakeHost::new(Box::new(|prompt, options| {
        let json = if prompt.starts_with("Try to refute") {
            serde_json::json!({ "real": prompt.contains("real") })
        } else {
            serde_json::json!({ "findings": [{ "title": "a real bug" }, { "title": "a false alarm" }] })
        };
        assert!(options.schema.is_some());
        Ok(output(&json.to_string(), Some(json.to_string())))
    }));
    fake.finish = Finish::Oldest;
    let host = Rc::new(fake);
    let source = r#"export const meta = {
  name: 'review-changes',
  description: 'Review a diff along two dimensions and verify every finding',
  phases: [{ title: 'Review' }, { title: 'Verify' }],
}
const FINDINGS = { type: 'object', properties: { findings: { type: 'array', items: {
  type: 'object', properties: { title: { type: 'string' } }, required: ['title'] } } },
  required: ['findings'] }
const VERDICT = { type: 'object', properties: { real: { type: 'boolean' } }, required: ['real'] }
const results = await pipeline(
  ['Find correctness bugs in the current diff.', 'Find performance regressions in the current diff.'],
  p => agent(p, { phase: 'Review', schema: FINDINGS }),
  review => parallel(review.findings.map(f => () =>
    agent(`Try to refute this finding; default to refuted if unsure: ${f.title}`,
          { phase: 'Verify', schema: VERDICT, model: 'haiku' }).then(v => ({ ...f, verdict: v })))),
)
return results.flat().filter(Boolean).filter(f => f.verdict?.real)
"#;
    let result = run_on(&host, source, "null").unwrap();
    assert_eq!(
        result,
        r#"[{"title":"a real bug","verdict":{"real":true}},{"title":"a real bug","verdict":{"real":true}}]"#
    );
    assert_eq!(host.started.borrow().len(), 6);
}
