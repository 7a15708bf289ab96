//! `mailflow diff`'s report for people and for a pull request: the summary first (how many
//! messages, how many change, by kind), then each change with the trace lines that explain
//! it.

use mailflow::diff::{Diff, describe};
use std::fmt::Write;

fn stage(s: &mailflow::eval::Step) -> String {
    serde_json::to_value(s.stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn summary(d: &Diff) -> Vec<String> {
    d.by_kind
        .iter()
        .map(|(k, n)| format!("{n} {}", k.describe()))
        .collect()
}

/// For a terminal.
pub(super) fn human(d: &Diff, (old, new): (&str, &str)) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{old} -> {new}");
    let _ = writeln!(
        out,
        "{} messages, {} treated differently",
        d.messages,
        d.changes.len()
    );
    for s in summary(d) {
        let _ = writeln!(out, "  {s}");
    }
    for c in &d.changes {
        let _ = writeln!(out, "\n{}", c.name);
        for l in describe(c) {
            let _ = writeln!(out, "  {l}");
        }
        for s in &c.trace_removed {
            let _ = writeln!(out, "  - [{}] {}", stage(s), s.text);
        }
        for s in &c.trace_added {
            let _ = writeln!(out, "  + [{}] {}", stage(s), s.text);
        }
    }
    out
}

/// Markdown text to a table cell or list item: no table breaks, no HTML, no code spans.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('<', "&lt;").replace('`', "'")
}

/// For a pull request comment.
pub(super) fn markdown(d: &Diff, (old, new): (&str, &str)) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### mailflow diff\n");
    let _ = writeln!(out, "`{}` → `{}`\n", md(old), md(new));
    if d.changes.is_empty() {
        let _ = writeln!(
            out,
            "{} messages evaluated: **none is treated differently**.",
            d.messages
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{} messages evaluated: **{} treated differently**.\n",
        d.messages,
        d.changes.len()
    );
    let _ = writeln!(out, "| what changes | messages |\n|---|---:|");
    for (k, n) in &d.by_kind {
        let _ = writeln!(out, "| {} | {n} |", k.describe());
    }
    for c in &d.changes {
        let _ = writeln!(out, "\n<details><summary>{}</summary>\n", md(&c.name));
        for l in describe(c) {
            let _ = writeln!(out, "- {}", md(&l));
        }
        if !c.trace_removed.is_empty() || !c.trace_added.is_empty() {
            let _ = writeln!(out, "\n```diff");
            for s in &c.trace_removed {
                let _ = writeln!(out, "- [{}] {}", stage(s), s.text.replace("```", "'''"));
            }
            for s in &c.trace_added {
                let _ = writeln!(out, "+ [{}] {}", stage(s), s.text.replace("```", "'''"));
            }
            let _ = writeln!(out, "```");
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}
