//! Checking single values: addresses, domains, wildcards, IP ranges, sizes, durations.
//! Each checker returns the typed value or a diagnostic pointing at the text.

use crate::ast::Text;
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Address, DomainPattern, IpRange, SmartHost};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub(crate) type Checked<T> = Result<T, Diagnostic>;

fn bad(code: Code, t: &Text, message: String, label: &str, help: &str) -> Diagnostic {
    Diagnostic::new(code, message)
        .primary(t.span, label)
        .help(help)
}

/// Why a domain name is not valid, if it is not.
pub(crate) fn domain_problem(d: &str) -> Option<String> {
    if d.is_empty() {
        return Some("the domain is empty".into());
    }
    if d.len() > 253 {
        return Some("the domain is longer than 253 characters".into());
    }
    if d.starts_with('[') {
        return Some("address literals like `[192.0.2.1]` are not accepted".into());
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Some(
                "the domain has an empty label (two dots in a row, or a dot at an end)".into(),
            );
        }
        if label.len() > 63 {
            return Some(format!("the label `{label}` is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label `{label}` starts or ends with a hyphen"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || !c.is_ascii()))
        {
            return Some(format!("`{c}` cannot appear in a domain name"));
        }
    }
    None
}

/// A plain domain (no wildcard), lowercased.
pub(crate) fn domain(t: &Text) -> Checked<String> {
    let d = t.value.to_ascii_lowercase();
    if d.contains('*') {
        return Err(malformed_wildcard_or_misplaced(t));
    }
    match domain_problem(&d) {
        None => Ok(d),
        Some(why) => Err(bad(
            Code::E013,
            t,
            format!("`{}` is not a valid domain name", t.value),
            &why,
            "write a host name such as `example.com`",
        )),
    }
}

fn malformed_wildcard_or_misplaced(t: &Text) -> Diagnostic {
    bad(
        Code::E022,
        t,
        format!("`{}` is not a valid wildcard", t.value),
        "a wildcard is `*.` followed by a domain",
        "write `*.contoso.com` to cover contoso.com and all its subdomains",
    )
}

/// A domain or `*.domain`.
pub(crate) fn domain_pattern(t: &Text) -> Checked<DomainPattern> {
    let v = t.value.to_ascii_lowercase();
    if let Some(rest) = v.strip_prefix("*.") {
        if rest.contains('*') {
            return Err(malformed_wildcard_or_misplaced(t));
        }
        let inner = Text {
            value: rest.to_string(),
            span: t.span,
            quoted: t.quoted,
        };
        return domain(&inner).map(DomainPattern::Wildcard);
    }
    if v.contains('*') {
        return Err(malformed_wildcard_or_misplaced(t));
    }
    domain(t).map(DomainPattern::Exact)
}

/// An email address `local@domain`.
pub(crate) fn address(t: &Text) -> Checked<Address> {
    let v = t.value.as_str();
    let invalid = |why: &str, help: &str| {
        bad(
            Code::E012,
            t,
            format!("`{v}` is not a valid email address"),
            why,
            help,
        )
    };
    if v.starts_with('@') {
        return Err(invalid(
            "source routes (`@host:user@domain`) are not accepted",
            "write the plain address `user@domain`",
        ));
    }
    let Some((local, dom)) = v.rsplit_once('@') else {
        return Err(invalid("an address needs an `@`", "write `user@domain`"));
    };
    if local.contains('@') {
        return Err(invalid(
            "an address has exactly one `@`",
            "write the plain address `user@domain`",
        ));
    }
    if local.contains('%') || local.contains('!') {
        return Err(invalid(
            "`%` and `!` routing is how open relays are abused and is not accepted",
            "write the final address `user@domain`",
        ));
    }
    if local.is_empty() {
        return Err(invalid(
            "the part before `@` is empty",
            "write `user@domain`",
        ));
    }
    if local.len() > 64 {
        return Err(invalid(
            "the part before `@` is longer than 64 characters",
            "RFC 5321 limits local parts to 64 octets",
        ));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(invalid(
            "a dot cannot start or end the local part, or follow another dot",
            "remove the extra dot",
        ));
    }
    if let Some(c) = local.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || "!#$&'*+-/=?^_`{|}~.".contains(*c) || !c.is_ascii())
    }) {
        return Err(invalid(
            &format!("`{c}` cannot appear in the local part"),
            "quoted local parts are not supported in rule files",
        ));
    }
    let dom_l = dom.to_ascii_lowercase();
    if let Some(why) = domain_problem(&dom_l) {
        return Err(invalid(&why, "write a domain name after the `@`"));
    }
    Ok(Address {
        local: local.to_string(),
        domain: dom_l,
    })
}

/// An address, or `<>` for the null sender (`Ok(None)`).
pub(crate) fn sender(t: &Text) -> Checked<Option<Address>> {
    if t.value == "<>" {
        return Ok(None);
    }
    let stripped = t
        .value
        .strip_prefix('<')
        .and_then(|v| v.strip_suffix('>'))
        .unwrap_or(&t.value);
    address(&Text {
        value: stripped.to_string(),
        span: t.span,
        quoted: t.quoted,
    })
    .map(Some)
}

/// An IP address, CIDR block, or `first-last` range.
pub fn ip_range(t: &Text) -> Checked<IpRange> {
    let v = t.value.trim();
    let invalid = |why: String| {
        bad(
            Code::E030,
            t,
            format!("`{v}` is not a valid ip address or range"),
            &why,
            "write an address (`192.0.2.7`), a CIDR block (`192.0.2.0/24`) or a range (`192.0.2.10-192.0.2.20`)",
        )
    };
    if let Some((a, b)) = v.split_once('-') {
        let a: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| invalid(format!("`{a}` is not an ip address")))?;
        let b: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| invalid(format!("`{b}` is not an ip address")))?;
        if a.is_ipv4() != b.is_ipv4() {
            return Err(invalid("the two ends are of different families".into()));
        }
        let r = IpRange { first: a, last: b };
        // `contains(b)` fails exactly when the first address is above the last.
        if !r.contains(b) {
            return Err(invalid("the first address is above the last".into()));
        }
        return Ok(r);
    }
    if v.contains('/') {
        let net: ipnet::IpNet = v.parse().map_err(|e| invalid(format!("{e}")))?;
        if net.network() != net.addr() {
            return Err(bad(
                Code::E030,
                t,
                format!("`{v}` has host bits set"),
                &format!("the block starting here is `{}`", net.trunc()),
                "write the network address, so the range is what it looks like",
            ));
        }
        return Ok(IpRange {
            first: net.network(),
            last: net.broadcast(),
        });
    }
    let ip: IpAddr = v
        .parse()
        .map_err(|_| invalid("not an address, a CIDR block or a range".into()))?;
    Ok(IpRange {
        first: ip,
        last: ip,
    })
}

/// A single IP address.
pub(crate) fn ip(t: &Text) -> Checked<IpAddr> {
    t.value.parse().map_err(|_| {
        bad(
            Code::E030,
            t,
            format!("`{}` is not a valid ip address", t.value),
            "expected one address",
            "write an address such as `192.0.2.7` or `2001:db8::7`",
        )
    })
}

/// `ip:port`.
pub fn socket_addr(t: &Text) -> Checked<SocketAddr> {
    t.value.parse().map_err(|_| {
        bad(
            Code::E032,
            t,
            format!("`{}` is not an address and port to listen on", t.value),
            "expected `ip:port`",
            "write `0.0.0.0:25`, `[::]:25` or `127.0.0.1:2525`",
        )
    })
}

/// `host[:port]` or `[ipv6]:port`.
pub fn smart_host(t: &Text) -> Checked<SmartHost> {
    let v = t.value.as_str();
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return Ok(SmartHost {
            host: sa.ip().to_string(),
            port: sa.port(),
        });
    }
    if let Ok(ip) = v
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SmartHost {
            host: ip.to_string(),
            port: 25,
        });
    }
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => {
            let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                bad(
                    Code::E014,
                    t,
                    format!("`{p}` is not a valid port"),
                    "expected a port from 1 to 65535",
                    "write `host:25`, or leave the port out for 25",
                )
            })?;
            (h, port)
        }
        None => (v, 25),
    };
    let host = domain(&Text {
        value: host.to_string(),
        span: t.span,
        quoted: t.quoted,
    })?;
    Ok(SmartHost { host, port })
}

/// A size: a number with an optional binary unit (B, KB, MB, GB).
pub(crate) fn size(t: &Text) -> Checked<u64> {
    let v = t.value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" | "K" => 1024,
        "MB" | "M" => 1024 * 1024,
        "GB" | "G" => 1024 * 1024 * 1024,
        _ => {
            return Err(bad(
                Code::E014,
                t,
                format!("`{v}` is not a size"),
                "unknown unit",
                "write a number with B, KB, MB or GB (binary units, as Exchange counts), e.g. `36MB`",
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            bad(
                Code::E014,
                t,
                format!("`{v}` is not a size"),
                "expected a whole number of bytes, KB, MB or GB",
                "write e.g. `36MB`",
            )
        })
}

/// A duration: a number with s, m, h or d.
pub(crate) fn duration(t: &Text) -> Checked<Duration> {
    let v = t.value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => 0,
    };
    num.parse::<u64>()
        .ok()
        .filter(|_| mult > 0)
        .and_then(|n| n.checked_mul(mult))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            bad(
                Code::E014,
                t,
                format!("`{v}` is not a duration"),
                "expected a number with `s`, `m`, `h` or `d`",
                "write e.g. `5m` or `30s`",
            )
        })
}

/// A whole number within `min..=max`.
pub(crate) fn number(t: &Text, min: u64, max: u64) -> Checked<u64> {
    t.value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            bad(
                Code::E014,
                t,
                format!("`{}` is not a number from {min} to {max}", t.value),
                &format!("expected a whole number from {min} to {max}"),
                "write a whole number in range",
            )
        })
}

/// One of a fixed set of words.
pub(crate) fn choice<T: Copy>(t: &Text, what: &str, choices: &[(&str, T)]) -> Checked<T> {
    if let Some((_, v)) = choices.iter().find(|(w, _)| *w == t.value) {
        return Ok(*v);
    }
    let names: Vec<&str> = choices.iter().map(|(w, _)| *w).collect();
    let mut d = Diagnostic::new(Code::E014, format!("`{}` is not a valid {what}", t.value))
        .primary(t.span, format!("expected one of: {}", names.join(", ")));
    d = match crate::diagnostic::did_you_mean(&t.value, names.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d.help(format!("write one of: {}", names.join(", "))),
    };
    Err(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{FileId, Span};

    fn t(v: &str) -> Text {
        Text {
            value: v.into(),
            span: Span::new(FileId(0), 0, v.len()),
            quoted: false,
        }
    }

    #[test]
    fn addresses() {
        let a = address(&t("John.Smith@Tenant1.Example.com")).unwrap();
        assert_eq!(a.local, "John.Smith");
        assert_eq!(a.domain, "tenant1.example.com");
        for bad in [
            "john",
            "@a:b@c.com",
            "a%b@c.com",
            "a@b@c.com",
            "a..b@c.com",
            "a@[1.2.3.4]",
            "a@-x.com",
            "@x.com",
        ] {
            assert!(address(&t(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcards() {
        assert_eq!(
            domain_pattern(&t("*.Contoso.com")).unwrap(),
            DomainPattern::Wildcard("contoso.com".into())
        );
        for bad in ["*contoso.com", "sales.*.com", "*.*.com", "*"] {
            let e = domain_pattern(&t(bad)).unwrap_err();
            assert_eq!(e.code, Code::E022, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let r = ip_range(&t("192.168.1.0/24")).unwrap();
        assert!(r.contains("192.168.1.77".parse().unwrap()));
        assert!(r.contains("::ffff:192.168.1.77".parse().unwrap()));
        assert!(!r.contains("192.168.2.1".parse().unwrap()));
        assert!(ip_range(&t("10.0.0.9-10.0.0.1")).is_err());
        assert!(ip_range(&t("10.0.0.1-::1")).is_err());
        assert!(ip_range(&t("10.0.0.1/24")).is_err());
        assert!(ip_range(&t("300.0.0.1")).is_err());
        assert!(ip_range(&t("2001:db8::/32")).is_ok());
        assert!(ip_range(&t("0.0.0.0/0")).unwrap().is_everything());
        // Written back as a block when it is one, else as a range.
        for (written, shown) in [
            ("192.168.1.0/24", "192.168.1.0/24"),
            ("10.0.0.0-10.255.255.255", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::/0", "::/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("10.0.0.1-10.0.0.2", "10.0.0.1-10.0.0.2"),
            ("10.0.0.2-10.0.0.3", "10.0.0.2/31"),
            ("203.0.113.9", "203.0.113.9"),
        ] {
            assert_eq!(
                ip_range(&t(written)).unwrap().to_string(),
                shown,
                "{written}"
            );
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(size(&t("36MB")).unwrap(), 36 * 1024 * 1024);
        assert_eq!(size(&t("100")).unwrap(), 100);
        assert!(size(&t("3TB")).is_err());
        assert_eq!(duration(&t("5m")).unwrap(), Duration::from_secs(300));
        assert!(duration(&t("5")).is_err());
    }
}
