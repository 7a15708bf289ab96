//! Rendering diagnostics: for people (ariadne, with the source text), and for machines as
//! JSON, GitHub workflow annotations or SARIF 2.1.0. Only the CLI calls these.

use super::{Code, Diagnostic, Severity};
use crate::source::{SourceMap, Span};
use ariadne::{Color, Config, IndexType, Label, Report, ReportKind};
use serde_json::{Value, json};

/// Where a span starts and ends, 1-based, columns in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First line.
    pub line: usize,
    /// First column.
    pub column: usize,
    /// Last line.
    pub end_line: usize,
    /// Column after the last character.
    pub end_column: usize,
}

fn region(sources: &SourceMap, span: Span) -> Option<Region> {
    let f = sources.get(span.file)?;
    let (line, column) = f.line_col(span.start as usize);
    let (end_line, end_column) = f.line_col(span.end as usize);
    Some(Region {
        line,
        column,
        end_line,
        end_column,
    })
}

fn path_of(sources: &SourceMap, span: Option<Span>) -> String {
    span.map_or_else(String::new, |s| sources.path(s.file).display().to_string())
}

/// `range` widened to whole characters of `text` (ariadne slices the text by it).
fn char_range(sources: &SourceMap, span: Span) -> std::ops::Range<usize> {
    let text = sources.get(span.file).map_or("", |f| f.text.as_str());
    let mut start = (span.start as usize).min(text.len());
    let mut end = (span.end as usize).min(text.len()).max(start);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// Renders for a terminal (or, with `color` false, for logs and snapshots).
pub fn human(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let cache_items: Vec<(String, String)> = sources
        .iter()
        .map(|(_, f)| (f.path.display().to_string(), f.text.clone()))
        .collect();
    // Built once: ariadne indexes every file's lines when it builds the cache, so building
    // it per finding made rendering quadratic in the number of findings.
    let mut cache = ariadne::sources(cache_items);
    let mut out = Vec::new();
    for d in diags {
        let kind = match d.severity() {
            Severity::Error => ReportKind::Error,
            Severity::Warning => ReportKind::Warning,
        };
        let Some(primary) = d.primary_span() else {
            let _ = unlocated(&mut out, d);
            continue;
        };
        let file = path_of(sources, Some(primary));
        let mut b = Report::build(kind, (file.clone(), char_range(sources, primary)))
            .with_config(
                Config::default()
                    .with_color(color)
                    .with_index_type(IndexType::Byte),
            )
            .with_code(d.code.id())
            .with_message(&d.message);
        for l in &d.labels {
            let lf = path_of(sources, Some(l.span));
            let mut label = Label::new((lf, char_range(sources, l.span))).with_message(&l.message);
            if color {
                label = label.with_color(if l.primary {
                    match d.severity() {
                        Severity::Error => Color::Red,
                        Severity::Warning => Color::Yellow,
                    }
                } else {
                    Color::Blue
                });
            }
            b = b.with_label(label);
        }
        if let Some(h) = &d.help {
            b = b.with_help(h);
        }
        for n in &d.notes {
            b = b.with_note(n);
        }
        let _ = b.finish().write(&mut cache, &mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unlocated(out: &mut Vec<u8>, d: &Diagnostic) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(
        out,
        "{}[{}]: {}",
        severity_word(d.severity()),
        d.code,
        d.message
    )
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// One summary line: `2 errors, 1 warning`.
pub fn summary(diags: &[Diagnostic]) -> String {
    let e = diags
        .iter()
        .filter(|d| d.severity() == Severity::Error)
        .count();
    let w = diags.len() - e;
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!("{}, {}", plural(e, "error"), plural(w, "warning"))
}

fn json_diag(d: &Diagnostic, sources: &SourceMap) -> Value {
    let primary = d.primary_span();
    let r = primary.and_then(|s| region(sources, s));
    json!({
        "code": d.code.id(),
        "name": d.code.info().name,
        "severity": severity_word(d.severity()),
        "message": d.message,
        "file": path_of(sources, primary),
        "line": r.map(|r| r.line),
        "column": r.map(|r| r.column),
        "end_line": r.map(|r| r.end_line),
        "end_column": r.map(|r| r.end_column),
        "labels": d.labels.iter().map(|l| {
            let r = region(sources, l.span);
            json!({
                "file": path_of(sources, Some(l.span)),
                "line": r.map(|r| r.line),
                "column": r.map(|r| r.column),
                "end_line": r.map(|r| r.end_line),
                "end_column": r.map(|r| r.end_column),
                "message": l.message,
                "primary": l.primary,
            })
        }).collect::<Vec<_>>(),
        "help": d.help,
        "notes": d.notes,
    })
}

/// A JSON document: `{"diagnostics": [...], "errors": N, "warnings": N}`.
pub fn json(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity() == Severity::Error)
        .count();
    let doc = json!({
        "diagnostics": diags.iter().map(|d| json_diag(d, sources)).collect::<Vec<_>>(),
        "errors": errors,
        "warnings": diags.len() - errors,
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// GitHub Actions workflow commands (`::error file=...,line=...::message`).
pub fn github(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let esc_data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let esc_prop = |s: &str| esc_data(s).replace(':', "%3A").replace(',', "%2C");
    let mut out = String::new();
    for d in diags {
        let primary = d.primary_span();
        let mut props = Vec::new();
        if let Some(p) = primary {
            props.push(format!("file={}", esc_prop(&path_of(sources, Some(p)))));
            if let Some(r) = region(sources, p) {
                props.push(format!("line={}", r.line));
                props.push(format!("col={}", r.column));
                props.push(format!("endLine={}", r.end_line));
                props.push(format!("endColumn={}", r.end_column));
            }
        }
        props.push(format!(
            "title={}",
            esc_prop(&format!("{} {}", d.code, d.code.info().name))
        ));
        let mut msg = d.message.clone();
        if let Some(h) = &d.help {
            msg.push_str(&format!("\nhelp: {h}"));
        }
        out.push_str(&format!(
            "::{} {}::{}\n",
            severity_word(d.severity()),
            props.join(","),
            esc_data(&msg)
        ));
    }
    out
}

/// A SARIF 2.1.0 log, for code-scanning dashboards.
pub fn sarif(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut used: Vec<Code> = diags.iter().map(|d| d.code).collect();
    used.sort();
    used.dedup();
    let rules: Vec<Value> = used
        .iter()
        .map(|c| {
            let info = c.info();
            json!({
                "id": info.id,
                "name": info.name,
                "shortDescription": { "text": info.summary },
                "fullDescription": { "text": info.explanation },
                "defaultConfiguration": { "level": sarif_level(c.severity()) },
            })
        })
        .collect();
    let results: Vec<Value> = diags
        .iter()
        .map(|d| {
            let locations: Vec<Value> = d
                .primary_span()
                .into_iter()
                .filter_map(|s| {
                    let r = region(sources, s)?;
                    Some(json!({
                        "physicalLocation": {
                            "artifactLocation": { "uri": path_of(sources, Some(s)) },
                            "region": {
                                "startLine": r.line, "startColumn": r.column,
                                "endLine": r.end_line, "endColumn": r.end_column,
                            }
                        }
                    }))
                })
                .collect();
            let mut text = d.message.clone();
            if let Some(h) = &d.help {
                text.push_str(&format!(" (help: {h})"));
            }
            json!({
                "ruleId": d.code.id(),
                "ruleIndex": used.iter().position(|c| *c == d.code),
                "level": sarif_level(d.severity()),
                "message": { "text": text },
                "locations": locations,
            })
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "mailflow",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/mailflow/mailflow",
                "rules": rules,
            }},
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}
