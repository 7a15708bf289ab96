//! Lints of transport rules: rules that can never run, never match, or delete everything.

use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Action, Predicate, RuleMode, RuleSet, TextOp, TransportRule};

pub(super) fn check(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    unreachable_rules(set, out);
    for rule in &set.rules {
        never_matches(rule, out);
        delete_without_condition(rule, out);
        contains_bare_domain(rule, out);
    }
}

/// Whether the rule matches every message and ends rule processing.
fn stops_everything(rule: &TransportRule) -> bool {
    !rule.partial
        && rule.mode == RuleMode::Enforce
        && rule.conditions.is_empty()
        && rule.exceptions.is_empty()
        && rule.actions.iter().any(|a| a.value.stops_processing())
}

/// W010 rule-unreachable.
///
/// What it does: flags every rule that runs after a rule with no conditions and no exceptions
/// whose actions end rule processing (`stop`, `delete`, `reject`, `quarantine`, `disconnect`).
///
/// Why is this bad: that earlier rule matches every message and ends processing, so the later
/// rules are dead text that an administrator will believe is protecting them.
///
/// Example: `rule "Drop" { priority 0; delete }` followed by `rule "Tag" { priority 1; ... }`.
///
/// Use instead: give the earlier rule a condition, or give it the lowest priority.
fn unreachable_rules(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    let Some(pos) = set.rules.iter().position(stops_everything) else {
        return;
    };
    let Some(blocker) = set.rules.get(pos) else {
        return;
    };
    for rule in set.rules.iter().skip(pos + 1) {
        out.push(
            Diagnostic::new(
                Code::W010,
                format!("rule `{}` can never run", rule.name.value),
            )
            .primary(rule.name.span, "this rule is never reached")
            .secondary(
                blocker.name.span,
                "this earlier rule matches every message and stops processing",
            )
            .help(format!(
                "give `{}` a condition, or move it after the rules it hides",
                blocker.name.value
            )),
        );
    }
}

/// W013 contains-bare-domain.
///
/// What it does: flags a `recipient` or `sender` condition or exception that tests a domain
/// (`example.com`, `@example.com`, `.example.com`) with `contains` or `contains-words`.
///
/// Why is this bad: the word is found anywhere in the address, so look-alikes match too:
/// `victim@example.com.evil.example`, `example.com@evil.example`, `"example.com"@evil.example`.
/// A rule that lets mail through on such a word lets those through.
///
/// Example: `if recipient contains "myexchlab.com"` (seed 002).
///
/// Use instead: `if recipient domain-is myexchlab.com`, which compares the address's domain
/// (the domain and its subdomains).
fn contains_bare_domain(rule: &TransportRule, out: &mut Vec<Diagnostic>) {
    let tests = rule.conditions.iter().chain(&rule.exceptions);
    for p in tests {
        let (field, m) = match &p.value {
            Predicate::RecipientAddress(m) => ("recipient", m),
            Predicate::SenderAddress(m) => ("sender", m),
            _ => continue,
        };
        if !matches!(m.op, TextOp::Contains | TextOp::ContainsWords) {
            continue;
        }
        let domains: Vec<&str> = m.values.iter().filter_map(|v| bare_domain(v)).collect();
        let Some(first) = domains.first() else {
            continue;
        };
        out.push(
            Diagnostic::new(
                Code::W013,
                format!("`{first}` tested with `{}` also matches look-alike addresses", m.op.keyword()),
            )
            .primary(
                p.span,
                format!("also true for `victim@{first}.evil.example` and `{first}@evil.example`"),
            )
            .help(format!(
                "compare the domain itself: `{field} domain-is {}` matches {} and {} subdomains only",
                domains.join(", "),
                if domains.len() == 1 { "that domain" } else { "those domains" },
                if domains.len() == 1 { "its" } else { "their" },
            )),
        );
    }
}

/// The domain a word names, when the word is a domain written bare or after `@` or `.`.
fn bare_domain(word: &str) -> Option<&str> {
    let d = word.strip_prefix(['@', '.']).unwrap_or(word);
    let looks_like = d.contains('.')
        && !d.starts_with('.')
        && !d.ends_with('.')
        && d.chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
    (looks_like && crate::resolve::domain_problem(&d.to_ascii_lowercase()).is_none()).then_some(d)
}

/// W011 rule-never-matches.
///
/// What it does: flags rules whose ANDed conditions exclude each other (`sender inside` and
/// `sender outside`; two `connector` conditions naming different connectors; two `client-ip`
/// conditions whose ranges do not meet; two `originating-org` conditions with no organization
/// in common), and rules with an exception identical to one of their conditions.
///
/// Why is this bad: the rule is dead, although it reads as if it protects something.
///
/// Example: `if sender inside` and `if sender outside` in one rule.
///
/// Use instead: remove the contradictory condition, or split the rule in two.
fn never_matches(rule: &TransportRule, out: &mut Vec<Diagnostic>) {
    if rule.partial {
        return;
    }
    let conds = &rule.conditions;
    for (i, a) in conds.iter().enumerate() {
        for b in conds.iter().skip(i + 1) {
            if let Some(why) = exclusive(&a.value, &b.value) {
                out.push(
                    Diagnostic::new(
                        Code::W011,
                        format!("rule `{}` can never match: {why}", rule.name.value),
                    )
                    .primary(b.span, "this condition")
                    .secondary(a.span, "excludes this one")
                    .help("conditions are ANDed: remove one, or split the rule"),
                );
                return;
            }
        }
    }
    for e in &rule.exceptions {
        if let Some(c) = conds.iter().find(|c| c.value == e.value) {
            out.push(
                Diagnostic::new(
                    Code::W011,
                    format!(
                        "rule `{}` can never act: an exception repeats a condition",
                        rule.name.value
                    ),
                )
                .primary(e.span, "this exception cancels every match")
                .secondary(c.span, "of this condition")
                .help("remove the exception, or change it to what should be excluded"),
            );
            return;
        }
    }
}

fn exclusive(a: &Predicate, b: &Predicate) -> Option<&'static str> {
    match (a, b) {
        (Predicate::SenderScope(x), Predicate::SenderScope(y)) if x != y => {
            Some("a sender cannot be both inside and outside the organization")
        }
        (Predicate::Connector(x), Predicate::Connector(y)) if !x.iter().any(|n| y.contains(n)) => {
            Some("a message arrives on one connector only")
        }
        (Predicate::ClientIp(x), Predicate::ClientIp(y))
            if !x.iter().any(|r| y.iter().any(|s| r.overlaps(s))) =>
        {
            Some("the client ip ranges do not meet")
        }
        (Predicate::OriginatingOrg(x), Predicate::OriginatingOrg(y))
            if !x.iter().any(|o| y.contains(o)) =>
        {
            Some("a message has one originating organization")
        }
        _ => None,
    }
}

/// W012 delete-without-condition.
///
/// What it does: flags an enforced rule with no condition that deletes the message.
///
/// Why is this bad: it silently drops every message that reaches it. As the last rule of a
/// chain of `stop` rules (seed 002) that is the point, but the rules before it must then let
/// through everything legitimate, so it deserves a second look.
///
/// Example: `rule "Drop" { delete }`.
///
/// Use instead: add a condition such as `if sender outside`.
fn delete_without_condition(rule: &TransportRule, out: &mut Vec<Diagnostic>) {
    if rule.partial || rule.mode != RuleMode::Enforce || !rule.conditions.is_empty() {
        return;
    }
    if let Some(del) = rule.actions.iter().find(|a| a.value == Action::Delete) {
        out.push(
            Diagnostic::new(
                Code::W012,
                format!("rule `{}` deletes every message that reaches it", rule.name.value),
            )
            .primary(del.span, "deletes silently")
            .secondary(rule.name.span, "this rule has no condition")
            .help("add a condition such as `if sender outside`, or make sure earlier rules stop everything that must pass"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(src: &str) -> Vec<Code> {
        let report = crate::check::check_text("t.mailflow", src);
        report.diagnostics.iter().map(|d| d.code).collect()
    }

    #[test]
    fn unconditional_delete_hides_later_rules() {
        let codes = lint(
            "rule \"a\" { priority 0; delete }\nrule \"b\" { priority 1; stop }\nrule \"c\" { stop }\n",
        );
        assert_eq!(codes.iter().filter(|c| **c == Code::W010).count(), 2);
        assert!(codes.contains(&Code::W012));
    }

    #[test]
    fn conditional_rules_are_reachable() {
        let codes = lint(
            "rule \"a\" { priority 0; if sender outside; delete }\nrule \"b\" { priority 1; stop }\n",
        );
        assert!(!codes.contains(&Code::W010));
        assert!(!codes.contains(&Code::W012));
    }

    #[test]
    fn contradictions() {
        assert!(
            lint("rule \"a\" { if sender inside; if sender outside; stop }\n")
                .contains(&Code::W011)
        );
        assert!(
            lint(
                "rule \"a\" { if client-ip in 10.0.0.0/8; if client-ip in 192.168.0.0/16; stop }\n"
            )
            .contains(&Code::W011)
        );
        assert!(
            lint("rule \"a\" { if subject contains \"x\"; except subject contains \"x\"; stop }\n")
                .contains(&Code::W011)
        );
        assert!(
            !lint("rule \"a\" { if client-ip in 10.0.0.0/8; if client-ip in 10.1.0.0/16; stop }\n")
                .contains(&Code::W011)
        );
        assert!(
            !lint(
                "rule \"a\" { if subject contains \"x\"; except subject contains \"y\"; stop }\n"
            )
            .contains(&Code::W011)
        );
    }

    #[test]
    fn audit_rules_do_not_hide_others() {
        let codes = lint(
            "rule \"a\" { priority 0; mode audit; delete }\nrule \"b\" { priority 1; stop }\n",
        );
        assert!(!codes.contains(&Code::W010));
    }
}
