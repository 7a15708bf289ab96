//! The stages of [`evaluate`], one function each.

use super::message::{Header, Message, fold};
use super::trust::{attribute, header_firewall};
use super::{Change, Envelope, Fate, RecipientVerdict, Stage, Step, Verdict};
use crate::compile::{Facts, Lookup, Outbound, Outcome, RuleIndex, Table, route, select_receive};
use crate::model::{Action, Address, AuthAs, DomainKind, ReceiveConnector, RuleMode, Scope};
use std::borrow::Cow;

/// Adds a line to the trace, formatting it only when the trace is wanted: the relay's path
/// evaluates without one and must not pay for the words.
macro_rules! trace {
    ($run:expr, $stage:expr, $($fmt:tt)+) => {
        if $run.explain {
            $run.step($stage, format!($($fmt)+));
        }
    };
}

/// Headers an outbound rewrite changes (never Received, Return-Path, Message-ID, ...).
const OUTBOUND_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Return-Receipt-To",
    "Disposition-Notification-To",
    "Resent-From",
    "Resent-Sender",
];

/// Headers an inbound rewrite changes.
const INBOUND_HEADERS: &[&str] = &["To", "Cc"];

pub(super) struct Run<'t> {
    pub(super) table: &'t Table,
    pub(super) explain: bool,
    trace: Vec<Step>,
    pub(super) message: Message,
    header_changes: Vec<(String, Option<String>, Option<String>)>,
}

impl Run<'_> {
    pub(super) fn step(&mut self, stage: Stage, text: impl Into<String>) {
        self.trace.push(Step {
            stage,
            text: text.into(),
        });
    }

    /// Sets a header where it stands (or at the end when absent); later copies are removed.
    /// The value is folded to keep lines within the limit (it is often an unfolded one, made
    /// longer).
    pub(super) fn set_header(&mut self, name: &str, value: &str) {
        let new = Header::new(name, &fold(name, &format!(" {value}")));
        self.replace_header(name, |_| new, value.to_string());
    }

    /// Replaces the first field called `name` with what `change` makes of it (or of a new
    /// empty field when there is none, added at the end) and removes later copies; records
    /// the change with `after` as the new value.
    pub(super) fn replace_header(
        &mut self,
        name: &str,
        change: impl FnOnce(&Header) -> Header,
        after: String,
    ) {
        let before = self.message.get(name);
        let headers = &mut self.message.headers;
        match headers
            .iter()
            .position(|h| h.name().eq_ignore_ascii_case(name))
        {
            Some(i) => {
                let mut seen = 0;
                headers.retain(|h| {
                    let same = h.name().eq_ignore_ascii_case(name);
                    seen += usize::from(same);
                    !same || seen == 1
                });
                if let Some(slot) = headers.get_mut(i) {
                    *slot = change(slot);
                }
            }
            None => headers.push(change(&Header::new(name, ""))),
        }
        self.header_changes
            .push((name.to_string(), before, Some(after)));
    }

    pub(super) fn remove_header(&mut self, name: &str) -> bool {
        let before = self.message.get(name);
        let n = self.message.headers.len();
        self.message
            .headers
            .retain(|h| !h.name().eq_ignore_ascii_case(name));
        let removed = self.message.headers.len() != n;
        if removed {
            self.header_changes.push((name.to_string(), before, None));
        }
        removed
    }

    /// Rewrites the addresses in some headers with `f`, recording each change. Only the
    /// addr-specs change; every other byte of the field stays as it arrived.
    fn rewrite_headers(
        &mut self,
        names: &[&str],
        stage: Stage,
        mut f: impl FnMut(&Address) -> Option<(Address, String)>,
    ) {
        let mut notes = Vec::new();
        let explain = self.explain;
        for h in &mut self.message.headers {
            if !names.iter().any(|n| h.name().eq_ignore_ascii_case(n)) {
                continue;
            }
            let rewritten = h.rewrite_addresses(|a| {
                let addr = parse_address(a)?;
                let (new, entry) = f(&addr)?;
                if explain {
                    notes.push(format!("{}: {a} -> {new} (entry `{entry}`)", h.name()));
                }
                Some(new.to_string())
            });
            if let Some((new, _)) = rewritten {
                let before = h.unfolded();
                *h = new;
                self.header_changes
                    .push((h.name().to_string(), Some(before), Some(h.unfolded())));
            }
        }
        for n in notes {
            self.step(stage, format!("header {n}"));
        }
    }
}

/// Reads `local@domain` from header text (a quoted local part in its canonical form, as
/// SMTP's: `"John.Smith"` is `John.Smith`).
fn parse_address(text: &str) -> Option<Address> {
    let (local, domain) = text.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains(['<', '>', ' ', '\r', '\n']) {
        return None;
    }
    Some(Address {
        local: Address::canonical_local(local).into_owned(),
        domain: domain.to_ascii_lowercase(),
    })
}

pub(super) fn auth_word(a: AuthAs) -> &'static str {
    match a {
        AuthAs::Internal => "Internal",
        AuthAs::Anonymous => "Anonymous",
        AuthAs::Partner => "Partner",
    }
}

/// Whether the local part carries a route of its own: `%` and `!` paths, or an `@` inside
/// a quoted local part.
fn routes(a: &Address) -> bool {
    a.local.bytes().any(|b| matches!(b, b'%' | b'!' | b'@'))
}

fn reject(code: u16, enhanced: &str, text: &str) -> Fate {
    Fate::Reject {
        code,
        enhanced: enhanced.to_string(),
        text: text.to_string(),
    }
}

/// A recipient on its way through the stages.
struct Pending<'a> {
    /// RCPT TO as received (borrowed from the envelope: most are never copied).
    original: Cow<'a, Address>,
    /// As addressed after inbound rewriting (what transport rules see).
    addressed: Cow<'a, Address>,
    /// The final address (after forwarding and expansion).
    address: Address,
    fate: Option<Fate>,
    /// No object here knows the address, and its internal-relay domain verifies recipients.
    verify: bool,
    /// Why the address is not RCPT TO's, set where it is changed.
    change: Option<Change>,
}

/// Evaluates one message. With `explain`, every rule is evaluated and explained in the trace
/// (the dry run); without, only rules that can match are looked at (the relay's path). Both
/// reach the same verdict.
pub fn evaluate(
    table: &Table,
    env: &Envelope,
    message: Option<&Message>,
    explain: bool,
) -> Verdict {
    evaluate_inner(table, env, message, explain, true)
}

/// What is known at RCPT time, before the message exists: connector, attribution, inbound
/// rewriting of the addresses, recipient resolution, relay permission and routing, without
/// the header stages (firewall, header rewriting), transport rules or outbound rewriting.
/// The relay answers each RCPT TO from this, so an unknown recipient or a relay attempt is
/// refused before any data is sent; the full [`evaluate`] at end of data decides the rest.
pub fn evaluate_recipients(table: &Table, env: &Envelope) -> Verdict {
    evaluate_inner(table, env, None, false, false)
}

fn evaluate_inner(
    table: &Table,
    env: &Envelope,
    message: Option<&Message>,
    explain: bool,
    with_rules: bool,
) -> Verdict {
    let mut run = Run {
        table,
        explain,
        trace: Vec::new(),
        message: message.cloned().unwrap_or_default(),
        header_changes: Vec::new(),
    };

    // Connector and authentication.
    let connector = match &env.connector {
        Some(name) => table
            .receive_connectors
            .iter()
            .find(|c| &c.name.value == name),
        None => env
            .client_ip
            .and_then(|ip| select_receive(&table.receive_connectors, env.local, ip))
            .and_then(|i| table.receive_connectors.get(i)),
    };
    let Some(connector) = connector else {
        let who = env
            .client_ip
            .map_or("this client".to_string(), |ip| ip.to_string());
        trace!(
            run,
            Stage::Connector,
            "no receive connector accepts {who}: every recipient is refused"
        );
        let fate = reject(
            550,
            "5.7.1",
            "no receive connector accepts mail from this client",
        );
        return finish(
            run,
            None,
            AuthAs::Anonymous,
            None,
            env.mail_from.clone(),
            env.rcpt_to
                .iter()
                .map(|a| RecipientVerdict {
                    original: a.clone(),
                    address: a.clone(),
                    fate: fate.clone(),
                    verify: false,
                    change: None,
                })
                .collect(),
            Vec::new(),
            false,
        );
    };
    if run.explain {
        let name = &connector.name.value;
        run.step(
            Stage::Connector,
            match (env.connector.is_some(), env.client_ip) {
                (false, Some(ip)) => {
                    format!("client {ip} arrives on `{name}` (its most specific remote range)")
                }
                _ => format!("arrives on `{name}`"),
            },
        );
    }
    let (auth, originating_org) = attribute(&mut run, connector, env);
    if with_rules {
        header_firewall(&mut run, auth, originating_org.as_deref());
    }

    // Inbound rewriting: RCPT TO, To and Cc.
    let mut pending: Vec<Pending> = Vec::with_capacity(env.rcpt_to.len());
    for a in &env.rcpt_to {
        let rewritten = table.rewrites.inbound(a);
        let change = rewritten.as_ref().map(|_| Change::Resolve);
        let address = match rewritten {
            Some(r) => {
                trace!(
                    run,
                    Stage::InboundRewrite,
                    "RCPT TO {a} -> {} (entry `{}`)",
                    r.address,
                    table.rewrites.name(r.entry),
                );
                Cow::Owned(r.address)
            }
            None => Cow::Borrowed(a),
        };
        pending.push(Pending {
            original: Cow::Borrowed(a),
            address: address.as_ref().clone(),
            addressed: address,
            fate: None,
            verify: false,
            change,
        });
    }
    if with_rules {
        run.rewrite_headers(INBOUND_HEADERS, Stage::InboundRewrite, |a| {
            table
                .rewrites
                .inbound(a)
                .map(|r| (r.address, table.rewrites.name(r.entry).to_string()))
        });
    }

    // Recipient resolution and relay permission.
    let may_relay = auth == AuthAs::Internal || connector.accept_any_recipient.is_some();
    let mut resolved: Vec<Pending> = Vec::with_capacity(pending.len());
    for p in pending {
        // Sender-specified routing (`user%dom@here`, `dom!user@here`, `"user@dom"@here`) is
        // how an open relay is found: the next hop may route on the local part. From a
        // client that may not relay it is refused whatever the domain, and checked on the
        // address as written and as rewritten (Postfix's allow_untrusted_routing = no).
        if !may_relay && (routes(&p.original) || routes(&p.address)) {
            trace!(
                run,
                Stage::Resolve,
                "{}: the local part routes to another host (`%`, `!` or `@`): 550 5.7.1",
                p.original
            );
            resolved.push(Pending {
                fate: Some(reject(
                    550,
                    "5.7.1",
                    "sender-specified routing is not accepted",
                )),
                ..p
            });
            continue;
        }
        let kind = table.domains.kind(&p.address.domain);
        let Some(kind) = kind else {
            if may_relay {
                trace!(
                    run,
                    Stage::Resolve,
                    "{}: not an accepted domain; relayed ({})",
                    p.address,
                    if auth == AuthAs::Internal {
                        "the sender is internal"
                    } else {
                        "the connector relays for outside senders: `accept-any-recipient`"
                    }
                );
                resolved.push(p);
            } else {
                trace!(
                    run,
                    Stage::Resolve,
                    "{}: not an accepted domain, and `{}` does not relay for {} senders: 550 5.7.54",
                    p.address,
                    connector.name.value,
                    auth_word(auth).to_lowercase()
                );
                resolved.push(Pending {
                    fate: Some(reject(
                        550,
                        "5.7.54",
                        "SMTP; Unable to relay recipient in non-accepted domain",
                    )),
                    ..p
                });
            }
            continue;
        };
        match table.directory.lookup(&p.address) {
            Lookup::Forward {
                recipient,
                external,
            } => {
                let name = table
                    .directory
                    .get(recipient)
                    .map_or("", |r| r.name.value.as_str());
                trace!(
                    run,
                    Stage::Resolve,
                    "{}: `{name}` forwards to {external}",
                    p.address
                );
                resolved.push(Pending {
                    address: external,
                    change: Some(Change::Resolve),
                    ..p
                });
            }
            Lookup::Group { recipient } => {
                let Some(group) = table.directory.get(recipient) else {
                    continue;
                };
                if group.authenticated_senders_only && auth == AuthAs::Anonymous {
                    trace!(
                        run,
                        Stage::Resolve,
                        "{}: group `{}` accepts only authenticated senders: 550 5.7.1",
                        p.address,
                        group.name.value
                    );
                    resolved.push(Pending {
                        fate: Some(reject(
                            550,
                            "5.7.1",
                            "RESOLVER.RST.AuthRequired; authentication required",
                        )),
                        ..p
                    });
                    continue;
                }
                let e = table.directory.expand(recipient);
                trace!(
                    run,
                    Stage::Resolve,
                    "{}: group `{}` expands to {}",
                    p.address,
                    group.name.value,
                    e.addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                for a in e.addresses {
                    resolved.push(Pending {
                        original: p.original.clone(),
                        addressed: p.addressed.clone(),
                        address: a,
                        fate: None,
                        verify: false,
                        change: Some(Change::Expand),
                    });
                }
            }
            Lookup::Deleted { recipient }
                if kind == DomainKind::Authoritative && !p.address.is_postmaster() =>
            {
                let name = table
                    .directory
                    .get(recipient)
                    .map_or("", |r| r.name.value.as_str());
                trace!(
                    run,
                    Stage::Resolve,
                    "{}: the recipient `{name}` was deleted: 550 5.1.1",
                    p.address
                );
                resolved.push(Pending {
                    fate: Some(reject(
                        550,
                        "5.1.1",
                        "RESOLVER.ADR.ExRecipNotFound; not found",
                    )),
                    ..p
                });
            }
            Lookup::Unknown | Lookup::Deleted { .. } => {
                if kind == DomainKind::Authoritative && p.address.is_postmaster() {
                    // RFC 5321 §4.5.1: postmaster is never refused. No recipient or rewrite
                    // entry claims it here, so it goes where the domain's mail is routed.
                    trace!(
                        run,
                        Stage::Resolve,
                        "{}: postmaster of the authoritative domain {} is always accepted (RFC 5321); no recipient claims it, so it is routed like the domain's other mail",
                        p.address,
                        p.address.domain
                    );
                    resolved.push(p);
                } else if kind == DomainKind::Authoritative {
                    trace!(
                        run,
                        Stage::Resolve,
                        "{}: no such recipient in the authoritative domain {}: 550 5.1.1",
                        p.address,
                        p.address.domain
                    );
                    resolved.push(Pending {
                        fate: Some(reject(
                            550,
                            "5.1.1",
                            "RESOLVER.ADR.ExRecipNotFound; not found",
                        )),
                        ..p
                    });
                } else {
                    let verify = table.domains.verifies(&p.address.domain);
                    trace!(
                        run,
                        Stage::Resolve,
                        "{}: {} is {}; relayed{}",
                        p.address,
                        p.address.domain,
                        match kind {
                            DomainKind::InternalRelay => "an internal-relay domain",
                            _ => "an external-relay domain",
                        },
                        if verify {
                            " once the next hop confirms the recipient (`verify-recipients`)"
                        } else {
                            ""
                        }
                    );
                    resolved.push(Pending { verify, ..p });
                }
            }
        }
    }

    // Transport rules.
    let (fired, disconnect) = if with_rules {
        transport_rules(
            &mut run,
            env,
            auth,
            originating_org.as_deref(),
            connector,
            &mut resolved,
        )
    } else {
        (Vec::new(), false)
    };

    // Outbound rewriting, for internal mail only.
    let mut mail_from = env.mail_from.clone();
    if with_rules && auth == AuthAs::Internal {
        if let Some(from) = &env.mail_from {
            match table.rewrites.outbound(from) {
                Outbound::Rewritten(r) => {
                    trace!(
                        run,
                        Stage::OutboundRewrite,
                        "MAIL FROM {from} -> {} (entry `{}`)",
                        r.address,
                        table.rewrites.name(r.entry),
                    );
                    mail_from = Some(r.address);
                }
                Outbound::Excepted { entry, exception } => trace!(
                    run,
                    Stage::OutboundRewrite,
                    "MAIL FROM {from} kept: {exception} is an exception of entry `{}`",
                    table.rewrites.name(entry),
                ),
                Outbound::Unchanged => {}
            }
        }
        run.rewrite_headers(OUTBOUND_HEADERS, Stage::OutboundRewrite, |a| {
            match table.rewrites.outbound(a) {
                Outbound::Rewritten(r) => {
                    Some((r.address, table.rewrites.name(r.entry).to_string()))
                }
                _ => None,
            }
        });
    } else if with_rules && !table.rewrites.is_empty() {
        trace!(
            run,
            Stage::OutboundRewrite,
            "skipped: only internal mail is rewritten outbound (this message is {})",
            auth_word(auth).to_lowercase(),
        );
    }

    // Routing.
    let mut verdicts = Vec::new();
    for p in resolved {
        let fate = match p.fate {
            Some(f) => f,
            None => match route(&table.send_connectors, &p.address.domain, &table.domains)
                .and_then(|i| table.send_connectors.get(i))
            {
                Some(c) => {
                    trace!(run, Stage::Route, "{} via `{}`", p.address, c.name.value);
                    Fate::Deliver {
                        connector: c.name.value.clone(),
                    }
                }
                None => {
                    trace!(
                        run,
                        Stage::Route,
                        "{}: no send connector's address space covers {}: 550 5.4.4",
                        p.address,
                        p.address.domain
                    );
                    reject(
                        550,
                        "5.4.4",
                        "SMTPSEND.DNS.NonExistentDomain; no route to the recipient's domain",
                    )
                }
            },
        };
        let verify = p.verify && matches!(fate, Fate::Deliver { .. });
        verdicts.push(RecipientVerdict {
            original: p.original.into_owned(),
            address: p.address,
            fate,
            verify,
            change: p.change,
        });
    }
    finish(
        run,
        Some(connector.name.value.clone()),
        auth,
        originating_org,
        mail_from,
        verdicts,
        fired,
        disconnect,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    run: Run<'_>,
    connector: Option<String>,
    auth_as: AuthAs,
    originating_org: Option<String>,
    mail_from: Option<Address>,
    recipients: Vec<RecipientVerdict>,
    rules_fired: Vec<String>,
    disconnect: bool,
) -> Verdict {
    Verdict {
        connector,
        auth_as,
        originating_org,
        mail_from,
        recipients,
        rules_fired,
        disconnect,
        message: run.message,
        header_changes: run.header_changes,
        trace: run.trace,
    }
}

/// Runs the transport rules and applies the actions of those that fire. Returns the names of
/// the rules that fired and whether the connection is to be dropped.
fn transport_rules(
    run: &mut Run<'_>,
    env: &Envelope,
    auth: AuthAs,
    originating_org: Option<&str>,
    connector: &ReceiveConnector,
    recipients: &mut Vec<Pending>,
) -> (Vec<String>, bool) {
    let table = run.table;
    if table.rules.rules().is_empty() {
        return (Vec::new(), false);
    }
    if recipients.iter().all(|p| p.fate.is_some()) {
        trace!(
            run,
            Stage::Rules,
            "not run: no recipient was accepted, so the message is refused before its data is sent"
        );
        return (Vec::new(), false);
    }
    // The sender rules see: the From header's address when there is one, else MAIL FROM.
    let header_from = run
        .message
        .get("From")
        .and_then(|v| super::message::addresses(&v).into_iter().next())
        .and_then(|(_, a)| parse_address(&a));
    let sender = header_from.or_else(|| env.mail_from.clone());
    let sender_text = sender.as_ref().map(ToString::to_string).unwrap_or_default();
    let sender_domain_internal = sender.as_ref().is_some_and(|s| {
        matches!(
            table.domains.kind(&s.domain),
            Some(DomainKind::Authoritative | DomainKind::InternalRelay)
        )
    });
    let scope = if auth == AuthAs::Internal && sender_domain_internal {
        Scope::Inside
    } else {
        Scope::Outside
    };
    trace!(
        run,
        Stage::Rules,
        "the sender {} is {} the organization ({})",
        if sender_text.is_empty() {
            "<>"
        } else {
            &sender_text
        },
        if scope == Scope::Inside {
            "inside"
        } else {
            "outside"
        },
        match (auth == AuthAs::Internal, sender_domain_internal) {
            (true, true) => "internal connector, sender domain accepted".to_string(),
            (false, _) => format!("AuthAs {}", auth_word(auth)),
            (true, false) =>
                "the sender's domain is not authoritative or internal-relay".to_string(),
        }
    );
    let subject = run.message.text("Subject");
    // Only the headers some rule tests are unfolded.
    let unfolded: Vec<(String, String)> = run
        .message
        .headers
        .iter()
        .filter(|h| table.rules.tests_header(h.name()))
        .map(|h| (h.name().to_string(), h.text()))
        .collect();
    let facts = Facts {
        // Rules see the recipients as addressed (after inbound rewriting), as on an Edge
        // server, not what contacts and groups resolve them to.
        recipients: {
            let mut seen: Vec<&Address> = Vec::with_capacity(recipients.len());
            for p in recipients.iter().filter(|p| p.fate.is_none()) {
                let a: &Address = &p.addressed;
                if !seen.contains(&a) {
                    seen.push(a);
                }
            }
            seen.iter().map(ToString::to_string).collect()
        },
        sender: &sender_text,
        subject: subject.as_deref(),
        headers: unfolded
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect(),
        size: run.message.size(),
        client_ip: env.client_ip,
        connector: Some(connector.name.value.as_str()),
        originating_org,
        scope,
    };
    let index: &RuleIndex = &table.rules;
    let fired_ids: Vec<usize> = if run.explain {
        let all = index.run_all(&facts);
        for e in &all {
            let Some(rule) = index.rules().get(e.rule) else {
                continue;
            };
            let text = match &e.outcome {
                Outcome::Matched => format!("`{}` matched", rule.name),
                Outcome::ConditionFailed(i) => format!(
                    "`{}` did not match: `{}` is not true",
                    rule.name,
                    rule.condition_text.get(*i).map_or("", String::as_str)
                ),
                Outcome::Excepted(i) => format!(
                    "`{}` did not apply: the exception `{}` is true",
                    rule.name,
                    rule.exception_text.get(*i).map_or("", String::as_str)
                ),
            };
            run.step(Stage::Rules, text);
        }
        if all.len() < index.rules().len() {
            trace!(
                run,
                Stage::Rules,
                "{} later rule(s) not run: rule processing stopped",
                index.rules().len() - all.len(),
            );
        }
        all.into_iter()
            .filter(|e| e.outcome == Outcome::Matched)
            .map(|e| e.rule)
            .collect()
    } else {
        index.run(&facts)
    };
    drop(facts);
    let mut fired = Vec::new();
    let mut disconnect = false;
    for id in fired_ids {
        let Some(rule) = index.rules().get(id) else {
            continue;
        };
        fired.push(rule.name.clone());
        let audit = rule.mode == RuleMode::Audit;
        for action in &rule.actions {
            if audit {
                trace!(
                    run,
                    Stage::Rules,
                    "`{}` (audit mode) would: {}",
                    rule.name,
                    describe(action),
                );
                continue;
            }
            apply(run, &rule.name, action, recipients, &mut disconnect);
        }
    }
    (fired, disconnect)
}

fn describe(a: &Action) -> String {
    let list = |v: &[Address]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match a {
        Action::Stop => "stop processing rules".into(),
        Action::Delete => "delete the message".into(),
        Action::Reject {
            code,
            enhanced,
            text,
        } => format!("reject the message with {code} {enhanced} {text}"),
        Action::RedirectTo(v) => format!("redirect the message to {}", list(v)),
        Action::AddRecipient(v) => format!("add {} to To", list(v)),
        Action::CopyTo(v) => format!("add {} to Cc", list(v)),
        Action::BlindCopyTo(v) => format!("blind-copy {}", list(v)),
        Action::SetHeader { name, value } => format!("set {name}: {value}"),
        Action::RemoveHeader(n) => format!("remove {n}"),
        Action::PrependSubject(t) => format!("prepend \"{t}\" to the subject"),
        Action::Quarantine(a) => format!("quarantine the message to {a}"),
        Action::Disconnect => "drop the connection".into(),
        Action::Log(t) => format!("log \"{t}\""),
    }
}

fn apply(
    run: &mut Run<'_>,
    rule: &str,
    action: &Action,
    recipients: &mut Vec<Pending>,
    disconnect: &mut bool,
) {
    trace!(run, Stage::Rules, "`{rule}`: {}", describe(action));
    let open = |recipients: &mut Vec<Pending>, fate: Fate| {
        for p in recipients.iter_mut().filter(|p| p.fate.is_none()) {
            p.fate = Some(fate.clone());
        }
    };
    let add = |recipients: &mut Vec<Pending>, list: &[Address]| {
        for a in list {
            recipients.push(Pending {
                original: Cow::Owned(a.clone()),
                addressed: Cow::Owned(a.clone()),
                address: a.clone(),
                fate: None,
                verify: false,
                change: Some(Change::Redirect),
            });
        }
    };
    match action {
        Action::Stop | Action::Log(_) => {}
        Action::Delete => open(
            recipients,
            Fate::Drop {
                reason: format!("deleted by rule `{rule}`"),
            },
        ),
        Action::Reject {
            code,
            enhanced,
            text,
        } => open(recipients, reject(*code, enhanced, text)),
        Action::Disconnect => {
            *disconnect = true;
            open(
                recipients,
                Fate::Drop {
                    reason: format!("connection dropped by rule `{rule}`"),
                },
            );
        }
        Action::RedirectTo(list) => {
            recipients.retain(|p| p.fate.is_some());
            add(recipients, list);
        }
        Action::Quarantine(a) => {
            recipients.retain(|p| p.fate.is_some());
            add(recipients, std::slice::from_ref(a));
        }
        Action::AddRecipient(list) | Action::CopyTo(list) => {
            let header = if matches!(action, Action::AddRecipient(_)) {
                "To"
            } else {
                "Cc"
            };
            let extra = list
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let after = match run.message.get(header) {
                Some(v) if !v.is_empty() => format!("{v}, {extra}"),
                _ => extra.clone(),
            };
            run.replace_header(header, |h| h.append_to_list(&extra), after);
            add(recipients, list);
        }
        Action::BlindCopyTo(list) => add(recipients, list),
        Action::SetHeader { name, value } => run.set_header(name, value),
        Action::RemoveHeader(name) => {
            run.remove_header(name);
        }
        Action::PrependSubject(text) => {
            let subject = run.message.get("Subject").unwrap_or_default();
            run.replace_header("Subject", |h| h.prepend(text), format!("{text}{subject}"));
        }
    }
}
