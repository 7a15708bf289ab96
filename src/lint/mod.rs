//! Step three: judgement across the whole rule set. Each submodule owns the lints of one kind
//! of object and documents, per lint, what it flags, why it matters and what to write instead
//! (the same text `mailflow explain` prints from the registry). Lints never change the rule
//! set; they only report.

mod authentication;
mod connectors;
mod domains;
mod recipients;
mod rewrites;
mod rules;

use crate::diagnostic::Diagnostic;
use crate::model::RuleSet;

/// Runs every lint over a resolved rule set.
pub fn lint(set: &RuleSet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    rewrites::check(set, &mut out);
    rules::check(set, &mut out);
    connectors::check(set, &mut out);
    domains::check(set, &mut out);
    recipients::check(set, &mut out);
    authentication::check(set, &mut out);
    out
}
