//! Transport rules compiled for evaluation. Every `contains` word of every rule is in one
//! Aho-Corasick automaton (ASCII case-insensitive, overlapping matches, so a word inside
//! another word still counts); a message's fields are each scanned once, and each hit marks
//! the conditions that word belongs to. Every rule has an anchor, one condition that can be
//! looked up (a word, a connector, an originating organization, a sender scope); only rules
//! whose anchor holds are evaluated, in priority order, so the cost follows the message, not
//! the number of rules. [`RuleIndex::run_all`] evaluates every rule in turn and explains each:
//! the trace, and the reference the fast path is tested against.

use crate::auth::AuthResults;
use crate::model::{
    Action, AuthMethod, AuthResult, IpRange, Predicate, RuleMode, Scope, TextOp, TransportRule,
};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::net::IpAddr;
use std::sync::OnceLock;

/// The most memory the word automaton may use. A rule set that passed `check` stays far
/// below: its words are held to [`crate::resolve::MAX_WORD_BYTES`] (4 MiB, an automaton of
/// about 80 MB) and [`crate::resolve::MAX_WORDS`]; [`RuleIndex::new`] tests those limits again
/// before building, for rule sets that reach it without a check (compiled artifacts).
pub const AUTOMATON_MEMORY_LIMIT: usize = 512 * 1024 * 1024;

/// Why rules could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RuleCompileError {
    /// The automaton could not be built.
    #[error("the words of all `contains` conditions cannot be compiled: {0}")]
    Automaton(String),
    /// More words, word bytes or patterns than `check` allows (see E045).
    #[error("{0}; `mailflow check` reports this as E045")]
    OverLimits(String),
    /// Too many or too long words.
    #[error(
        "the words of all `contains` conditions need {used} bytes, more than the {limit} byte limit"
    )]
    AutomatonTooLarge {
        /// Bytes needed.
        used: usize,
        /// The limit.
        limit: usize,
    },
}

/// The slots a message hit, sorted and without repeats.
struct Hits(Vec<u32>);

impl Hits {
    fn contains(&self, s: &u32) -> bool {
        self.0.binary_search(s).is_ok()
    }
}

/// What part of the message a text condition reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// Any recipient address.
    Recipient,
    /// The sender address.
    Sender,
    /// The subject.
    Subject,
    /// A header, by lowercase name.
    Header(String),
}

/// The facts about one message that rules test.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// Recipient addresses.
    pub recipients: Vec<String>,
    /// The sender address (empty for the null sender).
    pub sender: &'a str,
    /// The subject, if any.
    pub subject: Option<&'a str>,
    /// Headers as (name, value).
    pub headers: Vec<(&'a str, &'a str)>,
    /// Size in bytes.
    pub size: u64,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The receive connector's name.
    pub connector: Option<&'a str>,
    /// The originating organization, when trusted.
    pub originating_org: Option<&'a str>,
    /// Inside or outside the organization.
    pub scope: Scope,
    /// What verifying the message found; `None`: not verified (every method `none`).
    pub auth: Option<&'a AuthResults>,
}

#[derive(Debug)]
struct LazyRegex {
    pattern: String,
    compiled: OnceLock<Option<regex::Regex>>,
}

impl LazyRegex {
    fn is_match(&self, text: &str) -> bool {
        self.compiled
            .get_or_init(|| crate::resolve::compile_pattern(&self.pattern).ok())
            .as_ref()
            .is_some_and(|r| r.is_match(text))
    }
}

#[derive(Debug)]
enum Cond {
    /// Satisfied when any of these slots (each knows its field) was hit.
    Words {
        slots: Vec<u32>,
    },
    Pattern {
        field: Field,
        patterns: Vec<LazyRegex>,
    },
    /// `domain-is`: the address's domain or one of its parents is listed (lowercase).
    Domain {
        field: Field,
        domains: HashSet<String>,
    },
    Scope(Scope),
    SizeOver(u64),
    ClientIp(Vec<IpRange>),
    Connector(Vec<String>),
    OriginatingOrg(Vec<String>),
    Auth {
        method: AuthMethod,
        results: Vec<AuthResult>,
        domains: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Slot {
    field: Field,
    words: bool,
}

/// One rule, ready to evaluate.
#[derive(Debug)]
pub struct CompiledRule {
    /// Its index in the rule set's `rules`.
    pub source: usize,
    /// Its name.
    pub name: String,
    /// Enforce or audit.
    pub mode: RuleMode,
    /// Its actions.
    pub actions: Vec<Action>,
    /// Its conditions as written, for traces.
    pub condition_text: Vec<String>,
    /// Its exceptions as written, for traces.
    pub exception_text: Vec<String>,
    conditions: Vec<Cond>,
    exceptions: Vec<Cond>,
}

/// Why a rule did or did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every condition held and no exception did.
    Matched,
    /// This condition (index among the rule's conditions) did not hold.
    ConditionFailed(usize),
    /// This exception held.
    Excepted(usize),
}

/// A rule evaluated for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluated {
    /// Index in [`RuleIndex::rules`] (priority order).
    pub rule: usize,
    /// What came of it.
    pub outcome: Outcome,
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct RuleIndex {
    rules: Vec<CompiledRule>,
    automaton: Option<AhoCorasick>,
    pattern_slots: Vec<Vec<u32>>,
    slots: Vec<Slot>,
    by_slot: HashMap<u32, Vec<u32>>,
    by_domain: HashMap<String, Vec<u32>>,
    by_connector: HashMap<String, Vec<u32>>,
    by_org: HashMap<String, Vec<u32>>,
    by_scope: [Vec<u32>; 2],
    always: Vec<u32>,
    header_names: HashSet<String>,
    /// Some condition reads the Subject or some action changes it.
    uses_subject: bool,
    /// Bit `n` set when some tested header name is `n` bytes long (bit 127: 127 or more), so
    /// most of a message's headers are passed over without hashing their names.
    header_lengths: u128,
    tests_auth: bool,
}

/// The bit of [`RuleIndex::header_lengths`] for a name `len` bytes long.
fn length_bit(len: usize) -> u128 {
    1 << len.min(127)
}

fn scope_slot(s: Scope) -> usize {
    match s {
        Scope::Inside => 0,
        Scope::Outside => 1,
    }
}

struct Builder {
    patterns: Vec<String>,
    pattern_ids: HashMap<String, u32>,
    pattern_slots: Vec<Vec<u32>>,
    slots: Vec<Slot>,
    header_names: HashSet<String>,
    /// Some condition reads the Subject.
    subject: bool,
    /// `matches` patterns seen.
    regexes: usize,
    /// Some condition reads verification results.
    tests_auth: bool,
}

impl Builder {
    /// The limits `check` holds rule sets to, tested again before anything large is built.
    fn within_limits(&self) -> Result<(), RuleCompileError> {
        use crate::resolve::{MAX_MATCHES_PATTERNS, MAX_WORD_BYTES, MAX_WORDS};
        let words = self.slots.len();
        let bytes: usize = self.patterns.iter().map(String::len).sum();
        let over = if words > MAX_WORDS {
            format!("the rules have {words} `contains` words, more than {MAX_WORDS}")
        } else if bytes > MAX_WORD_BYTES {
            format!(
                "the rules' distinct `contains` words take {bytes} bytes, more than {MAX_WORD_BYTES}"
            )
        } else if self.regexes > MAX_MATCHES_PATTERNS {
            format!(
                "the rules have {} `matches` patterns, more than {MAX_MATCHES_PATTERNS}",
                self.regexes
            )
        } else {
            return Ok(());
        };
        Err(RuleCompileError::OverLimits(over))
    }

    fn field(&mut self, p: &Predicate) -> Option<Field> {
        Some(match p {
            Predicate::RecipientAddress(_) => Field::Recipient,
            Predicate::SenderAddress(_) => Field::Sender,
            Predicate::Subject(_) => {
                self.subject = true;
                Field::Subject
            }
            Predicate::Header { name, .. } => {
                let n = name.to_ascii_lowercase();
                self.header_names.insert(n.clone());
                Field::Header(n)
            }
            _ => return None,
        })
    }

    fn cond(&mut self, p: &Predicate) -> Cond {
        let field = self.field(p);
        let matcher = match p {
            Predicate::RecipientAddress(m)
            | Predicate::SenderAddress(m)
            | Predicate::Subject(m)
            | Predicate::Header { matcher: m, .. } => Some(m),
            _ => None,
        };
        if let (Some(field), Some(m)) = (field, matcher) {
            if m.op == TextOp::DomainIs {
                return Cond::Domain {
                    field,
                    domains: m.values.iter().map(|d| d.to_ascii_lowercase()).collect(),
                };
            }
            if m.op == TextOp::Matches {
                self.regexes += m.values.len();
                return Cond::Pattern {
                    field,
                    patterns: m
                        .values
                        .iter()
                        .map(|v| LazyRegex {
                            pattern: v.clone(),
                            compiled: OnceLock::new(),
                        })
                        .collect(),
                };
            }
            let mut slots = Vec::new();
            for v in &m.values {
                let word = v.to_ascii_lowercase();
                let next = u32::try_from(self.patterns.len()).unwrap_or(u32::MAX);
                let pid = *self.pattern_ids.entry(word.clone()).or_insert_with(|| {
                    self.patterns.push(word);
                    self.pattern_slots.push(Vec::new());
                    next
                });
                let sid = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Slot {
                    field: field.clone(),
                    words: m.op == TextOp::ContainsWords,
                });
                if let Some(v) = self.pattern_slots.get_mut(pid as usize) {
                    v.push(sid);
                }
                slots.push(sid);
            }
            return Cond::Words { slots };
        }
        match p {
            Predicate::SenderScope(s) => Cond::Scope(*s),
            Predicate::SizeOver(n) => Cond::SizeOver(*n),
            Predicate::ClientIp(r) => Cond::ClientIp(r.clone()),
            Predicate::Connector(c) => Cond::Connector(c.clone()),
            Predicate::OriginatingOrg(o) => Cond::OriginatingOrg(o.clone()),
            Predicate::Auth {
                method,
                results,
                domains,
            } => {
                self.tests_auth = true;
                Cond::Auth {
                    method: *method,
                    results: results.clone(),
                    domains: domains.clone(),
                }
            }
            // INVARIANT: `field` is `Some` for exactly these, handled above.
            Predicate::RecipientAddress(_)
            | Predicate::SenderAddress(_)
            | Predicate::Subject(_)
            | Predicate::Header { .. } => Cond::SizeOver(u64::MAX),
        }
    }
}

impl RuleIndex {
    /// Compiles the complete rules of a rule set (already in priority order); partial rules
    /// (with errors) are left out.
    pub fn new(rules: &[TransportRule]) -> Result<Self, RuleCompileError> {
        let mut b = Builder {
            patterns: Vec::new(),
            pattern_ids: HashMap::default(),
            pattern_slots: Vec::new(),
            slots: Vec::new(),
            header_names: HashSet::default(),
            subject: false,
            regexes: 0,
            tests_auth: false,
        };
        let mut index = RuleIndex::default();
        for (source, r) in rules.iter().enumerate().filter(|(_, r)| !r.partial) {
            let rule = CompiledRule {
                source,
                name: r.name.value.clone(),
                mode: r.mode,
                actions: r.actions.iter().map(|a| a.value.clone()).collect(),
                condition_text: r.conditions.iter().map(|c| c.value.to_string()).collect(),
                exception_text: r.exceptions.iter().map(|c| c.value.to_string()).collect(),
                conditions: r.conditions.iter().map(|c| b.cond(&c.value)).collect(),
                exceptions: r.exceptions.iter().map(|c| b.cond(&c.value)).collect(),
            };
            let id = u32::try_from(index.rules.len()).unwrap_or(u32::MAX);
            index.anchor(&rule, id);
            index.rules.push(rule);
        }
        b.within_limits()?;
        if !b.patterns.is_empty() {
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(&b.patterns)
                .map_err(|e| RuleCompileError::Automaton(e.to_string()))?;
            if ac.memory_usage() > AUTOMATON_MEMORY_LIMIT {
                return Err(RuleCompileError::AutomatonTooLarge {
                    used: ac.memory_usage(),
                    limit: AUTOMATON_MEMORY_LIMIT,
                });
            }
            index.automaton = Some(ac);
        }
        index.pattern_slots = b.pattern_slots;
        index.slots = b.slots;
        index.header_lengths = b
            .header_names
            .iter()
            .fold(0, |mask, n| mask | length_bit(n.len()));
        index.header_names = b.header_names;
        index.uses_subject = b.subject
            || index.rules.iter().any(|r| {
                r.actions
                    .iter()
                    .any(|a| matches!(a, Action::PrependSubject(_)))
            });
        index.tests_auth = b.tests_auth;
        Ok(index)
    }

    /// Files the rule under its most selective condition.
    fn anchor(&mut self, rule: &CompiledRule, id: u32) {
        let conds = &rule.conditions;
        if let Some(Cond::Words { slots, .. }) =
            conds.iter().find(|c| matches!(c, Cond::Words { .. }))
        {
            for s in slots {
                self.by_slot.entry(*s).or_default().push(id);
            }
        } else if let Some(Cond::Domain { domains, .. }) =
            conds.iter().find(|c| matches!(c, Cond::Domain { .. }))
        {
            for d in domains {
                self.by_domain.entry(d.clone()).or_default().push(id);
            }
        } else if let Some(Cond::Connector(names)) =
            conds.iter().find(|c| matches!(c, Cond::Connector(_)))
        {
            for n in names {
                self.by_connector.entry(n.clone()).or_default().push(id);
            }
        } else if let Some(Cond::OriginatingOrg(orgs)) =
            conds.iter().find(|c| matches!(c, Cond::OriginatingOrg(_)))
        {
            for o in orgs {
                self.by_org.entry(o.clone()).or_default().push(id);
            }
        } else if let Some(Cond::Scope(s)) = conds.iter().find(|c| matches!(c, Cond::Scope(_))) {
            if let Some(v) = self.by_scope.get_mut(scope_slot(*s)) {
                v.push(id);
            }
        } else {
            self.always.push(id);
        }
    }

    /// The compiled rules, in priority order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Whether some rule tests this header (by any name case).
    pub fn tests_header(&self, name: &str) -> bool {
        if self.header_lengths & length_bit(name.len()) == 0 {
            return false;
        }
        // Lowercased on the stack: this runs for every header of every message.
        let mut buf = [0u8; 96];
        match buf.get_mut(..name.len()) {
            Some(b) => {
                b.copy_from_slice(name.as_bytes());
                b.make_ascii_lowercase();
                std::str::from_utf8(b).is_ok_and(|n| self.header_names.contains(n))
            }
            None => self.header_names.contains(&name.to_ascii_lowercase()),
        }
    }

    /// Whether some condition reads the Subject or some action changes it
    /// (`prepend-subject`).
    pub fn uses_subject(&self) -> bool {
        self.uses_subject
    }

    /// Whether some rule reads verification results (`if dmarc fail`).
    pub fn tests_auth(&self) -> bool {
        self.tests_auth
    }

    /// Bytes the word automaton uses.
    pub fn automaton_memory(&self) -> usize {
        self.automaton.as_ref().map_or(0, AhoCorasick::memory_usage)
    }

    /// The slots hit by the message's text, one automaton pass per field value.
    /// The slots hit, sorted (a message hits few, so a vector beats a set).
    fn scan(&self, facts: &Facts<'_>) -> Hits {
        let mut hits = Vec::new();
        let Some(ac) = &self.automaton else {
            return Hits(hits);
        };
        let mut scan_one = |field: &Field, text: &str| {
            for m in ac.find_overlapping_iter(text) {
                let Some(slots) = self.pattern_slots.get(m.pattern().as_usize()) else {
                    continue;
                };
                for &sid in slots {
                    let Some(slot) = self.slots.get(sid as usize) else {
                        continue;
                    };
                    if slot.field != *field
                        || (slot.words && !word_bounded(text, m.start(), m.end()))
                    {
                        continue;
                    }
                    hits.push(sid);
                }
            }
        };
        for r in &facts.recipients {
            scan_one(&Field::Recipient, r);
        }
        scan_one(&Field::Sender, facts.sender);
        if let Some(s) = facts.subject {
            scan_one(&Field::Subject, s);
        }
        if !self.header_names.is_empty() {
            for (name, value) in &facts.headers {
                let n = name.to_ascii_lowercase();
                if self.header_names.contains(&n) {
                    scan_one(&Field::Header(n), value);
                }
            }
        }
        hits.sort_unstable();
        hits.dedup();
        Hits(hits)
    }

    fn holds(&self, c: &Cond, facts: &Facts<'_>, hits: &Hits) -> bool {
        match c {
            Cond::Words { slots, .. } => slots.iter().any(|s| hits.contains(s)),
            Cond::Pattern { field, patterns } => {
                let test = |t: &str| patterns.iter().any(|p| p.is_match(t));
                match field {
                    Field::Recipient => facts.recipients.iter().any(|r| test(r)),
                    Field::Sender => test(facts.sender),
                    Field::Subject => facts.subject.is_some_and(test),
                    Field::Header(n) => facts
                        .headers
                        .iter()
                        .any(|(name, v)| name.eq_ignore_ascii_case(n) && test(v)),
                }
            }
            Cond::Domain { field, domains } => {
                let test = |a: &str| in_domains(a, |d| domains.contains(d));
                match field {
                    Field::Recipient => facts.recipients.iter().any(|r| test(r)),
                    Field::Sender => test(facts.sender),
                    // `check` allows `domain-is` on addresses only.
                    Field::Subject | Field::Header(_) => false,
                }
            }
            Cond::Scope(s) => facts.scope == *s,
            Cond::SizeOver(n) => facts.size > *n,
            Cond::ClientIp(ranges) => facts
                .client_ip
                .is_some_and(|ip| ranges.iter().any(|r| r.contains(ip))),
            Cond::Connector(names) => facts
                .connector
                .is_some_and(|c| names.iter().any(|n| n == c)),
            Cond::OriginatingOrg(orgs) => facts
                .originating_org
                .is_some_and(|o| orgs.iter().any(|x| x.eq_ignore_ascii_case(o))),
            Cond::Auth {
                method,
                results,
                domains,
            } => match facts.auth {
                Some(found) => found.holds(*method, results, domains),
                None => crate::auth::results::holds_unverified(results, domains),
            },
        }
    }

    fn outcome(&self, rule: &CompiledRule, facts: &Facts<'_>, hits: &Hits) -> Outcome {
        if let Some(i) = rule
            .conditions
            .iter()
            .position(|c| !self.holds(c, facts, hits))
        {
            return Outcome::ConditionFailed(i);
        }
        match rule
            .exceptions
            .iter()
            .position(|c| self.holds(c, facts, hits))
        {
            Some(i) => Outcome::Excepted(i),
            None => Outcome::Matched,
        }
    }

    /// Whether a matching rule ends rule processing (enforced, with a stopping action).
    pub fn stops(rule: &CompiledRule) -> bool {
        rule.mode == RuleMode::Enforce && rule.actions.iter().any(Action::stops_processing)
    }

    /// The fast path: the rules that match, in priority order, up to and including the first
    /// enforced one that ends processing. Only rules whose anchor holds are looked at.
    pub fn run(&self, facts: &Facts<'_>) -> Vec<usize> {
        let hits = self.scan(facts);
        let mut candidates: Vec<u32> = self.always.clone();
        for s in &hits.0 {
            if let Some(rs) = self.by_slot.get(s) {
                candidates.extend(rs);
            }
        }
        if !self.by_domain.is_empty() {
            let sender = std::iter::once(facts.sender);
            for a in facts.recipients.iter().map(String::as_str).chain(sender) {
                in_domains(a, |d| {
                    if let Some(rs) = self.by_domain.get(d) {
                        candidates.extend(rs);
                    }
                    false
                });
            }
        }
        if let Some(rs) = facts.connector.and_then(|c| self.by_connector.get(c)) {
            candidates.extend(rs);
        }
        if let Some(rs) = facts
            .originating_org
            .and_then(|o| self.by_org.get(&o.to_ascii_lowercase()))
        {
            candidates.extend(rs);
        }
        if let Some(rs) = self.by_scope.get(scope_slot(facts.scope)) {
            candidates.extend(rs);
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut fired = Vec::new();
        for id in candidates {
            let Some(rule) = self.rules.get(id as usize) else {
                continue;
            };
            if self.outcome(rule, facts, &hits) == Outcome::Matched {
                fired.push(id as usize);
                if Self::stops(rule) {
                    break;
                }
            }
        }
        fired
    }

    /// The reference path: every rule in priority order, each with why it matched or not,
    /// until an enforced rule that matches ends processing.
    pub fn run_all(&self, facts: &Facts<'_>) -> Vec<Evaluated> {
        let hits = self.scan(facts);
        let mut out = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let outcome = self.outcome(rule, facts, &hits);
            let stop = outcome == Outcome::Matched && Self::stops(rule);
            out.push(Evaluated { rule: i, outcome });
            if stop {
                break;
            }
        }
        out
    }
}

/// Calls `f` with the domain of `address` (lowercase) and then each of its parents, until `f`
/// says yes. The domain is what follows the last `@`, so a quoted local part such as
/// `"example.com"@elsewhere` is not in example.com.
fn in_domains(address: &str, mut f: impl FnMut(&str) -> bool) -> bool {
    let Some((_, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let mut rest = domain.as_str();
    loop {
        if f(rest) {
            return true;
        }
        match rest.split_once('.') {
            Some((_, parent)) => rest = parent,
            None => return false,
        }
    }
}

/// Whether the text around `start..end` is a word boundary (not a letter or digit).
fn word_bounded(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|t| t.chars().next_back());
    let after = text.get(end..).and_then(|t| t.chars().next());
    !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(src: &str) -> RuleIndex {
        let mut r = crate::check::check_text("t.mailflow", src);
        let errors: Vec<_> = r
            .diagnostics
            .iter()
            .filter(|d| d.severity() == crate::diagnostic::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        RuleIndex::new(&r.rule_sets.remove(0).rules.rules).unwrap()
    }

    fn names(ix: &RuleIndex, fired: &[usize]) -> Vec<String> {
        fired.iter().map(|&i| ix.rules()[i].name.clone()).collect()
    }

    const SEED_002: &str = r#"
rule "Emails from Outside to myexchlab.com Inside" { priority 0; if sender outside; if recipient contains "myexchlab.com"; stop }
rule "Emails from Outside to tenant1.myexchlab.com Inside" { priority 1; if sender outside; if recipient contains "tenant1.myexchlab.com"; stop }
rule "Emails from Outside to tenant2.myexchlab.com Inside" { priority 2; if sender outside; if recipient contains "tenant2.myexchlab.com"; stop }
rule "Drop email if Outside of Organization" { priority 3; if sender outside; delete }
"#;

    #[test]
    fn rules_over_the_check_limits_are_refused_before_building() {
        use crate::model::{Spanned, TextMatch};
        use crate::source::{FileId, Span};
        let span = Span::new(FileId(0), 0, 0);
        let rule = |values: Vec<String>| TransportRule {
            partial: false,
            name: Spanned::new("Unchecked".to_string(), span),
            span,
            priority: None,
            mode: RuleMode::Enforce,
            conditions: vec![Spanned::new(
                Predicate::Subject(TextMatch {
                    op: TextOp::Contains,
                    values,
                }),
                span,
            )],
            exceptions: Vec::new(),
            actions: vec![Spanned::new(Action::Delete, span)],
        };
        // As an artifact could carry them, never having been checked.
        let words = (0..=crate::resolve::MAX_WORDS)
            .map(|i| format!("w{}", i % 3))
            .collect();
        let err = RuleIndex::new(&[rule(words)]).unwrap_err();
        assert!(matches!(err, RuleCompileError::OverLimits(_)), "{err}");
        assert!(err.to_string().contains("E045"), "{err}");
        let long = vec!["x".repeat(crate::resolve::MAX_WORD_BYTES + 1)];
        assert!(matches!(
            RuleIndex::new(&[rule(long)]),
            Err(RuleCompileError::OverLimits(_))
        ));
    }

    #[test]
    fn seed_002_rules() {
        let ix = index(SEED_002);
        let facts = |rcpt: &str, scope| Facts {
            recipients: vec![rcpt.to_string()],
            sender: "billing@northwindtraders.com",
            scope,
            ..Facts::default()
        };
        // A word inside another word still counts: tenant1.myexchlab.com contains myexchlab.com.
        let f = facts("John.Smith@Tenant1.MyExchLab.com", Scope::Outside);
        assert_eq!(
            names(&ix, &ix.run(&f)),
            ["Emails from Outside to myexchlab.com Inside"]
        );
        let f = facts("accounts@wingtiptoys.com", Scope::Outside);
        assert_eq!(
            names(&ix, &ix.run(&f)),
            ["Drop email if Outside of Organization"]
        );
        let f = facts("accounts@wingtiptoys.com", Scope::Inside);
        assert!(ix.run(&f).is_empty());
        let all = ix.run_all(&facts("accounts@wingtiptoys.com", Scope::Outside));
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].outcome, Outcome::ConditionFailed(1));
        assert_eq!(all[3].outcome, Outcome::Matched);
    }

    /// Verification conditions read `Facts::auth`; a message not verified is `none` for every
    /// method, so `dmarc fail` never holds for it and `dkim none` does.
    #[test]
    fn auth_conditions_read_what_verification_found() {
        let ix = index(
            r#"rule "Reject" { if dmarc fail, permerror; except dkim pass for partner.example; reject 550 5.7.1 "x" }
rule "Unsigned" { if dkim none; log "unsigned" }
rule "Partner" { if dkim pass, neutral for partner.example, other.example; log "partner" }
"#,
        );
        assert!(ix.tests_auth());
        let fired = |spec: Option<&str>| {
            let found = spec.map(|s| AuthResults::from_spec(s).unwrap());
            let f = Facts {
                auth: found.as_ref(),
                ..Facts::default()
            };
            let fast = names(&ix, &ix.run(&f));
            let all: Vec<usize> = ix
                .run_all(&f)
                .iter()
                .filter(|e| e.outcome == Outcome::Matched)
                .map(|e| e.rule)
                .collect();
            assert_eq!(fast, names(&ix, &all), "{spec:?}");
            fast
        };
        assert_eq!(fired(None), ["Unsigned"]);
        // `reject` ends rule processing.
        assert_eq!(fired(Some("dmarc=fail")), ["Reject"]);
        assert_eq!(fired(Some("dmarc=none")), ["Unsigned"]);
        assert_eq!(
            fired(Some("dmarc=permerror, dkim=fail:example.org")),
            ["Reject"]
        );
        assert_eq!(
            fired(Some(
                "dmarc=fail, dkim=fail:example.org, dkim=pass:Partner.Example"
            )),
            ["Partner"]
        );
        assert_eq!(
            fired(Some("dmarc=pass, dkim=pass:example.org")),
            Vec::<String>::new()
        );
        assert_eq!(fired(Some("dkim=neutral:other.example")), ["Partner"]);
        assert!(!index(r#"rule "R" { if size over 1MB; stop }"#).tests_auth());
    }

    /// `domain-is` holds for the domain and its subdomains, never for look-alikes that merely
    /// contain it (the forms that defeated seed 002's `contains`).
    #[test]
    fn domain_is_ignores_look_alikes() {
        let ix = index(
            r#"rule "Ours" { if recipient domain-is myexchlab.com; stop }
rule "Contains" { if recipient contains-words "myexchlab.com"; log "x" }
"#,
        );
        let fired = |rcpt: &str| {
            let f = Facts {
                recipients: vec![rcpt.to_string()],
                ..Facts::default()
            };
            names(&ix, &ix.run(&f))
        };
        for ours in [
            "John.Smith@myexchlab.com",
            "a@Tenant1.MyExchLab.COM",
            "a@deep.tenant2.myexchlab.com",
        ] {
            assert_eq!(fired(ours), ["Ours"], "{ours}");
        }
        for look_alike in [
            "victim@myexchlab.com.evil.example",
            "myexchlab.com@evil.example",
            "\"myexchlab.com\"@evil.example",
            "a@notmyexchlab.com",
            "myexchlab.com",
        ] {
            assert!(
                !fired(look_alike).contains(&"Ours".to_string()),
                "{look_alike}"
            );
        }
        // What the W013 warning says of `contains-words`: the look-alikes pass it.
        assert_eq!(fired("victim@myexchlab.com.evil.example"), ["Contains"]);
        assert_eq!(fired("myexchlab.com@evil.example"), ["Contains"]);
    }

    #[test]
    fn words_are_bounded_and_exceptions_win() {
        let ix = index(
            r#"rule "Invoices" { if subject contains-words "invoice"; except header "X-Tenant" contains "trusted"; prepend-subject "[check] " }
rule "Sizes" { if size over 1MB; if client-ip in 10.0.0.0/8; log "big internal" }
"#,
        );
        let mut f = Facts {
            subject: Some("Your INVOICE, attached"),
            headers: vec![("x-tenant", "partner")],
            size: 2 * 1024 * 1024,
            client_ip: Some("10.1.2.3".parse().unwrap()),
            ..Facts::default()
        };
        assert_eq!(names(&ix, &ix.run(&f)), ["Invoices", "Sizes"]);
        f.subject = Some("invoices attached");
        assert_eq!(names(&ix, &ix.run(&f)), ["Sizes"]);
        f.subject = Some("invoice");
        f.headers = vec![("X-Tenant", "a trusted one")];
        assert_eq!(names(&ix, &ix.run(&f)), ["Sizes"]);
        assert_eq!(ix.run_all(&f)[0].outcome, Outcome::Excepted(0));
    }

    #[test]
    fn fast_path_agrees_with_every_rule_evaluated() {
        let mut src = String::new();
        for i in 0..300 {
            let cond = match i % 8 {
                0 => format!("if recipient contains \"w{}\"", i % 17),
                1 => format!("if subject contains-words \"s{}\"", i % 5),
                2 => format!("if connector \"C{}\"", i % 3),
                3 => "if sender inside".to_string(),
                4 => format!("if originating-org org{}.example", i % 4),
                5 => format!("if recipient domain-is w{}.example", i % 13),
                6 => format!("if sender domain-is d{}.example", i % 3),
                _ => format!("if subject matches \"^re{}\"", i % 7),
            };
            let action = if i % 50 == 49 { "stop" } else { "log \"x\"" };
            src.push_str(&format!(
                "rule \"R{i}\" {{ priority {i}; {cond}; {action} }}\n"
            ));
        }
        for i in 0..3 {
            src.push_str(&format!(
                "receive-connector \"C{i}\" {{ listen 0.0.0.0:{} }}\n",
                2500 + i
            ));
        }
        let ix = index(&src);
        let mut seed = 7u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let (mut fired_total, mut stopped) = (0, 0);
        for _ in 0..500 {
            let rcpt = match next(4) {
                0 => format!("a@sub.w{}.example", next(20)),
                1 => format!("w{}.example@evil.example", next(20)),
                _ => format!("a@w{}.example", next(20)),
            };
            let sender = format!("b@d{}.EXAMPLE", next(5));
            let subject = format!("re{} s{} x", next(9), next(6));
            let conn = format!("C{}", next(4));
            let org = format!("org{}.example", next(5));
            let f = Facts {
                recipients: vec![rcpt],
                sender: &sender,
                subject: Some(&subject),
                connector: Some(&conn),
                originating_org: Some(&org),
                scope: if next(2) == 0 {
                    Scope::Inside
                } else {
                    Scope::Outside
                },
                ..Facts::default()
            };
            let fast = ix.run(&f);
            let slow: Vec<usize> = ix
                .run_all(&f)
                .into_iter()
                .filter(|e| e.outcome == Outcome::Matched)
                .map(|e| e.rule)
                .collect();
            assert_eq!(fast, slow, "{f:?}");
            fired_total += fast.len();
            stopped += usize::from(
                fast.last()
                    .is_some_and(|&i| RuleIndex::stops(&ix.rules()[i])),
            );
        }
        // The comparison means something only if rules fire and some runs stop early.
        assert!(fired_total > 1000, "{fired_total}");
        assert!(stopped > 10, "{stopped}");
    }
}
