//! The `mailflow` command: parses arguments, calls the library, renders, and exits with
//! 0 (clean), 1 (findings) or 2 (usage or I/O error).

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::run(args).into()
}
