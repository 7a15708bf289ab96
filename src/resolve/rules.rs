//! Transport rules: priorities, modes, conditions and actions, each value checked
//! (patterns compiled under a size limit, status codes, header names).

use super::values;
use super::{RefKind, Resolver};
use crate::ast::{self, ActionKind, PredicateKind, RuleStatement, Text};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Action, Predicate, RuleMode, Scope, Spanned, TextMatch, TextOp, TransportRule};
use crate::smtp::Status;

// Limits on what a rule set may ask the evaluator to hold in memory, reported by `check` as
// E045 (E041 for one pattern's compiled size). The measurements behind each number are in
// BENCHMARKS.md, "Rule-set limits".

/// The longest `contains` word or `matches` pattern, in characters. Real words are addresses,
/// domains and phrases (tens of characters); a 1,000-character pattern of `\w` already compiles
/// to 8.8 MB, past [`PATTERN_SIZE_LIMIT`].
pub const MAX_TEXT_CHARS: usize = 1_000;

/// The most `contains`/`contains-words` words, counted every time one is written, across the
/// rule set. Each costs a slot and a table entry, and short words cost the automaton about
/// 400 bytes each while it is built (216,000 three-letter words: an 88 MB intermediate NFA).
pub const MAX_WORDS: usize = 200_000;

/// The most bytes of distinct `contains` words (ASCII-lowercased, as the automaton holds
/// them) across the rule set. The automaton takes 13-20 bytes per byte of words once built and
/// 26-56 while it is built: 4 MiB of words gives 69-80 MB (peak RSS 265 MB, about 9 s to build),
/// far below [`crate::compile::AUTOMATON_MEMORY_LIMIT`].
pub const MAX_WORD_BYTES: usize = 4 * 1024 * 1024;

/// The most `matches` patterns across the rule set. The 10,000-rule benchmark has 10,000.
pub const MAX_MATCHES_PATTERNS: usize = 20_000;

/// The largest compiled program (Thompson NFA, forward or reverse) one pattern may produce;
/// patterns are administrator input evaluated on every message, so they are kept small. Real
/// patterns stay far below: `\w+@example\.com` is 18 KB forward and 39 KB reverse, `\w{10}` 176
/// and 385 KB; 512 KiB still admits those.
pub const PATTERN_SIZE_LIMIT: usize = 512 * 1024;

/// The lazy DFA cache of one compiled pattern.
pub const PATTERN_CACHE_LIMIT: usize = 1024 * 1024;

/// The most the forward programs of all `matches` patterns may take together. A compiled
/// `regex` holds about three times its forward program (forward and reverse NFAs, prefilters),
/// so 32 MiB keeps the patterns of a rule set to about 100 MB once all are in use; the
/// 10,000 patterns of the benchmark take 9.4 MB.
pub const PATTERNS_TOTAL_SIZE_LIMIT: usize = 32 * 1024 * 1024;

/// Running totals of one rule set against the limits above; each total is reported once, at
/// the word or pattern that passes it.
#[derive(Debug, Default)]
pub(super) struct Budget {
    words: usize,
    distinct: rustc_hash::FxHashSet<String>,
    word_bytes: usize,
    patterns: usize,
    pattern_bytes: usize,
    words_over: bool,
    patterns_over: bool,
}

/// Why a `matches` pattern cannot be used, if it cannot; otherwise the size of its forward
/// program, which counts toward [`PATTERNS_TOTAL_SIZE_LIMIT`]. Building the forward NFA alone
/// is cheap (about 4 µs for `^\[ok1\]`, 200 µs for a `\w` pattern); a pattern whose forward
/// program is over a quarter of the limit is compiled in full, as the evaluator will, because
/// its reverse program is 2-3 times larger and must fit too.
pub fn pattern_problem(p: &str) -> Result<usize, String> {
    thread_local! {
        // Reused: a fresh parser and compiler per pattern cost three times as much.
        static PARSER: std::cell::RefCell<regex_syntax::Parser> = std::cell::RefCell::new(
            regex_syntax::ParserBuilder::new().case_insensitive(true).build(),
        );
        static NFA: regex_automata::nfa::thompson::Compiler = {
            let mut c = regex_automata::nfa::thompson::Compiler::new();
            c.configure(
                regex_automata::nfa::thompson::Config::new()
                    .nfa_size_limit(Some(PATTERN_SIZE_LIMIT)),
            );
            c
        };
    }
    let hir = PARSER.with_borrow_mut(|parser| {
        parser.parse(p).map_err(|e| match &e {
            regex_syntax::Error::Parse(e) => e.kind().to_string(),
            regex_syntax::Error::Translate(e) => e.kind().to_string(),
            other => other.to_string(),
        })
    })?;
    let too_big = || {
        format!(
            "the pattern compiles to more than the {} KiB limit",
            PATTERN_SIZE_LIMIT / 1024
        )
    };
    let forward = NFA.with(|c| match c.build_from_hir(&hir) {
        Ok(nfa) => Ok(nfa.memory_usage()),
        Err(e) if e.size_limit().is_some() => Err(too_big()),
        Err(e) => Err(e.to_string()),
    })?;
    if forward > PATTERN_SIZE_LIMIT / 4 {
        compile_pattern(p).map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => too_big(),
            other => other.to_string(),
        })?;
    }
    Ok(forward)
}

/// Compiles a `matches` pattern the way the evaluator will.
pub fn compile_pattern(p: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(p)
        .case_insensitive(true)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_CACHE_LIMIT)
        .build()
}

/// Headers a rule may not set or remove: mailflow's loop detection, bounces and tracking
/// depend on them.
const PROTECTED_HEADERS: &[&str] = &["received", "return-path", "message-id"];

fn mib(n: usize) -> usize {
    n / (1024 * 1024)
}

impl Resolver<'_> {
    pub(super) fn rule(&mut self, r: &ast::Rule) {
        let mut priority: Option<Spanned<u32>> = None;
        let mut mode: Option<Spanned<RuleMode>> = None;
        let mut conditions = Vec::new();
        let mut exceptions = Vec::new();
        let mut actions = Vec::new();
        let errors_before = self.diags.len();
        for st in &r.statements {
            match st {
                RuleStatement::Priority(t) => {
                    if let Some(first) = &priority {
                        self.twice("priority", t, first.span);
                    } else if let Some(n) = self.check(values::number(t, 0, u64::from(u32::MAX))) {
                        priority = Some(Spanned::new(u32::try_from(n).unwrap_or(u32::MAX), t.span));
                    }
                }
                RuleStatement::Mode(t) => {
                    if let Some(first) = &mode {
                        self.twice("mode", t, first.span);
                    } else if let Some(m) = self.check(values::choice(
                        t,
                        "rule mode",
                        &[("enforce", RuleMode::Enforce), ("audit", RuleMode::Audit)],
                    )) {
                        mode = Some(Spanned::new(m, t.span));
                    }
                }
                RuleStatement::Condition(p) => {
                    if let Some(p) = self.predicate(p) {
                        conditions.push(p);
                    }
                }
                RuleStatement::Exception(p) => {
                    if let Some(p) = self.predicate(p) {
                        exceptions.push(p);
                    }
                }
                RuleStatement::Action(a) => {
                    if let Some(a) = self.action(a) {
                        actions.push(a);
                    }
                }
            }
        }
        let has_action = r
            .statements
            .iter()
            .any(|s| matches!(s, RuleStatement::Action(_)));
        if !has_action {
            self.diags.push(
                Diagnostic::new(Code::E044, format!("rule `{}` has no action", r.name.value))
                    .primary(r.name.span, "this rule would match and do nothing")
                    .help("add an action such as `stop`, `delete` or `reject`; use `mode audit` to watch a rule without enforcing it"),
            );
        }
        let partial = self.diags.len() > errors_before;
        self.set.rules.push(TransportRule {
            partial,
            name: Spanned::new(r.name.value.clone(), r.name.span),
            span: r.span,
            priority,
            mode: mode.map_or(RuleMode::Enforce, |m| m.value),
            conditions,
            exceptions,
            actions,
        });
    }

    fn twice(&mut self, what: &str, t: &Text, first: crate::source::Span) {
        self.diags.push(
            Diagnostic::new(Code::E016, format!("`{what}` is given more than once"))
                .primary(t.span, "given again here")
                .secondary(first, "first given here")
                .help("keep one of them"),
        );
    }

    fn text_match(&mut self, op: &Text, values: &[Text]) -> Option<TextMatch> {
        let op = match op.value.as_str() {
            "contains" => TextOp::Contains,
            "contains-words" => TextOp::ContainsWords,
            "domain-is" => TextOp::DomainIs,
            _ => TextOp::Matches,
        };
        if op == TextOp::DomainIs {
            return self.domains_match(values);
        }
        let what = if op == TextOp::Matches {
            "pattern"
        } else {
            "word"
        };
        let mut ok = true;
        for v in values {
            let chars = v.value.chars().count();
            if v.value.is_empty() {
                ok = false;
                self.diags.push(
                    Diagnostic::new(Code::E014, "an empty word or pattern matches everything")
                        .primary(v.span, "empty")
                        .help("remove it, or remove the condition"),
                );
            } else if chars > MAX_TEXT_CHARS {
                ok = false;
                self.diags.push(
                    Diagnostic::new(
                        Code::E045,
                        format!("this {what} is {chars} characters long, more than the {MAX_TEXT_CHARS} allowed"),
                    )
                    .primary(v.span, format!("a {what} of {chars} characters"))
                    .help(if op == TextOp::Matches {
                        "split it into several patterns: the condition holds when any of them matches"
                    } else {
                        "match a shorter, telling part of it: `contains` finds words inside longer text"
                    }),
                );
            } else if op == TextOp::Matches {
                match pattern_problem(&v.value) {
                    Err(why) => {
                        ok = false;
                        self.diags.push(
                            Diagnostic::new(
                                Code::E041,
                                format!("`{}` is not a valid pattern", v.value),
                            )
                            .primary(v.span, why)
                            .help(
                                "patterns use Rust regex syntax: no look-around or back-references",
                            ),
                        );
                    }
                    Ok(size) => ok &= self.count_pattern(v, size),
                }
            } else {
                ok &= self.count_word(v);
            }
        }
        ok.then(|| TextMatch {
            op,
            values: values.iter().map(|v| v.value.clone()).collect(),
        })
    }

    /// `domain-is`: each value a plain domain (lowercased).
    fn domains_match(&mut self, values: &[Text]) -> Option<TextMatch> {
        let domains: Vec<String> = values
            .iter()
            .filter_map(|v| self.check(values::domain(v)))
            .collect();
        (domains.len() == values.len()).then_some(TextMatch {
            op: TextOp::DomainIs,
            values: domains,
        })
    }

    /// Adds a `contains` word to the rule set's totals; false once they are over the limits
    /// (the first word over is reported; later ones are left out quietly).
    fn count_word(&mut self, v: &Text) -> bool {
        let b = &mut self.budget;
        if b.words_over {
            return false;
        }
        b.words += 1;
        let lower = v.value.to_ascii_lowercase();
        if !b.distinct.contains(&lower) {
            b.word_bytes += lower.len();
            b.distinct.insert(lower);
        }
        let message = if b.words > MAX_WORDS {
            format!("the rule set has more than {MAX_WORDS} `contains` words")
        } else if b.word_bytes > MAX_WORD_BYTES {
            format!(
                "the rule set's `contains` words add up to more than {} MiB",
                mib(MAX_WORD_BYTES)
            )
        } else {
            return true;
        };
        b.words_over = true;
        b.distinct = Default::default();
        self.diags.push(
            Diagnostic::new(Code::E045, message)
                .primary(v.span, "the words reach the limit here")
                .help("every `contains` word of every rule is held in one automaton in memory; match on what the words share (the domain rather than each address in it), or split the rules between relays"),
        );
        false
    }

    /// Adds a `matches` pattern (its forward program's size) to the rule set's totals.
    fn count_pattern(&mut self, v: &Text, size: usize) -> bool {
        let b = &mut self.budget;
        if b.patterns_over {
            return false;
        }
        b.patterns += 1;
        b.pattern_bytes += size;
        let message = if b.patterns > MAX_MATCHES_PATTERNS {
            format!("the rule set has more than {MAX_MATCHES_PATTERNS} `matches` patterns")
        } else if b.pattern_bytes > PATTERNS_TOTAL_SIZE_LIMIT {
            format!(
                "the rule set's `matches` patterns compile to more than {} MiB",
                mib(PATTERNS_TOTAL_SIZE_LIMIT)
            )
        } else {
            return true;
        };
        b.patterns_over = true;
        self.diags.push(
            Diagnostic::new(Code::E045, message)
                .primary(v.span, format!("the patterns reach the limit here (this one compiles to {} KiB)", size.div_ceil(1024)))
                .help("every pattern is compiled and kept for the life of the rule set; use `contains` for fixed text, and ascii classes such as `[a-z0-9]` instead of `\\w`, which compiles to all of Unicode"),
        );
        false
    }

    fn header_name(&mut self, t: &Text, setting: bool) -> Option<String> {
        let bad = t.value.is_empty() || t.value.chars().any(|c| !c.is_ascii_graphic() || c == ':');
        if bad {
            self.diags.push(
                Diagnostic::new(
                    Code::E043,
                    format!("`{}` is not a valid header name", t.value),
                )
                .primary(
                    t.span,
                    "header names are printable ascii without spaces or colons",
                )
                .help("write a name such as `X-Mailflow-Tag`"),
            );
            return None;
        }
        if setting && PROTECTED_HEADERS.contains(&t.value.to_ascii_lowercase().as_str()) {
            self.diags.push(
                Diagnostic::new(Code::E043, format!("rules may not change the `{}` header", t.value))
                    .primary(t.span, "mailflow relies on this header")
                    .help("Received, Return-Path and Message-ID are kept as they are for loop detection, bounces and tracking"),
            );
            return None;
        }
        Some(t.value.clone())
    }

    fn predicate(&mut self, p: &ast::Predicate) -> Option<Spanned<Predicate>> {
        let value = match &p.kind {
            PredicateKind::SenderScope(t) => Predicate::SenderScope(if t.value == "inside" {
                Scope::Inside
            } else {
                Scope::Outside
            }),
            PredicateKind::Address { field, op, values } => {
                let m = self.text_match(op, values)?;
                if field.value == "recipient" {
                    Predicate::RecipientAddress(m)
                } else {
                    Predicate::SenderAddress(m)
                }
            }
            PredicateKind::Header { op, .. } | PredicateKind::Subject { op, .. }
                if op.value == "domain-is" =>
            {
                self.diags.push(
                    Diagnostic::new(Code::E014, "`domain-is` tests an address's domain")
                        .primary(op.span, "this text is not an address")
                        .help("use `domain-is` with `recipient` or `sender`; for text, use `contains` or `matches`"),
                );
                return None;
            }
            PredicateKind::Header { name, op, values } => {
                let name = self.header_name(name, false);
                let m = self.text_match(op, values)?;
                Predicate::Header {
                    name: name?,
                    matcher: m,
                }
            }
            PredicateKind::Subject { op, values } => {
                Predicate::Subject(self.text_match(op, values)?)
            }
            PredicateKind::SizeOver(t) => Predicate::SizeOver(self.check(values::size(t))?),
            PredicateKind::ClientIp(ts) => {
                let ranges: Vec<_> = ts
                    .iter()
                    .filter_map(|t| self.check(values::ip_range(t)))
                    .collect();
                if ranges.len() != ts.len() {
                    return None;
                }
                Predicate::ClientIp(ranges)
            }
            PredicateKind::Connector(ts) => {
                for t in ts {
                    self.reference(RefKind::ReceiveConnector, t);
                }
                Predicate::Connector(ts.iter().map(|t| t.value.clone()).collect())
            }
            PredicateKind::OriginatingOrg(ts) => {
                let orgs: Vec<_> = ts
                    .iter()
                    .filter_map(|t| self.check(values::domain(t)))
                    .collect();
                if orgs.len() != ts.len() {
                    return None;
                }
                Predicate::OriginatingOrg(orgs)
            }
            PredicateKind::Auth {
                method,
                results,
                domains,
                for_kw,
            } => self.auth_predicate(method, results, domains, *for_kw)?,
        };
        Some(Spanned::new(value, p.span))
    }

    fn addresses(&mut self, ts: &[Text]) -> Option<Vec<crate::model::Address>> {
        let out: Vec<_> = ts
            .iter()
            .filter_map(|t| self.check(values::address(t)))
            .collect();
        (out.len() == ts.len()).then_some(out)
    }

    fn action(&mut self, a: &ast::Action) -> Option<Spanned<Action>> {
        let value = match &a.kind {
            ActionKind::Stop => Action::Stop,
            ActionKind::Delete => Action::Delete,
            ActionKind::Disconnect => Action::Disconnect,
            ActionKind::Reject {
                code,
                enhanced,
                text,
            } => self.reject(code.as_ref(), enhanced.as_ref(), text.as_ref())?,
            ActionKind::RedirectTo(ts) => Action::RedirectTo(self.addresses(ts)?),
            ActionKind::AddRecipient(ts) => Action::AddRecipient(self.addresses(ts)?),
            ActionKind::CopyTo(ts) => Action::CopyTo(self.addresses(ts)?),
            ActionKind::BlindCopyTo(ts) => Action::BlindCopyTo(self.addresses(ts)?),
            ActionKind::SetHeader(n, v) => Action::SetHeader {
                name: self.header_name(n, true)?,
                value: v.value.clone(),
            },
            ActionKind::RemoveHeader(n) => Action::RemoveHeader(self.header_name(n, true)?),
            ActionKind::PrependSubject(t) => Action::PrependSubject(t.value.clone()),
            ActionKind::Quarantine(t) => Action::Quarantine(self.check(values::address(t))?),
            ActionKind::Log(t) => Action::Log(t.value.clone()),
        };
        Some(Spanned::new(value, a.span))
    }

    fn reject(
        &mut self,
        code: Option<&Text>,
        enhanced: Option<&Text>,
        text: Option<&Text>,
    ) -> Option<Action> {
        let code_n = match code {
            None => 550,
            Some(t) => match t.value.parse::<u16>() {
                Ok(n) if (400..=599).contains(&n) => n,
                _ => {
                    self.diags.push(
                        Diagnostic::new(Code::E042, format!("`{}` is not a rejection code", t.value))
                            .primary(t.span, "expected a 4xx or 5xx smtp code")
                            .help("write e.g. `reject 550 5.7.1 \"Delivery not authorized, message refused\"`"),
                    );
                    return None;
                }
            },
        };
        let class = code_n / 100;
        let enhanced_s = match enhanced {
            None => format!("{class}.7.1"),
            Some(t) => {
                let parts: Vec<&str> = t.value.split('.').collect();
                let well_formed = parts.len() == 3
                    && parts.iter().all(|p| {
                        !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit())
                    });
                if !well_formed
                    || parts.first().copied() != Some(if class == 4 { "4" } else { "5" })
                {
                    self.diags.push(
                        Diagnostic::new(Code::E042, format!("`{}` is not an enhanced status code for {code_n}", t.value))
                            .primary(t.span, format!("expected `{class}.x.y`"))
                            .help(format!("the first digit of the enhanced code matches the smtp code's class, e.g. `{class}.7.1`")),
                    );
                    return None;
                }
                t.value.clone()
            }
        };
        Some(Action::Reject(Status {
            code: code_n,
            enhanced: enhanced_s,
            text: text.map_or_else(
                || "Delivery not authorized, message refused".to_string(),
                |t| t.value.clone(),
            ),
        }))
    }
}
