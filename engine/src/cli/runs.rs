//! `corral runs`: the journal of runs — list, show, stop, resume.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use engine::journal::{Journal, ReplayPlan, ReusePolicy, RunDetail, default_data_dir, format_time};
use engine::provider::Usage;

use super::progress::{PhaseTally, phase_line};
use super::run::Resume;

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Recent runs: id, workflow, status, agents, tokens, cost, start, duration.
    List(ListArgs),
    /// One run: per-phase totals, then each agent call.
    Show(ShowArgs),
    /// Ask the process running a run to stop it.
    Stop(IdArgs),
    /// Run a run again, answering its completed agent calls from the journal.
    Resume(ResumeArgs),
}

#[derive(Args)]
pub struct JournalArgs {
    /// Directory of the run journal (default: $XDG_DATA_HOME/corral).
    #[arg(long, env = "CORRAL_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    journal: JournalArgs,
    /// How many runs to list.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Args)]
pub struct IdArgs {
    #[command(flatten)]
    journal: JournalArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    journal: JournalArgs,
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
    journal: JournalArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
    /// Which recorded answers to reuse.
    #[arg(long, value_enum, default_value = "prefix")]
    reuse: Reuse,
    /// Print no progress, only the summary and errors.
    #[arg(long, short)]
    quiet: bool,
}

fn open(args: &JournalArgs) -> anyhow::Result<Journal> {
    let dir = args
        .data_dir
        .clone()
        .or_else(default_data_dir)
        .ok_or_else(|| anyhow!("no journal directory: set CORRAL_DATA_DIR or --data-dir"))?;
    let path = dir.join("journal.db");
    if !path.exists() {
        bail!(
            "there is no run journal at {} yet: `corral run` records runs there",
            path.display()
        );
    }
    Ok(Journal::open(&path)?)
}

pub fn runs(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List(args) => list(args),
        RunsCommand::Show(args) => show(args),
        RunsCommand::Stop(args) => stop(args),
        RunsCommand::Resume(args) => resume(args),
    }
}

fn process_alive(pid: i64) -> bool {
    pid > 0 && PathBuf::from(format!("/proc/{pid}")).exists()
}

/// A run marked running whose process is gone was killed; say so.
fn effective_status(status: &str, pid: i64) -> String {
    if status == "running" && !process_alive(pid) {
        "interrupted".to_string()
    } else {
        status.to_string()
    }
}

fn duration(started: i64, finished: Option<i64>) -> String {
    match finished {
        Some(end) => format!("{:.1}s", (end - started) as f64 / 1000.0),
        None => "-".to_string(),
    }
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let journal = open(&args.journal)?;
    let runs = journal.list_runs(args.limit)?;
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
            effective_status(&run.status, run.pid),
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
    let journal = open(&args.journal)?;
    let id = journal.resolve_id(&args.id)?;
    let detail = journal.run_detail(&id)?;
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
        let (prompt, options, transcript) = journal.call_transcript(&id, seq)?.unwrap_or_default();
        out!("agent #{seq} of run {id}");
        out!("label:   {}", call.label.as_deref().unwrap_or("-"));
        out!("phase:   {}", call.phase.as_deref().unwrap_or("-"));
        out!(
            "status:  {}{}",
            call.status,
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
    print_report(&detail);
    Ok(ExitCode::SUCCESS)
}

fn print_report(detail: &RunDetail) {
    // Prices come from corral.toml (or the built-in ones), by the model that answered.
    let config = engine::config::CorralConfig::discover(None).unwrap_or_default();
    let run = &detail.summary;
    out!(
        "run {}  {}  {}  started {} UTC  {}",
        run.id,
        run.workflow,
        effective_status(&run.status, run.pid),
        format_time(run.started_ms),
        duration(run.started_ms, run.finished_ms)
    );
    if let Some(from) = &detail.resumed_from {
        out!("resumes {from}");
    }
    out!("provider {}  args {}", detail.provider, detail.args);
    out!();
    let mut phases: Vec<String> = Vec::new();
    let mut tallies: BTreeMap<String, PhaseTally> = BTreeMap::new();
    for call in &detail.calls {
        let phase = call.phase.clone().unwrap_or_default();
        if !phases.contains(&phase) {
            phases.push(phase.clone());
        }
        let tally = tallies.entry(phase).or_default();
        match call.status.as_str() {
            "ok" => tally.done += 1,
            "failed" => tally.failed += 1,
            "running" => tally.running += 1,
            _ => tally.queued += 1,
        }
        // Answers replayed from the journal were not paid again.
        if !call.replayed {
            tally.usage.add(&call.usage);
            if let Some(price) = call.model.as_deref().and_then(|model| config.price(model)) {
                tally.cost += price.cost(&call.usage);
            }
        }
    }
    for phase in &phases {
        let tally = &tallies[phase];
        let calls = detail
            .calls
            .iter()
            .filter(|c| c.phase.clone().unwrap_or_default() == *phase);
        let (first, last) = calls.fold((i64::MAX, 0), |(lo, hi), c| {
            (lo.min(c.times.0), hi.max(c.times.2.unwrap_or(c.times.0)))
        });
        let elapsed = Duration::from_millis((last - first).max(0) as u64);
        out!("{}", phase_line(phase, tally, elapsed));
    }
    let mut total = Usage::default();
    for tally in tallies.values() {
        total.add(&tally.usage);
    }
    out!(
        "total: {} agents, {} tokens, ${:.4}",
        detail.calls.len(),
        total.total(),
        run.cost
    );
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
            (None, false) => call.status.clone(),
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

fn stop(args: IdArgs) -> anyhow::Result<ExitCode> {
    let journal = open(&args.journal)?;
    let id = journal.resolve_id(&args.id)?;
    let (status, pid) = journal.run_status(&id)?;
    if status != "running" {
        bail!("run {id} is not running (it {status})");
    }
    if !process_alive(pid) {
        journal.mark_abandoned(&id)?;
        bail!(
            "run {id} was interrupted (its process {pid} is gone); resume it with `corral runs resume {id}`"
        );
    }
    journal.request_stop(&id)?;
    eprintln!("corral: asked process {pid} to stop run {id}; it stops within a second");
    Ok(ExitCode::SUCCESS)
}

/// Removes `--flag VALUE` and `--flag=VALUE` from an argument list.
fn strip_flag(argv: &mut Vec<String>, flag: &str) {
    let mut index = 0;
    while index < argv.len() {
        if argv[index] == flag {
            argv.drain(index..(index + 2).min(argv.len()));
        } else if argv[index].starts_with(&format!("{flag}=")) {
            argv.remove(index);
        } else {
            index += 1;
        }
    }
}

fn resume(args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let journal = open(&args.journal)?;
    let id = journal.resolve_id(&args.id)?;
    let (status, pid) = journal.run_status(&id)?;
    if status == "running" {
        if process_alive(pid) && pid != i64::from(std::process::id()) {
            bail!(
                "run {id} is still running in process {pid}: stop it with `corral runs stop {id}` first"
            );
        }
        journal.mark_abandoned(&id)?;
    }
    let detail = journal.run_detail(&id)?;
    if detail.argv.first().map(String::as_str) != Some("run") {
        bail!("run {id} was not started by `corral run`, so it cannot be resumed");
    }
    std::env::set_current_dir(&detail.cwd)
        .with_context(|| format!("cannot enter {}, where run {id} was started", detail.cwd))?;
    let mut argv = vec!["corral".to_string()];
    argv.extend(detail.argv.iter().cloned());
    if args.quiet && !argv.iter().any(|a| a == "-q" || a == "--quiet") {
        argv.push("--quiet".to_string());
    }
    if let Some(dir) = &args.journal.data_dir {
        // The resumed run goes to the journal it resumes from.
        strip_flag(&mut argv, "--data-dir");
        argv.push("--data-dir".to_string());
        argv.push(dir.display().to_string());
    }
    let cli = match super::Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(error) => return Ok(super::clap_exit(error)),
    };
    let super::Command::Run(run_args) = cli.command else {
        bail!("run {id} was not started by `corral run`, so it cannot be resumed");
    };
    let policy = match args.reuse {
        Reuse::Prefix => ReusePolicy::Prefix,
        Reuse::All => ReusePolicy::All,
    };
    let plan = ReplayPlan::new(journal.recorded_calls(&id)?, policy);
    drop(journal);
    super::run::run(run_args, Some(Resume { from: id, plan }))
}

#[cfg(test)]
mod tests {
    use super::strip_flag;

    #[test]
    fn flags_are_stripped_in_both_spellings() {
        let mut argv: Vec<String> = ["run", "x.js", "--data-dir", "/a", "-q", "--data-dir=/b"]
            .map(String::from)
            .to_vec();
        strip_flag(&mut argv, "--data-dir");
        assert_eq!(argv, ["run", "x.js", "-q"]);
    }
}
