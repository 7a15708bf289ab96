//! Who a message is from, as far as the connection proves it: the AuthAs the connector grants,
//! the tenant attribution (XOORG) a verified certificate vouches for, and the header firewall
//! that keeps an untrusted client from asserting either in its headers.
//!
//! On a connector that trusts XOORG (`accept-oorg`), the peer is a shared service (Exchange
//! Online Protection relays for every Microsoft 365 customer with one certificate and one set
//! of addresses), so the connection alone proves nothing about the organization. There a message
//! is Internal only when its XOORG was trusted *and* names one of the organization's own
//! domains (authoritative or internal-relay); any other message is Anonymous, whatever MAIL
//! FROM or From say (seed 003: "the combination of the EOP TLS certificate, connector setting
//! and accepted domain").

use super::organization::{is_organization_domain, is_organization_header};
use super::run::{Run, auth_word};
use super::{Envelope, Stage};
use crate::model::{AuthAs, AuthLevel, InboundTls, ReceiveConnector};

/// Set from a trusted XOORG only; never taken from the client's headers.
const ORIGINATOR_ORG: &str = "X-OriginatorOrg";

/// The AuthAs and the trusted originating organization (lowercase) of a message.
pub(super) fn attribute(
    run: &mut Run<'_>,
    connector: &ReceiveConnector,
    env: &Envelope,
) -> (AuthAs, Option<String>) {
    let org = trusted_xoorg(run, connector, env);
    let auth = match connector.auth.value {
        AuthLevel::Anonymous => AuthAs::Anonymous,
        AuthLevel::Partner => AuthAs::Partner,
        AuthLevel::ExternallySecured if connector.accept_oorg.is_empty() => AuthAs::Internal,
        AuthLevel::ExternallySecured => return oorg_auth(run, connector, org),
    };
    if run.explain {
        run.step(
            Stage::Attribution,
            format!(
                "AuthAs {}: `{}` has `auth {}`",
                auth_word(auth),
                connector.name.value,
                connector.auth.value.keyword()
            ),
        );
    }
    (auth, org)
}

/// AuthAs on an `externally-secured` connector that trusts XOORG: Internal only for one of the
/// organization's own tenants.
fn oorg_auth(
    run: &mut Run<'_>,
    connector: &ReceiveConnector,
    org: Option<String>,
) -> (AuthAs, Option<String>) {
    let ours = org
        .as_deref()
        .filter(|o| is_organization_domain(&run.table.domains, o));
    let auth = if ours.is_some() {
        AuthAs::Internal
    } else {
        AuthAs::Anonymous
    };
    if run.explain {
        let why = match (&org, ours) {
            (_, Some(o)) => {
                format!("the trusted XOORG={o} is an accepted domain of the organization")
            }
            (Some(o), None) => format!(
                "the trusted XOORG={o} is not one of the organization's accepted domains (another tenant of the shared service)"
            ),
            (None, _) => format!(
                "`{}` trusts only a verified XOORG naming one of the organization's accepted domains, and there is none",
                connector.name.value
            ),
        };
        run.step(
            Stage::Attribution,
            format!("AuthAs {}: {why}", auth_word(auth)),
        );
    }
    (auth, org)
}

/// The XOORG parameter, lowercase, when the client's verified certificate names a peer the
/// connector trusts for tenant attribution.
fn trusted_xoorg(
    run: &mut Run<'_>,
    connector: &ReceiveConnector,
    env: &Envelope,
) -> Option<String> {
    let org = env.xoorg.as_ref()?;
    let trusted_peer = env.tls_peer.as_ref().filter(|peer| {
        connector.tls.value != InboundTls::Off
            && connector
                .accept_oorg
                .iter()
                .any(|p| p.value.matches(&peer.to_ascii_lowercase()))
    });
    if let Some(peer) = trusted_peer {
        if run.explain {
            run.step(
                Stage::Attribution,
                format!(
                    "XOORG={org} trusted: the client's certificate `{peer}` is accepted for tenant attribution on `{}`",
                    connector.name.value
                ),
            );
        }
        return Some(org.to_ascii_lowercase());
    }
    if run.explain {
        let why = match &env.tls_peer {
            None => "the client presented no certificate".to_string(),
            Some(p) => format!(
                "the certificate `{p}` is not accepted for tenant attribution on `{}`",
                connector.name.value
            ),
        };
        run.step(Stage::Attribution, format!("XOORG={org} ignored: {why}"));
    }
    None
}

/// Removes the trust headers an untrusted client brought (the organization's headers, which
/// Exchange and Exchange Online act on: `CrossPremises-AuthAs: Internal`,
/// `CrossPremises-SCL: -1`, ...), then stamps what this relay knows:
/// `X-MS-Exchange-Organization-AuthAs`, and `X-OriginatorOrg` from a trusted XOORG only.
pub(super) fn header_firewall(run: &mut Run<'_>, auth: AuthAs, org: Option<&str>) {
    let untrusted = auth != AuthAs::Internal;
    let stripped: Vec<String> = run
        .message
        .headers
        .iter()
        .filter(|h| {
            h.name().eq_ignore_ascii_case(ORIGINATOR_ORG)
                || (untrusted && is_organization_header(h.name()))
        })
        .map(|h| h.name().to_string())
        .collect();
    for name in stripped {
        if run.remove_header(&name) && run.explain {
            let why = if name.eq_ignore_ascii_case(ORIGINATOR_ORG) {
                "X-OriginatorOrg is set from a trusted XOORG only".to_string()
            } else {
                format!(
                    "organization headers are not accepted from {} senders",
                    auth_word(auth).to_lowercase()
                )
            };
            run.step(Stage::HeaderFirewall, format!("removed `{name}`: {why}"));
        }
    }
    run.set_header("X-MS-Exchange-Organization-AuthAs", auth_word(auth));
    if let Some(org) = org {
        run.set_header(ORIGINATOR_ORG, org);
    }
    if run.explain {
        run.step(
            Stage::HeaderFirewall,
            format!(
                "stamped X-MS-Exchange-Organization-AuthAs: {}{}",
                auth_word(auth),
                org.map_or(String::new(), |o| format!(", X-OriginatorOrg: {o}"))
            ),
        );
    }
}
