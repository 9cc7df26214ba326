//! The `corral` command line: `main` → `run` → one `match` on the subcommand; errors are printed
//! once and mapped to an exit code that tells failure kinds apart.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(cli::EXIT_USAGE)
        }
    }
}
