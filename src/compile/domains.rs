//! Accepted domains as lookups: exact names first, then wildcard parents by suffix.

use crate::model::{AcceptedDomain, DomainKind, DomainPattern};
use rustc_hash::FxHashMap as HashMap;

/// What the table keeps per accepted domain.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: DomainKind,
    /// `verify-recipients` on an internal-relay domain (elsewhere it means nothing: W023).
    verify: bool,
}

/// The compiled accepted domains.
#[derive(Debug, Default)]
pub struct DomainTable {
    exact: HashMap<String, Entry>,
    wildcard: HashMap<String, Entry>,
    /// Where a bare `postmaster` belongs: see [`DomainTable::postmaster_domain`].
    postmaster: Option<String>,
}

impl DomainTable {
    /// Builds the maps; the first declaration of a domain wins.
    pub fn new(domains: &[AcceptedDomain]) -> Self {
        let mut t = DomainTable::default();
        let first = |kinds: &[DomainKind]| {
            domains.iter().find_map(|d| match &d.domain.value {
                DomainPattern::Exact(n) if kinds.contains(&d.kind) => Some(n.clone()),
                _ => None,
            })
        };
        t.postmaster = first(&[DomainKind::Authoritative])
            .or_else(|| first(&[DomainKind::InternalRelay, DomainKind::ExternalRelay]));
        for d in domains {
            let entry = Entry {
                kind: d.kind,
                verify: d.kind == DomainKind::InternalRelay && d.verify_recipients.is_some(),
            };
            match &d.domain.value {
                DomainPattern::Exact(n) => {
                    t.exact.entry(n.clone()).or_insert(entry);
                }
                DomainPattern::Wildcard(n) => {
                    t.wildcard.entry(n.clone()).or_insert(entry);
                }
            }
        }
        t
    }

    /// The domain a bare `RCPT TO:<postmaster>` (RFC 5321 §4.5.1) is addressed to: this
    /// relay's own, the first authoritative domain (Exchange's default domain), else the first
    /// accepted domain; `None` when there is none.
    pub fn postmaster_domain(&self) -> Option<&str> {
        self.postmaster.as_deref()
    }

    /// The type of the accepted domain covering `domain` (lowercase), if any: an exact entry,
    /// else the wildcard with the longest matching suffix (`*.contoso.com` covers contoso.com).
    pub fn kind(&self, domain: &str) -> Option<DomainKind> {
        self.entry(domain).map(|e| e.kind)
    }

    /// Whether recipients of `domain` (lowercase) that no object here knows are verified
    /// with the next hop before they are accepted: its accepted domain is internal-relay
    /// with `verify-recipients`.
    pub fn verifies(&self, domain: &str) -> bool {
        self.entry(domain).is_some_and(|e| e.verify)
    }

    fn entry(&self, domain: &str) -> Option<Entry> {
        if let Some(e) = self.exact.get(domain) {
            return Some(*e);
        }
        let mut suffix = domain;
        loop {
            if let Some(e) = self.wildcard.get(suffix) {
                return Some(*e);
            }
            suffix = suffix.split_once('.')?.1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_before_wildcard_and_longest_suffix_first() {
        let report = crate::check::check_text(
            "t.mailflow",
            "accepted-domain example.com\naccepted-domain *.example.com internal-relay\naccepted-domain *.partner.example.com external-relay\n",
        );
        let t = DomainTable::new(&report.rule_sets[0].rules.accepted_domains);
        assert_eq!(t.kind("example.com"), Some(DomainKind::Authoritative));
        assert_eq!(t.kind("a.example.com"), Some(DomainKind::InternalRelay));
        assert_eq!(
            t.kind("x.partner.example.com"),
            Some(DomainKind::ExternalRelay)
        );
        assert_eq!(t.kind("example.org"), None);
    }

    #[test]
    fn only_internal_relay_domains_verify_recipients() {
        let report = crate::check::check_text(
            "t.mailflow",
            "accepted-domain example.com verify-recipients\naccepted-domain *.t.example internal-relay verify-recipients\naccepted-domain u.example internal-relay\naccepted-domain p.example external-relay verify-recipients\n",
        );
        let t = DomainTable::new(&report.rule_sets[0].rules.accepted_domains);
        assert!(t.verifies("a.t.example"));
        assert!(t.verifies("t.example"));
        assert!(!t.verifies("u.example"));
        assert!(!t.verifies("example.com"));
        assert!(!t.verifies("p.example"));
        assert!(!t.verifies("example.org"));
    }

    #[test]
    fn a_bare_postmaster_belongs_to_the_first_authoritative_domain() {
        let table = |text: &str| {
            let report = crate::check::check_text("t.mailflow", text);
            DomainTable::new(&report.rule_sets[0].rules.accepted_domains)
        };
        let t = table(
            "accepted-domain tenant.example internal-relay
accepted-domain *.example.org
accepted-domain example.com
accepted-domain example.net
",
        );
        assert_eq!(t.postmaster_domain(), Some("example.com"));
        let t = table(
            "accepted-domain *.x.example internal-relay
accepted-domain tenant.example internal-relay
",
        );
        assert_eq!(t.postmaster_domain(), Some("tenant.example"));
        assert_eq!(table("").postmaster_domain(), None);
    }
}
