//! `check` as a library call: load, parse, resolve and lint every rule set named, and return
//! the findings in a stable order. The CLI only renders what this returns.

use crate::diagnostic::{Diagnostic, Severity};
use crate::lint::LintOptions;
use crate::load::{LoadError, Workspace};
use crate::model::RuleSet;
use crate::resolve::Reference;
use crate::source::SourceMap;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// One rule set after checking.
#[derive(Debug)]
pub struct CheckedRuleSet {
    /// Its root file.
    pub root: PathBuf,
    /// What it resolved to (parts with errors are left out).
    pub rules: RuleSet,
    /// Every name written where a definition is meant (`connector "X"`, `members "A"`).
    pub references: Vec<Reference>,
}

/// The outcome of checking.
#[derive(Debug)]
pub struct Report {
    /// Every file read.
    pub sources: SourceMap,
    /// The rule sets, in the order found.
    pub rule_sets: Vec<CheckedRuleSet>,
    /// Every finding, by file and position, without repeats.
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// How many findings have this severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity() == severity)
            .count()
    }

    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.count(Severity::Error) > 0
    }
}

/// Checks the rule sets named by `paths` (files, or folders of `.mailflow` files).
pub fn check_paths(paths: &[PathBuf]) -> Result<Report, LoadError> {
    Ok(check_workspace(
        Workspace::load(paths)?,
        &LintOptions::now(),
    ))
}

/// [`check_paths`], with the rule files named in `overlays` read from there instead of from
/// disk (an editor's unsaved buffers).
pub fn check_paths_with(
    paths: &[PathBuf],
    overlays: HashMap<PathBuf, String>,
) -> Result<Report, LoadError> {
    Ok(check_workspace(
        Workspace::load_with(paths, overlays)?,
        &LintOptions::now(),
    ))
}

/// [`check_paths`], letting includes and imports read inside the folders `allow` too
/// (`--allow-path`), not only inside each rule set's own folder.
pub fn check_paths_allowing(paths: &[PathBuf], allow: &[PathBuf]) -> Result<Report, LoadError> {
    check_paths_options(paths, allow, &LintOptions::now())
}

/// [`check_paths_allowing`], judging certificates at the time and with the expiry window
/// `options` give (`--cert-expiry-days`; tests fix the time).
pub fn check_paths_options(
    paths: &[PathBuf],
    allow: &[PathBuf],
    options: &LintOptions,
) -> Result<Report, LoadError> {
    Ok(check_workspace(
        Workspace::load_allowing(paths, HashMap::new(), allow)?,
        options,
    ))
}

/// Checks one rule file.
pub fn check_file(path: &Path) -> Result<Report, LoadError> {
    check_paths(&[path.to_path_buf()])
}

/// [`check_file`] with [`check_paths_options`]'s options.
pub fn check_file_options(path: &Path, options: &LintOptions) -> Result<Report, LoadError> {
    check_paths_options(&[path.to_path_buf()], &[], options)
}

/// [`check_file`] with [`check_paths_allowing`]'s allowed folders.
pub fn check_file_allowing(path: &Path, allow: &[PathBuf]) -> Result<Report, LoadError> {
    check_paths_allowing(&[path.to_path_buf()], allow)
}

/// Checks rule text held in memory (includes resolve against the current folder).
pub fn check_text(name: &str, text: &str) -> Report {
    check_text_options(name, text, &LintOptions::now())
}

/// [`check_text`] with [`check_paths_options`]'s options.
pub fn check_text_options(name: &str, text: &str, options: &LintOptions) -> Report {
    check_workspace(Workspace::from_text(name, text), options)
}

/// [`check_text`], with the files it includes read from `overlays` when named there.
pub fn check_text_with(name: &str, text: &str, overlays: HashMap<PathBuf, String>) -> Report {
    check_workspace(
        Workspace::from_text_with(name, text, overlays),
        &LintOptions::now(),
    )
}

fn check_workspace(ws: Workspace, options: &LintOptions) -> Report {
    let Workspace {
        sources,
        rule_sets,
        diagnostics,
        ..
    } = ws;
    let mut all = diagnostics;
    let mut checked = Vec::new();
    for set in rule_sets {
        let (rules, diags, references) =
            crate::resolve::resolve_with_references(&sources, &set.items, &set.broken);
        all.extend(diags);
        all.extend(crate::lint::lint(&rules, options));
        checked.push(CheckedRuleSet {
            root: set.root,
            rules,
            references,
        });
    }
    // A file shared by several rule sets would otherwise be reported once per set.
    let mut seen = HashSet::new();
    all.retain(|d| seen.insert((d.code, d.primary_span(), d.message.clone())));
    all.sort_by_key(|d| {
        let s = d.primary_span();
        (s.map(|s| (s.file, s.start)), d.code)
    });
    Report {
        sources,
        rule_sets: checked,
        diagnostics: crate::diagnostic::cap_repeats(all),
    }
}
