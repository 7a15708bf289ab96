//! The cmdlets mailflow translates: each one's parameters (value or switch), the ones a
//! value without a name binds to, and PowerShell's rule that a parameter may be shortened to
//! any unambiguous prefix.

use super::*;

/// Whether a parameter takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum P {
    V,
    S,
}

/// A cmdlet's parameters.
pub(super) type Params = Vec<(&'static str, P)>;
/// The parameters values without a name bind to, in order.
pub(super) type Positional = &'static [&'static str];

pub(super) struct Spec {
    params: &'static [(&'static str, P)],
    positional: &'static [&'static str],
}

pub(super) const COMMON: &[(&str, P)] = &[
    ("Confirm", P::S),
    ("DomainController", P::V),
    ("ErrorAction", P::V),
    ("Force", P::S),
    ("Verbose", P::S),
    ("WhatIf", P::S),
];

pub(super) const RECEIVE_SETTINGS: &[(&str, P)] = &[
    ("Bindings", P::V),
    ("RemoteIPRanges", P::V),
    ("AuthMechanism", P::V),
    ("PermissionGroups", P::V),
    ("RequireTLS", P::V),
    ("TlsDomainCapabilities", P::V),
    ("TlsCertificateName", P::V),
    ("Fqdn", P::V),
    ("MaxMessageSize", P::V),
    ("MaxRecipientsPerMessage", P::V),
    ("MaxInboundConnectionPerSource", P::V),
    ("MaxInboundConnection", P::V),
    ("ConnectionTimeout", P::V),
    ("ConnectionInactivityTimeout", P::V),
    ("MaxHeaderSize", P::V),
    ("MaxHopCount", P::V),
    ("Banner", P::V),
    ("ProtocolLoggingLevel", P::V),
    ("Comment", P::V),
    ("Enabled", P::V),
    ("Server", P::V),
    ("TransportRole", P::V),
];

pub(super) const SEND_SETTINGS: &[(&str, P)] = &[
    ("AddressSpaces", P::V),
    ("SmartHosts", P::V),
    ("DNSRoutingEnabled", P::V),
    ("RequireTLS", P::V),
    ("IgnoreSTARTTLS", P::V),
    ("TlsAuthLevel", P::V),
    ("TlsDomain", P::V),
    ("TlsCertificateName", P::V),
    ("Fqdn", P::V),
    ("Comment", P::V),
    ("Enabled", P::V),
    ("SourceTransportServers", P::V),
    ("ProtocolLoggingLevel", P::V),
    ("MaxMessageSize", P::V),
];

pub(super) const RULE_SETTINGS: &[(&str, P)] = &[
    ("Priority", P::V),
    ("Mode", P::V),
    ("Enabled", P::V),
    ("Comments", P::V),
    ("FromScope", P::V),
    ("ExceptIfFromScope", P::V),
    ("AnyOfRecipientAddressContainsWords", P::V),
    ("ExceptIfAnyOfRecipientAddressContainsWords", P::V),
    ("AnyOfRecipientAddressMatchesPatterns", P::V),
    ("ExceptIfAnyOfRecipientAddressMatchesPatterns", P::V),
    ("RecipientDomainIs", P::V),
    ("ExceptIfRecipientDomainIs", P::V),
    ("SenderDomainIs", P::V),
    ("ExceptIfSenderDomainIs", P::V),
    ("FromAddressContainsWords", P::V),
    ("ExceptIfFromAddressContainsWords", P::V),
    ("FromAddressMatchesPatterns", P::V),
    ("ExceptIfFromAddressMatchesPatterns", P::V),
    ("SubjectContainsWords", P::V),
    ("ExceptIfSubjectContainsWords", P::V),
    ("SubjectMatchesPatterns", P::V),
    ("ExceptIfSubjectMatchesPatterns", P::V),
    ("HeaderContainsMessageHeader", P::V),
    ("HeaderContainsWords", P::V),
    ("ExceptIfHeaderContainsMessageHeader", P::V),
    ("ExceptIfHeaderContainsWords", P::V),
    ("HeaderMatchesMessageHeader", P::V),
    ("HeaderMatchesPatterns", P::V),
    ("ExceptIfHeaderMatchesMessageHeader", P::V),
    ("ExceptIfHeaderMatchesPatterns", P::V),
    ("MessageSizeOver", P::V),
    ("ExceptIfMessageSizeOver", P::V),
    ("SenderIpRanges", P::V),
    ("ExceptIfSenderIpRanges", P::V),
    ("StopRuleProcessing", P::V),
    ("DeleteMessage", P::V),
    ("Disconnect", P::V),
    ("Quarantine", P::V),
    ("SmtpRejectMessageRejectStatusCode", P::V),
    ("SmtpRejectMessageRejectText", P::V),
    ("RejectMessageEnhancedStatusCode", P::V),
    ("RejectMessageReasonText", P::V),
    ("RedirectMessageTo", P::V),
    ("AddToRecipients", P::V),
    ("CopyTo", P::V),
    ("BlindCopyTo", P::V),
    ("SetHeaderName", P::V),
    ("SetHeaderValue", P::V),
    ("RemoveHeader", P::V),
    ("PrependSubject", P::V),
    ("LogEventText", P::V),
];

pub(super) const RECIPIENT_SETTINGS: &[(&str, P)] = &[
    ("DisplayName", P::V),
    ("Alias", P::V),
    ("PrimarySmtpAddress", P::V),
    ("EmailAddresses", P::V),
    ("ExternalEmailAddress", P::V),
    ("HiddenFromAddressListsEnabled", P::V),
    ("RequireSenderAuthenticationEnabled", P::V),
    ("OrganizationalUnit", P::V),
    ("FirstName", P::V),
    ("LastName", P::V),
    ("Initials", P::V),
    ("Members", P::V),
    ("Type", P::V),
    ("ManagedBy", P::V),
    ("Notes", P::V),
];

/// The cmdlets that change configuration mailflow holds.
pub(super) fn spec(cmdlet: &str) -> Option<(Params, Positional)> {
    let with = |extra: &[&'static [(&'static str, P)]]| -> Vec<(&'static str, P)> {
        let mut v: Vec<(&'static str, P)> = COMMON.to_vec();
        for e in extra {
            v.extend_from_slice(e);
        }
        v
    };
    let id: &'static [(&'static str, P)] = &[("Identity", P::V)];
    let name: &'static [(&'static str, P)] = &[("Name", P::V)];
    let s = match cmdlet.to_ascii_lowercase().as_str() {
        "new-accepteddomain" => Spec {
            params: &[
                ("Name", P::V),
                ("DomainName", P::V),
                ("DomainType", P::V),
                ("MatchSubDomains", P::V),
            ],
            positional: &["Name"],
        },
        "set-accepteddomain" => Spec {
            params: &[
                ("Identity", P::V),
                ("DomainType", P::V),
                ("MatchSubDomains", P::V),
                ("MakeDefault", P::V),
                ("Name", P::V),
            ],
            positional: &["Identity"],
        },
        "new-receiveconnector" => {
            let mut p = with(&[name, RECEIVE_SETTINGS]);
            for sw in ["Internet", "Internal", "Partner", "Custom", "Client"] {
                p.push((sw, P::S));
            }
            p.push(("Usage", P::V));
            return Some((p, &["Name"]));
        }
        "set-receiveconnector" => {
            return Some((with(&[id, name, RECEIVE_SETTINGS]), &["Identity"]));
        }
        "new-sendconnector" => {
            let mut p = with(&[name, SEND_SETTINGS]);
            for sw in ["Internet", "Internal", "Partner", "Custom"] {
                p.push((sw, P::S));
            }
            p.push(("Usage", P::V));
            return Some((p, &["Name"]));
        }
        "set-sendconnector" => return Some((with(&[id, name, SEND_SETTINGS]), &["Identity"])),
        "new-addressrewriteentry" | "set-addressrewriteentry" => {
            let mut p = with(&[&[
                ("Name", P::V),
                ("InternalAddress", P::V),
                ("ExternalAddress", P::V),
                ("ExceptionList", P::V),
                ("OutboundOnly", P::V),
            ]]);
            if cmdlet.to_ascii_lowercase().starts_with("set") {
                p.push(("Identity", P::V));
                return Some((p, &["Identity"]));
            }
            return Some((p, &["Name"]));
        }
        "new-transportrule" => return Some((with(&[name, RULE_SETTINGS]), &["Name"])),
        "set-transportrule" => return Some((with(&[id, name, RULE_SETTINGS]), &["Identity"])),
        "new-mailcontact" | "new-distributiongroup" => {
            return Some((with(&[name, RECIPIENT_SETTINGS]), &["Name"]));
        }
        "set-mailcontact" | "set-distributiongroup" | "set-mailuser" | "enable-mailuser" => {
            return Some((with(&[id, name, RECIPIENT_SETTINGS]), &["Identity"]));
        }
        "add-distributiongroupmember" | "remove-distributiongroupmember" => {
            return Some((
                with(&[&[("Identity", P::V), ("Member", P::V)]]),
                &["Identity"],
            ));
        }
        "add-adpermission" => {
            return Some((
                with(&[&[
                    ("Identity", P::V),
                    ("User", P::V),
                    ("ExtendedRights", P::V),
                    ("AccessRights", P::V),
                ]]),
                &["Identity"],
            ));
        }
        "remove-accepteddomain"
        | "remove-receiveconnector"
        | "remove-sendconnector"
        | "remove-addressrewriteentry"
        | "remove-transportrule"
        | "remove-mailcontact"
        | "remove-distributiongroup"
        | "disable-mailuser" => return Some((with(&[id]), &["Identity"])),
        _ => return None,
    };
    let mut p = COMMON.to_vec();
    p.extend_from_slice(s.params);
    Some((p, s.positional))
}

/// The kind of object a cmdlet's noun names.
pub(super) fn noun_kind(cmdlet: &str) -> Option<Kind> {
    let noun = cmdlet.split_once('-')?.1.to_ascii_lowercase();
    Some(match noun.as_str() {
        "accepteddomain" => Kind::Domain,
        "receiveconnector" => Kind::Receive,
        "sendconnector" => Kind::Send,
        "addressrewriteentry" => Kind::Rewrite,
        "transportrule" => Kind::Rule,
        "mailcontact" => Kind::Recipient(RecipientKind::Contact),
        "mailuser" => Kind::Recipient(RecipientKind::MailUser),
        "distributiongroup" | "distributiongroupmember" => Kind::Recipient(RecipientKind::Group),
        _ => return None,
    })
}

/// Finds a parameter by its name or an unambiguous prefix, as PowerShell does.
pub(super) fn find_param(spec: &[(&'static str, P)], name: &str) -> Option<(&'static str, P)> {
    if let Some(p) = spec.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Some(*p);
    }
    let lname = name.to_ascii_lowercase();
    let mut matches = spec
        .iter()
        .filter(|(n, _)| n.to_ascii_lowercase().starts_with(&lname));
    let first = matches.next()?;
    matches.next().is_none().then_some(*first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_match_by_unambiguous_prefix() {
        let spec = [("RequireTLS", P::V), ("RemoteIPRanges", P::V)];
        assert_eq!(
            find_param(&spec, "requiretls").map(|p| p.0),
            Some("RequireTLS")
        );
        assert_eq!(
            find_param(&spec, "RemoteIP").map(|p| p.0),
            Some("RemoteIPRanges")
        );
        assert_eq!(find_param(&spec, "Re"), None);
    }
}
