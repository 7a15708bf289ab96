//! The syntax tree of one rule file, as written: every value is still text with its span.
//! `resolve` turns it into the typed [`crate::model`]. Equality compares spans too;
//! `fmt` compares trees with their spans cleared.

use crate::source::Span;

/// A value as written: a bare atom or a quoted string (escapes already processed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The value (for strings, without quotes and with escapes applied).
    pub value: String,
    /// Where it is, quotes included.
    pub span: Span,
    /// Whether it was written in double quotes.
    pub quoted: bool,
}

/// One parsed file.
#[derive(Debug, Clone, Default)]
pub struct File {
    /// Top-level items in file order.
    pub items: Vec<Item>,
    /// Items that did not parse, by keyword and name, so that references to them are not
    /// reported a second time as undefined.
    pub broken: Vec<BrokenItem>,
}

/// What is known of an item that did not parse.
#[derive(Debug, Clone)]
pub struct BrokenItem {
    /// The top-level keyword it starts with (`rule`, `contact`, ...).
    pub keyword: String,
    /// Its quoted name, when one follows the keyword.
    pub name: Option<String>,
}

/// A top-level construct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `include "path"`.
    Include(Text),
    /// `import rewrites "path.csv"`.
    ImportRewrites(Text),
    /// `accepted-domain example.com internal-relay [verify-recipients]`.
    AcceptedDomain {
        /// The domain or `*.domain`.
        domain: Text,
        /// The type word, if given.
        kind: Option<Text>,
        /// The `verify-recipients` keyword, when present.
        verify: Option<Span>,
        /// The whole line.
        span: Span,
    },
    /// `receive-connector "name" { ... }`.
    ReceiveConnector(Block),
    /// `send-connector "name" { ... }`.
    SendConnector(Block),
    /// `dkim-key "domain" { selector S; key "FILE" }`: the name is the signing domain.
    DkimKey(Block),
    /// `authentication { ... }`: a block of settings without a name.
    Authentication {
        /// Settings in order.
        settings: Vec<Setting>,
        /// The whole block.
        span: Span,
    },
    /// `[deleted] contact|group|mail-user "name" { ... }`.
    Recipient {
        /// The `deleted` keyword, when present.
        deleted: Option<Span>,
        /// `contact`, `group` or `mail-user`.
        kind: Text,
        /// Name and settings.
        block: Block,
    },
    /// `rewrite ["name"] internal -> external [outbound-only] [except a, b]`.
    Rewrite(Rewrite),
    /// `rule "name" { ... }`.
    Rule(Rule),
    /// `test "name" { ... }`.
    Test(Test),
}

/// A named block of generic settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The quoted name.
    pub name: Text,
    /// Settings in order.
    pub settings: Vec<Setting>,
    /// The whole block.
    pub span: Span,
}

/// `name value value, value ...`: comma-separated groups of values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The setting's name.
    pub name: Text,
    /// The groups of values.
    pub groups: Vec<Vec<Text>>,
    /// The whole line.
    pub span: Span,
}

/// An address rewrite entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// Optional name.
    pub name: Option<Text>,
    /// The internal address, domain or `*.domain`.
    pub internal: Text,
    /// The external address or domain.
    pub external: Text,
    /// The `outbound-only` keyword, when present.
    pub outbound_only: Option<Span>,
    /// Domains a wildcard entry leaves alone.
    pub exceptions: Vec<Text>,
    /// The whole entry.
    pub span: Span,
}

/// A transport rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The name.
    pub name: Text,
    /// Statements in order.
    pub statements: Vec<RuleStatement>,
    /// The whole rule.
    pub span: Span,
}

/// A line inside a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleStatement {
    /// `priority N`.
    Priority(Text),
    /// `mode enforce|audit`.
    Mode(Text),
    /// `if predicate`.
    Condition(Predicate),
    /// `except predicate`.
    Exception(Predicate),
    /// An action.
    Action(Action),
}

/// A predicate with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predicate {
    /// What it tests.
    pub kind: PredicateKind,
    /// The predicate text (after `if`/`except`).
    pub span: Span,
}

/// What a predicate tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PredicateKind {
    /// `sender inside|outside`.
    SenderScope(Text),
    /// `recipient|sender contains|contains-words|matches values`.
    Address {
        /// `recipient` or `sender`.
        field: Text,
        /// The operator.
        op: Text,
        /// The words or patterns.
        values: Vec<Text>,
    },
    /// `header NAME op values`.
    Header {
        /// The header name.
        name: Text,
        /// The operator.
        op: Text,
        /// The words or patterns.
        values: Vec<Text>,
    },
    /// `subject op values`.
    Subject {
        /// The operator.
        op: Text,
        /// The words or patterns.
        values: Vec<Text>,
    },
    /// `size over SIZE`.
    SizeOver(Text),
    /// `client-ip in ranges`.
    ClientIp(Vec<Text>),
    /// `connector "name", ...`.
    Connector(Vec<Text>),
    /// `originating-org domain, ...`.
    OriginatingOrg(Vec<Text>),
    /// `spf|dkim|dmarc|arc RESULT, ... [for DOMAIN, ...]`.
    Auth {
        /// The method word.
        method: Text,
        /// The result words.
        results: Vec<Text>,
        /// The domains after `for`.
        domains: Vec<Text>,
        /// The `for` keyword, when present.
        for_kw: Option<Span>,
    },
}

/// An action with its span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// What it does.
    pub kind: ActionKind,
    /// The whole action.
    pub span: Span,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// `stop`.
    Stop,
    /// `delete`.
    Delete,
    /// `reject [code [enhanced]] ["text"]`.
    Reject {
        /// SMTP code.
        code: Option<Text>,
        /// Enhanced status code.
        enhanced: Option<Text>,
        /// Text.
        text: Option<Text>,
    },
    /// `redirect-to addresses`.
    RedirectTo(Vec<Text>),
    /// `add-recipient addresses`.
    AddRecipient(Vec<Text>),
    /// `copy-to addresses`.
    CopyTo(Vec<Text>),
    /// `blind-copy-to addresses`.
    BlindCopyTo(Vec<Text>),
    /// `set-header NAME VALUE`.
    SetHeader(Text, Text),
    /// `remove-header NAME`.
    RemoveHeader(Text),
    /// `prepend-subject "text"`.
    PrependSubject(Text),
    /// `quarantine address`.
    Quarantine(Text),
    /// `disconnect`.
    Disconnect,
    /// `log "text"`.
    Log(Text),
}

/// A test block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Test {
    /// The name.
    pub name: Text,
    /// Envelope settings (`from`, `to`, `connector`, ...).
    pub settings: Vec<Setting>,
    /// `expect` lines.
    pub expectations: Vec<Expectation>,
    /// The whole block.
    pub span: Span,
}

/// An `expect` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// What is expected.
    pub kind: ExpectationKind,
    /// The line after `expect`.
    pub span: Span,
}

/// What a test expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectationKind {
    /// `delivered [addresses] [via "connector"]`.
    Delivered {
        /// Recipients (empty: all).
        recipients: Vec<Text>,
        /// The send connector.
        via: Option<Text>,
    },
    /// `rejected CODE [ENHANCED] [for addresses]`.
    Rejected {
        /// SMTP code.
        code: Text,
        /// Enhanced status code.
        enhanced: Option<Text>,
        /// Recipients (empty: the message).
        recipients: Vec<Text>,
    },
    /// `dropped [addresses]`.
    Dropped(Vec<Text>),
    /// `fired "rule", ...`.
    Fired(Vec<Text>),
    /// `not-fired "rule", ...`.
    NotFired(Vec<Text>),
    /// `mail-from address`.
    MailFrom(Text),
    /// `recipients addresses` (after rewriting and expansion).
    Recipients(Vec<Text>),
    /// `header NAME VALUE`.
    Header(Text, Text),
    /// `no-header NAME`.
    NoHeader(Text),
    /// `auth-as internal|anonymous|partner`.
    AuthAs(Text),
    /// `originating-org domain|none`.
    OriginatingOrg(Text),
}

impl Item {
    /// The span of the whole item.
    pub fn span(&self) -> Span {
        match self {
            Item::Include(t) | Item::ImportRewrites(t) => t.span,
            Item::AcceptedDomain { span, .. } => *span,
            Item::ReceiveConnector(b) | Item::SendConnector(b) | Item::DkimKey(b) => b.span,
            Item::Authentication { span, .. } => *span,
            Item::Recipient { block, .. } => block.span,
            Item::Rewrite(r) => r.span,
            Item::Rule(r) => r.span,
            Item::Test(t) => t.span,
        }
    }
}
