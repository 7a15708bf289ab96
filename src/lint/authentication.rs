//! Lints of mail authentication: where the relay's rewriting and forwarding will break what
//! receivers check, and the rule set has nothing to repair it with: outbound rewrites to a
//! domain without a signing key (W061), Internet mail changed or forwarded without ARC
//! sealing (W062), mail forwarded outside without SRS (W063); and test blocks giving results
//! the relay would never find for their message (W064).
//!
//! They run on every rule set, with or without an `authentication` block: a rule set that
//! rewrites and signs nothing is exactly the one whose mail will fail, and
//! `docs/authentication.md` is where the help texts point.

use crate::diagnostic::{Code, Diagnostic};
use crate::model::{
    Action, Address, AuthLevel, DomainKind, Member, RecipientKind, RewriteTo, RuleSet,
};
use crate::source::Span;
use std::collections::HashMap;

pub(super) fn check(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    tests_never_verified(set, out);
    unsigned_rewrites(set, out);
    let forwards = forwards_outside(set);
    unsealed_changes(set, &forwards, out);
    forwards_without_srs(set, &forwards, out);
}

/// The rewrite entries' external domains, each with the first entry rewriting to it.
fn external_domains(set: &RuleSet, inbound_only: bool) -> Vec<(String, Span, usize)> {
    let mut found: Vec<(String, Span, usize)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for r in &set.rewrites {
        if inbound_only && r.outbound_only {
            continue;
        }
        let domain = match &r.external.value {
            RewriteTo::Address(a) => a.domain.clone(),
            RewriteTo::Domain(d) => d.clone(),
        };
        match index.get(&domain) {
            Some(&i) => {
                if let Some(f) = found.get_mut(i) {
                    f.2 += 1;
                }
            }
            None => {
                index.insert(domain.clone(), found.len());
                found.push((domain, r.external.span, 1));
            }
        }
    }
    found
}

/// W061 unsigned-rewrite.
///
/// What it does: flags each domain that rewrite entries rewrite outbound mail to, when no
/// `dkim-key` signs for it and some send connector signs (`dkim-sign on`, the default).
///
/// Why is this bad: rewriting `From` breaks the sender's own DKIM signature, and nothing
/// signs for the new domain: a DMARC policy on it then rests on SPF alone, and large
/// receivers refuse or junk unsigned bulk mail.
///
/// Example: `rewrite *.tenant1.example.com -> example.com outbound-only` with no
/// `dkim-key "example.com"`.
///
/// Use instead: add `dkim-key "example.com" { selector NAME; key "FILE.pem" }` (`mailflow
/// dkim keygen example.com NAME` makes the key and prints its DNS record).
fn unsigned_rewrites(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    if !set.send_connectors.iter().any(|c| c.dkim_sign) {
        return;
    }
    for (domain, span, entries) in external_domains(set, false) {
        if set.dkim_keys.iter().any(|k| k.domain.value == domain) {
            continue;
        }
        let mut d = Diagnostic::new(
            Code::W061,
            format!("mail rewritten to `{domain}` leaves unsigned"),
        )
        .primary(span, "outbound mail is rewritten to this domain")
        .help(format!(
            "add `dkim-key \"{domain}\" {{ selector NAME; key \"FILE.pem\" }}`; `mailflow dkim keygen {domain} NAME` makes the key and prints its DNS record"
        ));
        match entries {
            0 | 1 => {}
            2 => d = d.note("1 more rewrite entry rewrites to it"),
            n => d = d.note(format!("{} more rewrite entries rewrite to it", n - 1)),
        }
        out.push(d);
    }
}

/// Something that sends mail to an address outside the organization.
struct Forward {
    /// `contact "Sales"`, `rule "Divert"`, ...
    what: String,
    /// The first outside address.
    address: String,
    span: Span,
}

/// Whether mail to `a` leaves the organization: its domain is not an authoritative or
/// internal-relay accepted domain.
fn outside(set: &RuleSet, a: &Address) -> bool {
    !set.accepted_domains
        .iter()
        .any(|d| d.kind != DomainKind::ExternalRelay && d.domain.value.matches(&a.domain))
}

/// Contacts and mail users forwarding outside, groups with outside members, and rules
/// sending mail to outside addresses: one entry per object, at its first outside address.
fn forwards_outside(set: &RuleSet) -> Vec<Forward> {
    let mut found = Vec::new();
    for r in set.recipients.iter().filter(|r| !r.deleted) {
        let kind = match r.kind {
            RecipientKind::Contact => "contact",
            RecipientKind::MailUser => "mail user",
            RecipientKind::Group => "group",
        };
        let first = match r.kind {
            RecipientKind::Group => r.members.iter().find_map(|m| match &m.value {
                Member::Address(a) if outside(set, a) => Some((a, m.span)),
                _ => None,
            }),
            _ => r
                .external
                .as_ref()
                .filter(|x| outside(set, &x.value))
                .map(|x| (&x.value, x.span)),
        };
        if let Some((a, span)) = first {
            found.push(Forward {
                what: format!("{kind} `{}`", r.name.value),
                address: a.to_string(),
                span,
            });
        }
    }
    for rule in set.rules.iter().filter(|r| !r.partial) {
        let first = rule.actions.iter().find_map(|a| match &a.value {
            Action::RedirectTo(v)
            | Action::AddRecipient(v)
            | Action::CopyTo(v)
            | Action::BlindCopyTo(v) => v.iter().find(|x| outside(set, x)).map(|x| (x, a.span)),
            _ => None,
        });
        if let Some((a, span)) = first {
            found.push(Forward {
                what: format!("rule `{}`", rule.name.value),
                address: a.to_string(),
                span,
            });
        }
    }
    found
}

/// W062 unsealed-change.
///
/// What it does: on a rule set with a receive connector for Internet mail (`auth
/// anonymous`), flags each domain whose mail inbound rewrite entries change, and each
/// contact, group or rule that forwards mail outside, when the relay does not ARC-seal (the
/// `authentication` block lacks `authserv-id` or `arc-seal`).
///
/// Why is this bad: rewriting `To` and `Cc` breaks the original sender's DKIM signature, and
/// a forward fails SPF at the next hop; a receiver enforcing the sender's DMARC policy then
/// rejects or quarantines legitimate mail. An ARC seal carries what this relay verified before
/// the change to receivers that trust it (Exchange Online: `Set-ArcConfig`).
///
/// Example: `rewrite john@tenant1.example.com -> john@example.com` with `receive-connector
/// "Internet" { auth anonymous }` and no `arc-seal`.
///
/// Use instead: `authentication { authserv-id HOST; arc-seal DOMAIN }` with a `dkim-key` for
/// DOMAIN, and list the sealer as trusted at the receiver.
fn unsealed_changes(set: &RuleSet, forwards: &[Forward], out: &mut Vec<Diagnostic>) {
    let internet = set
        .receive_connectors
        .iter()
        .find(|c| c.auth.value == AuthLevel::Anonymous);
    let Some(internet) = internet else {
        return;
    };
    let sealing = set
        .authentication
        .as_ref()
        .is_some_and(|a| a.authserv_id.is_some() && a.arc_seal.is_some());
    if sealing {
        return;
    }
    let help = "add `authserv-id HOST` and `arc-seal DOMAIN` (a domain with a `dkim-key`) to the `authentication` block, and trust the sealer at the receiver";
    let connector = format!("Internet mail arrives on `{}`", internet.name.value);
    for (domain, span, _) in external_domains(set, true) {
        out.push(
            Diagnostic::new(
                Code::W062,
                format!("internet mail to `{domain}` is rewritten without an arc seal"),
            )
            .primary(
                span,
                "inbound rewriting changes To and Cc, which the sender signed",
            )
            .secondary(internet.name.span, connector.clone())
            .help(help),
        );
    }
    for f in forwards {
        out.push(
            Diagnostic::new(
                Code::W062,
                format!(
                    "internet mail forwarded by {} to `{}` leaves without an arc seal",
                    f.what, f.address
                ),
            )
            .primary(
                f.span,
                "the next hop cannot tell what was verified here before the message left",
            )
            .secondary(internet.name.span, connector.clone())
            .help(help),
        );
    }
}

/// W063 forward-without-srs.
///
/// What it does: flags each contact, group or rule that forwards mail to an outside address
/// when the rule set takes outside senders' mail (an anonymous receive connector, or one with
/// `accept-oorg`) and the `authentication` block has no `srs-domain`.
///
/// Why is this bad: forwarded mail keeps the outside sender's envelope address, so the next
/// hop checks SPF of the sender's domain against this relay's address and it fails; a strict
/// DMARC policy then has the message refused. Bounces would also go to the sender's domain
/// without passing through here.
///
/// Example: `contact "Sales" { address sales@example.com; external sales@partner.example }`
/// with `authentication { authserv-id mx.example.com }`.
///
/// Use instead: add `srs-domain DOMAIN` (an accepted domain) and `srs-secret "..."`: forwarded
/// mail from outside senders then leaves with an SRS envelope sender at DOMAIN.
fn forwards_without_srs(set: &RuleSet, forwards: &[Forward], out: &mut Vec<Diagnostic>) {
    if set.authentication.as_ref().is_some_and(|a| a.srs.is_some()) {
        return;
    }
    // Only outside senders' mail needs SRS, and it arrives on an anonymous connector or as
    // the anonymous mail of one that trusts XOORG; without either there is none.
    let takes_outside_mail = set
        .receive_connectors
        .iter()
        .any(|c| c.auth.value == AuthLevel::Anonymous || !c.accept_oorg.is_empty());
    if !takes_outside_mail {
        return;
    }
    for f in forwards {
        out.push(
            Diagnostic::new(
                Code::W063,
                format!("{} forwards to `{}` without srs", f.what, f.address),
            )
            .primary(f.span, "outside senders' SPF fails at the next hop")
            .help("add `srs-domain DOMAIN` (an accepted domain) and `srs-secret \"...\"` to the `authentication` block"),
        );
    }
}

/// W064 test-auth-never-verified.
///
/// What it does: flags a test block's `auth` setting when the relay would never verify the
/// test's message: the rule set has no `authserv-id`, or the test arrives on a receive
/// connector whose clients are never anonymous (`partner`, or `externally-secured` without
/// `accept-oorg`).
///
/// Why is this bad: the test passes with results the relay never produces for such mail (it
/// reads `none` for every method), so it proves a rule works where it never will.
///
/// Example: `test "t" { connector "From EOP"; auth dmarc=fail; ... }` where `From EOP` has
/// `auth externally-secured`.
///
/// Use instead: test through the Internet connector, add `authserv-id`, or drop `auth`.
fn tests_never_verified(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    let authserv_id = set
        .authentication
        .as_ref()
        .and_then(|a| a.authserv_id.as_ref());
    for t in set.tests.iter().filter(|t| t.auth.is_some()) {
        let connector = t.connector.as_ref().and_then(|c| {
            set.receive_connectors
                .iter()
                .find(|rc| rc.name.value == c.value)
        });
        let why = match (authserv_id, connector) {
            (None, _) => "the rule set has no `authserv-id`, so nothing is verified".to_string(),
            // A connector that trusts XOORG also takes anonymous mail (every other tenant
            // of a shared service): that mail is verified.
            (Some(_), Some(c))
                if c.auth.value != AuthLevel::Anonymous && c.accept_oorg.is_empty() =>
            {
                format!(
                    "`{}` is not for anonymous clients, and only Internet mail is verified",
                    c.name.value
                )
            }
            _ => continue,
        };
        out.push(
            Diagnostic::new(
                Code::W064,
                format!(
                    "test `{}` gives verification results the relay never finds for its message",
                    t.name.value
                ),
            )
            .primary(t.name.span, why)
            .help("test through a connector with `auth anonymous` and add `authserv-id` to the `authentication` block, or remove `auth`"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::check::check_text;

    fn codes(text: &str) -> Vec<&'static str> {
        let report = check_text("auth.mailflow", text);
        let mut c: Vec<&'static str> = report.diagnostics.iter().map(|d| d.code.id()).collect();
        c.sort_unstable();
        c
    }

    const FORWARDS: &str = "accepted-domain example.com\n\
        accepted-domain cloud.example.com internal-relay\n\
        receive-connector \"Internet\" { auth anonymous }\n\
        send-connector \"Out\" { address-space * }\n\
        rewrite john@cloud.example.com -> john@example.com\n\
        contact \"Cloud\" { address c@example.com; external c@cloud.example.com }\n\
        contact \"Away\" { address a@example.com; external a@partner.example }\n";

    #[test]
    fn rule_sets_without_mail_authentication_are_judged_too() {
        // The rewrite to example.com (W061), the inbound rewrite and the forward to
        // partner.example without a seal (W062 each), the forward without SRS (W063).
        assert_eq!(codes(FORWARDS), ["W061", "W062", "W062", "W063"]);
    }

    #[test]
    fn each_missing_repair_is_reported_once_per_domain_and_object() {
        let with_keys = format!(
            "{FORWARDS}dkim-key \"cloud.example.com\" {{ selector s; key \"tests/fixtures/dkim-keys/ed25519.pem\" }}\n"
        );
        // The contact to an internal-relay domain forwards nothing outside.
        assert_eq!(codes(&with_keys), ["W061", "W062", "W062", "W063"]);
        let complete = format!(
            "{FORWARDS}dkim-key \"example.com\" {{ selector s; key \"tests/fixtures/dkim-keys/ed25519.pem\" }}\n\
             authentication {{ authserv-id mx.example.com; arc-seal example.com; srs-domain example.com; srs-secret \"0123456789abcdef\" }}\n"
        );
        assert!(codes(&complete).is_empty(), "{:?}", codes(&complete));
        // Sealing needs verification: `arc-seal` alone does not seal.
        let unverified = complete.replace("authserv-id mx.example.com; ", "");
        assert_eq!(codes(&unverified), ["W062", "W062"]);
    }

    #[test]
    fn test_results_the_relay_never_finds_are_flagged() {
        let base = "accepted-domain example.com\n\
            receive-connector \"Internet\" { auth anonymous }\n\
            receive-connector \"Inside\" { remote 10.0.0.0/8; auth partner }\n\
            send-connector \"Out\" { address-space * }\n";
        let test = |connector: &str| {
            format!(
                "test \"t\" {{ connector \"{connector}\"; from a@fabrikam.com; to b@example.com; auth dmarc=fail }}\n"
            )
        };
        let verified = "authentication { authserv-id mx.example.com }\n";
        assert!(codes(&format!("{base}{verified}{}", test("Internet"))).is_empty());
        assert_eq!(
            codes(&format!("{base}{verified}{}", test("Inside"))),
            ["W064"]
        );
        assert_eq!(codes(&format!("{base}{}", test("Internet"))), ["W064"]);
    }

    #[test]
    fn no_signing_connector_means_no_unsigned_warning() {
        let text = format!("{FORWARDS}authentication {{ authserv-id mx.example.com }}\n")
            .replace("address-space * }", "address-space *; dkim-sign off }");
        assert!(!codes(&text).contains(&"W061"), "{:?}", codes(&text));
        assert!(codes(&text.replace("; dkim-sign off", "")).contains(&"W061"));
    }
}
