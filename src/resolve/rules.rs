//! Transport rules: priorities, modes, conditions and actions, each value checked
//! (patterns compiled under a size limit, status codes, header names).

use super::values;
use super::{RefKind, Resolver};
use crate::ast::{self, ActionKind, PredicateKind, RuleStatement, Text};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Action, Predicate, RuleMode, Scope, Spanned, TextMatch, TextOp, TransportRule};

/// The largest compiled program one pattern may produce; patterns are administrator input
/// evaluated on every message, so they are kept small.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Headers a rule may not set or remove: mailflow's loop detection, bounces and tracking
/// depend on them.
const PROTECTED_HEADERS: &[&str] = &["received", "return-path", "message-id"];

/// Why a `matches` pattern cannot be used, if it cannot. Parsing is enough to find syntax
/// errors and is far cheaper than compiling (a rule set may hold thousands of patterns);
/// only counted repetitions (`{n,m}`), the way a small pattern grows into a huge program,
/// are compiled to hold them to the size limit.
pub fn pattern_problem(p: &str) -> Option<String> {
    let parsed = regex_syntax::ParserBuilder::new()
        .case_insensitive(true)
        .build()
        .parse(p);
    if let Err(e) = parsed {
        return Some(match &e {
            regex_syntax::Error::Parse(e) => e.kind().to_string(),
            regex_syntax::Error::Translate(e) => e.kind().to_string(),
            other => other.to_string(),
        });
    }
    if p.contains('{') {
        if let Err(e) = compile_pattern(p) {
            return Some(match e {
                regex::Error::CompiledTooBig(_) => format!(
                    "the pattern compiles to more than the {} KiB limit",
                    PATTERN_SIZE_LIMIT / 1024
                ),
                other => other.to_string(),
            });
        }
    }
    None
}

/// Compiles a `matches` pattern the way the evaluator will.
pub fn compile_pattern(p: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(p)
        .case_insensitive(true)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
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
            _ => TextOp::Matches,
        };
        let mut ok = true;
        for v in values {
            if v.value.is_empty() {
                ok = false;
                self.diags.push(
                    Diagnostic::new(Code::E014, "an empty word or pattern matches everything")
                        .primary(v.span, "empty")
                        .help("remove it, or remove the condition"),
                );
            } else if op == TextOp::Matches {
                if let Some(why) = pattern_problem(&v.value) {
                    ok = false;
                    self.diags.push(
                        Diagnostic::new(
                            Code::E041,
                            format!("`{}` is not a valid pattern", v.value),
                        )
                        .primary(v.span, why)
                        .help("patterns use Rust regex syntax: no look-around or back-references"),
                    );
                }
            }
        }
        ok.then(|| TextMatch {
            op,
            values: values.iter().map(|v| v.value.clone()).collect(),
        })
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
        Some(Action::Reject {
            code: code_n,
            enhanced: enhanced_s,
            text: text.map_or_else(
                || "Delivery not authorized, message refused".to_string(),
                |t| t.value.clone(),
            ),
        })
    }
}
