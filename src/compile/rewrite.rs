//! Address rewriting as hash lookups, so a lookup costs the same with ten entries or a million:
//! exact addresses, exact domains, and wildcard parents found by walking the domain's suffixes
//! (longest first). Outbound maps internal to external; inbound reverses bidirectional entries.

use crate::model::{Address, RewriteEntry, RewriteFrom, RewriteTo, is_subdomain_or_same};
use rustc_hash::FxHashMap as HashMap;

/// The compiled rewrite entries.
#[derive(Debug, Default)]
pub struct RewriteTable {
    names: Vec<String>,
    targets: Vec<RewriteTo>,
    sources: Vec<RewriteFrom>,
    exceptions: Vec<Vec<String>>,
    by_address: HashMap<String, u32>,
    by_domain: HashMap<String, u32>,
    by_wildcard: HashMap<String, u32>,
    inbound_address: HashMap<String, u32>,
    inbound_domain: HashMap<String, u32>,
}

/// An address rewritten by one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new address.
    pub address: Address,
    /// The entry's index in the rule set's `rewrites`.
    pub entry: usize,
}

/// Why an address was left alone although an entry covers its domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Rewritten.
    Rewritten(Rewritten),
    /// A wildcard entry covers the domain but lists it as an exception.
    Excepted {
        /// The wildcard entry's index.
        entry: usize,
        /// The exception that matched.
        exception: String,
    },
    /// No entry applies.
    Unchanged,
}

impl RewriteTable {
    /// Builds the maps. Where two entries claim the same key the first defined wins (`check`
    /// warns about it: W002).
    pub fn new(entries: &[RewriteEntry]) -> Self {
        let mut t = RewriteTable::default();
        for (i, e) in entries.iter().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            t.names.push(e.name.clone());
            t.targets.push(e.external.value.clone());
            t.sources.push(e.internal.value.clone());
            t.exceptions
                .push(e.exceptions.iter().map(|x| x.value.clone()).collect());
            match &e.internal.value {
                RewriteFrom::Address(a) => {
                    t.by_address.entry(a.key()).or_insert(idx);
                }
                RewriteFrom::Domain(d) => {
                    t.by_domain.entry(d.clone()).or_insert(idx);
                }
                RewriteFrom::Wildcard(d) => {
                    t.by_wildcard.entry(d.clone()).or_insert(idx);
                }
            }
            if !e.outbound_only {
                match (&e.internal.value, &e.external.value) {
                    (RewriteFrom::Address(_), RewriteTo::Address(ext)) => {
                        t.inbound_address.entry(ext.key()).or_insert(idx);
                    }
                    (RewriteFrom::Domain(_), RewriteTo::Domain(ext)) => {
                        t.inbound_domain.entry(ext.clone()).or_insert(idx);
                    }
                    _ => {}
                }
            }
        }
        t
    }

    /// Approximate heap bytes (strings, map slots).
    pub fn memory(&self) -> usize {
        fn map<V>(m: &HashMap<String, V>) -> usize {
            m.capacity() * (std::mem::size_of::<String>() + std::mem::size_of::<V>() + 1)
                + m.keys().map(String::capacity).sum::<usize>()
        }
        let strings = |v: &Vec<String>| {
            v.iter()
                .map(|s| s.capacity() + std::mem::size_of::<String>())
                .sum::<usize>()
        };
        strings(&self.names)
            + self.targets.capacity() * std::mem::size_of::<RewriteTo>()
            + self.sources.capacity() * std::mem::size_of::<RewriteFrom>()
            + self.exceptions.iter().map(strings).sum::<usize>()
            + map(&self.by_address)
            + map(&self.by_domain)
            + map(&self.by_wildcard)
            + map(&self.inbound_address)
            + map(&self.inbound_domain)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// An entry's name, for traces.
    pub fn name(&self, entry: usize) -> &str {
        self.names.get(entry).map_or("", String::as_str)
    }

    fn target(&self, idx: u32, original: &Address) -> Option<Rewritten> {
        let entry = idx as usize;
        let address = match self.targets.get(entry)? {
            RewriteTo::Address(a) => a.clone(),
            RewriteTo::Domain(d) => Address {
                local: original.local.clone(),
                domain: d.clone(),
            },
        };
        Some(Rewritten { address, entry })
    }

    /// Internal to external: the closest entry (address, then domain, then the wildcard with
    /// the longest matching suffix), applied once.
    pub fn outbound(&self, a: &Address) -> Outbound {
        if let Some(i) = a.with_key(|k| self.by_address.get(k).copied()) {
            return self
                .target(i, a)
                .map_or(Outbound::Unchanged, Outbound::Rewritten);
        }
        if let Some(&i) = self.by_domain.get(&a.domain) {
            return self
                .target(i, a)
                .map_or(Outbound::Unchanged, Outbound::Rewritten);
        }
        let mut suffix = a.domain.as_str();
        loop {
            if let Some(&i) = self.by_wildcard.get(suffix) {
                let excepted = self
                    .exceptions
                    .get(i as usize)
                    .and_then(|xs| xs.iter().find(|x| is_subdomain_or_same(&a.domain, x)));
                return match excepted {
                    Some(x) => Outbound::Excepted {
                        entry: i as usize,
                        exception: x.clone(),
                    },
                    None => self
                        .target(i, a)
                        .map_or(Outbound::Unchanged, Outbound::Rewritten),
                };
            }
            match suffix.split_once('.') {
                Some((_, parent)) => suffix = parent,
                None => return Outbound::Unchanged,
            }
        }
    }

    /// External to internal, for bidirectional entries: address, then domain.
    pub fn inbound(&self, a: &Address) -> Option<Rewritten> {
        if let Some(i) = a.with_key(|k| self.inbound_address.get(k).copied()) {
            return match self.sources.get(i as usize)? {
                RewriteFrom::Address(int) => Some(Rewritten {
                    address: int.clone(),
                    entry: i as usize,
                }),
                _ => None,
            };
        }
        if let Some(&i) = self.inbound_domain.get(&a.domain) {
            return match self.sources.get(i as usize)? {
                RewriteFrom::Domain(d) => Some(Rewritten {
                    address: Address {
                        local: a.local.clone(),
                        domain: d.clone(),
                    },
                    entry: i as usize,
                }),
                _ => None,
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(src: &str) -> RewriteTable {
        let report = crate::check::check_text("t.mailflow", src);
        let errors: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity() == crate::diagnostic::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        RewriteTable::new(&report.rule_sets[0].rules.rewrites)
    }

    fn addr(s: &str) -> Address {
        let (l, d) = s.split_once('@').unwrap();
        Address {
            local: l.into(),
            domain: d.to_ascii_lowercase(),
        }
    }

    fn out(t: &RewriteTable, a: &str) -> String {
        match t.outbound(&addr(a)) {
            Outbound::Rewritten(r) => r.address.to_string(),
            Outbound::Excepted { .. } => format!("excepted {a}"),
            Outbound::Unchanged => a.to_string(),
        }
    }

    #[test]
    fn exchange_documented_examples() {
        let t = table(
            "rewrite *.contoso.com -> contoso.com outbound-only except legal.contoso.com, corp.contoso.com\n\
             rewrite japan.sales.contoso.com -> contoso.jp\n\
             rewrite david@contoso.com -> david@northwindtraders.com\n",
        );
        // The closest entry wins: a domain entry beats the wildcard.
        assert_eq!(
            out(&t, "masato@japan.sales.contoso.com"),
            "masato@contoso.jp"
        );
        assert_eq!(out(&t, "kim@sales.contoso.com"), "kim@contoso.com");
        // The wildcard covers the domain itself.
        assert_eq!(out(&t, "amy@contoso.com"), "amy@contoso.com");
        // Exceptions, and their subdomains, are left alone.
        assert_eq!(
            out(&t, "ben@legal.contoso.com"),
            "excepted ben@legal.contoso.com"
        );
        assert_eq!(
            out(&t, "ben@emea.corp.contoso.com"),
            "excepted ben@emea.corp.contoso.com"
        );
        // An address entry beats everything; local parts match without regard to case.
        assert_eq!(out(&t, "David@Contoso.com"), "david@northwindtraders.com");
        assert_eq!(out(&t, "x@fabrikam.com"), "x@fabrikam.com");
    }

    #[test]
    fn inbound_reverses_only_bidirectional_entries() {
        let t = table(
            "rewrite John.Smith@tenant1.example.com -> John.Smith@example.com\n\
             rewrite tenant2.example.com -> example.net\n\
             rewrite apps.tenant1.example.com -> example.com outbound-only\n",
        );
        let back = t.inbound(&addr("john.smith@example.com")).unwrap();
        assert_eq!(back.address.to_string(), "John.Smith@tenant1.example.com");
        assert_eq!(t.name(back.entry), "John.Smith@tenant1.example.com");
        assert_eq!(
            t.inbound(&addr("mary@example.net"))
                .unwrap()
                .address
                .to_string(),
            "mary@tenant2.example.com"
        );
        assert!(t.inbound(&addr("noreply@example.com")).is_none());
    }

    #[test]
    fn lookups_are_by_key_not_by_scan() {
        let mut src = String::new();
        for i in 0..50_000 {
            src.push_str(&format!("rewrite u{i}@t.example.com -> u{i}@example.com\n"));
        }
        let t = table(&src);
        assert_eq!(t.len(), 50_000);
        assert_eq!(out(&t, "u49999@t.example.com"), "u49999@example.com");
        assert_eq!(
            t.inbound(&addr("u7@example.com"))
                .unwrap()
                .address
                .to_string(),
            "u7@t.example.com"
        );
    }
}
