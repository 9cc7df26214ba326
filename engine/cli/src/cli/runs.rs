//! `corral runs`: the journal of runs — list, show, watch (in `watch.rs`), stop, resume.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};

use corral_host::record::ReusePolicy;
use corral_service::RunService;
use corral_service::report::PhaseTotals;
use corral_store::{RunDetail, RunFilter, format_time};

use super::progress::{PhaseTally, cost_cell, phase_line};
use super::run::{Display, ServiceArgs, data_dir, open_journal, service, service_failure};

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Recent runs: id, workflow, status, agents, tokens, cost, start, duration.
    List(ListArgs),
    /// One run: per-phase totals, then each agent call.
    Show(ShowArgs),
    /// Follow a run another process or a server is running: one live line per phase, until it
    /// ends (`s` stops it, `q` quits the view).
    Watch(super::watch::WatchArgs),
    /// Ask the process running a run to stop it, or only one of its agents (`--agent N`).
    Stop(StopArgs),
    /// Run a run again, answering its completed agent calls from the journal.
    Resume(ResumeArgs),
    /// The writes a run staged, as a unified diff against its root as it is now.
    Diff(super::changes::DiffArgs),
    /// Write a run's staged changes into its root (refused, writing nothing, for files the
    /// root changed since the run staged them).
    Apply(super::changes::ApplyArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Args)]
pub struct IdArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
}

#[derive(Args)]
pub struct StopArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
    /// Stop only this agent call (its number in `corral runs show`); the script sees it resolve
    /// to `null`, and the run goes on.
    #[arg(long, value_name = "N")]
    agent: Option<u64>,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
    /// Show one agent call in full: prompt, options, result.
    #[arg(long, value_name = "N")]
    agent: Option<u64>,
    /// Show the run's script.
    #[arg(long)]
    script: bool,
}

/// Which recorded answers a resumed run may reuse.
#[derive(Clone, Copy, ValueEnum)]
pub enum Reuse {
    /// The unchanged prefix of calls, in start order (always safe).
    Prefix,
    /// Any completed call with the same key, wherever it is (for read-only workflows whose calls
    /// do not depend on each other's order).
    All,
}

#[derive(Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
    /// Which recorded answers to reuse.
    #[arg(long, value_enum, default_value = "prefix")]
    reuse: Reuse,
    /// Resume with this script instead of the recorded one (after fixing it): calls up to the
    /// first one it changes are answered from the journal.
    #[arg(long, value_name = "FILE")]
    script: Option<std::path::PathBuf>,
    /// Print no progress, only the summary and errors.
    #[arg(long, short)]
    quiet: bool,
}

/// The service over the existing journal (it is an error that there is none yet).
pub(super) fn open(args: &ServiceArgs) -> anyhow::Result<RunService> {
    let dir = data_dir(args)?;
    let path = dir.join("journal.db");
    if !path.exists() {
        bail!(
            "there is no run journal at {} yet: `corral run` records runs there",
            path.display()
        );
    }
    service(args, Some(open_journal(&dir)?), 4)
}

pub fn runs(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List(args) => list(args),
        RunsCommand::Show(args) => show(args),
        RunsCommand::Watch(args) => super::watch::watch(args),
        RunsCommand::Stop(args) => stop(args),
        RunsCommand::Resume(args) => resume(args),
        RunsCommand::Diff(args) => super::changes::diff(args),
        RunsCommand::Apply(args) => super::changes::apply(args),
    }
}

fn duration(started: i64, finished: Option<i64>) -> String {
    match finished {
        Some(end) => format!("{:.1}s", (end - started) as f64 / 1000.0),
        None => "-".to_string(),
    }
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let service = open(&args.journal)?;
    let runs = service.list(&RunFilter {
        limit: args.limit,
        ..RunFilter::default()
    })?;
    out!(
        "{:<12} {:<24} {:<11} {:>6} {:>10} {:>9}  {:<19} {:>8}",
        "id",
        "workflow",
        "status",
        "agents",
        "tokens",
        "cost",
        "started (UTC)",
        "duration"
    );
    for run in runs {
        out!(
            "{:<12} {:<24} {:<11} {:>6} {:>10} {:>9}  {:<19} {:>8}",
            run.id,
            run.workflow,
            run.status,
            run.agents,
            run.tokens.total(),
            format!("${:.4}", run.cost),
            format_time(run.started_ms),
            duration(run.started_ms, run.finished_ms),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn clip(text: &str, width: usize) -> String {
    let line = text.replace('\n', " ");
    if line.chars().count() <= width {
        line
    } else {
        format!("{}…", line.chars().take(width).collect::<String>())
    }
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let service = open(&args.journal)?;
    let detail = match service.show(None, &args.id) {
        Ok(detail) => detail,
        Err(error) => return service_failure(error),
    };
    let id = detail.summary.id.clone();
    if args.script {
        match &detail.script {
            Some(script) => out!("{}", script.trim_end()),
            None => bail!(
                "run {id} ran a component ({}), not a script",
                detail.summary.workflow
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(seq) = args.agent {
        let call = detail
            .calls
            .iter()
            .find(|call| call.seq == seq)
            .ok_or_else(|| {
                anyhow!(
                    "run {id} has no agent call #{seq} (it has {})",
                    detail.calls.len()
                )
            })?;
        let transcript = service.transcript(None, &id, seq)?.unwrap_or_default();
        let (prompt, options, transcript) =
            (transcript.prompt, transcript.options, transcript.transcript);
        out!("agent #{seq} of run {id}");
        out!("label:   {}", call.label.as_deref().unwrap_or("-"));
        out!("phase:   {}", call.phase.as_deref().unwrap_or("-"));
        out!(
            "status:  {}{}",
            call.status.as_str(),
            if call.replayed {
                " (answered from the journal)"
            } else {
                ""
            }
        );
        out!(
            "tokens:  {} in, {} out, {} cache read, {} cache write",
            call.usage.input_tokens,
            call.usage.output_tokens,
            call.usage.cache_read_tokens,
            call.usage.cache_write_tokens
        );
        out!("options: {options}");
        out!("\n--- prompt\n{prompt}");
        match (&call.text, &call.error) {
            (Some(text), _) => out!("\n--- result\n{text}"),
            (None, Some(error)) => out!(
                "\n--- error ({})\n{error}",
                call.error_kind.as_deref().unwrap_or("?")
            ),
            _ => out!("\n--- no result yet"),
        }
        if let Some(transcript) = transcript {
            out!("\n--- transcript\n{transcript}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    print_report(&detail, service.config());
    if let Ok(run) = service.run_changes_of(None, &id)
        && !run.changes.is_empty()
    {
        out!(
            "changes: {} staged, not applied here (`corral runs diff {id}`, `corral runs apply {id}`)",
            run.changes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A recorded run's phases that have calls, with their totals and time from first call queued to
/// last finished, and the totals of all calls (what `runs show` and `runs watch` print).
pub(super) fn recorded_phases(
    detail: &RunDetail,
    config: &corral_host::config::CorralConfig,
) -> (Vec<(String, PhaseTally, Duration)>, PhaseTotals) {
    let (phases, mut all) = corral_service::report::phase_totals(detail, config);
    // The simulated provider buys nothing: its models' missing prices are no unknown cost.
    let simulated = detail.provider == "sim";
    if simulated {
        all.unpriced.clear();
    }
    // Phases without a call have no line in the report.
    let lines = phases
        .iter()
        .filter_map(|phase| {
            let (first, last) = phase.span_ms?;
            let elapsed = Duration::from_millis((last - first).max(0) as u64);
            let mut tally = PhaseTally::from(phase);
            if simulated {
                tally.unpriced.clear();
            }
            Some((phase.name.clone(), tally, elapsed))
        })
        .collect();
    (lines, all)
}

fn print_report(detail: &RunDetail, config: &corral_host::config::CorralConfig) {
    // Prices come from corral.toml (or the built-in ones), by the model that answered.
    let run = &detail.summary;
    out!(
        "run {}  {}  {}  started {} UTC  {}",
        run.id,
        run.workflow,
        run.status,
        format_time(run.started_ms),
        duration(run.started_ms, run.finished_ms)
    );
    if let Some(from) = &detail.resumed_from {
        out!("resumes {from}");
    }
    let args = if detail.args.is_empty() {
        "(none)"
    } else {
        &detail.args
    };
    out!("provider {}  args {args}", detail.provider);
    let spec = detail
        .spec
        .as_deref()
        .and_then(|text| serde_json::from_str::<corral_service::RunSpec>(text).ok());
    if let Some(limits) = spec.as_ref().map(|spec| &spec.limits) {
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_string()
            } else {
                items.join(",")
            }
        };
        out!(
            "grants: write {}  run {}",
            list(&limits.allow_write),
            list(&limits.allow_run)
        );
    }
    out!();
    let (phases, all) = recorded_phases(detail, config);
    for (name, tally, elapsed) in &phases {
        out!("{}", phase_line(name, tally, *elapsed));
    }
    let total = all.usage;
    out!(
        "total: {} agents, {} tokens, {}",
        detail.calls.len(),
        total.total(),
        cost_cell(run.cost, &all.unpriced)
    );
    if !all.unpriced.is_empty() {
        let models: Vec<&str> = all.unpriced.iter().map(String::as_str).collect();
        out!(
            "({} no price in corral.toml, so {} cost is not counted: add a [prices.\"MODEL\"] table)",
            match models.as_slice() {
                [one] => format!("{one} has"),
                many => format!("{} have", many.join(", ")),
            },
            if models.len() == 1 { "its" } else { "their" }
        );
    }
    out!();
    out!(
        "{:>5}  {:<28} {:<10} {:>8} {:>7}  result",
        "#",
        "label",
        "status",
        "in",
        "out"
    );
    for call in &detail.calls {
        let status = match (&call.error_kind, call.replayed) {
            (Some(kind), _) => kind.clone(),
            (None, true) => "replayed".to_string(),
            (None, false) => call.status.as_str().to_string(),
        };
        let result = call.text.as_deref().or(call.error.as_deref()).unwrap_or("");
        out!(
            "{:>5}  {:<28} {:<10} {:>8} {:>7}  {}",
            call.seq,
            clip(call.label.as_deref().unwrap_or("-"), 28),
            status,
            call.usage.input_tokens,
            call.usage.output_tokens,
            clip(result, 60)
        );
    }
    match (&detail.result, &detail.error) {
        (Some(result), _) => out!("\nresult: {}", clip(result, 400)),
        (None, Some(error)) => out!("\nerror: {error}"),
        _ => {}
    }
}

fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let service = open(&args.journal)?;
    let (answer, what) = match args.agent {
        Some(seq) => (
            service.stop_agent(None, &args.id, seq),
            format!("agent #{seq} of run"),
        ),
        None => (service.stop(None, &args.id), "run".to_string()),
    };
    match answer {
        Ok(corral_service::StopAnswer::Asked { id, pid }) => {
            eprintln!("corral: asked process {pid} to stop {what} {id}; it stops within a second");
            Ok(ExitCode::SUCCESS)
        }
        Ok(corral_service::StopAnswer::Stopping(id)) => {
            eprintln!("corral: {what} {id} is stopping");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Err(anyhow!(error)),
    }
}

fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let service = open(&args.journal)?;
    let policy = match args.reuse {
        Reuse::Prefix => ReusePolicy::Prefix,
        Reuse::All => ReusePolicy::All,
    };
    let script = match &args.script {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|error| anyhow!("cannot read the script {}: {error}", path.display()))?,
        ),
        None => None,
    };
    let display = Display::new(service.config(), args.quiet, None)?;
    let tokio = super::tokio()?;
    tokio.block_on(async {
        let handle = match service
            .resume(
                None,
                &args.id,
                policy,
                script,
                display.options(false, false),
            )
            .await
        {
            Ok(handle) => handle,
            Err(error) => return service_failure(error),
        };
        display.started(&handle, false);
        let outcome = handle.finish().await;
        display.finished(outcome)
    })
}
