//! Finding the next hop for a recipient domain: a send connector's smart hosts, else the
//! domain's MX records, else its own address (implicit MX); null MX and loops back to this
//! relay are reported as errors, the rest of DNS trouble as temporary or permanent failures.

use super::DeliverError;
use crate::model::{SendConnector, SmartHost};
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::{ProtoError, ProtoErrorKind};
use hickory_resolver::{ResolveError, ResolverBuilder, TokioResolver};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The SMTP port MX hosts listen on.
const SMTP_PORT: u16 = 25;

/// A DNS resolver for next-hop lookups (A, AAAA, MX). Cheap to clone: clones share one
/// resolver and its cache.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("name_servers", &self.inner.config().name_servers())
            .finish()
    }
}

/// A resolver asking only the name server at `addr` (`--dns`; UDP and TCP): no hosts
/// file, no search list, no cache, one attempt of 2 s, so a test's DNS server sees every
/// query and its answers take effect at once. Delivery's MX lookups and the verification of
/// Internet mail (`auth::verify`) both start from it.
pub(crate) fn one_nameserver(addr: SocketAddr) -> ResolverBuilder<TokioConnectionProvider> {
    let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
    let config = ResolverConfig::from_parts(None, Vec::new(), servers);
    let mut builder =
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.positive_max_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.use_hosts_file = ResolveHosts::Never;
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    builder
}

impl Resolver {
    /// The system's resolver configuration (`/etc/resolv.conf` on Unix).
    pub fn system() -> Result<Resolver, DeliverError> {
        let mut builder = TokioResolver::builder_tokio()
            .map_err(|e| DeliverError::ResolverConfig(e.to_string()))?;
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        Ok(Resolver {
            inner: builder.build(),
        })
    }

    /// One name server at `addr` (UDP and TCP), no hosts file, no search list and no cache,
    /// so that a test's DNS server sees every query and its answers take effect at once.
    pub fn with_nameserver(addr: SocketAddr) -> Resolver {
        let mut builder = one_nameserver(addr);
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.num_concurrent_reqs = 1;
        Resolver {
            inner: builder.build(),
        }
    }

    /// The A and AAAA addresses of `host`, with `port`.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DeliverError> {
        match self.inner.lookup_ip(fqdn(host)).await {
            Ok(found) => {
                let mut addrs: Vec<SocketAddr> =
                    found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                addrs.dedup();
                if addrs.is_empty() {
                    return Err(no_address(host, "no A or AAAA records"));
                }
                Ok(addrs)
            }
            Err(e) => Err(classify(host, &e)),
        }
    }
}

/// One place to try: a host name and its addresses, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The name the hop was found under (smart host or MX exchange, without the trailing
    /// dot), or the IP literal as written. Required TLS checks the certificate against it
    /// unless the connector names another.
    pub host: String,
    /// Its addresses, port included.
    pub addrs: Vec<SocketAddr>,
    /// The MX preference (0 for smart hosts and implicit MX).
    pub preference: u16,
}

/// A smart host as a hop: an IP literal as it is, a name resolved A/AAAA, with its port
/// (`queue drain --to` names its peer the same way).
pub async fn smart_host(resolver: &Resolver, sh: &SmartHost) -> Result<Hop, DeliverError> {
    if let Some(hop) = literal_hop(sh) {
        return Ok(hop);
    }
    Ok(Hop {
        host: sh.host.trim_end_matches('.').to_string(),
        addrs: resolver.addresses(&sh.host, sh.port).await?,
        preference: 0,
    })
}

/// A smart host written as an IP address, as a hop without asking a resolver.
pub fn literal_hop(sh: &SmartHost) -> Option<Hop> {
    parse_ip_literal(&sh.host).map(|ip| Hop {
        host: sh.host.clone(),
        addrs: vec![SocketAddr::new(ip, sh.port)],
        preference: 0,
    })
}

/// Next hops for `domain` through `connector`, in the order to try: the smart hosts in
/// order (names resolved A/AAAA, IP literals taken as is, port from the smart host), else
/// the MX records by preference (ties keep the DNS order), else the domain's own A/AAAA
/// (implicit MX, RFC 5321 5.1). A domain written as an address literal (`[192.0.2.1]`,
/// `[IPv6:2001:db8::1]`) is its own hop on port 25.
///
/// Errors: a null MX (RFC 7505) is [`DeliverError::NullMx`] (556 5.1.10); a domain that does
/// not exist, or whose hosts all lack addresses, is [`DeliverError::NoAddress`]; DNS
/// trouble that may pass is [`DeliverError::DnsTemporary`] (an MX host that fails that way
/// is skipped while other hosts resolve).
///
/// Loops, against `local` (this relay's listening addresses): an address is local when a
/// listener has the same port and either the same IP, or is a wildcard (`0.0.0.0` or `::`,
/// either family) and the address is loopback (127.0.0.0/8, ::1), unspecified, or assigned
/// to this machine (tested by binding a UDP socket to it, so hosts with
/// `ip_nonlocal_bind` set see every address as their own behind a wildcard listener).
/// A smart host or implicit-MX hop with a local address is a [`DeliverError::Loop`]. MX
/// hosts follow RFC 5321 5.1: the first MX that is local is dropped together with every MX
/// of the same or a higher preference; it is a loop only when nothing is left.
pub async fn next_hops(
    resolver: &Resolver,
    connector: &SendConnector,
    domain: &str,
    local: &[SocketAddr],
) -> Result<Vec<Hop>, DeliverError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !connector.smart_hosts.is_empty() {
        let mut hops = Vec::with_capacity(connector.smart_hosts.len());
        for sh in &connector.smart_hosts {
            let hop = smart_host(resolver, &sh.value).await?;
            check_loop(&domain, &hop, local)?;
            hops.push(hop);
        }
        return Ok(hops);
    }

    if let Some(ip) = address_literal(&domain) {
        let hop = Hop {
            host: domain.clone(),
            addrs: vec![SocketAddr::new(ip, SMTP_PORT)],
            preference: 0,
        };
        check_loop(&domain, &hop, local)?;
        return Ok(vec![hop]);
    }

    let mut mx: Vec<(u16, String)> = match resolver.inner.mx_lookup(fqdn(&domain)).await {
        Ok(found) => found
            .iter()
            .map(|r| (r.preference(), r.exchange().to_ascii()))
            .collect(),
        Err(e) => match answer(&e) {
            Answer::NxDomain => return Err(no_address(&domain, "domain does not exist")),
            Answer::NoData => Vec::new(),
            Answer::Failed => return Err(classify(&domain, &e)),
        },
    };

    if mx.is_empty() {
        let hop = Hop {
            host: domain.clone(),
            addrs: resolver.addresses(&domain, SMTP_PORT).await?,
            preference: 0,
        };
        check_loop(&domain, &hop, local)?;
        return Ok(vec![hop]);
    }

    let before = mx.len();
    mx.retain(|(_, exchange)| exchange != "." && !exchange.is_empty());
    if mx.is_empty() && before > 0 {
        return Err(DeliverError::NullMx { domain });
    }
    mx.sort_by_key(|(pref, _)| *pref);

    let mut hops = Vec::with_capacity(mx.len());
    let mut last_err = None;
    let mut first_loop = None;
    for (preference, exchange) in mx {
        if first_loop.is_some() {
            break;
        }
        let host = exchange.trim_end_matches('.').to_ascii_lowercase();
        match resolver.addresses(&host, SMTP_PORT).await {
            Ok(addrs) => {
                let hop = Hop {
                    host,
                    addrs,
                    preference,
                };
                if let Err(e) = check_loop(&domain, &hop, local) {
                    // RFC 5321 5.1: drop ourselves and every MX no better than us.
                    hops.retain(|h: &Hop| h.preference < preference);
                    first_loop = Some(e);
                } else {
                    hops.push(hop);
                }
            }
            Err(e) => last_err = Some(e),
        }
    }
    if hops.is_empty() {
        if let Some(e) = first_loop.or(last_err) {
            return Err(e);
        }
        return Err(no_address(&domain, "no usable MX host"));
    }
    Ok(hops)
}

/// Whether `addr` is one of this relay's own listening addresses (see [`next_hops`]).
pub fn is_local(addr: SocketAddr, local: &[SocketAddr]) -> bool {
    let ip = canonical(addr.ip());
    local.iter().any(|l| {
        if l.port() != addr.port() {
            return false;
        }
        let lip = canonical(l.ip());
        if lip.is_unspecified() {
            ip.is_loopback() || ip.is_unspecified() || assigned_here(ip)
        } else {
            lip == ip
        }
    })
}

/// Binding succeeds only for addresses of this machine's interfaces.
fn assigned_here(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn check_loop(domain: &str, hop: &Hop, local: &[SocketAddr]) -> Result<(), DeliverError> {
    match hop.addrs.iter().find(|a| is_local(**a, local)) {
        Some(addr) => Err(DeliverError::Loop {
            domain: domain.to_string(),
            host: hop.host.clone(),
            addr: *addr,
        }),
        None => Ok(()),
    }
}

/// `192.0.2.1`, `2001:db8::1` or either in brackets (`[IPv6:...]` too).
pub(crate) fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    host.parse().ok().or_else(|| address_literal(host))
}

/// An RFC 5321 address literal: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(s: &str) -> Option<IpAddr> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let inner = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => &inner[5..],
        _ => inner,
    };
    inner.parse().ok()
}

/// Absolute name, so that no search list applies.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

fn no_address(name: &str, message: &str) -> DeliverError {
    DeliverError::NoAddress {
        name: name.to_string(),
        message: message.to_string(),
    }
}

/// What a failed lookup says about the name.
enum Answer {
    /// The name does not exist.
    NxDomain,
    /// The name exists, without records of the type asked for.
    NoData,
    /// No answer worth believing (timeout, SERVFAIL, REFUSED...): try again later.
    Failed,
}

fn answer(e: &ResolveError) -> Answer {
    // hickory reports SERVFAIL and REFUSED as "no records found" too: look at the code.
    match e.proto().map(ProtoError::kind) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::NoError => Answer::NoData,
            _ => Answer::Failed,
        },
        _ => Answer::Failed,
    }
}

fn classify(name: &str, e: &ResolveError) -> DeliverError {
    match answer(e) {
        Answer::NxDomain | Answer::NoData => no_address(name, &e.to_string()),
        Answer::Failed => DeliverError::DnsTemporary {
            name: name.to_string(),
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_literal("example.com"), None);
        assert_eq!(
            parse_ip_literal("10.0.0.1"),
            Some("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn local_rule() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let exact = [a("192.0.2.7:25")];
        assert!(is_local(a("192.0.2.7:25"), &exact));
        assert!(!is_local(a("192.0.2.7:2525"), &exact));
        assert!(!is_local(a("127.0.0.1:25"), &exact));
        let wild = [a("0.0.0.0:25")];
        assert!(is_local(a("127.0.0.1:25"), &wild));
        assert!(is_local(a("127.5.6.7:25"), &wild));
        assert!(is_local(a("[::1]:25"), &wild));
        assert!(is_local(a("[::ffff:127.0.0.1]:25"), &wild));
        assert!(!is_local(a("127.0.0.1:26"), &wild));
        // TEST-NET-1 is never assigned to a test machine.
        assert!(!is_local(a("192.0.2.1:25"), &wild));
    }
}
