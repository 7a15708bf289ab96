//! One line of documentation for every keyword, setting and predicate of the rule language:
//! what `mailflow lsp` shows on hover. The text is a summary of docs/language.md, which stays
//! the full reference; tests keep the two in step (every word here is in the docs, and every
//! keyword of grammar/mailflow.pest and every setting `resolve` accepts is here).

/// Where a word is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A top-level item (`rule`, `contact`, ...).
    Item,
    /// A setting of a connector or recipient block.
    Setting,
    /// A statement of a `rule` block (`priority`, `if`, ...).
    Statement,
    /// A condition of `if` / `except`, or a word inside one.
    Condition,
    /// An action of a rule.
    Action,
    /// An envelope setting of a `test` block.
    TestSetting,
    /// What follows `expect` in a test.
    Expectation,
    /// A value word with a fixed meaning.
    Value,
}

impl Kind {
    /// How hover text names the kind.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Item => "item",
            Kind::Setting => "setting",
            Kind::Statement => "rule statement",
            Kind::Condition => "condition",
            Kind::Action => "action",
            Kind::TestSetting => "test setting",
            Kind::Expectation => "expectation",
            Kind::Value => "value",
        }
    }
}

/// One documented word.
#[derive(Debug, Clone, Copy)]
pub struct Keyword {
    /// The word as written.
    pub word: &'static str,
    /// Where it is used (the first use when there are several).
    pub kind: Kind,
    /// How it is written.
    pub syntax: &'static str,
    /// What it means, in one or two sentences (Markdown).
    pub doc: &'static str,
}

macro_rules! keywords {
    ($( $word:literal, $kind:ident, $syntax:literal, $doc:literal; )*) => {
        /// Every documented word, grouped as in docs/language.md.
        pub const KEYWORDS: &[Keyword] = &[
            $( Keyword { word: $word, kind: Kind::$kind, syntax: $syntax, doc: $doc }, )*
        ];
    };
}

keywords! {
    // ------------------------------------------------------------ items
    "include", Item, "include \"PATH\"",
        "Reads another rule file into this rule set at this point; the path is relative to this file's folder.";
    "import", Item, "import rewrites \"PATH.csv\"",
        "Reads address rewrite entries from an Exchange rewrite CSV export (`Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly`).";
    "rewrites", Item, "import rewrites \"PATH.csv\"",
        "Follows `import`: the CSV file holds address rewrite entries.";
    "accepted-domain", Item, "accepted-domain DOMAIN [authoritative | internal-relay | external-relay] [verify-recipients]",
        "A domain this server accepts mail for (`New-AcceptedDomain`).";
    "receive-connector", Item, "receive-connector \"NAME\" { SETTING VALUE, ... }",
        "Where and from whom the relay accepts SMTP connections, and what those clients may do.";
    "send-connector", Item, "send-connector \"NAME\" { SETTING VALUE, ... }",
        "Where mail for other domains goes: address spaces, smart hosts, TLS towards the next hop.";
    "rewrite", Item, "rewrite [\"NAME\"] INTERNAL -> EXTERNAL [outbound-only] [except DOMAIN, ...]",
        "An address rewrite entry, as Exchange Edge's Address Rewriting agents apply them (`New-AddressRewriteEntry`).";
    "outbound-only", Item, "rewrite ... outbound-only",
        "Rewrite only outbound (internal to external); required for wildcard entries (`-OutboundOnly $true`).";
    "contact", Item, "contact \"NAME\" { address ADDR, ...; external ADDR; [hidden] }",
        "A recipient that claims its addresses and sends their mail to its `external` address (`New-MailContact`).";
    "mail-user", Item, "mail-user \"NAME\" { address ADDR, ...; external ADDR; [hidden] }",
        "A user whose mail goes to its `external` address; in mail flow the same as a contact (`Enable-MailUser`).";
    "group", Item, "group \"NAME\" { address ADDR, ...; [members \"NAME\" | ADDR, ...] }",
        "A recipient that expands to its members; each member is delivered once (`New-DistributionGroup`).";
    "deleted", Item, "deleted contact|mail-user|group \"NAME\" { ... }",
        "A tombstone: claims none of its addresses; mail to them in an authoritative domain is refused with `550 5.1.1`.";
    "rule", Item, "rule \"NAME\" { priority N; mode enforce|audit; if CONDITION; except CONDITION; ACTION }",
        "A transport rule, as Exchange Edge's Edge Rule agent runs them (`New-TransportRule`).";
    "test", Item, "test \"NAME\" { ENVELOPE SETTING; expect EXPECTATION }",
        "A message to run through the rule set and what must come of it; `mailflow test` runs it.";
    "dkim-key", Item, "dkim-key \"DOMAIN\" { selector SELECTOR; key \"FILE.pem\" }",
        "A DKIM signing key for `DOMAIN` (`d=`), published at `SELECTOR._domainkey.DOMAIN`; outgoing mail whose From is in `DOMAIN` is signed with it.";
    "authentication", Item, "authentication { authserv-id HOST; arc-seal DOMAIN; srs-domain DOMAIN; srs-secret \"S\", ... }",
        "Mail authentication at the edge: verification of Internet mail (`authserv-id`), ARC sealing of what the relay changes, SRS for forwarded mail. At most one.";

    // ------------------------------------------------------------ connector and recipient settings
    "listen", Setting, "listen IP:PORT, ...",
        "Receive connector: addresses to listen on (default `0.0.0.0:25`; Exchange `Bindings`).";
    "remote", Setting, "remote IP | CIDR | RANGE, ...",
        "Receive connector: the clients it is for (default: any client; Exchange `RemoteIPRanges`).";
    "fqdn", Setting, "fqdn HOST",
        "Connector: the name used in the banner, EHLO and Received headers (default: the host's name).";
    "tls", Setting, "tls off | optional | required (receive); off | opportunistic | required (send)",
        "Connector: STARTTLS policy. A receive connector with TLS needs `certificate` and `key`.";
    "certificate", Setting, "certificate \"path.pem\"",
        "Connector: a PEM certificate chain (server certificate on a receive connector, client certificate on a send connector).";
    "key", Setting, "key \"path.key\"",
        "Connector: the PEM private key of `certificate`. `dkim-key`: the PEM private key that signs (RSA of 2048 bits or more, or Ed25519).";
    "selector", Setting, "selector SELECTOR",
        "`dkim-key`: the selector (`s=`): the key's public half is published at `SELECTOR._domainkey.DOMAIN`.";
    "dkim-sign", Setting, "dkim-sign on | off",
        "Send connector: sign outgoing mail with the `dkim-key` of its From domain (default `on`).";
    "authserv-id", Setting, "authserv-id HOST",
        "`authentication`: the name in the `Authentication-Results` fields the relay adds; Internet mail is verified (SPF, DKIM, DMARC, ARC) only when it is given.";
    "arc-seal", Setting, "arc-seal DOMAIN",
        "`authentication`: ARC-seal the Internet mail the relay changes with the `dkim-key` of `DOMAIN`, so receivers that trust this sealer accept it.";
    "srs-domain", Setting, "srs-domain DOMAIN",
        "`authentication`: the domain of SRS envelope senders of forwarded mail; an accepted domain, so bounces come back.";
    "srs-secret", Setting, "srs-secret \"SECRET\", ...",
        "`authentication`: the SRS hash secrets; the first makes new addresses, all are accepted (list the old one second to rotate).";
    "srs-max-age", Setting, "srs-max-age DAYSd",
        "`authentication`: how long an SRS address stays valid for bounces (default `21d`).";
    "accept-oorg", Setting, "accept-oorg DOMAIN, ...",
        "Receive connector: TLS peer names whose `XOORG=` parameter is trusted (Exchange `TlsDomainCapabilities ...:AcceptOorgProtocol`). With `auth externally-secured`, a message is Internal only when its trusted XOORG names an accepted domain; otherwise Anonymous.";
    "auth", Setting, "auth anonymous | partner | externally-secured (receive connector); auth spf=pass, dkim=pass:DOMAIN, dmarc=fail (test)",
        "Receive connector: the AuthAs of the messages on it (default `anonymous`); with `accept-oorg`, `externally-secured` is earned per message by a trusted XOORG naming an accepted domain. Test: what verification found (methods not given are `none`; without it the message was not verified).";
    "accept-any-recipient", Setting, "accept-any-recipient",
        "Receive connector: every client may relay, inside the organization or not (`MS-Exch-SMTP-Accept-Any-Recipient` for anonymous clients); `check` warns (W022). Inside senders relay without it.";
    "max-message-size", Setting, "max-message-size SIZE",
        "Receive connector: largest message accepted (default `36MB`; Exchange `MaxMessageSize`).";
    "max-recipients", Setting, "max-recipients N",
        "Receive connector: most recipients per message (default `200`; `MaxRecipientsPerMessage`).";
    "max-connections-per-source", Setting, "max-connections-per-source N",
        "Receive connector: most concurrent connections to it from one IP (default `20`; `MaxInboundConnectionPerSource`).";
    "max-connections", Setting, "max-connections N",
        "Receive connector: most concurrent connections to it, counted per connector (default `5000`; `MaxInboundConnection`); the relay's `--max-connections` caps all connectors.";
    "connection-timeout", Setting, "connection-timeout DURATION",
        "Receive connector: longest a connection may last (default `5m`).";
    "inactivity-timeout", Setting, "inactivity-timeout DURATION",
        "Receive connector: longest a client may stay silent (default `1m`).";
    "max-header-size", Setting, "max-header-size SIZE",
        "Receive connector: largest header block (default `256KB`).";
    "max-hop-count", Setting, "max-hop-count N",
        "Receive connector: most Received headers before a loop is assumed (default `30`).";
    "address-space", Setting, "address-space PATTERN [cost N], ...",
        "Send connector: the domains it sends for: `*`, `contoso.com`, `*.contoso.com` or `--` (the accepted domains); cost 1 to 100.";
    "cost", Value, "address-space PATTERN cost N",
        "Send connector: among equally close address spaces the lowest cost wins (1 to 100).";
    "smart-host", Setting, "smart-host HOST[:PORT], ...",
        "Send connector: next hops to use instead of an MX lookup (Exchange `SmartHosts`).";
    "tls-name", Setting, "tls-name DOMAIN",
        "Send connector: the name the next hop's certificate must carry; needs `tls required`.";
    "address", Setting, "address ADDR, ...",
        "Recipient: the addresses it claims; the first is primary.";
    "external", Setting, "external ADDR",
        "Contact or mail user: where its mail goes (`-ExternalEmailAddress`).";
    "hidden", Setting, "hidden",
        "Recipient: hidden from address lists (`HiddenFromAddressListsEnabled $true`).";
    "members", Setting, "members \"Recipient name\" | ADDR, ...",
        "Group: its members; a quoted string names a recipient, a bare word is an address.";
    "authenticated-senders-only", Setting, "authenticated-senders-only",
        "Group: refuses mail whose AuthAs is not Internal with `550 5.7.1`.";

    // ------------------------------------------------------------ rule statements and conditions
    "priority", Statement, "priority N",
        "Rules run by priority, 0 first; priorities are unique. Rules without one run after all numbered ones, in file order.";
    "mode", Statement, "mode enforce | audit",
        "`audit` only logs what the rule would have done; the default is `enforce`.";
    "if", Statement, "if CONDITION",
        "A condition of the rule; all `if` conditions must hold.";
    "except", Statement, "except CONDITION (rule); except DOMAIN, ... (rewrite)",
        "In a rule: an exception; any one cancels the rule. In a wildcard rewrite: subdomains it leaves alone.";
    "sender", Condition, "sender inside | outside; sender contains | contains-words | matches \"v\", ...; sender domain-is DOMAIN, ...",
        "The envelope sender: its scope (inside or outside the organization) or its address.";
    "recipient", Condition, "recipient contains | contains-words | matches \"v\", ...; recipient domain-is DOMAIN, ...",
        "Any recipient (after inbound rewriting) matches one of the values.";
    "inside", Condition, "sender inside",
        "AuthAs Internal and the sender's domain is authoritative or internal-relay (`-FromScope InOrganization`).";
    "outside", Condition, "sender outside",
        "Any sender that is not inside (`-FromScope NotInOrganization`).";
    "contains", Condition, "... contains \"v\", ...",
        "Substring test, ignoring ASCII case.";
    "contains-words", Condition, "... contains-words \"v\", ...",
        "Whole words or phrases bounded by spaces, punctuation or the ends, ignoring case.";
    "matches", Condition, "... matches \"regex\", ...",
        "A Rust regular expression, case-insensitive, without look-around or back-references.";
    "domain-is", Condition, "recipient | sender domain-is DOMAIN, ...",
        "The address's domain is one of the domains or a subdomain of one (`-RecipientDomainIs`); look-alikes such as `victim@example.com.evil.example` do not match.";
    "header", Condition, "header \"Name\" contains | contains-words | matches \"v\", ... (rule); header \"Name\" \"value\" (test)",
        "In a rule: a header's value. In a test: a header of the message, or (after `expect`) its final value.";
    "subject", Condition, "subject contains | contains-words | matches \"v\", ...",
        "The Subject header.";
    "size", Condition, "size over SIZE",
        "The message is larger than SIZE (`-MessageSizeOver`).";
    "over", Condition, "size over SIZE",
        "Follows `size`: larger than.";
    "client-ip", Condition, "client-ip in RANGE, ... (rule); client-ip IP (test)",
        "The connecting client's address.";
    "in", Condition, "client-ip in RANGE, ...",
        "Follows `client-ip`: the address is in one of the ranges.";
    "connector", Condition, "connector \"Name\", ... (rule); connector \"Name\" (test)",
        "In a rule: arrived on one of these receive connectors. In a test: the receive connector the message arrives on.";
    "originating-org", Condition, "originating-org DOMAIN, ... (rule); expect originating-org DOMAIN | none (test)",
        "The trusted XOORG tenant (set only by a connector with `accept-oorg`).";
    "spf", Condition, "spf RESULT, ...",
        "SPF of the envelope sender had one of these results (`pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`); mail not verified is `none`.";
    "dkim", Condition, "dkim RESULT, ... [for DOMAIN, ...]",
        "Some DKIM signature (of these `d=` domains, with `for`) had one of these results; no signature at all is `none`.";
    "dmarc", Condition, "dmarc RESULT, ...",
        "DMARC of the From domain had one of these results; mail not verified is `none`.";
    "arc", Condition, "arc RESULT, ...",
        "The ARC chain that arrived had one of these results (`none`: no chain).";

    // ------------------------------------------------------------ actions
    "stop", Action, "stop",
        "No later rule runs (`-StopRuleProcessing $true`).";
    "delete", Action, "delete",
        "Accept the message and drop it silently (`-DeleteMessage $true`).";
    "reject", Action, "reject [CODE [ENHANCED]] [\"text\"]",
        "Refuse the message; default `550 5.7.1 \"Delivery not authorized, message refused\"`.";
    "redirect-to", Action, "redirect-to ADDR, ...",
        "Replace the recipients (`-RedirectMessageTo`).";
    "add-recipient", Action, "add-recipient ADDR, ...",
        "Add To recipients (`-AddToRecipients`).";
    "copy-to", Action, "copy-to ADDR, ...",
        "Add Cc recipients (`-CopyTo`).";
    "blind-copy-to", Action, "blind-copy-to ADDR, ...",
        "Add Bcc recipients (`-BlindCopyTo`).";
    "set-header", Action, "set-header \"Name\" \"value\"",
        "Set a header (`-SetHeaderName`, `-SetHeaderValue`).";
    "remove-header", Action, "remove-header \"Name\"",
        "Remove a header (`-RemoveHeader`).";
    "prepend-subject", Action, "prepend-subject \"text\"",
        "Prefix the Subject (`-PrependSubject`).";
    "quarantine", Action, "quarantine ADDR",
        "Deliver to this quarantine mailbox instead; ends rule processing.";
    "disconnect", Action, "disconnect",
        "Drop the connection without a reply (`-Disconnect $true`).";
    "log", Action, "log \"text\"",
        "Write an event to the log (`-LogEventText`).";

    // ------------------------------------------------------------ tests
    "tls-peer", TestSetting, "tls-peer NAME",
        "The name in the client's TLS certificate (needs a connector with TLS).";
    "xoorg", TestSetting, "xoorg DOMAIN",
        "The `XOORG=` parameter the client sends on `MAIL FROM`.";
    "from", TestSetting, "from ADDR | <>",
        "The envelope sender; required.";
    "to", TestSetting, "to ADDR, ...",
        "The envelope recipients; required.";
    "message", TestSetting, "message \"file.eml\"",
        "The message itself (RFC 5322, CRLF line endings), relative to this file's folder.";
    "expect", Expectation, "expect EXPECTATION",
        "What must come of the test message.";
    "delivered", Expectation, "expect delivered [ADDR, ...] [via \"Send connector\"]",
        "These recipients (all when none are named) are delivered, through this send connector.";
    "via", Expectation, "expect delivered ... via \"Send connector\"",
        "The send connector the recipients must be delivered through.";
    "rejected", Expectation, "expect rejected CODE [ENHANCED] [for ADDR, ...]",
        "These recipients (the whole message when none are named) are refused with this code.";
    "for", Expectation, "expect rejected CODE ... for ADDR, ...",
        "The recipients the rejection applies to.";
    "dropped", Expectation, "expect dropped [ADDR, ...]",
        "These recipients (the whole message) are accepted and silently dropped.";
    "fired", Expectation, "expect fired \"Rule\", ...",
        "Each of these rules matched.";
    "not-fired", Expectation, "expect not-fired \"Rule\", ...",
        "None of these rules matched.";
    "mail-from", Expectation, "expect mail-from ADDR",
        "The envelope sender after rewriting (`<>` for the null sender).";
    "recipients", Expectation, "expect recipients ADDR, ...",
        "The final recipients, after rewriting and expansion.";
    "no-header", Expectation, "expect no-header \"Name\"",
        "The final message has no such header.";
    "auth-as", Expectation, "expect auth-as internal | anonymous | partner",
        "The AuthAs given to the message.";

    // ------------------------------------------------------------ value words
    "authoritative", Value, "accepted-domain DOMAIN authoritative",
        "Every recipient of the domain is known here; unknown addresses are refused with `550 5.1.1` (the default).";
    "internal-relay", Value, "accepted-domain DOMAIN internal-relay",
        "Some recipients live elsewhere in the organization; unknown addresses are relayed.";
    "external-relay", Value, "accepted-domain DOMAIN external-relay",
        "The recipients are outside the organization; mail is accepted and relayed.";
    "verify-recipients", Value, "accepted-domain DOMAIN internal-relay verify-recipients",
        "Before accepting a recipient of this internal-relay domain that no object here knows, the relay asks the next hop (`MAIL FROM:<>`, `RCPT TO`) and refuses it with `550 5.1.1` when the hop does (Postfix's `reject_unverified_recipient`): no backscatter.";
    "enforce", Value, "mode enforce",
        "The rule acts (the default).";
    "audit", Value, "mode audit",
        "The rule only logs what it would have done.";
    "optional", Value, "tls optional",
        "Receive connector: STARTTLS is offered.";
    "required", Value, "tls required",
        "Connector: TLS is required (receive: nothing is accepted before STARTTLS; send: delivery is deferred without it).";
    "opportunistic", Value, "tls opportunistic",
        "Send connector: TLS when the next hop offers it (the default).";
    "anonymous", Value, "auth anonymous",
        "AuthAs Anonymous: anyone.";
    "partner", Value, "auth partner",
        "AuthAs Partner (domain-secured TLS).";
    "externally-secured", Value, "auth externally-secured",
        "AuthAs Internal: the network is trusted to have checked the sender (Exchange's ExternalAuthoritative); may relay.";
    "pass", Value, "dkim pass",
        "Verification result (RFC 8601): verified.";
    "fail", Value, "dmarc fail",
        "Verification result: verified false (SPF `-all`, a broken signature, a DMARC failure).";
    "softfail", Value, "spf softfail",
        "Verification result: SPF `~all`, probably not authorised.";
    "neutral", Value, "spf neutral",
        "Verification result: SPF `?all`, no statement; a DKIM signature that could not be judged.";
    "temperror", Value, "dmarc temperror",
        "Verification result: a temporary error (DNS did not answer).";
    "permerror", Value, "dkim permerror",
        "Verification result: a permanent error (a broken record or signature).";
    "on", Value, "dkim-sign on",
        "Send connector: sign outgoing mail with the `dkim-key` of its From domain (the default).";
}

/// The documentation of `word`, if it is a keyword.
pub fn lookup(word: &str) -> Option<&'static Keyword> {
    KEYWORDS.iter().find(|k| k.word == word)
}

/// Hover text for a keyword: its syntax as a code block and its meaning.
pub fn hover_markdown(k: &Keyword) -> String {
    format!(
        "```mailflow\n{}\n```\n**{}** ({}): {}",
        k.syntax,
        k.word,
        k.kind.label(),
        k.doc
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_hover_text() {
        let missing: Vec<_> = crate::resolve::setting_names()
            .into_iter()
            .filter(|w| lookup(w).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "settings without hover text: {missing:?}"
        );
    }

    #[test]
    fn every_word_is_in_the_language_reference() {
        let docs = include_str!("../docs/language.md");
        for k in KEYWORDS {
            let is_word = |i: usize| {
                let before = docs[..i].chars().next_back();
                let after = docs[i + k.word.len()..].chars().next();
                let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-');
                !ident(before) && !ident(after)
            };
            assert!(
                docs.match_indices(k.word).any(|(i, _)| is_word(i)),
                "`{}` has hover text but docs/language.md does not mention it",
                k.word
            );
            assert!(!k.doc.is_empty() && !k.syntax.is_empty(), "{}", k.word);
        }
        let unique: std::collections::BTreeSet<_> = KEYWORDS.iter().map(|k| k.word).collect();
        assert_eq!(unique.len(), KEYWORDS.len(), "a word is listed twice");
    }
}
