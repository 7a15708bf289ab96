//! `mailflow check`.

use super::{ColorChoice, Exit, Format};
use mailflow::diagnostic::{Severity, render};
use std::io::IsTerminal;
use std::path::PathBuf;

pub(super) fn run(
    paths: &[PathBuf],
    allow: &[PathBuf],
    lint: &mailflow::lint::LintOptions,
    format: Format,
    deny_warnings: bool,
    color: ColorChoice,
) -> Exit {
    let report = match mailflow::check::check_paths_options(paths, allow, lint) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let diags = &report.diagnostics;
    let out = match format {
        Format::Human => {
            let color = match color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            let sets = report.rule_sets.len();
            let files = report.sources.iter().count();
            format!(
                "{}checked {sets} rule set{} ({files} file{}): {}\n",
                render::human(diags, &report.sources, color),
                if sets == 1 { "" } else { "s" },
                if files == 1 { "" } else { "s" },
                render::summary(diags)
            )
        }
        Format::Json => render::json(diags, &report.sources) + "\n",
        Format::Github => render::github(diags, &report.sources),
        Format::Sarif => render::sarif(diags, &report.sources) + "\n",
    };
    print!("{out}");
    if report.count(Severity::Error) > 0 || (deny_warnings && report.count(Severity::Warning) > 0) {
        Exit::Findings
    } else {
        Exit::Clean
    }
}
