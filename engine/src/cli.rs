//! Argument parsing and the subcommands.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};

use engine::config::{CorralConfig, ProviderKind};
use engine::events::{EventSink, RunEvent};
use engine::limits::{MAX_MEMORY_CEILING, parse_duration, parse_size};
use engine::provider::Provider;
use engine::provider::anthropic::AnthropicProvider;
use engine::provider::openai::OpenAiProvider;
use engine::provider::sim::SimProvider;
use engine::tools::ToolRoot;
use engine::{RunError, RunLimits, RunOptions, Runtime, RuntimeConfig, Script};

/// The workflow returned an error or crashed.
pub const EXIT_WORKFLOW: u8 = 1;
/// Invalid usage or input (flags, files, components).
pub const EXIT_USAGE: u8 = 2;
/// A host-enforced limit ended the run.
pub const EXIT_LIMIT: u8 = 3;
/// The host failed.
pub const EXIT_HOST: u8 = 4;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Run LLM agent workflows inside a WebAssembly sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow component (.wasm) or a script (.js, with a script runtime).
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The workflow: a component (.wasm) or a script run by `--runtime`.
    workflow: PathBuf,
    /// Directory the workflow's tools may read (nothing else exists). Without it: no files at all.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The run's arguments, as JSON.
    #[arg(long)]
    args: Option<String>,
    /// Who answers agent calls: `sim` (simulated, offline), `anthropic`, `openai`, or a provider
    /// named in corral.toml (default: corral.toml's default_provider, else `sim`).
    #[arg(long)]
    provider: Option<String>,
    /// Default model of agent calls that name none: an alias (haiku, sonnet, opus) or a model id.
    #[arg(long)]
    model: Option<String>,
    /// Provider configuration (default: ./corral.toml if it exists).
    #[arg(long, env = "CORRAL_CONFIG")]
    config: Option<PathBuf>,
    /// Latency of each simulated provider request, e.g. 50ms.
    #[arg(long, value_parser = parse_duration)]
    sim_latency: Option<Duration>,
    /// Script runtime component that runs a non-.wasm workflow (e.g. the JavaScript runtime).
    #[arg(long, env = "CORRAL_RUNTIME")]
    runtime: Option<PathBuf>,
    /// Agent calls in flight at once.
    #[arg(long, default_value_t = RunLimits::default().max_concurrent)]
    max_concurrent: usize,
    /// Agent calls per run.
    #[arg(long, default_value_t = RunLimits::default().max_agents)]
    max_agents: u64,
    /// Token budget of the run (unlimited when absent).
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Wall-clock limit of the run, e.g. 10m.
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    timeout: Duration,
    /// CPU time the workflow itself may compute (waiting for agents does not count), e.g. 60s.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    max_cpu: Duration,
    /// Guest memory limit, e.g. 256MiB.
    #[arg(long, value_parser = parse_size, default_value = "256MiB")]
    max_memory: usize,
    /// Bytes the workflow may write to stdout/stderr and `log`.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    max_log_bytes: usize,
    /// Entries in one `parallel` batch or `wait`.
    #[arg(long, default_value_t = RunLimits::default().max_batch)]
    max_batch: usize,
    /// Bytes of one agent prompt (schema included).
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    max_prompt_bytes: usize,
    /// Default and ceiling of an agent's output tokens per request.
    #[arg(long, default_value_t = RunLimits::default().max_output_tokens)]
    max_output_tokens: u32,
    /// Largest file `read` returns.
    #[arg(long, value_parser = parse_size, default_value = "1MiB")]
    max_read_bytes: usize,
    /// Most paths one `glob` returns.
    #[arg(long, default_value_t = RunLimits::default().tools.max_glob_results)]
    max_glob_results: usize,
    /// Most matches one `grep` returns.
    #[arg(long, default_value_t = RunLimits::default().tools.max_grep_matches)]
    max_grep_matches: usize,
    /// Largest answer of one grep or git call.
    #[arg(long, value_parser = parse_size, default_value = "4MiB")]
    max_output_bytes: usize,
    /// Directory of the compiled-component cache.
    #[arg(long, env = "CORRAL_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not use the compiled-component cache on disk.
    #[arg(long)]
    no_cache: bool,
    /// Print no progress lines, only the summary and errors.
    #[arg(long, short)]
    quiet: bool,
}

/// Parses the command line and runs the subcommand.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap prints help/version to stdout with success, usage errors to stderr.
            let _ = error.print();
            return Ok(ExitCode::from(if error.use_stderr() {
                EXIT_USAGE
            } else {
                0
            }));
        }
    };
    match cli.command {
        Command::Run(args) => run_workflow(args),
    }
}

fn run_workflow(args: RunArgs) -> anyhow::Result<ExitCode> {
    let limits = limits(&args)?;
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
    let provider = provider(&args)?;

    let (component_path, script) = workflow_files(&args)?;
    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir
            .clone()
            .or_else(engine::runtime::default_cache_dir)
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir,
        ..RuntimeConfig::default()
    })?;
    let workflow = runtime.load_file(&component_path)?;
    let events: Arc<dyn EventSink> = Arc::new(StderrEvents {
        quiet: args.quiet,
        color: std::io::stderr().is_terminal(),
    });

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = tokio.block_on(runtime.run(
        &workflow,
        RunOptions {
            args_json,
            root,
            limits,
            provider,
            events,
            script,
        },
    ));

    let agents = &report.agents;
    let budget = report
        .budget_tokens
        .map_or(String::new(), |total| format!(" of a {total}-token budget"));
    eprintln!(
        "corral: {} agents ({} ok, {} failed, {} refused), {} tokens{budget}, {:.2}s wall, {:.3}s guest cpu",
        agents.started,
        agents.succeeded,
        agents.failed_total(),
        agents.refused,
        report.spent_tokens,
        report.wall.as_secs_f64(),
        report.guest_cpu.as_secs_f64(),
    );
    match report.outcome {
        Ok(result) => {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{result}").context("cannot write the result to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::from(match error {
                RunError::Workflow(_) | RunError::Crashed(_) | RunError::Script(_) => EXIT_WORKFLOW,
                RunError::Limit(_) => EXIT_LIMIT,
                RunError::Host(_) => EXIT_HOST,
            }))
        }
    }
}

/// The provider that answers this run's agent calls.
fn provider(args: &RunArgs) -> anyhow::Result<Arc<dyn Provider>> {
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

fn limits(args: &RunArgs) -> anyhow::Result<RunLimits> {
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

/// The component to load and, for a script, its source.
fn workflow_files(args: &RunArgs) -> anyhow::Result<(PathBuf, Option<Script>)> {
    let path = &args.workflow;
    if path.extension().is_some_and(|ext| ext == "wasm") {
        return Ok((path.clone(), None));
    }
    let Some(runtime) = &args.runtime else {
        bail!(
            "{} is not a .wasm component; to run a script, name its runtime component with --runtime (or CORRAL_RUNTIME)",
            path.display()
        );
    };
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((
        runtime.clone(),
        Some(Script {
            name: file_name(path),
            source,
        }),
    ))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Progress lines on stderr.
struct StderrEvents {
    quiet: bool,
    color: bool,
}

impl EventSink for StderrEvents {
    fn event(&self, event: &RunEvent) {
        if self.quiet {
            return;
        }
        let line = match event {
            RunEvent::Phase { title } if self.color => format!("\x1b[1m== {title}\x1b[0m"),
            RunEvent::Phase { title } => format!("== {title}"),
            RunEvent::Log { message } => format!("   {message}"),
            RunEvent::AgentFinished {
                id,
                error: Some(kind),
                ..
            } => format!("   agent #{id} failed: {kind}"),
            _ => return,
        };
        eprintln!("{line}");
    }
}
