//! Lints of certificates: the client certificates the relay presents to Microsoft 365 tenants
//! (one per tenant, named for one of its domains: Microsoft message center MC1226222), and
//! the validity period of every certificate, server and client.
//!
//! A *tenant send connector* is one that delivers to Exchange Online: a smart host under
//! `mail.protection.outlook.com` (or the sovereign clouds' `mail.protection.office365.us`,
//! `mail.protection.partner.outlook.cn`), a `tls-name` naming one of those, or, with no
//! smart host (MX lookup), an address space under `mail.onmicrosoft.com`, a tenant's routing
//! domain. Connectors are taken to reach the same tenant only when they share a smart host.
//! "Its address spaces are accepted domains" is not enough: the seeds' connectors to the
//! on-premises Exchange servers (`To Exchange` in seed 000, `To Exchange 2016` in seed 003)
//! are that too, and their certificates are nobody's tenant attribution.
//!
//! The files are the ones resolve has already read and found to hold a PEM certificate; a
//! file that does not parse as X.509 beyond that is left to the relay's handshake.

use super::LintOptions;
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{
    AddressSpacePattern, DomainPattern, RuleSet, SendConnector, Spanned, is_subdomain_or_same,
};
use crate::source::Span;
use crate::x509::{Leaf, date};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The parent domains of Microsoft 365's inbound endpoints (worldwide, GCC High and DoD,
/// operated by 21Vianet).
const MICROSOFT_365_ENDPOINTS: [&str; 3] = [
    "mail.protection.outlook.com",
    "mail.protection.office365.us",
    "mail.protection.partner.outlook.cn",
];

/// The parent of every tenant's routing domain (`contoso.mail.onmicrosoft.com`).
const ROUTING_DOMAINS: &str = "mail.onmicrosoft.com";

/// Where one certificate file is used.
struct Use<'a> {
    connector: &'a str,
    /// "server" (a receive connector's) or "client" (a send connector's).
    kind: &'static str,
    file: &'a Spanned<PathBuf>,
}

pub(super) fn check(set: &RuleSet, options: &LintOptions, out: &mut Vec<Diagnostic>) {
    let uses: Vec<Use<'_>> = set
        .receive_connectors
        .iter()
        .filter_map(|c| {
            c.certificate.as_ref().map(|file| Use {
                connector: &c.name.value,
                kind: "server",
                file,
            })
        })
        .chain(set.send_connectors.iter().filter_map(|c| {
            c.certificate.as_ref().map(|file| Use {
                connector: &c.name.value,
                kind: "client",
                file,
            })
        }))
        .collect();
    if uses.is_empty() {
        return;
    }
    let mut leaves: HashMap<&Path, Option<Leaf>> = HashMap::new();
    for u in &uses {
        leaves
            .entry(u.file.value.as_path())
            .or_insert_with(|| crate::x509::read_leaf(&u.file.value).ok());
    }
    let leaf = |file: &Spanned<PathBuf>| leaves.get(file.value.as_path()).and_then(Option::as_ref);
    let tenants: Vec<(&SendConnector, &Leaf)> = set
        .send_connectors
        .iter()
        .filter(|c| is_tenant_connector(c))
        .filter_map(|c| c.certificate.as_ref().and_then(leaf).map(|l| (c, l)))
        .collect();
    shared_certificates(&tenants, out);
    for (c, l) in &tenants {
        let single = tenants.iter().all(|(o, _)| same_tenant(c, o));
        foreign_names(set, c, l, single, out);
    }
    if options.cert_expiry_days > 0 {
        let mut reported: Vec<&Path> = Vec::new();
        for (i, u) in uses.iter().enumerate() {
            if reported.contains(&u.file.value.as_path()) {
                continue;
            }
            reported.push(&u.file.value);
            let Some(l) = leaf(u.file) else { continue };
            let others: Vec<&Use<'_>> = uses
                .iter()
                .skip(i + 1)
                .filter(|o| o.file.value == u.file.value)
                .collect();
            validity(u, &others, l, options, out);
        }
    }
}

/// Whether `host` is an endpoint of Exchange Online (or the endpoints' parent domain).
fn is_microsoft_365(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host.strip_prefix("*.").unwrap_or(&host);
    MICROSOFT_365_ENDPOINTS
        .iter()
        .any(|e| is_subdomain_or_same(host, e))
}

/// Whether the connector delivers to a Microsoft 365 tenant (see the module docs).
pub(crate) fn is_tenant_connector(c: &SendConnector) -> bool {
    c.smart_hosts
        .iter()
        .any(|h| is_microsoft_365(&h.value.host))
        || c.tls_name
            .as_ref()
            .is_some_and(|n| is_microsoft_365(&n.value))
        || (c.smart_hosts.is_empty()
            && c.address_spaces.iter().any(|a| match &a.pattern {
                AddressSpacePattern::Domain(
                    DomainPattern::Exact(d) | DomainPattern::Wildcard(d),
                ) => is_subdomain_or_same(d, ROUTING_DOMAINS) && d != ROUTING_DOMAINS,
                _ => false,
            }))
}

/// Whether two tenant connectors reach the same tenant: only a shared smart host says so.
fn same_tenant(a: &SendConnector, b: &SendConnector) -> bool {
    std::ptr::eq(a, b)
        || a.smart_hosts.iter().any(|x| {
            b.smart_hosts
                .iter()
                .any(|y| x.value.host.eq_ignore_ascii_case(&y.value.host))
        })
}

fn cert_span(c: &SendConnector) -> Span {
    c.certificate.as_ref().map_or(c.name.span, |f| f.span)
}

/// W070 shared-tenant-certificate.
///
/// What it does: flags two tenant send connectors (to Microsoft 365 tenants, see the module
/// docs) that present the same client certificate, from the same file or from two files
/// holding the same certificate. Connectors with a smart host in common are taken to reach one
/// tenant and are not flagged.
///
/// Why is this bad: Exchange Online attributes a message arriving on an OnPremises inbound
/// connector to a tenant by the domain of the certificate first. One certificate presented to
/// several tenants matches several tenants' connectors, and Microsoft (MC1226222) warns that
/// such mail flow may stop working without notice.
///
/// Example: seed 002's `To Tenant1` and `To Tenant2` both with `certificate "certs/edge.pem"`.
///
/// Use instead: one certificate per tenant, named for a domain of that tenant
/// (`edge.tenant1.example.com`), each tenant's inbound connector expecting its own name.
fn shared_certificates(tenants: &[(&SendConnector, &Leaf)], out: &mut Vec<Diagnostic>) {
    for (i, (b, lb)) in tenants.iter().enumerate() {
        let Some((a, _)) = tenants
            .iter()
            .take(i)
            .find(|(a, la)| la.der == lb.der && !same_tenant(a, b))
        else {
            continue;
        };
        let same_file =
            a.certificate.as_ref().map(|f| &f.value) == b.certificate.as_ref().map(|f| &f.value);
        let what = if same_file {
            "the same client certificate".to_string()
        } else {
            "one client certificate from two files".to_string()
        };
        out.push(
            Diagnostic::new(
                Code::W070,
                format!(
                    "send connectors `{}` and `{}` present {what} to two microsoft 365 tenants",
                    a.name.value, b.name.value
                ),
            )
            .primary(cert_span(b), format!("presented to the tenant of `{}`", b.name.value))
            .secondary(cert_span(a), format!("and to the tenant of `{}`", a.name.value))
            .note("exchange online attributes a message to a tenant by its certificate's domain first; one certificate for several tenants makes that attribution a guess (MC1226222)")
            .help("give each tenant its own certificate, named for one of that tenant's domains (docs/authentication.md, \"Tenant certificates (MC1226222)\")"),
        );
    }
}

/// The domains a tenant connector's certificate may be named for: its address spaces, and
/// the accepted domains where it covers them (`--`, `*`) or where it is the only tenant (a
/// hybrid organization's domains are its one tenant's).
fn tenant_domains(set: &RuleSet, c: &SendConnector, single: bool) -> Vec<String> {
    let accepted = || {
        set.accepted_domains.iter().map(|d| match &d.domain.value {
            DomainPattern::Exact(n) | DomainPattern::Wildcard(n) => n.clone(),
        })
    };
    let mut out = Vec::new();
    let mut with_accepted = single;
    for a in &c.address_spaces {
        match &a.pattern {
            AddressSpacePattern::Domain(DomainPattern::Exact(d) | DomainPattern::Wildcard(d)) => {
                out.push(d.clone());
            }
            AddressSpacePattern::All | AddressSpacePattern::AcceptedDomains => {
                with_accepted = true;
            }
        }
    }
    if with_accepted {
        out.extend(accepted());
    }
    out
}

/// Whether a certificate name is one of `domains` or under one; a wildcard name (`*.x`)
/// counts for its parent.
fn name_belongs(name: &str, domains: &[String]) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    domains.iter().any(|d| is_subdomain_or_same(host, d))
}

/// W071 certificate-not-tenant-domain.
///
/// What it does: flags a tenant send connector's client certificate none of whose names (the
/// subject alternative names, else the common name) is a domain of the tenant or under one.
/// The tenant's domains are the connector's address spaces, and the accepted domains where
/// the connector covers them (`address-space --` or `*`) or where it is the only tenant
/// connector. A wildcard name counts for its parent (`*.contoso.com` for `contoso.com`).
///
/// Why is this bad: Microsoft (MC1226222) requires the certificate of an OnPremises inbound
/// connector to be named for one of the tenant's accepted domains; a certificate for another
/// domain cannot attribute the message to the tenant, and such mail flow may stop working
/// without notice.
///
/// Example: `send-connector "To Tenant1" { address-space tenant1.example.com; smart-host
/// tenant1-example-com.mail.protection.outlook.com; certificate "edge.example.net.pem" }`.
///
/// Use instead: a certificate named for a domain of the tenant (`edge.tenant1.example.com`),
/// the name the tenant's inbound connector expects (`TlsSenderCertificateName`).
fn foreign_names(
    set: &RuleSet,
    c: &SendConnector,
    leaf: &Leaf,
    single: bool,
    out: &mut Vec<Diagnostic>,
) {
    let domains = tenant_domains(set, c, single);
    if leaf.names.iter().any(|n| name_belongs(n, &domains)) {
        return;
    }
    let names = if leaf.names.is_empty() {
        "no name".to_string()
    } else {
        leaf.names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut shown: Vec<&str> = domains.iter().map(String::as_str).collect();
    shown.sort_unstable();
    shown.dedup();
    let label = if shown.is_empty() {
        "the connector names no domain of its tenant".to_string()
    } else {
        format!(
            "names {names}, in none of the tenant's domains ({})",
            shown
                .iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    out.push(
        Diagnostic::new(
            Code::W071,
            format!(
                "the client certificate of send connector `{}` is not named for a domain of its tenant",
                c.name.value
            ),
        )
        .primary(cert_span(c), label)
        .note("exchange online accepts a certificate on an OnPremises inbound connector only for one of the tenant's accepted domains (MC1226222)")
        .help("present a certificate whose subject alternative name is one of the tenant's domains or under one, and set it as the tenant's TlsSenderCertificateName"),
    );
}

const DAY: i64 = 86_400;

/// W072 certificate-expires-soon, W073 certificate-expired, W074 certificate-not-yet-valid.
///
/// What it does: flags a certificate (a receive connector's server certificate, a send
/// connector's client certificate) that expires within the window (30 days unless
/// `--cert-expiry-days` says otherwise), has expired, or is not valid yet, once per file.
///
/// Why is this bad: an expired or not yet valid server certificate fails every handshake
/// with senders that verify it, and `tls required` connectors then refuse mail; an expired
/// client certificate makes the next hop (an Exchange Online inbound connector) stop
/// recognising the relay.
///
/// Example: `certificate "certs/edge.pem"` whose `notAfter` is next week.
///
/// Use instead: renew the certificate and reload (`mailflow reload`); watch
/// `mailflow_certificate_expiry_timestamp_seconds` on `/metrics`.
fn validity(
    first: &Use<'_>,
    others: &[&Use<'_>],
    leaf: &Leaf,
    options: &LintOptions,
    out: &mut Vec<Diagnostic>,
) {
    let file = first.file.value.display();
    let window = i64::from(options.cert_expiry_days).saturating_mul(DAY);
    let (code, message, label, help) = if leaf.not_after <= options.now {
        (
            Code::W073,
            format!(
                "the certificate `{file}` expired on {}",
                date(leaf.not_after)
            ),
            format!("the {} certificate of `{}`", first.kind, first.connector),
            "renew it; peers that verify certificates refuse this one",
        )
    } else if leaf.not_before > options.now {
        (
            Code::W074,
            format!(
                "the certificate `{file}` is not valid until {}",
                date(leaf.not_before)
            ),
            format!("the {} certificate of `{}`", first.kind, first.connector),
            "check the clock of the machine that issued it, or wait to deploy it",
        )
    } else if leaf.not_after - options.now <= window {
        let days = (leaf.not_after - options.now) / DAY;
        (
            Code::W072,
            format!(
                "the certificate `{file}` expires on {}, in {}",
                date(leaf.not_after),
                match days {
                    0 => "less than a day".to_string(),
                    1 => "1 day".to_string(),
                    n => format!("{n} days"),
                }
            ),
            format!("the {} certificate of `{}`", first.kind, first.connector),
            "renew it and reload the relay before then",
        )
    } else {
        return;
    };
    let mut d = Diagnostic::new(code, message).primary(first.file.span, label);
    for o in others {
        d = d.secondary(
            o.file.span,
            format!("also the {} certificate of `{}`", o.kind, o.connector),
        );
    }
    out.push(d.help(help));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    /// 2027-03-01 00:00 UTC.
    const NOW: i64 = 1_803_859_200;

    /// A certificate for `names` valid between two dates, with its key, in `dir`.
    fn cert(dir: &Path, file: &str, names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join(file), params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    }

    fn long(dir: &Path, file: &str, names: &[&str]) {
        cert(dir, file, names, (2026, 1, 1), (2126, 1, 1));
    }

    fn tenant(dir: &Path, name: &str, space: &str, host: &str, file: &str) -> String {
        let path = dir.join(file);
        format!(
            "send-connector \"{name}\" {{\n  address-space {space}\n  smart-host {host}\n  tls required\n  certificate \"{p}\"\n  key \"{p}.key\"\n}}\n",
            p = path.display()
        )
    }

    fn findings(text: &str, options: LintOptions) -> Vec<(&'static str, String)> {
        crate::check::check_text_options("t.mailflow", text, &options)
            .diagnostics
            .iter()
            .map(|d| (d.code.id(), d.message.clone()))
            .collect()
    }

    fn codes(text: &str) -> Vec<&'static str> {
        findings(text, LintOptions::at(NOW))
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }

    const DOMAINS: &str = "accepted-domain t1.example internal-relay\naccepted-domain t2.example internal-relay\naccepted-domain example.com\n";

    #[test]
    fn one_certificate_for_two_tenants_is_w070() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        long(d, "both.pem", &["edge.t1.example", "edge.t2.example"]);
        std::fs::copy(d.join("both.pem"), d.join("copy.pem")).unwrap();
        std::fs::copy(d.join("both.pem.key"), d.join("copy.pem.key")).unwrap();
        let h1 = "t1-example.mail.protection.outlook.com";
        let h2 = "t2-example.mail.protection.outlook.com";
        let same_file = format!(
            "{DOMAINS}{}{}",
            tenant(d, "T1", "t1.example", h1, "both.pem"),
            tenant(d, "T2", "t2.example", h2, "both.pem")
        );
        assert_eq!(codes(&same_file), ["W070"]);
        let two_files = format!(
            "{DOMAINS}{}{}",
            tenant(d, "T1", "t1.example", h1, "both.pem"),
            tenant(d, "T2", "t2.example", h2, "copy.pem")
        );
        let f = findings(&two_files, LintOptions::at(NOW));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].1.contains("from two files"), "{f:?}");
        // One tenant reached by two connectors (the same smart host) may use one certificate.
        let one_tenant = format!(
            "{DOMAINS}{}{}",
            tenant(d, "T1", "t1.example", h1, "both.pem"),
            tenant(d, "T1b", "t2.example", h1, "both.pem")
        );
        assert_eq!(codes(&one_tenant), Vec::<&str>::new());
        // Connectors to on-premises servers are no tenants, whatever their address spaces.
        let on_premises = format!(
            "{DOMAINS}{}{}",
            tenant(d, "Ex1", "t1.example", "ex1.t1.example", "both.pem"),
            tenant(d, "Ex2", "t2.example", "ex2.t2.example", "both.pem")
        );
        assert_eq!(codes(&on_premises), Vec::<&str>::new());
        // Distinct certificates, each named for its tenant.
        long(d, "t1.pem", &["edge.t1.example"]);
        long(d, "t2.pem", &["*.t2.example"]);
        let distinct = format!(
            "{DOMAINS}{}{}",
            tenant(d, "T1", "t1.example", h1, "t1.pem"),
            tenant(d, "T2", "t2.example", h2, "t2.pem")
        );
        assert_eq!(codes(&distinct), Vec::<&str>::new());
    }

    #[test]
    fn tenants_are_recognised_by_endpoint_tls_name_or_routing_domain() {
        let c = |extra: &str| {
            let text = format!("send-connector \"C\" {{\n  {extra}\n}}\n");
            let report = crate::check::check_text("t.mailflow", &text);
            is_tenant_connector(report.rule_sets[0].rules.send_connectors.first().unwrap())
        };
        assert!(c("smart-host contoso-com.mail.protection.outlook.com"));
        assert!(c("smart-host CONTOSO-COM.MAIL.PROTECTION.OUTLOOK.COM"));
        assert!(c("smart-host contoso-us.mail.protection.office365.us"));
        assert!(c(
            "smart-host 10.0.0.1\n  tls required\n  tls-name *.mail.protection.outlook.com"
        ));
        assert!(c("address-space contoso.mail.onmicrosoft.com"));
        assert!(!c(
            "address-space contoso.mail.onmicrosoft.com\n  smart-host 10.0.0.1"
        ));
        assert!(!c(
            "address-space contoso.com\n  smart-host exchange.contoso.com"
        ));
        assert!(!c("smart-host outlook.com.example.net"));
    }

    #[test]
    fn a_name_outside_the_tenants_domains_is_w071() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        long(d, "relay.pem", &["relay.example.com"]);
        long(d, "t2.pem", &["edge.t2.example"]);
        let h1 = "t1-example.mail.protection.outlook.com";
        let h2 = "t2-example.mail.protection.outlook.com";
        let two = format!(
            "{DOMAINS}{}{}",
            tenant(d, "T1", "t1.example", h1, "relay.pem"),
            tenant(d, "T2", "t2.example", h2, "t2.pem")
        );
        let f = findings(&two, LintOptions::at(NOW));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, "W071");
        assert!(f[0].1.contains("`T1`"), "{f:?}");
        // The only tenant owns the organization's accepted domains (a hybrid set-up, seed 000).
        let only = format!(
            "{DOMAINS}{}",
            tenant(d, "T1", "t1.example", h1, "relay.pem")
        );
        assert_eq!(codes(&only), Vec::<&str>::new());
        // So does a tenant connector for `--`.
        let all = format!(
            "{DOMAINS}{}{}",
            tenant(d, "T1", "--", h1, "relay.pem"),
            tenant(d, "T2", "t2.example", h2, "t2.pem")
        );
        assert_eq!(codes(&all), Vec::<&str>::new());
        // A wildcard name counts for its parent; a name above the tenant's domain does not.
        long(d, "wild.pem", &["*.t1.example"]);
        long(d, "above.pem", &["example"]);
        let wild = format!(
            "{DOMAINS}{}{}",
            tenant(d, "T1", "t1.example", h1, "wild.pem"),
            tenant(d, "T2", "t2.example", h2, "above.pem")
        );
        let f = findings(&wild, LintOptions::at(NOW));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].1.contains("`T2`"), "{f:?}");
    }

    #[test]
    fn expiry_is_judged_at_the_given_time_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        cert(d, "soon.pem", &["a.example"], (2026, 1, 1), (2027, 3, 21));
        cert(d, "gone.pem", &["a.example"], (2026, 1, 1), (2027, 2, 1));
        cert(d, "later.pem", &["a.example"], (2027, 4, 1), (2028, 1, 1));
        let rc = |name: &str, port: u16, file: &str| {
            format!(
                "receive-connector \"{name}\" {{\n  listen 0.0.0.0:{port}\n  tls optional\n  certificate \"{p}\"\n  key \"{p}.key\"\n}}\n",
                p = d.join(file).display()
            )
        };
        let soon = format!("{}{}", rc("A", 25, "soon.pem"), rc("B", 587, "soon.pem"));
        let report = crate::check::check_text_options("t.mailflow", &soon, &LintOptions::at(NOW));
        assert_eq!(report.diagnostics.len(), 1, "one finding per file");
        let w = &report.diagnostics[0];
        assert_eq!(w.code, Code::W072);
        assert!(
            w.message.ends_with("expires on 2027-03-21, in 20 days"),
            "{}",
            w.message
        );
        assert_eq!(w.labels.len(), 2, "the second use is labelled");
        let at = |days| LintOptions {
            now: NOW,
            cert_expiry_days: days,
        };
        assert!(findings(&soon, at(19)).is_empty());
        assert_eq!(findings(&soon, at(20)).len(), 1);
        assert!(findings(&soon, at(0)).is_empty(), "0 turns the lint off");
        let gone = findings(&rc("A", 25, "gone.pem"), at(30));
        assert_eq!(gone[0].0, "W073");
        assert!(gone[0].1.ends_with("expired on 2027-02-01"), "{gone:?}");
        assert!(findings(&rc("A", 25, "gone.pem"), at(0)).is_empty());
        let later = findings(&rc("A", 25, "later.pem"), at(30));
        assert_eq!(later[0].0, "W074");
        assert!(
            later[0].1.ends_with("is not valid until 2027-04-01"),
            "{later:?}"
        );
        // The same files judged at other times.
        let in_april = LintOptions::at(NOW + 40 * DAY);
        assert_eq!(
            findings(&rc("A", 25, "later.pem"), in_april),
            Vec::<(&str, String)>::new()
        );
        assert_eq!(findings(&soon, in_april)[0].0, "W073");
    }
}
