//! Choosing connectors: the receive connector whose remote range matches a client most
//! specifically (on the binding it connected to), and the send connector whose address space
//! matches a recipient's domain most closely, then at the lowest cost.

use super::DomainTable;
use crate::model::{AddressSpacePattern, DomainPattern, ReceiveConnector, SendConnector};
use std::net::{IpAddr, SocketAddr};

/// Picks a receive connector for a connection.
///
/// `local` is the address the client connected to (`None`: any binding, as in a dry run).
/// Among connectors bound there, the one with the narrowest remote range containing `client`
/// wins; a connector without `remote` accepts every client as its widest range. Ties go to
/// the connector defined first (`check` refuses ambiguous overlaps: E031).
pub fn select_receive(
    connectors: &[ReceiveConnector],
    local: Option<SocketAddr>,
    client: IpAddr,
) -> Option<usize> {
    let mut best: Option<(u128, usize)> = None;
    for (i, c) in connectors.iter().enumerate() {
        let bound = local.is_none_or(|l| {
            c.listen.iter().any(|b| {
                b.value.port() == l.port()
                    && (b.value.ip().is_unspecified()
                        || b.value.ip().to_canonical() == l.ip().to_canonical())
            })
        });
        if !bound {
            continue;
        }
        let width = if c.remote.is_empty() {
            Some(u128::MAX)
        } else {
            c.remote
                .iter()
                .filter(|r| r.value.contains(client))
                .map(|r| r.value.width())
                .min()
        };
        if let Some(w) = width {
            if best.is_none_or(|(bw, _)| w < bw) {
                best = Some((w, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// How closely an address space matches a domain (higher is closer), if it matches at all.
fn closeness(pattern: &AddressSpacePattern, domain: &str, accepted: &DomainTable) -> Option<usize> {
    let labels = |d: &str| d.split('.').count();
    match pattern {
        AddressSpacePattern::All => Some(0),
        // Exact names are closer than any wildcard of the same length.
        AddressSpacePattern::Domain(DomainPattern::Exact(d)) => {
            (d == domain).then(|| 2 * labels(d) + 1)
        }
        AddressSpacePattern::Domain(p @ DomainPattern::Wildcard(d)) => {
            p.matches(domain).then(|| 2 * labels(d))
        }
        AddressSpacePattern::AcceptedDomains => accepted.kind(domain).map(|_| 2 * labels(domain)),
    }
}

/// Picks the send connector for a recipient domain: the closest address space, then the
/// lowest cost, then the connector defined first.
pub fn route(connectors: &[SendConnector], domain: &str, accepted: &DomainTable) -> Option<usize> {
    let mut best: Option<(usize, u8, usize)> = None;
    for (i, c) in connectors.iter().enumerate() {
        for space in &c.address_spaces {
            let Some(close) = closeness(&space.pattern, domain, accepted) else {
                continue;
            };
            let better = match best {
                None => true,
                Some((bc, bcost, _)) => close > bc || (close == bc && space.cost < bcost),
            };
            if better {
                best = Some((close, space.cost, i));
            }
        }
    }
    best.map(|(_, _, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(src: &str) -> crate::model::RuleSet {
        let mut r = crate::check::check_text("t.mailflow", src);
        r.rule_sets.remove(0).rules
    }

    #[test]
    fn most_specific_remote_range_wins() {
        // Exchange's documented example: 0.0.0.0/0, 192.168.1.0/24 and 192.168.1.75.
        let s = set("receive-connector \"All\" { remote 0.0.0.0/0 }\n\
             receive-connector \"Lan\" { remote 192.168.1.0/24 }\n\
             receive-connector \"Host\" { remote 192.168.1.75 }\n\
             receive-connector \"Other port\" { listen 0.0.0.0:587; remote 192.168.1.75 }\n");
        let c = &s.receive_connectors;
        let pick = |ip: &str| {
            select_receive(c, Some("10.0.0.1:25".parse().unwrap()), ip.parse().unwrap())
                .map(|i| c[i].name.value.as_str())
        };
        assert_eq!(pick("192.168.1.75"), Some("Host"));
        assert_eq!(pick("192.168.1.76"), Some("Lan"));
        assert_eq!(pick("203.0.113.1"), Some("All"));
        assert_eq!(pick("2001:db8::1"), None);
        let on_587 = select_receive(
            c,
            Some("10.0.0.1:587".parse().unwrap()),
            "192.168.1.75".parse().unwrap(),
        );
        assert_eq!(on_587.map(|i| c[i].name.value.as_str()), Some("Other port"));
    }

    #[test]
    fn closest_address_space_then_lowest_cost() {
        let s = set("accepted-domain example.com\n\
             send-connector \"Internet\" { address-space * cost 1 }\n\
             send-connector \"Contoso wide\" { address-space *.contoso.com cost 1 }\n\
             send-connector \"Contoso exact\" { address-space contoso.com cost 50 }\n\
             send-connector \"Backup\" { address-space *.contoso.com cost 10 }\n\
             send-connector \"Internal\" { address-space -- cost 5 }\n");
        let d = DomainTable::new(&s.accepted_domains);
        let pick = |dom: &str| {
            route(&s.send_connectors, dom, &d).map(|i| s.send_connectors[i].name.value.as_str())
        };
        assert_eq!(pick("fabrikam.com"), Some("Internet"));
        assert_eq!(pick("sales.contoso.com"), Some("Contoso wide"));
        assert_eq!(pick("contoso.com"), Some("Contoso exact"));
        assert_eq!(pick("example.com"), Some("Internal"));
    }
}
