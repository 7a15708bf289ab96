//! The recipient resolution and relay permission stage: which recipients the organization
//! has (contacts and mail users forward, groups expand, deleted and unknown recipients of an
//! authoritative domain are refused), which it relays for, sender-specified routing
//! refused from clients that may not relay, and bounces to our SRS addresses returned to
//! the sender their hash vouches for.

use super::run::{Run, auth_word};
use super::stages::{Pending, reject};
use super::{Change, Stage};
use crate::auth::srs::SrsError;
use crate::compile::Lookup;
use crate::model::{Address, AuthAs, DomainKind, ReceiveConnector};

/// Whether the local part carries a route of its own: `%` and `!` paths, or an `@` inside
/// a quoted local part.
fn routes(a: &Address) -> bool {
    a.local.bytes().any(|b| matches!(b, b'%' | b'!' | b'@'))
}

/// Recipient resolution and relay permission: sender-specified routing refused from clients
/// that may not relay, our SRS addresses reversed (on `day`, days since 1970; `None`: not
/// reversed), accepted domains resolved through the directory, the rest relayed or refused.
pub(super) fn resolve<'a>(
    run: &mut Run<'_>,
    connector: &ReceiveConnector,
    auth: AuthAs,
    day: Option<u64>,
    pending: Vec<Pending<'a>>,
) -> Vec<Pending<'a>> {
    let may_relay = auth == AuthAs::Internal || connector.accept_any_recipient.is_some();
    let mut resolved: Vec<Pending> = Vec::with_capacity(pending.len());
    for p in pending {
        // Sender-specified routing (`user%dom@here`, `dom!user@here`, `"user@dom"@here`) is
        // how an open relay is found: the next hop may route on the local part. From a
        // client that may not relay it is refused whatever the domain, and checked on the
        // address as written and as rewritten (Postfix's allow_untrusted_routing = no).
        if !may_relay && (routes(&p.original) || routes(p.address())) {
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
        if let Some(reversal) = day.and_then(|d| super::srs::reverse(run.table, p.address(), d)) {
            resolved.push(srs_reversed(run, reversal, p));
            continue;
        }
        match run.table.domains.kind(&p.address().domain) {
            Some(kind) => resolve_accepted(run, auth, kind, p, &mut resolved),
            None => resolved.push(relay_or_refuse(run, connector, auth, may_relay, p)),
        }
    }
    resolved
}

/// A bounce to one of our SRS addresses: on to the address its hash vouches for (and
/// relayed there whoever sends it: that address is the one the message came from, which is
/// what makes SRS no open relay), or refused when the hash, the day stamp or the shape is
/// wrong.
fn srs_reversed<'a>(
    run: &mut Run<'_>,
    reversal: Result<Address, SrsError>,
    p: Pending<'a>,
) -> Pending<'a> {
    let why = match reversal {
        Ok(original) => {
            trace!(
                run,
                Stage::Resolve,
                "{}: an SRS address of ours, its hash and day stamp valid: goes back to {original}",
                p.address()
            );
            return Pending {
                forwarded: Some(original),
                change: Some(Change::Resolve),
                ..p
            };
        }
        Err(SrsError::Expired) => {
            "SRS address expired: bounces are returned only for a limited time"
        }
        Err(SrsError::BadHash) => {
            "SRS address not valid: its hash does not match (forged or altered)"
        }
        Err(SrsError::Malformed | SrsError::NotSrs) => "malformed SRS address",
    };
    trace!(
        run,
        Stage::Resolve,
        "{}: looks like an SRS address of ours, but {}: 550 5.7.1",
        p.address(),
        match why.split_once(": ") {
            Some((_, reason)) => reason,
            None => "it is malformed",
        }
    );
    Pending {
        fate: Some(reject(550, "5.7.1", why)),
        ..p
    }
}

/// A recipient outside every accepted domain: relayed when the sender may relay, else
/// refused.
fn relay_or_refuse<'a>(
    run: &mut Run<'_>,
    connector: &ReceiveConnector,
    auth: AuthAs,
    may_relay: bool,
    p: Pending<'a>,
) -> Pending<'a> {
    if may_relay {
        trace!(
            run,
            Stage::Resolve,
            "{}: not an accepted domain; relayed ({})",
            p.address(),
            if auth == AuthAs::Internal {
                "the sender is internal"
            } else {
                "the connector relays for outside senders: `accept-any-recipient`"
            }
        );
        return p;
    }
    trace!(
        run,
        Stage::Resolve,
        "{}: not an accepted domain, and `{}` does not relay for {} senders: 550 5.7.54",
        p.address(),
        connector.name.value,
        auth_word(auth).to_lowercase()
    );
    Pending {
        fate: Some(reject(
            550,
            "5.7.54",
            "SMTP; Unable to relay recipient in non-accepted domain",
        )),
        ..p
    }
}

/// A recipient in an accepted domain, looked up in the directory: contacts and mail users
/// forward, groups expand, deleted and unknown recipients of an authoritative domain are
/// refused.
fn resolve_accepted<'a>(
    run: &mut Run<'_>,
    auth: AuthAs,
    kind: DomainKind,
    p: Pending<'a>,
    resolved: &mut Vec<Pending<'a>>,
) {
    let table = run.table;
    match table.directory.lookup(p.address()) {
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
                p.address()
            );
            resolved.push(Pending {
                forwarded: Some(external),
                change: Some(Change::Resolve),
                ..p
            });
        }
        Lookup::Group { recipient } => expand_group(run, auth, recipient, p, resolved),
        Lookup::Deleted { recipient }
            if kind == DomainKind::Authoritative && !p.address().is_postmaster() =>
        {
            let name = table
                .directory
                .get(recipient)
                .map_or("", |r| r.name.value.as_str());
            trace!(
                run,
                Stage::Resolve,
                "{}: the recipient `{name}` was deleted: 550 5.1.1",
                p.address()
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
        Lookup::Unknown | Lookup::Deleted { .. } => resolved.push(unknown(run, kind, p)),
    }
}

/// A group: refused to anonymous senders when it accepts only authenticated ones, else its
/// members, each a recipient of its own.
fn expand_group<'a>(
    run: &mut Run<'_>,
    auth: AuthAs,
    recipient: usize,
    p: Pending<'a>,
    resolved: &mut Vec<Pending<'a>>,
) {
    let table = run.table;
    let Some(group) = table.directory.get(recipient) else {
        return;
    };
    if group.authenticated_senders_only && auth == AuthAs::Anonymous {
        trace!(
            run,
            Stage::Resolve,
            "{}: group `{}` accepts only authenticated senders: 550 5.7.1",
            p.address(),
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
        return;
    }
    let e = table.directory.expand(recipient);
    trace!(
        run,
        Stage::Resolve,
        "{}: group `{}` expands to {}",
        p.address(),
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
            forwarded: Some(a),
            fate: None,
            verify: false,
            change: Some(Change::Expand),
        });
    }
}

/// A recipient no object here knows: refused in an authoritative domain (its postmaster
/// excepted), relayed in an internal- or external-relay one (verified with the next hop
/// first where the domain says so).
fn unknown<'a>(run: &mut Run<'_>, kind: DomainKind, p: Pending<'a>) -> Pending<'a> {
    if kind == DomainKind::Authoritative && p.address().is_postmaster() {
        // RFC 5321 §4.5.1: postmaster is never refused. No recipient or rewrite
        // entry claims it here, so it goes where the domain's mail is routed.
        trace!(
            run,
            Stage::Resolve,
            "{}: postmaster of the authoritative domain {} is always accepted (RFC 5321); no recipient claims it, so it is routed like the domain's other mail",
            p.address(),
            p.address().domain
        );
        return p;
    }
    if kind == DomainKind::Authoritative {
        trace!(
            run,
            Stage::Resolve,
            "{}: no such recipient in the authoritative domain {}: 550 5.1.1",
            p.address(),
            p.address().domain
        );
        return Pending {
            fate: Some(reject(
                550,
                "5.1.1",
                "RESOLVER.ADR.ExRecipNotFound; not found",
            )),
            ..p
        };
    }
    let verify = run.table.domains.verifies(&p.address().domain);
    trace!(
        run,
        Stage::Resolve,
        "{}: {} is {}; relayed{}",
        p.address(),
        p.address().domain,
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
    Pending { verify, ..p }
}
