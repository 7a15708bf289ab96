//! The registry of diagnostic codes: one place that says what every `E0xx` error and `W0xx`
//! warning means. Codes are grouped by range (E00x files and syntax, E01x names and values,
//! E02x rewrites, E03x connectors, E04x rules, E05x recipients, E06x tests, E07x and W04x
//! `mailflow import`; E08x and W06x mail authentication, W07x certificates; the other W ranges
//! mirror them) and a code is never reused for something else.

use serde::Serialize;

/// Whether a finding stops a rule set from being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Suspicious but usable; fails `check` only with `--deny-warnings`.
    Warning,
    /// The rule set cannot be compiled.
    Error,
}

/// What the registry knows about one code.
#[derive(Debug, Clone, Copy)]
pub struct CodeInfo {
    /// `E012`, `W003`, ...
    pub id: &'static str,
    /// A short kebab-case name (`undefined-name`).
    pub name: &'static str,
    /// One lowercase line.
    pub summary: &'static str,
    /// Markdown: why it matters, an example, and the fix.
    pub explanation: &'static str,
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $summary:literal, $explanation:literal; )*) => {
        /// Every diagnostic code mailflow can report.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $( $(#[$doc])* $variant, )*
        }

        impl Code {
            /// All codes, in registry order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The registry entry.
            pub fn info(self) -> CodeInfo {
                match self {
                    $(Code::$variant => CodeInfo {
                        id: stringify!($variant),
                        name: $name,
                        summary: $summary,
                        explanation: $explanation,
                    },)*
                }
            }
        }
    };
}

impl Code {
    /// `E012`.
    pub fn id(self) -> &'static str {
        self.info().id
    }

    /// Errors start with `E`, warnings with `W`.
    pub fn severity(self) -> Severity {
        if self.id().starts_with('E') {
            Severity::Error
        } else {
            Severity::Warning
        }
    }

    /// Looks a code up by id (`e012` and `E012` both work) or by name.
    pub fn lookup(text: &str) -> Option<Code> {
        Code::ALL
            .iter()
            .copied()
            .find(|c| c.id().eq_ignore_ascii_case(text) || c.info().name == text)
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

codes! {
    /// The text does not follow the grammar.
    E001 = "syntax-error", "the text does not follow the grammar",
"A line could not be read as any mailflow construct. The message says what was expected at that point.

```mailflow
rewrite john@tenant1.example.com => john@example.com
```

Use `->` between the internal and the external address:

```mailflow
rewrite john@tenant1.example.com -> john@example.com
```";

    /// A file named by an include, import, certificate or message setting cannot be read.
    E002 = "unreadable-file", "a file named in the rule set cannot be read",
"An `include`, `import rewrites`, `message` or similar line names a file that does not exist or cannot be read. Relative paths are resolved from the folder of the file that names them.

```mailflow
include \"connectors.mailflow\"   # no such file next to this one
```

Fix the path, or add the file.

The same code is reported for a file larger than 128 MiB (rule files, `import rewrites` CSV files and compiled artifacts alike): mailflow refuses it rather than read it whole. A CSV of 1,000,000 rewrite entries is about 75 MB, so real files fit; split a larger one into several `import rewrites` files.";

    /// Files include each other in a cycle.
    E003 = "include-cycle", "files include each other in a cycle",
"A file includes itself, directly or through other files. mailflow reads each file once, so the cycle would hide where a definition really comes from.

```mailflow
# a.mailflow
include \"b.mailflow\"
# b.mailflow
include \"a.mailflow\"
```

Move the shared definitions into a third file that both include.";

    /// A row of an imported rewrite CSV does not parse.
    E004 = "invalid-csv-row", "a row of a rewrite csv file does not parse",
"`import rewrites` reads Exchange's CSV format, with the columns `Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly` (the same file `Import-Csv | New-AddressRewriteEntry` takes). A row is missing a column, has an unterminated quote, or has an `OutboundOnly` that is not `True` or `False`.

```csv
Name,InternalAddress,ExternalAddress,ExceptionList,OutboundOnly
Sales,sales.contoso.com,contoso.com,,maybe
```

Write `True` or `False` (or leave it empty for `False`).";

    /// An include or import leads outside the rule set's folder.
    E005 = "path-outside-rule-set", "an include, import or test message leads outside the rule set's folder",
"`include`, `import rewrites` and a test's `message` read only files inside the rule set's folder: the folder named on the command line, or the folder of the root file named there. An absolute path, a `..` that climbs out of that folder, or a link that points out of it is refused before the file is opened, so a rule file cannot make `mailflow check` or `mailflow test` (in CI, say) read `/proc/self/environ` or `/etc/shadow` and print them in its findings, or spell them out through the rules a test message fires.

```mailflow
include \"/etc/shadow\"
import rewrites \"../../secrets/entries.csv\"
```

Move the file into the rule set's folder, or name the folder that holds it with `--allow-path DIR` (`check`, `test`, `dry-run`, `compile`, `graph` and `relay` take it, more than once if needed).";

    /// A carriage return that is not followed by a line feed.
    E006 = "bare-carriage-return", "a carriage return not followed by a line feed",
"A lone carriage return (U+000D without a line feed after it) ends a line for some tools but not for others: git, grep and most editors show the text after it on the same line, so a rule could hide inside what looks like a comment. mailflow reads it as neither: the line goes on, and the file is refused until it is fixed.

```text
# harmless comment<CR>rule \"Hidden\" { delete }
```

Use line feeds (`\\n`) or CR LF pairs (`\\r\\n`) only; `mailflow fmt` writes line feeds.";

    /// A file named in the rule set is not text.
    E007 = "not-rule-text", "a file named in the rule set is not text",
"An `include` or `import rewrites` names a file that is not UTF-8 text, or holds control characters that no rule text or CSV file has (a NUL byte, for example: `/proc/self/environ` separates its entries with them). The file is not parsed, and the finding says only what kind of byte was found where, never what the file holds, so findings cannot echo a secret or a binary.

```mailflow
include \"logo.png\"
```

Name the rule or CSV file that was meant; save text files as UTF-8.";

    /// A name is used but never defined.
    E010 = "undefined-name", "a name is used but never defined",
"A rule, test or group refers to a connector, recipient or rule by a name that no definition has. Names are compared exactly (case included).

```mailflow
rule \"From the cloud\" {
  if connector \"From EOP\"     # but the connector is called \"From Office 365\"
  stop
}
```

Use the name exactly as it is defined, or define it.";

    /// Two definitions of the same kind share a name.
    E011 = "duplicate-name", "two definitions share a name",
"Two connectors, rules, recipients, rewrite entries or tests of the same kind have the same name, so a reference to it (or a line in the trace and the tracking log) would be ambiguous. Two `dkim-key` blocks with the same domain and selector are the same DNS name (`SELECTOR._domainkey.DOMAIN`), which publishes one key only.

```mailflow
rule \"Drop outside mail\" { delete }
rule \"Drop outside mail\" { stop }
```

Rename one of them.";

    /// An address is not a valid email address.
    E012 = "invalid-address", "this is not a valid email address",
"An address must be `local@domain`: a local part of at most 64 characters without spaces, `@` or source routes (`%`, `!`), and a domain name (no address literal). Route syntax is refused because it is how open relays are abused.

```mailflow
rewrite john%tenant1.example.com@relay.example.com -> john@example.com
```

Write the plain address.";

    /// A domain name is not valid.
    E013 = "invalid-domain", "this is not a valid domain name",
"A domain must be a host name: labels of letters, digits and hyphens (or UTF-8), separated by dots, each at most 63 characters, at most 255 in all. A leading `*.` is allowed only where wildcards are.

```mailflow
accepted-domain example..com
```

Fix the name.";

    /// A value is out of range or of the wrong kind for its setting.
    E014 = "invalid-value", "a value is not valid for this setting",
"A setting was given a value it cannot take: a word that is not one of its choices, a size or duration with an unknown unit, a number out of range, or the wrong number of values.

```mailflow
receive-connector \"From EOP\" {
  tls mandatory        # one of: off, optional, required
}
```

The help lists the accepted values.";

    /// A block contains a setting it does not know.
    E015 = "unknown-setting", "this block has no such setting",
"A connector, recipient or test block contains a setting name it does not have. Often a typo: the help suggests the closest name.

```mailflow
send-connector \"To Internet\" {
  adress-space *
}
```

Use one of the settings listed in docs/language.md for that block.";

    /// A setting that may appear once appears twice.
    E016 = "duplicate-setting", "this setting is given more than once",
"A setting that takes one value is written twice in the same block, so it is unclear which one counts. (Settings that take lists may be repeated; their values are joined.)

```mailflow
receive-connector \"From EOP\" {
  tls required
  tls optional
}
```

Keep one.";

    /// A required setting is missing.
    E017 = "missing-setting", "a required setting is missing",
"A block lacks a setting it cannot work without: a send connector without an `address-space`, a contact without `external`, a recipient without `address`, a test without `from` or `to`, a `dkim-key` without `selector` or `key`, an `authentication` block with `srs-domain` but no `srs-secret` (or the other way round).

```mailflow
contact \"Officers\" {
  address officers@example.org
}
```

Add the setting (here `external officers@example.mail.onmicrosoft.com`).";

    /// A wildcard rewrite entry is not outbound-only.
    E020 = "wildcard-rewrite-not-outbound-only", "a wildcard rewrite entry must be outbound-only",
"An entry whose internal side is `*.domain` rewrites many subdomains to one external domain. Inbound, mailflow could not know which subdomain to restore, so Exchange (and mailflow) require such entries to be outbound-only.

```mailflow
rewrite *.contoso.com -> contoso.com
```

Add `outbound-only`:

```mailflow
rewrite *.contoso.com -> contoso.com outbound-only
```";

    /// The external side of a rewrite entry is a wildcard.
    E021 = "wildcard-in-external-address", "the external address of a rewrite entry cannot be a wildcard",
"The external side says exactly what the outside world sees, so it must be one address or one domain.

```mailflow
rewrite *.contoso.com -> *.fabrikam.com outbound-only
```

Name the one external domain: `-> fabrikam.com`.";

    /// A wildcard is not of the form `*.domain`.
    E022 = "malformed-wildcard", "a wildcard must have the form `*.domain`",
"Only a leading `*.` followed by a domain is a wildcard. `*contoso.com` (no dot) and `sales.*.com` (a star in the middle) are refused, as Exchange refuses them.

```mailflow
rewrite *contoso.com -> contoso.com outbound-only
```

Write `*.contoso.com`.";

    /// One side of a rewrite entry is an address and the other a domain.
    E023 = "rewrite-kind-mismatch", "both sides of a rewrite entry must be addresses, or both domains",
"A rewrite entry maps an address to an address, or a domain (or wildcard) to a domain. Mixing them leaves the local part undefined on one side.

```mailflow
rewrite john@tenant1.example.com -> example.com
```

Write the full external address: `-> john@example.com`.";

    /// Exceptions are given for an entry that is not a wildcard, or lie outside it.
    E024 = "invalid-rewrite-exception", "exceptions must be subdomains of a wildcard entry",
"`except` lists subdomains that a wildcard entry leaves alone, so it only makes sense on a `*.domain` entry, and each exception must be that domain or one of its subdomains.

```mailflow
rewrite sales.contoso.com -> contoso.com except legal.contoso.com
```

Remove the exceptions, or make the entry a wildcard.";

    /// A remote IP range does not parse.
    E030 = "invalid-ip-range", "this is not a valid ip address or range",
"Remote ranges are a single address (`192.0.2.7`, `2001:db8::7`), a CIDR block (`192.0.2.0/24`, `2001:db8::/32`) or a range `first-last` with the first not above the last, both of the same family.

```mailflow
receive-connector \"Partners\" {
  remote 192.0.2.50-192.0.2.10
}
```

Swap the ends, or write a CIDR block.";

    /// The remote ranges of two receive connectors on the same binding overlap without one containing the other.
    E031 = "overlapping-ranges", "remote ranges of two connectors overlap without nesting",
"When a client connects, the receive connector whose remote range matches most specifically wins. That is only well-defined when ranges that overlap are nested (one inside the other), as Exchange requires. Partly overlapping ranges leave some clients with two equally specific connectors.

```mailflow
receive-connector \"A\" { remote 10.0.0.0-10.0.0.200 }
receive-connector \"B\" { remote 10.0.0.100-10.0.0.255 }
```

Split the ranges so they are disjoint, or nest one inside the other.";

    /// A listen address does not parse.
    E032 = "invalid-listen-address", "this is not an address and port to listen on",
"`listen` takes `ip:port` (`0.0.0.0:25`, `[::]:25`, `127.0.0.1:2525`).

```mailflow
receive-connector \"Internet\" {
  listen 0.0.0.0
}
```

Add the port: `0.0.0.0:25`.";

    /// A certificate or key file cannot be read or holds no PEM object of the right kind.
    E033 = "unreadable-certificate", "a certificate or key file cannot be used",
"A `certificate` must be a PEM file with at least one `CERTIFICATE`, and a `key` a PEM file with a private key. A `dkim-key`'s `key` file must be readable too (what it must hold is E080). The path is resolved from the folder of the rule file.

```mailflow
receive-connector \"From EOP\" {
  tls required
  certificate \"certs/edge.pem\"   # missing, or a DER file
  key \"certs/edge.key\"
}
```

Point at the PEM files the relay will use.";

    /// TLS is enabled without a certificate, or a certificate without a key.
    E034 = "tls-without-certificate", "tls needs both a certificate and a key",
"A receive connector that offers or requires STARTTLS needs a server certificate and its private key; a send connector that presents a client certificate needs both too.

```mailflow
receive-connector \"From EOP\" {
  tls required
}
```

Add `certificate \"...\"` and `key \"...\"`.";

    /// Tenant attribution is trusted on a connector without TLS.
    E035 = "oorg-without-tls", "originating-organization trust needs tls",
"`accept-oorg` trusts the XOORG parameter only from peers whose TLS certificate names one of the listed domains. Without TLS there is no certificate, so nothing could ever be trusted: the setting is surely a mistake.

```mailflow
receive-connector \"From EOP\" {
  tls off
  accept-oorg mail.protection.outlook.com
}
```

Set `tls required` (or `optional`) with a certificate and key.";

    /// A send connector's expected certificate name is set without required TLS.
    E036 = "tls-name-without-required-tls", "an expected certificate name needs `tls required`",
"`tls-name` says which certificate name the next hop must present. With opportunistic TLS a downgrade to plain text would skip that check silently, so mailflow insists on `tls required`.

```mailflow
send-connector \"To Tenant\" {
  address-space tenant1.example.com
  tls opportunistic
  tls-name mail.protection.outlook.com
}
```

Set `tls required`.";

    /// Two transport rules have the same priority.
    E040 = "duplicate-priority", "two transport rules have the same priority",
"Rules run in priority order, 0 first, and each priority belongs to one rule, as in Exchange. Two rules with the same priority have no defined order.

```mailflow
rule \"Allow inside\" { priority 0; stop }
rule \"Drop outside\" { priority 0; delete }
```

Give each rule its own priority (rules without `priority` run after all numbered ones, in file order).";

    /// A pattern is not a valid regular expression or is too large.
    E041 = "invalid-pattern", "this pattern is not a valid regular expression",
"`matches` takes regular expressions in the syntax of Rust's `regex` crate (no look-around or back-references, so matching time is linear). The pattern does not compile, or compiles to more than the size limit (512 KiB for each of its forward and reverse programs; the limits on all patterns together are E045).

```mailflow
rule \"Invoices\" {
  if subject matches \"(unclosed\"
  reject
}
```

Fix the pattern; the message quotes the compiler's reason.";

    /// A reject action has an invalid status code.
    E042 = "invalid-status-code", "this is not a valid smtp rejection code",
"`reject` takes an SMTP code `4xx` or `5xx`, an enhanced status code `class.subject.detail` whose class matches (4 with 4xx, 5 with 5xx), and a text without line breaks. The defaults are `550 5.7.1 \"Delivery not authorized, message refused\"`.

```mailflow
rule \"Refuse\" {
  reject 250 2.0.0 \"ok\"
}
```

Use a 4xx or 5xx code.";

    /// A header name or value cannot be written safely.
    E043 = "invalid-header", "this header name or value cannot be written safely",
"Header names are printable ASCII without spaces or colons (RFC 5322). Values must not contain CR or LF, so a rule can never inject a header of its own. Rules may not set or remove the headers mailflow itself relies on (Received, Return-Path, Message-ID).

```mailflow
rule \"Tag\" {
  set-header \"X Tag\" \"yes\"
}
```

Write `X-Tag`.";

    /// A rule has no action.
    E044 = "rule-without-action", "a transport rule has no action",
"A rule that matches but does nothing is a mistake (if you want to watch what a rule would do, give it an action and `mode audit`).

```mailflow
rule \"Outside\" {
  if sender outside
}
```

Add an action.";

    /// A word, a pattern, or all of them together exceed mailflow's limits.
    E045 = "rule-set-too-large", "a word, pattern or rule set is larger than the limits",
"Every `contains` word of every rule is held in one Aho-Corasick automaton, and every `matches` pattern is compiled and kept, for as long as the rule set is in use. So that a rule set that passes `check` can always be compiled without exhausting memory, `check` holds it to these limits:

| what | limit |
|---|---|
| one `contains` or `contains-words` word, or one `matches` pattern | 1,000 characters |
| `contains` and `contains-words` words in the rule set | 200,000 (each time one is written) |
| distinct `contains` words in the rule set, added up | 4 MiB |
| `matches` patterns in the rule set | 20,000 |
| the compiled (forward) programs of all `matches` patterns | 32 MiB |

(One pattern's compiled size has its own limit of 512 KiB, reported as E041.) At 4 MiB of words the automaton takes about 80 MB and a few seconds to build.

```mailflow
rule \"Known spammers\" {
  if sender contains \"spam1.example\", \"spam2.example\"   # ... and 250,000 more
  delete
}
```

Match on what the words share (a domain rather than every address in it), use ASCII classes such as `[a-z0-9]` rather than `\\w` (which compiles to all of Unicode) in patterns, or split the rules between relays.";

    /// An address is claimed by two recipients.
    E050 = "duplicate-address", "two recipients claim the same address",
"Every address resolves to exactly one recipient. Two recipients (contacts, groups, mail users) list the same address, so mail to it would have two destinations.

```mailflow
contact \"Officers\" { address officers@example.org; external officers@cloud.example }
group \"Officers group\" { address officers@example.org; members \"Officers\" }
```

Keep the address on one recipient.";

    /// A test's expectation or envelope is inconsistent.
    E060 = "invalid-test", "a test block cannot be run as written",
"A test gives both `connector` and `client-ip` that disagree, names a `tls-peer` without a connector that uses TLS, or expects something of a recipient the envelope does not contain.

```mailflow
test \"x\" {
  from a@example.com
  to b@example.com
  expect rejected 550 5.1.1 for c@example.com   # c is not a recipient
}
```

Fix the envelope or the expectation.";

    /// A cmdlet `mailflow import exchange` cannot translate.
    E070 = "unsupported-cmdlet", "this cmdlet cannot be imported",
"`mailflow import exchange` translates the cmdlets that configure an Edge Transport server's mail flow: accepted domains, receive and send connectors, address rewrite entries, transport rules, mail contacts, mail users and distribution groups (see docs/import.md). Other cmdlets, such as Exchange Online's `Set-UnifiedGroup` or the MSOnline `Remove-MsolUser`, change things mailflow does not hold, so the command is not imported.

```powershell
Set-UnifiedGroup Officers -EmailAddresses:@{add=officers@domain.mail.onmicrosoft.com}
```

Leave the command where it runs (Exchange Online), or write what it means in mailflow by hand.";

    /// A parameter `mailflow import exchange` does not know for this cmdlet.
    E071 = "unknown-parameter", "this cmdlet has no such parameter that mailflow can import",
"The parameter is not one of the cmdlet's (PowerShell would refuse the whole command too), or it is one mailflow cannot translate. Parameter names may be shortened as PowerShell allows, as long as only one parameter starts that way. The whole command is left out of the rule set.

```powershell
New-MailContact -Name Officers -ExternalEmailAddress officers@cloud.example -OrganizatisonalUnit Contacts
```

Fix the spelling (`-OrganizationalUnit`), or remove the parameter.";

    /// A parameter value without a mailflow equivalent.
    E072 = "unsupported-value", "a parameter's value has no mailflow equivalent",
"The parameter is known, but this value asks for something mailflow does not do, such as `AcceptCloudServicesMail` in `-TlsDomainCapabilities` or `-Usage Client` (SMTP AUTH). Importing the rest would change what the object does, so the command is left out.

```powershell
Set-ReceiveConnector Hybrid -TlsDomainCapabilities mail.protection.outlook.com:AcceptCloudServicesMail
```

Remove the value, or write the nearest mailflow setting by hand (the help of the finding names it).";

    /// A placeholder or a variable without a value.
    E073 = "unresolved-placeholder", "a placeholder or variable has no value",
"The command holds template text from documentation (`[EOP remote Ranges]`, `<ServerName>`), a variable that is never assigned, or the result of a command mailflow does not run (`$cert.Subject`). The importer cannot guess the value.

```powershell
New-ReceiveConnector -Name \"From EOP\" -RemoteIPRanges [EOP remote Ranges] -Bindings 0.0.0.0:25
```

Write the real value into the command, here the Exchange Online Protection ranges: `-RemoteIPRanges 40.92.0.0/15, 40.107.0.0/16, 52.100.0.0/14, 104.47.0.0/17`.";

    /// A command changes an object no earlier command created.
    E074 = "unknown-identity", "the object a command changes is not created earlier in the file",
"`Set-`, `Add-` and `Remove-` commands change an object by its identity (name, alias, display name or address). The importer knows only the objects created earlier in the same file, so it cannot tell what the command changes: the object is missing, misspelt, or its `New-` command was not imported.

```powershell
New-MailContact -Name Officers-Contact -ExternalEmailAddress officers@cloud.example -PrimarySmtpAddress officers-contact@example.org
Set-MailContact Oficers-Contact -HiddenFromAddressListsEnabled $true
```

Spell the identity as the object was created, or put the command that creates it first.";

    /// A required parameter is missing.
    E075 = "missing-parameter", "a parameter mailflow needs is missing",
"The command leaves out a value that Exchange would fill in from its directory (an email address policy, the server's defaults) or that the cmdlet requires, so the importer cannot know it.

```powershell
Enable-MailUser BlogTest -ExternalEmailAddress user@microsoft.com
```

Give it in the command: `-PrimarySmtpAddress BlogTest@domain.com`.";

    /// A line that is not a PowerShell command.
    E076 = "powershell-syntax", "a line cannot be read as a powershell command",
"The importer reads command lines (with or without a `PS C:\\>` prompt): a cmdlet name, then its parameters and values. The line is output pasted with the commands, has an unclosed quote or bracket, a list that ends with a comma, or a parameter given twice.

```powershell
New-TransportRule -Name \"Drop external mail -FromScope NotInOrganization
```

Close the quote; keep output and prose out of the file, or in `#` comments.";

    /// TLS was asked for but no certificate files were given to the importer.
    E077 = "certificate-not-given", "tls needs a certificate the importer was not given",
"Exchange keeps the SMTP certificate in the machine's certificate store; mailflow reads a PEM certificate and key from files. A connector that offers or requires TLS (`-RequireTLS $true`, `-AuthMechanism Tls`, `-TlsDomainCapabilities`, `-TlsCertificateName`) cannot be imported without them.

```powershell
Set-ReceiveConnector \"From EOP\" -RequireTls:$true
```

Export the certificate (`Export-ExchangeCertificate`, then convert it to PEM) and run `mailflow import exchange FILE.ps1 --certificate edge.pem --key edge.key`.";

    /// `check` refuses what a command was translated to.
    E078 = "translation-refused", "check refuses what a command was translated to",
"The command was translated, but the result does not pass `mailflow check`: an address that is not valid, a range that overlaps another connector's, two recipients with the same address. The finding quotes what `check` said; the command is left out, so the imported rule set still passes.

```powershell
New-MailContact -Name A -ExternalEmailAddress a@cloud.example -PrimarySmtpAddress officers@example.org
New-DistributionGroup -Name B -PrimarySmtpAddress officers@example.org
```

Fix the command, or import it and fix the rule set by hand.";

    /// A `dkim-key` file is readable but not a key DKIM can sign with.
    E080 = "unusable-dkim-key", "a dkim-key file is not a private key dkim can sign with",
"The relay signs with RSA (rsa-sha256, at least 1024 bits) or Ed25519 (ed25519-sha256) private keys in PEM: `-----BEGIN PRIVATE KEY-----` (PKCS#8) or `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1). A public key, a certificate, an EC key or an encrypted key cannot sign. The label says what the file holds instead.

```mailflow
dkim-key \"example.com\" {
  selector mf2026
  key \"keys/mf2026.example.com.pub\"   # the public half
}
```

Make a key with `mailflow dkim keygen example.com mf2026`, which also prints the DNS record to publish.";

    /// A DKIM selector is not a DNS name.
    E081 = "invalid-dkim-selector", "this is not a valid dkim selector",
"A selector names the DNS record `SELECTOR._domainkey.DOMAIN` that publishes the public key, so it must be DNS labels: ASCII letters, digits and hyphens, separated by dots (RFC 6376 3.1).

```mailflow
dkim-key \"example.com\" {
  selector \"mf 2026\"
  key \"keys/mf2026.pem\"
}
```

Write e.g. `selector mf2026`.";

    /// `arc-seal` names a domain without a signing key.
    E082 = "arc-seal-without-key", "the arc sealing domain has no dkim-key",
"`arc-seal DOMAIN` seals changed Internet mail with the `dkim-key` of that domain; with no key for it the relay could not seal at all.

```mailflow
authentication {
  authserv-id mx.example.com
  arc-seal example.com        # but no dkim-key \"example.com\"
}
```

Add `dkim-key \"example.com\" { selector NAME; key \"FILE.pem\" }`, or seal with a domain that has a key.";

    /// The SRS domain is not an accepted domain.
    E083 = "srs-domain-not-accepted", "the srs domain is not an accepted domain",
"Forwarded mail leaves with an envelope sender at `srs-domain`; bounces come back to that domain, and the relay reverses them only when it accepts mail for it. A domain that is not an accepted domain would send those bounces elsewhere, and the original senders would never learn their mail was refused.

```mailflow
accepted-domain example.com
authentication {
  srs-domain forward.example.net
  srs-secret \"a long random secret\"
}
```

Use an accepted domain (or a subdomain of a `*.` accepted domain), with its MX pointing at the relay.";

    /// A second `authentication` block.
    E084 = "duplicate-authentication", "the authentication block is given more than once",
"A rule set has one `authentication` block (in any of its files); with two it would be unclear which authserv-id, sealing domain and SRS secret count.

```mailflow
authentication { authserv-id mx.example.com }
authentication { arc-seal example.com }
```

Merge them into one block.";

    /// `for DOMAIN` after a method other than `dkim`.
    E085 = "auth-for-not-dkim", "only a dkim condition takes `for domain`",
"`if dkim pass for partner.example` holds when a signature of that domain (its `d=`) passed: a message may carry several signatures, each with its own domain. SPF, DMARC and ARC have one result per message, about a domain the condition cannot choose (the envelope sender's, the From domain, the sealers'), so `for` has nothing to select.

```mailflow
rule \"Partner DMARC\" {
  if dmarc pass for partner.example
  stop
}
```

Test the domain separately: `if dmarc pass` together with `if sender domain-is partner.example`.";

    /// A rewrite entry is shadowed by another.
    W001 = "rewrite-shadowed", "a rewrite entry never applies because another covers it",
"An entry applies only when no closer entry matches (address before domain before wildcard). This entry is identical to another, or a wildcard covers it with the same result, so it changes nothing.

```mailflow
rewrite *.contoso.com -> contoso.com outbound-only
rewrite sales.contoso.com -> contoso.com outbound-only   # already covered
```

Remove the redundant entry.";

    /// Two rewrite entries disagree.
    W002 = "rewrite-conflict", "two rewrite entries disagree",
"Two entries rewrite the same internal address or domain to different external ones (only one can win), or two bidirectional entries rewrite different internal addresses to the same external one, so inbound mail to that external address cannot be sent back to both.

```mailflow
rewrite john@tenant1.example.com -> john@example.com
rewrite john@tenant2.example.com -> john@example.com
```

Make one of them `outbound-only`, or give them different external addresses.";

    /// The result of one rewrite is rewritten again by another entry.
    W003 = "rewrite-chain", "a rewrite entry's result is rewritten by another entry",
"mailflow rewrites an address once (as Exchange does), so an entry whose external side is the internal side of another never continues to the second: the chain probably does not do what was meant.

```mailflow
rewrite tenant1.example.com -> example.com
rewrite example.com -> example.net
```

Rewrite straight to the final address or domain.";

    /// Rewrite entries form a loop.
    W004 = "rewrite-loop", "rewrite entries form a loop",
"Following the entries from internal to external leads back to where it started, so outbound and inbound rewriting undo each other and the final address depends on direction only.

```mailflow
rewrite a.example.com -> b.example.com
rewrite b.example.com -> a.example.com
```

Remove one of the entries.";

    /// A rule can never run because an earlier rule always stops processing.
    W010 = "rule-unreachable", "this rule can never run",
"A rule of higher priority has no conditions and no exceptions and stops processing (with `stop`, `delete`, `reject`, `quarantine` or `disconnect`), so every rule after it is dead.

```mailflow
rule \"Drop\" { priority 0; delete }
rule \"Tag\"  { priority 1; prepend-subject \"[ext] \" }
```

Give the earlier rule a condition, or move it to the end.";

    /// A rule's conditions can never all be true.
    W011 = "rule-never-matches", "this rule's conditions can never all be true",
"Conditions are ANDed, so two that exclude each other (`sender inside` and `sender outside`, two different arrival connectors) make the rule dead; and an exception identical to a condition cancels every match.

```mailflow
rule \"x\" {
  if sender inside
  if sender outside
  delete
}
```

Remove one condition, or split the rule.";

    /// A rule deletes all mail.
    W012 = "delete-without-condition", "this rule deletes every message",
"A rule with no condition matches every message; with `delete` it silently drops all mail that reaches it. That is sometimes meant (as the last of a chain of `stop` rules, seed 002), so this is a warning: check that the rules before it stop everything that must pass.

```mailflow
rule \"Drop\" { delete }
```

Add a condition such as `if sender outside`.";

    /// A `contains` word is a bare domain, which look-alike addresses also contain.
    W013 = "contains-bare-domain", "a domain tested with `contains` also matches look-alike addresses",
"`contains` and `contains-words` look for text anywhere in the address, so a domain matches addresses that are not in it: `victim@myexchlab.com.evil.example`, `myexchlab.com@evil.example` and `\"myexchlab.com\"@evil.example` all contain `myexchlab.com`, as whole words too. A rule that lets mail through because of such a word (seed 002's `-AnyOfRecipientAddressContains`) lets those through as well.

```mailflow
rule \"Inside\" {
  if recipient contains \"myexchlab.com\"
  stop
}
```

Use `domain-is`, which compares the address's domain and matches the domain and its subdomains only: `if recipient domain-is myexchlab.com`.";

    /// A receive connector is an open relay.
    W020 = "open-relay", "this receive connector relays for anyone",
"The connector accepts mail for any recipient (`accept-any-recipient`, or `auth externally-secured`) but does not restrict which clients may connect (`remote` is missing or covers the whole internet) or does not require TLS. Anyone who can reach it can send mail anywhere through you: the worst misconfiguration an edge relay can have.

```mailflow
receive-connector \"Relay\" {
  accept-any-recipient
}
```

Restrict `remote` to your senders' ranges and set `tls required`.";

    /// A connector open to the whole internet requires TLS.
    W021 = "public-connector-requires-tls", "a connector for the whole internet requires tls",
"RFC 3207 says a publicly referenced MX must not require STARTTLS: senders that cannot do TLS would be refused. Require TLS only on connectors restricted to known peers.

```mailflow
receive-connector \"Internet\" {
  remote 0.0.0.0/0
  tls required
}
```

Use `tls optional` here, and a separate connector with a `remote` restriction for peers that must use TLS.";

    /// A receive connector relays for senders outside the organization.
    W022 = "outside-relay", "this receive connector relays for senders outside the organization",
"`accept-any-recipient` lets every client the connector accepts relay to any domain, whether or not the sender is inside the organization: Exchange's Accept-Any-Recipient permission granted to anonymous clients. Behind a shared service such as Exchange Online Protection, every customer of that service is such a client. Senders inside the organization relay without it: on an `externally-secured` connector, and where the connector has `accept-oorg`, when a trusted XOORG names one of the organization's accepted domains.

```mailflow
receive-connector \"From EOP\" {
  remote 40.92.0.0/15, 40.107.0.0/16
  tls required
  auth externally-secured
  accept-oorg mail.protection.outlook.com
  accept-any-recipient
}
```

Remove `accept-any-recipient`. Keep it only on a connector that must relay for senders that cannot be inside (an old application server, say), restricted with `remote` to those hosts.";

    /// `verify-recipients` on a domain that is not internal-relay.
    W023 = "verify-recipients-ignored", "`verify-recipients` has no effect on this accepted domain",
"`verify-recipients` makes the relay ask the next hop whether it takes a recipient that no object in the rule set knows, before answering RCPT TO: for an internal-relay domain, whose unknown recipients are otherwise accepted and bounced later to a sender who may be forged (backscatter). An authoritative domain already refuses unknown recipients with 550 5.1.1, and the recipients of an external-relay domain are outside the organization, where a probe would go to someone else's servers: the relay ignores the keyword there.

```mailflow
accepted-domain example.com verify-recipients
```

Remove `verify-recipients`, or make the domain `internal-relay` if its recipients live on a server of the organization that the relay forwards to.";

    /// `verify-recipients` on a domain no send connector covers.
    W024 = "verify-recipients-without-route", "no send connector covers a domain that verifies recipients",
"`verify-recipients` asks the send connector that carries a domain's mail whether it takes a recipient. No send connector's address space covers this domain, so there is no next hop to ask, and every recipient of it is refused with 550 5.4.4 anyway.

```mailflow
accepted-domain tenant.example internal-relay verify-recipients

send-connector \"Internet\" {
  address-space example.org
}
```

Add the domain to the address space of the send connector that reaches its mailboxes (`address-space tenant.example`, or `address-space --` for every accepted domain).";

    /// A deleted recipient's external address is still claimed by another object.
    W030 = "deleted-recipient-shadow", "a deleted recipient's external address is still claimed",
"Seed 001: a mail user was deleted, but its soft-deleted shadow still claimed its external address, so mail typed to that address bounced with 550 5.1.1. mailflow never lets a tombstone claim an address, but here another live object lists the tombstone's external address, so mail to it will not go where the deleted user's mail went.

```mailflow
deleted mail-user \"Blog Test\" { address blogtest@example.com; external user@partner.example }
contact \"Old alias\" { address user@partner.example; external other@partner.example }
```

Remove the address from the other object, or purge the tombstone.";

    /// A group contains itself.
    W031 = "group-contains-itself", "a group contains itself",
"A group is a member of itself, directly or through nested groups. mailflow expands each group once, so mail is not looped, but the membership is certainly not what was meant.

```mailflow
group \"A\" { address a@example.com; members \"B\" }
group \"B\" { address b@example.com; members \"A\" }
```

Remove the cycle.";

    /// A recipient's address is in no accepted domain.
    W032 = "recipient-outside-accepted-domains", "a recipient's address is in no accepted domain",
"mailflow only resolves recipients of accepted domains; a recipient whose address is in no accepted domain is never looked up, so mail to it is routed as external mail instead.

```mailflow
accepted-domain example.com
contact \"Officers\" { address officers@example.org; external officers@cloud.example }
```

Add `accepted-domain example.org`, or fix the address.";

    /// A command that only reads configuration.
    W040 = "read-only-command", "this command only reads configuration; there is nothing to import",
"`Get-` cmdlets, `Format-List` (`fl`) and values shown on their own (`$group.EmailAddresses`) change nothing, so they translate to nothing. A `Get-` command that feeds a `Set-` command through a pipeline names the object to change and is not reported.

```powershell
Get-ReceiveConnector | fl Name, TlsDomainCapabilities
```

Nothing to do; remove the line to silence the warning.";

    /// A parameter that changes nothing mailflow models.
    W041 = "parameter-without-effect", "a parameter has no equivalent in mailflow and is left out",
"The parameter does something in Exchange that mailflow does not model, and leaving it out does not weaken the rest: SMTP AUTH permission groups (`ExchangeUsers`), protocol logging, banners. The finding's help says what mailflow does instead.

```powershell
New-ReceiveConnector -Name Internet -PermissionGroups AnonymousUsers, ExchangeUsers -Bindings 0.0.0.0:25
```

Nothing to do if that is acceptable; otherwise configure the behaviour outside mailflow.";

    /// A command was continued on the next line without a backtick.
    W042 = "command-wrapped", "a command continues on the next line without a backtick",
"A blog or terminal wrapped a long command, so the next line starts with a value or parameter of the line above. PowerShell would run the first line alone; the importer joins them, as was meant.

```powershell
New-DistributionGroup -Name Officers -PrimarySmtpAddress
\"officers@domain.org\"
```

Join the lines, or end the first with a backtick (`).";

    /// A relay permission for anonymous clients is not imported.
    W043 = "anonymous-relay-not-imported", "relay permission for anonymous clients is left out",
"`Add-ADPermission -User 'NT AUTHORITY\\Anonymous Logon' -ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient` lets anonymous clients relay. On a connector that also trusts XOORG (`-TlsDomainCapabilities ...:AcceptOorgProtocol` with `ExternalAuthoritative`), the anonymous clients are the shared service's other customers; the organization's own tenants relay as internal without the permission. The importer leaves it out rather than open the relay to every tenant of the service.

```powershell
Get-ReceiveConnector \"From EOP\" | Add-ADPermission -User 'NT AUTHORITY\\Anonymous Logon' -ExtendedRights MS-Exch-SMTP-Accept-Any-Recipient
```

Nothing to do if only your tenants relay through the connector. If outside senders must relay too, add `accept-any-recipient` to the connector yourself (`check` warns with W022).";

    /// An invisible or bidirectional control character.
    W050 = "invisible-character", "an invisible or bidirectional control character",
"The text holds a character that shows as nothing, or that reorders the text around it when displayed (the \"Trojan Source\" characters): bidirectional embeddings, overrides and isolates (U+202A to U+202E, U+2066 to U+2069), zero-width spaces and joiners and direction marks (U+200B to U+200F), the line and paragraph separators U+2028 and U+2029, the soft hyphen U+00AD, the word joiner U+2060, a form feed U+000C (which some terminals show as a line break) and a byte order mark U+FEFF anywhere but at the very start of the file. A name or an address holding one looks like another and matches something else than it seems; in a comment it can make the rule below read differently in a review than it runs. rustc warns about the same characters.

```text
rule \"Block<U+200B>\" { delete }   # not the rule named \"Block\"
```

Delete the character (an editor that shows invisible characters, or `grep -P '[\\x{200b}-\\x{200f}\\x{202a}-\\x{202e}\\x{2066}-\\x{2069}]'`, finds it). A byte order mark at the start of a file is accepted; `mailflow fmt` drops it.";

    /// A short SRS secret.
    W060 = "short-srs-secret", "an srs secret is shorter than 16 characters",
"The SRS secret keys the hash that proves an SRS address was made here. Anyone holding one SRS address can try secrets offline; a short one is found quickly, and then anyone can make SRS addresses the relay accepts and reverses, an open relay for bounces.

```mailflow
authentication {
  srs-domain example.com
  srs-secret \"secret\"
}
```

Use a long random secret (`openssl rand -base64 32`). To rotate, list the new one first: `srs-secret \"new\", \"old\"`.";

    /// Outbound mail is rewritten to a domain no `dkim-key` signs for.
    W061 = "unsigned-rewrite", "mail rewritten to a domain without a dkim-key leaves unsigned",
"Rewriting `From` (seed 002: `John.Smith@tenant1.myexchlab.com` to `John.Smith@myexchlab.com`) breaks the signature the tenant made, and nothing signs for the new domain. A DMARC policy on it then rests on SPF alone, and large receivers refuse or junk unsigned bulk mail. Reported once per domain, at the first entry rewriting to it, when some send connector signs (`dkim-sign on`, the default).

```mailflow
dkim-key \"example.com\" { selector mf2026; key \"keys/mf2026.pem\" }
rewrite *.tenant1.myexchlab.com -> myexchlab.com outbound-only   # no key for myexchlab.com
```

Add `dkim-key \"myexchlab.com\" { selector NAME; key \"FILE.pem\" }`; `mailflow dkim keygen myexchlab.com NAME` makes the key and prints the DNS record to publish.";

    /// Internet mail is changed or forwarded without an ARC seal.
    W062 = "unsealed-change", "internet mail is rewritten or forwarded without an arc seal",
"Inbound rewriting changes `To` and `Cc`, which the original sender's DKIM signature covers, and a forward to an outside address fails SPF at the next hop. A receiver enforcing the sender's DMARC policy (Exchange Online honours `p=reject`) then rejects or quarantines legitimate mail. An ARC seal carries what this relay verified before the change to receivers that trust it. Reported, on a rule set with a receive connector for Internet mail (`auth anonymous`), once per rewritten domain and once per contact, group or rule that forwards outside, while the `authentication` block lacks `authserv-id` or `arc-seal` (both are needed to seal).

```mailflow
authentication { srs-domain myexchlab.com; srs-secret \"...\" }
receive-connector \"Internet\" { auth anonymous }
rewrite John.Smith@tenant1.myexchlab.com -> John.Smith@myexchlab.com
```

Add `authserv-id HOST` and `arc-seal DOMAIN` (a domain with a `dkim-key`), and list the sealer as trusted at the receiver (Exchange Online: `Set-ArcConfig -ArcTrustedSealers DOMAIN`).";

    /// Mail is forwarded outside without SRS.
    W063 = "forward-without-srs", "mail forwarded to an outside address keeps the sender's envelope address",
"A contact or mail user whose `external` address is outside the accepted domains, a group with outside members, or a rule that redirects or copies mail outside forwards mail with the outside sender's envelope address. The next hop checks SPF of the sender's domain against this relay's address and it fails; with a strict DMARC policy the message is refused, and bounces bypass this relay. Reported once per object, on a rule set that takes outside senders' mail (a receive connector with `auth anonymous`, or one with `accept-oorg`), while the `authentication` block has no `srs-domain`.

```mailflow
authentication { authserv-id mx.example.com }
contact \"Sales\" { address sales@example.com; external sales@partner.example }
```

Add `srs-domain DOMAIN` (an accepted domain) and `srs-secret \"...\"`: forwarded mail from outside senders then leaves with an SRS envelope sender at DOMAIN, and bounces to it come back and are passed on.";

    /// A test gives verification results for mail the relay never verifies.
    W064 = "test-auth-never-verified", "a test gives verification results the relay never finds for its message",
"The relay verifies only Internet mail: messages it takes as anonymous (on a receive connector with `auth anonymous`, or on an `externally-secured` one with `accept-oorg` when the XOORG does not vouch for one of our tenants), when the `authentication` block names an `authserv-id`. Every other message reads as `none` for SPF, DKIM, DMARC and ARC. A test whose `auth` setting says otherwise passes with results the relay never produces, so it proves a rule works where it never will.

```mailflow
receive-connector \"From EOP\" { remote 40.92.0.0/15; auth externally-secured }
test \"DMARC failures are refused\" {
  connector \"From EOP\"
  from a@fabrikam.com
  to b@example.com
  auth dmarc=fail
  expect rejected 550 5.7.1
}
```

Test through the connector Internet mail arrives on, add `authserv-id` to the `authentication` block, or remove `auth`.";

    /// Two tenant send connectors present the same client certificate.
    W070 = "shared-tenant-certificate", "two send connectors present one client certificate to different microsoft 365 tenants",
"Exchange Online attributes mail arriving on an OnPremises inbound connector to a tenant by the domain of the sender's certificate first, then by the envelope sender and recipient domains. Microsoft (message center MC1226222, 2026) requires a server that relays to several tenants to present a distinct client certificate to each; with one certificate, attribution becomes a guess that may stop working without notice.

A send connector is taken to deliver to a tenant when a smart host is under `mail.protection.outlook.com` (or `mail.protection.office365.us`, `mail.protection.partner.outlook.cn`), when its `tls-name` names one of those, or, without a smart host, when an address space is a routing domain under `mail.onmicrosoft.com`. Two such connectors reach one tenant only when they share a smart host. Two files holding the same certificate count as one certificate.

```mailflow
send-connector \"To Tenant1\" {
  address-space tenant1.example.com
  smart-host tenant1-example-com.mail.protection.outlook.com
  tls required
  certificate \"certs/edge.pem\"
  key \"certs/edge.key\"
}
send-connector \"To Tenant2\" {
  address-space tenant2.example.com
  smart-host tenant2-example-com.mail.protection.outlook.com
  tls required
  certificate \"certs/edge.pem\"    # the same certificate for another tenant
  key \"certs/edge.key\"
}
```

Give each tenant its own certificate, named for one of that tenant's domains (`edge.tenant1.example.com`, `edge.tenant2.example.com`), and set that name as the tenant's `TlsSenderCertificateName`. docs/authentication.md, \"Tenant certificates (MC1226222)\", has the steps.";

    /// A tenant send connector's client certificate is named for no domain of the tenant.
    W071 = "certificate-not-tenant-domain", "a tenant send connector's client certificate is not named for a domain of the tenant",
"Exchange Online accepts the certificate of an OnPremises inbound connector only when its subject alternative names (or, without any, its common name) name one of the tenant's accepted domains (message center MC1226222). `check` takes the tenant's domains to be the connector's address spaces, plus the accepted domains where the connector covers them (`address-space --` or `*`) or where it is the only tenant connector (in a hybrid organization every accepted domain is the one tenant's). A name under a tenant domain counts (`edge.contoso.com` for `contoso.com`), and so does a wildcard name (`*.contoso.com`).

```mailflow
send-connector \"To Tenant1\" {
  address-space tenant1.example.com
  smart-host tenant1-example-com.mail.protection.outlook.com
  tls required
  certificate \"certs/relay.example.net.pem\"   # names relay.example.net
  key \"certs/relay.example.net.key\"
}
```

Present a certificate named for a domain of the tenant (`edge.tenant1.example.com`), and set that name as the tenant's `TlsSenderCertificateName`.";

    /// A certificate expires within the warning window.
    W072 = "certificate-expires-soon", "a certificate expires within the warning window",
"A receive connector's server certificate or a send connector's client certificate expires within 30 days (`mailflow check --cert-expiry-days N` sets the window; `0` turns W072, W073 and W074 off). After that day senders that verify the relay's certificate refuse it, and an Exchange Online inbound connector no longer recognises the relay's client certificate. The finding is reported once per file, at its first use; the other connectors using it are labelled.

```mailflow
receive-connector \"Internet\" {
  tls optional
  certificate \"certs/edge.pem\"   # notAfter next week
  key \"certs/edge.key\"
}
```

Renew the certificate and reload the relay (`mailflow reload`). The relay exports every certificate's expiry as `mailflow_certificate_expiry_timestamp_seconds` on `/metrics`, to alert on before `check` runs again.";

    /// A certificate has expired.
    W073 = "certificate-expired", "a certificate has expired",
"A receive connector's server certificate or a send connector's client certificate is past its `notAfter`. Senders that verify certificates refuse the relay's TLS (and with `tls required` on their side, its mail), and next hops that expect the client certificate, such as an Exchange Online inbound connector, no longer recognise the relay.

```mailflow
send-connector \"To Office 365\" {
  smart-host contoso-com.mail.protection.outlook.com
  tls required
  certificate \"certs/relay.pem\"   # expired last month
  key \"certs/relay.key\"
}
```

Renew the certificate and reload the relay. `--cert-expiry-days 0` turns this check off, for a lab whose certificates are allowed to lapse.";

    /// A certificate is not valid yet.
    W074 = "certificate-not-yet-valid", "a certificate is not valid yet",
"A certificate's `notBefore` lies in the future: peers refuse it until then. It usually means the issuing machine's clock is wrong, or the certificate was deployed early.

```mailflow
receive-connector \"Internet\" {
  tls optional
  certificate \"certs/next-year.pem\"
  key \"certs/next-year.key\"
}
```

Keep the current certificate until the new one is valid, or have it issued again with a correct start date.";
}

/// The whole registry as Markdown: the text of `docs/diagnostics.md`.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Diagnostics\n\n<!-- Generated by `mailflow explain --markdown`; a test keeps this file in step with src/diagnostic/codes.rs. -->\n\nEvery finding of `mailflow check` has a stable code: `E0xx` errors stop a rule set from being used, `W0xx` warnings point at something that is probably not what was meant (`--deny-warnings` makes them fail the check too). `mailflow explain CODE` prints one entry.\n\n| code | name | summary |\n|---|---|---|\n",
    );
    for c in Code::ALL {
        let i = c.info();
        out.push_str(&format!(
            "| [{}](#{}) | `{}` | {} |\n",
            i.id,
            i.id.to_lowercase(),
            i.name,
            i.summary
        ));
    }
    for c in Code::ALL {
        let i = c.info();
        out.push_str(&format!(
            "\n## {}\n\n`{}`: {}\n\n{}\n",
            i.id, i.name, i.summary, i.explanation
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_well_formed() {
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        for code in Code::ALL {
            let info = code.info();
            assert!(ids.insert(info.id), "duplicate id {}", info.id);
            assert!(names.insert(info.name), "duplicate name {}", info.name);
            assert!(info.id.len() == 4 && (info.id.starts_with('E') || info.id.starts_with('W')));
            assert_eq!(
                info.summary,
                info.summary.to_lowercase().as_str(),
                "{}",
                info.id
            );
            assert!(!info.summary.ends_with('.'), "{}", info.id);
        }
    }
}
