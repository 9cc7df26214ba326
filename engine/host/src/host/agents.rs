//! `corral:workflow/agents`: start, wait, cancel, call, parallel — over the run's
//! [`AgentScheduler`](crate::scheduler::AgentScheduler).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use super::RunState;
use super::bindings::corral::workflow::agents::{
    AgentError, AgentOptions, AgentOutput, AgentRequest, CallId, Completion, Effort, Host,
    Isolated as IsolatedChanges,
};
use super::bindings::corral::workflow::tools::{Change, ToolError};
use super::bindings::corral::workflow::types::{Host as TypesHost, Usage};
use crate::agent_loop::{self, DEFAULT_MAX_TURNS};
use crate::limits::LimitExceeded;
use crate::provider;
use crate::scheduler::AgentOutcome;
use crate::schema::OutputSchema;
use crate::tools::Written;

impl TypesHost for RunState {}

impl RunState {
    /// Compiles a schema once per run; later calls with the same text share it. At most
    /// `--max-schemas` distinct schemas are compiled and kept per run.
    fn compiled_schema(&mut self, text: &str) -> Result<Arc<OutputSchema>, agent_loop::AgentError> {
        if let Some(schema) = self.schemas.get(text) {
            return Ok(Arc::clone(schema));
        }
        let max = self.limits.max_schemas;
        if self.schemas.len() >= max {
            return Err(agent_loop::AgentError::InvalidInput(format!(
                "this run already uses {max} distinct output schemas, the limit (reuse a schema for \
                 calls that return the same shape, or raise --max-schemas)"
            )));
        }
        let schema =
            Arc::new(OutputSchema::compile(text).map_err(agent_loop::AgentError::InvalidInput)?);
        self.schemas.insert(text.to_string(), Arc::clone(&schema));
        Ok(schema)
    }

    /// Turns the guest's options into a request, refusing invalid ones before anything starts.
    fn agent_request(
        &mut self,
        prompt: String,
        options: AgentOptions,
    ) -> Result<agent_loop::AgentRequest, agent_loop::AgentError> {
        use agent_loop::AgentError::{AgentLimit, Denied, InvalidInput};
        // Every check comes before any work the request would make the host do: the agent cap
        // and the sizes first, schema compilation last.
        self.scheduler.check_room()?;
        let limits = self.limits.clone();
        for (what, value) in [
            ("label", &options.label),
            ("phase", &options.phase),
            ("model", &options.model),
        ] {
            let size = value.as_ref().map_or(0, String::len);
            if size > limits.max_option_bytes {
                return Err(InvalidInput(format!(
                    "the {what} is {size} bytes, over the limit of {} (shorten it, or raise --max-option-bytes)",
                    limits.max_option_bytes
                )));
            }
        }
        let schema_bytes = options.schema.as_ref().map_or(0, String::len);
        if schema_bytes > limits.max_schema_bytes {
            return Err(InvalidInput(format!(
                "the schema is {schema_bytes} bytes, over the limit of {} (simplify the schema, or raise --max-schema-bytes)",
                limits.max_schema_bytes
            )));
        }
        let bytes = prompt.len() + schema_bytes;
        if bytes > limits.max_prompt_bytes {
            return Err(InvalidInput(format!(
                "the prompt and schema are {bytes} bytes, over the limit of {} (shorten the prompt, or raise --max-prompt-bytes)",
                limits.max_prompt_bytes
            )));
        }
        if self.prompt_bytes + bytes > limits.max_run_prompt_bytes {
            return Err(AgentLimit(format!(
                "this run's agent prompts and schemas would pass {} bytes in all, the limit (send less text per agent, or raise --max-run-prompt-bytes)",
                limits.max_run_prompt_bytes
            )));
        }
        let schema = match &options.schema {
            Some(text) => Some(self.compiled_schema(text)?),
            None => None,
        };
        // A workflow's policy manifest narrows the tools (all of them, when a call names none)
        // and the models a call may name.
        let mut options = options;
        if let Some(granted) = &limits.grants.tools {
            match &options.tools {
                Some(tools) => {
                    if let Some(tool) = tools.iter().find(|tool| !limits.grants.tool(tool)) {
                        return Err(Denied(format!(
                            "the tool '{tool}' is not granted by the workflow's policy manifest (grants.tools: {})",
                            if granted.is_empty() {
                                "none".to_string()
                            } else {
                                granted.join(", ")
                            }
                        )));
                    }
                }
                // Without a root there are no tools to narrow. A call that names none gets
                // the read-only tools the manifest grants; writing and running must be named.
                None if self.tools.is_some() => {
                    options.tools = Some(
                        granted
                            .iter()
                            .filter(|tool| agent_loop::AGENT_TOOLS.contains(&tool.as_str()))
                            .cloned()
                            .collect(),
                    );
                }
                None => {}
            }
        }
        if let Some(model) = &options.model
            && !limits.grants.model(model)
        {
            return Err(Denied(format!(
                "the model '{model}' is not granted by the workflow's policy manifest (grants.models: {})",
                limits
                    .grants
                    .models
                    .as_deref()
                    .unwrap_or_default()
                    .join(", ")
            )));
        }
        if let Some(tools) = &options.tools {
            agent_loop::check_tool_grant(tools)?;
            if self.tools.is_none() && !tools.is_empty() {
                return Err(Denied("this run has no root directory, so agents cannot be granted tools (pass --root DIR)".to_string()));
            }
            let writes = self
                .tools
                .as_ref()
                .is_some_and(|root| root.writes_granted());
            if let Some(tool) = tools
                .iter()
                .find(|tool| matches!(tool.as_str(), "write" | "edit"))
                && !writes
            {
                return Err(Denied(format!(
                    "the agent tool '{tool}' needs a run that grants writes: start it with \
                     --allow-write (or --allow-write=GLOB)"
                )));
            }
            if tools.iter().any(|tool| tool == "run") && limits.allow_run.is_empty() {
                return Err(Denied(
                    "the agent tool 'run' needs a run that grants commands: start it with \
                     --allow-run=CMD,…"
                        .to_string(),
                ));
            }
        }
        let max_tokens = options.max_tokens.unwrap_or(limits.max_output_tokens);
        if max_tokens == 0 || max_tokens > limits.max_output_tokens {
            return Err(InvalidInput(format!(
                "maxTokens {max_tokens} is outside 1..={} (raise --max-output-tokens for more)",
                limits.max_output_tokens
            )));
        }
        if options.max_turns == Some(0) {
            return Err(InvalidInput("maxTurns must be at least 1".to_string()));
        }
        if options.timeout_ms == Some(0) {
            return Err(InvalidInput("timeoutMs must be at least 1".to_string()));
        }
        self.prompt_bytes += bytes;
        Ok(agent_loop::AgentRequest {
            prompt,
            label: options.label,
            phase: options.phase.or_else(|| self.phase.clone()),
            model: options.model,
            effort: options.effort.map(|effort| match effort {
                Effort::Low => provider::Effort::Low,
                Effort::Medium => provider::Effort::Medium,
                Effort::High => provider::Effort::High,
                Effort::Xhigh => provider::Effort::XHigh,
                Effort::Max => provider::Effort::Max,
            }),
            schema,
            tools: options.tools,
            max_tokens,
            // A call that names no maxTokens lets the budget lower its ceiling to what remains.
            output_floor: options
                .max_tokens
                .is_none()
                .then(|| agent_loop::MIN_OUTPUT_TOKENS.min(max_tokens)),
            max_turns: options.max_turns.unwrap_or(DEFAULT_MAX_TURNS),
            timeout: options
                .timeout_ms
                .map(|ms| Duration::from_millis(u64::from(ms))),
            isolated: false,
        })
    }

    fn start_call(
        &mut self,
        prompt: String,
        options: AgentOptions,
    ) -> Result<CallId, agent_loop::AgentError> {
        self.start_call_as(prompt, options, false)
    }

    fn start_call_as(
        &mut self,
        prompt: String,
        options: AgentOptions,
        isolated: bool,
    ) -> Result<CallId, agent_loop::AgentError> {
        let mut request = self.agent_request(prompt, options)?;
        if isolated {
            if !self
                .tools
                .as_ref()
                .is_some_and(|root| root.writes_granted())
            {
                return Err(agent_loop::AgentError::Denied(
                    "isolation: 'worktree' needs a run that grants writes (start it with \
                     --allow-write), or the agent has nothing to isolate"
                        .to_string(),
                ));
            }
            request.isolated = true;
        }
        self.scheduler.start(request)
    }

    fn check_batch(&self, what: &'static str, size: usize) -> wasmtime::Result<()> {
        if size > self.limits.max_batch {
            return Err(LimitExceeded::Batch {
                what,
                size,
                limit: self.limits.max_batch,
            }
            .into());
        }
        Ok(())
    }

    /// Waits on the scheduler; the time spent suspended is not the guest's CPU time. The
    /// changes of isolated calls that finished are kept aside for the script to keep or drop.
    async fn collect(&mut self, ids: &[CallId]) -> Vec<(u64, AgentOutcome)> {
        let began = Instant::now();
        let done = self.scheduler.wait(ids).await;
        self.cpu.add_suspended(began.elapsed());
        for (id, outcome) in &done {
            if let Some(since) = self.scheduler.take_isolation(*id)
                && let Ok(output) = outcome
            {
                let max = self.limits.tools.max_staged_bytes;
                self.isolated.hold(*id, output.changes.clone(), since, max);
            }
        }
        done
    }

    fn isolated_changes_of(&self, id: CallId) -> Result<&Held, ToolError> {
        match self.isolated.calls.get(&id) {
            Some(Ok(held)) => Ok(held),
            Some(Err(limit)) => Err(ToolError::Limit(limit.clone())),
            None => Err(ToolError::InvalidInput(format!(
                "agent call {id} has no isolated changes waiting: it was not started with \
                 isolation, has not finished (wait for it first), or its changes were already \
                 kept or dropped"
            ))),
        }
    }
}

/// The changes of one finished isolated call, waiting.
#[derive(Debug)]
pub(crate) struct Held {
    written: Vec<Written>,
    /// The run's changeset generation its overlay started from.
    since: u64,
    bytes: u64,
}

/// Finished isolated calls whose changes wait, under `--max-staged-bytes` together.
#[derive(Debug, Default)]
pub(crate) struct Isolated {
    /// By call id: the changes, or why they could not be held.
    calls: HashMap<CallId, Result<Held, String>>,
    bytes: u64,
}

impl Isolated {
    fn hold(&mut self, id: CallId, written: Vec<Written>, since: u64, max: u64) {
        let bytes: u64 = written
            .iter()
            .map(|w| w.content.as_ref().map_or(0, |c| c.len() as u64))
            .sum();
        let held = if self.bytes + bytes > max {
            Err(format!(
                "the changes of isolated agent call {id} ({bytes} bytes) were dropped: with those \
                 waiting already they would take more than --max-staged-bytes ({max}): keep or \
                 drop isolated changes as their calls finish"
            ))
        } else {
            self.bytes += bytes;
            Ok(Held {
                written,
                since,
                bytes,
            })
        };
        self.calls.insert(id, held);
    }

    fn release(&mut self, id: CallId) -> Option<Held> {
        match self.calls.remove(&id)? {
            Ok(held) => {
                self.bytes -= held.bytes;
                Some(held)
            }
            Err(_) => None,
        }
    }

    /// Calls whose changes still wait (for the run's end).
    pub(crate) fn waiting(&self) -> usize {
        self.calls.values().filter(|held| held.is_ok()).count()
    }
}

impl Host for RunState {
    fn start_isolated(
        &mut self,
        prompt: String,
        options: AgentOptions,
    ) -> wasmtime::Result<Result<CallId, AgentError>> {
        Ok(self
            .start_call_as(prompt, options, true)
            .map_err(to_wit_error))
    }

    async fn isolated_changes(
        &mut self,
        id: CallId,
    ) -> wasmtime::Result<Result<IsolatedChanges, ToolError>> {
        let held = match self.isolated_changes_of(id) {
            Ok(held) => held,
            Err(error) => return Ok(Err(error)),
        };
        let Some(root) = self.tools.clone() else {
            return Ok(Err(ToolError::Denied(
                "this run has no root directory".to_string(),
            )));
        };
        let written = held.written.clone();
        let began = Instant::now();
        let preview = tokio::task::spawn_blocking(move || root.preview(&written)).await;
        self.cpu.add_suspended(began.elapsed());
        let (files, diff) =
            preview.map_err(|error| wasmtime::format_err!("tool call failed: {error}"))?;
        Ok(Ok(IsolatedChanges {
            files: files
                .into_iter()
                .map(|change| Change {
                    path: change.path,
                    kind: change.kind.as_str().to_string(),
                    bytes: change.bytes,
                })
                .collect(),
            diff,
        }))
    }

    async fn keep_changes(
        &mut self,
        id: CallId,
    ) -> wasmtime::Result<Result<Vec<String>, ToolError>> {
        if let Err(error) = self.isolated_changes_of(id) {
            return Ok(Err(error));
        }
        let Some(root) = self.tools.clone() else {
            return Ok(Err(ToolError::Denied(
                "this run has no root directory".to_string(),
            )));
        };
        let held = self.isolated.release(id).expect("checked above");
        let (written, since) = (held.written.clone(), held.since);
        let began = Instant::now();
        let kept = tokio::task::spawn_blocking(move || root.keep(&written, since)).await;
        self.cpu.add_suspended(began.elapsed());
        let kept = kept.map_err(|error| wasmtime::format_err!("tool call failed: {error}"))?;
        match kept {
            Ok(paths) => Ok(Ok(paths)),
            Err(error) => {
                // Nothing moved: the changes still wait.
                let max = self.limits.tools.max_staged_bytes;
                self.isolated.hold(id, held.written, held.since, max);
                Ok(Err(super::tools::to_wit_error(error)))
            }
        }
    }

    fn discard_changes(&mut self, id: CallId) -> wasmtime::Result<()> {
        self.isolated.release(id);
        self.isolated.calls.remove(&id);
        Ok(())
    }

    fn start(
        &mut self,
        prompt: String,
        options: AgentOptions,
    ) -> wasmtime::Result<Result<CallId, AgentError>> {
        Ok(self.start_call(prompt, options).map_err(to_wit_error))
    }

    async fn wait(&mut self, ids: Vec<CallId>) -> wasmtime::Result<Vec<Completion>> {
        self.check_batch("wait", ids.len())?;
        let done = self.collect(&ids).await;
        Ok(done
            .into_iter()
            .map(|(id, outcome)| Completion {
                id,
                outcome: to_wit_outcome(outcome),
            })
            .collect())
    }

    fn cancel(&mut self, id: CallId) -> wasmtime::Result<()> {
        self.scheduler.cancel(id);
        Ok(())
    }

    async fn call(
        &mut self,
        prompt: String,
        options: AgentOptions,
    ) -> wasmtime::Result<Result<AgentOutput, AgentError>> {
        let id = match self.start_call(prompt, options) {
            Ok(id) => id,
            Err(error) => return Ok(Err(to_wit_error(error))),
        };
        let mut done = self.collect(&[id]).await;
        let (_, outcome) = done
            .pop()
            .expect("wait returns the one id it was given once it finished");
        Ok(to_wit_outcome(outcome))
    }

    async fn parallel(
        &mut self,
        requests: Vec<AgentRequest>,
    ) -> wasmtime::Result<Vec<Result<AgentOutput, AgentError>>> {
        self.check_batch("parallel", requests.len())?;
        let mut slots: Vec<Option<Result<AgentOutput, AgentError>>> =
            Vec::with_capacity(requests.len());
        let mut pending: Vec<(usize, CallId)> = Vec::new();
        for (index, request) in requests.into_iter().enumerate() {
            match self.start_call(request.prompt, request.options) {
                Ok(id) => {
                    pending.push((index, id));
                    slots.push(None);
                }
                Err(error) => slots.push(Some(Err(to_wit_error(error)))),
            }
        }
        while !pending.is_empty() {
            let ids: Vec<CallId> = pending.iter().map(|(_, id)| *id).collect();
            for (id, outcome) in self.collect(&ids).await {
                if let Some(position) = pending.iter().position(|(_, pending_id)| *pending_id == id)
                {
                    let (index, _) = pending.swap_remove(position);
                    slots[index] = Some(to_wit_outcome(outcome));
                }
            }
        }
        Ok(slots
            .into_iter()
            .map(|slot| slot.expect("every slot is filled once all calls are collected"))
            .collect())
    }
}

fn to_wit_outcome(outcome: AgentOutcome) -> Result<AgentOutput, AgentError> {
    match outcome {
        Ok(output) => Ok(AgentOutput {
            text: output.text,
            json: output.json.map(|value| value.to_string()),
            usage: Usage {
                input_tokens: output.usage.input_tokens,
                output_tokens: output.usage.output_tokens,
                cache_read_tokens: output.usage.cache_read_tokens,
                cache_write_tokens: output.usage.cache_write_tokens,
            },
            model: output.model,
        }),
        Err(error) => Err(to_wit_error(error)),
    }
}

fn to_wit_error(error: agent_loop::AgentError) -> AgentError {
    use agent_loop::AgentError as E;
    match error {
        E::BudgetExhausted(m) => AgentError::BudgetExhausted(m),
        E::AgentLimit(m) => AgentError::AgentLimit(m),
        E::SchemaMismatch(m) => AgentError::SchemaMismatch(m),
        E::Provider(m) => AgentError::Provider(m),
        E::Timeout(m) => AgentError::Timeout(m),
        E::Cancelled(m) => AgentError::Cancelled(m),
        E::Denied(m) => AgentError::Denied(m),
        E::InvalidInput(m) => AgentError::InvalidInput(m),
    }
}
