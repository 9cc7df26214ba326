//! `corral run` (and the arguments `corral plan` shares): load the workflow, open the journal,
//! run, report.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;

use engine::config::{CorralConfig, ProviderKind};
use engine::events::{EventSink, NoEvents};
use engine::journal::{Journal, NewRun, ReplayPlan, default_data_dir};
use engine::limits::{MAX_MEMORY_CEILING, parse_duration, parse_size};
use engine::provider::Provider;
use engine::provider::anthropic::AnthropicProvider;
use engine::provider::openai::OpenAiProvider;
use engine::provider::sim::SimProvider;
use engine::scheduler::CallJournal;
use engine::tools::ToolRoot;
use engine::{
    RunError, RunLimits, RunOptions, RunReport, Runtime, RuntimeConfig, Script, Workflow,
};

use super::progress::{Fanout, JsonLines, PlainLines, Tally};
use super::{EXIT_HOST, EXIT_LIMIT, EXIT_OVER_BUDGET, EXIT_STOPPED, EXIT_WORKFLOW, file_name};

/// The JavaScript runtime component, bundled so that `corral run x.js` needs nothing else. Built
/// from `guest-sdk/js-runtime` (see its `build.sh`); CI checks the bytes match the source.
pub const JS_RUNTIME: &[u8] = include_bytes!("../../../guest-sdk/js-runtime/js_runtime.wasm");
/// SHA-256 of [`JS_RUNTIME`], committed beside it (and checked by a test), so that starting a
/// script does not hash 1.2 MB first.
pub const JS_RUNTIME_SHA256: &str =
    include_str!("../../../guest-sdk/js-runtime/js_runtime.wasm.sha256");

/// Loads the bundled JavaScript runtime.
pub fn load_js_runtime(runtime: &Runtime) -> Result<Arc<Workflow>, engine::LoadError> {
    let hash = JS_RUNTIME_SHA256
        .split_whitespace()
        .next()
        .unwrap_or_default();
    runtime.load_hashed("js_runtime.wasm", JS_RUNTIME, hash)
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
    /// Provider configuration (default: ./corral.toml if it exists).
    #[arg(long, env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Latency of each simulated provider request, e.g. 50ms.
    #[arg(long, value_parser = parse_duration)]
    pub sim_latency: Option<Duration>,
    /// Script runtime component for a script workflow (default for .js: the bundled one).
    #[arg(long, env = "CORRAL_RUNTIME")]
    pub runtime: Option<PathBuf>,
    /// Agent calls in flight at once.
    #[arg(long, default_value_t = RunLimits::default().max_concurrent)]
    pub max_concurrent: usize,
    /// Agent calls per run.
    #[arg(long, default_value_t = RunLimits::default().max_agents)]
    pub max_agents: u64,
    /// Token budget of the run (unlimited when absent). The plan is checked against it first.
    #[arg(long)]
    pub budget_tokens: Option<u64>,
    /// Run even when the plan's estimate exceeds --budget-tokens.
    #[arg(long)]
    pub force: bool,
    /// Wall-clock limit of the run, e.g. 10m.
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub timeout: Duration,
    /// CPU time the workflow itself may compute (waiting for agents does not count), e.g. 60s.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub max_cpu: Duration,
    /// Guest memory limit, e.g. 256MiB.
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    pub max_memory: usize,
    /// Bytes the workflow may write to stdout/stderr and `log`.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    pub max_log_bytes: usize,
    /// Entries in one `parallel` batch or `wait`.
    #[arg(long, default_value_t = RunLimits::default().max_batch)]
    pub max_batch: usize,
    /// Bytes of one agent prompt (schema included).
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    pub max_prompt_bytes: usize,
    /// Default and ceiling of an agent's output tokens per request.
    #[arg(long, default_value_t = RunLimits::default().max_output_tokens)]
    pub max_output_tokens: u32,
    /// Largest file `read` returns.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    pub max_read_bytes: usize,
    /// Most paths one `glob` returns.
    #[arg(long, default_value_t = RunLimits::default().tools.max_glob_results)]
    pub max_glob_results: usize,
    /// Most matches one `grep` returns.
    #[arg(long, default_value_t = RunLimits::default().tools.max_grep_matches)]
    pub max_grep_matches: usize,
    /// Largest answer of one grep or git call.
    #[arg(long, value_parser = parse_size, default_value = "4MiB")]
    pub max_output_bytes: usize,
    /// Directory of the compiled-component cache.
    #[arg(long, env = "CORRAL_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not use the compiled-component cache on disk.
    #[arg(long)]
    pub no_cache: bool,
    /// Directory of the run journal (default: $XDG_DATA_HOME/corral).
    #[arg(long, env = "CORRAL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
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

/// How a resumed run reuses the journal of the run it resumes.
pub struct Resume {
    /// The run being resumed.
    pub from: String,
    /// Its recorded answers.
    pub plan: ReplayPlan,
}

/// The pieces every run needs, resolved from the arguments.
pub struct Prepared {
    pub runtime: Runtime,
    pub workflow: Arc<Workflow>,
    pub script: Option<Script>,
    pub limits: RunLimits,
    pub args_json: String,
    pub root: Option<ToolRoot>,
    pub config: CorralConfig,
}

pub fn prepare(args: &RunArgs) -> anyhow::Result<Prepared> {
    let limits = limits(args)?;
    let args_json = match &args.args {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("--args is not valid JSON: {text}"))?;
            value.to_string()
        }
        None => "null".to_string(),
    };
    let root = match &args.root {
        Some(dir) => Some(
            ToolRoot::open(dir, limits.tools.clone())
                .with_context(|| format!("cannot use --root {}", dir.display()))?,
        ),
        None => None,
    };
    let config = CorralConfig::discover(args.config.as_deref())?;
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .clone()
            .or_else(engine::runtime::default_cache_dir)
    };
    // One process, one run (plus a plan): a small instance pool starts faster.
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir,
        max_live_runs: 4,
    })?;
    let (workflow, script) = load_workflow(&runtime, &args.workflow, args.runtime.as_ref())?;
    Ok(Prepared {
        runtime,
        workflow,
        script,
        limits,
        args_json,
        root,
        config,
    })
}

/// Loads a component, or a script with its runtime.
pub fn load_workflow(
    runtime: &Runtime,
    path: &std::path::Path,
    script_runtime: Option<&PathBuf>,
) -> anyhow::Result<(Arc<Workflow>, Option<Script>)> {
    if path.extension().is_some_and(|ext| ext == "wasm") {
        return Ok((runtime.load_file(path)?, None));
    }
    let is_js = path
        .extension()
        .is_some_and(|ext| ext == "js" || ext == "mjs");
    if script_runtime.is_none() && !is_js {
        bail!(
            "{} is neither a .wasm component nor a .js script; name its script runtime with --runtime (or CORRAL_RUNTIME)",
            path.display()
        );
    }
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let script = Script {
        name: file_name(path),
        source,
    };
    let workflow = match script_runtime {
        Some(component) => runtime.load_file(component)?,
        None => load_js_runtime(runtime)?,
    };
    Ok((workflow, Some(script)))
}

pub fn run(args: RunArgs, resume: Option<Resume>) -> anyhow::Result<ExitCode> {
    let prepared = prepare(&args)?;
    if let Some(budget) = args.budget_tokens
        && !args.force
    {
        let estimate = super::plan::estimate(&prepared)?;
        if estimate.tokens > budget {
            eprintln!(
                "error: the plan estimates {} tokens ({} agents), over the --budget-tokens budget of {budget}: raise the budget, make the workflow smaller, or pass --force to run anyway (the budget still stops it)",
                estimate.tokens, estimate.agents
            );
            return Ok(ExitCode::from(EXIT_OVER_BUDGET));
        }
        eprintln!(
            "corral: the plan estimates {} tokens of the {budget}-token budget",
            estimate.tokens
        );
    }
    let provider = provider(&args)?;

    let journal = if args.no_journal {
        None
    } else {
        let dir = args.data_dir.clone().or_else(default_data_dir).ok_or_else(|| {
            anyhow!("no directory for the run journal: set CORRAL_DATA_DIR or --data-dir, or pass --no-journal")
        })?;
        let journal = Journal::open(&dir.join("journal.db"))?;
        let run_id = journal.begin_run(NewRun {
            workflow: file_name(&args.workflow),
            workflow_hash: prepared.workflow.hash().to_string(),
            script: prepared.script.as_ref().map(|s| s.source.clone()),
            args: prepared.args_json.clone(),
            limits: limits_json(&prepared.limits),
            root: args.root.as_ref().map(|r| r.display().to_string()),
            provider: provider.name().to_string(),
            resumed_from: resume.as_ref().map(|r| r.from.clone()),
            argv: std::env::args().skip(1).collect(),
            cwd: std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        })?;
        match &resume {
            Some(resume) => eprintln!("corral: run {run_id} resumes {}", resume.from),
            None => eprintln!("corral: run {run_id} (`corral runs show {run_id}`)"),
        }
        Some((journal, run_id))
    };

    let live = !args.quiet && std::io::stderr().is_terminal();
    let tally = Tally::new(prepared.config.clone(), live);
    let mut sinks: Vec<Arc<dyn EventSink>> = vec![tally.clone()];
    if !args.quiet && !live {
        sinks.push(Arc::new(PlainLines));
    }
    let json = match args.events.as_deref() {
        None => None,
        Some("-") => Some(Arc::new(JsonLines::new(Box::new(std::io::stdout())))),
        Some(path) => Some(Arc::new(JsonLines::new(Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the events file {path}"))?,
        )))),
    };
    if let Some(json) = &json {
        json.write(serde_json::json!({
            "event": "run_started",
            "run_id": journal.as_ref().map(|(_, id)| id.clone()),
            "workflow": file_name(&args.workflow),
            "workflow_hash": prepared.workflow.hash(),
        }));
        sinks.push(json.clone());
    }
    let events: Arc<dyn EventSink> = if sinks.is_empty() {
        Arc::new(NoEvents)
    } else {
        Arc::new(Fanout(sinks))
    };

    let run_journal = journal.as_ref().map(|(journal, run_id)| CallJournal {
        journal: journal.clone(),
        run_id: run_id.clone(),
        replay: resume.map(|r| r.plan),
    });
    let tokio = super::tokio()?;
    let report = tokio.block_on(prepared.runtime.run(
        &prepared.workflow,
        RunOptions {
            args_json: prepared.args_json.clone(),
            root: prepared.root.clone(),
            limits: prepared.limits.clone(),
            provider,
            events,
            script: prepared.script.clone(),
            journal: run_journal,
            load_only: false,
        },
    ));
    tally.finish();
    if !args.quiet {
        let elapsed = report.wall;
        for (phase, totals) in tally.phases() {
            eprintln!("{}", super::progress::phase_line(&phase, &totals, elapsed));
        }
    }
    let cost = tally.cost();
    if let Some((journal, run_id)) = &journal {
        let _ = journal.set_cost(run_id, cost);
    }
    if let Some(json) = &json {
        json.write(serde_json::json!({
            "event": "run_finished",
            "ok": report.outcome.is_ok(),
            "error": report.outcome.as_ref().err().map(ToString::to_string),
            "agents": report.agents.started,
            "spent_tokens": report.spent_tokens,
            "cost": cost,
        }));
    }
    summarize(&report, cost);
    finish(report)
}

fn summarize(report: &RunReport, cost: f64) {
    let agents = &report.agents;
    let budget = report
        .budget_tokens
        .map_or(String::new(), |total| format!(" of a {total}-token budget"));
    let replayed = if agents.replayed > 0 {
        format!(", {} from the journal", agents.replayed)
    } else {
        String::new()
    };
    let cost = if cost > 0.0 {
        format!(", ${cost:.4}")
    } else {
        String::new()
    };
    eprintln!(
        "corral: {} agents ({} ok, {} failed, {} refused{replayed}), {} tokens{budget}{cost}, {:.2}s wall, {:.3}s guest cpu",
        agents.started,
        agents.succeeded,
        agents.failed_total(),
        agents.refused,
        report.spent_tokens,
        report.wall.as_secs_f64(),
        report.guest_cpu.as_secs_f64(),
    );
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
                RunError::Script(_) => super::EXIT_USAGE,
                RunError::Limit(_) => EXIT_LIMIT,
                RunError::Host(_) => EXIT_HOST,
                RunError::Stopped => EXIT_STOPPED,
            }))
        }
    }
}

fn limits_json(limits: &RunLimits) -> serde_json::Value {
    serde_json::json!({
        "max_concurrent": limits.max_concurrent,
        "max_agents": limits.max_agents,
        "budget_tokens": limits.budget_tokens,
        "timeout_ms": limits.timeout.as_millis() as u64,
        "max_cpu_ms": limits.max_cpu.as_millis() as u64,
        "max_memory": limits.max_memory,
    })
}

/// The provider that answers this run's agent calls.
pub fn provider(args: &RunArgs) -> anyhow::Result<Arc<dyn Provider>> {
    let config = CorralConfig::discover(args.config.as_deref())?;
    let name = args
        .provider
        .as_deref()
        .unwrap_or_else(|| config.default_provider());
    let env = |variable: &str| std::env::var(variable).ok();
    let settings = config.provider_settings(name, args.model.as_deref(), &env)?;
    let provider: Arc<dyn Provider> = match settings.kind {
        ProviderKind::Sim => {
            eprintln!(
                "corral: using the simulated provider (offline, deterministic; no tokens are bought)"
            );
            if args.model.is_some() {
                eprintln!("corral: warning: --model is ignored by the simulated provider");
            }
            return Ok(Arc::new(SimProvider::new(
                args.sim_latency.unwrap_or_default(),
            )));
        }
        ProviderKind::Anthropic => Arc::new(
            AnthropicProvider::new(settings.clone())
                .map_err(|error| anyhow!("provider '{name}': {error}"))?,
        ),
        ProviderKind::OpenAi => Arc::new(
            OpenAiProvider::new(settings.clone())
                .map_err(|error| anyhow!("provider '{name}': {error}"))?,
        ),
    };
    eprintln!(
        "corral: using provider {name} at {} (default model {})",
        settings.base_url,
        settings.resolve_model(None)
    );
    Ok(provider)
}

pub fn limits(args: &RunArgs) -> anyhow::Result<RunLimits> {
    if args.max_concurrent == 0 {
        bail!("--max-concurrent must be at least 1");
    }
    if args.max_memory > MAX_MEMORY_CEILING {
        bail!(
            "--max-memory {} is over the ceiling of {MAX_MEMORY_CEILING} bytes",
            args.max_memory
        );
    }
    Ok(RunLimits {
        max_concurrent: args.max_concurrent,
        max_agents: args.max_agents,
        budget_tokens: args.budget_tokens,
        timeout: args.timeout,
        max_cpu: args.max_cpu,
        max_memory: args.max_memory,
        max_log_bytes: args.max_log_bytes,
        max_batch: args.max_batch,
        max_prompt_bytes: args.max_prompt_bytes,
        max_output_tokens: args.max_output_tokens,
        tools: engine::tools::ToolLimits {
            max_read_bytes: args.max_read_bytes as u64,
            max_glob_results: args.max_glob_results,
            max_grep_matches: args.max_grep_matches,
            max_output_bytes: args.max_output_bytes,
        },
    })
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
        assert_eq!(
            super::JS_RUNTIME_SHA256.split_whitespace().next(),
            Some(hash.as_str())
        );
    }
}
