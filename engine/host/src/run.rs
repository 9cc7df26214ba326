//! The run lifetime: one `Store`, one scheduler, one budget ledger. A run ends with a
//! [`RunReport`]; whatever the guest does, only its own run ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Instance, TypedFunc};
use wasmtime::{Store, UpdateDeadline};

use crate::agent_loop::AgentContext;
use crate::artifact::Script;
use crate::budget::BudgetLedger;
use crate::events::EventSink;
use crate::host::{CpuMeter, RunLimiter, RunState, Workflow as Bindings, stdio::LogBuffer};
use crate::limits::{LimitExceeded, RunLimits};
use crate::provider::Provider;
use crate::runtime::{Runtime, Workflow};
use crate::scheduler::{AgentScheduler, AgentStats, CallJournal};
use crate::tools::ToolRoot;

/// Everything one run needs besides the workflow.
pub struct RunOptions {
    /// The run's arguments as JSON text (`null` when none).
    pub args_json: String,
    /// The directory the tools may read; `None` means no filesystem at all.
    pub root: Option<ToolRoot>,
    /// The run's limits.
    pub limits: RunLimits,
    /// Who answers agent calls.
    pub provider: Arc<dyn Provider>,
    /// Where progress goes.
    pub events: Arc<dyn EventSink>,
    /// The script, when the workflow is a script runtime.
    pub script: Option<Script>,
    /// Where the run's calls are recorded, and what it may replay.
    pub journal: Option<CallJournal>,
    /// Resolves when someone asks to stop the run (`None`: nobody can).
    pub stop: Option<StopSignal>,
    /// Budgets and slots the run shares with other runs.
    pub shared: Shared,
    /// Only load the script (the runtime's front-end checks), do not run it: `corral check`.
    pub load_only: bool,
}

/// What a run shares with other runs (a tenant's quotas, a process-wide slot pool) and with
/// the front end that started it.
#[derive(Default, Clone)]
pub struct Shared {
    /// Ledgers every provider request also reserves in (e.g. a tenant's daily tokens).
    pub budgets: Vec<Arc<BudgetLedger>>,
    /// Slots every agent call also holds while it runs.
    pub slots: Option<Arc<dyn crate::scheduler::SlotGate>>,
    /// Where the run puts the handle that stops one of its calls from outside.
    pub agent_stops: Option<Arc<AgentStops>>,
}

/// The handle that stops single calls of a run (`corral runs stop ID --agent N`), once the run
/// has started.
#[derive(Default)]
pub struct AgentStops(std::sync::Mutex<Option<crate::scheduler::AgentStopper>>);

impl AgentStops {
    /// Stops call `id` of the run; `false` when the run has not started, or the call is not
    /// queued or running.
    pub fn stop(&self, id: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|stopper| stopper.stop(id))
    }

    fn set(&self, stopper: crate::scheduler::AgentStopper) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(stopper);
    }
}

/// Resolves when someone asks to stop a run; the run then ends with [`RunError::Stopped`].
pub type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// How a run failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RunError {
    /// The workflow returned an error.
    #[error("the workflow failed: {0}")]
    Workflow(String),
    /// The workflow crashed (a trap: panic, unreachable, stack overflow ...).
    #[error("the workflow crashed: {0}")]
    Crashed(String),
    /// A host-enforced limit ended the run.
    #[error("{0}")]
    Limit(LimitExceeded),
    /// The script runtime refused the script (syntax errors and the like).
    #[error("{0}")]
    Script(String),
    /// The host could not run the workflow.
    #[error("cannot run the workflow: {0}")]
    Host(String),
    /// Someone asked to stop the run (`corral runs stop`).
    #[error("the run was stopped on request")]
    Stopped,
    /// The provider's usage or spend limit is reached: the run paused, to be resumed once it
    /// is lifted (calls that finished are not paid again).
    #[error("the run paused: {0}")]
    Paused(String),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The workflow's result as JSON text, or why there is none.
    pub outcome: Result<String, RunError>,
    /// Agent call counters.
    pub agents: AgentStats,
    /// Tokens charged to the budget.
    pub spent_tokens: u64,
    /// The budget, if any.
    pub budget_tokens: Option<u64>,
    /// The largest worst case one request asked the budget for.
    pub largest_request_tokens: u64,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// Time the guest itself computed.
    pub guest_cpu: Duration,
    /// Host time the run's tool calls took (scripts' and agents'), counted against
    /// `--max-tool-time`.
    pub tool_time: Duration,
    /// Time it took to instantiate the component (zero if it never got that far).
    pub instantiate: Duration,
    /// The writes the run staged (its changeset), sorted by path.
    pub changes: Vec<crate::tools::StagedChange>,
    /// The commit its root's HEAD named when a run that may write started (`None`: no root, no
    /// repository, or no write grant): what `corral runs apply --branch` builds on.
    pub base_commit: Option<String>,
}

type ScriptLoad = TypedFunc<(String, String), (Result<(), String>,)>;

impl Runtime {
    /// Runs a loaded workflow to completion.
    pub async fn run(&self, workflow: &Workflow, options: RunOptions) -> RunReport {
        let began = Instant::now();
        let limits = options.limits.clone();
        let ledger = BudgetLedger::with_parents(limits.budget_tokens, options.shared.budgets);
        let pause = Arc::new(crate::agent_loop::Pause::default());
        // A tool-time account of this run's own, on the same directory.
        // A write grant that does not parse grants nothing (front ends check it first).
        let grant = crate::tools::WriteGrant::parse(&limits.allow_write).unwrap_or_default();
        let writes = grant.grants_any();
        let root = options
            .root
            .as_ref()
            .map(|root| root.for_run().with_writes(grant));
        let base_commit = match &root {
            Some(root) if writes => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || root.head_commit())
                    .await
                    .ok()
                    .flatten()
            }
            _ => None,
        };
        let context = AgentContext {
            provider: Arc::clone(&options.provider),
            ledger: Arc::clone(&ledger),
            tools: root.clone(),
            events: Arc::clone(&options.events),
            schema_attempts: limits.schema_attempts,
            pause: Some(Arc::clone(&pause)),
            commands: Arc::new(crate::agent_loop::Commands {
                allow: limits.allow_run.clone(),
                limits: limits.commands.clone(),
            }),
        };
        let events = options.events;
        let mut scheduler = AgentScheduler::new(
            context,
            limits.max_concurrent,
            limits.max_agents,
            Arc::clone(&events),
        );
        if let Some(journal) = options.journal {
            scheduler = scheduler.with_journal(journal);
        }
        if let Some(gate) = options.shared.slots {
            scheduler = scheduler.with_gate(gate);
        }
        if let Some(stops) = &options.shared.agent_stops {
            stops.set(scheduler.stopper());
        }
        let log = LogBuffer::new(limits.max_log_bytes, Arc::clone(&events));
        let (stdout, stderr) = (log.stream(), log.stream());
        let seed = run_seed(workflow, &options.args_json, options.script.as_ref());
        let wasi = crate::host::wasi::run_ctx(seed, stdout.clone(), stderr.clone());
        let state = RunState {
            wasi,
            table: {
                let mut table = wasmtime::component::ResourceTable::new();
                table.set_max_capacity(crate::limits::MAX_HOST_RESOURCES);
                table
            },
            limiter: RunLimiter::new(limits.max_memory),
            limits: limits.clone(),
            scheduler,
            ledger: Arc::clone(&ledger),
            tools: root.clone(),
            events,
            phase: None,
            log: log.clone(),
            cpu: CpuMeter::new(),
            schemas: std::collections::HashMap::new(),
            prompt_bytes: 0,
            isolated: Default::default(),
            http: crate::host::wasi::http_ctx(),
            http_hooks: crate::host::wasi::DenyHttp,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let max_cpu = limits.max_cpu;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |context| {
            if context.data().cpu.guest_time() > max_cpu {
                return Err(LimitExceeded::Cpu(max_cpu).into());
            }
            // Yield every tick so that one busy guest never starves other runs on this thread.
            Ok(UpdateDeadline::Yield(1))
        });

        let mut instantiate = Duration::ZERO;
        let execution = execute(
            workflow,
            &mut store,
            options.args_json,
            options.script,
            &mut instantiate,
            options.load_only,
        );
        let bounded = async {
            match tokio::time::timeout(limits.timeout, execution).await {
                Ok(outcome) => outcome,
                Err(_) => Err(RunError::Limit(LimitExceeded::Timeout(limits.timeout))),
            }
        };
        let stop = async {
            match options.stop {
                Some(stop) => stop.await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            outcome = bounded => outcome,
            () = stop => Err(RunError::Stopped),
            reason = pause.paused() => Err(RunError::Paused(reason)),
        };
        stdout.finish();
        stderr.finish();
        let outcome = outcome.map_err(|error| explain(error, &log));

        // Tool calls still running on blocking threads (an agent's, or one the timeout cut off)
        // stop at their next check instead of outliving the run.
        if let Some(root) = &root {
            root.end();
        }
        let state = store.data_mut();
        let waiting = state.isolated.waiting();
        if waiting > 0 {
            state.events.event(&crate::events::RunEvent::Log {
                message: format!(
                    "corral: the changes of {waiting} isolated agent call(s) were neither kept nor \
                     dropped by the script, so they are not in the run's changeset"
                ),
            });
        }
        state.scheduler.shutdown();
        let agents = state.scheduler.stats();
        RunReport {
            outcome,
            agents,
            spent_tokens: ledger.spent(),
            budget_tokens: ledger.total(),
            largest_request_tokens: ledger.largest_ask(),
            wall: began.elapsed(),
            guest_cpu: state.cpu.guest_time(),
            tool_time: root.as_ref().map_or(Duration::ZERO, ToolRoot::tool_time),
            instantiate,
            changes: root.as_ref().map(ToolRoot::staged).unwrap_or_default(),
            base_commit,
        }
    }
}

async fn execute(
    workflow: &Workflow,
    store: &mut Store<RunState>,
    args_json: String,
    script: Option<Script>,
    instantiate: &mut Duration,
    load_only: bool,
) -> Result<String, RunError> {
    let began = Instant::now();
    let instance: Instance = workflow
        .instance_pre
        .instantiate_async(&mut *store)
        .await
        .map_err(classify)?;
    *instantiate = began.elapsed();
    let bindings = Bindings::new(&mut *store, &instance)
        .map_err(|error| RunError::Host(format!("{error:#}")))?;
    let script = script.or_else(|| workflow.embedded_script.clone());
    match (&workflow.script_load, script) {
        (Some(index), Some(script)) => {
            let load: ScriptLoad =
                instance
                    .get_typed_func(&mut *store, index)
                    .map_err(|error| {
                        RunError::Host(format!(
                            "the script runtime's load function has the wrong type: {error:#}"
                        ))
                    })?;
            let (loaded,) = load
                .call_async(&mut *store, (script.name, script.source))
                .await
                .map_err(classify)?;
            loaded.map_err(RunError::Script)?;
        }
        (Some(_), None) => {
            return Err(RunError::Host(format!(
                "{} is a script runtime: give it a script to run",
                workflow.name
            )));
        }
        (None, Some(script)) => {
            return Err(RunError::Host(format!(
                "{} is not a script runtime, so it cannot run {}",
                workflow.name, script.name
            )));
        }
        (None, None) => {}
    }
    if load_only {
        return Ok("null".to_string());
    }
    let result = bindings
        .call_run(&mut *store, &args_json)
        .await
        .map_err(classify)?;
    result.map_err(RunError::Workflow)
}

/// The seed of a run's virtual clocks and random numbers: the same workflow, script and
/// arguments give the same seed, so a resumed or replayed run sees the same values.
fn run_seed(workflow: &Workflow, args_json: &str, script: Option<&Script>) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(workflow.hash().as_bytes());
    hasher.update([0]);
    hasher.update(args_json.as_bytes());
    if let Some(script) = script {
        hasher.update([0]);
        hasher.update(script.source.as_bytes());
    }
    let digest = hasher.finalize();
    u64::from_le_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// Names what ended a run that trapped.
fn classify(error: wasmtime::Error) -> RunError {
    for cause in error.chain() {
        if let Some(limit) = cause.downcast_ref::<LimitExceeded>() {
            return RunError::Limit(limit.clone());
        }
        if let Some(wasmtime::component::ResourceTableError::Full) =
            cause.downcast_ref::<wasmtime::component::ResourceTableError>()
        {
            return RunError::Limit(LimitExceeded::HostResources(
                crate::limits::MAX_HOST_RESOURCES,
            ));
        }
        if let Some(
            wasmtime_wasi_http::FieldMapError::TotalSizeTooBig
            | wasmtime_wasi_http::FieldMapError::TooManyFields,
        ) = cause.downcast_ref::<wasmtime_wasi_http::FieldMapError>()
        {
            return RunError::Limit(LimitExceeded::HttpFields(
                crate::limits::MAX_HTTP_FIELD_BYTES,
            ));
        }
        if let Some(exit) = cause.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return RunError::Workflow(format!(
                "the workflow exited with status {} without returning a result",
                exit.0
            ));
        }
    }
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return RunError::Limit(limit.clone());
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        return RunError::Crashed(trap.to_string());
    }
    RunError::Crashed(format!("{error:#}"))
}

/// Adds what the guest last printed to a crash, where a Rust panic message or a JS stack lands.
fn explain(error: RunError, log: &LogBuffer) -> RunError {
    match error {
        RunError::Crashed(message) => {
            let tail = log.tail();
            let printed: Vec<&String> = tail
                .iter()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if printed.is_empty() {
                RunError::Crashed(message)
            } else {
                let printed: Vec<&str> = printed.iter().map(|line| line.as_str()).collect();
                RunError::Crashed(format!(
                    "{message}; it last printed:\n  {}",
                    printed.join("\n  ")
                ))
            }
        }
        other => other,
    }
}
