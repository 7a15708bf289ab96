//! Lints of connectors: ambiguous remote ranges, open relays, relays for outside senders,
//! public connectors that demand TLS.

use crate::diagnostic::{Code, Diagnostic};
use crate::model::{AuthLevel, InboundTls, ReceiveConnector, RuleSet};

pub(super) fn check(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    overlapping_ranges(set, out);
    for c in &set.receive_connectors {
        if !open_relay(c, out) {
            outside_relay(c, out);
        }
        public_requires_tls(c, out);
    }
}

/// Whether the two connectors can receive the same connection.
fn share_a_binding(a: &ReceiveConnector, b: &ReceiveConnector) -> bool {
    a.listen.iter().any(|x| {
        b.listen.iter().any(|y| {
            x.value.port() == y.value.port()
                && (x.value.ip() == y.value.ip()
                    || x.value.ip().is_unspecified()
                    || y.value.ip().is_unspecified())
        })
    })
}

/// E031 overlapping-ranges.
///
/// What it does: flags two receive connectors on the same binding whose remote ranges overlap
/// without one containing the other (or that list the very same range).
///
/// Why is this bad: a client is given to the connector whose range matches most specifically;
/// with partly overlapping ranges some clients match both equally, and which connector's
/// permissions they get would be an accident.
///
/// Example: `remote 10.0.0.0-10.0.0.200` on one connector and `remote 10.0.0.100-10.0.0.255` on
/// another.
///
/// Use instead: make the ranges disjoint, or nest one inside the other.
fn overlapping_ranges(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    let cs = &set.receive_connectors;
    for (i, a) in cs.iter().enumerate() {
        for b in cs.iter().skip(i + 1) {
            if !share_a_binding(a, b) {
                continue;
            }
            for ra in &a.remote {
                for rb in &b.remote {
                    let (x, y) = (ra.value, rb.value);
                    if !x.overlaps(&y) {
                        continue;
                    }
                    let same = x == y;
                    if !same && (x.covers(&y) || y.covers(&x)) {
                        continue;
                    }
                    let why = if same {
                        format!(
                            "`{}` is a remote range of both `{}` and `{}`",
                            x, a.name.value, b.name.value
                        )
                    } else {
                        format!("`{x}` and `{y}` overlap without one containing the other")
                    };
                    out.push(
                        Diagnostic::new(Code::E031, why)
                            .primary(rb.span, format!("a range of `{}`", b.name.value))
                            .secondary(ra.span, format!("overlaps this range of `{}`", a.name.value))
                            .help("make the ranges disjoint or nest one inside the other, so the most specific match is unique"),
                    );
                }
            }
        }
    }
}

/// W020 open-relay.
///
/// What it does: flags a receive connector that may relay to any recipient
/// (`accept-any-recipient`, or `auth externally-secured`) while any client may connect (no
/// `remote`, or a range covering all addresses) or without `tls required`. Returns whether it
/// did.
///
/// Why is this bad: anyone who reaches it can send mail anywhere in your name. An open relay is
/// the worst misconfiguration an edge relay can have: it gets the address block-listed within
/// hours.
///
/// Example: `receive-connector "Relay" { accept-any-recipient }`.
///
/// Use instead: restrict `remote` to the senders' ranges and set `tls required`.
fn open_relay(c: &ReceiveConnector, out: &mut Vec<Diagnostic>) -> bool {
    let relays = c.accept_any_recipient.is_some() || c.auth.value == AuthLevel::ExternallySecured;
    if !relays {
        return false;
    }
    let relay_span = c.accept_any_recipient.unwrap_or(c.auth.span);
    let unrestricted = c.remote.is_empty() || c.remote.iter().any(|r| r.value.is_everything());
    let mut d = if unrestricted {
        let mut d = Diagnostic::new(
            Code::W020,
            format!("receive connector `{}` relays for any client", c.name.value),
        )
        .primary(relay_span, "may relay to any recipient");
        d = match c.remote.iter().find(|r| r.value.is_everything()) {
            Some(r) => d.secondary(r.span, "and this range is every address"),
            None => d.secondary(c.name.span, "and no `remote` restricts who may connect"),
        };
        d
    } else if c.tls.value != InboundTls::Required {
        Diagnostic::new(
            Code::W020,
            format!(
                "receive connector `{}` relays without requiring tls",
                c.name.value
            ),
        )
        .primary(relay_span, "may relay to any recipient")
        .secondary(
            c.tls.span,
            "but tls is not required, so the peer is unverified and the mail readable",
        )
    } else {
        return false;
    };
    d = d.help("restrict `remote` to your senders' ranges and set `tls required`");
    out.push(d);
    true
}

/// W022 outside-relay.
///
/// What it does: flags `accept-any-recipient`, which lets every client of the connector relay,
/// whether or not the sender is inside the organization (W020 covers the connectors that are
/// open to any client besides).
///
/// Why is this bad: behind a shared service (Exchange Online Protection relays for every
/// Microsoft 365 customer from the same addresses with the same certificate) every customer of
/// the service can relay through you, and transport rules that look at addresses are easily
/// fooled. Inside senders relay without it.
///
/// Example: seed 002's `From EOP` connector with `accept-any-recipient`.
///
/// Use instead: remove it; on a connector with `accept-oorg`, the organization's tenants are
/// Internal when their XOORG names an accepted domain.
fn outside_relay(c: &ReceiveConnector, out: &mut Vec<Diagnostic>) {
    let Some(span) = c.accept_any_recipient else {
        return;
    };
    let mut d = Diagnostic::new(
        Code::W022,
        format!(
            "receive connector `{}` relays for senders outside the organization",
            c.name.value
        ),
    )
    .primary(
        span,
        "every client of this connector may relay, inside or not",
    );
    d = match c.accept_oorg.first() {
        Some(o) => d.secondary(
            o.span,
            "your tenants relay without it: a trusted XOORG naming an accepted domain makes them internal",
        ),
        None => d,
    };
    out.push(d.help(
        "remove `accept-any-recipient`, unless this connector must relay for senders that cannot be inside; then restrict `remote` to those hosts",
    ));
}

/// W021 public-connector-requires-tls.
///
/// What it does: flags a receive connector open to every client that requires TLS.
///
/// Why is this bad: RFC 3207 says a publicly referenced MX must not require STARTTLS; senders
/// without TLS would be refused.
///
/// Example: `receive-connector "Internet" { remote 0.0.0.0/0; tls required; ... }`.
///
/// Use instead: `tls optional` on the public connector, and `tls required` on connectors
/// restricted to known peers.
fn public_requires_tls(c: &ReceiveConnector, out: &mut Vec<Diagnostic>) {
    let public = c.remote.is_empty() || c.remote.iter().any(|r| r.value.is_everything());
    if public && c.tls.value == InboundTls::Required {
        out.push(
            Diagnostic::new(
                Code::W021,
                format!("receive connector `{}` is open to every client but requires tls", c.name.value),
            )
            .primary(c.tls.span, "senders without tls will be refused")
            .help("use `tls optional` here, and require tls only on connectors restricted with `remote`"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::diagnostic::Code;

    fn codes(src: &str) -> Vec<Code> {
        crate::check::check_text("t.mailflow", src)
            .diagnostics
            .iter()
            .map(|d| d.code)
            .collect()
    }

    #[test]
    fn nested_ranges_are_fine_partial_overlaps_are_not() {
        let nested = "receive-connector \"A\" { remote 0.0.0.0/0 }\nreceive-connector \"B\" { remote 192.168.1.0/24 }\nreceive-connector \"C\" { remote 192.168.1.75 }\n";
        assert!(!codes(nested).contains(&Code::E031));
        let partial = "receive-connector \"A\" { remote 10.0.0.0-10.0.0.200 }\nreceive-connector \"B\" { remote 10.0.0.100-10.0.0.255 }\n";
        assert!(codes(partial).contains(&Code::E031));
        let other_port = "receive-connector \"A\" { remote 10.0.0.0-10.0.0.200 }\nreceive-connector \"B\" { listen 0.0.0.0:587; remote 10.0.0.100-10.0.0.255 }\n";
        assert!(!codes(other_port).contains(&Code::E031));
    }

    #[test]
    fn open_relays() {
        assert!(codes("receive-connector \"R\" { accept-any-recipient }\n").contains(&Code::W020));
        assert!(
            codes("receive-connector \"R\" { remote 10.0.0.0/8; auth externally-secured }\n")
                .contains(&Code::W020)
        );
        assert!(!codes("receive-connector \"R\" { remote 10.0.0.0/8 }\n").contains(&Code::W020));
    }
}
