//! `mailflow import`: Exchange configuration to mailflow rule text. [`exchange`] reads
//! PowerShell command lines ([`powershell`] tokenizes them) and [`csv`] reads address rewrite
//! CSV files; this module owns the result, renders the rule text with a comment naming the
//! source line of every item, and makes sure `check` accepts what it renders.

pub mod exchange;
pub mod powershell;

use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::source::{FileId, SourceMap, Span};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// What an import produced.
#[derive(Debug)]
pub struct Import {
    /// The rule text (always written, errors or not: failed commands are kept as comments).
    pub text: String,
    /// The source file, for rendering the findings.
    pub sources: SourceMap,
    /// Every finding, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Import {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity() == Severity::Error)
    }
}

/// Settings that the source files cannot provide.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where the rule text will be written: relative paths in it (certificates) are checked
    /// from this file's folder. `None`: the current folder.
    pub output: Option<std::path::PathBuf>,
    /// PEM certificate written into every connector that uses TLS (Exchange's certificate
    /// store has no file to point at).
    pub certificate: Option<String>,
    /// Its private key.
    pub key: Option<String>,
}

/// Which statement of the source made a rendered line, and where in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blame {
    /// Index of the source statement (command or CSV row).
    pub unit: usize,
    /// The parameter (or field) the line comes from.
    pub span: Span,
}

/// The section an item is written in; the order of the variants is the order of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Section {
    AcceptedDomains,
    ReceiveConnectors,
    SendConnectors,
    Rewrites,
    Recipients,
    Rules,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::AcceptedDomains => "accepted domains",
            Section::ReceiveConnectors => "receive connectors",
            Section::SendConnectors => "send connectors",
            Section::Rewrites => "address rewriting",
            Section::Recipients => "recipients",
            Section::Rules => "transport rules",
        }
    }
}

/// One item of rule text: a line (`rewrite ...`) or a block (`header {` lines `}`).
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub section: Section,
    /// The first line (a whole item, or a block's opening line).
    pub head: (String, Blame),
    /// A block's statements; `None` for one-line items.
    pub body: Option<Vec<(String, Blame)>>,
    /// The source units it comes from, in order (for the comment above it).
    pub origin: Vec<usize>,
}

/// A source unit as the comments show it.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    /// First and last line.
    pub lines: (usize, usize),
    /// One-line summary (the command with its prompt removed).
    pub text: String,
    /// The original lines.
    pub original: Vec<String>,
}

/// A rendered file with the unit behind every line (`None`: comments, blank lines).
struct Rendered {
    text: String,
    blame: Vec<Option<Blame>>,
}

fn line_label(lines: (usize, usize)) -> String {
    if lines.0 == lines.1 {
        format!("line {}", lines.0)
    } else {
        format!("lines {}-{}", lines.0, lines.1)
    }
}

fn render(
    source: &Path,
    tool: &str,
    units: &[Unit],
    items: &[Item],
    failed: &BTreeMap<usize, Diagnostic>,
) -> Rendered {
    let mut r = Rendered {
        text: String::new(),
        blame: Vec::new(),
    };
    let push = |r: &mut Rendered, line: &str, blame: Option<Blame>| {
        r.text.push_str(line);
        r.text.push('\n');
        r.blame.push(blame);
    };
    push(
        &mut r,
        &format!("# Imported from {} by `{tool}`.", source.display()),
        None,
    );
    push(
        &mut r,
        "# Each item names the source line it comes from; what could not be imported is at the end.",
        None,
    );
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by_key(|i| i.section);
    let mut current = None;
    for item in sorted {
        let first = current != Some(item.section);
        if first {
            current = Some(item.section);
            push(&mut r, "", None);
            push(
                &mut r,
                &format!("# {:-<64} {}", "", item.section.title()),
                None,
            );
        }
        if first || item.body.is_some() {
            push(&mut r, "", None);
        }
        for u in &item.origin {
            if let Some(unit) = units.get(*u) {
                push(
                    &mut r,
                    &format!("# {}: {}", line_label(unit.lines), one_line(&unit.text)),
                    None,
                );
            }
        }
        push(&mut r, &item.head.0, Some(item.head.1));
        if let Some(body) = &item.body {
            for (line, blame) in body {
                push(&mut r, &format!("  {line}"), Some(*blame));
            }
            push(&mut r, "}", Some(item.head.1));
        }
    }
    if !failed.is_empty() {
        push(&mut r, "", None);
        push(&mut r, &format!("# {:-<64} not imported", ""), None);
        let mut in_order: Vec<(&usize, &Diagnostic)> = failed.iter().collect();
        in_order.sort_by_key(|(u, _)| units.get(**u).map(|x| x.lines));
        for (u, d) in in_order {
            let Some(unit) = units.get(*u) else { continue };
            push(&mut r, "", None);
            push(
                &mut r,
                &format!(
                    "# {}: {} {}",
                    line_label(unit.lines),
                    d.code,
                    one_line(&d.message)
                ),
                None,
            );
            for line in &unit.original {
                push(&mut r, &format!("#   {}", one_line(line)), None);
            }
        }
    }
    r
}

/// Text safe inside a `#` comment (one line).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Renders `items`, checks the text, and leaves out the units `check` refuses (reporting
/// each as E078) until the text passes; returns the text and the refusals.
pub(crate) fn settle(
    source: &Path,
    tool: &str,
    options: &Options,
    units: &[Unit],
    mut translate: impl FnMut(&BTreeMap<usize, Diagnostic>) -> (Vec<Item>, BTreeMap<usize, Diagnostic>),
) -> (String, Vec<Diagnostic>) {
    let mut refused: BTreeMap<usize, Diagnostic> = BTreeMap::new();
    let check_name = options
        .output
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("imported.mailflow"));
    let check_name = check_name.to_string_lossy();
    // Every round that does not return leaves out one more unit, so this ends within
    // `units.len() + 1` rounds.
    loop {
        let (items, failed) = translate(&refused);
        let mut all_failed = failed;
        for (k, v) in &refused {
            all_failed.insert(*k, v.clone());
        }
        let rendered = render(source, tool, units, &items, &all_failed);
        let report = crate::check::check_text(&check_name, &rendered.text);
        let mut new = false;
        for d in report
            .diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
        {
            let Some(span) = d.primary_span() else {
                continue;
            };
            let Some(file) = report.sources.get(span.file) else {
                continue;
            };
            let (line, _) = file.line_col(span.start as usize);
            let Some(Some(blame)) = rendered.blame.get(line.saturating_sub(1)) else {
                continue;
            };
            if refused.contains_key(&blame.unit) {
                continue;
            }
            new = true;
            refused.insert(
                blame.unit,
                Diagnostic::new(
                    Code::E078,
                    format!("`check` refuses what this translates to: {}", d.message),
                )
                .primary(
                    blame.span,
                    format!("translated to `{}`", one_line(report.sources.snippet(span))),
                )
                .help("fix the command; it is left out of the rule set until then")
                .note(format!(
                    "check reports {}: {}",
                    d.code,
                    d.help
                        .clone()
                        .unwrap_or_else(|| d.code.info().summary.to_string())
                )),
            );
        }
        if !new {
            return (rendered.text, refused.into_values().collect());
        }
    }
}

/// Writes a value as a bare word when the language allows it, else as a string.
pub(crate) fn word(value: &str) -> String {
    let bare = !value.is_empty()
        && !value.contains("->")
        && value.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || !c.is_ascii() && !c.is_whitespace() && !c.is_control()
                || ".@-_*+'!%=/:[]~$&^`|?<>()".contains(c)
        })
        && !value.starts_with('-');
    if bare {
        value.to_string()
    } else {
        string(value)
    }
}

/// Writes a value as a string.
pub(crate) fn string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes values as a comma-separated list of words.
pub(crate) fn words(values: &[String]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}", word(v));
    }
    out
}

/// Imports Exchange PowerShell command lines (`text`, read from `path`).
pub fn exchange(path: &Path, text: &str, options: &Options) -> Import {
    let mut sources = SourceMap::new();
    let file = sources.add(path.to_path_buf(), text.to_string());
    let (text, diagnostics) = exchange::import(file, path, text, options);
    finish(text, sources, diagnostics)
}

/// Imports an address rewrite CSV (`Name,InternalAddress,ExternalAddress,ExceptionList,
/// OutboundOnly`, as `import rewrites` reads it) as `rewrite` lines.
pub fn csv(path: &Path, text: &str, options: &Options) -> Import {
    let mut sources = SourceMap::new();
    let file = sources.add(path.to_path_buf(), text.to_string());
    // The header and at most MAX_CSV_ROWS rows are imported; the row after them is reported.
    let cut = rows_cut(text, MAX_CSV_ROWS);
    let read = cut.and_then(|i| text.get(..i)).unwrap_or(text);
    let (text, mut diagnostics) = csv_rows(file, path, read, &sources, options);
    if let Some(i) = cut {
        let end = sources
            .get(file)
            .and_then(|f| f.text.get(i..))
            .map_or(i, |rest| i + rest.find('\n').unwrap_or(rest.len()));
        diagnostics.push(
            Diagnostic::new(
                Code::E004,
                format!("the csv file has more than {MAX_CSV_ROWS} rows"),
            )
            .primary(Span::new(file, i, end), "nothing from here on is imported")
            .help("name the file with `import rewrites \"FILE.csv\"` in a rule set instead: the rows are read as they are, without being written out as rule text"),
        );
    }
    finish(text, sources, diagnostics)
}

/// Where the text after the header and `max` rows starts, if anything but blanks follows.
fn rows_cut(text: &str, max: usize) -> Option<usize> {
    text.match_indices('\n')
        .nth(max)
        .map(|(i, _)| i + 1)
        .filter(|&i| text.get(i..).is_some_and(|rest| !rest.trim().is_empty()))
}

/// The most rows `import csv` turns into rule text: it holds every row several times over
/// (rows, rule text, its check), about 3 KB a row, so 200,000 rows stay near 600 MB where
/// a 128 MiB file (about 1.7 million rows) would take 5 GB. `import rewrites` in a rule set
/// reads any CSV within the file size limit at a third of that.
pub const MAX_CSV_ROWS: usize = 200_000;

fn finish(text: String, sources: SourceMap, mut diagnostics: Vec<Diagnostic>) -> Import {
    diagnostics.sort_by_key(|d| (d.primary_span().map(|s| s.start), d.code));
    let diagnostics = crate::diagnostic::cap_repeats(diagnostics);
    // In `mailflow fmt`'s layout, so the first `fmt --check` in CI changes nothing. The text
    // passed `check`, so it parses; were the formatter ever to refuse it, the text as
    // rendered is still correct.
    let text = crate::fmt::format_source(FileId(0), &text).unwrap_or(text);
    Import {
        text,
        sources,
        diagnostics,
    }
}

fn csv_rows(
    file: FileId,
    path: &Path,
    text: &str,
    sources: &SourceMap,
    options: &Options,
) -> (String, Vec<Diagnostic>) {
    use crate::ast::Item as AstItem;
    // The same reading and checking as `import rewrites`: the rows become rewrite items,
    // resolved as a rule set of their own, so every finding points at its row.
    let (rows, mut diags) = crate::load::csv_rewrites(file, text);
    let items: Vec<AstItem> = rows.iter().cloned().map(AstItem::Rewrite).collect();
    let (_, resolved) = crate::resolve::resolve(sources, &items, &[]);
    let line_of = |s: Span| {
        sources
            .get(file)
            .map_or(0, |f| f.line_col(s.start as usize).0)
    };
    let units: Vec<Unit> = rows
        .iter()
        .map(|r| {
            let line = line_of(r.span);
            let row = sources.snippet(r.span).to_string();
            Unit {
                lines: (line, line),
                text: row.clone(),
                original: vec![row],
            }
        })
        .collect();
    let mut units = units;
    let mut failed: BTreeMap<usize, Diagnostic> = BTreeMap::new();
    // Rows the CSV reader could not read at all are kept as comments too.
    let lines: Vec<&str> = text.lines().collect();
    for d in diags.iter().filter(|d| d.severity() == Severity::Error) {
        if let Some(s) = d.primary_span() {
            let line = line_of(s);
            let row = lines.get(line.saturating_sub(1)).copied().unwrap_or("");
            failed.insert(units.len(), d.clone());
            units.push(Unit {
                lines: (line, line),
                text: row.to_string(),
                original: vec![row.to_string()],
            });
        }
    }
    for d in resolved.iter().filter(|d| d.severity() == Severity::Error) {
        if let Some(s) = d.primary_span() {
            // Rows are in file order: the first that does not end before the span.
            let i = rows.partition_point(|r| r.span.end < s.start);
            if rows
                .get(i)
                .is_some_and(|r| r.span.start <= s.start && s.end <= r.span.end)
            {
                failed.entry(i).or_insert_with(|| d.clone());
            }
        }
    }
    diags.extend(resolved);
    let (out, refused) = settle(path, "mailflow import csv", options, &units, |refused| {
        let mut items = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            if failed.contains_key(&i) || refused.contains_key(&i) {
                continue;
            }
            let mut line = String::from("rewrite ");
            if let Some(n) = &r.name {
                let _ = write!(line, "{} ", string(&n.value));
            }
            let _ = write!(
                line,
                "{} -> {}",
                word(&r.internal.value),
                word(&r.external.value)
            );
            if r.outbound_only.is_some() {
                line.push_str(" outbound-only");
            }
            if !r.exceptions.is_empty() {
                let ex: Vec<String> = r.exceptions.iter().map(|e| e.value.clone()).collect();
                let _ = write!(line, " except {}", words(&ex));
            }
            items.push(Item {
                section: Section::Rewrites,
                head: (
                    line,
                    Blame {
                        unit: i,
                        span: r.span,
                    },
                ),
                body: None,
                origin: vec![i],
            });
        }
        (items, failed.clone())
    });
    diags.extend(refused);
    (out, diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_past_the_limit_are_cut_at_a_line_start() {
        let text = "H\na\nb\nc\n";
        assert_eq!(rows_cut(text, 2), Some(6));
        assert_eq!(rows_cut(text, 3), None);
        assert_eq!(rows_cut("H\na\nb\n\n  \n", 2), None);
    }
}
