//! `mailflow diff OLD NEW [INPUTS...]`: which messages a rule change treats differently.
//! OLD may be a git revision of NEW (`mailflow diff HEAD~1 rules/x.mailflow`, or `--base
//! main`). Exit 0: compared (changes or not); 1: something changed and `--fail-on-change`;
//! 2: an error.

mod git;
mod render;

use super::Exit;
use mailflow::diff::{Input, diff, inputs};
use mailflow::model::RuleSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum DiffFormat {
    /// For people.
    Human,
    /// One JSON document.
    Json,
    /// For a pull request comment.
    Markdown,
}

#[derive(Debug, clap::Args)]
pub(super) struct DiffArgs {
    /// OLD and NEW rule sets (files, folders or compiled tables), then inputs: `.eml` files or
    /// folders of them, each with its `NAME.envelope`, and captured traffic (a relay's
    /// SPOOL/capture folder or one of its files). OLD may be a git revision of NEW. With
    /// --base, the first is NEW.
    #[arg(required = true, value_name = "OLD NEW [INPUTS]")]
    paths: Vec<String>,
    /// Compare NEW with itself at this git revision (`main`, `HEAD~1`).
    #[arg(long, value_name = "REV")]
    base: Option<String>,
    /// Leave out the rule sets' `test` blocks as inputs.
    #[arg(long)]
    no_tests: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    format: DiffFormat,
    /// Exit 1 when any message is treated differently.
    #[arg(long)]
    fail_on_change: bool,
    /// Let includes and imports read in this folder too.
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_path: Vec<PathBuf>,
}

/// The two rule sets as named, and the rest.
struct Plan {
    old: (String, PathBuf),
    new: (String, PathBuf),
    inputs: Vec<PathBuf>,
    _revision: Option<git::Revision>,
}

fn plan(a: &DiffArgs) -> Result<Plan, String> {
    let mut paths = a.paths.iter();
    let (old, new, revision) = match &a.base {
        Some(rev) => {
            let new = PathBuf::from(paths.next().ok_or("name the rule set to compare")?);
            let r = git::at(rev, &new)?;
            (
                format!("{} at {rev}", new.display()),
                new,
                Some((rev.clone(), r)),
            )
        }
        None => {
            let old = paths.next().ok_or("name OLD and NEW")?;
            let new = PathBuf::from(paths.next().ok_or("name NEW too (or use --base REV)")?);
            if Path::new(old).exists() {
                (old.clone(), new, None)
            } else if git::is_revision(&new, old) {
                let r = git::at(old, &new)?;
                (
                    format!("{} at {old}", new.display()),
                    new,
                    Some((old.clone(), r)),
                )
            } else {
                return Err(format!(
                    "{old}: neither a rule file nor a git revision of {}",
                    new.display()
                ));
            }
        }
    };
    let (old_path, revision) = match revision {
        Some((_, r)) => (r.path.clone(), Some(r)),
        None => (PathBuf::from(&old), None),
    };
    Ok(Plan {
        old: (old, old_path),
        new: (new.display().to_string(), new),
        inputs: paths.map(PathBuf::from).collect(),
        _revision: revision,
    })
}

pub(super) fn run(a: &DiffArgs) -> Exit {
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        Exit::Error
    };
    let p = match plan(a) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let Ok((old_set, old)) = super::dry_run::load(&p.old.1, &a.allow_path) else {
        return fail(format!("the old rule set ({}) does not load", p.old.0));
    };
    let Ok((new_set, new)) = super::dry_run::load(&p.new.1, &a.allow_path) else {
        return fail(format!("the new rule set ({}) does not load", p.new.0));
    };
    let inputs = match gather(a, &p.inputs, &old_set, &new_set) {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let d = match diff(&old, &new, inputs) {
        Ok(d) if d.messages == 0 => {
            return fail(
                "no messages to compare: the rule sets have no tests and no inputs were named"
                    .into(),
            );
        }
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    let names = (p.old.0.as_str(), p.new.0.as_str());
    let text = match a.format {
        DiffFormat::Human => render::human(&d, names),
        DiffFormat::Markdown => render::markdown(&d, names),
        DiffFormat::Json => match serde_json::to_string_pretty(&d) {
            Ok(s) => s + "\n",
            Err(e) => return fail(e.to_string()),
        },
    };
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    if a.fail_on_change && !d.changes.is_empty() {
        Exit::Findings
    } else {
        Exit::Clean
    }
}

/// Every input, in order: the tests, then each path's messages or captured traffic (read
/// as the comparison goes, not first). Paths are checked before anything is evaluated.
fn gather(
    a: &DiffArgs,
    paths: &[PathBuf],
    old: &RuleSet,
    new: &RuleSet,
) -> Result<Box<dyn Iterator<Item = Result<Input, String>>>, String> {
    let tests = if a.no_tests {
        Vec::new()
    } else {
        inputs::tests(old, new)?
    };
    let mut all: Box<dyn Iterator<Item = Result<Input, String>>> =
        Box::new(tests.into_iter().map(Ok));
    for p in paths {
        if mailflow::relay::capture::is_capture(p) {
            all = Box::new(all.chain(mailflow::relay::capture::replay(p)?));
        } else {
            all = Box::new(all.chain(inputs::messages(p)?.into_iter().map(Ok)));
        }
    }
    Ok(all)
}
