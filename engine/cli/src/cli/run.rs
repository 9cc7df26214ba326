//! `corral run` (and the arguments `corral plan` shares): arguments → [`RunSpec`] → the run
//! service → progress, result and exit code.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

use corral_host::config::CorralConfig;
use corral_host::events::EventSink;
use corral_host::limits::{format_duration, format_size, parse_duration, parse_size};
use corral_host::{RunError, RunLimits, RunReport, Runtime, RuntimeConfig};
use corral_service::{
    BundledRuntime, ErrorKind, ProviderInfo, RootRef, RunHandle, RunOutcome, RunService, RunSpec,
    ScriptRef, ServiceConfig, ServiceError, StartOptions, WorkflowRef,
};
use corral_store::{Journal, RunStore};

use super::progress::{Failures, JsonLines, Progress, Tally};
use super::{EXIT_HOST, EXIT_LIMIT, EXIT_OVER_BUDGET, EXIT_STOPPED, EXIT_USAGE, EXIT_WORKFLOW};

/// The JavaScript runtime component, bundled so that `corral run x.js` needs nothing else. Built
/// from `guest-sdk/js-runtime` (see its `build.sh`); CI checks the bytes match the source.
pub const JS_RUNTIME: &[u8] = include_bytes!("../../../../guest-sdk/js-runtime/js_runtime.wasm");
/// SHA-256 of [`JS_RUNTIME`], committed beside it (and checked by a test), so that starting a
/// script does not hash 1.2 MB first.
pub const JS_RUNTIME_SHA256: &str =
    include_str!("../../../../guest-sdk/js-runtime/js_runtime.wasm.sha256");

/// The bundled JavaScript runtime, as the run service knows it: by hash, extension and type.
pub fn js_runtime() -> BundledRuntime {
    BundledRuntime {
        name: "js_runtime.wasm",
        bytes: JS_RUNTIME,
        hash: JS_RUNTIME_SHA256
            .split_whitespace()
            .next()
            .unwrap_or_default(),
        extensions: &["js", "mjs"],
        content_types: &["application/javascript", "text/javascript"],
    }
}

/// A duration flag whose default is shown (and read) the way it is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(Dur)
    }
}

/// A size flag whose default is shown (and read) the way it is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_size(text).map(Size)
    }
}

fn defaults() -> RunLimits {
    RunLimits::default()
}

/// Where the service keeps things, shared by every subcommand that runs or reads runs.
#[derive(Args, Clone, Debug, Default)]
pub struct ServiceArgs {
    /// Provider configuration (default: ./corral.toml if it exists).
    #[arg(long, env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the compiled-component cache.
    #[arg(long, env = "CORRAL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not use the compiled-component cache on disk.
    #[arg(long)]
    pub no_cache: bool,
    /// Directory of the run journal (default: $XDG_DATA_HOME/corral).
    #[arg(long, env = "CORRAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The core wasm instances one workflow component may create (a CPython guest has about
    /// 14); a component with more is refused at load.
    #[arg(long, env = "CORRAL_MAX_CORE_INSTANCES", default_value_t = corral_host::limits::MAX_CORE_INSTANCES,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_core_instances: u32,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    /// The workflow: a component (.wasm) or a script (.js runs on the bundled JavaScript runtime).
    pub workflow: PathBuf,
    /// Directory the workflow's tools may read (nothing else exists). Without it: no files at all.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The run's arguments, as JSON.
    #[arg(long)]
    pub args: Option<String>,
    /// Who answers agent calls: `sim` (simulated, offline), `anthropic`, `openai`, or a provider
    /// named in corral.toml (default: corral.toml's default_provider, else `sim`).
    #[arg(long)]
    pub provider: Option<String>,
    /// Default model of agent calls that name none: an alias (haiku, sonnet, opus) or a model id.
    #[arg(long)]
    pub model: Option<String>,
    /// Latency of each simulated provider request, e.g. 50ms.
    #[arg(long)]
    pub sim_latency: Option<Dur>,
    /// Script runtime component for a script workflow (default for .js: the bundled one).
    #[arg(long, env = "CORRAL_RUNTIME")]
    pub runtime: Option<PathBuf>,
    /// Agent calls in flight at once.
    #[arg(long, default_value_t = defaults().max_concurrent)]
    pub max_concurrent: usize,
    /// Agent calls per run.
    #[arg(long, default_value_t = defaults().max_agents)]
    pub max_agents: u64,
    /// Token budget of the run (unlimited when absent). The plan is checked against it first.
    #[arg(long)]
    pub budget_tokens: Option<u64>,
    /// Run even when the plan's estimate exceeds --budget-tokens.
    #[arg(long)]
    pub force: bool,
    /// Wall-clock limit of the run, e.g. 10m.
    #[arg(long, default_value_t = Dur(defaults().timeout))]
    pub timeout: Dur,
    /// CPU time the workflow itself may compute (waiting for agents does not count), e.g. 60s.
    #[arg(long, default_value_t = Dur(defaults().max_cpu))]
    pub max_cpu: Dur,
    /// Guest memory limit, e.g. 256MiB.
    #[arg(long, default_value_t = Size(defaults().max_memory))]
    pub max_memory: Size,
    /// Bytes the workflow may write to stdout/stderr and `log`.
    #[arg(long, default_value_t = Size(defaults().max_log_bytes))]
    pub max_log_bytes: Size,
    /// Entries in one `parallel` batch or `wait`.
    #[arg(long, default_value_t = defaults().max_batch)]
    pub max_batch: usize,
    /// Bytes of one agent prompt (schema included).
    #[arg(long, default_value_t = Size(defaults().max_prompt_bytes))]
    pub max_prompt_bytes: Size,
    /// Bytes of all agent prompts and schemas of the run together.
    #[arg(long, default_value_t = Size(defaults().max_run_prompt_bytes))]
    pub max_run_prompt_bytes: Size,
    /// Bytes of one output schema.
    #[arg(long, default_value_t = Size(defaults().max_schema_bytes))]
    pub max_schema_bytes: Size,
    /// Distinct output schemas one run may use.
    #[arg(long, default_value_t = defaults().max_schemas)]
    pub max_schemas: usize,
    /// Bytes of one agent label, phase or model, and of one phase title.
    #[arg(long, default_value_t = Size(defaults().max_option_bytes))]
    pub max_option_bytes: Size,
    /// Default and ceiling of an agent's output tokens per request.
    #[arg(long, default_value_t = defaults().max_output_tokens)]
    pub max_output_tokens: u32,
    /// Answers a schema'd agent may hand in before it fails (default: `[agents] schema_attempts`
    /// in corral.toml, else 5).
    #[arg(long)]
    pub schema_attempts: Option<u32>,
    /// Largest file `read` returns.
    #[arg(long, default_value_t = Size(defaults().tools.max_read_bytes as usize))]
    pub max_read_bytes: Size,
    /// Most paths one `glob` returns.
    #[arg(long, default_value_t = defaults().tools.max_glob_results)]
    pub max_glob_results: usize,
    /// Most matches one `grep` returns.
    #[arg(long, default_value_t = defaults().tools.max_grep_matches)]
    pub max_grep_matches: usize,
    /// Largest answer of one grep or git call.
    #[arg(long, default_value_t = Size(defaults().tools.max_output_bytes))]
    pub max_output_bytes: Size,
    /// Host time all tool calls of the run may take together (scripts' and agents'), e.g. 10m.
    #[arg(long, default_value_t = Dur(defaults().tools.max_tool_time))]
    pub max_tool_time: Dur,
    /// Entries one git call may visit (tree and index entries, entries of the root's .git).
    #[arg(long, default_value_t = defaults().tools.max_git_entries)]
    pub max_git_entries: usize,
    /// Let the workflow stage writes (all paths, or only those matching the globs). Writes
    /// stay in the run's changeset until `corral runs apply` (or --apply).
    #[arg(long, value_name = "GLOB,…", num_args = 0..=1, require_equals = true, value_delimiter = ',', default_missing_value = "**")]
    pub allow_write: Option<Vec<String>>,
    /// Commands `tools.run` may run in the jail, matched exactly (no shell unless `sh` is listed).
    #[arg(long, value_name = "CMD,…", value_delimiter = ',')]
    pub allow_run: Vec<String>,
    /// Apply the run's staged writes to the root when the run succeeds.
    #[arg(long)]
    pub apply: bool,
    /// Largest file one write stages.
    #[arg(long, default_value_t = Size(defaults().tools.max_write_bytes as usize))]
    pub max_write_bytes: Size,
    /// Bytes of all files the run stages together.
    #[arg(long, default_value_t = Size(defaults().tools.max_staged_bytes as usize))]
    pub max_staged_bytes: Size,
    /// Files the run may stage.
    #[arg(long, default_value_t = defaults().tools.max_staged_files)]
    pub max_staged_files: usize,
    /// Bytes of the copy of the root (with the staged writes) that commands see.
    #[arg(long, default_value_t = Size(defaults().tools.max_view_bytes as usize))]
    pub max_view_bytes: Size,
    /// Wall-clock limit of one command (a call's timeoutMs may only lower it), e.g. 60s.
    #[arg(long, default_value_t = Dur(defaults().commands.max_command_time))]
    pub max_command_time: Dur,
    /// Memory of a command: the address space of each of its processes, and the resident memory
    /// of all of them together (sampled every 20 ms; past it the command is killed).
    #[arg(long, default_value_t = Size(defaults().commands.max_command_memory as usize))]
    pub max_command_memory: Size,
    /// Processes a command may start.
    #[arg(long, default_value_t = defaults().commands.max_command_processes)]
    pub max_command_processes: u64,
    /// Bytes of a command's stdout and stderr together; past it the command is killed.
    #[arg(long, default_value_t = Size(defaults().commands.max_command_output))]
    pub max_command_output: Size,
    /// Bytes of a command's writable scratch /tmp.
    #[arg(long, default_value_t = Size(defaults().commands.max_command_scratch as usize))]
    pub max_command_scratch: Size,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub trust: super::sign::TrustArgs,
    /// Do not record the run in the journal (it then cannot be resumed).
    #[arg(long)]
    pub no_journal: bool,
    /// Write a JSON Lines event stream to FILE, or to stdout with `-` (the result then goes last).
    #[arg(long, value_name = "FILE|-")]
    pub events: Option<String>,
    /// Print no progress, only the summary and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `$CORRAL_DATA_DIR` (clap reads it into `--data-dir`), else `$XDG_DATA_HOME/corral`, else
/// `~/.local/share/corral`.
pub fn data_dir(args: &ServiceArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.data_dir {
        return Ok(dir.clone());
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("corral"));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".local/share/corral"))
        .ok_or_else(|| {
            anyhow!("no directory for the run journal: set CORRAL_DATA_DIR or --data-dir, or pass --no-journal")
        })
}

/// Opens the journal in `dir` (creating it), with an error that names the directory.
pub fn open_journal(dir: &Path) -> anyhow::Result<Arc<dyn RunStore>> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "the journal directory {} is a file: name a directory with --data-dir (or CORRAL_DATA_DIR)",
            dir.display()
        );
    }
    Ok(Arc::new(Journal::open(&dir.join("journal.db"))?))
}

/// The environment, for the provider settings (keys and base URLs, by the names corral.toml
/// gives them): the front end is the only place the environment is read.
pub fn provider_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Builds the run service the CLI drives.
pub fn service(
    args: &ServiceArgs,
    store: Option<Arc<dyn RunStore>>,
    max_live_runs: u32,
) -> anyhow::Result<RunService> {
    let config = CorralConfig::discover(args.config.as_deref())?;
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .clone()
            .or_else(corral_host::runtime::default_cache_dir)
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir,
        max_live_runs,
        max_core_instances: args.max_core_instances,
    })?;
    Ok(RunService::new(ServiceConfig {
        runtime: Arc::new(runtime),
        store,
        config,
        env: provider_env(),
        bundled: vec![js_runtime()],
        tenancy: None,
    }))
}

/// The journal a run is recorded in, unless `--no-journal`.
fn run_store(args: &RunArgs) -> anyhow::Result<Option<Arc<dyn RunStore>>> {
    if args.no_journal {
        return Ok(None);
    }
    Ok(Some(open_journal(&data_dir(&args.service)?)?))
}

/// The name a file goes by in messages and the journal.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// The workflow a path names: a component is registered by hash; a script names its runtime.
pub fn workflow_ref(
    service: &RunService,
    path: &Path,
    script_runtime: Option<&PathBuf>,
) -> anyhow::Result<WorkflowRef> {
    let name = file_name(path);
    let extension = path
        .extension()
        .map(|ext| ext.to_string_lossy().into_owned())
        .unwrap_or_default();
    if extension == "wasm" {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let workflow = service.register_component(None, &name, bytes)?;
        return Ok(WorkflowRef {
            name,
            component: workflow.hash().to_string(),
            script: None,
        });
    }
    let bundled = service.runtime_for_extension(&extension).cloned();
    if script_runtime.is_none() && bundled.is_none() {
        bail!(
            "{} is neither a .wasm component nor a .js script; name its script runtime with --runtime (or CORRAL_RUNTIME)",
            path.display()
        );
    }
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let component = match (script_runtime, bundled) {
        (Some(runtime), _) => {
            let bytes = std::fs::read(runtime)
                .with_context(|| format!("cannot read {}", runtime.display()))?;
            service
                .register_component(None, &file_name(runtime), bytes)?
                .hash()
                .to_string()
        }
        (None, Some(bundled)) => bundled.hash.to_string(),
        (None, None) => unreachable!("checked above"),
    };
    Ok(WorkflowRef {
        name: name.clone(),
        component,
        script: Some(ScriptRef { name, source }),
    })
}

/// The run spec the arguments describe.
pub fn spec(args: &RunArgs, service: &RunService) -> anyhow::Result<RunSpec> {
    let mut limits = limits(args);
    if args.schema_attempts.is_none()
        && let Some(attempts) = service.config().agents.schema_attempts
    {
        limits.schema_attempts = attempts;
    }
    let args_json = match &args.args {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--args is not valid JSON: {text}"))?;
            value.to_string()
        }
        // None, which a script sees as `undefined` (and `--args null` as `null`).
        None => String::new(),
    };
    let root = match &args.root {
        // Absolute, so that the run can be resumed from anywhere.
        Some(dir) => Some(RootRef::Path(
            std::path::absolute(dir)
                .with_context(|| format!("cannot use --root {}", dir.display()))?,
        )),
        None => None,
    };
    super::sign::check(&args.trust, &args.workflow)?;
    let workflow = workflow_ref(service, &args.workflow, args.runtime.as_ref())?;
    Ok(RunSpec {
        workflow,
        args: args_json,
        root,
        limits,
        provider: args.provider.clone(),
        model: args.model.clone(),
        sim_latency_ms: args.sim_latency.map(|d| d.0.as_millis() as u64),
        tenant: None,
        resumed_from: None,
    })
}

pub fn limits(args: &RunArgs) -> RunLimits {
    RunLimits {
        max_concurrent: args.max_concurrent,
        max_agents: args.max_agents,
        budget_tokens: args.budget_tokens,
        timeout: args.timeout.0,
        max_cpu: args.max_cpu.0,
        max_memory: args.max_memory.0,
        max_log_bytes: args.max_log_bytes.0,
        max_batch: args.max_batch,
        max_prompt_bytes: args.max_prompt_bytes.0,
        max_run_prompt_bytes: args.max_run_prompt_bytes.0,
        max_schema_bytes: args.max_schema_bytes.0,
        max_schemas: args.max_schemas,
        max_option_bytes: args.max_option_bytes.0,
        max_output_tokens: args.max_output_tokens,
        schema_attempts: args.schema_attempts.unwrap_or(defaults().schema_attempts),
        tools: corral_host::tools::ToolLimits {
            max_read_bytes: args.max_read_bytes.0 as u64,
            max_glob_results: args.max_glob_results,
            max_grep_matches: args.max_grep_matches,
            max_output_bytes: args.max_output_bytes.0,
            max_tool_time: args.max_tool_time.0,
            max_git_entries: args.max_git_entries,
            max_write_bytes: args.max_write_bytes.0 as u64,
            max_staged_bytes: args.max_staged_bytes.0 as u64,
            max_staged_files: args.max_staged_files,
            max_view_bytes: args.max_view_bytes.0 as u64,
        },
        grants: Default::default(),
        allow_write: args.allow_write.clone().unwrap_or_default(),
        allow_run: args.allow_run.clone(),
        commands: corral_host::jail::CommandLimits {
            max_command_time: args.max_command_time.0,
            max_command_memory: args.max_command_memory.0 as u64,
            max_command_processes: args.max_command_processes,
            max_command_output: args.max_command_output.0,
            max_command_scratch: args.max_command_scratch.0 as u64,
        },
    }
}

/// How the CLI shows a run: progress on stderr, the `--events` stream, the summary.
pub struct Display {
    quiet: bool,
    tally: Arc<Tally>,
    sinks: Vec<Arc<dyn EventSink>>,
    /// The journaled run's id, once started.
    run_id: std::sync::Mutex<Option<String>>,
}

impl Display {
    /// The sinks for `quiet` and `events` (a file, or `-` for stdout).
    pub fn new(config: &CorralConfig, quiet: bool, events: Option<&str>) -> anyhow::Result<Self> {
        let progress = if quiet {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            Progress::Live
        } else {
            Progress::Lines
        };
        let tally = Tally::new(config.clone(), progress);
        let mut sinks: Vec<Arc<dyn EventSink>> = vec![tally.clone()];
        match events {
            None => {}
            Some("-") => sinks.push(Arc::new(JsonLines::new(Box::new(std::io::stdout())))),
            Some(path) => sinks.push(Arc::new(JsonLines::new(Box::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create the events file {path}"))?,
            )))),
        }
        Ok(Display {
            quiet,
            tally,
            sinks,
            run_id: std::sync::Mutex::new(None),
        })
    }

    /// Start options carrying these sinks.
    pub fn options(&self, force: bool, unrecorded: bool) -> StartOptions {
        StartOptions {
            sinks: self.sinks.clone(),
            force,
            unrecorded,
            shared: Default::default(),
        }
    }

    /// Announces a started run.
    pub fn started(&self, handle: &RunHandle, model_flag: bool) {
        self.tally.set_simulated(handle.provider.simulated);
        if let (Some(plan), Some(budget)) = (&handle.plan, handle.budget) {
            eprintln!(
                "corral: the plan estimates {} tokens of the {budget}-token budget",
                plan.tokens
            );
        }
        announce_provider(&handle.provider, model_flag);
        *self.run_id.lock().unwrap_or_else(|p| p.into_inner()) = handle.id.clone();
        match (&handle.id, &handle.resumed_from) {
            (Some(id), Some(from)) => eprintln!("corral: run {id} resumes {from}"),
            (Some(id), None) => eprintln!("corral: run {id} (`corral runs show {id}`)"),
            _ => {}
        }
    }

    /// Reports a finished run and maps it to the exit code.
    pub fn finished(&self, outcome: RunOutcome) -> anyhow::Result<ExitCode> {
        self.tally.finish();
        if !self.quiet {
            for (phase, totals) in self.tally.phases() {
                eprintln!(
                    "{}",
                    super::progress::phase_line(&phase, &totals, outcome.report.wall)
                );
            }
        }
        summarize(
            &outcome.report,
            outcome.cost,
            &self.tally.failures(),
            &self.tally.unpriced(),
        );
        if let Err(RunError::Paused(_)) = &outcome.report.outcome {
            match self
                .run_id
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref()
            {
                Some(id) => eprintln!(
                    "corral: run {id} is paused; once the limit is lifted, continue it with \
                     `corral runs resume {id}` (finished calls are not paid again)"
                ),
                None => eprintln!(
                    "corral: the run paused, and without a journal it cannot be resumed (run \
                     it again once the limit is lifted)"
                ),
            }
        }
        finish(outcome.report)
    }
}

/// Says who answers the run's agent calls.
pub fn announce_provider(provider: &ProviderInfo, model_flag: bool) {
    if provider.simulated {
        eprintln!(
            "corral: using the simulated provider (offline, deterministic; no tokens are bought)"
        );
        if model_flag {
            eprintln!("corral: warning: --model is ignored by the simulated provider");
        }
    } else {
        eprintln!(
            "corral: using provider {} at {} (default model {})",
            provider.name,
            provider.base_url.as_deref().unwrap_or("-"),
            provider.default_model
        );
    }
}

/// The exit code of a service error, after printing it.
pub fn service_failure(error: ServiceError) -> anyhow::Result<ExitCode> {
    let code = match error.kind() {
        ErrorKind::OverBudget => EXIT_OVER_BUDGET,
        ErrorKind::Host => return Err(error.into()),
        _ => EXIT_USAGE,
    };
    match &error {
        ServiceError::OverBudget { budget, plan } => eprintln!(
            "error: the plan estimates {} tokens ({} agents), over the --budget-tokens budget of {budget}: raise the budget, make the workflow smaller, or pass --force to run anyway (the budget still stops it)",
            plan.tokens, plan.agents
        ),
        other => eprintln!("error: {other}"),
    }
    Ok(ExitCode::from(code))
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let store = run_store(&args)?;
    // One process, one run (plus a plan): a small instance pool starts faster.
    let service = service(&args.service, store, 4)?;
    let spec = spec(&args, &service)?;
    let display = Display::new(service.config(), args.quiet, args.events.as_deref())?;
    let tokio = super::tokio()?;
    tokio.block_on(async {
        let handle = match service
            .start(spec, display.options(args.force, args.no_journal))
            .await
        {
            Ok(handle) => handle,
            Err(error) => return service_failure(error),
        };
        display.started(&handle, args.model.is_some());
        let run_id = handle.id.clone();
        let outcome = handle.finish().await;
        let changes = outcome.report.changes.clone();
        let succeeded = outcome.report.outcome.is_ok();
        let code = display.finished(outcome)?;
        staged(&args, run_id.as_deref(), &changes, succeeded)?;
        Ok(code)
    })
}

/// After a run: applies its staged changes with `--apply` (when it succeeded), else says how to
/// review and apply them.
fn staged(
    args: &RunArgs,
    id: Option<&str>,
    changes: &[corral_host::tools::StagedChange],
    succeeded: bool,
) -> anyhow::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let count = changes.len();
    let files = if count == 1 { "file" } else { "files" };
    match (args.apply, succeeded, &args.root) {
        (true, true, Some(root)) => {
            let grant = corral_host::tools::WriteGrant::parse(
                args.allow_write.as_deref().unwrap_or_default(),
            )
            .map_err(|error| anyhow!("--apply: {error}"))?;
            let applied = corral_host::tools::apply(root, changes, &[], &grant)
                .map_err(|error| anyhow!("--apply: {error}"))?;
            super::changes::report(&applied);
        }
        (true, false, _) => eprintln!(
            "corral: the run failed, so its {count} staged {files} were not applied (--apply \
             applies only a run that succeeds){}",
            id.map_or(String::new(), |id| format!(
                "; review them with `corral runs diff {id}`"
            ))
        ),
        _ => match id {
            Some(id) => eprintln!(
                "corral: the run staged {count} {files}, not applied: review with `corral runs \
                 diff {id}`, apply with `corral runs apply {id}`"
            ),
            None => eprintln!(
                "corral: the run staged {count} {files}, which are dropped: without a journal \
                 only --apply can keep them"
            ),
        },
    }
    Ok(())
}

fn summarize(report: &RunReport, cost: f64, failures: &[Failures], unpriced: &BTreeSet<String>) {
    let agents = &report.agents;
    let budget = report
        .budget_tokens
        .map_or(String::new(), |total| format!(" of a {total}-token budget"));
    let replayed = if agents.replayed > 0 {
        format!(", {} from the journal", agents.replayed)
    } else {
        String::new()
    };
    let cost = match (unpriced.is_empty(), super::progress::shows(cost)) {
        (true, true) => format!(", ${cost:.4}"),
        (true, false) => String::new(),
        (false, true) => format!(", at least ${cost:.4}"),
        (false, false) => ", cost unknown".to_string(),
    };
    eprintln!(
        "corral: {} agents ({} ok, {} failed, {} refused{replayed}), {} tokens{budget}{cost}, {:.2}s wall, {:.3}s guest cpu, {:.3}s tools",
        agents.started,
        agents.succeeded,
        agents.failed_total(),
        agents.refused,
        report.spent_tokens,
        report.wall.as_secs_f64(),
        report.guest_cpu.as_secs_f64(),
        report.tool_time.as_secs_f64(),
    );
    if let Some(line) = failures_line(report, failures) {
        eprintln!("corral: {line}");
    }
    if let Some(note) = unpriced_note(unpriced) {
        eprintln!("corral: {note}");
    }
}

/// `failed: 764 budget-exhausted (first #232), 2 timeout (first #7)`: the run's failed calls by
/// kind, most first, with the first call of each kind the progress saw.
fn failures_line(report: &RunReport, failures: &[Failures]) -> Option<String> {
    let mut kinds: Vec<(&str, u64)> = report
        .agents
        .failed
        .iter()
        .map(|(kind, count)| (*kind, *count))
        .filter(|(_, count)| *count > 0)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let kinds: Vec<String> = kinds
        .into_iter()
        .map(
            |(kind, count)| match failures.iter().find(|f| f.kind == kind) {
                Some(seen) => format!("{count} {kind} (first #{})", seen.first),
                None => format!("{count} {kind}"),
            },
        )
        .collect();
    Some(format!("failed: {}", kinds.join(", ")))
}

/// Says once which models have no price, and how to give them one.
fn unpriced_note(models: &BTreeSet<String>) -> Option<String> {
    let first = models.first()?;
    Some(if models.len() == 1 {
        format!(
            "{first} has no price in corral.toml, so its cost is not counted: add [prices.\"{first}\"] with input and output (dollars per million tokens)"
        )
    } else {
        let names: Vec<&str> = models.iter().map(String::as_str).collect();
        format!(
            "{} have no price in corral.toml, so their cost is not counted: add a [prices.\"MODEL\"] table for each, with input and output (dollars per million tokens)",
            names.join(", ")
        )
    })
}

/// Prints the result (stdout) or the error (stderr) and maps it to the exit code.
pub fn finish(report: RunReport) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    match report.outcome {
        Ok(result) => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{result}").context("cannot write the result to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(match error {
                RunError::Workflow(_) | RunError::Crashed(_) => EXIT_WORKFLOW,
                RunError::Script(_) => EXIT_USAGE,
                RunError::Limit(_) => EXIT_LIMIT,
                RunError::Host(_) => EXIT_HOST,
                RunError::Stopped | RunError::Paused(_) => EXIT_STOPPED,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn the_bundled_runtime_matches_its_committed_hash() {
        let hash: String = Sha256::digest(super::JS_RUNTIME)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(super::js_runtime().hash, hash.as_str());
    }
}
