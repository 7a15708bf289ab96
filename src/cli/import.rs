//! `mailflow import exchange FILE.ps1` and `mailflow import csv FILE.csv`: the rule text goes
//! to standard output or `-o FILE` (always, with what failed kept as comments), the findings
//! to standard error; exit 0 when only warnings, 1 on errors, 2 when a file cannot be read
//! or written.

use super::{ColorChoice, Exit, Format};
use mailflow::diagnostic::render;
use mailflow::import::{self, Options};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Which importer.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Exchange,
    Csv,
}

pub(super) struct Args {
    pub source: Source,
    pub file: PathBuf,
    pub output: Option<PathBuf>,
    pub certificate: Option<String>,
    pub key: Option<String>,
    pub format: Format,
    pub color: ColorChoice,
}

pub(super) fn run(a: Args) -> Exit {
    // A regular text file of at most 128 MiB, as for rule files; bytes that are not text
    // are refused without being shown.
    let text = match mailflow::input::read_limited_string(&a.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read `{}`: {}",
                a.file.display(),
                mailflow::resolve::io_reason(&e)
            );
            return Exit::Error;
        }
    };
    if a.certificate.is_some() != a.key.is_some() {
        eprintln!("error: give `--certificate` and `--key` together");
        return Exit::Error;
    }
    let options = Options {
        output: a.output.clone(),
        certificate: a.certificate,
        key: a.key,
    };
    let result = match a.source {
        Source::Exchange => import::exchange(&a.file, &text, &options),
        Source::Csv => import::csv(&a.file, &text, &options),
    };
    if let Err(code) = write(a.output.as_deref(), &result.text) {
        return code;
    }
    let diags = &result.diagnostics;
    let report = match a.format {
        Format::Human => {
            let color = match a.color {
                ColorChoice::Always => true,
                ColorChoice::Never => false,
                ColorChoice::Auto => {
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            format!(
                "{}imported {}: {}\n",
                render::human(diags, &result.sources, color),
                a.file.display(),
                render::summary(diags)
            )
        }
        Format::Json => render::json(diags, &result.sources) + "\n",
        Format::Github => render::github(diags, &result.sources),
        Format::Sarif => render::sarif(diags, &result.sources) + "\n",
    };
    eprint!("{report}");
    if result.has_errors() {
        Exit::Findings
    } else {
        Exit::Clean
    }
}

fn write(output: Option<&Path>, text: &str) -> Result<(), Exit> {
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => std::fs::write(path, text).map_err(|e| {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            Exit::Error
        }),
    }
}
