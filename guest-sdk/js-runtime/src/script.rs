//! A loaded workflow script on QuickJS: compiling it, the native functions behind the
//! JavaScript API, and the event loop that drives agent calls and nested workflows to completion.
//!
//! Every script runs in a realm (a QuickJS context) of its own: the workflow's, and one per
//! `workflow()` call, made by the event loop. Realms share the runtime (heap, stack, job queue)
//! and the host, so nested workflows share the run's caps and budget; they share no JavaScript
//! object. Only JSON text crosses between them, through Rust, so that nothing a nested script can
//! reach leads back to the workflow's `workflow` function: nesting stops at one level by
//! construction, not by hiding a name.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::rc::Rc;

use rquickjs::context::EvalOptions;
use rquickjs::function::{Opt, This};
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, Context, Ctx, Exception, Function, Object, Persistent, Promise, Runtime, Value,
};

use crate::bindings::corral::workflow::agents::{
    AgentError, AgentOptions, CallId, Completion, Effort,
};
use crate::bindings::corral::workflow::tools::{GrepOptions, ToolError};
use crate::bytecode::PRELUDE_NAME;
use crate::frontend::{self, CheckError, Prepared};
use crate::heap::{HeapAllocator, HeapMeter};
use crate::host::Host;
use crate::json::{self, MAX_JSON_DEPTH};
use crate::lexer;

mod meta;
mod nested;
mod resolve;
use meta::ScriptMeta;
use nested::{Nested, NestedStart};

/// Limits of the JavaScript engine inside the component. The host's own memory limit must leave
/// room above `memory` for the runtime itself (a few MiB), so that a script that allocates too
/// much gets a catchable JavaScript error rather than a trap.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// QuickJS heap limit in bytes; past it, allocations throw `InternalError: out of memory`
    /// (building that error may use up to [`crate::heap::RESERVE`] more).
    pub memory: usize,
    /// QuickJS stack limit in bytes; past it, calls throw `RangeError`.
    ///
    /// QuickJS measures the shadow stack (in linear memory, 1 MiB), but what runs out first is
    /// the native stack the host gives wasm code, which QuickJS cannot see. Recursion through
    /// built-ins (getters, `toString`, `Array.prototype.flat`, async functions, generators)
    /// uses up to about 5 bytes of native stack per byte of shadow stack, and QuickJS's parser
    /// (reached by `eval` at run time) far more, so the limit is sized against the 4 MiB native
    /// stack Corral's host gives a run (`corral_host::runtime::WASM_STACK`): at 256 KiB, `eval`
    /// of 3000 nested parentheses trapped; at 128 KiB every deep case in the host's adversarial
    /// tests throws (on wasmtime's default 512 KiB the limit would have to be 64 KiB). JSON and
    /// the script's own parse are bounded on their own ([`MAX_JSON_DEPTH`],
    /// [`lexer::MAX_NESTING`]). Simple JavaScript recursion gets about 480 frames.
    pub stack: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 192 << 20,
            stack: 128 << 10,
        }
    }
}

/// The most agent calls one `agents.wait` asks about.
///
/// The host ends the run when a `wait` lists more ids than its `--max-batch` (4096 by default),
/// and the WIT world does not tell the guest that limit, so the runtime never asks about more
/// than this many: with more calls pending, it waits for the oldest ones. The host starts calls
/// first in, first out, so while `--max-concurrent` (16 by default) is at most this, every call
/// that has finished is among the oldest `WAIT_BATCH` still pending, and waiting on them alone
/// delays nothing.
pub const WAIT_BATCH: usize = 1024;

/// Bytes QuickJS may allocate before its first cycle collection (QuickJS's default is 256 KiB,
/// and each collection walks every live object). A fan-out holds a promise, its resolving
/// functions and a reaction per pending call, so a wide one collected again and again while
/// nothing was garbage yet. Reference counting frees acyclic garbage at once whatever this is,
/// and the heap limit is enforced by the allocator, not by it.
const GC_THRESHOLD: usize = 2 << 20;

/// The prelude, the JavaScript half of the workflow API (`prelude.js`), as QuickJS bytecode
/// compiled by build.rs ([`crate::bytecode`]).
const PRELUDE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/prelude.qjsbc"));

/// A script body (the workflow's, or a nested one's from `workflow()`) is compiled inside this,
/// on the same line as its first line, so that only columns of line 1 move (and
/// [`fix_positions`] moves them back). The outer function gives the body its own `args` and
/// `workflow` (a nested workflow's cannot nest again); the body is a separate function so that it
/// may still declare either name.
const WRAP_START: &str = "(function (args, workflow) { return async function () { 'use strict'; ";
/// Closes both functions; on a line of its own so that a trailing `//` comment cannot swallow it.
const WRAP_END: &str = "\n} })";

/// A realm: 0 is the workflow's own, each nested workflow gets the next number.
type RealmId = u32;
/// The workflow's own realm.
const TOP: RealmId = 0;

/// A compiled workflow script, ready to run once.
pub struct Workflow {
    name: String,
    /// The compiled script: `(args, workflow) => async () => body` (see [`WRAP_START`]).
    main: Persistent<Function<'static>>,
    /// The prelude of the workflow's realm.
    api: Api,
    /// Nested workflows running, by realm.
    nested: RefCell<BTreeMap<RealmId, Nested>>,
    state: Rc<State>,
    // The context and the runtime go last: fields drop in order, and the persistent values above
    // must be released while the runtime still exists.
    context: Context,
    runtime: Runtime,
}

/// The functions of one realm's prelude that Rust calls.
struct Api {
    /// `settle(id, ok, value)`: an agent call finished.
    settle: Persistent<Function<'static>>,
    /// `finish(id, ok, value, parts)`: a nested workflow finished (only the workflow's realm
    /// starts any).
    finish: Persistent<Function<'static>>,
    /// The bounded `JSON.stringify`.
    stringify: Persistent<Function<'static>>,
}

/// What the native functions share with the event loop.
struct State {
    host: Rc<dyn Host>,
    /// The QuickJS heap's use, for naming an out-of-memory error that lost its message.
    heap: Rc<HeapMeter>,
    /// Whether `run` has started; host calls are refused before it (at load time).
    running: Cell<bool>,
    /// Agent calls started and not yet handed back by `wait`.
    pending: RefCell<BTreeMap<CallId, PendingCall>>,
    /// Unknown option names already warned about, so each is logged once.
    warned: RefCell<BTreeSet<String>>,
    /// The run's current phase, the last `phase()` of any realm: the host gives it to agents
    /// that name none, and the runtime picks their default model by it (rule 16).
    phase: RefCell<Option<String>>,
    /// `workflow()` calls whose script was read and checked, for the event loop to start.
    queued: RefCell<Vec<NestedStart>>,
    /// The realm the next `workflow()` call gets.
    next_realm: Cell<RealmId>,
    /// Nested workflows that have finished: whatever of their code still runs cannot start agents.
    finished: RefCell<BTreeSet<RealmId>>,
}

/// An agent call waiting on the host.
struct PendingCall {
    /// The label it was given, for messages.
    label: Option<String>,
    /// The realm whose promise it settles.
    realm: RealmId,
}

/// Any failure while talking to QuickJS, already turned into the message the host gets.
type Failure = String;

impl Workflow {
    /// Checks and compiles `source`. `name` (a file name) is used in messages and stack traces.
    pub fn load(
        name: &str,
        source: &str,
        host: Rc<dyn Host>,
        limits: Limits,
    ) -> Result<Workflow, Failure> {
        let prepared = frontend::prepare(source).map_err(|errors| check_errors(name, &errors))?;
        // The heap limit is enforced by the allocator, not by QuickJS (see `heap`).
        let heap = HeapMeter::new(limits.memory);
        let runtime = Runtime::new_with_alloc(HeapAllocator::new(heap.clone()))
            .map_err(|e| format!("cannot start QuickJS: {e}"))?;
        runtime.set_max_stack_size(limits.stack);
        runtime.set_gc_threshold(GC_THRESHOLD);
        let context = Context::full(&runtime).map_err(|e| format!("cannot start QuickJS: {e}"))?;
        let state = Rc::new(State {
            host,
            heap,
            running: Cell::new(false),
            pending: RefCell::new(BTreeMap::new()),
            warned: RefCell::new(BTreeSet::new()),
            phase: RefCell::new(None),
            queued: RefCell::new(Vec::new()),
            next_realm: Cell::new(TOP + 1),
            finished: RefCell::new(BTreeSet::new()),
        });

        let (main, api) = context.with(|ctx| {
            let meta = Rc::new(ScriptMeta::new(prepared.meta.as_ref()));
            let api = install(&ctx, &state, TOP, meta).map_err(|e| internal(&ctx, e, name))?;
            let main = compile(&ctx, name, source, &prepared)?;
            Ok::<_, Failure>((Persistent::save(&ctx, main), api))
        })?;

        Ok(Workflow {
            name: name.to_owned(),
            main,
            api,
            nested: RefCell::new(BTreeMap::new()),
            state,
            context,
            runtime,
        })
    }

    /// Runs the script with `args_json` as `args` until its promise settles, and returns its
    /// result as JSON text.
    ///
    /// SCRIPT-API rule 19: `args` is exactly what was given. The WIT `run(args-json)` has no
    /// way to say "no arguments" other than its text, so the host passes empty text for none:
    /// `""` is `undefined`, `"null"` is `null`.
    pub fn run(&self, args_json: &str) -> Result<String, Failure> {
        if self.state.running.replace(true) {
            return Err("the script has already run: a loaded script runs once".to_owned());
        }
        let name = self.name.as_str();
        let promise = self.context.with(|ctx| {
            let args = match args_json.trim() {
                "" => Value::new_undefined(ctx.clone()),
                json => host_json(&ctx, json).map_err(|refusal| refusal.explain("args"))?,
            };
            ctx.globals()
                .set("args", args.clone())
                .map_err(|e| internal(&ctx, e, name))?;
            let workflow: Value = ctx
                .globals()
                .get("workflow")
                .map_err(|e| internal(&ctx, e, name))?;
            let main = self
                .main
                .clone()
                .restore(&ctx)
                .map_err(|e| internal(&ctx, e, name))?;
            let body: Function = main
                .call((args, workflow))
                .map_err(|e| internal(&ctx, e, name))?;
            let promise: Promise = body.call(()).map_err(|e| self.uncaught(&ctx, e))?;
            Ok::<_, Failure>(Persistent::save(&ctx, promise))
        })?;

        let outcome = self.event_loop(&promise);
        // Calls the script started but never awaited would only spend tokens now; workflows it
        // started and did not await are dropped with them.
        self.state.queued.borrow_mut().clear();
        let leftover: Vec<CallId> = std::mem::take(&mut *self.state.pending.borrow_mut())
            .into_keys()
            .collect();
        for id in leftover {
            self.state.host.agent_cancel(id);
        }
        drop(std::mem::take(&mut *self.nested.borrow_mut()));
        outcome
    }

    /// Runs jobs, starts and finishes nested workflows and waits for agent calls until the
    /// script's promise settles.
    fn event_loop(&self, promise: &Persistent<Promise<'static>>) -> Result<String, Failure> {
        loop {
            self.run_jobs()?;
            if let Some(json) = self.settled(promise)? {
                return Ok(json);
            }
            // Both, in this order: a workflow that fails to start is finished at once.
            let started = self.start_queued()?;
            let finished = self.finish_nested()?;
            if !started && !finished {
                self.wait_and_settle()?;
            }
        }
    }

    /// Runs every queued job (promise reactions, async continuations) of every realm.
    fn run_jobs(&self) -> Result<(), Failure> {
        loop {
            match self.runtime.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(job) => {
                    return Err(job.0.with(|ctx| {
                        let value = ctx.catch();
                        describe(&ctx, &value, Some(&self.state.heap))
                    }));
                }
            }
        }
    }

    /// The script's result as JSON text once its promise has resolved.
    fn settled(&self, promise: &Persistent<Promise<'static>>) -> Result<Option<String>, Failure> {
        self.context.with(|ctx| {
            let promise = promise
                .clone()
                .restore(&ctx)
                .map_err(|e| internal(&ctx, e, &self.name))?;
            match promise.state() {
                PromiseState::Resolved => {
                    let value: Value = promise
                        .result()
                        .expect("the promise is settled")
                        .map_err(|e| internal(&ctx, e, &self.name))?;
                    let stringify = self
                        .api
                        .stringify
                        .clone()
                        .restore(&ctx)
                        .map_err(|e| internal(&ctx, e, &self.name))?;
                    result_json(&ctx, &stringify, value)
                        .map(Some)
                        .map_err(|message| format!("{}: {message}", self.name))
                }
                PromiseState::Rejected => {
                    let error = promise
                        .result::<Value>()
                        .expect("the promise is settled")
                        .expect_err("it rejected");
                    Err(self.uncaught(&ctx, error))
                }
                PromiseState::Pending => Ok(None),
            }
        })
    }

    /// Waits on the host for the oldest pending agent calls (at most [`WAIT_BATCH`]) and settles
    /// the promises of every call it hands back, each in its own realm.
    fn wait_and_settle(&self) -> Result<(), Failure> {
        let ids: Vec<CallId> = self
            .state
            .pending
            .borrow()
            .keys()
            .take(WAIT_BATCH)
            .copied()
            .collect();
        if ids.is_empty() {
            return Err(self.deadlocked());
        }
        for completion in self.state.host.agent_wait(&ids) {
            // An id the host hands back twice, or one it was not asked about, is ignored.
            let Some(call) = self.state.pending.borrow_mut().remove(&completion.id) else {
                continue;
            };
            if call.realm == TOP {
                self.context
                    .with(|ctx| self.settle(&ctx, &self.api, &self.name, call, completion))?;
            } else if let Some(nested) = self.nested.borrow().get(&call.realm) {
                nested
                    .context
                    .with(|ctx| self.settle(&ctx, &nested.api, &nested.path, call, completion))?;
            }
        }
        Ok(())
    }

    /// Settles the promise of one agent call in the realm of `ctx`.
    fn settle<'js>(
        &self,
        ctx: &Ctx<'js>,
        api: &Api,
        name: &str,
        call: PendingCall,
        completion: Completion,
    ) -> Result<(), Failure> {
        let settle = api
            .settle
            .clone()
            .restore(ctx)
            .map_err(|e| internal(ctx, e, name))?;
        let id = completion.id;
        let (ok, value) =
            self.completion_value(ctx, id, call.label.as_deref(), completion, name)?;
        let () = settle
            .call((call_id(ctx, id), ok, value))
            .map_err(|e| self.uncaught(ctx, e))?;
        Ok(())
    }

    /// The message of a run that waits for something nothing will settle.
    fn deadlocked(&self) -> Failure {
        let nested: Vec<String> = self
            .nested
            .borrow()
            .values()
            .map(|n| format!("{:?}", n.path))
            .collect();
        let who = if nested.is_empty() {
            "the script is".to_owned()
        } else {
            format!(
                "the script, or the workflow it runs ({}), is",
                nested.join(", ")
            )
        };
        format!(
            "{}: workflow deadlocked: {who} waiting for a promise that nothing will settle (no \
             agent call is pending). Await only promises from agent(), parallel(), pipeline() or \
             async functions built on them; a hand-made `new Promise` must be resolved by the script",
            self.name
        )
    }

    /// What an agent call's promise settles with: `(true, value)` to resolve, `(false, error)`
    /// to reject.
    fn completion_value<'js>(
        &self,
        ctx: &Ctx<'js>,
        id: CallId,
        label: Option<&str>,
        completion: Completion,
        name: &str,
    ) -> Result<(bool, Value<'js>), Failure> {
        let who = label.map_or_else(|| format!("agent call {id}"), |l| format!("agent '{l}'"));
        match completion.outcome {
            Ok(output) => match output.json {
                Some(json) => match host_json(ctx, &json) {
                    Ok(value) => Ok((true, value)),
                    Err(refusal) => {
                        let message = match refusal {
                            JsonRefusal::TooDeep(at) => format!(
                                "{who} returned JSON nested more than {MAX_JSON_DEPTH} deep (at \
                                 character {at}), past the workflow runtime's JSON limit \
                                 (MAX_JSON_DEPTH); ask for flatter output"
                            ),
                            JsonRefusal::Invalid(message) => {
                                format!("{who} returned invalid JSON: {message}")
                            }
                        };
                        let error = host_error(ctx, "AgentError", "invalid-output", &message)
                            .map_err(|e| internal(ctx, e, name))?;
                        Ok((false, error))
                    }
                },
                None => {
                    let text = rquickjs::String::from_str(ctx.clone(), &output.text)
                        .map_err(|e| internal(ctx, e, name))?;
                    Ok((true, text.into_value()))
                }
            },
            // Rule 6: a stopped agent or a terminal provider error resolves to null.
            Err(AgentError::Cancelled(reason) | AgentError::Provider(reason)) => {
                self.state
                    .host
                    .log(&format!("{who} returned null: {reason}"));
                Ok((true, Value::new_null(ctx.clone())))
            }
            Err(error) => {
                let (code, reason) = agent_error_parts(&error);
                let message = match label {
                    Some(l) => format!("agent '{l}' failed: {reason}"),
                    None => format!("agent call failed: {reason}"),
                };
                let error = host_error(ctx, "AgentError", code, &message)
                    .map_err(|e| internal(ctx, e, name))?;
                Ok((false, error))
            }
        }
    }

    fn uncaught(&self, ctx: &Ctx<'_>, error: rquickjs::Error) -> Failure {
        match error {
            rquickjs::Error::Exception => {
                let value = ctx.catch();
                describe(ctx, &value, Some(&self.state.heap))
            }
            other => format!("{}: {other}", self.name),
        }
    }
}

/// Sets up a realm: the native functions for `realm` (whose script has `meta`), then the prelude
/// over them.
fn install<'js>(
    ctx: &Ctx<'js>,
    state: &Rc<State>,
    realm: RealmId,
    meta: Rc<ScriptMeta>,
) -> rquickjs::Result<Api> {
    let natives = natives(ctx, state, realm, meta)?;
    let config = Object::new(ctx.clone())?;
    config.set("nested", realm != TOP)?;
    config.set("maxJsonDepth", MAX_JSON_DEPTH as f64)?;
    // SAFETY: PRELUDE is what build.rs compiled with `bytecode::compile`, by the same
    // rquickjs-sys this runtime links.
    #[allow(unsafe_code)]
    let prelude: Function = unsafe { crate::bytecode::eval(ctx, PRELUDE) }?.get()?;
    let api: Object = prelude.call((natives, config))?;
    let function = |key: &str| -> rquickjs::Result<Persistent<Function<'static>>> {
        let f: Function = api.get(key)?;
        Ok(Persistent::save(ctx, f))
    };
    Ok(Api {
        settle: function("settle")?,
        finish: function("finish")?,
        stringify: function("stringify")?,
    })
}

/// Why JSON text from outside the realm was refused.
enum JsonRefusal {
    /// It nests past [`MAX_JSON_DEPTH`], first at this character.
    TooDeep(usize),
    /// QuickJS could not parse it; its message.
    Invalid(String),
}

impl JsonRefusal {
    /// The refusal as the end of a sentence about `subject` (`"args"`, `"its output"`).
    fn explain(&self, subject: &str) -> String {
        match self {
            JsonRefusal::TooDeep(at) => format!(
                "{subject} nest arrays and objects more than {MAX_JSON_DEPTH} deep (at character \
                 {at}), past the workflow runtime's JSON limit (MAX_JSON_DEPTH); pass flatter data"
            ),
            JsonRefusal::Invalid(message) => format!("{subject} are not valid JSON: {message}"),
        }
    }
}

/// Parses JSON text that comes from outside the realm (the host, or another realm), refusing it
/// when it nests past [`MAX_JSON_DEPTH`] (QuickJS's parser would exhaust the native stack).
fn host_json<'js>(ctx: &Ctx<'js>, text: &str) -> Result<Value<'js>, JsonRefusal> {
    if let Some(at) = json::nesting_past(text, MAX_JSON_DEPTH) {
        return Err(JsonRefusal::TooDeep(at));
    }
    ctx.json_parse(text)
        .map_err(|e| JsonRefusal::Invalid(caught(ctx, e)))
}

/// A value's JSON text, for showing it, by the realm's global `JSON.stringify` (the prelude's
/// bounded one, unless the script replaced it, which only changes what is shown); `None` when it
/// has none or the conversion throws.
fn json_text<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> Option<String> {
    let text = (|| -> rquickjs::Result<Option<String>> {
        let json: Object = ctx.globals().get("JSON")?;
        let stringify: Function = json.get("stringify")?;
        stringify.call((value.clone(),))
    })();
    match text {
        Ok(text) => text,
        Err(_) => {
            if ctx.has_exception() {
                ctx.catch();
            }
            None
        }
    }
}

/// The source text of a function, as `Function.prototype.toString` gives it.
fn source_text<'js>(function: &Function<'js>) -> Option<String> {
    let to_string: Function = function.get("toString").ok()?;
    to_string.call((This(function.clone()),)).ok()
}

fn eval_options(file_name: &str) -> EvalOptions {
    let mut options = EvalOptions::default();
    options.global = true;
    options.strict = false;
    options.promise = false;
    options.backtrace_barrier = true;
    options.filename = Some(file_name.to_owned());
    options
}

/// The JSON text of a script's result, by its realm's bounded `JSON.stringify`; `undefined` (no
/// `return`) is `null`. Inside the result, JSON's own rules apply (a function in an array is
/// `null`, in an object it is left out); a result that has no JSON form at all (a function, a
/// symbol) is an error rather than a silent `null`. The error is the message without a name.
fn result_json<'js>(
    ctx: &Ctx<'js>,
    stringify: &Function<'js>,
    value: Value<'js>,
) -> Result<String, String> {
    if value.is_undefined() {
        return Ok("null".to_owned());
    }
    let what = if value.is_function() {
        "a function"
    } else if value.is_symbol() {
        "a symbol"
    } else {
        "a value whose toJSON() gives no JSON value"
    };
    match stringify.call::<_, Option<String>>((value,)) {
        Ok(Some(json)) => Ok(json),
        Ok(None) => Err(format!(
            "the workflow returned {what}, which has no JSON form; return JSON-serialisable data \
             (an object, array, string, number, boolean or null)"
        )),
        Err(e) => Err(format!(
            "the workflow's result cannot be turned into JSON: {}",
            caught(ctx, e)
        )),
    }
}

/// The message of a failure that is not the script's fault.
fn internal(ctx: &Ctx<'_>, error: rquickjs::Error, name: &str) -> Failure {
    format!(
        "{name}: internal error in the JavaScript runtime: {}",
        caught(ctx, error)
    )
}

/// A QuickJS error as text; for an exception, the exception itself.
fn caught(ctx: &Ctx<'_>, error: rquickjs::Error) -> String {
    match error {
        rquickjs::Error::Exception => {
            let value = ctx.catch();
            describe(ctx, &value, None)
        }
        other => other.to_string(),
    }
}

/// Compiles a script body that passed the front end inside [`WRAP_START`]..[`WRAP_END`], and
/// returns the outer function, `(args, workflow) => async () => body`.
fn compile<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    source: &str,
    prepared: &Prepared,
) -> Result<Function<'js>, Failure> {
    let wrapped = format!("{WRAP_START}{}{WRAP_END}", prepared.body);
    let main: Value = ctx
        .eval_with_options(wrapped.as_str(), eval_options(name))
        .map_err(|e| compile_error(ctx, e, name, source, prepared.lex_error.as_ref()))?;
    // A script with an unmatched `}` could close the wrapper early; it would then not be the one
    // function compiled from the whole text.
    let whole = main
        .as_function()
        .and_then(source_text)
        .is_some_and(|text| text == wrapped[1..wrapped.len() - 1]);
    if !whole {
        let hint = prepared.lex_error.as_ref().map_or_else(
            || {
                "1:1: the script's brackets do not balance: a `}` closes more than was opened"
                    .to_owned()
            },
            ToString::to_string,
        );
        return Err(format!("{name}:{hint}"));
    }
    Ok(main.into_function().expect("checked above"))
}

/// The message `load` returns for problems the front end found.
fn check_errors(name: &str, errors: &[CheckError]) -> Failure {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "{name}:{e}");
    }
    out
}

/// The message `load` returns when QuickJS refuses the script: `name:line:column: SyntaxError:
/// ...`, with hints.
fn compile_error(
    ctx: &Ctx<'_>,
    error: rquickjs::Error,
    name: &str,
    source: &str,
    lex_error: Option<&CheckError>,
) -> Failure {
    let rquickjs::Error::Exception = error else {
        return format!("{name}: {error}");
    };
    let value = ctx.catch();
    let (kind, message, stack) = match value.as_object() {
        Some(object) => (
            object
                .get::<_, Option<String>>("name")
                .ok()
                .flatten()
                .unwrap_or_else(|| "SyntaxError".to_owned()),
            object
                .get::<_, Option<String>>("message")
                .ok()
                .flatten()
                .unwrap_or_default(),
            object
                .get::<_, Option<String>>("stack")
                .ok()
                .flatten()
                .unwrap_or_default(),
        ),
        None => (
            "SyntaxError".to_owned(),
            format_value(ctx, &value),
            String::new(),
        ),
    };
    // QuickJS puts the position of a syntax error in the stack: `    at name:line:column`.
    let stack = fix_positions(&stack);
    let position = stack
        .lines()
        .filter_map(|line| line.trim().strip_prefix("at "))
        .find_map(|at| {
            at.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
        })
        .map(|p| p.trim_end_matches(')').to_owned());
    // The lines after the script's are the wrapper's (`WRAP_END`): QuickJS got there looking for
    // the end of something the script left open. Name the end of the script instead.
    let last_line = source.split('\n').count();
    let past_end = position
        .as_deref()
        .and_then(|p| p.split(':').next()?.parse::<usize>().ok())
        .is_some_and(|line| line > last_line);
    let mut out = match position {
        Some(_) if past_end => {
            let column = source.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(
                "{name}:{last_line}:{column}: {kind}: the script ends too early: a bracket, \
                 string, template or statement is still open"
            )
        }
        Some(p) => format!("{name}:{p}: {kind}: {message}"),
        None => format!("{name}: {kind}: {message}"),
    };
    if let Some(pos) = frontend::typescript_hint(source) {
        let _ = write!(
            out,
            "\n{name}:{pos}: this looks like TypeScript; workflows are plain JavaScript: remove type \
             annotations, interfaces, type aliases and `as` casts"
        );
    }
    if let Some(hint) = lex_error {
        let _ = write!(out, "\n{name}:{hint}");
    }
    out
}

/// Undoes the shift [`WRAP_START`] gives the columns of line 1 in `file:1:column` positions. Every
/// file but the prelude (whose frames are left out) is compiled inside it, so every `:1:` is
/// shifted; a larger line number cannot contain `:1:`.
fn fix_positions(text: &str) -> String {
    let needle = ":1:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(needle) {
        let (before, after) = rest.split_at(at + needle.len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(column) if column > WRAP_START.len() => {
                let _ = write!(out, "{}", column - WRAP_START.len());
            }
            _ => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Describes a thrown value for the host: `Name [code]: message` and the stack, without the
/// prelude's frames.
///
/// `heap` is the script's heap when the error comes from the script: QuickJS throws `null` when
/// it cannot even allocate its out-of-memory error, and a `null` after the heap refused memory is
/// reported as that error.
fn describe<'js>(ctx: &Ctx<'js>, value: &Value<'js>, heap: Option<&HeapMeter>) -> String {
    if let Some(heap) = heap
        && value.is_null()
        && heap.ever_refused()
    {
        return format!("InternalError: out of memory{}", out_of_memory_hint(heap));
    }
    let Some(object) = value.as_object().filter(|_| value.is_error()) else {
        return format!("uncaught exception: {}", format_value(ctx, value));
    };
    let get = |key: &str| {
        object
            .get::<_, Option<rquickjs::Coerced<String>>>(key)
            .ok()
            .flatten()
            .map(|c| c.0)
    };
    let kind = get("name").unwrap_or_else(|| "Error".to_owned());
    let message = get("message").unwrap_or_default();
    let code = object.get::<_, Option<String>>("code").ok().flatten();
    let mut out = match code {
        Some(code) => format!("{kind} [{code}]: {message}"),
        None => format!("{kind}: {message}"),
    };
    if kind == "InternalError" && message == "out of memory" {
        out.push_str(&heap.map(out_of_memory_hint).unwrap_or_default());
    } else if kind == "RangeError" && message.contains("call stack") {
        out.push_str(" (a recursion that never ends, or one too deep: use a loop)");
    }
    if let Some(stack) = get("stack") {
        push_stack(&mut out, &fix_positions(&stack));
    }
    out
}

/// What to do about an out-of-memory error.
fn out_of_memory_hint(heap: &HeapMeter) -> String {
    format!(
        " (the script's JavaScript heap is limited to {} MiB; keep fewer or smaller values alive)",
        heap.limit() >> 20
    )
}

/// Appends the frames of `stack` to `out`, leaving out the prelude's and folding runs of one
/// repeated frame (a deep recursion) into a line that counts them.
fn push_stack(out: &mut String, stack: &str) {
    let frames = stack
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.contains(PRELUDE_NAME));
    let mut previous: Option<&str> = None;
    let mut repeats = 0;
    let flush = |out: &mut String, repeats: usize| {
        if repeats > 0 {
            let _ = write!(out, "\n    ... the same frame {repeats} more times");
        }
    };
    for frame in frames {
        if previous == Some(frame) {
            repeats += 1;
            continue;
        }
        flush(out, repeats);
        repeats = 0;
        out.push('\n');
        out.push_str(frame);
        previous = Some(frame);
    }
    flush(out, repeats);
}

/// Any value as short text: JSON when it has one, else its string form.
fn format_value<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(json) = json_text(ctx, value) {
        return json;
    }
    match value.get::<rquickjs::Coerced<String>>() {
        Ok(text) => text.0,
        Err(_) => {
            if ctx.has_exception() {
                ctx.catch();
            }
            format!("<{}>", value.type_name())
        }
    }
}

/// Creates the error a host failure throws: an `Error` named `kind` with a `code` property.
fn host_error<'js>(
    ctx: &Ctx<'js>,
    kind: &str,
    code: &str,
    message: &str,
) -> rquickjs::Result<Value<'js>> {
    let error = Exception::from_message(ctx.clone(), message)?;
    error.set("name", kind)?;
    error.set("code", code)?;
    Ok(error.into_value())
}

/// Throws [`host_error`].
fn throw_host_error(ctx: &Ctx<'_>, kind: &str, code: &str, message: &str) -> rquickjs::Error {
    match host_error(ctx, kind, code, message) {
        Ok(error) => ctx.throw(error),
        Err(e) => e,
    }
}

fn agent_error_parts(error: &AgentError) -> (&'static str, &str) {
    match error {
        AgentError::BudgetExhausted(r) => ("budget-exhausted", r),
        AgentError::AgentLimit(r) => ("agent-limit", r),
        AgentError::SchemaMismatch(r) => ("schema-mismatch", r),
        AgentError::Provider(r) => ("provider", r),
        AgentError::Timeout(r) => ("timeout", r),
        AgentError::Cancelled(r) => ("cancelled", r),
        AgentError::Denied(r) => ("denied", r),
        AgentError::InvalidInput(r) => ("invalid-input", r),
    }
}

fn tool_error(ctx: &Ctx<'_>, what: &str, error: ToolError) -> rquickjs::Error {
    let (code, reason) = match &error {
        ToolError::Denied(r) => ("denied", r),
        ToolError::NotFound(r) => ("not-found", r),
        ToolError::InvalidInput(r) => ("invalid-input", r),
        ToolError::Limit(r) => ("limit", r),
        ToolError::Io(r) => ("io", r),
    };
    throw_host_error(ctx, "ToolError", code, &format!("{what}: {reason}"))
}

/// Refuses host calls while the script is only being loaded.
fn require_running(ctx: &Ctx<'_>, state: &State, what: &str) -> rquickjs::Result<()> {
    if state.running.get() {
        Ok(())
    } else {
        Err(Exception::throw_message(
            ctx,
            &format!("{what} cannot be called while the script is being loaded"),
        ))
    }
}

/// A call id as a JavaScript number: an integer value (not a double) whenever it fits, as call
/// ids do, so that the prelude's lookups by id take QuickJS's integer fast paths.
fn call_id<'js>(ctx: &Ctx<'js>, id: CallId) -> Value<'js> {
    Value::new_number(ctx.clone(), id as f64)
}

/// The native functions the prelude of `realm` builds the API on; `meta` is its script's.
fn natives<'js>(
    ctx: &Ctx<'js>,
    state: &Rc<State>,
    realm: RealmId,
    meta: Rc<ScriptMeta>,
) -> rquickjs::Result<Object<'js>> {
    let natives = Object::new(ctx.clone())?;

    let s = state.clone();
    let m = meta.clone();
    natives.set(
        "agentStart",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  prompt: String,
                  opts: Opt<Value<'js>>,
                  schema_text: Opt<Option<String>>|
                  -> rquickjs::Result<Value<'js>> {
                require_running(&ctx, &s, "agent()")?;
                if s.finished.borrow().contains(&realm) {
                    return Err(Exception::throw_message(
                        &ctx,
                        "agent(): this workflow has already returned, so it cannot start agents; \
                         await every agent() call before the workflow returns",
                    ));
                }
                let (mut options, isolated) =
                    agent_options(&ctx, &s, opts.0, schema_text.0.flatten())?;
                // Rule 16: an agent that names no model gets its phase's, from meta.phases.
                if options.model.is_none() {
                    let phase = options.phase.clone().or_else(|| s.phase.borrow().clone());
                    options.model = phase.and_then(|p| m.model_of(&p).map(str::to_owned));
                }
                let started = if isolated {
                    s.host.agent_start_isolated(&prompt, &options)
                } else {
                    s.host.agent_start(&prompt, &options)
                };
                match started {
                    Ok(id) => {
                        let label = options.label;
                        s.pending
                            .borrow_mut()
                            .insert(id, PendingCall { label, realm });
                        Ok(call_id(&ctx, id))
                    }
                    Err(error) => {
                        let (code, reason) = agent_error_parts(&error);
                        // The host says what is wrong with a schema; say where to fix it.
                        let schema_error = matches!(error, AgentError::InvalidInput(_))
                            && options.schema.is_some()
                            && reason.contains("schema");
                        let hint = if !schema_error {
                            ""
                        } else if reason.contains("can never be satisfied") {
                            "; change opts.schema so that at least one object satisfies it (no \
                             agent was started)"
                        } else {
                            " (in opts.schema; no agent was started)"
                        };
                        Err(throw_host_error(
                            &ctx,
                            "AgentError",
                            code,
                            &format!("agent() failed: {reason}{hint}"),
                        ))
                    }
                }
            },
        )?,
    )?;

    if realm == TOP {
        let s = state.clone();
        natives.set(
            "startWorkflow",
            Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>,
                      target: String,
                      by_path: bool,
                      object: bool,
                      args_json: Opt<Option<String>>|
                      -> rquickjs::Result<f64> {
                    require_running(&ctx, &s, "workflow()")?;
                    let target = if by_path {
                        resolve::Target::Path {
                            path: target,
                            object,
                        }
                    } else {
                        resolve::Target::Name(target)
                    };
                    let found = resolve::resolve(&ctx, &*s.host, &target)?;
                    let realm = s.next_realm.get();
                    s.next_realm.set(realm + 1);
                    s.queued.borrow_mut().push(NestedStart {
                        realm,
                        path: found.path,
                        source: found.source,
                        prepared: found.prepared,
                        args_json: args_json.0.flatten(),
                    });
                    Ok(f64::from(realm))
                },
            )?,
        )?;
    }

    natives.set(
        "checkJsonDepth",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, text: String| -> rquickjs::Result<()> {
                match json::nesting_past(&text, MAX_JSON_DEPTH) {
                    None => Ok(()),
                    Some(at) => Err(Exception::throw_range(
                        &ctx,
                        &format!(
                            "JSON.parse: the text nests arrays and objects more than \
                             {MAX_JSON_DEPTH} deep (at character {at}), the workflow runtime's \
                             JSON limit (MAX_JSON_DEPTH); flatten the data, or keep the deep part \
                             as a string"
                        ),
                    )),
                }
            },
        )?,
    )?;

    natives.set(
        "checkNesting",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, what: String, text: String| -> rquickjs::Result<()> {
                match lexer::tokenize(&text).error.filter(|e| e.refused) {
                    None => Ok(()),
                    Some(e) => Err(Exception::throw_syntax(
                        &ctx,
                        &format!("{what}: {}: {}", e.pos, e.message),
                    )),
                }
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "read",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, path: String| -> rquickjs::Result<String> {
                require_running(&ctx, &s, "tools.read()")?;
                s.host
                    .read(&path)
                    .map_err(|e| tool_error(&ctx, &format!("tools.read({path:?})"), e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "glob",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, pattern: String| -> rquickjs::Result<Vec<String>> {
                require_running(&ctx, &s, "tools.glob()")?;
                s.host
                    .glob(&pattern)
                    .map_err(|e| tool_error(&ctx, &format!("tools.glob({pattern:?})"), e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "grep",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  pattern: String,
                  glob: Option<String>,
                  ignore_case: bool,
                  max_matches: Option<u32>|
                  -> rquickjs::Result<Array<'js>> {
                require_running(&ctx, &s, "tools.grep()")?;
                let options = GrepOptions {
                    glob,
                    ignore_case,
                    max_matches,
                };
                let matches = s
                    .host
                    .grep(&pattern, &options)
                    .map_err(|e| tool_error(&ctx, &format!("tools.grep({pattern:?})"), e))?;
                let array = Array::new(ctx.clone())?;
                for (i, m) in matches.into_iter().enumerate() {
                    let object = Object::new(ctx.clone())?;
                    object.set("path", m.path)?;
                    object.set("line", m.line)?;
                    object.set("text", m.text)?;
                    array.set(i, object)?;
                }
                Ok(array)
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "gitLog",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  path: Option<String>,
                  max: Option<u32>|
                  -> rquickjs::Result<Array<'js>> {
                require_running(&ctx, &s, "tools.git.log()")?;
                let commits = s
                    .host
                    .git_log(path.as_deref(), max)
                    .map_err(|e| tool_error(&ctx, "tools.git.log()", e))?;
                let array = Array::new(ctx.clone())?;
                for (i, c) in commits.into_iter().enumerate() {
                    let object = Object::new(ctx.clone())?;
                    object.set("id", c.id)?;
                    object.set("author", c.author)?;
                    object.set("time", c.time as f64)?;
                    object.set("summary", c.summary)?;
                    array.set(i, object)?;
                }
                Ok(array)
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "write",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, path: String, text: String| -> rquickjs::Result<()> {
                require_running(&ctx, &s, "tools.write()")?;
                s.host
                    .write(&path, &text)
                    .map_err(|e| tool_error(&ctx, &format!("tools.write({path:?})"), e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "edit",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, path: String, old: String, new: String| -> rquickjs::Result<()> {
                require_running(&ctx, &s, "tools.edit()")?;
                s.host
                    .edit(&path, &old, &new)
                    .map_err(|e| tool_error(&ctx, &format!("tools.edit({path:?})"), e))
            },
        )?,
    )?;

    // `tools.remove(path)` and `tools.revert(path)`: one path in, nothing back.
    type PathTool = fn(&dyn Host, &str) -> Result<(), ToolError>;
    let path_tools: [(&str, PathTool); 2] = [
        ("remove", |host, path| host.remove(path)),
        ("revert", |host, path| host.revert(path)),
    ];
    for (name, tool) in path_tools {
        let s = state.clone();
        natives.set(
            name,
            Function::new(
                ctx.clone(),
                move |ctx: Ctx<'js>, path: String| -> rquickjs::Result<()> {
                    require_running(&ctx, &s, &format!("tools.{name}()"))?;
                    tool(&*s.host, &path)
                        .map_err(|e| tool_error(&ctx, &format!("tools.{name}({path:?})"), e))
                },
            )?,
        )?;
    }

    let s = state.clone();
    natives.set(
        "changes",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>| -> rquickjs::Result<Array<'js>> {
                require_running(&ctx, &s, "tools.changes()")?;
                let array = Array::new(ctx.clone())?;
                for (i, change) in s.host.changes().into_iter().enumerate() {
                    let object = Object::new(ctx.clone())?;
                    object.set("path", change.path)?;
                    object.set("kind", change.kind)?;
                    object.set("bytes", change.bytes as f64)?;
                    array.set(i, object)?;
                }
                Ok(array)
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "isolatedChanges",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, id: f64| -> rquickjs::Result<Object<'js>> {
                require_running(&ctx, &s, "changes")?;
                let isolated = s
                    .host
                    .isolated_changes(id as CallId)
                    .map_err(|e| tool_error(&ctx, "the isolated agent's changes", e))?;
                let files = Array::new(ctx.clone())?;
                for (i, change) in isolated.files.into_iter().enumerate() {
                    let object = Object::new(ctx.clone())?;
                    object.set("path", change.path)?;
                    object.set("kind", change.kind)?;
                    object.set("bytes", change.bytes as f64)?;
                    files.set(i, object)?;
                }
                let object = Object::new(ctx.clone())?;
                object.set("files", files)?;
                object.set("diff", isolated.diff)?;
                Ok(object)
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "keepChanges",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, id: f64| -> rquickjs::Result<Vec<String>> {
                require_running(&ctx, &s, "changes.keep()")?;
                s.host
                    .keep_changes(id as CallId)
                    .map_err(|e| tool_error(&ctx, "changes.keep()", e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "discardChanges",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, id: f64| -> rquickjs::Result<()> {
                require_running(&ctx, &s, "changes.drop()")?;
                s.host.discard_changes(id as CallId);
                Ok(())
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "run",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  command: String,
                  args: Vec<String>,
                  timeout_ms: Option<u32>|
                  -> rquickjs::Result<Object<'js>> {
                require_running(&ctx, &s, "tools.run()")?;
                let output = s
                    .host
                    .run(&command, &args, timeout_ms)
                    .map_err(|e| tool_error(&ctx, &format!("tools.run({command:?})"), e))?;
                let object = Object::new(ctx.clone())?;
                object.set("code", output.code)?;
                object.set("stdout", output.stdout)?;
                object.set("stderr", output.stderr)?;
                Ok(object)
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "gitShow",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, rev: String, path: Option<String>| -> rquickjs::Result<String> {
                require_running(&ctx, &s, "tools.git.show()")?;
                s.host
                    .git_show(&rev, path.as_deref())
                    .map_err(|e| tool_error(&ctx, &format!("tools.git.show({rev:?})"), e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "gitDiff",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, range: Option<String>| -> rquickjs::Result<String> {
                require_running(&ctx, &s, "tools.git.diff()")?;
                s.host
                    .git_diff(range.as_deref())
                    .map_err(|e| tool_error(&ctx, "tools.git.diff()", e))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "gitStatus",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>| -> rquickjs::Result<Array<'js>> {
                require_running(&ctx, &s, "tools.git.status()")?;
                let entries = s
                    .host
                    .git_status()
                    .map_err(|e| tool_error(&ctx, "tools.git.status()", e))?;
                let array = Array::new(ctx.clone())?;
                for (i, e) in entries.into_iter().enumerate() {
                    let object = Object::new(ctx.clone())?;
                    object.set("path", e.path)?;
                    object.set("status", e.status)?;
                    array.set(i, object)?;
                }
                Ok(array)
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "phase",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, title: String| -> rquickjs::Result<()> {
                require_running(&ctx, &s, "phase()")?;
                s.host.phase(&title);
                if let Some(warning) = meta.unlisted_phase(&title) {
                    s.host.log(&warning);
                }
                *s.phase.borrow_mut() = Some(title);
                Ok(())
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "log",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, message: String| -> rquickjs::Result<()> {
                require_running(&ctx, &s, "log()")?;
                s.host.log(&message);
                Ok(())
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "budgetTotal",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>| -> rquickjs::Result<Option<f64>> {
                require_running(&ctx, &s, "budget.total")?;
                Ok(s.host.budget_total().map(|t| t as f64))
            },
        )?,
    )?;

    let s = state.clone();
    natives.set(
        "budgetSpent",
        Function::new(ctx.clone(), move |ctx: Ctx<'js>| -> rquickjs::Result<f64> {
            require_running(&ctx, &s, "budget.spent()")?;
            Ok(s.host.budget_spent() as f64)
        })?,
    )?;

    let s = state.clone();
    natives.set(
        "budgetRemaining",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>| -> rquickjs::Result<Option<f64>> {
                require_running(&ctx, &s, "budget.remaining()")?;
                Ok(s.host.budget_remaining().map(|t| t as f64))
            },
        )?,
    )?;

    Ok(natives)
}

/// The option names `agent()` knows.
const AGENT_OPTIONS: &str =
    "label, phase, model, effort, schema, tools, maxTokens, maxTurns, timeoutMs, isolation";

/// Reads `agent()`'s options object. `schema_text` is the JSON text of an object schema, which
/// the prelude makes with the bounded `JSON.stringify`.
fn agent_options<'js>(
    ctx: &Ctx<'js>,
    state: &State,
    opts: Option<Value<'js>>,
    schema_text: Option<String>,
) -> rquickjs::Result<(AgentOptions, bool)> {
    let mut isolated = false;
    let mut options = AgentOptions {
        label: None,
        phase: None,
        model: None,
        effort: None,
        schema: None,
        tools: None,
        max_tokens: None,
        max_turns: None,
        timeout_ms: None,
    };
    let Some(opts) = opts.filter(|o| !o.is_undefined() && !o.is_null()) else {
        return Ok((options, isolated));
    };
    let Some(object) = opts
        .as_object()
        .filter(|_| !opts.is_array() && !opts.is_function())
    else {
        return Err(Exception::throw_type(
            ctx,
            "agent(prompt, opts): opts must be an object",
        ));
    };
    let type_error = |key: &str, what: &str| {
        Exception::throw_type(
            ctx,
            &format!("agent(prompt, opts): opts.{key} must be {what}"),
        )
    };
    for key in object.keys::<String>() {
        let key = key?;
        let value: Value = object.get(key.as_str())?;
        if value.is_undefined() || value.is_null() {
            continue;
        }
        let string = |value: &Value<'js>| value.as_string().and_then(|s| s.to_string().ok());
        let count = |value: &Value<'js>, key: &str| -> rquickjs::Result<u32> {
            match value.as_number() {
                Some(n) if n.fract() == 0.0 && n >= 1.0 && n <= f64::from(u32::MAX) => Ok(n as u32),
                _ => Err(type_error(key, "a whole number from 1 to 4294967295")),
            }
        };
        match key.as_str() {
            "label" => {
                options.label = Some(string(&value).ok_or_else(|| type_error("label", "a string"))?)
            }
            "phase" => {
                options.phase = Some(string(&value).ok_or_else(|| type_error("phase", "a string"))?)
            }
            "model" => {
                options.model = Some(string(&value).ok_or_else(|| type_error("model", "a string"))?)
            }
            "effort" => {
                options.effort = Some(match string(&value).as_deref() {
                    Some("low") => Effort::Low,
                    Some("medium") => Effort::Medium,
                    Some("high") => Effort::High,
                    Some("xhigh") => Effort::Xhigh,
                    Some("max") => Effort::Max,
                    _ => {
                        return Err(type_error(
                            "effort",
                            "one of 'low', 'medium', 'high', 'xhigh', 'max'",
                        ));
                    }
                });
            }
            "schema" => {
                options.schema = Some(if let Some(text) = string(&value) {
                    text
                } else if value.is_object() && !value.is_array() && !value.is_function() {
                    schema_text
                        .clone()
                        .ok_or_else(|| type_error("schema", "a JSON Schema object"))?
                } else {
                    return Err(type_error("schema", "a JSON Schema object"));
                });
            }
            "tools" => {
                let names = value
                    .as_array()
                    .map(|a| {
                        a.iter::<Value>()
                            .map(|v| v.ok().as_ref().and_then(string))
                            .collect::<Option<Vec<_>>>()
                    })
                    .and_then(|v| v)
                    .ok_or_else(|| {
                        type_error("tools", "an array of tool names (read, glob, grep, git)")
                    })?;
                options.tools = Some(names);
            }
            "maxTokens" => options.max_tokens = Some(count(&value, "maxTokens")?),
            "maxTurns" => options.max_turns = Some(count(&value, "maxTurns")?),
            "timeoutMs" => options.timeout_ms = Some(count(&value, "timeoutMs")?),
            "isolation" => match string(&value).as_deref() {
                Some("worktree") => isolated = true,
                _ => return Err(type_error("isolation", "'worktree'")),
            },
            unknown => {
                if state.warned.borrow_mut().insert(unknown.to_owned()) {
                    state.host.log(&format!(
                        "agent(): unknown option `{unknown}` is ignored (options: {AGENT_OPTIONS})"
                    ));
                }
            }
        }
    }
    Ok((options, isolated))
}

#[cfg(test)]
mod tests;
