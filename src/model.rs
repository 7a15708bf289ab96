//! The typed rule set: what `resolve` makes of the syntax tree once every value has been
//! checked. Each object keeps the spans of what it was built from, so `lint` (and later the
//! evaluator's trace) can point at the text.

use crate::smtp::Status;
use crate::source::Span;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A value with the span it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Wraps a value.
    pub fn new(value: T, span: Span) -> Self {
        Spanned { value, span }
    }
}

/// An email address. The domain is lowercased; the local part is kept as written and
/// compared without regard to ASCII case, as Exchange compares proxy addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Address {
    /// Before the `@`.
    pub local: String,
    /// After the `@`, lowercased.
    pub domain: String,
}

impl Address {
    /// The lookup key: the whole address in ASCII lowercase.
    pub fn key(&self) -> String {
        let mut k = String::with_capacity(self.local.len() + 1 + self.domain.len());
        k.push_str(&self.local);
        k.make_ascii_lowercase();
        k.push('@');
        k.push_str(&self.domain);
        k
    }
}

impl Address {
    /// A local part in one form for one mailbox (RFC 5321 §4.1.2: a quoted string and a
    /// dot-string with the same content name the same mailbox): a quoted string whose content
    /// is a dot-atom loses its quotes (`"John.Smith"` is `John.Smith`); one that needs them
    /// keeps them, with only `"` and `\` escaped (`"a\ b"` is `"a b"`). A local part that is
    /// not quoted is returned as it is.
    pub fn canonical_local(local: &str) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        let Some(inner) = local
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .filter(|_| local.len() >= 2)
        else {
            return Cow::Borrowed(local);
        };
        let mut content = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => content.extend(chars.next()),
                c => content.push(c),
            }
        }
        if is_dot_atom(&content) {
            return Cow::Owned(content);
        }
        let mut quoted = String::with_capacity(content.len() + 2);
        quoted.push('"');
        for c in content.chars() {
            if matches!(c, '"' | '\\') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        if quoted == local {
            Cow::Borrowed(local)
        } else {
            Cow::Owned(quoted)
        }
    }

    /// Whether this is the postmaster (RFC 5321 §4.5.1: `postmaster` in any case).
    pub fn is_postmaster(&self) -> bool {
        self.local.eq_ignore_ascii_case("postmaster")
    }

    /// Calls `f` with the lookup key, built in a reused buffer instead of a new string: the
    /// evaluator looks addresses up several times per message.
    pub fn with_key<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        thread_local! {
            static BUF: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
        }
        BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                buf.push_str(&self.local);
                buf.make_ascii_lowercase();
                buf.push('@');
                buf.push_str(&self.domain);
                f(&buf)
            }
            // Re-entered from inside `f`: fall back to a fresh string.
            Err(_) => f(&self.key()),
        })
    }
}

/// RFC 5322's dot-atom, with RFC 6531's UTF-8: atoms of atext separated by single dots.
fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom.chars().all(|c| {
                    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
                })
        })
}

impl PartialEq for Address {
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain && self.local.eq_ignore_ascii_case(&other.local)
    }
}

impl Eq for Address {}

impl std::hash::Hash for Address {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Piece by piece: `write!` with a format string goes through the padding machinery
        // for each part, and addresses are formatted on every message's path.
        f.write_str(&self.local)?;
        f.write_str("@")?;
        f.write_str(&self.domain)
    }
}

/// A domain, or every subdomain of one (`*.contoso.com`, which also covers `contoso.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DomainPattern {
    /// Exactly this domain (lowercase).
    Exact(String),
    /// This domain and all its subdomains (the part after `*.`).
    Wildcard(String),
}

impl DomainPattern {
    /// Whether `domain` (lowercase) is covered.
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::Wildcard(parent) => is_subdomain_or_same(domain, parent),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Wildcard(d) => write!(f, "*.{d}"),
        }
    }
}

/// `child` is `parent` or ends with `.parent`.
pub fn is_subdomain_or_same(child: &str, parent: &str) -> bool {
    child == parent
        || child
            .strip_suffix(parent)
            .is_some_and(|head| head.ends_with('.'))
}

/// An inclusive range of IP addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IpRange {
    /// First address.
    pub first: IpAddr,
    /// Last address.
    pub last: IpAddr,
}

impl IpRange {
    fn bounds(&self) -> (bool, u128, u128) {
        match (self.first, self.last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (true, u128::from(u32::from(a)), u128::from(u32::from(b)))
            }
            (a, b) => (false, ip_to_u128(a), ip_to_u128(b)),
        }
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (v4, lo, hi) = self.bounds();
        if v4 != ip.is_ipv4() {
            return false;
        }
        let x = ip_to_u128(ip);
        lo <= x && x <= hi
    }

    /// How many addresses it holds, minus one (smaller is more specific).
    pub fn width(&self) -> u128 {
        let (_, lo, hi) = self.bounds();
        hi - lo
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        let (f1, a, b) = self.bounds();
        let (f2, c, d) = other.bounds();
        f1 == f2 && a <= d && c <= b
    }

    /// Whether `other` lies within this range.
    pub fn covers(&self, other: &IpRange) -> bool {
        let (f1, a, b) = self.bounds();
        let (f2, c, d) = other.bounds();
        f1 == f2 && a <= c && d <= b
    }

    /// Whether it is all of IPv4 or all of IPv6.
    pub fn is_everything(&self) -> bool {
        let (v4, lo, hi) = self.bounds();
        lo == 0
            && if v4 {
                hi == u128::from(u32::MAX)
            } else {
                hi == u128::MAX
            }
    }
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl fmt::Display for IpRange {
    /// One address, a CIDR block when the range is one, else `first-last`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            return write!(f, "{}", self.first);
        }
        let (v4, lo, hi) = self.bounds();
        let bits: u32 = if v4 { 32 } else { 128 };
        let width = hi - lo;
        // A block: the width is 2^n - 1 and the start is aligned to it.
        if width & width.wrapping_add(1) == 0 && lo & width == 0 {
            let host_bits = 128 - width.leading_zeros();
            return write!(f, "{}/{}", self.first, bits.saturating_sub(host_bits));
        }
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The whole checked rule set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RuleSet {
    /// Accepted domains.
    pub accepted_domains: Vec<AcceptedDomain>,
    /// Receive connectors.
    pub receive_connectors: Vec<ReceiveConnector>,
    /// Send connectors.
    pub send_connectors: Vec<SendConnector>,
    /// Address rewrite entries, in definition order.
    pub rewrites: Vec<RewriteEntry>,
    /// Transport rules, in the order they run.
    pub rules: Vec<TransportRule>,
    /// Contacts, groups, mail users and tombstones.
    pub recipients: Vec<Recipient>,
    /// Test blocks.
    pub tests: Vec<TestCase>,
    /// DKIM signing keys (`dkim-key`), in definition order: a domain may have several (an
    /// RSA and an Ed25519 key, say), and each signs.
    pub dkim_keys: Vec<DkimKey>,
    /// The `authentication` block: verification, ARC sealing and SRS (at most one).
    pub authentication: Option<Authentication>,
}

/// `dkim-key "DOMAIN" { selector S; key "FILE" }`: a key the relay signs with for `DOMAIN`
/// (the `d=` tag) under `SELECTOR` (the `s=` tag). Checked to exist and parse at `check`;
/// read again by the relay at start and reload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DkimKey {
    /// The signing domain, lowercased.
    pub domain: Spanned<String>,
    /// The selector.
    pub selector: Spanned<String>,
    /// The private key file (PEM), relative paths resolved against the rule file's folder.
    pub key: Spanned<PathBuf>,
    /// The whole block.
    pub span: Span,
}

/// The `authentication` block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Authentication {
    /// The whole block.
    pub span: Span,
    /// The authserv-id of the `Authentication-Results` fields the relay adds (and the one
    /// whose forgeries from outside it removes). Absent: no inbound verification.
    pub authserv_id: Option<Spanned<String>>,
    /// `arc-seal DOMAIN`: seal changed Internet mail with the `dkim-key` of this domain.
    pub arc_seal: Option<Spanned<String>>,
    /// SRS for forwarded mail.
    pub srs: Option<SrsSettings>,
}

/// SRS settings (`srs-domain`, `srs-secret`, `srs-max-age`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SrsSettings {
    /// The domain of SRS addresses (an accepted domain of ours).
    pub domain: Spanned<String>,
    /// Secrets; the first makes new addresses, all are accepted (rotation).
    pub secrets: Vec<Spanned<String>>,
    /// Days an SRS0 address stays valid.
    pub max_age_days: u32,
}

/// How the relay treats an accepted domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainKind {
    /// Recipients are known here; unknown ones get 550 5.1.1.
    Authoritative,
    /// Some recipients live elsewhere in the organization; unknown ones are relayed.
    InternalRelay,
    /// Recipients live outside the organization; mail is relayed.
    ExternalRelay,
}

/// `accepted-domain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptedDomain {
    /// The domain or wildcard.
    pub domain: Spanned<DomainPattern>,
    /// Its type.
    pub kind: DomainKind,
    /// `verify-recipients`: the relay asks the next hop about a recipient no object here
    /// knows before it accepts it (internal-relay domains only; see `relay::verify`).
    pub verify_recipients: Option<Span>,
    /// The whole line.
    pub span: Span,
}

/// STARTTLS on a receive connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InboundTls {
    /// Not offered.
    Off,
    /// Offered.
    Optional,
    /// Required before MAIL.
    Required,
}

/// Who the connector's clients are taken to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthLevel {
    /// Anyone (AuthAs Anonymous).
    Anonymous,
    /// A partner (AuthAs Partner).
    Partner,
    /// Trusted by the network (ExternalAuthoritative: AuthAs Internal). On a connector with
    /// `accept-oorg`, only for a trusted XOORG naming one of the organization's domains.
    ExternallySecured,
}

impl AuthLevel {
    /// As written in a rule file.
    pub fn keyword(self) -> &'static str {
        match self {
            AuthLevel::Anonymous => "anonymous",
            AuthLevel::Partner => "partner",
            AuthLevel::ExternallySecured => "externally-secured",
        }
    }
}

/// Limits of a receive connector, with Exchange Edge's defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveLimits {
    /// Largest message in bytes.
    pub max_message_size: u64,
    /// Most recipients per message.
    pub max_recipients: u32,
    /// Most concurrent connections to this connector from one IP.
    pub max_connections_per_source: u32,
    /// Most concurrent connections to this connector.
    pub max_connections: u32,
    /// Longest a connection may last.
    pub connection_timeout: Duration,
    /// Longest a client may stay silent.
    pub inactivity_timeout: Duration,
    /// Largest header block in bytes.
    pub max_header_size: u64,
    /// Most Received headers before a loop is assumed.
    pub max_hop_count: u32,
}

impl Default for ReceiveLimits {
    fn default() -> Self {
        ReceiveLimits {
            max_message_size: 36 * 1024 * 1024,
            max_recipients: 200,
            max_connections_per_source: 20,
            max_connections: 5000,
            connection_timeout: Duration::from_secs(5 * 60),
            inactivity_timeout: Duration::from_secs(60),
            max_header_size: 256 * 1024,
            max_hop_count: 30,
        }
    }
}

/// `receive-connector`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiveConnector {
    /// The name.
    pub name: Spanned<String>,
    /// The whole block.
    pub span: Span,
    /// Addresses to listen on.
    pub listen: Vec<Spanned<SocketAddr>>,
    /// Clients it is for (empty: any client).
    pub remote: Vec<Spanned<IpRange>>,
    /// Name in the banner and EHLO.
    pub fqdn: Option<String>,
    /// STARTTLS.
    pub tls: Spanned<InboundTls>,
    /// Server certificate (PEM).
    pub certificate: Option<Spanned<PathBuf>>,
    /// Server key (PEM).
    pub key: Option<Spanned<PathBuf>>,
    /// TLS peer names whose XOORG is trusted.
    pub accept_oorg: Vec<Spanned<DomainPattern>>,
    /// Authentication level.
    pub auth: Spanned<AuthLevel>,
    /// May relay to any recipient.
    pub accept_any_recipient: Option<Span>,
    /// Limits.
    pub limits: ReceiveLimits,
}

/// What a send connector's address space matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressSpacePattern {
    /// `*`: every domain.
    All,
    /// A domain or `*.domain`.
    Domain(DomainPattern),
    /// `--`: the accepted domains.
    AcceptedDomains,
}

/// One address space with its cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddressSpace {
    /// What it matches.
    pub pattern: AddressSpacePattern,
    /// 1 (cheapest) to 100.
    pub cost: u8,
    /// Where it was written.
    pub span: Span,
}

/// TLS towards the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// Never.
    Off,
    /// When offered.
    Opportunistic,
    /// Always, or the delivery is deferred.
    Required,
}

/// A smart host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartHost {
    /// Host name or IP.
    pub host: String,
    /// Port (25 unless given).
    pub port: u16,
}

/// `send-connector`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendConnector {
    /// The name.
    pub name: Spanned<String>,
    /// The whole block.
    pub span: Span,
    /// Where it sends.
    pub address_spaces: Vec<AddressSpace>,
    /// Smart hosts (empty: MX lookup).
    pub smart_hosts: Vec<Spanned<SmartHost>>,
    /// TLS policy.
    pub tls: Spanned<OutboundTls>,
    /// Certificate name the next hop must present.
    pub tls_name: Option<Spanned<String>>,
    /// Client certificate to present (PEM).
    pub certificate: Option<Spanned<PathBuf>>,
    /// Client key (PEM).
    pub key: Option<Spanned<PathBuf>>,
    /// Name used in EHLO.
    pub fqdn: Option<String>,
    /// `dkim-sign on|off` (on by default): sign what goes out here with the `dkim-key` of the
    /// From domain, where there is one.
    pub dkim_sign: bool,
}

/// The internal side of a rewrite entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RewriteFrom {
    /// One address.
    Address(Address),
    /// One domain.
    Domain(String),
    /// A domain and all its subdomains.
    Wildcard(String),
}

/// The external side of a rewrite entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RewriteTo {
    /// One address.
    Address(Address),
    /// One domain.
    Domain(String),
}

impl fmt::Display for RewriteFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteFrom::Address(a) => write!(f, "{a}"),
            RewriteFrom::Domain(d) => f.write_str(d),
            RewriteFrom::Wildcard(d) => write!(f, "*.{d}"),
        }
    }
}

impl fmt::Display for RewriteTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteTo::Address(a) => write!(f, "{a}"),
            RewriteTo::Domain(d) => f.write_str(d),
        }
    }
}

/// `rewrite` (or a row of an imported CSV).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewriteEntry {
    /// The name, or the internal side when none was given.
    pub name: String,
    /// Whether a name was given.
    pub named: bool,
    /// Internal side.
    pub internal: Spanned<RewriteFrom>,
    /// External side.
    pub external: Spanned<RewriteTo>,
    /// Domains a wildcard leaves alone.
    pub exceptions: Vec<Spanned<String>>,
    /// Outbound only (wildcards always are).
    pub outbound_only: bool,
    /// The whole entry (or CSV row).
    pub span: Span,
}

/// Whether a rule acts or only records what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// Acts.
    Enforce,
    /// Logs only.
    Audit,
}

/// How text is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TextOp {
    /// Substring, ASCII case-insensitive.
    Contains,
    /// Whole words, case-insensitive.
    ContainsWords,
    /// Regular expression.
    Matches,
    /// The address's domain is one of these domains or a subdomain of one (addresses only).
    DomainIs,
}

impl TextOp {
    /// As written in a rule file.
    pub fn keyword(self) -> &'static str {
        match self {
            TextOp::Contains => "contains",
            TextOp::ContainsWords => "contains-words",
            TextOp::Matches => "matches",
            TextOp::DomainIs => "domain-is",
        }
    }
}

/// A text test with its values (ORed).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TextMatch {
    /// The comparison.
    pub op: TextOp,
    /// Words or patterns.
    pub values: Vec<String>,
}

/// Inside or outside the organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Authenticated and from an authoritative or internal-relay domain.
    Inside,
    /// Anything else (the safe default: nothing unauthenticated is trusted).
    #[default]
    Outside,
}

/// A rule condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Predicate {
    /// `sender inside|outside`.
    SenderScope(Scope),
    /// `recipient ...`: any recipient.
    RecipientAddress(TextMatch),
    /// `sender ...`.
    SenderAddress(TextMatch),
    /// `header NAME ...`.
    Header {
        /// Header name.
        name: String,
        /// Test.
        matcher: TextMatch,
    },
    /// `subject ...`.
    Subject(TextMatch),
    /// `size over N`.
    SizeOver(u64),
    /// `client-ip in ...`.
    ClientIp(Vec<IpRange>),
    /// `connector ...`.
    Connector(Vec<String>),
    /// `originating-org ...` (lowercase).
    OriginatingOrg(Vec<String>),
    /// `spf|dkim|dmarc|arc RESULT, ... [for DOMAIN, ...]`: a verification's result (the
    /// relay verifies Internet mail before rewriting); `domains` only for `dkim`: a
    /// signature of one of these `d=` domains with one of these results.
    Auth {
        /// Which verification.
        method: AuthMethod,
        /// Any of these results.
        results: Vec<AuthResult>,
        /// For `dkim ... for`: the signing domains (lowercase); empty: any signature.
        domains: Vec<String>,
    },
}

/// A mail authentication method a rule can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// SPF (RFC 7208) of the MAIL FROM domain (the HELO name for the null sender).
    Spf,
    /// DKIM (RFC 6376), per signature.
    Dkim,
    /// DMARC (RFC 7489) of the From domain.
    Dmarc,
    /// The ARC chain (RFC 8617) that arrived.
    Arc,
}

/// A verification result, in RFC 8601's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthResult {
    /// Verified.
    Pass,
    /// Verified false.
    Fail,
    /// SPF `~all`.
    Softfail,
    /// SPF `?all`.
    Neutral,
    /// Nothing to verify (no record, no signature), or not verified at all.
    None,
    /// A temporary error (DNS).
    Temperror,
    /// A permanent error (a broken record or signature).
    Permerror,
}

impl AuthMethod {
    /// As written in a rule and in `Authentication-Results`.
    pub fn keyword(self) -> &'static str {
        match self {
            AuthMethod::Spf => "spf",
            AuthMethod::Dkim => "dkim",
            AuthMethod::Dmarc => "dmarc",
            AuthMethod::Arc => "arc",
        }
    }
}

impl AuthResult {
    /// As written in a rule and in `Authentication-Results`.
    pub fn keyword(self) -> &'static str {
        match self {
            AuthResult::Pass => "pass",
            AuthResult::Fail => "fail",
            AuthResult::Softfail => "softfail",
            AuthResult::Neutral => "neutral",
            AuthResult::None => "none",
            AuthResult::Temperror => "temperror",
            AuthResult::Permerror => "permerror",
        }
    }

    /// Every result, for parsing and suggestions.
    pub const ALL: [AuthResult; 7] = [
        AuthResult::Pass,
        AuthResult::Fail,
        AuthResult::Softfail,
        AuthResult::Neutral,
        AuthResult::None,
        AuthResult::Temperror,
        AuthResult::Permerror,
    ];
}

/// A rule action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Stop processing later rules.
    Stop,
    /// Accept and drop silently.
    Delete,
    /// Refuse with this status (4xx or 5xx, e.g. `550 5.7.1`). The artifact stores it with
    /// postcard, where this newtype encodes as the struct variant it replaced did.
    Reject(Status),
    /// Replace the recipients.
    RedirectTo(Vec<Address>),
    /// Add To recipients.
    AddRecipient(Vec<Address>),
    /// Add Cc recipients.
    CopyTo(Vec<Address>),
    /// Add Bcc recipients.
    BlindCopyTo(Vec<Address>),
    /// Set a header.
    SetHeader {
        /// Name.
        name: String,
        /// Value.
        value: String,
    },
    /// Remove a header.
    RemoveHeader(String),
    /// Prepend to the subject.
    PrependSubject(String),
    /// Send to a quarantine mailbox instead; stops later rules.
    Quarantine(Address),
    /// Drop the connection.
    Disconnect,
    /// Write an event to the log.
    Log(String),
}

impl Action {
    /// Whether it ends rule processing for the message.
    pub fn stops_processing(&self) -> bool {
        matches!(
            self,
            Action::Stop
                | Action::Delete
                | Action::Reject(_)
                | Action::Quarantine(_)
                | Action::Disconnect
        )
    }
}

/// `rule`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransportRule {
    /// The name.
    pub name: Spanned<String>,
    /// The whole rule.
    pub span: Span,
    /// The priority written, if any.
    pub priority: Option<Spanned<u32>>,
    /// Enforce or audit.
    pub mode: RuleMode,
    /// ANDed conditions.
    pub conditions: Vec<Spanned<Predicate>>,
    /// ORed exceptions.
    pub exceptions: Vec<Spanned<Predicate>>,
    /// Actions in order.
    pub actions: Vec<Spanned<Action>>,
    /// Some condition, exception or action had an error and is missing here, so what the rule
    /// matches is unknown (lints leave it alone; it is never compiled).
    pub partial: bool,
}

/// What kind of recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecipientKind {
    /// Forwards to an external address.
    Contact,
    /// Expands to members.
    Group,
    /// A user whose mail goes to an external address.
    MailUser,
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Member {
    /// Another recipient, by name.
    Name(String),
    /// An address.
    Address(Address),
}

/// `contact`, `group`, `mail-user`, possibly `deleted`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recipient {
    /// What kind.
    pub kind: RecipientKind,
    /// The name.
    pub name: Spanned<String>,
    /// The whole block.
    pub span: Span,
    /// A tombstone.
    pub deleted: bool,
    /// Addresses, primary first.
    pub addresses: Vec<Spanned<Address>>,
    /// Where mail goes (contacts and mail users).
    pub external: Option<Spanned<Address>>,
    /// Hidden from address lists.
    pub hidden: bool,
    /// Group members.
    pub members: Vec<Spanned<Member>>,
    /// Group accepts only authenticated senders.
    pub authenticated_senders_only: bool,
}

/// AuthAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthAs {
    /// Trusted.
    Internal,
    /// Anyone.
    Anonymous,
    /// A partner.
    Partner,
}

/// A test expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// Delivered (to these, or all) via a send connector.
    Delivered {
        /// Recipients; empty means all.
        recipients: Vec<Address>,
        /// Send connector name.
        via: Option<String>,
    },
    /// Rejected with a code.
    Rejected {
        /// SMTP code.
        code: u16,
        /// Enhanced status code.
        enhanced: Option<String>,
        /// Recipients; empty means the whole message.
        recipients: Vec<Address>,
    },
    /// Dropped (these recipients, or the message).
    Dropped(Vec<Address>),
    /// These rules fired.
    Fired(Vec<String>),
    /// These rules did not fire.
    NotFired(Vec<String>),
    /// Envelope sender after rewriting (`None`: null sender).
    MailFrom(Option<Address>),
    /// Recipients after rewriting and expansion.
    Recipients(Vec<Address>),
    /// A header's final value.
    Header(String, String),
    /// A header is absent from the final message.
    NoHeader(String),
    /// AuthAs stamped.
    AuthAs(AuthAs),
    /// Originating organization attributed (`None`: none).
    OriginatingOrg(Option<String>),
}

/// `test`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestCase {
    /// The name.
    pub name: Spanned<String>,
    /// The whole block.
    pub span: Span,
    /// Receive connector by name.
    pub connector: Option<Spanned<String>>,
    /// Client IP.
    pub client_ip: Option<Spanned<IpAddr>>,
    /// Client certificate name.
    pub tls_peer: Option<String>,
    /// XOORG parameter.
    pub xoorg: Option<String>,
    /// Envelope sender (`None`: `<>`).
    pub from: Option<Address>,
    /// Envelope recipients.
    pub to: Vec<Spanned<Address>>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// A message file, resolved against the rule file's folder.
    pub message: Option<Spanned<PathBuf>>,
    /// `auth spf=pass, dkim=pass:DOMAIN, ...`: what verification found (`None`: not
    /// verified, every method `none`).
    pub auth: Option<crate::auth::AuthResults>,
    /// Expectations.
    pub expectations: Vec<Spanned<Expect>>,
}

fn quoted_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for TextMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.keyword(), quoted_list(&self.values))
    }
}

impl fmt::Display for Action {
    /// The action as it would be written in a rule file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[Address]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let q = |t: &str| format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\""));
        match self {
            Action::Stop => f.write_str("stop"),
            Action::Delete => f.write_str("delete"),
            Action::Reject(s) => write!(f, "reject {} {} {}", s.code, s.enhanced, q(&s.text)),
            Action::RedirectTo(v) => write!(f, "redirect-to {}", list(v)),
            Action::AddRecipient(v) => write!(f, "add-recipient {}", list(v)),
            Action::CopyTo(v) => write!(f, "copy-to {}", list(v)),
            Action::BlindCopyTo(v) => write!(f, "blind-copy-to {}", list(v)),
            Action::SetHeader { name, value } => write!(f, "set-header {} {}", q(name), q(value)),
            Action::RemoveHeader(n) => write!(f, "remove-header {}", q(n)),
            Action::PrependSubject(t) => write!(f, "prepend-subject {}", q(t)),
            Action::Quarantine(a) => write!(f, "quarantine {a}"),
            Action::Disconnect => f.write_str("disconnect"),
            Action::Log(t) => write!(f, "log {}", q(t)),
        }
    }
}

impl fmt::Display for Predicate {
    /// The condition as it would be written in a rule file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| v.join(", ");
        match self {
            Predicate::SenderScope(Scope::Inside) => f.write_str("sender inside"),
            Predicate::SenderScope(Scope::Outside) => f.write_str("sender outside"),
            Predicate::RecipientAddress(m) => write!(f, "recipient {m}"),
            Predicate::SenderAddress(m) => write!(f, "sender {m}"),
            Predicate::Header { name, matcher } => write!(f, "header \"{name}\" {matcher}"),
            Predicate::Subject(m) => write!(f, "subject {m}"),
            Predicate::SizeOver(n) => write!(f, "size over {n}B"),
            Predicate::ClientIp(r) => write!(
                f,
                "client-ip in {}",
                r.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Predicate::Connector(c) => write!(f, "connector {}", quoted_list(c)),
            Predicate::OriginatingOrg(o) => write!(f, "originating-org {}", list(o)),
            Predicate::Auth {
                method,
                results,
                domains,
            } => {
                let words: Vec<&str> = results.iter().map(|r| r.keyword()).collect();
                write!(f, "{} {}", method.keyword(), words.join(", "))?;
                if !domains.is_empty() {
                    write!(f, " for {}", list(domains))?;
                }
                Ok(())
            }
        }
    }
}
