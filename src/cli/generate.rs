//! `mailflow completions` and `mailflow man`: shell completions and man pages generated from
//! the same clap definitions that parse the command line, so they never drift from it.

use super::{Cli, Exit};
use clap::CommandFactory;
use std::path::Path;

pub(super) fn completions(shell: clap_complete::Shell) -> Exit {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "mailflow", &mut std::io::stdout());
    Exit::Clean
}

/// Writes `mailflow.1` to standard output, or with `dir` that page and one per subcommand
/// (`mailflow-check.1`, ...) into `dir`.
pub(super) fn man(dir: Option<&Path>) -> Exit {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        if let Err(e) = clap_mangen::Man::new(cmd).render(&mut out) {
            eprintln!("error: {e}");
            return Exit::Error;
        }
        print!("{}", String::from_utf8_lossy(&out));
        return Exit::Clean;
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: {}: {e}", dir.display());
        return Exit::Error;
    }
    match clap_mangen::generate_to(cmd, dir) {
        Ok(()) => Exit::Clean,
        Err(e) => {
            eprintln!("error: {}: {e}", dir.display());
            Exit::Error
        }
    }
}
