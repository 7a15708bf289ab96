//! Findings about a rule set. The library only builds [`Diagnostic`] values; rendering them
//! for people (ariadne) or machines (JSON, GitHub annotations, SARIF) lives in [`render`] and
//! is called by the CLI alone.

pub mod codes;
pub mod render;

pub use codes::{Code, CodeInfo, Severity};

use crate::source::Span;
use serde::Serialize;

/// One finding: a stable code, a lowercase message, labelled spans and help.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// The registry code; it decides the severity.
    pub code: Code,
    /// One lowercase line, user input in backticks, no final period.
    pub message: String,
    /// Where it is; the first primary label is the main location.
    pub labels: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
    /// Extra context.
    pub notes: Vec<String>,
}

/// A span with what it shows.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    /// The text pointed at.
    pub span: Span,
    /// What the text is ("this rule can never be reached").
    pub message: String,
    /// The main location (others give context).
    pub primary: bool,
}

impl Diagnostic {
    /// A diagnostic with no labels yet.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: None,
            notes: Vec::new(),
        }
    }

    /// Adds the main location.
    pub fn primary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// Adds a secondary location.
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    /// Sets the help text.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The severity the code implies.
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// The main location, if any.
    pub fn primary_span(&self) -> Option<Span> {
        self.primary_label()
            .and_then(|i| self.labels.get(i))
            .map(|l| l.span)
    }

    /// The index of the label the finding is placed at: the first primary one, else the
    /// first.
    pub fn primary_label(&self) -> Option<usize> {
        self.labels
            .iter()
            .position(|l| l.primary)
            .or((!self.labels.is_empty()).then_some(0))
    }
}

/// How many findings of one code in one file are listed: a file of 100,000 broken lines
/// would otherwise render to tens of megabytes (and SARIF to far more) from a file of a few
/// hundred kilobytes.
pub const MAX_SAME_FINDINGS: usize = 100;

/// Keeps, in order, the first [`MAX_SAME_FINDINGS`] findings of each code in each file; the
/// last one kept notes how many more there were.
pub fn cap_repeats(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    use std::collections::HashMap;
    let key = |d: &Diagnostic| (d.code, d.primary_span().map(|s| s.file));
    let mut total: HashMap<_, usize> = HashMap::new();
    for d in &diags {
        *total.entry(key(d)).or_default() += 1;
    }
    let mut kept: HashMap<_, usize> = HashMap::new();
    let mut out = Vec::with_capacity(diags.len().min(total.len() * MAX_SAME_FINDINGS));
    for mut d in diags {
        let k = key(&d);
        let n = kept.entry(k).or_default();
        *n += 1;
        if *n > MAX_SAME_FINDINGS {
            continue;
        }
        let all = total.get(&k).copied().unwrap_or(0);
        if *n == MAX_SAME_FINDINGS && all > MAX_SAME_FINDINGS {
            d.notes.push(format!(
                "{} more {} findings in this file are not listed",
                all - MAX_SAME_FINDINGS,
                d.code
            ));
        }
        out.push(d);
    }
    out
}

/// Suggests the candidate closest to `word` (for "did you mean").
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1) && *d < word.len().min(c.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_capped_per_code_and_file() {
        use crate::source::{FileId, Span};
        let d = |code, file| Diagnostic::new(code, "x").primary(Span::new(FileId(file), 0, 1), "x");
        let mut diags: Vec<Diagnostic> = (0..250).map(|_| d(Code::E001, 0)).collect();
        diags.extend((0..5).map(|_| d(Code::E001, 1)));
        diags.push(d(Code::E002, 0));
        let capped = cap_repeats(diags);
        assert_eq!(capped.len(), MAX_SAME_FINDINGS + 5 + 1);
        let last = &capped[MAX_SAME_FINDINGS - 1];
        assert_eq!(
            last.notes,
            ["150 more E001 findings in this file are not listed"]
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let names = ["address-space", "smart-host", "tls"];
        assert_eq!(did_you_mean("adress-space", names), Some("address-space"));
        assert_eq!(did_you_mean("banana", names), None);
    }
}
