//! SRS in the evaluator: which envelope sender a forwarded message leaves with (SRS,
//! `auth::srs`, for mail from an outside sender going to an outside address, so the next
//! hop's SPF check sees our domain and a bounce comes back to us), and what a bounce to one
//! of our SRS addresses comes to at RCPT (the original sender, or a refusal). Pure; the
//! relay calls [`srs_sender`] per delivery, recipient resolution calls [`reverse`].

use crate::auth::srs::SrsError;
use crate::compile::{Lookup, Table};
use crate::model::Address;

/// The SRS envelope sender for delivering a message from `mail_from`, addressed to
/// `original` (RCPT TO), to `recipient` (where it goes) on `day` (days since 1970): `Some`
/// when the rule set configures SRS, the sender is outside every accepted domain, and the
/// message is forwarded to another system, which checks the sender's SPF against us:
/// - the recipient is outside every accepted domain (a contact or group member on the
///   Internet, a redirect, a tenant's own forwarding), or
/// - `original` is a contact, mail user or group of ours that sent it on to another address
///   (seed 000: a contact whose external address is the cloud tenant's domain, one of our
///   internal-relay domains).
///
/// Mail delivered as addressed (or as an inbound rewrite entry maps it) to one of our
/// domains keeps its sender: that next hop is ours, and ARC vouches for what we changed.
/// The null sender stays null; our own senders stay as they are.
pub fn srs_sender(
    table: &Table,
    mail_from: Option<&Address>,
    original: &Address,
    recipient: &Address,
    day: u64,
) -> Option<Address> {
    let srs = table.srs.as_ref()?;
    let domain = srs_domain(table)?;
    let from = mail_from?;
    if table.domains.kind(&from.domain).is_some() {
        return None;
    }
    let forwarded = table.domains.kind(&recipient.domain).is_none()
        || (recipient != original
            && matches!(
                table.directory.lookup(original),
                Lookup::Forward { .. } | Lookup::Group { .. }
            ));
    if !forwarded {
        return None;
    }
    // A quoted local part (`"a b"@x`) would sit unquoted inside ours and make an address
    // no next hop parses; such a sender keeps its own address (and its SPF result).
    if from.local.starts_with('"') {
        return None;
    }
    let rewritten = srs.forward(&format!("{}@{}", from.local, from.domain), domain, day)?;
    let (local, domain) = rewritten.rsplit_once('@')?;
    Some(Address {
        local: local.to_string(),
        domain: domain.to_ascii_lowercase(),
    })
}

/// Whether `address` is one of our SRS addresses by its shape: at the `srs-domain`, its
/// local part starting `SRS0=` or `SRS1=` (any case). Says nothing of its hash or age.
pub fn is_srs_address(table: &Table, address: &Address) -> bool {
    table.srs.is_some()
        && srs_domain(table).is_some_and(|d| d.eq_ignore_ascii_case(&address.domain))
        && address.local.get(..5).is_some_and(|head| {
            head.eq_ignore_ascii_case("SRS0=") || head.eq_ignore_ascii_case("SRS1=")
        })
}

/// What a recipient that is one of our SRS addresses ([`is_srs_address`]) comes to on
/// `day`: the address its hash vouches for (the original sender for `SRS0`, the first
/// forwarder's `SRS0` address for `SRS1`), or why it is refused. `None`: not an SRS
/// address of ours, resolved as any other.
pub(super) fn reverse(
    table: &Table,
    address: &Address,
    day: u64,
) -> Option<Result<Address, SrsError>> {
    if !is_srs_address(table, address) {
        return None;
    }
    let srs = table.srs.as_ref()?;
    let text = format!("{}@{}", address.local, address.domain);
    Some(match srs.reverse(&text, day) {
        Ok(original) => super::run::parse_address(&original).ok_or(SrsError::Malformed),
        Err(SrsError::NotSrs) => Err(SrsError::Malformed),
        Err(e) => Err(e),
    })
}

fn srs_domain(table: &Table) -> Option<&str> {
    let settings = table.authentication.as_ref()?.srs.as_ref()?;
    Some(settings.domain.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{Change, Envelope, Fate, evaluate, evaluate_recipients};
    use crate::model::{Authentication, Spanned, SrsSettings};
    use crate::source::{FileId, Span};

    const DAY: u64 = 20_794; // 2026-12-07

    fn span() -> Span {
        Span {
            file: FileId(0),
            start: 0,
            end: 0,
        }
    }

    /// Seed 000's shape: an accepted domain with a contact that forwards outside, one that
    /// forwards to the cloud tenant's (internal-relay) domain, a group with an outside
    /// member, an Internet connector that does not relay; SRS at `contoso.example` when
    /// `srs` is set.
    fn table(srs: bool) -> Table {
        let report = crate::check::check_text(
            "t.mailflow",
            "accepted-domain contoso.example authoritative
accepted-domain tenant.example internal-relay
receive-connector \"Internet\" {
  listen 127.0.0.1:25
  auth anonymous
}
send-connector \"Out\" {
  address-space *
}
contact \"Cloud\" {
  address cloud@contoso.example
  external cloud@tenant.example
}
contact \"Desk\" {
  address desk@contoso.example
  external desk@partner.example
}
group \"Team\" {
  address team@contoso.example
  members desk@contoso.example, pat@outside.example
}
",
        );
        assert!(!report.has_errors(), "{:?}", report.diagnostics);
        let mut rules = report.rule_sets[0].rules.clone();
        if srs {
            rules.authentication = Some(Authentication {
                span: span(),
                authserv_id: None,
                arc_seal: None,
                srs: Some(SrsSettings {
                    domain: Spanned::new("contoso.example".into(), span()),
                    secrets: vec![
                        Spanned::new("new secret".into(), span()),
                        Spanned::new("old secret".into(), span()),
                    ],
                    max_age_days: 21,
                }),
            });
        }
        crate::compile::compile(&rules).unwrap()
    }

    fn a(text: &str) -> Address {
        let (local, domain) = text.rsplit_once('@').unwrap();
        Address {
            local: local.into(),
            domain: domain.into(),
        }
    }

    fn bounce(to: &str, day: Option<u64>) -> Envelope {
        Envelope {
            connector: Some("Internet".into()),
            mail_from: None,
            rcpt_to: vec![a(to)],
            day,
            ..Envelope::default()
        }
    }

    /// The sender `mail_from` gets on its way from RCPT TO `original` to `recipient`.
    fn sender(
        t: &Table,
        mail_from: Option<&str>,
        original: &str,
        recipient: &str,
    ) -> Option<String> {
        let from = mail_from.map(a);
        srs_sender(t, from.as_ref(), &a(original), &a(recipient), DAY).map(|s| s.to_string())
    }

    #[test]
    fn outside_senders_forwarded_to_another_system_get_an_srs_sender() {
        let t = table(true);
        let alice = Some("alice@example.org");
        // The contact and the group forward to the Internet; the cloud contact to the
        // tenant's domain (internal-relay: another system, which checks SPF).
        for (original, recipient) in [
            ("desk@contoso.example", "desk@partner.example"),
            ("team@contoso.example", "pat@outside.example"),
            ("cloud@contoso.example", "cloud@tenant.example"),
            ("x@partner.example", "x@partner.example"),
        ] {
            let out = sender(&t, alice, original, recipient).unwrap();
            assert!(
                out.starts_with("SRS0=") && out.ends_with("=example.org=alice@contoso.example"),
                "{original} -> {recipient}: {out}"
            );
        }
        // Delivered as addressed to one of our domains: the sender stays.
        assert_eq!(
            sender(&t, alice, "y@tenant.example", "y@tenant.example"),
            None
        );
        assert_eq!(
            sender(&t, alice, "desk@contoso.example", "desk@contoso.example"),
            None
        );
        // Our own senders, the null sender, a quoted local part: as they are.
        let out = "desk@partner.example";
        assert_eq!(
            sender(&t, Some("bob@contoso.example"), "desk@contoso.example", out),
            None
        );
        assert_eq!(sender(&t, Some("bob@tenant.example"), out, out), None);
        assert_eq!(sender(&t, None, "desk@contoso.example", out), None);
        assert_eq!(sender(&t, Some("\"a b\"@example.org"), out, out), None);
        // No SRS configured: nothing is rewritten.
        assert_eq!(
            sender(&table(false), alice, "desk@contoso.example", out),
            None
        );
    }

    #[test]
    fn a_bounce_to_a_valid_srs_address_goes_back_to_the_original_sender() {
        let t = table(true);
        let srs = sender(
            &t,
            Some("Alice@example.org"),
            "d@partner.example",
            "d@partner.example",
        )
        .unwrap();
        // Any case, a few days later: the next hop may have lowercased it.
        let lower = srs.to_ascii_lowercase();
        for (to, day) in [(srs.clone(), DAY), (lower, DAY + 3)] {
            let v = evaluate_recipients(&t, &bounce(&to, Some(day)));
            let r = &v.recipients[0];
            assert_eq!(
                r.address.to_string().to_ascii_lowercase(),
                "alice@example.org"
            );
            assert_eq!(r.change, Some(Change::Resolve));
            // Routed out like any outside address, though the client may not relay.
            assert_eq!(
                r.fate,
                Fate::Deliver {
                    connector: "Out".into()
                }
            );
        }
        let explained = evaluate(&t, &bounce(&srs, Some(DAY)), None, true);
        assert!(
            explained
                .trace
                .iter()
                .any(|s| s.text.contains("an SRS address of ours")
                    && s.text.contains("goes back to Alice@example.org")),
            "{:?}",
            explained.trace
        );
    }

    #[test]
    fn forged_expired_and_malformed_srs_addresses_are_refused_at_rcpt() {
        let t = table(true);
        let srs = sender(
            &t,
            Some("alice@example.org"),
            "d@partner.example",
            "d@partner.example",
        )
        .unwrap();
        let forged = srs.replace("=alice@", "=mallory@");
        let refused = |to: &str, day: u64| {
            let v = evaluate_recipients(&t, &bounce(to, Some(day)));
            match &v.recipients[0].fate {
                Fate::Reject(s) => (s.code, s.enhanced.clone(), s.text.clone()),
                other => panic!("{to}: {other:?}"),
            }
        };
        let (code, enhanced, text) = refused(&forged, DAY);
        assert_eq!((code, enhanced.as_str()), (550, "5.7.1"));
        assert!(text.contains("hash does not match"), "{text}");
        let (code, _, text) = refused(&srs, DAY + 22);
        assert_eq!(code, 550);
        assert!(text.contains("expired"), "{text}");
        let (code, _, text) = refused("SRS0=xx@contoso.example", DAY);
        assert_eq!(code, 550);
        assert_eq!(text, "malformed SRS address");
        let (_, _, text) = refused("srs1=abcd=partner.example@contoso.example", DAY);
        assert_eq!(text, "malformed SRS address");
        // The trace says why.
        let explained = evaluate(&t, &bounce(&forged, Some(DAY)), None, true);
        assert!(
            explained
                .trace
                .iter()
                .any(|s| s.text.contains("its hash does not match")),
            "{:?}",
            explained.trace
        );
    }

    #[test]
    fn what_is_not_one_of_our_srs_addresses_resolves_as_before() {
        let t = table(true);
        let plain = table(false);
        let srs = sender(
            &t,
            Some("alice@example.org"),
            "d@partner.example",
            "d@partner.example",
        )
        .unwrap();
        let fate = |t: &Table, to: &str, day| {
            evaluate_recipients(t, &bounce(to, day)).recipients[0].clone()
        };
        // Without SRS configured, or without a clock, an SRS-shaped address is unknown.
        for (table, day) in [(&plain, Some(DAY)), (&t, None)] {
            let r = fate(table, &srs, day);
            assert!(
                matches!(&r.fate, Fate::Reject(s) if s.enhanced == "5.1.1"),
                "{r:?}"
            );
        }
        // Another domain's SRS address is not ours: relaying it is refused as usual.
        let other = srs.replace("@contoso.example", "@elsewhere.example");
        let r = fate(&t, &other, Some(DAY));
        assert!(
            matches!(&r.fate, Fate::Reject(s) if s.enhanced == "5.7.54"),
            "{r:?}"
        );
        // The contact still forwards.
        let r = fate(&t, "desk@contoso.example", Some(DAY));
        assert_eq!(r.address.to_string(), "desk@partner.example");
        assert!(!is_srs_address(&t, &a("srs0@contoso.example")));
        assert!(is_srs_address(&t, &a("srs1=x@Contoso.Example")));
    }
}
