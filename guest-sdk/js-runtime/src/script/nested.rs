//! Nested workflows (`workflow()`, SCRIPT-API rule 12), each in a realm of its own.
//!
//! `workflow()` reads and checks the other script at once (see `startWorkflow` in the natives)
//! and queues it; the event loop then makes a QuickJS context for it, with the prelude over the
//! same host, compiles the script there and calls it, so that no frame of the workflow's realm is
//! on the stack while it runs. When its promise settles, what it returned or threw crosses back
//! as JSON text or an error's parts, is rebuilt in the workflow's realm, and settles the
//! `workflow()` call. No JavaScript object of one realm ever reaches the other.

use super::*;

/// A nested workflow, running in a realm of its own.
pub(super) struct Nested {
    /// The script's path in the run's root.
    pub(super) path: String,
    pub(super) api: Api,
    /// The promise of its script's body.
    promise: Persistent<Promise<'static>>,
    // Last, as in `Workflow`.
    pub(super) context: Context,
}

/// A `workflow()` call the event loop has yet to start.
pub(super) struct NestedStart {
    pub(super) realm: RealmId,
    pub(super) path: String,
    pub(super) source: String,
    pub(super) prepared: Prepared,
    /// Its args as JSON text; `None` for `undefined`.
    pub(super) args_json: Option<String>,
}

/// How a nested workflow ended, as data that can cross into the workflow's realm.
enum Ending {
    /// It returned this JSON text; `None` for `undefined`.
    Returned(Option<String>),
    /// It threw an error (or could not start), rebuilt from these parts on the other side.
    Failed(ErrorParts),
    /// It threw something other than an error: that value as JSON text (`None` for `undefined`).
    Threw(Option<String>),
}

/// What of an error crosses between realms.
struct ErrorParts {
    name: String,
    message: String,
    code: Option<String>,
    stack: Option<String>,
}

impl ErrorParts {
    /// A `WorkflowError` with `code`.
    fn workflow(code: &str, message: String) -> ErrorParts {
        ErrorParts {
            name: "WorkflowError".to_owned(),
            message,
            code: Some(code.to_owned()),
            stack: None,
        }
    }
}

impl Workflow {
    /// Starts the nested workflows `workflow()` asked for since the last time; whether there
    /// were any.
    pub(super) fn start_queued(&self) -> Result<bool, Failure> {
        let queued = std::mem::take(&mut *self.state.queued.borrow_mut());
        let any = !queued.is_empty();
        for start in queued {
            let realm = start.realm;
            match self.start_nested(start)? {
                Ok(nested) => {
                    self.nested.borrow_mut().insert(realm, nested);
                }
                Err(ending) => self.end_nested(realm, ending)?,
            }
        }
        Ok(any)
    }

    /// Makes a realm for a nested workflow, compiles its script there and calls it: the body
    /// runs up to its first `await` (no frame of the workflow's realm is on the stack meanwhile).
    /// `Err(ending)` when it could not start, as the `workflow()` call's rejection.
    fn start_nested(&self, start: NestedStart) -> Result<Result<Nested, Ending>, Failure> {
        let NestedStart {
            realm,
            path,
            source,
            prepared,
            args_json,
        } = start;
        let context = match Context::full(&self.runtime) {
            Ok(context) => context,
            // Most likely the heap is full: a rejection the script can handle, as any.
            Err(e) => {
                let hint = if self.state.heap.ever_refused() {
                    out_of_memory_hint(&self.state.heap)
                } else {
                    String::new()
                };
                return Ok(Err(Ending::Failed(ErrorParts::workflow(
                    "internal",
                    format!("workflow({path:?}): cannot make a realm to run it in: {e}{hint}"),
                ))));
            }
        };
        let started = context.with(|ctx| -> Result<_, Ending> {
            let thrown = |e: rquickjs::Error| Ending::Failed(error_parts(&ctx, e, &path));
            let meta = Rc::new(ScriptMeta::new(prepared.meta.as_ref()));
            let api = install(&ctx, &self.state, realm, meta).map_err(thrown)?;
            let args = match &args_json {
                None => Value::new_undefined(ctx.clone()),
                Some(json) => host_json(&ctx, json).map_err(|refusal| {
                    Ending::Failed(ErrorParts::workflow(
                        "invalid-input",
                        format!("workflow({path:?}): {}", refusal.explain("its args")),
                    ))
                })?,
            };
            ctx.globals().set("args", args.clone()).map_err(thrown)?;
            let main = compile(&ctx, &path, &source, &prepared).map_err(|message| {
                Ending::Failed(ErrorParts::workflow(
                    "invalid-script",
                    format!(
                        "workflow({path:?}): the workflow cannot run; fix it and try again:\n{message}"
                    ),
                ))
            })?;
            let workflow: Value = ctx.globals().get("workflow").map_err(thrown)?;
            let body: Function = main.call((args, workflow)).map_err(thrown)?;
            let promise: Promise = body.call(()).map_err(thrown)?;
            Ok((api, Persistent::save(&ctx, promise)))
        });
        Ok(started.map(|(api, promise)| Nested {
            path,
            api,
            promise,
            context,
        }))
    }

    /// Hands every nested workflow whose promise has settled back to its `workflow()` call;
    /// whether there were any.
    pub(super) fn finish_nested(&self) -> Result<bool, Failure> {
        let mut ended = Vec::new();
        for (realm, nested) in self.nested.borrow().iter() {
            if let Some(ending) = nested.context.with(|ctx| ending(&ctx, nested))? {
                ended.push((*realm, ending));
            }
        }
        let any = !ended.is_empty();
        for (realm, ending) in ended {
            let nested = self.nested.borrow_mut().remove(&realm);
            self.end_nested(realm, ending)?;
            // Its realm goes now, outside any `with` (dropping a context locks the runtime).
            drop(nested);
        }
        Ok(any)
    }

    /// Settles a nested workflow's `workflow()` call with how it ended. Agent calls it left
    /// running are cancelled, as a run's are; whatever of its code still runs cannot start more.
    fn end_nested(&self, realm: RealmId, ending: Ending) -> Result<(), Failure> {
        self.state.finished.borrow_mut().insert(realm);
        let left: Vec<CallId> = {
            let mut pending = self.state.pending.borrow_mut();
            let left: Vec<CallId> = pending
                .iter()
                .filter(|(_, call)| call.realm == realm)
                .map(|(id, _)| *id)
                .collect();
            for id in &left {
                pending.remove(id);
            }
            left
        };
        for id in left {
            self.state.host.agent_cancel(id);
        }
        let name = self.name.as_str();
        self.context.with(|ctx| {
            let finish = self
                .api
                .finish
                .clone()
                .restore(&ctx)
                .map_err(|e| internal(&ctx, e, name))?;
            // The text comes from the other realm's bounded stringify, so it is valid and flat
            // enough; it is parsed as carefully as any text from outside all the same.
            let json = |text: Option<String>| match text {
                None => Ok(Value::new_undefined(ctx.clone())),
                Some(text) => host_json(&ctx, &text).map_err(|refusal| {
                    format!(
                        "{name}: internal error in the JavaScript runtime: {}",
                        refusal.explain("a nested workflow's values")
                    )
                }),
            };
            let (ok, value, parts) = match ending {
                Ending::Returned(text) => (true, json(text)?, false),
                Ending::Threw(text) => (false, json(text)?, false),
                Ending::Failed(error) => {
                    let object = Object::new(ctx.clone()).map_err(|e| internal(&ctx, e, name))?;
                    let set = |key: &str, value: Option<String>| {
                        object.set(key, value).map_err(|e| internal(&ctx, e, name))
                    };
                    set("name", Some(error.name))?;
                    set("message", Some(error.message))?;
                    set("code", error.code)?;
                    set("stack", error.stack)?;
                    (false, object.into_value(), true)
                }
            };
            let () = finish
                .call((f64::from(realm), ok, value, parts))
                .map_err(|e| self.uncaught(&ctx, e))?;
            Ok(())
        })
    }
}

/// How a nested workflow ended, once its promise has settled.
fn ending<'js>(ctx: &Ctx<'js>, nested: &Nested) -> Result<Option<Ending>, Failure> {
    let path = nested.path.as_str();
    let promise = nested
        .promise
        .clone()
        .restore(ctx)
        .map_err(|e| internal(ctx, e, path))?;
    let what = format!("workflow({path:?})");
    if let PromiseState::Pending = promise.state() {
        return Ok(None);
    }
    // The realm's own bounded stringify (the script may have replaced the global one).
    let stringify = nested
        .api
        .stringify
        .clone()
        .restore(ctx)
        .map_err(|e| internal(ctx, e, path))?;
    match promise.state() {
        PromiseState::Pending => Ok(None),
        PromiseState::Resolved => {
            let value: Value = promise
                .result()
                .expect("the promise is settled")
                .map_err(|e| internal(ctx, e, path))?;
            Ok(Some(if value.is_undefined() {
                Ending::Returned(None)
            } else {
                match result_json(ctx, &stringify, value) {
                    Ok(json) => Ending::Returned(Some(json)),
                    Err(message) => Ending::Failed(ErrorParts::workflow(
                        "invalid-result",
                        format!("{what}: {message}"),
                    )),
                }
            }))
        }
        PromiseState::Rejected => {
            let error = promise
                .result::<Value>()
                .expect("the promise is settled")
                .expect_err("it rejected");
            let value = match error {
                rquickjs::Error::Exception => ctx.catch(),
                other => return Err(format!("{path}: {other}")),
            };
            Ok(Some(if value.is_error() {
                Ending::Failed(parts_of(ctx, &value))
            } else if value.is_undefined() {
                Ending::Threw(None)
            } else {
                // Without a JSON form, what it threw crosses as its text.
                let text = match stringify.call::<_, Option<String>>((value.clone(),)) {
                    Ok(Some(text)) => text,
                    Ok(None) => serde_json::Value::String(format_value(ctx, &value)).to_string(),
                    Err(_) => {
                        ctx.catch();
                        serde_json::Value::String(format_value(ctx, &value)).to_string()
                    }
                };
                Ending::Threw(Some(text))
            }))
        }
    }
}

/// The parts of an error object, read in its own realm.
fn parts_of<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> ErrorParts {
    let text = |key: &str| {
        value.as_object().and_then(|object| {
            object
                .get::<_, Option<rquickjs::Coerced<String>>>(key)
                .ok()
                .flatten()
                .map(|c| c.0)
        })
    };
    let code = value
        .as_object()
        .and_then(|object| object.get::<_, Option<String>>("code").ok().flatten());
    // A getter that throws leaves its exception behind.
    let parts = ErrorParts {
        name: text("name").unwrap_or_else(|| "Error".to_owned()),
        message: text("message").unwrap_or_default(),
        code,
        stack: text("stack"),
    };
    if ctx.has_exception() {
        ctx.catch();
    }
    parts
}

/// The parts of an exception a realm threw while being set up.
fn error_parts(ctx: &Ctx<'_>, error: rquickjs::Error, path: &str) -> ErrorParts {
    match error {
        rquickjs::Error::Exception => {
            let value = ctx.catch();
            if value.is_error() {
                parts_of(ctx, &value)
            } else {
                ErrorParts::workflow(
                    "internal",
                    format!("workflow({path:?}): {}", describe(ctx, &value, None)),
                )
            }
        }
        other => ErrorParts::workflow("internal", format!("workflow({path:?}): {other}")),
    }
}
