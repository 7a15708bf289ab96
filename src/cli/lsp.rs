//! `mailflow lsp`.

use super::Exit;
use mailflow::lsp::{Outcome, run_stdio};

pub(super) fn run() -> Exit {
    match run_stdio() {
        Outcome::Clean => Exit::Clean,
        // The protocol asks for exit code 1 when `exit` comes without `shutdown`.
        Outcome::Abrupt => Exit::Findings,
    }
}
