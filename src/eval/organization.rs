//! The organization's boundary on the way out. Exchange's header firewall removes the
//! organization's own headers on send connectors that leave the organization: they carry its
//! trust decisions (`AuthAs: Internal`, `SCL: -1`), tenant ids and internal names, which
//! nobody outside needs and a careless receiver might believe. The relay stores one copy of a
//! message and delivers it per send connector and domain, so the boundary is drawn per
//! destination domain at delivery: [`leaves_organization`] says where, and
//! [`strip_organization_headers`] takes the headers out of the bytes that go there.

use crate::compile::DomainTable;
use crate::model::DomainKind;

/// Header families that never leave the organization (compared ASCII case-insensitively):
/// the organization's own, the forest's, the ones Exchange Online promotes across premises,
/// and the tenant ones. `X-OriginatorOrg` is not among them: Exchange Online sends it to the
/// Internet itself.
pub const ORGANIZATION_HEADER_PREFIXES: &[&str] = &[
    "x-ms-exchange-organization-",
    "x-ms-exchange-forest-",
    "x-ms-exchange-crosspremises-",
    "x-ms-exchange-crosstenant-",
];

/// Whether a header field belongs to the organization and is removed on the way out.
pub fn is_organization_header(name: &str) -> bool {
    ORGANIZATION_HEADER_PREFIXES.iter().any(|p| {
        name.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// Whether `domain` (lowercase) is the organization's: an authoritative or internal-relay
/// accepted domain (whose recipients are the organization's, in the tenants or here). An
/// external-relay domain's recipients live outside.
pub fn is_organization_domain(domains: &DomainTable, domain: &str) -> bool {
    matches!(
        domains.kind(domain),
        Some(DomainKind::Authoritative | DomainKind::InternalRelay)
    )
}

/// Whether mail to `domain` (lowercase) leaves the organization.
pub fn leaves_organization(domains: &DomainTable, domain: &str) -> bool {
    !is_organization_domain(domains, domain)
}

/// The message without its organization headers (folded lines included), or `None` when it
/// has none. Works on the raw bytes: everything else, the body, other fields and bytes that
/// are not UTF-8, is passed through untouched. The header ends at the first empty line, as
/// [`crate::eval::Message::parse`] reads it.
pub fn strip_organization_headers(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut pos = 0;
    let mut dropping = false;
    while pos < raw.len() {
        let rest = raw.get(pos..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = raw.get(pos..end).unwrap_or_default();
        if matches!(line, b"\n" | b"\r\n") {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            dropping = field_name(line).is_some_and(is_organization_header);
        }
        match (&mut out, dropping) {
            (None, true) => {
                out = Some(raw.get(..pos).unwrap_or_default().to_vec());
            }
            (Some(o), false) => o.extend_from_slice(line),
            _ => {}
        }
        pos = end;
    }
    let mut out = out?;
    out.extend_from_slice(raw.get(pos..).unwrap_or_default());
    Some(out)
}

/// The name of the field a line starts, when it starts one (`Name:` or obsolete `Name :`).
fn field_name(line: &[u8]) -> Option<&str> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(line.get(..colon)?).ok()?;
    let name = name.trim_end_matches([' ', '\t']);
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AcceptedDomain, DomainPattern, Spanned};
    use crate::source::{FileId, Span};

    #[test]
    fn organization_headers_are_removed_with_their_folded_lines() {
        let raw = b"Received: from a\r\n\tby b\r\n\
X-MS-Exchange-Organization-AuthAs: Internal\r\n\
x-ms-exchange-crosspremises-scl: -1\r\n\
X-MS-Exchange-Forest-RulesExecuted: edge\r\n\
X-MS-Exchange-CrossTenant-Id:\r\n 72f988bf\r\n\
X-MS-Exchange-Organization-Network-Message-Id : 1\r\n\
X-OriginatorOrg: tenant.example\r\n\
Subject: X-MS-Exchange-Organization-AuthAs: Internal\r\n\
\r\n\
X-MS-Exchange-Organization-AuthAs: body text stays\r\n";
        let out = strip_organization_headers(raw).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Received: from a\r\n\tby b\r\n\
X-OriginatorOrg: tenant.example\r\n\
Subject: X-MS-Exchange-Organization-AuthAs: Internal\r\n\
\r\n\
X-MS-Exchange-Organization-AuthAs: body text stays\r\n"
        );
    }

    #[test]
    fn a_message_without_them_is_left_alone() {
        assert_eq!(
            strip_organization_headers(
                b"From: a@b\r\n\r\nX-MS-Exchange-Organization-AuthAs: x\r\n"
            ),
            None
        );
        assert_eq!(strip_organization_headers(b""), None);
        // Bare LF and bytes that are not UTF-8 pass through.
        let out = strip_organization_headers(
            b"X-MS-Exchange-Organization-SCL: -1\nX-Other: \xff\xfe\n\nbody\xff",
        )
        .unwrap();
        assert_eq!(out, b"X-Other: \xff\xfe\n\nbody\xff");
    }

    #[test]
    fn only_the_organizations_own_domains_are_inside() {
        let span = Span::new(FileId(0), 0, 0);
        let d = |pattern, kind| AcceptedDomain {
            domain: Spanned::new(pattern, span),
            kind,
            verify_recipients: None,
            span,
        };
        let t = DomainTable::new(&[
            d(
                DomainPattern::Exact("example.com".into()),
                DomainKind::Authoritative,
            ),
            d(
                DomainPattern::Wildcard("tenant.example".into()),
                DomainKind::InternalRelay,
            ),
            d(
                DomainPattern::Exact("partner.example".into()),
                DomainKind::ExternalRelay,
            ),
        ]);
        assert!(!leaves_organization(&t, "example.com"));
        assert!(!leaves_organization(&t, "eu.tenant.example"));
        assert!(leaves_organization(&t, "partner.example"));
        assert!(leaves_organization(&t, "example.com.evil.example"));
        assert!(leaves_organization(&t, "fabrikam.com"));
    }
}
