//! Exchange cmdlets to mailflow items: each statement is bound to its cmdlet's parameters,
//! translated into changes to an object (created by `New-`, changed by `Set-`/`Add-`,
//! dropped by `Remove-`), and applied only when nothing in it is an error, as PowerShell
//! runs a command whole or not at all. The objects become [`super::Item`]s at the end.

use super::powershell::{self, Body, Command, Element, Statement, Token, TokenKind, Value};
use super::{Blame, Item, Options, Section, Unit, string, word, words};
use crate::diagnostic::{Code, Diagnostic, Severity, did_you_mean};
use crate::source::{FileId, Span};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Translates the file; returns the rule text and every finding.
pub(super) fn import(
    file: FileId,
    path: &Path,
    text: &str,
    options: &Options,
) -> (String, Vec<Diagnostic>) {
    let script = powershell::parse(file, text);
    let units: Vec<Unit> = script
        .statements
        .iter()
        .map(|s| Unit {
            lines: s.lines,
            text: s.text.clone(),
            original: s.original.clone(),
        })
        .collect();
    let mut findings = Vec::new();
    let (out, refused) = super::settle(
        path,
        "mailflow import exchange",
        options,
        &units,
        |refused| {
            let mut st = State {
                options,
                statements: &script.statements,
                vars: HashMap::new(),
                objects: Vec::new(),
                rule_order: Vec::new(),
                failed_objects: Vec::new(),
                findings: Vec::new(),
                failed: BTreeMap::new(),
            };
            for (i, s) in script.statements.iter().enumerate() {
                if refused.contains_key(&i) {
                    st.skip_refused(i, s);
                    continue;
                }
                st.statement(i, s);
            }
            let items = st.items();
            findings = std::mem::take(&mut st.findings);
            (items, st.failed)
        },
    );
    findings.extend(script.diagnostics.iter().cloned());
    findings.extend(refused);
    (out, findings)
}

type B = Blame;

#[derive(Debug, Clone)]
enum Var {
    Text(String),
    /// The result of a command (`$cert = Get-ExchangeCertificate ...`).
    Opaque(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Domain,
    Receive,
    Send,
    Rewrite,
    Recipient(RecipientKind),
    Rule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecipientKind {
    Contact,
    MailUser,
    Group,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Domain => "accepted domain",
            Kind::Receive => "receive connector",
            Kind::Send => "send connector",
            Kind::Rewrite => "address rewrite entry",
            Kind::Recipient(RecipientKind::Contact) => "mail contact",
            Kind::Recipient(RecipientKind::MailUser) => "mail user",
            Kind::Recipient(RecipientKind::Group) => "distribution group",
            Kind::Rule => "transport rule",
        }
    }
}

#[derive(Debug, Clone)]
struct Object {
    kind: Kind,
    /// Identities it answers to, lowercase (name, alias, display name, addresses).
    ids: Vec<String>,
    /// The name mailflow gives it.
    name: String,
    /// A name to prefer when it is unique (a recipient's display name).
    display: Option<String>,
    origin: Vec<usize>,
    created: B,
    data: Data,
}

#[derive(Debug, Clone)]
enum Data {
    Domain {
        domain: String,
        kind: Option<(String, B)>,
        subdomains: Option<B>,
    },
    Receive(Box<Receive>),
    Send(Box<Send>),
    Rewrite {
        internal: String,
        external: String,
        outbound_only: bool,
        exceptions: Vec<String>,
        last: B,
    },
    Recipient {
        addresses: Vec<(String, B)>,
        external: Option<(String, B)>,
        hidden: Option<B>,
        members: Vec<(Member, B)>,
        auth_only: Option<B>,
    },
    Rule {
        mode: Option<(String, B)>,
        statements: Vec<(String, String, B)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Object(usize),
    Address(String),
}

#[derive(Debug, Clone, Default)]
struct Receive {
    listen: Option<(Vec<String>, B)>,
    remote: Option<(Vec<String>, B)>,
    fqdn: Option<(String, B)>,
    mechanisms: Option<(Vec<String>, B)>,
    permissions: Option<(Vec<String>, B)>,
    usage: Option<(String, B)>,
    require_tls: Option<(bool, B)>,
    oorg: Option<(Vec<String>, B)>,
    any_recipient: Option<B>,
    limits: Vec<(&'static str, String, B)>,
}

#[derive(Debug, Clone, Default)]
struct Send {
    spaces: Option<(Vec<String>, B)>,
    smart_hosts: Option<(Vec<String>, B)>,
    require_tls: Option<(bool, B)>,
    ignore_starttls: Option<(bool, B)>,
    tls_name: Option<(String, B)>,
    certificate: Option<B>,
    fqdn: Option<(String, B)>,
}

/// Whether a parameter takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum P {
    V,
    S,
}

/// A cmdlet's parameters.
type Params = Vec<(&'static str, P)>;
/// The parameters values without a name bind to, in order.
type Positional = &'static [&'static str];

struct Spec {
    params: &'static [(&'static str, P)],
    positional: &'static [&'static str],
}

const COMMON: &[(&str, P)] = &[
    ("Confirm", P::S),
    ("DomainController", P::V),
    ("ErrorAction", P::V),
    ("Force", P::S),
    ("Verbose", P::S),
    ("WhatIf", P::S),
];

const RECEIVE_SETTINGS: &[(&str, P)] = &[
    ("Bindings", P::V),
    ("RemoteIPRanges", P::V),
    ("AuthMechanism", P::V),
    ("PermissionGroups", P::V),
    ("RequireTLS", P::V),
    ("TlsDomainCapabilities", P::V),
    ("TlsCertificateName", P::V),
    ("Fqdn", P::V),
    ("MaxMessageSize", P::V),
    ("MaxRecipientsPerMessage", P::V),
    ("MaxInboundConnectionPerSource", P::V),
    ("MaxInboundConnection", P::V),
    ("ConnectionTimeout", P::V),
    ("ConnectionInactivityTimeout", P::V),
    ("MaxHeaderSize", P::V),
    ("MaxHopCount", P::V),
    ("Banner", P::V),
    ("ProtocolLoggingLevel", P::V),
    ("Comment", P::V),
    ("Enabled", P::V),
    ("Server", P::V),
    ("TransportRole", P::V),
];

const SEND_SETTINGS: &[(&str, P)] = &[
    ("AddressSpaces", P::V),
    ("SmartHosts", P::V),
    ("DNSRoutingEnabled", P::V),
    ("RequireTLS", P::V),
    ("IgnoreSTARTTLS", P::V),
    ("TlsAuthLevel", P::V),
    ("TlsDomain", P::V),
    ("TlsCertificateName", P::V),
    ("Fqdn", P::V),
    ("Comment", P::V),
    ("Enabled", P::V),
    ("SourceTransportServers", P::V),
    ("ProtocolLoggingLevel", P::V),
    ("MaxMessageSize", P::V),
];

const RULE_SETTINGS: &[(&str, P)] = &[
    ("Priority", P::V),
    ("Mode", P::V),
    ("Enabled", P::V),
    ("Comments", P::V),
    ("FromScope", P::V),
    ("ExceptIfFromScope", P::V),
    ("AnyOfRecipientAddressContainsWords", P::V),
    ("ExceptIfAnyOfRecipientAddressContainsWords", P::V),
    ("AnyOfRecipientAddressMatchesPatterns", P::V),
    ("ExceptIfAnyOfRecipientAddressMatchesPatterns", P::V),
    ("FromAddressContainsWords", P::V),
    ("ExceptIfFromAddressContainsWords", P::V),
    ("FromAddressMatchesPatterns", P::V),
    ("ExceptIfFromAddressMatchesPatterns", P::V),
    ("SubjectContainsWords", P::V),
    ("ExceptIfSubjectContainsWords", P::V),
    ("SubjectMatchesPatterns", P::V),
    ("ExceptIfSubjectMatchesPatterns", P::V),
    ("HeaderContainsMessageHeader", P::V),
    ("HeaderContainsWords", P::V),
    ("ExceptIfHeaderContainsMessageHeader", P::V),
    ("ExceptIfHeaderContainsWords", P::V),
    ("HeaderMatchesMessageHeader", P::V),
    ("HeaderMatchesPatterns", P::V),
    ("ExceptIfHeaderMatchesMessageHeader", P::V),
    ("ExceptIfHeaderMatchesPatterns", P::V),
    ("MessageSizeOver", P::V),
    ("ExceptIfMessageSizeOver", P::V),
    ("SenderIpRanges", P::V),
    ("ExceptIfSenderIpRanges", P::V),
    ("StopRuleProcessing", P::V),
    ("DeleteMessage", P::V),
    ("Disconnect", P::V),
    ("Quarantine", P::V),
    ("SmtpRejectMessageRejectStatusCode", P::V),
    ("SmtpRejectMessageRejectText", P::V),
    ("RejectMessageEnhancedStatusCode", P::V),
    ("RejectMessageReasonText", P::V),
    ("RedirectMessageTo", P::V),
    ("AddToRecipients", P::V),
    ("CopyTo", P::V),
    ("BlindCopyTo", P::V),
    ("SetHeaderName", P::V),
    ("SetHeaderValue", P::V),
    ("RemoveHeader", P::V),
    ("PrependSubject", P::V),
    ("LogEventText", P::V),
];

const RECIPIENT_SETTINGS: &[(&str, P)] = &[
    ("DisplayName", P::V),
    ("Alias", P::V),
    ("PrimarySmtpAddress", P::V),
    ("EmailAddresses", P::V),
    ("ExternalEmailAddress", P::V),
    ("HiddenFromAddressListsEnabled", P::V),
    ("RequireSenderAuthenticationEnabled", P::V),
    ("OrganizationalUnit", P::V),
    ("FirstName", P::V),
    ("LastName", P::V),
    ("Initials", P::V),
    ("Members", P::V),
    ("Type", P::V),
    ("ManagedBy", P::V),
    ("Notes", P::V),
];

/// The cmdlets that change configuration mailflow holds.
fn spec(cmdlet: &str) -> Option<(Params, Positional)> {
    let with = |extra: &[&'static [(&'static str, P)]]| -> Vec<(&'static str, P)> {
        let mut v: Vec<(&'static str, P)> = COMMON.to_vec();
        for e in extra {
            v.extend_from_slice(e);
        }
        v
    };
    let id: &'static [(&'static str, P)] = &[("Identity", P::V)];
    let name: &'static [(&'static str, P)] = &[("Name", P::V)];
    let s = match cmdlet.to_ascii_lowercase().as_str() {
        "new-accepteddomain" => Spec {
            params: &[
                ("Name", P::V),
                ("DomainName", P::V),
                ("DomainType", P::V),
                ("MatchSubDomains", P::V),
            ],
            positional: &["Name"],
        },
        "set-accepteddomain" => Spec {
            params: &[
                ("Identity", P::V),
                ("DomainType", P::V),
                ("MatchSubDomains", P::V),
                ("MakeDefault", P::V),
                ("Name", P::V),
            ],
            positional: &["Identity"],
        },
        "new-receiveconnector" => {
            let mut p = with(&[name, RECEIVE_SETTINGS]);
            for sw in ["Internet", "Internal", "Partner", "Custom", "Client"] {
                p.push((sw, P::S));
            }
            p.push(("Usage", P::V));
            return Some((p, &["Name"]));
        }
        "set-receiveconnector" => {
            return Some((with(&[id, name, RECEIVE_SETTINGS]), &["Identity"]));
        }
        "new-sendconnector" => {
            let mut p = with(&[name, SEND_SETTINGS]);
            for sw in ["Internet", "Internal", "Partner", "Custom"] {
                p.push((sw, P::S));
            }
            p.push(("Usage", P::V));
            return Some((p, &["Name"]));
        }
        "set-sendconnector" => return Some((with(&[id, name, SEND_SETTINGS]), &["Identity"])),
        "new-addressrewriteentry" | "set-addressrewriteentry" => {
            let mut p = with(&[&[
                ("Name", P::V),
                ("InternalAddress", P::V),
                ("ExternalAddress", P::V),
                ("ExceptionList", P::V),
                ("OutboundOnly", P::V),
            ]]);
            if cmdlet.to_ascii_lowercase().starts_with("set") {
                p.push(("Identity", P::V));
                return Some((p, &["Identity"]));
            }
            return Some((p, &["Name"]));
        }
        "new-transportrule" => return Some((with(&[name, RULE_SETTINGS]), &["Name"])),
        "set-transportrule" => return Some((with(&[id, name, RULE_SETTINGS]), &["Identity"])),
        "new-mailcontact" | "new-distributiongroup" => {
            return Some((with(&[name, RECIPIENT_SETTINGS]), &["Name"]));
        }
        "set-mailcontact" | "set-distributiongroup" | "set-mailuser" | "enable-mailuser" => {
            return Some((with(&[id, name, RECIPIENT_SETTINGS]), &["Identity"]));
        }
        "add-distributiongroupmember" | "remove-distributiongroupmember" => {
            return Some((
                with(&[&[("Identity", P::V), ("Member", P::V)]]),
                &["Identity"],
            ));
        }
        "add-adpermission" => {
            return Some((
                with(&[&[
                    ("Identity", P::V),
                    ("User", P::V),
                    ("ExtendedRights", P::V),
                    ("AccessRights", P::V),
                ]]),
                &["Identity"],
            ));
        }
        "remove-accepteddomain"
        | "remove-receiveconnector"
        | "remove-sendconnector"
        | "remove-addressrewriteentry"
        | "remove-transportrule"
        | "remove-mailcontact"
        | "remove-distributiongroup"
        | "disable-mailuser" => return Some((with(&[id]), &["Identity"])),
        _ => return None,
    };
    let mut p = COMMON.to_vec();
    p.extend_from_slice(s.params);
    Some((p, s.positional))
}

/// The kind of object a cmdlet's noun names.
fn noun_kind(cmdlet: &str) -> Option<Kind> {
    let noun = cmdlet.split_once('-')?.1.to_ascii_lowercase();
    Some(match noun.as_str() {
        "accepteddomain" => Kind::Domain,
        "receiveconnector" => Kind::Receive,
        "sendconnector" => Kind::Send,
        "addressrewriteentry" => Kind::Rewrite,
        "transportrule" => Kind::Rule,
        "mailcontact" => Kind::Recipient(RecipientKind::Contact),
        "mailuser" => Kind::Recipient(RecipientKind::MailUser),
        "distributiongroup" | "distributiongroupmember" => Kind::Recipient(RecipientKind::Group),
        _ => return None,
    })
}

/// A parameter as bound.
struct Arg {
    name: &'static str,
    span: Span,
    value: Option<Value>,
}

struct Bound {
    args: Vec<Arg>,
}

impl Bound {
    fn take(&mut self, name: &str) -> Option<Arg> {
        let i = self.args.iter().position(|a| a.name == name)?;
        Some(self.args.remove(i))
    }
}

struct State<'a> {
    options: &'a Options,
    statements: &'a [Statement],
    vars: HashMap<String, Var>,
    objects: Vec<Option<Object>>,
    rule_order: Vec<usize>,
    /// Identities whose creating command failed: (kind, identity, unit).
    failed_objects: Vec<(Kind, String, usize)>,
    findings: Vec<Diagnostic>,
    failed: BTreeMap<usize, Diagnostic>,
}

/// What one command does, applied only if it has no errors.
enum Effect {
    Create(Object),
    Replace(usize, Object),
    Remove(usize),
    Priority(usize, usize),
}

/// The findings and effects of one statement.
struct Ctx {
    unit: usize,
    diags: Vec<Diagnostic>,
    effects: Vec<Effect>,
}

impl Ctx {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }
    fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity() == Severity::Error)
    }
    fn blame(&self, span: Span) -> B {
        Blame {
            unit: self.unit,
            span,
        }
    }
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// `EX2016A\fctest` names the connector `fctest` of server EX2016A.
fn strip_server(id: &str) -> &str {
    id.rsplit_once('\\').map_or(id, |(_, n)| n)
}

impl State<'_> {
    fn skip_refused(&mut self, unit: usize, s: &Statement) {
        // A command `check` refused: its objects count as failed for later commands.
        if let Body::Pipeline(cmds) = &s.body {
            if let Some(c) = cmds.last() {
                self.remember_failure(unit, c);
            }
        }
    }

    fn remember_failure(&mut self, unit: usize, c: &Command) {
        let lc = c.name.to_ascii_lowercase();
        if !(lc.starts_with("new-") || lc.starts_with("enable-")) {
            return;
        }
        let Some(kind) = noun_kind(&c.name) else {
            return;
        };
        let mut ids = Vec::new();
        let mut it = c.elements.iter().peekable();
        let mut first_positional = true;
        while let Some(e) = it.next() {
            match e {
                Element::Param { name, value, .. } => {
                    let n = name.to_ascii_lowercase();
                    let v = match value {
                        Some(v) => Some(v.clone()),
                        None => match it.peek() {
                            Some(Element::Value(v)) => {
                                let v = v.clone();
                                it.next();
                                Some(v)
                            }
                            _ => None,
                        },
                    };
                    if [
                        "name",
                        "displayname",
                        "alias",
                        "primarysmtpaddress",
                        "identity",
                        "domainname",
                    ]
                    .contains(&n.as_str())
                    {
                        if let Some(t) = v.and_then(|v| v.items.first().cloned()) {
                            ids.push(lower(&t.text));
                        }
                    }
                }
                Element::Value(v) if first_positional => {
                    first_positional = false;
                    if let Some(t) = v.items.first() {
                        ids.push(lower(&t.text));
                    }
                }
                Element::Value(_) => {}
            }
        }
        for id in ids {
            self.failed_objects.push((kind, id, unit));
        }
    }

    fn statement(&mut self, unit: usize, s: &Statement) {
        let mut ctx = Ctx {
            unit,
            diags: Vec::new(),
            effects: Vec::new(),
        };
        match &s.body {
            Body::Expression(v) => {
                if let Some(var) = &s.assign {
                    // A value mailflow cannot work out is an error only where it is used.
                    let mut probe = Ctx {
                        unit,
                        diags: Vec::new(),
                        effects: Vec::new(),
                    };
                    let value = match self.resolve_one(&mut probe, v) {
                        Some(t) if !probe.has_errors() => Var::Text(t),
                        _ => Var::Opaque(unit),
                    };
                    self.vars.insert(lower(&var.text), value);
                } else {
                    ctx.diags.push(
                        Diagnostic::new(
                            Code::W040,
                            "this line shows a value; there is nothing to import",
                        )
                        .primary(v.span, "PowerShell prints this")
                        .help("remove the line, or keep it as a `#` comment"),
                    );
                }
            }
            Body::Pipeline(cmds) => self.pipeline(&mut ctx, s, cmds),
            Body::Broken(d) => ctx.diags.push((**d).clone()),
        }
        let failed = ctx.has_errors();
        if failed {
            if let Some(first) = ctx
                .diags
                .iter()
                .find(|d| d.severity() == Severity::Error)
                .cloned()
            {
                self.failed.insert(unit, first);
            }
            if let Body::Pipeline(cmds) = &s.body {
                if let Some(c) = cmds.last() {
                    self.remember_failure(unit, c);
                }
            }
        } else {
            for e in ctx.effects {
                match e {
                    Effect::Create(o) => {
                        let is_rule = o.kind == Kind::Rule;
                        self.objects.push(Some(o));
                        let index = self.objects.len() - 1;
                        // `-Priority` has placed it already.
                        if is_rule && !self.rule_order.contains(&index) {
                            self.rule_order.push(index);
                        }
                    }
                    Effect::Replace(i, o) => {
                        if let Some(slot) = self.objects.get_mut(i) {
                            *slot = Some(o);
                        }
                    }
                    Effect::Remove(i) => {
                        if let Some(slot) = self.objects.get_mut(i) {
                            *slot = None;
                        }
                        self.rule_order.retain(|r| *r != i);
                    }
                    Effect::Priority(i, p) => {
                        self.rule_order.retain(|r| *r != i);
                        let at = p.min(self.rule_order.len());
                        self.rule_order.insert(at, i);
                    }
                }
            }
        }
        self.findings.append(&mut ctx.diags);
    }

    fn pipeline(&mut self, ctx: &mut Ctx, s: &Statement, cmds: &[Command]) {
        let Some(last) = cmds.last() else { return };
        let read_only = |c: &Command| {
            let n = c.name.to_ascii_lowercase();
            n.starts_with("get-")
                || n.starts_with("format-")
                || n.starts_with("test-")
                || n.starts_with("export-")
                || n.starts_with("select-")
                || n.starts_with("where-")
                || n.starts_with("sort-")
                || ["fl", "ft", "select", "where", "sort", "?", "gm"].contains(&n.as_str())
        };
        if cmds.iter().all(read_only) {
            if let Some(var) = &s.assign {
                self.vars.insert(lower(&var.text), Var::Opaque(ctx.unit));
            }
            // Placeholders in a read-only command still need filling in when its result is
            // used; report them, the rest is a note.
            for c in cmds {
                self.placeholders(ctx, c);
            }
            let first = cmds.first().unwrap_or(last);
            ctx.diags.push(
                Diagnostic::new(
                    Code::W040,
                    format!(
                        "`{}` only reads configuration; there is nothing to import",
                        first.name
                    ),
                )
                .primary(first.name_span, "reads, changes nothing")
                .help("remove the line to silence this warning"),
            );
            return;
        }
        // `Get-X id | Set-X ...`: the Get names the object the last command changes.
        let mut piped: Option<(String, Span, &Command)> = None;
        for c in cmds.iter().take(cmds.len() - 1) {
            if !read_only(c) {
                ctx.error(unsupported_in_pipeline(c));
                return;
            }
            let positional = c.elements.iter().find_map(|e| match e {
                Element::Value(v) => Some(v.clone()),
                _ => None,
            });
            let named = c.elements.windows(2).find_map(|w| match w {
                [Element::Param { name, .. }, Element::Value(v)]
                    if name.eq_ignore_ascii_case("Identity") =>
                {
                    Some(v.clone())
                }
                _ => None,
            });
            match positional.or(named) {
                Some(v) => {
                    if let Some(t) = self.resolve_one(ctx, &v) {
                        piped = Some((t, v.span, c));
                    } else {
                        return;
                    }
                }
                None => {
                    ctx.error(
                        Diagnostic::new(
                            Code::E074,
                            format!("`{}` without an identity selects every object", c.name),
                        )
                        .primary(c.name_span, "no identity given")
                        .help("name the object: `Get-ReceiveConnector \"From EOP\" | ...`"),
                    );
                    return;
                }
            }
        }
        self.command(ctx, last, piped);
    }

    fn placeholders(&self, ctx: &mut Ctx, c: &Command) {
        for e in &c.elements {
            let v = match e {
                Element::Value(v) => Some(v),
                Element::Param { value, .. } => value.as_ref(),
            };
            for t in v.map(|v| v.items.as_slice()).unwrap_or(&[]) {
                if t.kind == TokenKind::Placeholder {
                    ctx.error(placeholder(t));
                }
            }
        }
    }

    fn bind(
        &self,
        ctx: &mut Ctx,
        c: &Command,
        spec: &[(&'static str, P)],
        positional: &[&'static str],
    ) -> Option<Bound> {
        let mut args: Vec<Arg> = Vec::new();
        let mut next_positional = 0;
        let mut i = 0;
        let els = &c.elements;
        let mut ok = true;
        while let Some(e) = els.get(i) {
            i += 1;
            match e {
                Element::Param { name, span, value } => {
                    let Some((pname, kind)) = find_param(spec, name) else {
                        let names: Vec<&str> = spec.iter().map(|(n, _)| *n).collect();
                        let mut d = Diagnostic::new(
                            Code::E071,
                            format!(
                                "`{}` has no parameter `-{name}` mailflow can import",
                                c.name
                            ),
                        )
                        .primary(*span, "unknown parameter");
                        d = match did_you_mean(name, names.iter().copied()) {
                            Some(s) => d.help(format!("did you mean `-{s}`?")),
                            None => d.help("remove it, or see docs/import.md for the parameters mailflow translates"),
                        };
                        ctx.error(d);
                        ok = false;
                        continue;
                    };
                    if args.iter().any(|a| a.name == pname) {
                        ctx.error(
                            Diagnostic::new(Code::E076, format!("`-{pname}` is given twice"))
                                .primary(*span, "again here")
                                .help("give each parameter once"),
                        );
                        ok = false;
                        continue;
                    }
                    let value = match (value, kind) {
                        (Some(v), _) => Some(v.clone()),
                        (None, P::S) => None,
                        (None, P::V) => match els.get(i) {
                            Some(Element::Value(v)) => {
                                i += 1;
                                Some(v.clone())
                            }
                            _ => {
                                ctx.error(
                                    Diagnostic::new(Code::E075, format!("`-{pname}` has no value"))
                                        .primary(*span, "a value must follow")
                                        .help(format!("write `-{pname} VALUE`")),
                                );
                                ok = false;
                                continue;
                            }
                        },
                    };
                    args.push(Arg {
                        name: pname,
                        span: *span,
                        value,
                    });
                }
                Element::Value(v) => {
                    let Some(pname) = positional.get(next_positional) else {
                        ctx.error(
                            Diagnostic::new(
                                Code::E071,
                                format!("`{}` takes no value here", c.name),
                            )
                            .primary(v.span, "no parameter takes this value")
                            .help("name the parameter it is for (`-Name VALUE`)"),
                        );
                        ok = false;
                        continue;
                    };
                    next_positional += 1;
                    args.push(Arg {
                        name: pname,
                        span: v.span,
                        value: Some(v.clone()),
                    });
                }
            }
        }
        ok.then_some(Bound { args })
    }

    fn command(&mut self, ctx: &mut Ctx, c: &Command, piped: Option<(String, Span, &Command)>) {
        let Some((spec, positional)) = spec(&c.name) else {
            ctx.error(unsupported(c));
            return;
        };
        let Some(mut b) = self.bind(ctx, c, &spec, positional) else {
            return;
        };
        if let Some(a) = b.take("WhatIf") {
            if self.switch(ctx, &a) != Some(false) {
                ctx.error(
                    Diagnostic::new(Code::E072, "`-WhatIf` runs nothing")
                        .primary(a.span, "the command only says what it would do")
                        .help("remove `-WhatIf` to import the command"),
                );
                return;
            }
        }
        for p in [
            "Confirm",
            "Force",
            "DomainController",
            "ErrorAction",
            "Verbose",
        ] {
            b.take(p);
        }
        let lc = c.name.to_ascii_lowercase();
        let verb = lc.split('-').next().unwrap_or("");
        let Some(kind) = noun_kind(&c.name).or(if lc == "add-adpermission" {
            Some(Kind::Receive)
        } else {
            None
        }) else {
            ctx.error(unsupported(c));
            return;
        };
        // The object a Set/Add/Remove changes.
        let target = if verb == "new" {
            None
        } else {
            let id = match (b.take("Identity"), piped) {
                (Some(a), _) => {
                    let span = a.value.as_ref().map_or(a.span, |v| v.span);
                    a.value
                        .as_ref()
                        .and_then(|v| self.resolve_one(ctx, v))
                        .map(|t| (t, span))
                }
                (None, Some((t, span, _))) => Some((t, span)),
                (None, None) => {
                    ctx.error(
                        Diagnostic::new(Code::E075, format!("`{}` needs an identity", c.name))
                            .primary(c.name_span, "which object?")
                            .help(format!("write `{} NAME ...`", c.name)),
                    );
                    None
                }
            };
            let Some((id, span)) = id else { return };
            // Enable-MailUser turns an existing directory user into a mail user: it creates.
            if lc == "enable-mailuser" {
                self.enable_mailuser(ctx, c, b, id, span);
                return;
            }
            let kinds: Vec<Kind> = match kind {
                Kind::Recipient(RecipientKind::Group) if lc.ends_with("member") => {
                    vec![kind]
                }
                k => vec![k],
            };
            match self.find(ctx, &kinds, &id, span) {
                Some(i) => Some(i),
                None => return,
            }
        };
        match (verb, target) {
            ("remove" | "disable", Some(i)) if !lc.ends_with("member") => {
                ctx.effects.push(Effect::Remove(i));
                self.leftover(ctx, c, b);
            }
            (_, target) => {
                let mut obj = match target.and_then(|i| self.objects.get(i).cloned().flatten()) {
                    Some(o) => o,
                    None => match self.create(ctx, c, kind, &mut b) {
                        Some(o) => o,
                        None => return,
                    },
                };
                if !obj.origin.contains(&ctx.unit) {
                    obj.origin.push(ctx.unit);
                }
                match lc.as_str() {
                    "add-adpermission" => self.ad_permission(ctx, &mut b, &mut obj),
                    "add-distributiongroupmember" | "remove-distributiongroupmember" => {
                        self.member(ctx, &mut b, &mut obj, lc.starts_with("add"))
                    }
                    _ => self.settings(ctx, c, &mut b, &mut obj, target),
                }
                self.leftover(ctx, c, b);
                match target {
                    Some(i) => ctx.effects.push(Effect::Replace(i, obj)),
                    None => ctx.effects.push(Effect::Create(obj)),
                }
            }
        }
    }

    fn leftover(&self, ctx: &mut Ctx, c: &Command, b: Bound) {
        for a in b.args {
            ctx.error(
                Diagnostic::new(
                    Code::E071,
                    format!("mailflow cannot import `-{}` of `{}`", a.name, c.name),
                )
                .primary(a.span, "not translated")
                .help("remove it; docs/import.md lists what each cmdlet translates"),
            );
        }
    }

    fn find(&self, ctx: &mut Ctx, kinds: &[Kind], id: &str, span: Span) -> Option<usize> {
        let want = lower(strip_server(id));
        let found = self.objects.iter().enumerate().rev().find_map(|(i, o)| {
            let o = o.as_ref()?;
            (kinds.contains(&o.kind) && o.ids.contains(&want)).then_some(i)
        });
        if found.is_some() {
            return found;
        }
        let kind = kinds.first().copied().unwrap_or(Kind::Rule);
        let mut d = Diagnostic::new(
            Code::E074,
            format!(
                "no {} `{id}` was created earlier in this file",
                kind.describe()
            ),
        )
        .primary(span, "unknown identity");
        if let Some((_, _, unit)) = self
            .failed_objects
            .iter()
            .rev()
            .find(|(k, i, _)| kinds.contains(k) && *i == want)
        {
            let line = self.statements.get(*unit).map_or(0, |s| s.lines.0);
            d.message = format!("{} `{id}` was not imported", kind.describe());
            d = d
                .help(format!("fix the command on line {line} that creates it"))
                .secondary(
                    self.statements.get(*unit).map_or(span, |s| s.span),
                    "this command creates it but failed",
                );
        } else {
            let names: Vec<&str> = self
                .objects
                .iter()
                .flatten()
                .filter(|o| kinds.contains(&o.kind))
                .flat_map(|o| o.ids.iter().map(String::as_str))
                .collect();
            d = match did_you_mean(&want, names) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help("create it with a `New-` command before this line"),
            };
        }
        ctx.error(d);
        None
    }

    fn create(&mut self, ctx: &mut Ctx, c: &Command, kind: Kind, b: &mut Bound) -> Option<Object> {
        let name_arg = b.take("Name");
        let name = match &name_arg {
            Some(a) => a.value.as_ref().and_then(|v| self.resolve_one(ctx, v)),
            None => None,
        };
        let blame = ctx.blame(c.name_span);
        let data = match kind {
            Kind::Domain => {
                let d = b.take("DomainName");
                let domain = match d.as_ref().and_then(|a| a.value.as_ref()) {
                    Some(v) => self.resolve_one(ctx, v)?,
                    None => {
                        ctx.error(missing(c, "DomainName", "the domain"));
                        return None;
                    }
                };
                Data::Domain {
                    domain,
                    kind: None,
                    subdomains: None,
                }
            }
            Kind::Receive => Data::Receive(Box::default()),
            Kind::Send => Data::Send(Box::default()),
            Kind::Rewrite => Data::Rewrite {
                internal: String::new(),
                external: String::new(),
                outbound_only: false,
                exceptions: Vec::new(),
                last: blame,
            },
            Kind::Recipient(_) => Data::Recipient {
                addresses: Vec::new(),
                external: None,
                hidden: None,
                members: Vec::new(),
                auth_only: None,
            },
            Kind::Rule => Data::Rule {
                mode: None,
                statements: Vec::new(),
            },
        };
        let name = match (name, &data) {
            (Some(n), _) => n,
            (None, Data::Domain { domain, .. }) => domain.clone(),
            (None, Data::Rewrite { .. } | Data::Recipient { .. }) if name_arg.is_none() => {
                String::new()
            }
            (None, _) => {
                if name_arg.is_none() {
                    ctx.error(missing(c, "Name", "its name"));
                }
                return None;
            }
        };
        Some(Object {
            kind,
            ids: if name.is_empty() {
                Vec::new()
            } else {
                vec![lower(&name)]
            },
            name,
            display: None,
            origin: vec![ctx.unit],
            created: blame,
            data,
        })
    }

    fn enable_mailuser(
        &mut self,
        ctx: &mut Ctx,
        c: &Command,
        mut b: Bound,
        id: String,
        span: Span,
    ) {
        let mut obj = Object {
            kind: Kind::Recipient(RecipientKind::MailUser),
            ids: vec![lower(&id)],
            name: id,
            display: None,
            origin: vec![ctx.unit],
            created: ctx.blame(span),
            data: Data::Recipient {
                addresses: Vec::new(),
                external: None,
                hidden: None,
                members: Vec::new(),
                auth_only: None,
            },
        };
        if let Some(a) = b.take("Name") {
            if let Some(n) = a.value.as_ref().and_then(|v| self.resolve_one(ctx, v)) {
                obj.ids.push(lower(&n));
            }
        }
        self.settings(ctx, c, &mut b, &mut obj, None);
        self.leftover(ctx, c, b);
        ctx.effects.push(Effect::Create(obj));
    }

    /// New-/Set- parameters of every kind.
    fn settings(
        &mut self,
        ctx: &mut Ctx,
        c: &Command,
        b: &mut Bound,
        obj: &mut Object,
        target: Option<usize>,
    ) {
        // Directory-only parameters: the comment above the item quotes the whole command.
        for p in [
            "OrganizationalUnit",
            "FirstName",
            "LastName",
            "Initials",
            "Type",
            "ManagedBy",
            "Notes",
            "Comment",
            "Comments",
            "Server",
            "TransportRole",
            "SourceTransportServers",
            "MakeDefault",
        ] {
            b.take(p);
        }
        if let Some(a) = b.take("Name") {
            // Renaming: the old name still finds it in this file.
            if let Some(n) = a.value.as_ref().and_then(|v| self.resolve_one(ctx, v)) {
                obj.ids.push(lower(&n));
            }
        }
        if let Some(a) = b.take("Enabled") {
            if self.switch(ctx, &a) == Some(false) {
                ctx.error(
                    Diagnostic::new(
                        Code::E072,
                        format!(
                            "a disabled {} has no mailflow equivalent",
                            obj.kind.describe()
                        ),
                    )
                    .primary(a.span, "`-Enabled $false`")
                    .help("leave the object out of the rule set, or comment it out after import"),
                );
            }
        }
        let kind = obj.kind;
        match &mut obj.data {
            Data::Domain {
                kind: dk,
                subdomains,
                ..
            } => {
                if let Some(a) = b.take("DomainType") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        let k = match v.to_ascii_lowercase().as_str() {
                            "authoritative" => "authoritative",
                            "internalrelay" => "internal-relay",
                            "externalrelay" => "external-relay",
                            _ => {
                                ctx.error(bad_value(
                                    &a,
                                    &v,
                                    "`Authoritative`, `InternalRelay` or `ExternalRelay`",
                                ));
                                return;
                            }
                        };
                        *dk = Some((k.to_string(), ctx.blame(a.span)));
                    }
                }
                if let Some(a) = b.take("MatchSubDomains") {
                    *subdomains = match self.switch(ctx, &a) {
                        Some(true) => Some(ctx.blame(a.span)),
                        _ => None,
                    };
                }
            }
            Data::Receive(r) => self.receive(ctx, c, b, r),
            Data::Send(s) => self.send(ctx, b, s),
            Data::Rewrite {
                internal,
                external,
                outbound_only,
                exceptions,
                last,
            } => {
                *last = ctx.blame(c.name_span);
                if let Some(a) = b.take("InternalAddress") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        *internal = v;
                    }
                }
                if let Some(a) = b.take("ExternalAddress") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        *external = v;
                    }
                }
                if let Some(a) = b.take("OutboundOnly") {
                    if let Some(v) = self.switch(ctx, &a) {
                        *outbound_only = v;
                    }
                }
                if let Some(a) = b.take("ExceptionList") {
                    if let Some(v) = self.arg_texts(ctx, &a) {
                        *exceptions = v;
                    }
                }
                for (v, p) in [
                    (&*internal, "InternalAddress"),
                    (&*external, "ExternalAddress"),
                ] {
                    // A value that failed to resolve is reported already.
                    if v.is_empty() && target.is_none() && !ctx.has_errors() {
                        ctx.error(missing(c, p, "a required value"));
                    }
                }
                if obj.name.is_empty() {
                    obj.ids.push(lower(internal));
                }
            }
            Data::Recipient {
                addresses,
                external,
                hidden,
                members,
                auth_only,
            } => {
                if let Some(a) = b.take("DisplayName") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        obj.ids.push(lower(&v));
                        obj.display = Some(v);
                    }
                }
                if let Some(a) = b.take("Alias") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        obj.ids.push(lower(&v));
                    }
                }
                if let Some(a) = b.take("PrimarySmtpAddress") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        let v = strip_smtp(&v);
                        addresses.retain(|(x, _)| !x.eq_ignore_ascii_case(&v));
                        addresses.insert(0, (v.clone(), ctx.blame(a.span)));
                        obj.ids.push(lower(&v));
                    }
                }
                if let Some(a) = b.take("EmailAddresses") {
                    self.email_addresses(ctx, &a, addresses);
                    for (x, _) in addresses.iter() {
                        obj.ids.push(lower(x));
                    }
                }
                if let Some(a) = b.take("ExternalEmailAddress") {
                    if kind == Kind::Recipient(RecipientKind::Group) {
                        ctx.error(bad_param(
                            &a,
                            "a distribution group has no external address",
                        ));
                    } else if let Some(v) = self.arg_text(ctx, &a) {
                        *external = Some((strip_smtp(&v), ctx.blame(a.span)));
                    }
                }
                if let Some(a) = b.take("HiddenFromAddressListsEnabled") {
                    *hidden = match self.switch(ctx, &a) {
                        Some(true) => Some(ctx.blame(a.span)),
                        _ => None,
                    };
                }
                if let Some(a) = b.take("RequireSenderAuthenticationEnabled") {
                    if kind == Kind::Recipient(RecipientKind::Group) {
                        *auth_only = match self.switch(ctx, &a) {
                            Some(true) => Some(ctx.blame(a.span)),
                            _ => None,
                        };
                    } else {
                        ctx.error(bad_param(
                            &a,
                            "mailflow refuses unauthenticated senders only for groups",
                        ));
                    }
                }
                if let Some(a) = b.take("Members") {
                    if kind != Kind::Recipient(RecipientKind::Group) {
                        ctx.error(bad_param(&a, "only a distribution group has members"));
                    } else if let Some(v) = self.arg_texts(ctx, &a) {
                        members.clear();
                        for m in v {
                            if let Some(m) = self.member_ref(
                                ctx,
                                &m,
                                a.value.as_ref().map_or(a.span, |v| v.span),
                            ) {
                                members.push((m, ctx.blame(a.span)));
                            }
                        }
                    }
                }
                if target.is_none() && !ctx.has_errors() {
                    if addresses.is_empty() {
                        ctx.error(
                            Diagnostic::new(
                                Code::E075,
                                format!("`{}` has no `-PrimarySmtpAddress`", c.name),
                            )
                            .primary(c.name_span, "the address would come from an email address policy")
                            .help("mailflow has no email address policies: add `-PrimarySmtpAddress ADDRESS`"),
                        );
                    }
                    if external.is_none() && kind != Kind::Recipient(RecipientKind::Group) {
                        ctx.error(missing(c, "ExternalEmailAddress", "where its mail goes"));
                    }
                }
            }
            Data::Rule { mode, statements } => {
                if let Some(a) = b.take("Priority") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        match v.parse::<usize>() {
                            Ok(p) => {
                                let index = target.unwrap_or(self.objects.len());
                                ctx.effects.push(Effect::Priority(index, p));
                            }
                            Err(_) => ctx.error(bad_value(&a, &v, "a whole number from 0")),
                        }
                    }
                }
                if let Some(a) = b.take("Mode") {
                    if let Some(v) = self.arg_text(ctx, &a) {
                        match v.to_ascii_lowercase().as_str() {
                            "enforce" => *mode = None,
                            "audit" => *mode = Some(("audit".to_string(), ctx.blame(a.span))),
                            _ => ctx.error(bad_value(&a, &v, "`Enforce` or `Audit`")),
                        }
                    }
                }
                self.rule(ctx, c, b, statements);
            }
        }
    }

    fn email_addresses(&self, ctx: &mut Ctx, a: &Arg, addresses: &mut Vec<(String, B)>) {
        let Some(v) = &a.value else { return };
        if let Some(t) = v.items.first().filter(|t| t.kind == TokenKind::Hashtable) {
            // @{add=a,b; remove=c}
            let inner = t.text.trim_start_matches("@{").trim_end_matches('}');
            for part in inner.split(';') {
                let Some((k, vals)) = part.split_once('=') else {
                    continue;
                };
                let vals: Vec<String> = vals
                    .split(',')
                    .map(|x| strip_smtp(x.trim().trim_matches(['"', '\''])))
                    .filter(|x| !x.is_empty())
                    .collect();
                match k.trim().to_ascii_lowercase().as_str() {
                    "add" => {
                        for x in vals {
                            if !addresses.iter().any(|(y, _)| y.eq_ignore_ascii_case(&x)) {
                                addresses.push((x, ctx.blame(a.span)));
                            }
                        }
                    }
                    "remove" => {
                        addresses.retain(|(y, _)| !vals.iter().any(|x| x.eq_ignore_ascii_case(y)))
                    }
                    other => ctx.error(bad_value(a, other, "`add` or `remove`")),
                }
            }
            return;
        }
        let Some(vals) = self.arg_texts(ctx, a) else {
            return;
        };
        addresses.clear();
        // `SMTP:` marks the primary address; `smtp:` the others.
        let mut primary = None;
        for x in &vals {
            if x.starts_with("SMTP:") {
                primary = Some(strip_smtp(x));
            }
        }
        if let Some(p) = primary {
            addresses.push((p, ctx.blame(a.span)));
        }
        for x in vals {
            if x.len() > 5
                && !x.starts_with("SMTP:")
                && x.contains(':')
                && !x.to_ascii_lowercase().starts_with("smtp:")
            {
                ctx.error(bad_value(
                    a,
                    &x,
                    "SMTP addresses (other proxy address types have no mailflow meaning)",
                ));
                continue;
            }
            let x = strip_smtp(&x);
            if !addresses.iter().any(|(y, _)| y.eq_ignore_ascii_case(&x)) {
                addresses.push((x, ctx.blame(a.span)));
            }
        }
    }

    fn member_ref(&self, ctx: &mut Ctx, id: &str, span: Span) -> Option<Member> {
        let want = lower(id);
        let found = self.objects.iter().enumerate().rev().find_map(|(i, o)| {
            let o = o.as_ref()?;
            (matches!(o.kind, Kind::Recipient(_)) && o.ids.contains(&want)).then_some(i)
        });
        if let Some(i) = found {
            return Some(Member::Object(i));
        }
        if id.contains('@') && !self.failed_objects.iter().any(|(_, i, _)| *i == want) {
            return Some(Member::Address(id.to_string()));
        }
        let kinds = [
            Kind::Recipient(RecipientKind::Contact),
            Kind::Recipient(RecipientKind::MailUser),
            Kind::Recipient(RecipientKind::Group),
        ];
        self.find(ctx, &kinds, id, span).map(Member::Object)
    }

    fn member(&self, ctx: &mut Ctx, b: &mut Bound, obj: &mut Object, add: bool) {
        let Data::Recipient { members, .. } = &mut obj.data else {
            return;
        };
        let Some(a) = b.take("Member") else {
            ctx.errors_missing_member(obj);
            return;
        };
        let Some(v) = self.arg_text(ctx, &a) else {
            return;
        };
        let span = a.value.as_ref().map_or(a.span, |v| v.span);
        let Some(m) = self.member_ref(ctx, &v, span) else {
            return;
        };
        if add {
            if !members.iter().any(|(x, _)| *x == m) {
                members.push((m, ctx.blame(a.span)));
            }
        } else {
            members.retain(|(x, _)| *x != m);
        }
    }

    fn ad_permission(&self, ctx: &mut Ctx, b: &mut Bound, obj: &mut Object) {
        let Data::Receive(r) = &mut obj.data else {
            return;
        };
        let user = b.take("User");
        let rights = b.take("ExtendedRights");
        if let Some(a) = b.take("AccessRights") {
            ctx.error(bad_param(
                &a,
                "mailflow translates only extended rights on receive connectors",
            ));
        }
        let (Some(user), Some(rights)) = (user, rights) else {
            ctx.error(
                Diagnostic::new(Code::E075, "`Add-ADPermission` needs `-User` and `-ExtendedRights`")
                    .primary(obj.created.span, "for this connector")
                    .help("write `-User 'NT AUTHORITY\\Anonymous Logon' -ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient`"),
            );
            return;
        };
        let Some(u) = self.arg_text(ctx, &user) else {
            return;
        };
        if !u.eq_ignore_ascii_case("NT AUTHORITY\\Anonymous Logon") {
            ctx.error(bad_value(
                &user,
                &u,
                "`NT AUTHORITY\\Anonymous Logon` (the clients of the connector)",
            ));
            return;
        }
        let Some(rs) = self.arg_texts(ctx, &rights) else {
            return;
        };
        for right in rs {
            if right.eq_ignore_ascii_case("ms-Exch-SMTP-Accept-Any-Recipient") {
                r.any_recipient = Some(ctx.blame(rights.span));
            } else {
                ctx.error(bad_value(&rights, &right, "`ms-Exch-SMTP-Accept-Any-Recipient` (relaying); mailflow has no other permissions"));
            }
        }
    }

    fn receive(&self, ctx: &mut Ctx, c: &Command, b: &mut Bound, r: &mut Receive) {
        for sw in ["Internet", "Internal", "Partner", "Custom", "Client"] {
            if let Some(a) = b.take(sw) {
                self.usage(ctx, &a, sw, r);
            }
        }
        if let Some(a) = b.take("Usage") {
            if let Some(v) = self.arg_text(ctx, &a) {
                self.usage(ctx, &a, &v, r);
            }
        }
        if let Some(a) = b.take("Bindings") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                r.listen = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("RemoteIPRanges") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                // Exchange's "everyone" is mailflow's default.
                let all = v.iter().all(|x| {
                    x == "0.0.0.0-255.255.255.255"
                        || x.eq_ignore_ascii_case("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
                });
                r.remote = if all {
                    None
                } else {
                    Some((v, ctx.blame(a.span)))
                };
            }
        }
        if let Some(a) = b.take("Fqdn") {
            if let Some(v) = self.arg_text(ctx, &a) {
                r.fqdn = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("AuthMechanism") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut kept = Vec::new();
                for m in v {
                    match m.to_ascii_lowercase().as_str() {
                        "tls" => {
                            self.need_certificate(ctx, &a, "`Tls` offers STARTTLS");
                            kept.push("tls".to_string());
                        }
                        "externalauthoritative" => kept.push("externalauthoritative".to_string()),
                        "none" => {}
                        "basicauth" | "basicauthrequiretls" | "integrated" | "exchangeserver" => {
                            ctx.diags.push(no_effect(&a, &m, "mailflow has no SMTP AUTH; clients are served as the connector's `auth` says"));
                        }
                        _ => ctx.error(bad_value(
                            &a,
                            &m,
                            "`Tls`, `ExternalAuthoritative` or `None`",
                        )),
                    }
                }
                r.mechanisms = Some((kept, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("PermissionGroups") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut kept = Vec::new();
                for g in v {
                    match g.to_ascii_lowercase().as_str() {
                        "anonymoususers" | "partners" | "exchangeservers" => kept.push(g.to_ascii_lowercase()),
                        "none" | "custom" => {}
                        "exchangeusers" | "exchangelegacyservers" => ctx.diags.push(no_effect(
                            &a,
                            &g,
                            "mailflow has no SMTP AUTH: clients that would log on are served as the connector's `auth` says",
                        )),
                        _ => ctx.error(bad_value(&a, &g, "`AnonymousUsers`, `Partners`, `ExchangeServers`, `ExchangeUsers`")),
                    }
                }
                r.permissions = Some((kept, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("RequireTLS") {
            if let Some(v) = self.switch(ctx, &a) {
                if v {
                    self.need_certificate(ctx, &a, "`-RequireTLS $true`");
                }
                r.require_tls = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("TlsDomainCapabilities") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut names = Vec::new();
                for cap in v {
                    let cap = cap.trim_matches(['{', '}']).to_string();
                    match cap.split_once(':') {
                        Some((domain, what)) if what.eq_ignore_ascii_case("AcceptOorgProtocol") => {
                            names.push(domain.to_string());
                        }
                        Some((_, what)) => ctx.error(
                            bad_value(&a, what, "`AcceptOorgProtocol`").help(
                                "mailflow does not take over AuthAs from cross-premises headers (`AcceptCloudServicesMail`); use `auth externally-secured` with `accept-oorg` and `originating-org` rules",
                            ),
                        ),
                        None => ctx.error(bad_value(&a, &cap, "`DOMAIN:AcceptOorgProtocol`")),
                    }
                }
                if !names.is_empty() {
                    self.need_certificate(ctx, &a, "XOORG is offered only after STARTTLS");
                }
                r.oorg = Some((names, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("TlsCertificateName") {
            // Any value: the certificate comes from --certificate, and its name need not be
            // evaluated (`"<I>$($cert.Issuer)<S>$($cert.Subject)"`).
            if let Some(v) = &a.value {
                for t in &v.items {
                    if t.kind == TokenKind::Placeholder {
                        ctx.error(placeholder(t));
                    }
                    if let TokenKind::Variable { .. } = t.kind {
                        if !self.vars.contains_key(&lower(&t.text)) && !is_builtin(&t.text) {
                            ctx.error(undefined(t));
                        }
                    }
                }
            }
            self.need_certificate(
                ctx,
                &a,
                "`-TlsCertificateName` names the certificate for STARTTLS",
            );
        }
        for (p, key, conv) in [
            ("MaxMessageSize", "max-message-size", Conv::Size),
            ("MaxHeaderSize", "max-header-size", Conv::Size),
            ("MaxRecipientsPerMessage", "max-recipients", Conv::Number),
            (
                "MaxInboundConnectionPerSource",
                "max-connections-per-source",
                Conv::Number,
            ),
            ("MaxInboundConnection", "max-connections", Conv::Number),
            ("MaxHopCount", "max-hop-count", Conv::Number),
            ("ConnectionTimeout", "connection-timeout", Conv::Duration),
            (
                "ConnectionInactivityTimeout",
                "inactivity-timeout",
                Conv::Duration,
            ),
        ] {
            if let Some(a) = b.take(p) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    match conv.apply(&v) {
                        Some(x) => {
                            r.limits.retain(|(k, _, _)| *k != key);
                            r.limits.push((key, x, ctx.blame(a.span)));
                        }
                        None => ctx.error(bad_value(&a, &v, conv.expected())),
                    }
                }
            }
        }
        for p in ["Banner", "ProtocolLoggingLevel"] {
            if let Some(a) = b.take(p) {
                ctx.diags.push(no_effect(
                    &a,
                    p,
                    "mailflow's greeting and logs are its own (docs/relay.md)",
                ));
            }
        }
        let _ = c;
    }

    fn usage(&self, ctx: &mut Ctx, a: &Arg, usage: &str, r: &mut Receive) {
        match usage.to_ascii_lowercase().as_str() {
            "custom" => {}
            "internet" => r.usage = Some(("anonymous".into(), ctx.blame(a.span))),
            "partner" => r.usage = Some(("partner".into(), ctx.blame(a.span))),
            "internal" | "client" => ctx.error(bad_value(
                a,
                usage,
                "`Custom`, `Internet` or `Partner`: mailflow has no SMTP AUTH or Exchange server authentication",
            )),
            _ => ctx.error(bad_value(a, usage, "`Custom`, `Internet`, `Partner`")),
        }
    }

    fn need_certificate(&self, ctx: &mut Ctx, a: &Arg, why: &str) {
        if self.options.certificate.is_none() || self.options.key.is_none() {
            ctx.error(
                Diagnostic::new(Code::E077, format!("tls needs a certificate: {why}"))
                    .primary(a.span, "needs a certificate and key")
                    .help("export the Exchange certificate to PEM and pass `--certificate FILE.pem --key FILE.key`"),
            );
        }
    }

    fn send(&self, ctx: &mut Ctx, b: &mut Bound, s: &mut Send) {
        for sw in ["Internet", "Internal", "Partner", "Custom", "Usage"] {
            // The usage type only presets Exchange's defaults; mailflow's are the same.
            b.take(sw);
        }
        if let Some(a) = b.take("AddressSpaces") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                let mut spaces = Vec::new();
                for x in v {
                    let (kind, rest) = match x.split_once(':') {
                        Some((k, r)) => (k.to_string(), r.to_string()),
                        None => ("smtp".to_string(), x.clone()),
                    };
                    if !kind.eq_ignore_ascii_case("smtp") {
                        ctx.error(bad_value(&a, &x, "SMTP address spaces"));
                        continue;
                    }
                    let (domain, cost) = match rest.split_once(';') {
                        Some((d, c)) => (d.to_string(), c.trim().to_string()),
                        None => (rest, "1".to_string()),
                    };
                    spaces.push(if cost == "1" {
                        word(&domain)
                    } else {
                        format!("{} cost {}", word(&domain), word(&cost))
                    });
                }
                s.spaces = Some((spaces, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("SmartHosts") {
            if let Some(v) = self.arg_texts(ctx, &a) {
                s.smart_hosts = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("DNSRoutingEnabled") {
            if self.switch(ctx, &a) == Some(true) {
                s.smart_hosts = None;
            }
        }
        if let Some(a) = b.take("RequireTLS") {
            if let Some(v) = self.switch(ctx, &a) {
                s.require_tls = Some((v, ctx.blame(a.span)));
            }
        }
        if let Some(a) = b.take("IgnoreSTARTTLS") {
            if let Some(v) = self.switch(ctx, &a) {
                s.ignore_starttls = Some((v, ctx.blame(a.span)));
            }
        }
        let level = b.take("TlsAuthLevel");
        let domain = b.take("TlsDomain");
        if let Some(a) = &level {
            if let Some(v) = self.arg_text(ctx, a) {
                match v.to_ascii_lowercase().as_str() {
                    "domainvalidation" => match domain.as_ref().and_then(|d| self.arg_text(ctx, d))
                    {
                        Some(d) => s.tls_name = Some((d, ctx.blame(a.span))),
                        None => ctx.error(
                            Diagnostic::new(
                                Code::E075,
                                "`-TlsAuthLevel DomainValidation` needs `-TlsDomain`",
                            )
                            .primary(a.span, "which name must the certificate carry?")
                            .help("add `-TlsDomain mail.protection.outlook.com` (for example)"),
                        ),
                    },
                    "encryptiononly" | "certificatevalidation" => {
                        ctx.diags.push(no_effect(a, &v, "mailflow validates the next hop's certificate chain whenever TLS is required"));
                    }
                    _ => ctx.error(bad_value(
                        a,
                        &v,
                        "`EncryptionOnly`, `CertificateValidation` or `DomainValidation`",
                    )),
                }
            }
        } else if let Some(d) = &domain {
            ctx.error(bad_param(
                d,
                "`-TlsDomain` is used only with `-TlsAuthLevel DomainValidation`",
            ));
        }
        if let Some(a) = b.take("TlsCertificateName") {
            self.need_certificate(
                ctx,
                &a,
                "`-TlsCertificateName` names the client certificate",
            );
            s.certificate = Some(ctx.blame(a.span));
        }
        if let Some(a) = b.take("Fqdn") {
            if let Some(v) = self.arg_text(ctx, &a) {
                s.fqdn = Some((v, ctx.blame(a.span)));
            }
        }
        for p in ["ProtocolLoggingLevel", "MaxMessageSize"] {
            if let Some(a) = b.take(p) {
                ctx.diags.push(no_effect(
                    &a,
                    p,
                    "mailflow limits message size on receive connectors",
                ));
            }
        }
    }

    fn rule(&self, ctx: &mut Ctx, c: &Command, b: &mut Bound, st: &mut Vec<(String, String, B)>) {
        let put = |key: &str, text: String, blame: B, st: &mut Vec<(String, String, B)>| {
            st.retain(|(k, _, _)| k != key);
            st.push((key.to_string(), text, blame));
        };
        for (neg, prefix) in [(false, "if"), (true, "except")] {
            let p = |n: &str| {
                if neg {
                    format!("ExceptIf{n}")
                } else {
                    n.to_string()
                }
            };
            if let Some(a) = b.take(&p("FromScope")) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    let scope = match v.to_ascii_lowercase().as_str() {
                        "inorganization" => "inside",
                        "notinorganization" => "outside",
                        _ => {
                            ctx.error(bad_value(&a, &v, "`InOrganization` or `NotInOrganization`"));
                            continue;
                        }
                    };
                    put(
                        &p("FromScope"),
                        format!("{prefix} sender {scope}"),
                        ctx.blame(a.span),
                        st,
                    );
                }
            }
            for (param, field, op) in [
                (
                    "AnyOfRecipientAddressContainsWords",
                    "recipient",
                    "contains-words",
                ),
                (
                    "AnyOfRecipientAddressMatchesPatterns",
                    "recipient",
                    "matches",
                ),
                ("FromAddressContainsWords", "sender", "contains-words"),
                ("FromAddressMatchesPatterns", "sender", "matches"),
                ("SubjectContainsWords", "subject", "contains-words"),
                ("SubjectMatchesPatterns", "subject", "matches"),
            ] {
                if let Some(a) = b.take(&p(param)) {
                    // `-AnyOfRecipientAddressContains` (seed 002) is PowerShell's abbreviation of
                    // ...ContainsWords; mailflow reads that spelling as a substring test, as
                    // docs/language.md explains.
                    let op = if param == "AnyOfRecipientAddressContainsWords"
                        && self.written_as(c, a.span, "AnyOfRecipientAddressContains")
                    {
                        "contains"
                    } else {
                        op
                    };
                    if let Some(v) = self.arg_texts(ctx, &a) {
                        let list: Vec<String> = v.iter().map(|x| string(x)).collect();
                        put(
                            &p(param),
                            format!("{prefix} {field} {op} {}", list.join(", ")),
                            ctx.blame(a.span),
                            st,
                        );
                    }
                }
            }
            for (name_param, value_param, op) in [
                (
                    "HeaderContainsMessageHeader",
                    "HeaderContainsWords",
                    "contains-words",
                ),
                (
                    "HeaderMatchesMessageHeader",
                    "HeaderMatchesPatterns",
                    "matches",
                ),
            ] {
                let n = b.take(&p(name_param));
                let v = b.take(&p(value_param));
                match (n, v) {
                    (None, None) => {}
                    (Some(n), Some(v)) => {
                        if let (Some(h), Some(vals)) =
                            (self.arg_text(ctx, &n), self.arg_texts(ctx, &v))
                        {
                            let list: Vec<String> = vals.iter().map(|x| string(x)).collect();
                            put(
                                &p(value_param),
                                format!("{prefix} header {} {op} {}", string(&h), list.join(", ")),
                                ctx.blame(v.span),
                                st,
                            );
                        }
                    }
                    (Some(a), None) | (None, Some(a)) => ctx.error(
                        Diagnostic::new(
                            Code::E075,
                            format!(
                                "`-{}` and `-{}` come together",
                                p(name_param),
                                p(value_param)
                            ),
                        )
                        .primary(a.span, "the other half is missing")
                        .help("give the header name and the words (or patterns)"),
                    ),
                }
            }
            if let Some(a) = b.take(&p("MessageSizeOver")) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    match Conv::Size.apply(&v) {
                        Some(s) => put(
                            &p("MessageSizeOver"),
                            format!("{prefix} size over {s}"),
                            ctx.blame(a.span),
                            st,
                        ),
                        None => ctx.error(bad_value(&a, &v, Conv::Size.expected())),
                    }
                }
            }
            if let Some(a) = b.take(&p("SenderIpRanges")) {
                if let Some(v) = self.arg_texts(ctx, &a) {
                    put(
                        &p("SenderIpRanges"),
                        format!("{prefix} client-ip in {}", words(&v)),
                        ctx.blame(a.span),
                        st,
                    );
                }
            }
        }
        for (param, action) in [
            ("StopRuleProcessing", "stop"),
            ("DeleteMessage", "delete"),
            ("Disconnect", "disconnect"),
        ] {
            if let Some(a) = b.take(param) {
                match self.switch(ctx, &a) {
                    Some(true) => put(param, action.to_string(), ctx.blame(a.span), st),
                    Some(false) => st.retain(|(k, _, _)| k != param),
                    None => {}
                }
            }
        }
        if let Some(a) = b.take("Quarantine") {
            if self.switch(ctx, &a) == Some(true) {
                ctx.error(bad_param(&a, "mailflow quarantines to a mailbox it is given: write `quarantine ADDRESS` in the rule"));
            }
        }
        let code = b.take("SmtpRejectMessageRejectStatusCode");
        let enhanced = b.take("RejectMessageEnhancedStatusCode");
        let text = b
            .take("SmtpRejectMessageRejectText")
            .or(b.take("RejectMessageReasonText"));
        if code.is_some() || enhanced.is_some() || text.is_some() {
            let mut parts: Vec<String> = Vec::new();
            let mut basic = None;
            let mut enh = None;
            let mut blame = None;
            for a in [&code, &enhanced].into_iter().flatten() {
                blame = Some(ctx.blame(a.span));
                if let Some(v) = self.arg_text(ctx, a) {
                    if v.contains('.') {
                        enh = Some(v);
                    } else {
                        basic = Some(v);
                    }
                }
            }
            if let Some(e) = &enh {
                if basic.is_none() {
                    basic = Some(if e.starts_with('4') { "450" } else { "550" }.to_string());
                }
            }
            parts.extend(basic);
            parts.extend(enh);
            if let Some(t) = &text {
                blame = blame.or(Some(ctx.blame(t.span)));
                if let Some(v) = self.arg_text(ctx, t) {
                    if parts.is_empty() {
                        parts.push("550".into());
                        parts.push("5.7.1".into());
                    }
                    parts.push(string(&v));
                }
            }
            if let Some(blame) = blame {
                put("reject", format!("reject {}", parts.join(" ")), blame, st);
            }
        }
        for (param, action) in [
            ("RedirectMessageTo", "redirect-to"),
            ("AddToRecipients", "add-recipient"),
            ("CopyTo", "copy-to"),
            ("BlindCopyTo", "blind-copy-to"),
        ] {
            if let Some(a) = b.take(param) {
                if let Some(v) = self.arg_texts(ctx, &a) {
                    put(
                        param,
                        format!("{action} {}", words(&v)),
                        ctx.blame(a.span),
                        st,
                    );
                }
            }
        }
        let hn = b.take("SetHeaderName");
        let hv = b.take("SetHeaderValue");
        match (hn, hv) {
            (None, None) => {}
            (Some(n), Some(v)) => {
                if let (Some(n2), Some(v2)) = (self.arg_text(ctx, &n), self.arg_text(ctx, &v)) {
                    put(
                        "SetHeader",
                        format!("set-header {} {}", string(&n2), string(&v2)),
                        ctx.blame(n.span),
                        st,
                    );
                }
            }
            (Some(a), None) | (None, Some(a)) => ctx.error(
                Diagnostic::new(
                    Code::E075,
                    "`-SetHeaderName` and `-SetHeaderValue` come together",
                )
                .primary(a.span, "the other half is missing")
                .help("give both the header's name and its value"),
            ),
        }
        for (param, action, quote) in [
            ("RemoveHeader", "remove-header", true),
            ("PrependSubject", "prepend-subject", true),
            ("LogEventText", "log", true),
        ] {
            if let Some(a) = b.take(param) {
                if let Some(v) = self.arg_text(ctx, &a) {
                    let v = if quote { string(&v) } else { word(&v) };
                    put(param, format!("{action} {v}"), ctx.blame(a.span), st);
                }
            }
        }
    }

    /// Whether the parameter at `span` was written exactly as `spelling`.
    fn written_as(&self, c: &Command, span: Span, spelling: &str) -> bool {
        c.elements.iter().any(|e| match e {
            Element::Param { name, span: s, .. } => {
                *s == span && name.eq_ignore_ascii_case(spelling)
            }
            _ => false,
        })
    }

    fn resolve_token(&self, ctx: &mut Ctx, t: &Token) -> Option<String> {
        match t.kind {
            TokenKind::Bare | TokenKind::Quoted { expandable: false }
                if !(t.kind == TokenKind::Bare && t.text.contains('$')) =>
            {
                Some(t.text.clone())
            }
            // Bare words expand variables too (`john@tenant1.$domain`).
            TokenKind::Bare | TokenKind::Quoted { .. } => {
                let mut out = String::new();
                let mut rest = t.text.as_str();
                while let Some(i) = rest.find('$') {
                    out.push_str(rest.get(..i).unwrap_or(""));
                    let after = rest.get(i + 1..).unwrap_or("");
                    let name: String = after
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name.is_empty() {
                        if after.starts_with('(') || after.starts_with('{') {
                            ctx.error(
                                Diagnostic::new(
                                    Code::E073,
                                    "this string holds an expression mailflow does not evaluate",
                                )
                                .primary(t.span, "`$(...)` inside")
                                .help("write the value itself"),
                            );
                            return None;
                        }
                        out.push('$');
                        rest = after;
                        continue;
                    }
                    match self.vars.get(&lower(&name)) {
                        Some(Var::Text(v)) => out.push_str(v),
                        _ => {
                            ctx.error(
                                Diagnostic::new(
                                    Code::E073,
                                    format!("`${name}` has no value mailflow knows"),
                                )
                                .primary(t.span, "used in this string")
                                .help(format!(
                                    "assign `${name} = \"...\"` before, or write the value itself"
                                )),
                            );
                            return None;
                        }
                    }
                    rest = after.get(name.len()..).unwrap_or("");
                }
                out.push_str(rest);
                Some(out)
            }
            TokenKind::Variable { member } => {
                if !member {
                    match t.text.to_ascii_lowercase().as_str() {
                        "true" => return Some("$true".into()),
                        "false" => return Some("$false".into()),
                        "null" => return Some(String::new()),
                        _ => {}
                    }
                }
                match self
                    .vars
                    .get(&lower(t.text.split('.').next().unwrap_or("")))
                {
                    Some(Var::Text(v)) if !member => Some(v.clone()),
                    Some(Var::Opaque(unit)) => {
                        let line = self.statements.get(*unit).map_or(0, |s| s.lines.0);
                        ctx.error(
                            Diagnostic::new(
                                Code::E073,
                                format!(
                                    "`${}` holds a value mailflow cannot work out (line {line})",
                                    t.text
                                ),
                            )
                            .primary(
                                t.span,
                                "mailflow runs no commands and evaluates no expressions",
                            )
                            .help("write the value itself"),
                        );
                        None
                    }
                    Some(Var::Text(_)) => {
                        ctx.error(
                            Diagnostic::new(
                                Code::E073,
                                format!("`${}` reads a property mailflow does not know", t.text),
                            )
                            .primary(t.span, "a property")
                            .help("write the value itself"),
                        );
                        None
                    }
                    None => {
                        ctx.error(undefined(t));
                        None
                    }
                }
            }
            TokenKind::Subexpression => {
                ctx.error(
                    Diagnostic::new(
                        Code::E073,
                        format!("`{}` is an expression mailflow does not evaluate", t.text),
                    )
                    .primary(t.span, "an expression")
                    .help("write the value itself"),
                );
                None
            }
            TokenKind::Hashtable => {
                ctx.error(
                    Diagnostic::new(
                        Code::E072,
                        "a hashtable is accepted only by `-EmailAddresses`",
                    )
                    .primary(t.span, "`@{...}`")
                    .help("write the values as a comma-separated list"),
                );
                None
            }
            TokenKind::Placeholder => {
                ctx.error(placeholder(t));
                None
            }
        }
    }

    fn resolve_one(&self, ctx: &mut Ctx, v: &Value) -> Option<String> {
        if v.items.len() != 1 {
            ctx.error(
                Diagnostic::new(Code::E072, "one value is expected here, not a list")
                    .primary(v.span, "a list")
                    .help("give a single value"),
            );
            return None;
        }
        v.items.first().and_then(|t| self.resolve_token(ctx, t))
    }

    fn arg_text(&self, ctx: &mut Ctx, a: &Arg) -> Option<String> {
        match &a.value {
            Some(v) => self.resolve_one(ctx, v),
            None => {
                ctx.error(
                    Diagnostic::new(Code::E075, format!("`-{}` has no value", a.name))
                        .primary(a.span, "a value must follow")
                        .help(format!("write `-{}:VALUE`", a.name)),
                );
                None
            }
        }
    }

    fn arg_texts(&self, ctx: &mut Ctx, a: &Arg) -> Option<Vec<String>> {
        let v = a.value.as_ref()?;
        let mut out = Vec::new();
        let mut ok = true;
        for t in &v.items {
            match self.resolve_token(ctx, t) {
                // `"a,b"` in one string is a list too (as Exchange's multi-valued parameters read it).
                Some(s) => out.extend(
                    s.split(',')
                        .map(|x| x.trim().to_string())
                        .filter(|x| !x.is_empty()),
                ),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A boolean or switch parameter: `-X`, `-X:$true`, `-X $false`.
    fn switch(&self, ctx: &mut Ctx, a: &Arg) -> Option<bool> {
        let Some(v) = &a.value else { return Some(true) };
        let t = self.resolve_one(ctx, v)?;
        match t.to_ascii_lowercase().as_str() {
            "$true" | "true" | "1" => Some(true),
            "$false" | "false" | "0" => Some(false),
            _ => {
                ctx.error(bad_value(a, &t, "`$true` or `$false`"));
                None
            }
        }
    }

    /// The items of every live object.
    fn items(&self) -> Vec<Item> {
        let mut out = Vec::new();
        let live: Vec<(usize, &Object)> = self
            .objects
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.as_ref().map(|o| (i, o)))
            .collect();
        // Recipients are named by display name when no other recipient shares it.
        let names: HashMap<usize, String> = live
            .iter()
            .filter(|(_, o)| matches!(o.kind, Kind::Recipient(_)))
            .map(|(i, o)| {
                let name = match &o.display {
                    Some(d)
                        if live
                            .iter()
                            .filter(|(_, x)| {
                                matches!(x.kind, Kind::Recipient(_))
                                    && (x.display.as_deref() == Some(d.as_str()) || x.name == *d)
                            })
                            .count()
                            == 1 =>
                    {
                        d.clone()
                    }
                    _ => o.name.clone(),
                };
                (*i, name)
            })
            .collect();
        for (i, o) in &live {
            if o.kind == Kind::Rule {
                continue;
            }
            out.push(self.item(o, names.get(i).cloned(), &names, None));
        }
        for (p, i) in self.rule_order.iter().enumerate() {
            if let Some(Some(o)) = self.objects.get(*i) {
                out.push(self.item(o, None, &names, Some(p)));
            }
        }
        out
    }

    fn item(
        &self,
        o: &Object,
        name: Option<String>,
        names: &HashMap<usize, String>,
        priority: Option<usize>,
    ) -> Item {
        let created = o.created;
        let mut body: Vec<(String, B)> = Vec::new();
        let (section, head) = match &o.data {
            Data::Domain {
                domain,
                kind,
                subdomains,
            } => {
                let d = if subdomains.is_some() && !domain.starts_with("*.") {
                    format!("*.{domain}")
                } else {
                    domain.clone()
                };
                let mut line = format!("accepted-domain {}", word(&d));
                let mut blame = created;
                if let Some((k, b)) = kind {
                    if k != "authoritative" {
                        line.push(' ');
                        line.push_str(k);
                    }
                    blame = *b;
                }
                return Item {
                    section: Section::AcceptedDomains,
                    head: (line, blame),
                    body: None,
                    origin: o.origin.clone(),
                };
            }
            Data::Rewrite {
                internal,
                external,
                outbound_only,
                exceptions,
                last,
            } => {
                let mut line = String::from("rewrite ");
                if !o.name.is_empty() {
                    line.push_str(&string(&o.name));
                    line.push(' ');
                }
                line.push_str(&format!("{} -> {}", word(internal), word(external)));
                if *outbound_only {
                    line.push_str(" outbound-only");
                }
                if !exceptions.is_empty() {
                    line.push_str(&format!(" except {}", words(exceptions)));
                }
                return Item {
                    section: Section::Rewrites,
                    head: (line, *last),
                    body: None,
                    origin: o.origin.clone(),
                };
            }
            Data::Receive(r) => {
                if let Some((v, b)) = &r.listen {
                    body.push((format!("listen {}", words(v)), *b));
                }
                if let Some((v, b)) = &r.remote {
                    body.push((format!("remote {}", words(v)), *b));
                }
                if let Some((v, b)) = &r.fqdn {
                    body.push((format!("fqdn {}", word(v)), *b));
                }
                let mech = r.mechanisms.as_ref();
                let tls_off = mech.is_some_and(|(m, _)| !m.iter().any(|x| x == "tls"));
                match (&r.require_tls, mech) {
                    (Some((true, b)), _) => body.push(("tls required".into(), *b)),
                    (_, Some((_, b))) if tls_off => body.push(("tls off".into(), *b)),
                    _ => {}
                }
                if !tls_off || r.require_tls.is_some_and(|(t, _)| t) {
                    self.certificate_lines(&mut body, created);
                }
                if let Some((m, b)) =
                    mech.filter(|(m, _)| m.iter().any(|x| x == "externalauthoritative"))
                {
                    let _ = m;
                    body.push(("auth externally-secured".into(), *b));
                } else if let Some((p, b)) = &r.permissions {
                    let auth = if p.iter().any(|x| x == "partners")
                        && !p.iter().any(|x| x == "anonymoususers")
                    {
                        "partner"
                    } else {
                        "anonymous"
                    };
                    body.push((format!("auth {auth}"), *b));
                } else if let Some((u, b)) = &r.usage {
                    body.push((format!("auth {u}"), *b));
                }
                if let Some((v, b)) = &r.oorg {
                    if !v.is_empty() {
                        body.push((format!("accept-oorg {}", words(v)), *b));
                    }
                }
                if let Some(b) = r.any_recipient {
                    body.push(("accept-any-recipient".into(), b));
                }
                for (k, v, b) in &r.limits {
                    body.push((format!("{k} {v}"), *b));
                }
                (
                    Section::ReceiveConnectors,
                    format!("receive-connector {} {{", string(&o.name)),
                )
            }
            Data::Send(s) => {
                match &s.spaces {
                    Some((v, b)) => body.push((format!("address-space {}", v.join(", ")), *b)),
                    None => body.push(("address-space *".into(), created)),
                }
                if let Some((v, b)) = &s.smart_hosts {
                    body.push((format!("smart-host {}", words(v)), *b));
                }
                if let Some((true, b)) = &s.ignore_starttls {
                    body.push(("tls off".into(), *b));
                } else if let Some((true, b)) = &s.require_tls {
                    body.push(("tls required".into(), *b));
                }
                if let Some((v, b)) = &s.tls_name {
                    body.push((format!("tls-name {}", word(v)), *b));
                }
                if let Some(b) = s.certificate {
                    self.certificate_lines(&mut body, b);
                }
                if let Some((v, b)) = &s.fqdn {
                    body.push((format!("fqdn {}", word(v)), *b));
                }
                (
                    Section::SendConnectors,
                    format!("send-connector {} {{", string(&o.name)),
                )
            }
            Data::Recipient {
                addresses,
                external,
                hidden,
                members,
                auth_only,
            } => {
                if let Some((_, b)) = addresses.first() {
                    let list: Vec<String> = addresses.iter().map(|(a, _)| a.clone()).collect();
                    body.push((format!("address {}", words(&list)), *b));
                }
                if let Some((e, b)) = external {
                    body.push((format!("external {}", word(e)), *b));
                }
                if !members.is_empty() {
                    let list: Vec<String> = members
                        .iter()
                        .map(|(m, _)| match m {
                            Member::Object(i) => string(names.get(i).map_or("", String::as_str)),
                            Member::Address(a) => word(a),
                        })
                        .collect();
                    let b = members.last().map_or(created, |(_, b)| *b);
                    body.push((format!("members {}", list.join(", ")), b));
                }
                if let Some(b) = auth_only {
                    body.push(("authenticated-senders-only".into(), *b));
                }
                if let Some(b) = hidden {
                    body.push(("hidden".into(), *b));
                }
                let kw = match o.kind {
                    Kind::Recipient(RecipientKind::MailUser) => "mail-user",
                    Kind::Recipient(RecipientKind::Group) => "group",
                    _ => "contact",
                };
                (
                    Section::Recipients,
                    format!(
                        "{kw} {} {{",
                        string(&name.unwrap_or_else(|| o.name.clone()))
                    ),
                )
            }
            Data::Rule { mode, statements } => {
                if let Some(p) = priority {
                    body.push((format!("priority {p}"), created));
                }
                if let Some((m, b)) = mode {
                    body.push((format!("mode {m}"), *b));
                }
                let (conds, actions): (Vec<_>, Vec<_>) = statements
                    .iter()
                    .partition(|(_, t, _)| t.starts_with("if ") || t.starts_with("except "));
                let (ifs, excepts): (Vec<_>, Vec<_>) = conds
                    .into_iter()
                    .partition(|(_, t, _)| t.starts_with("if "));
                for (_, t, b) in ifs.into_iter().chain(excepts).chain(actions) {
                    body.push((t.clone(), *b));
                }
                (Section::Rules, format!("rule {} {{", string(&o.name)))
            }
        };
        Item {
            section,
            head: (head, created),
            body: Some(body),
            origin: o.origin.clone(),
        }
    }

    fn certificate_lines(&self, body: &mut Vec<(String, B)>, blame: B) {
        if let (Some(c), Some(k)) = (&self.options.certificate, &self.options.key) {
            body.push((format!("certificate {}", string(c)), blame));
            body.push((format!("key {}", string(k)), blame));
        }
    }
}

impl Ctx {
    fn errors_missing_member(&mut self, obj: &Object) {
        self.error(
            Diagnostic::new(Code::E075, "the command names no `-Member`")
                .primary(obj.created.span, "for this group")
                .help("write `-Member NAME`"),
        );
    }
}

#[derive(Clone, Copy)]
enum Conv {
    Size,
    Number,
    Duration,
}

impl Conv {
    fn expected(self) -> &'static str {
        match self {
            Conv::Size => "a size such as `36MB` or `36 MB (37,748,736 bytes)`",
            Conv::Number => "a whole number",
            Conv::Duration => "a time span such as `00:05:00`",
        }
    }

    fn apply(self, v: &str) -> Option<String> {
        match self {
            Conv::Number => v.trim().parse::<u64>().ok().map(|n| n.to_string()),
            Conv::Size => {
                // `36MB`, `36 MB`, `36 MB (37,748,736 bytes)`, `37748736`.
                let head = v.split('(').next().unwrap_or("").trim();
                let digits: String = head.chars().take_while(|c| c.is_ascii_digit()).collect();
                let unit = head
                    .get(digits.len()..)
                    .unwrap_or("")
                    .trim()
                    .to_ascii_uppercase();
                let n: u64 = digits.parse().ok()?;
                let unit = match unit.as_str() {
                    "" | "B" => "B",
                    "KB" => "KB",
                    "MB" => "MB",
                    "GB" => "GB",
                    _ => return None,
                };
                Some(if unit == "B" {
                    n.to_string()
                } else {
                    format!("{n}{unit}")
                })
            }
            Conv::Duration => {
                // [d.]hh:mm:ss
                let (days, rest) = match v.trim().split_once('.') {
                    Some((d, r)) if r.contains(':') => (d.parse::<u64>().ok()?, r),
                    _ => (0, v.trim()),
                };
                let parts: Vec<u64> = rest
                    .split(':')
                    .map(|p| p.parse::<u64>().ok())
                    .collect::<Option<_>>()?;
                let [h, m, s] = parts.as_slice() else {
                    return None;
                };
                let secs = days * 86400 + h * 3600 + m * 60 + s;
                Some(if secs % 86400 == 0 && secs > 0 {
                    format!("{}d", secs / 86400)
                } else if secs % 3600 == 0 && secs > 0 {
                    format!("{}h", secs / 3600)
                } else if secs % 60 == 0 && secs > 0 {
                    format!("{}m", secs / 60)
                } else {
                    format!("{secs}s")
                })
            }
        }
    }
}

fn strip_smtp(v: &str) -> String {
    match v.split_once(':') {
        Some((k, rest)) if k.eq_ignore_ascii_case("smtp") => rest.to_string(),
        _ => v.to_string(),
    }
}

fn is_builtin(name: &str) -> bool {
    ["true", "false", "null"].contains(&name.to_ascii_lowercase().as_str())
}

/// Finds a parameter by its name or an unambiguous prefix, as PowerShell does.
fn find_param(spec: &[(&'static str, P)], name: &str) -> Option<(&'static str, P)> {
    if let Some(p) = spec.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Some(*p);
    }
    let lname = name.to_ascii_lowercase();
    let mut matches = spec
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with(&lname));
    let first = matches.next()?;
    matches.next().is_none().then_some(*first)
}

fn unsupported(c: &Command) -> Diagnostic {
    let lc = c.name.to_ascii_lowercase();
    let help = if lc.contains("unifiedgroup") || lc.contains("msol") || lc.contains("mailbox") {
        "this configures Exchange Online or the directory, not the edge's mail flow; leave it where it runs"
    } else {
        "mailflow imports accepted domains, connectors, address rewrite entries, transport rules, contacts, mail users and groups (docs/import.md)"
    };
    Diagnostic::new(Code::E070, format!("`{}` cannot be imported", c.name))
        .primary(c.name_span, "not a cmdlet mailflow translates")
        .help(help)
}

fn unsupported_in_pipeline(c: &Command) -> Diagnostic {
    Diagnostic::new(
        Code::E070,
        format!("`{}` cannot feed another command", c.name),
    )
    .primary(
        c.name_span,
        "only `Get-` commands naming one object may start a pipeline",
    )
    .help("write the commands one per line")
}

fn placeholder(t: &Token) -> Diagnostic {
    let help = if t.text.to_ascii_lowercase().contains("eop") {
        "replace it with the Exchange Online Protection ranges (https://endpoints.office.com), e.g. `40.92.0.0/15, 40.107.0.0/16, 52.100.0.0/14, 104.47.0.0/17, 2a01:111:f400::/48`"
    } else {
        "replace it with the real value"
    };
    Diagnostic::new(Code::E073, format!("`{}` is a placeholder", t.text))
        .primary(t.span, "template text, not a value")
        .help(help)
}

fn undefined(t: &Token) -> Diagnostic {
    Diagnostic::new(Code::E073, format!("`${}` is never assigned", t.text))
        .primary(t.span, "no value")
        .help(format!(
            "assign it before this line (`${} = \"...\"`), or write the value itself",
            t.text
        ))
}

fn missing(c: &Command, param: &str, what: &str) -> Diagnostic {
    Diagnostic::new(Code::E075, format!("`{}` needs `-{param}`", c.name))
        .primary(c.name_span, format!("{what} is not given"))
        .help(format!("add `-{param} VALUE`"))
}

fn bad_value(a: &Arg, v: &str, expected: &str) -> Diagnostic {
    Diagnostic::new(
        Code::E072,
        format!("`{v}` is not a value mailflow can import for `-{}`", a.name),
    )
    .primary(
        a.value.as_ref().map_or(a.span, |v| v.span),
        format!("expected {expected}"),
    )
    .help(format!("use {expected}"))
}

fn bad_param(a: &Arg, why: &str) -> Diagnostic {
    Diagnostic::new(Code::E072, format!("`-{}` cannot be imported here", a.name))
        .primary(a.span, why.to_string())
        .help("remove it; docs/import.md lists what each cmdlet translates")
}

fn no_effect(a: &Arg, what: &str, why: &str) -> Diagnostic {
    let message = if what == a.name {
        format!("`-{what}` is left out")
    } else {
        format!("`{what}` in `-{}` is left out", a.name)
    };
    Diagnostic::new(Code::W041, message)
        .primary(
            a.value.as_ref().map_or(a.span, |v| v.span),
            "no mailflow equivalent",
        )
        .help(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_convert() {
        assert_eq!(
            Conv::Size.apply("36 MB (37,748,736 bytes)").as_deref(),
            Some("36MB")
        );
        assert_eq!(Conv::Size.apply("10485760").as_deref(), Some("10485760"));
        assert_eq!(Conv::Size.apply("unlimited"), None);
        assert_eq!(Conv::Duration.apply("00:05:00").as_deref(), Some("5m"));
        assert_eq!(Conv::Duration.apply("1.00:00:00").as_deref(), Some("1d"));
        assert_eq!(Conv::Duration.apply("00:00:45").as_deref(), Some("45s"));
    }

    #[test]
    fn parameters_match_by_unambiguous_prefix() {
        let spec = [("RequireTLS", P::V), ("RemoteIPRanges", P::V)];
        assert_eq!(
            find_param(&spec, "requiretls").map(|p| p.0),
            Some("RequireTLS")
        );
        assert_eq!(
            find_param(&spec, "RemoteIP").map(|p| p.0),
            Some("RemoteIPRanges")
        );
        assert_eq!(find_param(&spec, "Re"), None);
    }
}
