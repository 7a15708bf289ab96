//! `mailflow graph`.

use super::Exit;
use mailflow::check::check_file_allowing;
use mailflow::diagnostic::render;
use mailflow::graph::{Format, render as draw};
use std::path::{Path, PathBuf};

pub(super) fn run(rules: &Path, allow: &[PathBuf], format: Format) -> Exit {
    let report = match check_file_allowing(rules, allow) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    if report.has_errors() {
        eprint!(
            "{}",
            render::human(&report.diagnostics, &report.sources, false)
        );
        eprintln!("error: the rule set has errors; fix them to draw it");
        return Exit::Findings;
    }
    let Some(set) = report.rule_sets.first() else {
        eprintln!("error: no rule set found in {}", rules.display());
        return Exit::Error;
    };
    print!("{}", draw(&set.rules, format));
    Exit::Clean
}
