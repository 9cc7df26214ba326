//! `corral runs diff` and `corral runs apply`: review a run's staged writes, then write them.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Args;

use super::run::{ServiceArgs, service_failure};

#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
    /// Colour the diff: `auto` (on a terminal), `always` or `never`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    color: String,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// The run's id (or an unambiguous prefix of it).
    id: String,
    /// Apply only this staged path (repeatable); all of them by default.
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    /// Instead of writing the working tree, commit the changes on a new git branch NAME based
    /// on the commit the run started from (the working tree, the index and HEAD stay as they are).
    #[arg(long, value_name = "NAME")]
    branch: Option<String>,
}

pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let service = super::runs::open(&args.journal)?;
    let text = match service.diff(None, &args.id) {
        Ok(text) => text,
        Err(error) => return service_failure(error),
    };
    if text.is_empty() {
        eprintln!(
            "corral: the run's staged changes are all in the root already, or it staged none"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let colour = match args.color.as_str() {
        "always" => true,
        "never" => false,
        _ => std::io::stdout().is_terminal(),
    };
    for line in text.lines() {
        if !colour {
            out!("{line}");
            continue;
        }
        let code =
            if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ") {
                "1"
            } else if line.starts_with('+') {
                "32"
            } else if line.starts_with('-') {
                "31"
            } else if line.starts_with("@@") {
                "36"
            } else {
                ""
            };
        if code.is_empty() {
            out!("{line}");
        } else {
            out!("\x1b[{code}m{line}\x1b[0m");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let service = super::runs::open(&args.journal)?;
    if let Some(branch) = &args.branch {
        return match service.apply_branch(None, &args.id, &args.paths, branch) {
            Ok(commit) => {
                eprintln!(
                    "corral: committed the run's changes as {commit} on the new branch {branch}"
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(error) => service_failure(error),
        };
    }
    match service.apply(None, &args.id, &args.paths) {
        Ok(applied) => {
            report(&applied);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => service_failure(error),
    }
}

/// Prints what an apply wrote.
pub fn report(applied: &corral_host::tools::Applied) {
    for path in &applied.applied {
        eprintln!("corral: applied {path}");
    }
    if !applied.already.is_empty() {
        eprintln!(
            "corral: already in the root: {}",
            applied.already.join(", ")
        );
    }
    eprintln!(
        "corral: {} file{} written",
        applied.applied.len(),
        if applied.applied.len() == 1 { "" } else { "s" }
    );
}
