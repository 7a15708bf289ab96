//! The stages of [`evaluate`], one function each, in the order Exchange runs them (see the
//! module's overview); `evaluate_inner` is that list and nothing else. The larger stages live
//! beside this file: attribution and the header firewall in `trust`, recipient resolution in
//! `recipients`, transport rules in `transport`.

use super::message::Message;
use super::recipients::resolve;
use super::run::{Run, auth_word};
use super::transport::transport_rules;
use super::trust::{attribute, header_firewall};
use super::{Change, Envelope, Fate, RecipientVerdict, Stage, Verdict};
use crate::compile::{Outbound, Table, route, select_receive};
use crate::model::{Address, AuthAs, ReceiveConnector};
use crate::smtp::Status;
use std::borrow::Cow;

/// Headers an outbound rewrite changes (never Received, Return-Path, Message-ID, ...).
pub(crate) const OUTBOUND_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "Return-Receipt-To",
    "Disposition-Notification-To",
    "Resent-From",
    "Resent-Sender",
];

/// Headers an inbound rewrite changes.
pub(crate) const INBOUND_HEADERS: &[&str] = &["To", "Cc"];

pub(super) fn reject(code: u16, enhanced: &str, text: &str) -> Fate {
    Fate::Reject(Status::new(code, enhanced, text))
}

/// A recipient on its way through the stages.
pub(super) struct Pending<'a> {
    /// RCPT TO as received (borrowed from the envelope: most are never copied).
    pub(super) original: Cow<'a, Address>,
    /// As addressed after inbound rewriting (what transport rules see).
    pub(super) addressed: Cow<'a, Address>,
    /// The final address when forwarding or expansion made it another than `addressed`
    /// (most recipients keep theirs, and are not copied for it).
    pub(super) forwarded: Option<Address>,
    pub(super) fate: Option<Fate>,
    /// No object here knows the address, and its internal-relay domain verifies recipients.
    pub(super) verify: bool,
    /// Why the address is not RCPT TO's, set where it is changed.
    pub(super) change: Option<Change>,
}

impl Pending<'_> {
    /// The final address (after forwarding and expansion).
    pub(super) fn address(&self) -> &Address {
        self.forwarded.as_ref().unwrap_or(&self.addressed)
    }
}

/// What the stages decided, for [`finish`] to put in the verdict beside the run's message,
/// header changes and trace.
struct Decided {
    connector: Option<String>,
    auth_as: AuthAs,
    originating_org: Option<String>,
    mail_from: Option<Address>,
    recipients: Vec<RecipientVerdict>,
    rules_fired: Vec<String>,
    disconnect: bool,
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

/// Who the message is from as the connection proves it (the attribution stage alone):
/// the relay verifies SPF, DKIM and DMARC of `Anonymous` mail before it evaluates, whatever
/// the connector, since an `externally-secured` connector that trusts XOORG takes
/// anonymous mail too (every other tenant of Exchange Online Protection). `None` when no
/// receive connector takes the client.
pub fn auth_as(table: &Table, env: &Envelope) -> Option<AuthAs> {
    let mut run = Run::new(table, false, None);
    let connector = receive_connector(&mut run, env)?;
    Some(attribute(&mut run, connector, env).0)
}

/// The stages in order; `with_rules` is false at RCPT time (no header stages, no transport
/// rules, no outbound rewriting).
fn evaluate_inner(
    table: &Table,
    env: &Envelope,
    message: Option<&Message>,
    explain: bool,
    with_rules: bool,
) -> Verdict {
    let mut run = Run::new(table, explain, message);
    let Some(connector) = receive_connector(&mut run, env) else {
        return refuse_all(run, env);
    };
    let (auth, originating_org) = attribute(&mut run, connector, env);
    if with_rules {
        header_firewall(&mut run, auth, originating_org.as_deref());
    }
    let pending = inbound_rewrite(&mut run, env, with_rules);
    let mut resolved = resolve(&mut run, connector, auth, env.day, pending);
    let (rules_fired, disconnect) = if with_rules {
        let org = originating_org.as_deref();
        transport_rules(&mut run, env, auth, org, connector, &mut resolved)
    } else {
        (Vec::new(), false)
    };
    let mail_from = if with_rules {
        outbound_rewrite(&mut run, env, auth)
    } else {
        env.mail_from.clone()
    };
    let recipients = route_all(&mut run, resolved);
    finish(
        run,
        Decided {
            connector: Some(connector.name.value.clone()),
            auth_as: auth,
            originating_org,
            mail_from,
            recipients,
            rules_fired,
            disconnect,
        },
    )
}

/// The receive connector: the one named in the envelope (dry runs and tests), else the one
/// whose listen address and most specific remote range take the client.
fn receive_connector<'t>(run: &mut Run<'t>, env: &Envelope) -> Option<&'t ReceiveConnector> {
    let table = run.table;
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
    if run.explain {
        if let Some(connector) = connector {
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
    }
    connector
}

/// The verdict when no receive connector takes the client: every recipient refused.
fn refuse_all(mut run: Run<'_>, env: &Envelope) -> Verdict {
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
    let recipients = env
        .rcpt_to
        .iter()
        .map(|a| RecipientVerdict {
            original: a.clone(),
            address: a.clone(),
            fate: fate.clone(),
            verify: false,
            change: None,
        })
        .collect();
    finish(
        run,
        Decided {
            connector: None,
            auth_as: AuthAs::Anonymous,
            originating_org: None,
            mail_from: env.mail_from.clone(),
            recipients,
            rules_fired: Vec::new(),
            disconnect: false,
        },
    )
}

/// Inbound rewriting: external to internal addresses, in RCPT TO and (with `headers`) in To
/// and Cc.
fn inbound_rewrite<'a>(run: &mut Run<'_>, env: &'a Envelope, headers: bool) -> Vec<Pending<'a>> {
    let table = run.table;
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
            forwarded: None,
            addressed: address,
            fate: None,
            verify: false,
            change,
        });
    }
    if headers {
        run.rewrite_headers(INBOUND_HEADERS, Stage::InboundRewrite, |a| {
            table
                .rewrites
                .inbound(a)
                .map(|r| (r.address, table.rewrites.name(r.entry).to_string()))
        });
    }
    pending
}

/// Outbound rewriting, internal to external addresses, for internal mail only: MAIL FROM
/// and the sender headers. Returns MAIL FROM as it leaves.
fn outbound_rewrite(run: &mut Run<'_>, env: &Envelope, auth: AuthAs) -> Option<Address> {
    let table = run.table;
    if auth != AuthAs::Internal {
        if !table.rewrites.is_empty() {
            trace!(
                run,
                Stage::OutboundRewrite,
                "skipped: only internal mail is rewritten outbound (this message is {})",
                auth_word(auth).to_lowercase(),
            );
        }
        return env.mail_from.clone();
    }
    let mut mail_from = env.mail_from.clone();
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
            Outbound::Rewritten(r) => Some((r.address, table.rewrites.name(r.entry).to_string())),
            _ => None,
        }
    });
    mail_from
}

/// Routing: each recipient still open goes to the send connector whose address space covers
/// its domain most closely; with none, it is refused.
fn route_all(run: &mut Run<'_>, resolved: Vec<Pending>) -> Vec<RecipientVerdict> {
    let table = run.table;
    let mut verdicts = Vec::with_capacity(resolved.len());
    for p in resolved {
        let fate = match p.fate {
            Some(f) => f,
            None => match route(&table.send_connectors, &p.address().domain, &table.domains)
                .and_then(|i| table.send_connectors.get(i))
            {
                Some(c) => {
                    trace!(run, Stage::Route, "{} via `{}`", p.address(), c.name.value);
                    Fate::Deliver {
                        connector: c.name.value.clone(),
                    }
                }
                None => {
                    trace!(
                        run,
                        Stage::Route,
                        "{}: no send connector's address space covers {}: 550 5.4.4",
                        p.address(),
                        p.address().domain
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
            address: p.forwarded.unwrap_or_else(|| p.addressed.into_owned()),
            fate,
            verify,
            change: p.change,
        });
    }
    verdicts
}

fn finish(run: Run<'_>, decided: Decided) -> Verdict {
    Verdict {
        connector: decided.connector,
        auth_as: decided.auth_as,
        originating_org: decided.originating_org,
        mail_from: decided.mail_from,
        recipients: decided.recipients,
        rules_fired: decided.rules_fired,
        disconnect: decided.disconnect,
        message: run.message,
        header_changes: run.header_changes,
        trace: run.trace,
    }
}
