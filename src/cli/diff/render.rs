//! `mailflow diff`'s report for people and for a pull request: the summary first (how many
//! messages, how many change, by kind), then each change with the trace lines that explain
//! it.

use mailflow::diff::{Change, Diff, Outcome};
use std::collections::BTreeSet;
use std::fmt::Write;

fn stage(s: &mailflow::eval::Step) -> String {
    serde_json::to_value(s.stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// What differs between the two outcomes of one message, a line each.
fn lines(c: &Change) -> Vec<String> {
    let (a, b) = (&c.old, &c.new);
    let mut out = Vec::new();
    let rcpts: BTreeSet<&String> = a.recipients.keys().chain(b.recipients.keys()).collect();
    for r in rcpts {
        let (before, after) = (
            a.recipients.get(r).map_or(&[][..], Vec::as_slice),
            b.recipients.get(r).map_or(&[][..], Vec::as_slice),
        );
        if before == after {
            continue;
        }
        let one = |x: &mailflow::diff::Recipient| {
            if x.address == *r {
                x.fate.clone()
            } else {
                format!("as {}: {}", x.address, x.fate)
            }
        };
        match (before, after) {
            ([x], [y]) => out.push(format!("{r}: {} -> {}", one(x), one(y))),
            ([], [y]) => out.push(format!("{r}: now a recipient, {}", one(y))),
            ([x], []) => out.push(format!("{r}: no longer a recipient ({})", one(x))),
            _ => {
                // An expansion: what left it and what joined it.
                for x in before.iter().filter(|x| !after.contains(x)) {
                    out.push(format!("{r}: no longer {}", one(x)));
                }
                for y in after.iter().filter(|y| !before.contains(y)) {
                    out.push(format!("{r}: now {}", one(y)));
                }
            }
        }
    }
    if a.mail_from != b.mail_from {
        out.push(format!("MAIL FROM: {} -> {}", a.mail_from, b.mail_from));
    }
    if a.rules_fired != b.rules_fired {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push(format!(
            "rules fired: {} -> {}",
            list(&a.rules_fired),
            list(&b.rules_fired)
        ));
    }
    for h in a.headers.iter().filter(|h| !b.headers.contains(h)) {
        out.push(format!("header change gone: {h}"));
    }
    for h in b.headers.iter().filter(|h| !a.headers.contains(h)) {
        out.push(format!("header change new: {h}"));
    }
    let attribution = |o: &Outcome| {
        format!(
            "connector {}, {}{}{}",
            o.connector.as_deref().unwrap_or("(none)"),
            o.auth_as,
            o.originating_org
                .as_ref()
                .map_or(String::new(), |org| format!(", organization {org}")),
            if o.disconnect { ", disconnects" } else { "" }
        )
    };
    if attribution(a) != attribution(b) {
        out.push(format!("{} -> {}", attribution(a), attribution(b)));
    }
    out
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
        for l in lines(c) {
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
        for l in lines(c) {
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
