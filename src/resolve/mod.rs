//! Step two: syntax tree to typed rule set. Every value is checked here (addresses, ranges,
//! sizes, files), names are resolved across all files of a rule set, and rules are put in
//! the order they run. Cross-object judgement calls (shadowing, open relays) are `lint`'s.

mod auth_predicate;
mod authentication;
mod connectors;
mod recipients;
mod rewrites;
mod rules;
mod settings;
mod test_cases;
mod values;

pub(crate) use values::domain_problem;
// The relay's `--listen`, `--remote` and `--smart-host` are checked by these, the functions
// that check `listen`, `remote` and `smart-host` in a rule file, so the command line accepts
// exactly what a rule file accepts and refuses the rest with the same diagnostic.
pub use values::{ip_range, smart_host, socket_addr};

pub use rules::{
    MAX_MATCHES_PATTERNS, MAX_TEXT_CHARS, MAX_WORD_BYTES, MAX_WORDS, PATTERN_CACHE_LIMIT,
    PATTERN_SIZE_LIMIT, PATTERNS_TOTAL_SIZE_LIMIT, compile_pattern, pattern_problem,
};

use crate::ast::{BrokenItem, Item, Text};
use crate::diagnostic::{Code, Diagnostic, Severity, did_you_mean};
use crate::model::{AcceptedDomain, DomainKind, RuleSet, Spanned};
use crate::source::{SourceMap, Span};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// What a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// A `receive-connector` (rule `connector` conditions, test `connector`).
    ReceiveConnector,
    /// A `send-connector` (`expect delivered ... via`).
    SendConnector,
    /// A `contact`, `group` or `mail-user` (group `members`).
    Recipient,
    /// A `rule` (`expect fired`, `expect not-fired`).
    Rule,
}

/// A name written where a definition is meant: `connector "X"`, `members "A"`, ...
pub type Reference = (RefKind, Text);

impl RefKind {
    /// What it is, in words (`receive connector`).
    pub fn describe(self) -> &'static str {
        match self {
            RefKind::ReceiveConnector => "receive connector",
            RefKind::SendConnector => "send connector",
            RefKind::Recipient => "recipient",
            RefKind::Rule => "rule",
        }
    }

    fn keywords(self) -> &'static [&'static str] {
        match self {
            RefKind::ReceiveConnector => &["receive-connector"],
            RefKind::SendConnector => &["send-connector"],
            RefKind::Recipient => &["contact", "group", "mail-user", "deleted"],
            RefKind::Rule => &["rule"],
        }
    }
}

pub(crate) struct Resolver<'a> {
    sources: &'a SourceMap,
    pub(crate) diags: Vec<Diagnostic>,
    pub(crate) set: RuleSet,
    refs: Vec<(RefKind, Text)>,
    budget: rules::Budget,
    /// Domains of `dkim-key` blocks with errors, so that naming them elsewhere is not
    /// reported a second time.
    broken_dkim_domains: Vec<String>,
}

/// Resolves the items of one rule set (all its files). `broken` lists items that did not
/// parse, so references to them are not reported again.
pub fn resolve(
    sources: &SourceMap,
    items: &[Item],
    broken: &[BrokenItem],
) -> (RuleSet, Vec<Diagnostic>) {
    let (set, diags, _) = resolve_with_references(sources, items, broken);
    (set, diags)
}

/// [`resolve`], also returning every name reference met (for go-to-definition).
pub fn resolve_with_references(
    sources: &SourceMap,
    items: &[Item],
    broken: &[BrokenItem],
) -> (RuleSet, Vec<Diagnostic>, Vec<Reference>) {
    let mut r = Resolver {
        sources,
        diags: Vec::new(),
        set: RuleSet::default(),
        refs: Vec::new(),
        budget: rules::Budget::default(),
        broken_dkim_domains: Vec::new(),
    };
    for item in items {
        match item {
            Item::Include(_) | Item::ImportRewrites(_) => {}
            Item::AcceptedDomain {
                domain,
                kind,
                verify,
                span,
            } => r.accepted_domain(domain, kind.as_ref(), *verify, *span),
            Item::ReceiveConnector(b) => r.receive_connector(b),
            Item::SendConnector(b) => r.send_connector(b),
            Item::DkimKey(b) => r.dkim_key(b),
            Item::Authentication { settings, span } => r.authentication(settings, *span),
            Item::Recipient {
                deleted,
                kind,
                block,
            } => r.recipient(*deleted, kind, block),
            Item::Rewrite(rw) => r.rewrite(rw),
            Item::Rule(rule) => r.rule(rule),
            Item::Test(t) => r.test(t),
        }
    }
    r.duplicate_names();
    r.undefined_references(broken);
    r.order_rules();
    r.duplicate_addresses();
    r.authentication_references();
    r.test_envelopes();
    (r.set, r.diags, r.refs)
}

/// Every setting name a block accepts (for the keyword documentation's test).
#[cfg(test)]
pub(crate) fn setting_names() -> Vec<&'static str> {
    [
        connectors::RECEIVE,
        connectors::SEND,
        recipients::CONTACT,
        recipients::GROUP,
        test_cases::TEST,
        authentication::DKIM_KEY,
        authentication::AUTHENTICATION,
    ]
    .iter()
    .flat_map(|s| s.iter().map(|(name, _)| *name))
    .collect()
}

/// A short reason for an I/O error, without the OS error number.
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

impl Resolver<'_> {
    /// Records a failed check and turns the result into an option.
    pub(crate) fn check<T>(&mut self, r: Result<T, Diagnostic>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    pub(crate) fn reference(&mut self, kind: RefKind, t: &Text) {
        self.refs.push((kind, t.clone()));
    }

    /// A path written in a file, resolved against that file's folder.
    pub(crate) fn relative_path(&self, t: &Text) -> PathBuf {
        let base = self
            .sources
            .path(t.span.file)
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        base.join(&t.value)
    }

    /// Whether an error was already reported inside `block` (to avoid follow-on errors).
    pub(crate) fn had_errors_in(&self, block: &crate::ast::Block) -> bool {
        self.diags.iter().any(|d| {
            d.severity() == Severity::Error
                && d.primary_span().is_some_and(|s| {
                    s.file == block.span.file
                        && s.start >= block.span.start
                        && s.end <= block.span.end
                })
        })
    }

    fn accepted_domain(
        &mut self,
        domain: &Text,
        kind: Option<&Text>,
        verify: Option<Span>,
        span: Span,
    ) {
        let Some(pattern) = self.check(values::domain_pattern(domain)) else {
            return;
        };
        let kind = match kind {
            None => DomainKind::Authoritative,
            Some(t) => {
                let Some(k) = self.check(values::choice(
                    t,
                    "accepted domain type",
                    &[
                        ("authoritative", DomainKind::Authoritative),
                        ("internal-relay", DomainKind::InternalRelay),
                        ("external-relay", DomainKind::ExternalRelay),
                    ],
                )) else {
                    return;
                };
                k
            }
        };
        self.set.accepted_domains.push(AcceptedDomain {
            domain: Spanned::new(pattern, domain.span),
            kind,
            verify_recipients: verify,
            span,
        });
    }

    fn duplicate_names(&mut self) {
        let mut groups: Vec<(&str, Vec<(String, Span)>)> = vec![
            (
                "receive connector",
                self.set
                    .receive_connectors
                    .iter()
                    .map(|c| (c.name.value.clone(), c.name.span))
                    .collect(),
            ),
            (
                "send connector",
                self.set
                    .send_connectors
                    .iter()
                    .map(|c| (c.name.value.clone(), c.name.span))
                    .collect(),
            ),
            (
                "rule",
                self.set
                    .rules
                    .iter()
                    .map(|c| (c.name.value.clone(), c.name.span))
                    .collect(),
            ),
            (
                "recipient",
                self.set
                    .recipients
                    .iter()
                    .map(|c| (c.name.value.clone(), c.name.span))
                    .collect(),
            ),
            (
                "rewrite entry",
                self.set
                    .rewrites
                    .iter()
                    .filter(|r| r.named)
                    .map(|r| (r.name.clone(), r.span))
                    .collect(),
            ),
            (
                "test",
                self.set
                    .tests
                    .iter()
                    .map(|c| (c.name.value.clone(), c.name.span))
                    .collect(),
            ),
            (
                "accepted domain",
                self.set
                    .accepted_domains
                    .iter()
                    .map(|d| (d.domain.value.to_string(), d.domain.span))
                    .collect(),
            ),
        ];
        for (what, names) in groups.drain(..) {
            let mut seen: HashMap<&str, Span> = HashMap::new();
            for (name, span) in &names {
                if let Some(first) = seen.get(name.as_str()) {
                    self.diags.push(
                        Diagnostic::new(
                            Code::E011,
                            format!("the {what} `{name}` is defined twice"),
                        )
                        .primary(*span, "defined again here")
                        .secondary(*first, "first defined here")
                        .help(format!("rename one of them; {what} names must be unique")),
                    );
                } else {
                    seen.insert(name, *span);
                }
            }
        }
    }

    fn undefined_references(&mut self, broken: &[BrokenItem]) {
        let names = |kind: RefKind, set: &RuleSet| -> Vec<String> {
            match kind {
                RefKind::ReceiveConnector => set
                    .receive_connectors
                    .iter()
                    .map(|c| c.name.value.clone())
                    .collect(),
                RefKind::SendConnector => set
                    .send_connectors
                    .iter()
                    .map(|c| c.name.value.clone())
                    .collect(),
                RefKind::Recipient => set
                    .recipients
                    .iter()
                    .map(|c| c.name.value.clone())
                    .collect(),
                RefKind::Rule => set.rules.iter().map(|c| c.name.value.clone()).collect(),
            }
        };
        let refs = self.refs.clone();
        let mut cache: HashMap<RefKind, HashSet<String>> = HashMap::new();
        for (kind, t) in refs {
            let known = cache
                .entry(kind)
                .or_insert_with(|| names(kind, &self.set).into_iter().collect());
            if known.contains(&t.value) {
                continue;
            }
            let is_broken = broken.iter().any(|b| {
                kind.keywords().contains(&b.keyword.as_str())
                    && b.name.as_deref() == Some(t.value.as_str())
            });
            if is_broken {
                continue;
            }
            let mut d = Diagnostic::new(
                Code::E010,
                format!("no {} is named `{}`", kind.describe(), t.value),
            )
            .primary(t.span, format!("this {} is not defined", kind.describe()));
            let suggestion =
                did_you_mean(&t.value, known.iter().map(String::as_str)).map(str::to_string);
            d = match suggestion {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!(
                    "define the {} or fix the name (names are case-sensitive)",
                    kind.describe()
                )),
            };
            self.diags.push(d);
        }
    }

    /// Rules run by priority (0 first); rules without one run after, in file order.
    fn order_rules(&mut self) {
        let mut seen: HashMap<u32, Span> = HashMap::new();
        for rule in &self.set.rules {
            if let Some(p) = &rule.priority {
                if let Some(first) = seen.get(&p.value) {
                    self.diags.push(
                        Diagnostic::new(
                            Code::E040,
                            format!(
                                "rule `{}` has the same priority as another rule",
                                rule.name.value
                            ),
                        )
                        .primary(p.span, format!("priority {} again", p.value))
                        .secondary(*first, "first used here")
                        .help("give each rule its own priority; 0 runs first"),
                    );
                } else {
                    seen.insert(p.value, p.span);
                }
            }
        }
        self.set
            .rules
            .sort_by_key(|r| r.priority.as_ref().map_or(u64::MAX, |p| u64::from(p.value)));
    }

    fn duplicate_addresses(&mut self) {
        let mut owner: HashMap<String, (String, Span)> = HashMap::new();
        let mut found = Vec::new();
        for r in self.set.recipients.iter().filter(|r| !r.deleted) {
            for a in &r.addresses {
                match owner.get(&a.value.key()) {
                    Some((other, first)) if *other != r.name.value => {
                        found.push(
                            Diagnostic::new(
                                Code::E050,
                                format!("`{}` is claimed by `{other}` and `{}`", a.value, r.name.value),
                            )
                            .primary(a.span, format!("claimed by `{}` here", r.name.value))
                            .secondary(*first, format!("already claimed by `{other}`"))
                            .help("an address belongs to exactly one recipient: remove it from one of them"),
                        );
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(a.value.key(), (r.name.value.clone(), a.span));
                    }
                }
            }
        }
        self.diags.extend(found);
    }

    fn test_envelopes(&mut self) {
        let mut found = Vec::new();
        for t in &self.set.tests {
            let conn = t.connector.as_ref().and_then(|c| {
                self.set
                    .receive_connectors
                    .iter()
                    .find(|rc| rc.name.value == c.value)
            });
            if let (Some(c), Some(ip)) = (conn, &t.client_ip) {
                if !c.remote.is_empty() && !c.remote.iter().any(|r| r.value.contains(ip.value)) {
                    found.push(
                        Diagnostic::new(
                            Code::E060,
                            format!("`{}` is not in the remote ranges of `{}`", ip.value, c.name.value),
                        )
                        .primary(ip.span, "this client could not arrive on that connector")
                        .secondary(c.name.span, "connector defined here")
                        .help("give either `connector` or `client-ip`, or a client ip the connector accepts"),
                    );
                }
            }
            if let (Some(c), Some(_)) = (conn, &t.tls_peer) {
                if c.tls.value == crate::model::InboundTls::Off {
                    found.push(
                        Diagnostic::new(
                            Code::E060,
                            format!(
                                "test `{}` names a tls peer but `{}` has tls off",
                                t.name.value, c.name.value
                            ),
                        )
                        .primary(t.name.span, "no certificate can be presented without tls")
                        .secondary(c.tls.span, "tls is off here")
                        .help("remove `tls-peer`, or test through a connector with tls"),
                    );
                }
            }
        }
        self.diags.extend(found);
    }
}

/// Checks an address given outside a rule file (the command line), with the rules a rule
/// file's addresses follow; `<>` is the null sender (`Ok(None)`). The error is a message.
pub fn parse_sender(text: &str) -> Result<Option<crate::model::Address>, String> {
    let t = Text {
        value: text.to_string(),
        span: Span::new(crate::source::FileId(0), 0, 0),
        quoted: false,
    };
    values::sender(&t).map_err(|d| match &d.labels.first() {
        Some(l) => format!("{}: {}", d.message, l.message),
        None => d.message,
    })
}
