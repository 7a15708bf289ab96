//! Step three: judgement across the whole rule set. Each submodule owns the lints of one kind
//! of object and documents, per lint, what it flags, why it matters and what to write instead
//! (the same text `mailflow explain` prints from the registry). Lints never change the rule
//! set; they only report. Only the certificate lints look outside it: they read the
//! certificate files, judged at the time [`LintOptions`] gives, never the clock's.

mod authentication;
mod certificates;
mod connectors;
mod domains;
mod recipients;
mod rewrites;
mod rules;

use crate::diagnostic::Diagnostic;
use crate::model::RuleSet;

/// What the lints need besides the rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LintOptions {
    /// The time certificates are judged at, seconds since the Unix epoch.
    pub now: i64,
    /// Warn about certificates that expire within this many days; 0 turns the expiry lints
    /// off.
    pub cert_expiry_days: u32,
}

impl LintOptions {
    /// The expiry window when none is given: Let's Encrypt's renewal reminders start at 20
    /// days, and a month leaves time to get a certificate from a slower CA.
    pub const DEFAULT_CERT_EXPIRY_DAYS: u32 = 30;

    /// Judging at `now`, with the default window.
    pub fn at(now: i64) -> LintOptions {
        LintOptions {
            now,
            cert_expiry_days: Self::DEFAULT_CERT_EXPIRY_DAYS,
        }
    }

    /// Judging at the clock's time, with the default window.
    pub fn now() -> LintOptions {
        LintOptions::at(i64::try_from(crate::clock::now_secs()).unwrap_or(i64::MAX))
    }
}

/// Runs every lint over a resolved rule set.
pub fn lint(set: &RuleSet, options: &LintOptions) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    rewrites::check(set, &mut out);
    rules::check(set, &mut out);
    connectors::check(set, &mut out);
    domains::check(set, &mut out);
    recipients::check(set, &mut out);
    authentication::check(set, &mut out);
    certificates::check(set, options, &mut out);
    out
}
