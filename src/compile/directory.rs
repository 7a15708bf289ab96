//! The recipients a relay knows: which object an address belongs to, where contacts and mail
//! users forward to, and what groups expand to (nested, each group once, so cycles end).
//! A tombstone (`deleted`) claims none of its addresses: its own addresses are unknown, and
//! its external address is an ordinary outside address (seed 001).

use crate::model::{Address, Member, Recipient, RecipientKind};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

/// The compiled recipients.
#[derive(Debug, Default)]
pub struct Directory {
    recipients: Vec<Recipient>,
    by_address: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    tombstones: HashMap<String, usize>,
}

/// What an address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A contact or mail user: mail goes to `external`.
    Forward {
        /// The recipient's index.
        recipient: usize,
        /// Where mail goes.
        external: Address,
    },
    /// A group.
    Group {
        /// The group's index.
        recipient: usize,
    },
    /// An address of a deleted recipient.
    Deleted {
        /// The tombstone's index.
        recipient: usize,
    },
    /// Nothing here has this address.
    Unknown,
}

/// A group's expansion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// Final addresses, in member order, without repeats.
    pub addresses: Vec<Address>,
    /// Groups expanded, in order (the group itself first).
    pub groups: Vec<usize>,
    /// Groups met again while expanding (membership cycles), which were skipped.
    pub cycles: Vec<usize>,
}

impl Directory {
    /// Builds the maps. Live recipients claim their addresses first; a tombstone's addresses
    /// are remembered only where no live recipient claims them.
    pub fn new(recipients: &[Recipient]) -> Self {
        let mut d = Directory {
            recipients: recipients.to_vec(),
            ..Directory::default()
        };
        for (i, r) in recipients.iter().enumerate() {
            if r.deleted {
                continue;
            }
            d.by_name.entry(r.name.value.clone()).or_insert(i);
            for a in &r.addresses {
                d.by_address.entry(a.value.key()).or_insert(i);
            }
        }
        for (i, r) in recipients.iter().enumerate().filter(|(_, r)| r.deleted) {
            for a in &r.addresses {
                if !d.by_address.contains_key(&a.value.key()) {
                    d.tombstones.entry(a.value.key()).or_insert(i);
                }
            }
        }
        d
    }

    /// The recipient at an index.
    pub fn get(&self, i: usize) -> Option<&Recipient> {
        self.recipients.get(i)
    }

    /// What `a` is.
    pub fn lookup(&self, a: &Address) -> Lookup {
        let (live, tomb) = a.with_key(|key| {
            (
                self.by_address.get(key).copied(),
                self.tombstones.get(key).copied(),
            )
        });
        if let Some(i) = live {
            let Some(r) = self.recipients.get(i) else {
                return Lookup::Unknown;
            };
            return match (r.kind, &r.external) {
                (RecipientKind::Group, _) => Lookup::Group { recipient: i },
                (_, Some(ext)) => Lookup::Forward {
                    recipient: i,
                    external: ext.value.clone(),
                },
                (_, None) => Lookup::Unknown,
            };
        }
        match tomb {
            Some(i) => Lookup::Deleted { recipient: i },
            None => Lookup::Unknown,
        }
    }

    /// Expands a group to final addresses: contacts and mail users become their external
    /// addresses, nested groups are expanded once each, other addresses are kept as they are.
    pub fn expand(&self, group: usize) -> Expansion {
        let mut out = Expansion::default();
        let mut seen_groups = HashSet::default();
        let mut seen_addresses = HashSet::default();
        self.expand_into(group, &mut out, &mut seen_groups, &mut seen_addresses);
        out
    }

    fn expand_into(
        &self,
        group: usize,
        out: &mut Expansion,
        seen_groups: &mut HashSet<usize>,
        seen_addresses: &mut HashSet<String>,
    ) {
        if !seen_groups.insert(group) {
            out.cycles.push(group);
            return;
        }
        out.groups.push(group);
        let Some(g) = self.recipients.get(group) else {
            return;
        };
        for m in &g.members {
            let target = match &m.value {
                Member::Name(n) => self.by_name.get(n).copied(),
                Member::Address(a) => match self.lookup(a) {
                    Lookup::Forward { recipient, .. } | Lookup::Group { recipient } => {
                        Some(recipient)
                    }
                    Lookup::Deleted { .. } | Lookup::Unknown => {
                        if seen_addresses.insert(a.key()) {
                            out.addresses.push(a.clone());
                        }
                        None
                    }
                },
            };
            let Some(t) = target else {
                continue;
            };
            let Some(r) = self.recipients.get(t) else {
                continue;
            };
            match (r.kind, &r.external) {
                (RecipientKind::Group, _) => self.expand_into(t, out, seen_groups, seen_addresses),
                (_, Some(ext)) => {
                    if seen_addresses.insert(ext.value.key()) {
                        out.addresses.push(ext.value.clone());
                    }
                }
                (_, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(src: &str) -> Directory {
        let mut r = crate::check::check_text("t.mailflow", src);
        Directory::new(&r.rule_sets.remove(0).rules.recipients)
    }

    fn addr(s: &str) -> Address {
        let (l, d) = s.split_once('@').unwrap();
        Address {
            local: l.into(),
            domain: d.into(),
        }
    }

    const SEED: &str = "accepted-domain domain.org\n\
        contact \"Officers\" { address officers@domain.org; external officers@domain.mail.onmicrosoft.com }\n\
        contact \"Board contact\" { address board-contact@domain.org; external board@domain.mail.onmicrosoft.com; hidden }\n\
        group \"Board\" { address board@domain.org; members \"Board contact\", \"Inner\", outside@partner.example }\n\
        group \"Inner\" { address inner@domain.org; members \"Board\", \"Officers\" }\n\
        deleted mail-user \"Blog Test\" { address BlogTest@domain.org; external user@microsoft.com }\n";

    #[test]
    fn contacts_forward_and_groups_expand_once() {
        let d = dir(SEED);
        assert!(
            matches!(d.lookup(&addr("Officers@domain.org")), Lookup::Forward { ref external, .. } if external.to_string() == "officers@domain.mail.onmicrosoft.com")
        );
        let Lookup::Group { recipient } = d.lookup(&addr("board@domain.org")) else {
            panic!()
        };
        let e = d.expand(recipient);
        let got: Vec<String> = e.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "board@domain.mail.onmicrosoft.com",
                "officers@domain.mail.onmicrosoft.com",
                "outside@partner.example"
            ]
        );
        assert_eq!(e.groups.len(), 2);
        assert_eq!(e.cycles, vec![recipient]);
    }

    #[test]
    fn a_tombstone_claims_its_addresses_but_never_its_external_address() {
        let d = dir(SEED);
        assert!(matches!(
            d.lookup(&addr("blogtest@domain.org")),
            Lookup::Deleted { .. }
        ));
        assert_eq!(d.lookup(&addr("user@microsoft.com")), Lookup::Unknown);
    }
}
