//! Lints of accepted domains: `verify-recipients` where it means nothing, or where there is
//! no next hop to ask.

use crate::compile::{DomainTable, route};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{DomainKind, DomainPattern, RuleSet};

pub(super) fn check(set: &RuleSet, out: &mut Vec<Diagnostic>) {
    if !set
        .accepted_domains
        .iter()
        .any(|d| d.verify_recipients.is_some())
    {
        return;
    }
    let table = DomainTable::new(&set.accepted_domains);
    for d in &set.accepted_domains {
        let Some(verify) = d.verify_recipients else {
            continue;
        };
        if d.kind != DomainKind::InternalRelay {
            verify_ignored(d.kind, &d.domain.value, verify, out);
            continue;
        }
        let domain = match &d.domain.value {
            DomainPattern::Exact(n) | DomainPattern::Wildcard(n) => n.as_str(),
        };
        if route(&set.send_connectors, domain, &table).is_none() {
            out.push(
                Diagnostic::new(
                    Code::W024,
                    format!(
                        "no send connector covers `{}`, so its recipients cannot be verified",
                        d.domain.value
                    ),
                )
                .primary(verify, "there is no next hop to ask about a recipient")
                .help(format!(
                    "add `address-space {}` (or `address-space --`) to the send connector that reaches its mailboxes",
                    d.domain.value
                )),
            );
        }
    }
}

/// W023 verify-recipients-ignored.
///
/// What it does: flags `verify-recipients` on an authoritative or external-relay domain.
///
/// Why is this bad: the relay verifies only the unknown recipients of internal-relay domains;
/// an authoritative domain refuses them already, and an external-relay domain's next hop is
/// outside the organization. The keyword suggests a protection that is not there.
///
/// Example: `accepted-domain example.com verify-recipients`.
///
/// Use instead: remove the keyword, or make the domain `internal-relay`.
fn verify_ignored(
    kind: DomainKind,
    domain: &DomainPattern,
    verify: crate::source::Span,
    out: &mut Vec<Diagnostic>,
) {
    let (what, why) = match kind {
        DomainKind::Authoritative => (
            "authoritative",
            "unknown recipients of an authoritative domain are refused with 550 5.1.1 already",
        ),
        _ => (
            "external-relay",
            "the recipients of an external-relay domain are outside the organization; their servers are not probed",
        ),
    };
    out.push(
        Diagnostic::new(
            Code::W023,
            format!("`verify-recipients` has no effect on the {what} domain `{domain}`"),
        )
        .primary(verify, why)
        .help(format!(
            "remove `verify-recipients`, or write `accepted-domain {domain} internal-relay verify-recipients` if its mailboxes are on a server the relay forwards to"
        )),
    );
}

#[cfg(test)]
mod tests {
    fn codes(text: &str) -> Vec<&'static str> {
        crate::check::check_text("t.mailflow", text)
            .diagnostics
            .iter()
            .map(|d| d.code.id())
            .collect()
    }

    #[test]
    fn verify_recipients_is_linted_where_it_means_nothing() {
        let send = "send-connector \"Tenant\" {\n  address-space --\n  smart-host 192.0.2.1\n}\n";
        assert_eq!(
            codes(&format!(
                "accepted-domain t.example internal-relay verify-recipients\n{send}"
            )),
            Vec::<&str>::new()
        );
        assert_eq!(
            codes(&format!(
                "accepted-domain t.example verify-recipients\n{send}"
            )),
            ["W023"]
        );
        assert_eq!(
            codes(&format!(
                "accepted-domain t.example external-relay verify-recipients\n{send}"
            )),
            ["W023"]
        );
        assert_eq!(
            codes("accepted-domain *.t.example internal-relay verify-recipients\n"),
            ["W024"]
        );
        // Without the keyword nothing is said, routed or not.
        assert_eq!(
            codes("accepted-domain t.example internal-relay\n"),
            Vec::<&str>::new()
        );
    }
}
