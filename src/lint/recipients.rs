//! Lints of recipients: tombstones whose external address another object claims (W030),
//! groups that contain themselves (W031), addresses in no accepted domain (W032).
//!
//! They look recipients up the way the relay's directory does (`compile::directory`): only
//! live recipients claim names and addresses, the first one defined winning. Every lookup is
//! by hash, so ten thousands of recipients cost a few lookups each.

use crate::diagnostic::{Code, Diagnostic, did_you_mean};
use crate::model::{DomainPattern, Member, Recipient, RecipientKind, RuleSet};
use crate::source::Span;
use std::collections::{HashMap, HashSet};

pub(super) fn check(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    deleted_shadow(set, out);
    group_cycles(set, out);
    outside_accepted_domains(set, out);
}

/// `domain`, then each parent: `a.b.com`, `b.com`, `com`.
fn suffixes(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |s| {
        s.split_once('.').map(|(_, parent)| parent)
    })
}

fn kind_name(r: &Recipient) -> &'static str {
    match r.kind {
        RecipientKind::Contact => "contact",
        RecipientKind::Group => "group",
        RecipientKind::MailUser => "mail user",
    }
}

/// How many places a diagnostic points at before it only counts the rest.
const MAX_LABELS: usize = 5;

/// W030 deleted-recipient-shadow.
///
/// What it does: flags a `deleted` contact or mail user whose `external` address a live
/// recipient claims: as one of its `address`es, as its own `external` address, or as a member
/// address of a group.
///
/// Why is this bad: the tombstone's mail used to go to that external address, and a sender
/// typing it expects it to go there still (seed 001). Another object claiming it means mail to
/// it is delivered elsewhere, refused, or expanded to a group instead.
///
/// Example: `deleted mail-user "Blog Test" { address blogtest@example.com; external
/// user@partner.example }` with `contact "Old alias" { address user@partner.example; external
/// other@partner.example }`.
///
/// Use instead: remove the address from the other object, or purge the tombstone.
fn deleted_shadow(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    let wanted: HashSet<String> = set
        .recipients
        .iter()
        .filter(|r| r.deleted)
        .filter_map(|r| r.external.as_ref().map(|x| x.value.key()))
        .collect();
    if wanted.is_empty() {
        return;
    }
    // Every claim on a tombstone's external address, in definition order.
    let mut claims: HashMap<String, Vec<(Span, String)>> = HashMap::new();
    let mut claim = |key: String, span: Span, what: String| {
        if wanted.contains(&key) {
            claims.entry(key).or_default().push((span, what));
        }
    };
    for r in set.recipients.iter().filter(|r| !r.deleted) {
        let who = format!("{} `{}`", kind_name(r), r.name.value);
        for a in &r.addresses {
            claim(a.value.key(), a.span, format!("an address of {who}"));
        }
        if let Some(x) = &r.external {
            if r.kind != RecipientKind::Group {
                claim(x.value.key(), x.span, format!("where {who} forwards to"));
            }
        }
        if r.kind == RecipientKind::Group {
            for m in &r.members {
                if let Member::Address(a) = &m.value {
                    claim(a.key(), m.span, format!("a member of {who}"));
                }
            }
        }
    }
    for t in set.recipients.iter().filter(|r| r.deleted) {
        let Some(x) = &t.external else {
            continue;
        };
        let Some(found) = claims.get(&x.value.key()) else {
            continue;
        };
        let Some((_, first)) = found.first() else {
            continue;
        };
        let mut d = Diagnostic::new(
            Code::W030,
            format!(
                "deleted {} `{}` forwarded to `{}`, which is now {first}",
                kind_name(t),
                t.name.value,
                x.value
            ),
        )
        .primary(x.span, "the deleted recipient's mail went here");
        for (span, what) in found.iter().take(MAX_LABELS) {
            d = d.secondary(*span, format!("claimed here, as {what}"));
        }
        if found.len() > MAX_LABELS {
            d = d.note(format!("claimed {} more times", found.len() - MAX_LABELS));
        }
        out.push(d.help(format!(
            "remove `{}` from the other object, or purge the tombstone `{}`",
            x.value, t.name.value
        )));
    }
}

/// W031 group-contains-itself.
///
/// What it does: follows the members of every live group (by name, or by the address of a
/// group) and flags each membership cycle once, naming the groups along it.
///
/// Why is this bad: the relay expands each group once per message, so mail does not loop, but
/// a group that contains itself is never what was meant: someone added the wrong group, and
/// its real members may be missing.
///
/// Example: `group "A" { address a@example.com; members "B" }` with
/// `group "B" { address b@example.com; members "A" }`.
///
/// Use instead: remove the member that closes the cycle.
fn group_cycles(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;
    let rs = &set.recipients;
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut by_address: HashMap<String, usize> = HashMap::new();
    for (i, r) in rs.iter().enumerate().filter(|(_, r)| !r.deleted) {
        by_name.entry(r.name.value.as_str()).or_insert(i);
        for a in &r.addresses {
            by_address.entry(a.value.key()).or_insert(i);
        }
    }
    // The live group a member is, if it is one.
    let target = |m: &Member| -> Option<usize> {
        let t = match m {
            Member::Name(n) => by_name.get(n.as_str()).copied(),
            Member::Address(a) => by_address.get(&a.key()).copied(),
        }?;
        rs.get(t)
            .is_some_and(|r| r.kind == RecipientKind::Group)
            .then_some(t)
    };
    let mut state = vec![NEW; rs.len()];
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    // Depth-first, without recursion (nesting may be deep): each frame is a group and the
    // index of its next member to follow; on a frame below the top, that index minus one is
    // the member leading to the frame above.
    let mut path: Vec<(usize, usize)> = Vec::new();
    for (root, r) in rs.iter().enumerate() {
        if r.deleted || r.kind != RecipientKind::Group || state.get(root) != Some(&NEW) {
            continue;
        }
        path.push((root, 0));
        if let Some(s) = state.get_mut(root) {
            *s = ON_PATH;
        }
        while let Some(top) = path.last_mut() {
            let (g, k) = *top;
            let Some(m) = rs.get(g).and_then(|r| r.members.get(k)) else {
                if let Some(s) = state.get_mut(g) {
                    *s = DONE;
                }
                path.pop();
                continue;
            };
            top.1 += 1;
            let Some(t) = target(&m.value) else {
                continue;
            };
            match state.get(t).copied() {
                Some(NEW) => {
                    if let Some(s) = state.get_mut(t) {
                        *s = ON_PATH;
                    }
                    path.push((t, 0));
                }
                Some(ON_PATH) => {
                    let from = path.iter().position(|&(p, _)| p == t).unwrap_or(0);
                    let cycle = path.get(from..).unwrap_or_default();
                    if reported.insert(canonical(cycle)) {
                        report_cycle(rs, cycle, m.span, out);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The groups of a cycle, starting from the first defined, to recognise it again.
fn canonical(cycle: &[(usize, usize)]) -> Vec<usize> {
    let groups: Vec<usize> = cycle.iter().map(|&(g, _)| g).collect();
    let lowest = groups
        .iter()
        .enumerate()
        .min_by_key(|&(_, &g)| g)
        .map_or(0, |(k, _)| k);
    groups
        .iter()
        .cycle()
        .skip(lowest)
        .take(groups.len())
        .copied()
        .collect()
}

/// Reports the cycle `cycle` (frames from the group met again to the group whose member
/// `closing` leads back to it).
fn report_cycle(
    rs: &[Recipient],
    cycle: &[(usize, usize)],
    closing: Span,
    out: &mut Vec<Diagnostic>,
) {
    let name = |g: usize| rs.get(g).map_or("", |r| r.name.value.as_str());
    let Some(&(start, _)) = cycle.first() else {
        return;
    };
    let mut names: Vec<String> = cycle
        .iter()
        .map(|&(g, _)| format!("`{}`", name(g)))
        .collect();
    names.push(format!("`{}`", name(start)));
    let last = cycle.last().map_or(start, |&(g, _)| g);
    let mut d = Diagnostic::new(
        Code::W031,
        format!(
            "group `{}` contains itself: {}",
            name(start),
            names.join(" → ")
        ),
    )
    .primary(
        closing,
        format!(
            "this makes `{}` a member of `{}` again",
            name(start),
            name(last)
        ),
    );
    // The members leading from each group to the next, before the closing one.
    for pair in cycle.windows(2).take(MAX_LABELS) {
        if let [(g, k), (h, _)] = *pair {
            let span = rs
                .get(g)
                .and_then(|r| r.members.get(k.saturating_sub(1)))
                .map(|m| m.span);
            if let Some(span) = span {
                d = d.secondary(span, format!("`{}` is a member of `{}`", name(h), name(g)));
            }
        }
    }
    out.push(d.help("remove the member that closes the cycle"));
}

/// W032 recipient-outside-accepted-domains.
///
/// What it does: when the rule set declares accepted domains, flags each address of a live
/// recipient whose domain none of them covers (exactly, or as `*.domain`).
///
/// Why is this bad: the relay only looks up recipients in accepted domains; mail to this
/// address is treated as mail for the outside world and never reaches the recipient.
///
/// Example: `accepted-domain example.com` with `contact "Officers" { address
/// officers@example.org; external officers@cloud.example }`.
///
/// Use instead: add `accepted-domain example.org`, or fix the address.
fn outside_accepted_domains(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    if set.accepted_domains.is_empty() {
        return;
    }
    let mut exact: HashSet<&str> = HashSet::new();
    let mut wildcard: HashSet<&str> = HashSet::new();
    for a in &set.accepted_domains {
        match &a.domain.value {
            DomainPattern::Exact(d) => exact.insert(d.as_str()),
            DomainPattern::Wildcard(d) => wildcard.insert(d.as_str()),
        };
    }
    let accepted = |d: &str| exact.contains(d) || suffixes(d).any(|s| wildcard.contains(s));
    for r in set.recipients.iter().filter(|r| !r.deleted) {
        for a in &r.addresses {
            if accepted(&a.value.domain) {
                continue;
            }
            let domain = &a.value.domain;
            let help = match did_you_mean(domain, exact.iter().chain(wildcard.iter()).copied()) {
                Some(close) => format!(
                    "did you mean `{}@{close}`? otherwise add `accepted-domain {domain}`",
                    a.value.local
                ),
                None => format!("add `accepted-domain {domain}`, or fix the address"),
            };
            out.push(
                Diagnostic::new(
                    Code::W032,
                    format!(
                        "`{}` of {} `{}` is in no accepted domain",
                        a.value,
                        kind_name(r),
                        r.name.value
                    ),
                )
                .primary(
                    a.span,
                    format!(
                        "`{domain}` is not an accepted domain, so this address is never looked up"
                    ),
                )
                .help(help),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(src: &str) -> Vec<Diagnostic> {
        let ws = crate::load::Workspace::from_text("t.mailflow", src);
        assert!(ws.diagnostics.is_empty(), "{:#?}", ws.diagnostics);
        let set = &ws.rule_sets[0];
        let (rules, diags) = crate::resolve::resolve(&ws.sources, &set.items, &set.broken);
        assert!(diags.is_empty(), "{diags:#?}");
        let mut out = Vec::new();
        check(&rules, &mut out);
        out
    }

    fn codes(src: &str) -> Vec<Code> {
        lint(src).iter().map(|d| d.code).collect()
    }

    const TOMBSTONE: &str = "deleted mail-user \"Blog Test\" { address blogtest@example.com; external user@partner.example }\n";

    #[test]
    fn a_claimed_tombstone_address_is_reported() {
        for claim in [
            "contact \"Old alias\" { address User@partner.example; external other@partner.example }\n",
            "mail-user \"New\" { address new@example.com; external user@PARTNER.example }\n",
            "group \"G\" { address g@example.com; members user@partner.example }\n",
        ] {
            let d = lint(&format!("{TOMBSTONE}{claim}"));
            assert_eq!(
                d.iter().map(|d| d.code).collect::<Vec<_>>(),
                [Code::W030],
                "{claim}"
            );
            assert!(d[0].labels[0].primary);
            assert_eq!(d[0].labels.len(), 2);
        }
        // Claimed twice: one report, two places.
        let src = format!(
            "{TOMBSTONE}contact \"A\" {{ address user@partner.example; external a@cloud.example }}\n\
             group \"G\" {{ address g@example.com; members user@partner.example }}\n"
        );
        let d = lint(&src);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].labels.len(), 3);
    }

    #[test]
    fn unclaimed_or_dead_claims_are_fine() {
        assert_eq!(codes(TOMBSTONE), []);
        // Another tombstone does not claim anything.
        let src = format!(
            "{TOMBSTONE}deleted contact \"Old\" {{ address user@partner.example; external x@partner.example }}\n"
        );
        assert_eq!(codes(&src), []);
        // The tombstone's own addresses may be reused: that is not its external address.
        let src = format!(
            "{TOMBSTONE}mail-user \"Blog\" {{ address blogtest@example.com; external blog@partner.example }}\n"
        );
        assert_eq!(codes(&src), []);
    }

    #[test]
    fn group_cycles_are_reported_once() {
        let src = "group \"A\" { address a@example.com; members \"B\" }\ngroup \"B\" { address b@example.com; members \"A\" }\n";
        let d = lint(src);
        assert_eq!(d.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::W031]);
        assert!(d[0].message.contains("`A` → `B` → `A`"), "{}", d[0].message);
        // The primary label is on `"A"` in B's members.
        let b_members = src.rfind("\"A\"").unwrap() as u32;
        assert_eq!(d[0].labels[0].span.start, b_members);
        // Itself, by address.
        let d = lint(
            "group \"Self\" { address self@example.com; members x@example.org, SELF@example.com }\n",
        );
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("`Self` → `Self`"), "{}", d[0].message);
        // The same cycle through two member references is one cycle; two cycles are two.
        let src = "group \"A\" { address a@example.com; members \"B\" }\n\
                   group \"B\" { address b@example.com; members \"A\", a@example.com, \"C\" }\n\
                   group \"C\" { address c@example.com; members \"C\" }\n";
        assert_eq!(codes(src), [Code::W031, Code::W031]);
    }

    #[test]
    fn nested_groups_without_cycles_are_fine() {
        let src = "contact \"O\" { address o@example.com; external o@cloud.example }\n\
                   group \"Inner\" { address inner@example.com; members \"O\" }\n\
                   group \"Outer\" { address outer@example.com; members \"Inner\", inner@example.com, \"O\" }\n\
                   group \"Top\" { address top@example.com; members \"Outer\", \"Inner\" }\n";
        assert_eq!(codes(src), []);
        // A deleted group is not expanded.
        let src = "group \"A\" { address a@example.com; members b@example.com }\n\
                   deleted group \"B\" { address b@example.com; members \"A\" }\n";
        assert_eq!(codes(src), []);
    }

    #[test]
    fn addresses_outside_accepted_domains() {
        let recipients = "contact \"Officers\" { address officers@example.org, o@sub.example.net; external officers@cloud.example }\n";
        // No accepted domain at all: nothing to compare with.
        assert_eq!(codes(recipients), []);
        let d = lint(&format!("accepted-domain example.com\n{recipients}"));
        assert_eq!(
            d.iter().map(|d| d.code).collect::<Vec<_>>(),
            [Code::W032, Code::W032]
        );
        assert!(
            d[0].help
                .as_deref()
                .unwrap_or("")
                .contains("officers@example.com")
        );
        let src = format!(
            "accepted-domain example.org\naccepted-domain *.example.net internal-relay\n{recipients}"
        );
        assert_eq!(codes(&src), []);
        // External addresses and tombstones are not looked up.
        let src = format!("accepted-domain example.com\ndeleted {recipients}");
        assert_eq!(codes(&src), []);
    }

    #[test]
    fn many_recipients() {
        let mut src = String::from("accepted-domain example.com\n");
        for i in 0..5_000 {
            src.push_str(&format!(
                "contact \"C{i}\" {{ address c{i}@example.com; external c{i}@cloud.example }}\n\
                 group \"G{i}\" {{ address g{i}@example.com; members \"C{i}\", \"G{}\" }}\n",
                i + 1
            ));
        }
        src.push_str("group \"G5000\" { address g5000@example.com; members \"G0\" }\n");
        let d = lint(&src);
        assert_eq!(d.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::W031]);
        assert!(d[0].message.contains("`G0` → `G1`"));
    }
}
