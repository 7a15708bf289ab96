//! `mailflow fmt`: rewrite rule files in place (atomically, permissions kept), `--check` them
//! with a diff, or format standard input to standard output.

use super::{ColorChoice, Exit};
use mailflow::diagnostic::render;
use mailflow::fmt::{FormatError, format_source};
use mailflow::source::{FileId, SourceMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

pub(super) fn run(paths: &[PathBuf], check: bool, stdin: bool, color: ColorChoice) -> Exit {
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let dash = paths.iter().any(|p| p.as_os_str() == "-");
    if stdin || dash {
        if paths.len() > 1 {
            eprintln!("error: `-` formats standard input and cannot be combined with files");
            return Exit::Error;
        }
        return run_stdin(check, color);
    }
    let mut files = Vec::new();
    for path in paths {
        match expand(path) {
            Ok(found) => files.extend(found),
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Error;
            }
        }
    }
    // A file named twice (itself and through its folder) is formatted once.
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    let mut tally = Tally::default();
    for file in &files {
        tally.add(format_file(file, check, color));
    }
    let total = files.len();
    let verb = if check {
        "would be reformatted"
    } else {
        "reformatted"
    };
    let changed = tally.changed;
    println!(
        "{changed} file{} {verb}, {} already formatted{}",
        if changed == 1 { "" } else { "s" },
        total.saturating_sub(changed + tally.failed),
        if tally.failed > 0 {
            format!(", {} left as they are", tally.failed)
        } else {
            String::new()
        }
    );
    tally.exit(check)
}

#[derive(Default)]
struct Tally {
    changed: usize,
    failed: usize,
    syntax: bool,
    error: bool,
}

enum Outcome {
    Unchanged,
    Changed,
    Syntax,
    Error,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Unchanged => {}
            Outcome::Changed => self.changed += 1,
            Outcome::Syntax => {
                self.failed += 1;
                self.syntax = true;
            }
            Outcome::Error => {
                self.failed += 1;
                self.error = true;
            }
        }
    }

    fn exit(&self, check: bool) -> Exit {
        if self.error {
            Exit::Error
        } else if self.syntax || (check && self.changed > 0) {
            Exit::Findings
        } else {
            Exit::Clean
        }
    }
}

/// A file, or a folder's `.mailflow` files.
fn expand(path: &Path) -> Result<Vec<PathBuf>, String> {
    let md = std::fs::metadata(path).map_err(|e| {
        format!(
            "cannot read `{}`: {}",
            path.display(),
            mailflow::resolve::io_reason(&e)
        )
    })?;
    // As `check` reads them: a link out of the folder is refused, never read nor rewritten.
    if !md.is_dir() {
        if mailflow::load::links_out_of_its_folder(path) {
            return Err(format!(
                "cannot read `{}`: it is a link to a file outside its folder",
                path.display()
            ));
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let files = mailflow::load::confined_rule_files(path)
        .map_err(|(f, why)| format!("cannot read `{}`: {why}", f.display()))?;
    if files.is_empty() {
        return Err(format!("`{}` contains no .mailflow files", path.display()));
    }
    Ok(files)
}

fn format_file(path: &Path, check: bool, color: bool) -> Outcome {
    // The same reader as `check`: the size limit, and one message for text that is not UTF-8.
    let text = match mailflow::load::read_limited_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read `{}`: {}",
                path.display(),
                mailflow::resolve::io_reason(&e)
            );
            return Outcome::Error;
        }
    };
    let out = match format(path, &text, color) {
        Ok(out) => out,
        Err(failed) => return failed,
    };
    if out == text {
        return Outcome::Unchanged;
    }
    if check {
        println!("would reformat {}", path.display());
        print!("{}", diff(path, &text, &out));
        return Outcome::Changed;
    }
    match write_atomic(path, &out) {
        Ok(()) => {
            println!("reformatted {}", path.display());
            Outcome::Changed
        }
        Err(e) => {
            eprintln!(
                "error: cannot write `{}`: {}",
                path.display(),
                mailflow::resolve::io_reason(&e)
            );
            Outcome::Error
        }
    }
}

/// The formatted text, or why there is none (after reporting it).
fn format(path: &Path, text: &str, color: bool) -> Result<String, Outcome> {
    // A source map (a copy of the text and its line index) only for rendering syntax errors.
    match format_source(FileId(0), text) {
        Ok(out) => Ok(out),
        Err(FormatError::Syntax(diags)) => {
            let mut sources = SourceMap::new();
            sources.add(path, text.to_string());
            eprint!("{}", render::human(&diags, &sources, color));
            eprintln!(
                "error: `{}` was left as it is: it does not parse ({})",
                path.display(),
                render::summary(&diags)
            );
            Err(Outcome::Syntax)
        }
        Err(e @ FormatError::Unsafe(_)) => {
            eprintln!(
                "internal error: `{}` was left as it is: {e}; please report this with the file",
                path.display()
            );
            Err(Outcome::Error)
        }
    }
}

fn run_stdin(check: bool, color: bool) -> Exit {
    // Standard input is bounded like a file: at most 128 MiB, and text.
    let read = mailflow::input::read_stream_limited(std::io::stdin().lock())
        .and_then(mailflow::input::text_or_error);
    let text = match read {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read standard input: {}",
                mailflow::resolve::io_reason(&e)
            );
            return Exit::Error;
        }
    };
    let path = Path::new("<stdin>");
    let out = match format(path, &text, color) {
        Ok(out) => out,
        Err(Outcome::Syntax) => return Exit::Findings,
        Err(_) => return Exit::Error,
    };
    if check {
        if out == text {
            return Exit::Clean;
        }
        print!("{}", diff(path, &text, &out));
        return Exit::Findings;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return Exit::Error;
    }
    Exit::Clean
}

/// A unified diff from the file as it is to the file formatted.
fn diff(path: &Path, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&name, &format!("{name} (formatted)"))
        .to_string()
}

/// Replaces the file (the target of a symbolic link) by writing a temporary file next to it
/// and renaming it over, so that a crash leaves the old text or the new, never half of it.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let permissions = std::fs::metadata(&target)?.permissions();
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}.fmt-tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.set_permissions(permissions)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
