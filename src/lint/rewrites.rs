//! Lints of address rewrite entries: entries that change nothing (W001), disagree (W002),
//! chain (W003) or loop (W004).
//!
//! They judge the entries the way the relay applies them (`compile::rewrite`): the first entry
//! for an internal address, domain or wildcard wins; an address is rewritten once, by the
//! closest entry (its address, else its exact domain, else the wildcard with the longest
//! matching suffix, whose exceptions and their subdomains are left alone); inbound, the
//! bidirectional entries are reversed, the first one for an external address or domain winning.
//! Every question is a hash lookup or a walk up a domain's parent suffixes, never a comparison
//! of all pairs, so a hundred thousand entries cost a few lookups each.

use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Address, RewriteEntry, RewriteFrom, RewriteTo, RuleSet, is_subdomain_or_same};
use rustc_hash::FxHashMap as HashMap;

/// A map with a fast, non-cryptographic hash (rustc's Fx). Rule files are written by
/// administrators, not attackers, and SipHash was half the cost of these lints on 100,000
/// entries.
fn map<K, V>(capacity: usize) -> HashMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, Default::default())
}

pub(super) fn check(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    let keys = Keys::new(&set.rewrites);
    let t = Table::new(&set.rewrites, &keys);
    let mut redundant = Vec::with_capacity(set.rewrites.len());
    for (i, e) in set.rewrites.iter().enumerate() {
        let mut flagged = same_internal(&t, i, e, out);
        if !flagged {
            flagged = covered(&t, i, e, out);
        }
        same_external(&t, i, e, out);
        redundant.push(flagged);
    }
    let next: Vec<Option<usize>> = (0..set.rewrites.len()).map(|i| t.next(i)).collect();
    let on_cycle = loops(&t, &next, out);
    chains(&t, &next, &on_cycle, &redundant, out);
}

/// `domain`, then each parent: `a.b.com`, `b.com`, `com`.
fn suffixes(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |s| {
        s.split_once('.').map(|(_, parent)| parent)
    })
}

/// [`Address::key`] in one allocation.
fn address_key(a: &Address) -> String {
    let mut key = String::with_capacity(a.local.len() + 1 + a.domain.len());
    key.extend(a.local.chars().map(|c| c.to_ascii_lowercase()));
    key.push('@');
    key.push_str(&a.domain);
    key
}

/// The lowercase internal and external address of each entry (empty for domains), made once
/// so that the lookup tables can borrow them.
struct Keys {
    internal: Vec<String>,
    external: Vec<String>,
}

impl Keys {
    fn new(entries: &[RewriteEntry]) -> Self {
        let internal = entries
            .iter()
            .map(|e| match &e.internal.value {
                RewriteFrom::Address(a) => address_key(a),
                RewriteFrom::Domain(_) | RewriteFrom::Wildcard(_) => String::new(),
            })
            .collect();
        let external = entries
            .iter()
            .map(|e| match &e.external.value {
                RewriteTo::Address(a) => address_key(a),
                RewriteTo::Domain(_) => String::new(),
            })
            .collect();
        Keys { internal, external }
    }
}

/// What the closest entry for an address or domain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    /// This entry rewrites it.
    Entry(usize),
    /// The closest wildcard lists it (or a parent of it) as an exception.
    Excepted,
    /// No entry covers it.
    Nothing,
}

/// The entries as the relay's lookup tables, plus what each entry is in them.
struct Table<'a> {
    entries: &'a [RewriteEntry],
    keys: &'a Keys,
    by_address: HashMap<&'a str, usize>,
    by_domain: HashMap<&'a str, usize>,
    by_wildcard: HashMap<&'a str, usize>,
    /// Per entry: the first entry with the same internal side (itself if none came before).
    winner: Vec<usize>,
    /// Per bidirectional entry: the first bidirectional entry with the same external side.
    inbound_winner: Vec<Option<usize>>,
    /// The exceptions of wildcard entries: (entry, domain) to the index in its `exceptions`.
    exceptions: HashMap<(usize, &'a str), usize>,
}

impl<'a> Table<'a> {
    fn new(entries: &'a [RewriteEntry], keys: &'a Keys) -> Self {
        let count = |f: fn(&RewriteEntry) -> bool| entries.iter().filter(|e| f(e)).count();
        let addresses = count(|e| matches!(e.internal.value, RewriteFrom::Address(_)));
        let domains = count(|e| matches!(e.internal.value, RewriteFrom::Domain(_)));
        let wildcards = count(|e| matches!(e.internal.value, RewriteFrom::Wildcard(_)));
        let both_ways = count(|e| !e.outbound_only);
        let mut t = Table {
            entries,
            keys,
            by_address: map(addresses),
            by_domain: map(domains),
            by_wildcard: map(wildcards),
            winner: Vec::with_capacity(entries.len()),
            inbound_winner: Vec::with_capacity(entries.len()),
            exceptions: map(0),
        };
        let mut inbound_address: HashMap<&str, usize> = map(both_ways);
        let mut inbound_domain: HashMap<&str, usize> = map(0);
        let all = entries.iter().zip(keys.internal.iter().zip(&keys.external));
        for (i, (e, (internal_key, external_key))) in all.enumerate() {
            let winner = match &e.internal.value {
                RewriteFrom::Address(_) => *t.by_address.entry(internal_key).or_insert(i),
                RewriteFrom::Domain(d) => *t.by_domain.entry(d).or_insert(i),
                RewriteFrom::Wildcard(p) => *t.by_wildcard.entry(p).or_insert(i),
            };
            t.winner.push(winner);
            let inbound = if e.outbound_only {
                None
            } else {
                match (&e.internal.value, &e.external.value) {
                    (RewriteFrom::Address(_), RewriteTo::Address(_)) => {
                        Some(*inbound_address.entry(external_key).or_insert(i))
                    }
                    (RewriteFrom::Domain(_), RewriteTo::Domain(d)) => {
                        Some(*inbound_domain.entry(d).or_insert(i))
                    }
                    _ => None,
                }
            };
            t.inbound_winner.push(inbound);
            for (k, x) in e.exceptions.iter().enumerate() {
                t.exceptions.entry((i, x.value.as_str())).or_insert(k);
            }
        }
        t
    }

    fn entry(&self, i: usize) -> Option<&'a RewriteEntry> {
        self.entries.get(i)
    }

    /// The exception of wildcard entry `w` that leaves `domain` alone, if any.
    fn exception(&self, w: usize, domain: &str) -> Option<usize> {
        if self.exceptions.is_empty() {
            return None;
        }
        suffixes(domain).find_map(|s| self.exceptions.get(&(w, s)).copied())
    }

    /// The wildcard that applies to `domain` (only its strict parents' wildcards if `strict`).
    fn closest_wildcard(&self, domain: &str, strict: bool) -> Hit {
        if self.by_wildcard.is_empty() {
            return Hit::Nothing;
        }
        for s in suffixes(domain).skip(usize::from(strict)) {
            if let Some(&w) = self.by_wildcard.get(s) {
                return match self.exception(w, domain) {
                    Some(_) => Hit::Excepted,
                    None => Hit::Entry(w),
                };
            }
        }
        Hit::Nothing
    }

    /// The entry that applies to every address of `domain`.
    fn closest_domain(&self, domain: &str) -> Hit {
        match self.by_domain.get(domain) {
            Some(&i) => Hit::Entry(i),
            None => self.closest_wildcard(domain, false),
        }
    }

    /// The entry that applies to an address (`key` is its lowercase form).
    fn closest_address(&self, key: &str, a: &Address) -> Hit {
        match self.by_address.get(key) {
            Some(&i) => Hit::Entry(i),
            None => self.closest_domain(&a.domain),
        }
    }

    /// The entry that would rewrite entry `i`'s result again, if rewriting went on: the
    /// closest entry for its external side, unless that is `i` itself or leaves it unchanged.
    /// Only entries that win their internal side apply, so only they have a next entry.
    fn next(&self, i: usize) -> Option<usize> {
        let e = self.entry(i)?;
        if self.winner.get(i) != Some(&i) {
            return None;
        }
        let hit = match &e.external.value {
            RewriteTo::Address(x) => self.closest_address(self.keys.external.get(i)?, x),
            RewriteTo::Domain(d) => self.closest_domain(d),
        };
        let Hit::Entry(f) = hit else {
            return None;
        };
        (f != i && changes(self.entry(f)?, &e.external.value)).then_some(f)
    }
}

/// Whether entry `f`, applied to an address or domain, changes it.
fn changes(f: &RewriteEntry, input: &RewriteTo) -> bool {
    match (&f.external.value, input) {
        (RewriteTo::Address(x), RewriteTo::Address(a)) => x != a,
        (RewriteTo::Domain(d), RewriteTo::Address(a)) => *d != a.domain,
        (RewriteTo::Domain(d), RewriteTo::Domain(x)) => d != x,
        (RewriteTo::Address(_), RewriteTo::Domain(_)) => false,
    }
}

/// What entry `f` makes of an address or domain it applies to.
fn apply(f: &RewriteEntry, input: &RewriteTo) -> Option<RewriteTo> {
    match (&f.external.value, input) {
        (RewriteTo::Address(x), RewriteTo::Address(_)) => Some(RewriteTo::Address(x.clone())),
        (RewriteTo::Domain(d), RewriteTo::Address(a)) => Some(RewriteTo::Address(Address {
            local: a.local.clone(),
            domain: d.clone(),
        })),
        (RewriteTo::Domain(d), RewriteTo::Domain(_)) => Some(RewriteTo::Domain(d.clone())),
        (RewriteTo::Address(_), RewriteTo::Domain(_)) => None,
    }
}

/// The external domain of a domain or wildcard entry.
fn external_domain(e: &RewriteEntry) -> Option<&str> {
    match &e.external.value {
        RewriteTo::Domain(d) => Some(d),
        RewriteTo::Address(_) => None,
    }
}

/// W001 rewrite-shadowed (a repeated entry) and W002 rewrite-conflict (the same internal side
/// rewritten to two results). Returns whether the entry was flagged.
///
/// What it does: flags an entry whose internal address, domain or wildcard already has an
/// earlier entry. With the same external side it is W001 (it repeats the earlier one, unless
/// it is bidirectional where the earlier one is outbound-only: then it adds inbound
/// rewriting); with another external side it is W002, and the earlier entry wins.
///
/// Why is this bad: the relay uses the first entry for an internal side and never looks at the
/// second, and Exchange refuses to create it at all, so the later line is dead text that
/// someone will edit in vain.
///
/// Example: `rewrite john@contoso.com -> john@fabrikam.com` followed by
/// `rewrite john@contoso.com -> j.smith@fabrikam.com`.
///
/// Use instead: one entry per internal address, domain or wildcard.
fn same_internal(t: &Table<'_>, i: usize, e: &RewriteEntry, out: &mut Vec<Diagnostic>) -> bool {
    let Some(&first_index) = t.winner.get(i) else {
        return false;
    };
    if first_index == i {
        return false;
    }
    let Some(first) = t.entry(first_index) else {
        return false;
    };
    if first.external.value == e.external.value {
        if first.outbound_only && !e.outbound_only {
            // It rewrites inbound mail, which the first one does not.
            return false;
        }
        let mut diag = Diagnostic::new(
            Code::W001,
            format!(
                "`{}` is rewritten to `{}` twice",
                e.internal.value, e.external.value
            ),
        )
        .primary(
            e.span,
            "this entry repeats an earlier one and never applies",
        )
        .secondary(first.span, "the same rewrite is defined here first");
        if e.exceptions
            .iter()
            .map(|x| &x.value)
            .ne(first.exceptions.iter().map(|x| &x.value))
        {
            diag = diag.note("the exception lists differ, but only the first entry's is used");
        }
        out.push(diag.help("remove the repeated entry"));
    } else {
        out.push(
            Diagnostic::new(
                Code::W002,
                format!(
                    "`{}` is rewritten to both `{}` and `{}`",
                    e.internal.value, first.external.value, e.external.value
                ),
            )
            .primary(
                e.span,
                if e.outbound_only {
                    "this entry never applies".to_string()
                } else {
                    format!(
                        "this entry never applies outbound (inbound it still rewrites `{}` back)",
                        e.external.value
                    )
                },
            )
            .secondary(
                first.span,
                format!("this entry comes first, so `{}` becomes `{}`", e.internal.value, first.external.value),
            )
            .help("keep one entry for it (Exchange refuses two entries with the same internal address)"),
        );
    }
    true
}

/// W001 rewrite-shadowed (covered by a wider entry). Returns whether the entry was flagged.
///
/// What it does: flags an entry that a wider entry already covers with the same result: an
/// address entry under a domain or wildcard entry, a domain entry under a wildcard, or a
/// wildcard under a wider wildcard, when removing it would rewrite every address the same way
/// in both directions. A bidirectional entry under an outbound-only one is not flagged (it adds
/// inbound rewriting), nor is one whose domain the wider wildcard lists as an exception.
///
/// Why is this bad: the entry changes nothing, so it suggests a special case that does not
/// exist, and a later change to the wider entry silently stops applying to it.
///
/// Example: `rewrite *.contoso.com -> contoso.com outbound-only` with
/// `rewrite sales.contoso.com -> contoso.com outbound-only`.
///
/// Use instead: remove the narrower entry.
fn covered(t: &Table<'_>, i: usize, e: &RewriteEntry, out: &mut Vec<Diagnostic>) -> bool {
    let hit = match &e.internal.value {
        RewriteFrom::Address(a) => t.closest_domain(&a.domain),
        RewriteFrom::Domain(d) => t.closest_wildcard(d, false),
        RewriteFrom::Wildcard(p) => t.closest_wildcard(p, true),
    };
    let Hit::Entry(cover) = hit else {
        return false;
    };
    let Some(wide) = t.entry(cover) else {
        return false;
    };
    let Some(result) = external_domain(wide) else {
        return false;
    };
    let same = match (&e.internal.value, &e.external.value) {
        (RewriteFrom::Address(from), RewriteTo::Address(to)) => {
            to.domain == result && to.local.eq_ignore_ascii_case(&from.local)
        }
        (RewriteFrom::Domain(_), RewriteTo::Domain(to)) => to == result,
        (RewriteFrom::Wildcard(parent), RewriteTo::Domain(to)) => {
            to == result && same_exceptions(t, i, parent, cover)
        }
        _ => false,
    };
    // Inbound, the wider entry must give back what this one would.
    let same_direction = e.outbound_only
        || (!wide.outbound_only && t.inbound_winner.get(cover) == Some(&Some(cover)));
    if !same || !same_direction {
        return false;
    }
    out.push(
        Diagnostic::new(
            Code::W001,
            format!(
                "`{}` changes nothing: `{}` already rewrites it to the same result",
                e.internal.value, wide.internal.value
            ),
        )
        .primary(e.span, "this entry is redundant")
        .secondary(
            wide.span,
            format!(
                "this entry already rewrites `{}` to `{}`",
                e.internal.value, e.external.value
            ),
        )
        .help("remove the narrower entry"),
    );
    true
}

/// Whether wildcard entry `i` (of `*.parent`) leaves alone exactly what the wider wildcard `f`
/// leaves alone among `parent`'s subdomains.
fn same_exceptions(t: &Table<'_>, i: usize, parent: &str, f: usize) -> bool {
    let (Some(narrow), Some(wide)) = (t.entry(i), t.entry(f)) else {
        return false;
    };
    narrow
        .exceptions
        .iter()
        .all(|x| t.exception(f, &x.value).is_some())
        && wide
            .exceptions
            .iter()
            .filter(|y| is_subdomain_or_same(&y.value, parent))
            .all(|y| t.exception(i, &y.value).is_some())
}

/// W002 rewrite-conflict (two bidirectional entries with the same external side).
///
/// What it does: flags a bidirectional entry whose external address (or, for a domain entry,
/// external domain) is already the external side of an earlier bidirectional entry with
/// another internal side.
///
/// Why is this bad: inbound, mail to the external address is rewritten back to an internal
/// one, and it can only go to one: the earlier entry's. Mail meant for the other internal
/// address goes to the wrong mailbox.
///
/// Example: `rewrite john@tenant1.example.com -> john@example.com` with
/// `rewrite john@tenant2.example.com -> john@example.com`.
///
/// Use instead: make one of them `outbound-only`, or give them different external addresses.
fn same_external(t: &Table<'_>, i: usize, e: &RewriteEntry, out: &mut Vec<Diagnostic>) {
    let Some(&Some(j)) = t.inbound_winner.get(i) else {
        return;
    };
    if j == i {
        return;
    }
    let Some(first) = t.entry(j) else {
        return;
    };
    if first.internal.value == e.internal.value {
        // The same entry twice: `same_internal` reports it.
        return;
    }
    out.push(
        Diagnostic::new(
            Code::W002,
            format!(
                "inbound mail to `{}` cannot be rewritten back to both `{}` and `{}`",
                e.external.value, first.internal.value, e.internal.value
            ),
        )
        .primary(
            e.span,
            format!(
                "this entry would rewrite `{}` back to `{}`",
                e.external.value, e.internal.value
            ),
        )
        .secondary(
            first.span,
            format!(
                "this entry comes first, so inbound mail goes to `{}`",
                first.internal.value
            ),
        )
        .help("make one of the entries `outbound-only`, or give them different external addresses"),
    );
}

/// How many entries a loop's message names before it abbreviates.
const MAX_NAMED: usize = 8;

/// W004 rewrite-loop. Returns, per entry, whether it is on a loop.
///
/// What it does: follows each entry to the entry that would rewrite its result (the closest
/// entry for its external side) and flags every cycle once, naming its entries.
///
/// Why is this bad: outbound and inbound rewriting undo each other, so which address the
/// world sees depends only on the direction, and whoever wrote the entries meant something
/// else by at least one of them.
///
/// Example: `rewrite a.example.com -> b.example.com` with `rewrite b.example.com -> a.example.com`.
///
/// Use instead: remove one of the entries.
fn loops(t: &Table<'_>, next: &[Option<usize>], out: &mut Vec<Diagnostic>) -> Vec<bool> {
    // Each entry has at most one next entry, so the cycles are found in one pass: walk from
    // each unvisited entry until a visited one; if it was visited on this walk, the walk
    // from there on is a cycle.
    const NEW: u8 = 0;
    const ON_WALK: u8 = 1;
    const DONE: u8 = 2;
    let mut state = vec![NEW; next.len()];
    let mut on_cycle = vec![false; next.len()];
    let mut walk = Vec::new();
    for start in 0..next.len() {
        walk.clear();
        let mut cur = Some(start);
        while let Some(c) = cur {
            match state.get(c).copied() {
                Some(NEW) => {
                    if let Some(s) = state.get_mut(c) {
                        *s = ON_WALK;
                    }
                    walk.push(c);
                    cur = next.get(c).copied().flatten();
                }
                Some(ON_WALK) => {
                    let from = walk.iter().position(|&w| w == c).unwrap_or(walk.len());
                    let cycle = walk.get(from..).unwrap_or_default();
                    for &k in cycle {
                        if let Some(b) = on_cycle.get_mut(k) {
                            *b = true;
                        }
                    }
                    report_loop(t, cycle, out);
                    cur = None;
                }
                _ => cur = None,
            }
        }
        for &w in &walk {
            if let Some(s) = state.get_mut(w) {
                *s = DONE;
            }
        }
    }
    on_cycle
}

fn report_loop(t: &Table<'_>, cycle: &[usize], out: &mut Vec<Diagnostic>) {
    // Start at the entry defined first, so the report does not depend on where the walk began.
    let Some(lowest) = cycle
        .iter()
        .enumerate()
        .min_by_key(|&(_, &e)| e)
        .map(|(k, _)| k)
    else {
        return;
    };
    let ordered: Vec<&RewriteEntry> = cycle
        .iter()
        .cycle()
        .skip(lowest)
        .take(cycle.len())
        .filter_map(|&k| t.entry(k))
        .collect();
    let Some(head) = ordered.first() else {
        return;
    };
    let mut path: Vec<String> = ordered
        .iter()
        .take(MAX_NAMED)
        .map(|e| format!("`{}`", e.name))
        .collect();
    if ordered.len() > MAX_NAMED {
        path.push(format!("… ({} entries)", ordered.len()));
    }
    path.push(format!("`{}`", head.name));
    let mut d = Diagnostic::new(
        Code::W004,
        format!("rewrite entries form a loop: {}", path.join(" → ")),
    )
    .primary(
        head.span,
        format!(
            "`{}` is rewritten to `{}`",
            head.internal.value, head.external.value
        ),
    );
    for next in ordered.iter().skip(1).take(MAX_NAMED) {
        d = d.secondary(
            next.span,
            format!(
                "which this entry matches and rewrites to `{}`",
                next.external.value
            ),
        );
    }
    if let Some(last) = ordered.last() {
        d = d.note(format!(
            "`{}` is matched by `{}` again",
            last.external.value, head.name
        ));
    }
    out.push(d.help(
        "remove one of the entries, or rewrite each to the address the outside world should see",
    ));
}

/// W003 rewrite-chain.
///
/// What it does: flags an entry whose result another entry would rewrite again (the result is
/// that entry's internal address, is in its internal domain, or is under its wildcard and not
/// an exception), when that would change it. Entries on a loop are left to W004, entries
/// already flagged as redundant to W001.
///
/// Why is this bad: an address is rewritten once, so the second entry is never applied to the
/// first one's result; the chain almost certainly does not do what its author meant.
///
/// Example: `rewrite tenant1.example.com -> example.com` with `rewrite example.com -> example.net`.
///
/// Use instead: rewrite straight to the final address or domain.
fn chains(
    t: &Table<'_>,
    next: &[Option<usize>],
    on_cycle: &[bool],
    redundant: &[bool],
    out: &mut Vec<Diagnostic>,
) {
    for (i, e) in t.entries.iter().enumerate() {
        if on_cycle.get(i) == Some(&true) || redundant.get(i) == Some(&true) {
            continue;
        }
        let Some(f) = next.get(i).copied().flatten() else {
            continue;
        };
        let Some(then) = t.entry(f) else {
            continue;
        };
        let Some(final_result) = apply(then, &e.external.value) else {
            continue;
        };
        out.push(
            Diagnostic::new(
                Code::W003,
                format!(
                    "`{}` rewrites to `{}`, which `{}` would rewrite again, but an address is rewritten only once",
                    e.internal.value, e.external.value, then.name
                ),
            )
            .primary(e.external.span, "this result is not rewritten again")
            .secondary(
                then.internal.span,
                format!("this entry matches `{}` and would make it `{final_result}`", e.external.value),
            )
            .help(format!("rewrite `{}` straight to `{final_result}`, or change one of the entries", e.internal.value)),
        );
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

    fn count(src: &str, code: Code) -> usize {
        codes(src).iter().filter(|&&c| c == code).count()
    }

    #[test]
    fn exchange_documented_examples_are_clean() {
        let src = "rewrite \"David\" david@contoso.com -> david@northwindtraders.com\n\
                   rewrite \"Joe to support\" joe@contoso.com -> support@northwindtraders.com\n\
                   rewrite *.contoso.com -> contoso.com outbound-only except legal.contoso.com, corp.contoso.com\n\
                   rewrite japan.sales.contoso.com -> contoso.jp\n\
                   rewrite \"Wingtip UK\" *.wingtiptoys.co.uk -> tailspintoys.com outbound-only except legal.wingtiptoys.co.uk\n";
        assert_eq!(codes(src), []);
    }

    #[test]
    fn exact_duplicates_are_shadowed() {
        let src =
            "rewrite a@t.example.com -> a@example.com\nrewrite A@T.example.com -> a@example.com\n";
        let d = lint(src);
        assert_eq!(d.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::W001]);
        assert_eq!(d[0].labels.len(), 2);
        assert!(d[0].labels[0].primary);
        // A bidirectional repeat of an outbound-only entry adds inbound rewriting.
        let src = "rewrite t.example.com -> example.com outbound-only\nrewrite t.example.com -> example.com\n";
        assert_eq!(codes(src), []);
        // The other way round it adds nothing.
        let src = "rewrite t.example.com -> example.com\nrewrite t.example.com -> example.com outbound-only\n";
        assert_eq!(codes(src), [Code::W001]);
        // Three copies: each later one is reported once, against the first.
        let src = "rewrite t.example.com -> example.com\n".repeat(3);
        assert_eq!(count(&src, Code::W001), 2);
    }

    #[test]
    fn entries_covered_with_the_same_result_are_shadowed() {
        let src = "rewrite *.contoso.com -> contoso.com outbound-only\nrewrite sales.contoso.com -> contoso.com outbound-only\n";
        assert_eq!(codes(src), [Code::W001]);
        let src = "rewrite tenant2.example.com -> example.com\nrewrite bob@tenant2.example.com -> Bob@example.com\n";
        assert_eq!(codes(src), [Code::W001]);
        // Order does not matter for covering.
        let src = "rewrite bob@tenant2.example.com -> bob@example.com\nrewrite tenant2.example.com -> example.com\n";
        assert_eq!(codes(src), [Code::W001]);
        // A narrower wildcard with the same result and no exceptions of its own.
        let src = "rewrite *.contoso.com -> contoso.com outbound-only\nrewrite *.eu.contoso.com -> contoso.com outbound-only\n";
        assert_eq!(codes(src), [Code::W001]);
        // The primary label is on the narrower entry.
        let d = lint(
            "rewrite sales.contoso.com -> contoso.com outbound-only\nrewrite *.contoso.com -> contoso.com outbound-only\n",
        );
        assert_eq!(d.len(), 1);
        assert!(d[0].labels[0].span.start < d[0].labels[1].span.start);
    }

    #[test]
    fn narrower_entries_that_add_something_are_not_shadowed() {
        // A bidirectional entry under an outbound-only wildcard adds inbound rewriting.
        let src = "rewrite *.contoso.com -> contoso.com outbound-only\nrewrite sales.contoso.com -> contoso.com\n";
        assert!(!codes(src).contains(&Code::W001));
        // A bidirectional address entry under an outbound-only domain entry adds inbound
        // rewriting.
        let src = "rewrite t.example.com -> example.com outbound-only\nrewrite bob@t.example.com -> bob@example.com\n";
        assert_eq!(codes(src), []);
        // A domain the wildcard excepts (or under an exception) is not rewritten by it.
        let wildcard =
            "rewrite *.contoso.com -> contoso.com outbound-only except legal.contoso.com\n";
        for narrow in [
            "rewrite legal.contoso.com -> contoso.com outbound-only\n",
            "rewrite uk.legal.contoso.com -> contoso.com outbound-only\n",
            "rewrite amy@legal.contoso.com -> amy@contoso.com outbound-only\n",
        ] {
            assert_eq!(codes(&format!("{wildcard}{narrow}")), [], "{narrow}");
        }
        // Different results.
        let src = "rewrite *.contoso.com -> contoso.com outbound-only\nrewrite sales.contoso.com -> contoso.net outbound-only\n\
                   rewrite joe@contoso.com -> support@contoso.com outbound-only\n";
        assert!(!codes(src).contains(&Code::W001));
        // A narrower wildcard with its own exceptions, or re-including the wider one's.
        let src = "rewrite *.contoso.com -> contoso.com outbound-only\nrewrite *.eu.contoso.com -> contoso.com outbound-only except hr.eu.contoso.com\n";
        assert!(!codes(src).contains(&Code::W001));
        let src = "rewrite *.contoso.com -> contoso.com outbound-only except hr.eu.contoso.com\nrewrite *.eu.contoso.com -> contoso.com outbound-only\n";
        assert!(!codes(src).contains(&Code::W001));
        let src = "rewrite *.contoso.com -> contoso.com outbound-only except hr.eu.contoso.com\nrewrite *.eu.contoso.com -> contoso.com outbound-only except hr.eu.contoso.com\n";
        assert_eq!(codes(src), [Code::W001]);
        // Only the closest entry counts: the domain entry in between gives another result.
        let src = "rewrite *.contoso.com -> contoso.com outbound-only\nrewrite sales.contoso.com -> contoso.net\n\
                   rewrite amy@sales.contoso.com -> amy@contoso.com outbound-only\n";
        assert!(!codes(src).contains(&Code::W001));
    }

    #[test]
    fn same_internal_different_external_conflicts() {
        let d = lint(
            "rewrite john@contoso.com -> john@fabrikam.com\nrewrite John@contoso.com -> j.smith@fabrikam.com outbound-only\n",
        );
        assert_eq!(d.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::W002]);
        assert!(
            d[0].message.contains("john@fabrikam.com"),
            "{}",
            d[0].message
        );
        assert!(
            d[0].labels[1].message.contains("comes first"),
            "{:?}",
            d[0].labels
        );
    }

    #[test]
    fn bidirectional_entries_with_one_external_side_conflict() {
        let src = "rewrite john@tenant1.example.com -> john@example.com\nrewrite john@tenant2.example.com -> john@example.com\n";
        assert_eq!(codes(src), [Code::W002]);
        let src = "rewrite tenant1.example.com -> example.com\nrewrite tenant2.example.com -> example.com\nrewrite tenant3.example.com -> example.com\n";
        assert_eq!(count(src, Code::W002), 2);
        // Outbound-only entries are never reversed.
        let src = "rewrite john@tenant1.example.com -> john@example.com\nrewrite john@tenant2.example.com -> john@example.com outbound-only\n";
        assert_eq!(codes(src), []);
        // The documented precedence example is not a conflict.
        let src = "rewrite *.contoso.com -> contoso.com outbound-only except legal.contoso.com, corp.contoso.com\n\
                   rewrite japan.sales.contoso.com -> contoso.jp\n";
        assert_eq!(codes(src), []);
    }

    #[test]
    fn chains_are_reported_but_not_self_matches() {
        let src =
            "rewrite tenant1.example.com -> example.com\nrewrite example.com -> example.net\n";
        let d = lint(src);
        assert_eq!(d.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::W003]);
        assert!(d[0].help.as_deref().unwrap_or("").contains("example.net"));
        // Into a wildcard, and an address whose domain another entry rewrites.
        let src = "rewrite t1.example.com -> eu.example.org\nrewrite *.example.org -> example.net outbound-only\n\
                   rewrite bob@t2.example.com -> bob@example.com\nrewrite example.com -> example.net outbound-only\n";
        assert_eq!(count(src, Code::W003), 2);
        // `*.contoso.com -> contoso.com` covers its own result: no chain.
        assert_eq!(
            codes("rewrite *.contoso.com -> contoso.com outbound-only\n"),
            []
        );
        // A result the wildcard would leave as it is, or leaves alone, is no chain either.
        let src = "rewrite *.contoso.com -> contoso.com outbound-only except legal.contoso.com\n\
                   rewrite fabrikam.com -> contoso.com\nrewrite bob@fabrikam.net -> bob@legal.contoso.com\n";
        assert_eq!(codes(src), []);
    }

    #[test]
    fn loops_are_reported_once_per_cycle() {
        let src =
            "rewrite a.example.com -> b.example.com\nrewrite b.example.com -> a.example.com\n";
        let d = lint(src);
        assert_eq!(d.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::W004]);
        assert!(
            d[0].message
                .contains("`a.example.com` → `b.example.com` → `a.example.com`"),
            "{}",
            d[0].message
        );
        let src = "rewrite \"C\" c.example.com -> a.example.com\nrewrite \"A\" a.example.com -> b.example.com\n\
                   rewrite \"B\" b.example.com -> c.example.com\nrewrite \"Tail\" t.example.com -> c.example.com outbound-only\n";
        let d = lint(src);
        let got: Vec<Code> = d.iter().map(|d| d.code).collect();
        assert_eq!(got.iter().filter(|&&c| c == Code::W004).count(), 1);
        // The entry leading into the loop is a chain.
        assert_eq!(got.iter().filter(|&&c| c == Code::W003).count(), 1);
        let w004 = d.iter().find(|d| d.code == Code::W004).unwrap();
        assert!(
            w004.message.contains("`C` → `A` → `B` → `C`"),
            "{}",
            w004.message
        );
        // Through a wildcard.
        let src = "rewrite *.a.example -> b.example outbound-only\nrewrite b.example -> x.a.example outbound-only\n";
        assert_eq!(codes(src), [Code::W004]);
    }

    #[test]
    fn twenty_thousand_entries() {
        let mut src = String::from(
            "rewrite \"Region\" *.region.example.net -> example.net outbound-only except legal.region.example.net\n",
        );
        for i in 0..20_000 {
            let t = i % 10;
            match i % 5 {
                0 => src.push_str(&format!("rewrite dept{i}.tenant{t}.example.com -> example.com outbound-only\n")),
                1 if i % 10 == 1 => src.push_str(&format!("rewrite s{i}.region.example.net -> example.net outbound-only\n")),
                1 => src.push_str(&format!("rewrite x{i}.legal.region.example.net -> example.net outbound-only\n")),
                2 => src.push_str(&format!("rewrite \"User {i}\" user{i}@tenant{t}.example.com -> user{i}@example.com\n")),
                3 => src.push_str(&format!(
                    "rewrite u{i}@dept{}.tenant{}.example.com -> u{i}@example.com outbound-only\n",
                    i - 3,
                    (i - 3) % 10
                )),
                _ => src.push_str(&format!("rewrite a{i}.example.org -> b{i}.example.org\nrewrite b{i}.example.org -> a{i}.example.org\n")),
            }
        }
        let d = lint(&src);
        let n = |c: Code| d.iter().filter(|d| d.code == c).count();
        // Every `u…@dept…` entry is covered by its department's domain entry, every
        // `s….region` one by the wildcard; the `x….legal.region` ones are exceptions.
        assert_eq!(n(Code::W001), 4_000 + 2_000);
        assert_eq!(n(Code::W004), 4_000);
        assert_eq!(n(Code::W002), 0);
        assert_eq!(n(Code::W003), 0);
    }
}
