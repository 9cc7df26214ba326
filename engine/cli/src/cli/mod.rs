//! The `corral` command line: parse, one `match` on the subcommand, errors printed once by `main`,
//! exit codes that tell failure kinds apart.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `println!` that ignores a closed stdout (`corral runs list | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod changes;
mod plan;
mod progress;
mod run;
mod runs;
mod script;
mod serve;
mod sign;
mod watch;

/// The workflow returned an error or crashed.
pub const EXIT_WORKFLOW: u8 = 1;
/// Invalid usage or input (flags, files, components, scripts that fail their checks).
pub const EXIT_USAGE: u8 = 2;
/// A host-enforced limit ended the run.
pub const EXIT_LIMIT: u8 = 3;
/// The host failed.
pub const EXIT_HOST: u8 = 4;
/// The run was stopped on request (`corral runs stop`).
pub const EXIT_STOPPED: u8 = 5;
/// The run was refused before it started: its plan exceeds the budget.
pub const EXIT_OVER_BUDGET: u8 = 6;

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Run LLM agent workflows inside a WebAssembly sandbox"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow: a component (.wasm) or a script (.js).
    Run(Box<run::RunArgs>),
    /// Dry-run a workflow on the simulated provider: agents, tokens and cost per phase.
    Plan(Box<run::RunArgs>),
    /// Check a script without running it (meta, imports, syntax, schemas).
    Check(script::CheckArgs),
    /// Package a script and its runtime into one self-contained component.
    Build(script::BuildArgs),
    /// Describe a component or script: world, imports, exports, meta, size, hash, policy and
    /// signature.
    Inspect(script::InspectArgs),
    /// Embed a policy manifest in a component and sign it (minisign's format).
    Sign(sign::SignArgs),
    /// Signing keys: generate.
    Keys {
        #[command(subcommand)]
        command: sign::KeysCommand,
    },
    /// The journal of runs: list, show, watch, stop, resume.
    Runs {
        #[command(subcommand)]
        command: runs::RunsCommand,
    },
    /// Serve the multi-tenant HTTP API.
    Serve(Box<serve::ServeArgs>),
    /// The server's tenants: add, list.
    Tenants {
        #[command(subcommand)]
        command: serve::TenantsCommand,
    },
    /// Tenants' API tokens: create, list, revoke.
    Tokens {
        #[command(subcommand)]
        command: serve::TokensCommand,
    },
}

/// Parses the command line and runs the subcommand.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return Ok(clap_exit(error)),
    };
    dispatch(cli)
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Plan(args) => plan::plan(*args),
        Command::Check(args) => script::check(args),
        Command::Build(args) => script::build(args),
        Command::Inspect(args) => script::inspect(args),
        Command::Sign(args) => sign::sign(args),
        Command::Keys { command } => sign::keys(command),
        Command::Runs { command } => runs::runs(command),
        Command::Serve(args) => serve::serve(*args),
        Command::Tenants { command } => serve::tenants(command),
        Command::Tokens { command } => serve::tokens(command),
    }
}

/// clap prints help and version to stdout with success, usage errors to stderr.
pub(crate) fn clap_exit(error: clap::Error) -> ExitCode {
    let _ = error.print();
    ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { 0 })
}

pub(crate) fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
