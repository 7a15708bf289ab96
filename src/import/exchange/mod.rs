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

mod connectors;
mod items;
mod objects;
mod recipients;
mod rules;
mod spec;
mod values;

use spec::{P, find_param, noun_kind, spec};
use values::{
    Conv, bad_param, bad_value, is_builtin, missing, no_effect, placeholder, strip_smtp, undefined,
    unsupported, unsupported_in_pipeline,
};

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
            st.shared_service_relay();
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
                    // The cmdlet's name, not the whole statement: these run to hundreds of
                    // characters, and the finding names the line anyway.
                    self.statements.get(*unit).map_or(span, creating_cmdlet),
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
                Some(s) => {
                    // Identities are kept in lowercase; show the name as it was written.
                    let written = self
                        .objects
                        .iter()
                        .flatten()
                        .find(|o| lower(&o.name) == s)
                        .map_or(s, |o| o.name.as_str());
                    d.help(format!("did you mean `{written}`?"))
                }
                None => d.help("create it with a `New-` command before this line"),
            };
        }
        ctx.error(d);
        None
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

/// Where a statement that creates an object names its cmdlet (`New-...`), else the statement.
fn creating_cmdlet(s: &crate::import::powershell::Statement) -> Span {
    match &s.body {
        crate::import::powershell::Body::Pipeline(commands) => commands
            .iter()
            .find(|c| c.name.to_ascii_lowercase().starts_with("new-"))
            .or(commands.first())
            .map_or(s.span, |c| c.name_span),
        _ => s.span,
    }
}
