//! The SMTP client: delivers one message to the first of its next hops that takes it, with
//! STARTTLS as the send connector's policy asks, and reports one outcome per recipient.
//! Remote trouble is never an error here; it is a temporary or permanent outcome.

use super::DeliverError;
use super::hop::Hop;
use super::tls;
use crate::model::{OutboundTls, SendConnector};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Longest reply line accepted (RFC 5321 says 512; some servers are chattier).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 100;
/// The body goes out in blocks of this size, each under the command timeout.
const DATA_BLOCK: usize = 64 * 1024;
/// QUIT is a courtesy: never wait long for its answer.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to talk to next hops.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name in EHLO/HELO.
    pub helo: String,
    /// STARTTLS policy.
    pub tls: OutboundTls,
    /// The name the server certificate must carry under [`OutboundTls::Required`]
    /// (default: the hop's host name).
    pub tls_name: Option<String>,
    /// Trust anchors for [`OutboundTls::Required`].
    pub roots: Arc<RootCertStore>,
    /// Client certificate chain and key presented when a server asks for one.
    pub client_cert: Option<Arc<CertifiedKey>>,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for the greeting and each reply before the final dot, and for each
    /// write, data blocks included (RFC 5321 4.5.3.2: 5 minutes; 2 for DATA, 3 per block).
    pub command_timeout: Duration,
    /// Longest wait for the reply to the final dot (RFC 5321: 10 minutes).
    pub data_timeout: Duration,
}

impl ClientConfig {
    /// The configuration for `c`: its FQDN (else `default_helo`) in EHLO, its TLS policy and
    /// name, its client certificate (loaded here from the PEM files; a certificate without a
    /// key, or the reverse, is an error), RFC 5321 timeouts and a 30 second connect timeout.
    pub fn for_connector(
        c: &SendConnector,
        default_helo: &str,
        roots: Arc<RootCertStore>,
    ) -> Result<ClientConfig, DeliverError> {
        let client_cert = match (&c.certificate, &c.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Arc::new(load_certified_key(&cert.value, &key.value)?)),
            (Some(cert), None) => {
                return Err(DeliverError::Certificate {
                    path: cert.value.clone(),
                    message: "a client certificate needs a key".into(),
                });
            }
            (None, Some(key)) => {
                return Err(DeliverError::Certificate {
                    path: key.value.clone(),
                    message: "a client key needs a certificate".into(),
                });
            }
        };
        Ok(ClientConfig {
            helo: c.fqdn.clone().unwrap_or_else(|| default_helo.to_string()),
            tls: c.tls.value,
            tls_name: c.tls_name.as_ref().map(|n| n.value.clone()),
            roots,
            client_cert,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
        })
    }
}

/// Loads a PEM certificate chain and its private key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, DeliverError> {
    let bad = |path: &Path, message: String| DeliverError::Certificate {
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    CertifiedKey::from_der(chain, der, &tls::provider()).map_err(|e| bad(key, e.to_string()))
}

/// The Mozilla root certificates, for verifying public servers.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The CA certificates in a PEM file (at least one, all valid).
pub fn load_roots(pem_file: &Path) -> Result<RootCertStore, DeliverError> {
    let bad = |message: String| DeliverError::Certificate {
        path: pem_file.to_path_buf(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pem_file).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// One message to deliver.
#[derive(Debug, Clone, Copy)]
pub struct OutboundMessage<'a> {
    /// The reverse path; `None` is the null sender `<>`.
    pub mail_from: Option<&'a str>,
    /// The recipients, all for the same hops.
    pub recipients: &'a [OutboundRcpt],
    /// The message as received (header and body; any line ending).
    pub body: &'a [u8],
    /// DSN ENVID (decoded; sent xtext-encoded).
    pub envid: Option<&'a str>,
    /// DSN RET: `Some(true)` FULL, `Some(false)` HDRS.
    pub ret_full: Option<bool>,
    /// The message needs SMTPUTF8 (non-ASCII addresses also make it needed).
    pub smtputf8: bool,
    /// The body has 8-bit bytes (BODY=8BITMIME when the server offers it).
    pub eight_bit: bool,
}

/// One recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundRcpt {
    /// The forward path, without angle brackets.
    pub address: String,
    /// DSN NOTIFY, as given (`NEVER` or a comma list of SUCCESS, FAILURE, DELAY).
    pub notify: Option<String>,
    /// DSN ORCPT decoded, `addr-type;address` (`rfc822;joe@example.com`); a bare address
    /// is taken as rfc822. Sent xtext-encoded.
    pub orcpt: Option<String>,
}

/// What became of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptOutcome {
    /// The hop took responsibility; `reply` is its answer to the final dot.
    Delivered {
        /// E.g. `250 2.0.0 Ok: queued as 4Xyz`.
        reply: String,
    },
    /// Try again later.
    Temporary {
        /// The reply code (4xx).
        code: u16,
        /// The enhanced status (`4.4.1`).
        enhanced: String,
        /// The reply text, or what went wrong locally.
        text: String,
    },
    /// Do not try again: bounce.
    Permanent {
        /// The reply code (5xx).
        code: u16,
        /// The enhanced status (`5.1.1`).
        enhanced: String,
        /// The reply text, or what went wrong locally.
        text: String,
    },
}

impl RcptOutcome {
    fn failure(f: &Failure) -> RcptOutcome {
        if f.code >= 500 {
            RcptOutcome::Permanent {
                code: f.code,
                enhanced: f.enhanced.clone(),
                text: f.text.clone(),
            }
        } else {
            RcptOutcome::Temporary {
                code: f.code,
                enhanced: f.enhanced.clone(),
                text: f.text.clone(),
            }
        }
    }
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// One per recipient, in the order given.
    pub outcomes: Vec<RcptOutcome>,
    /// The negotiated TLS version and cipher suite (`TLSv1.3 TLS13_AES_256_GCM_SHA384`);
    /// `None`: plaintext.
    pub tls: Option<String>,
    /// The hop that answered last (empty when there was no hop).
    pub host: String,
    /// The address it answered at.
    pub addr: Option<SocketAddr>,
    /// No next hop took the transaction (none could be reached, or each refused before
    /// RCPT): the destination, not the message, is failing, and the scheduler backs off
    /// from it as a whole.
    pub unreachable: bool,
}

/// Tries the hops, and each hop's addresses, in order until one takes the transaction.
/// Connection failures, 4xx/5xx greetings, refused EHLO/HELO, 4xx to MAIL, TLS failures and
/// connections lost before the final dot was sent move on to the next address. From the
/// RCPT replies on, the hop's answers are final for this attempt: per RCPT for each
/// recipient, then DATA's and the final dot's for the accepted ones. A 5xx to MAIL is
/// permanent for all. When no hop takes it, every recipient gets the last hop's failure as
/// a temporary one. Never returns an error: remote problems are outcomes.
pub async fn deliver(cfg: &ClientConfig, hops: &[Hop], msg: &OutboundMessage<'_>) -> Attempt {
    let mut outcomes: Vec<Option<RcptOutcome>> = vec![None; msg.recipients.len()];
    let mut attempt = Attempt {
        outcomes: Vec::new(),
        tls: None,
        host: String::new(),
        addr: None,
        unreachable: false,
    };

    if let Some(from) = msg.mail_from {
        if !safe_path(from) {
            let f = Failure::new(553, "5.1.7", "invalid sender address");
            attempt.outcomes = vec![RcptOutcome::failure(&f); msg.recipients.len()];
            return attempt;
        }
    }
    for (i, r) in msg.recipients.iter().enumerate() {
        if !safe_path(&r.address) || r.address.is_empty() {
            outcomes[i] = Some(RcptOutcome::failure(&Failure::new(
                553,
                "5.1.3",
                "invalid recipient address",
            )));
        }
    }

    let plan = Plan::new(msg, &outcomes);
    if !plan.pending.is_empty() {
        let mut last = Failure::new(451, "4.4.0", "no next hop");
        'hops: for hop in hops {
            for addr in &hop.addrs {
                attempt.host = hop.host.clone();
                attempt.addr = Some(*addr);
                attempt.tls = None;
                match try_addr(cfg, hop, *addr, &plan, &mut attempt.tls).await {
                    HopResult::Next(f) => {
                        tracing::debug!(host = %hop.host, %addr, reason = %f.text, "next hop");
                        last = f;
                    }
                    HopResult::Done(results) => {
                        for (i, o) in results {
                            outcomes[i] = Some(o);
                        }
                        break 'hops;
                    }
                }
            }
        }
        // Nothing accepted the transaction: whatever is left is tried again later.
        attempt.unreachable = outcomes.iter().all(Option::is_none);
        let temp = last.temporary();
        for o in outcomes.iter_mut().filter(|o| o.is_none()) {
            *o = Some(RcptOutcome::failure(&temp));
        }
    }
    attempt.outcomes = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| RcptOutcome::failure(&Failure::new(451, "4.4.0", "not tried")))
        })
        .collect();
    attempt
}

/// What is to be sent, worked out once for all hops.
struct Plan<'a> {
    msg: &'a OutboundMessage<'a>,
    /// Indexes of the recipients still to deliver.
    pending: Vec<usize>,
    data: Vec<u8>,
    needs_utf8: bool,
}

impl<'a> Plan<'a> {
    fn new(msg: &'a OutboundMessage<'a>, outcomes: &[Option<RcptOutcome>]) -> Plan<'a> {
        let pending: Vec<usize> = (0..msg.recipients.len())
            .filter(|i| outcomes[*i].is_none())
            .collect();
        let needs_utf8 = msg.smtputf8
            || !msg.mail_from.unwrap_or("").is_ascii()
            || pending
                .iter()
                .any(|i| !msg.recipients[*i].address.is_ascii());
        Plan {
            msg,
            data: if pending.is_empty() {
                Vec::new()
            } else {
                encode_data(msg.body)
            },
            pending,
            needs_utf8,
        }
    }
}

/// A reason not to deliver, as a reply.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) code: u16,
    pub(super) enhanced: String,
    pub(super) text: String,
}

impl Failure {
    pub(super) fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Failure {
        Failure {
            code,
            enhanced: enhanced.to_string(),
            text: text.into(),
        }
    }

    fn from_reply(r: &Reply, context: &str) -> Failure {
        Failure {
            code: r.code,
            enhanced: r.enhanced(),
            text: if context.is_empty() {
                r.text()
            } else {
                format!("{context}: {}", r.text())
            },
        }
    }

    /// The same reason, but to be retried: a hop that refused us may not be the last word.
    fn temporary(&self) -> Failure {
        if self.code < 500 {
            return self.clone();
        }
        let enhanced = match self.enhanced.split_once('.') {
            Some((_, rest)) => format!("4.{rest}"),
            None => "4.0.0".to_string(),
        };
        Failure {
            code: 451,
            enhanced,
            text: format!("{} {}", self.code, self.text),
        }
    }

    pub(super) fn io(context: &str, e: &HopError) -> Failure {
        Failure::new(451, "4.4.2", format!("{context}: {e}"))
    }
}

enum HopResult {
    /// Nothing was delivered here; try the next address.
    Next(Failure),
    /// This hop's answers, per recipient index.
    Done(Vec<(usize, RcptOutcome)>),
}

/// A failure talking to one server.
#[derive(Debug, thiserror::Error)]
pub(super) enum HopError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out")]
    Timeout,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Connects to one address of a hop and makes the session ready for MAIL: greeting,
/// EHLO (HELO as a fallback), STARTTLS as the policy asks and EHLO again. Returns the session
/// and the extensions offered, or why this address is of no use (try the next one). Shared
/// by deliveries and recipient probes ([`super::probe`]), so both talk to a hop alike.
pub(super) async fn open(
    cfg: &ClientConfig,
    hop: &Hop,
    addr: SocketAddr,
    tls_out: &mut Option<String>,
) -> Result<(Session, HashMap<String, String>), Failure> {
    let tcp = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(Failure::new(
                451,
                "4.4.1",
                format!("connect to {addr}: {e}"),
            ));
        }
        Err(_) => {
            return Err(Failure::new(
                451,
                "4.4.1",
                format!("connect to {addr}: timed out"),
            ));
        }
    };
    let mut s = Session {
        stream: Stream::Plain(tcp),
        buf: Vec::new(),
    };
    let t = cfg.command_timeout;
    macro_rules! next_on_err {
        ($e:expr, $ctx:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return Err(Failure::io($ctx, &e)),
            }
        };
    }

    let greeting = next_on_err!(s.read_reply(t).await, "greeting");
    if !greeting.positive() {
        s.quit().await;
        return Err(Failure::from_reply(&greeting, "greeting"));
    }
    let mut ext = match s.hello(&cfg.helo, t).await {
        Ok(Ok(ext)) => ext,
        Ok(Err(f)) => return Err(f),
        Err(e) => return Err(Failure::io("EHLO", &e)),
    };

    let offers_tls = ext.contains_key("STARTTLS");
    let use_tls = match cfg.tls {
        OutboundTls::Off => false,
        OutboundTls::Opportunistic => offers_tls,
        OutboundTls::Required => {
            if !offers_tls {
                s.quit().await;
                return Err(Failure::new(
                    454,
                    "4.7.5",
                    "TLS is required, but the server does not offer STARTTLS",
                ));
            }
            true
        }
    };
    if use_tls {
        let reply = next_on_err!(s.command("STARTTLS", t).await, "STARTTLS");
        if !reply.positive() {
            if cfg.tls == OutboundTls::Required {
                s.quit().await;
                return Err(Failure::from_reply(&reply, "STARTTLS").tls_failure());
            }
            // Opportunistic: the server declined, the session is still clean plaintext.
        } else {
            let verify = cfg.tls == OutboundTls::Required;
            let name = cfg.tls_name.as_deref().unwrap_or(&hop.host);
            s = match s.starttls(cfg, verify, name, addr.ip()).await {
                Ok(s) => s,
                Err(e) => {
                    return Err(Failure::new(454, "4.7.5", format!("TLS with {name}: {e}")));
                }
            };
            *tls_out = s.tls_description();
            // RFC 3207 4.2: forget what the server said before TLS.
            ext = match s.hello(&cfg.helo, t).await {
                Ok(Ok(ext)) => ext,
                Ok(Err(f)) => return Err(f),
                Err(e) => return Err(Failure::io("EHLO after STARTTLS", &e)),
            };
        }
    }

    Ok((s, ext))
}

async fn try_addr(
    cfg: &ClientConfig,
    hop: &Hop,
    addr: SocketAddr,
    plan: &Plan<'_>,
    tls_out: &mut Option<String>,
) -> HopResult {
    let (mut s, ext) = match open(cfg, hop, addr, tls_out).await {
        Ok(x) => x,
        Err(f) => return HopResult::Next(f),
    };
    let t = cfg.command_timeout;
    macro_rules! next_on_err {
        ($e:expr, $ctx:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return HopResult::Next(Failure::io($ctx, &e)),
            }
        };
    }

    let all = |f: &Failure| -> Vec<(usize, RcptOutcome)> {
        plan.pending
            .iter()
            .map(|i| (*i, RcptOutcome::failure(f)))
            .collect()
    };

    if plan.needs_utf8 && !ext.contains_key("SMTPUTF8") {
        s.quit().await;
        return HopResult::Done(all(&Failure::new(
            553,
            "5.6.7",
            "the message needs SMTPUTF8, which the next hop does not offer",
        )));
    }
    if let Some(limit) = ext.get("SIZE").and_then(|v| v.trim().parse::<usize>().ok()) {
        if limit > 0 && plan.data.len() > limit {
            s.quit().await;
            return HopResult::Done(all(&Failure::new(
                552,
                "5.3.4",
                format!("message size exceeds the next hop's limit of {limit} bytes"),
            )));
        }
    }

    let (mail, rcpts) = envelope(plan, &ext);
    let pipelining = ext.contains_key("PIPELINING");
    let mail_reply;
    let mut rcpt_replies = Vec::with_capacity(rcpts.len());
    if pipelining {
        let mut batch = String::new();
        batch.push_str(&mail);
        batch.push_str("\r\n");
        for r in &rcpts {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        next_on_err!(s.send(batch.as_bytes(), t).await, "MAIL");
        mail_reply = next_on_err!(s.read_reply(t).await, "MAIL");
        for _ in &rcpts {
            rcpt_replies.push(next_on_err!(s.read_reply(t).await, "RCPT"));
        }
    } else {
        mail_reply = next_on_err!(s.command(&mail, t).await, "MAIL");
        if mail_reply.positive() {
            for r in &rcpts {
                rcpt_replies.push(next_on_err!(s.command(r, t).await, "RCPT"));
            }
        }
    }
    if !mail_reply.positive() {
        s.quit().await;
        let f = Failure::from_reply(&mail_reply, "MAIL");
        if mail_reply.code >= 500 {
            return HopResult::Done(all(&f));
        }
        return HopResult::Next(f.temporary());
    }

    let mut results = Vec::with_capacity(plan.pending.len());
    let mut accepted = Vec::new();
    for (i, reply) in plan.pending.iter().zip(&rcpt_replies) {
        if reply.positive() {
            accepted.push(*i);
        } else {
            results.push((
                *i,
                RcptOutcome::failure(&Failure::from_reply(reply, "RCPT").class()),
            ));
        }
    }
    if accepted.is_empty() {
        s.quit().await;
        return HopResult::Done(results);
    }
    let for_accepted = |results: &mut Vec<(usize, RcptOutcome)>, o: RcptOutcome| {
        results.extend(accepted.iter().map(|i| (*i, o.clone())));
    };

    let data_reply = next_on_err!(s.command("DATA", t).await, "DATA");
    if data_reply.code != 354 {
        s.quit().await;
        for_accepted(
            &mut results,
            RcptOutcome::failure(&Failure::from_reply(&data_reply, "DATA").class()),
        );
        return HopResult::Done(results);
    }
    for block in plan.data.chunks(DATA_BLOCK) {
        next_on_err!(s.send(block, t).await, "sending the message");
    }
    match s.read_reply(cfg.data_timeout).await {
        Ok(reply) if reply.positive() => {
            for_accepted(
                &mut results,
                RcptOutcome::Delivered {
                    reply: reply.full(),
                },
            );
        }
        Ok(reply) => {
            for_accepted(
                &mut results,
                RcptOutcome::failure(&Failure::from_reply(&reply, "end of data").class()),
            );
        }
        Err(e) => {
            // The dot went out: the hop may have the message. Retrying risks a duplicate,
            // which is better than a loss.
            for_accepted(
                &mut results,
                RcptOutcome::failure(&Failure::io("waiting for the reply to end of data", &e)),
            );
            return HopResult::Done(results);
        }
    }
    s.quit().await;
    HopResult::Done(results)
}

impl Failure {
    fn tls_failure(mut self) -> Failure {
        self.code = 454;
        self.enhanced = "4.7.5".into();
        self
    }

    /// Replies outside 4xx/5xx where a 4xx or 5xx was due are protocol trouble: retry.
    fn class(self) -> Failure {
        if (400..600).contains(&self.code) {
            self
        } else {
            Failure::new(
                451,
                "4.5.0",
                format!("unexpected reply {}: {}", self.code, self.text),
            )
        }
    }
}

/// MAIL FROM and RCPT TO command lines, with the parameters the server understands.
fn envelope(plan: &Plan<'_>, ext: &HashMap<String, String>) -> (String, Vec<String>) {
    let msg = plan.msg;
    let dsn = ext.contains_key("DSN");
    let mut mail = format!("MAIL FROM:<{}>", msg.mail_from.unwrap_or(""));
    if ext.contains_key("SIZE") {
        let _ = write!(mail, " SIZE={}", plan.data.len());
    }
    if msg.eight_bit && ext.contains_key("8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    if plan.needs_utf8 {
        mail.push_str(" SMTPUTF8");
    }
    if dsn {
        match msg.ret_full {
            Some(true) => mail.push_str(" RET=FULL"),
            Some(false) => mail.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = msg.envid {
            let _ = write!(mail, " ENVID={}", xtext(envid));
        }
    }
    let rcpts = plan
        .pending
        .iter()
        .map(|i| {
            let r = &msg.recipients[*i];
            let mut line = format!("RCPT TO:<{}>", r.address);
            if dsn {
                if let Some(notify) = r.notify.as_deref().filter(|n| valid_notify(n)) {
                    let _ = write!(line, " NOTIFY={}", notify.to_ascii_uppercase());
                }
                if let Some(orcpt) = r.orcpt.as_deref() {
                    let (kind, addr) = match orcpt.split_once(';') {
                        Some((kind, addr)) if valid_addr_type(kind) => (kind, addr),
                        _ => ("rfc822", orcpt),
                    };
                    let _ = write!(line, " ORCPT={kind};{}", xtext(addr));
                }
            }
            line
        })
        .collect();
    (mail, rcpts)
}

fn valid_notify(n: &str) -> bool {
    !n.is_empty()
        && n.split(',').all(|w| {
            ["NEVER", "SUCCESS", "FAILURE", "DELAY"]
                .iter()
                .any(|k| k.eq_ignore_ascii_case(w))
        })
}

fn valid_addr_type(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Nothing in a path may end the command line or confuse the angle brackets.
fn safe_path(p: &str) -> bool {
    !p.chars().any(|c| c.is_control() || c == '<' || c == '>')
}

/// RFC 3461 4: xtext, as the server side decodes it.
fn xtext(s: &str) -> String {
    crate::smtp::command::xtext_encode(s)
}

/// The DATA payload: every line ending CRLF (bare CR and bare LF become CRLF, so no
/// variant of `<CR><LF>.<CR><LF>` can end the message early at the next hop), lines
/// starting with `.` doubled, and the terminating `.` line; the same encoder the server
/// side's tests round-trip through its DATA receiver.
pub(crate) fn encode_data(body: &[u8]) -> Vec<u8> {
    crate::smtp::data::dot_stuff(body)
}

/// One SMTP reply.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) code: u16,
    lines: Vec<String>,
}

impl Reply {
    pub(super) fn positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The enhanced status code of the first line (RFC 2034), else `c.0.0`.
    pub(super) fn enhanced(&self) -> String {
        let class = self.code / 100;
        self.lines
            .first()
            .and_then(|l| l.split(' ').next())
            .filter(|t| is_enhanced(t, class))
            .map_or_else(|| format!("{class}.0.0"), str::to_string)
    }

    /// The text, enhanced codes removed, lines joined.
    pub(super) fn text(&self) -> String {
        let class = self.code / 100;
        let parts: Vec<&str> = self
            .lines
            .iter()
            .map(|l| match l.split_once(' ') {
                Some((first, rest)) if is_enhanced(first, class) => rest,
                _ if is_enhanced(l, class) => "",
                _ => l.as_str(),
            })
            .collect();
        parts.join(" ").trim().to_string()
    }

    /// Code and text as the server wrote them, lines joined.
    fn full(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" "))
            .trim_end()
            .to_string()
    }
}

fn is_enhanced(t: &str, class: u16) -> bool {
    let mut parts = t.split('.');
    let ok = |p: Option<&str>, max: usize| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let first = parts.next();
    first == Some(class.to_string().as_str())
        && ok(first, 1)
        && ok(parts.next(), 3)
        && ok(parts.next(), 3)
        && parts.next().is_none()
}

/// Parses one reply line (without CRLF): the code, whether more lines follow, the text.
fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, String), HopError> {
    let bad = || {
        HopError::Protocol(format!(
            "malformed reply {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let digits = line.get(..3).ok_or_else(bad)?;
    if !(b'2'..=b'5').contains(&digits[0]) || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let (more, text) = match line.get(3) {
        None => (false, &[][..]),
        Some(b' ') => (false, &line[4..]),
        Some(b'-') => (true, &line[4..]),
        Some(_) => return Err(bad()),
    };
    Ok((code, more, String::from_utf8_lossy(text).into_owned()))
}

/// A connection, plaintext or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One SMTP conversation: the stream and what has been read but not parsed yet.
pub(super) struct Session {
    stream: Stream,
    buf: Vec<u8>,
}

impl Session {
    async fn send(&mut self, bytes: &[u8], t: Duration) -> Result<(), HopError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(t, write).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(HopError::Timeout),
        }
    }

    pub(super) async fn command(&mut self, line: &str, t: Duration) -> Result<Reply, HopError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send(&bytes, t).await?;
        self.read_reply(t).await
    }

    /// One whole reply, every line CRLF-terminated and carrying the same code.
    async fn read_reply(&mut self, t: Duration) -> Result<Reply, HopError> {
        match tokio::time::timeout(t, self.read_reply_inner()).await {
            Ok(r) => r,
            Err(_) => Err(HopError::Timeout),
        }
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, HopError> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let line = self.read_line().await?;
            let (c, more, text) = parse_reply_line(&line)?;
            if *code.get_or_insert(c) != c {
                return Err(HopError::Protocol(format!(
                    "reply code changed from {} to {c} within one reply",
                    code.unwrap_or(c)
                )));
            }
            lines.push(text);
            if !more {
                return Ok(Reply { code: c, lines });
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(HopError::Protocol("reply has too many lines".into()));
            }
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, HopError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                if pos == 0 || self.buf[pos - 1] != b'\r' {
                    return Err(HopError::Protocol("reply line not ended by CRLF".into()));
                }
                let line = self.buf[..pos - 1].to_vec();
                self.buf.drain(..=pos);
                return Ok(line);
            }
            if self.buf.len() > MAX_REPLY_LINE {
                return Err(HopError::Protocol("reply line too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(HopError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// EHLO, or HELO when EHLO gets a 5xx. Returns the extensions (keyword in upper case,
    /// parameters), or the failure when the server will not talk to us.
    async fn hello(
        &mut self,
        helo: &str,
        t: Duration,
    ) -> Result<Result<HashMap<String, String>, Failure>, HopError> {
        let reply = self.command(&format!("EHLO {helo}"), t).await?;
        if reply.positive() {
            let ext = reply
                .lines
                .iter()
                .skip(1)
                .filter_map(|l| {
                    let mut it = l.splitn(2, ' ');
                    let kw = it.next()?.to_ascii_uppercase();
                    (!kw.is_empty()).then(|| (kw, it.next().unwrap_or("").to_string()))
                })
                .collect();
            return Ok(Ok(ext));
        }
        if reply.code < 500 {
            self.quit().await;
            return Ok(Err(Failure::from_reply(&reply, "EHLO")));
        }
        let reply = self.command(&format!("HELO {helo}"), t).await?;
        if reply.positive() {
            return Ok(Ok(HashMap::new()));
        }
        self.quit().await;
        Ok(Err(Failure::from_reply(&reply, "HELO")))
    }

    async fn starttls(
        self,
        cfg: &ClientConfig,
        verify: bool,
        name: &str,
        ip: IpAddr,
    ) -> Result<Session, HopError> {
        // Anything the server sent after its 220 was sent in plaintext and must not be
        // read as if it came over TLS (CVE-2011-0411 in the other direction).
        if !self.buf.is_empty() {
            return Err(HopError::Protocol(
                "data after the reply to STARTTLS".into(),
            ));
        }
        let tcp = match self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => return Err(HopError::Protocol("TLS already active".into())),
        };
        let server_name = match ServerName::try_from(name.to_string()) {
            Ok(n) => n,
            Err(_) => match super::hop::parse_ip_literal(name) {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None if !verify => ServerName::IpAddress(ip.into()),
                None => {
                    return Err(HopError::Protocol(format!(
                        "{name:?} cannot be checked against a certificate"
                    )));
                }
            },
        };
        let config = tls::client_config(verify, &cfg.roots, cfg.client_cert.as_ref())
            .map_err(|e| HopError::Protocol(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream =
            match tokio::time::timeout(cfg.command_timeout, connector.connect(server_name, tcp))
                .await
            {
                Ok(r) => r?,
                Err(_) => return Err(HopError::Timeout),
            };
        Ok(Session {
            stream: Stream::Tls(Box::new(stream)),
            buf: Vec::new(),
        })
    }

    fn tls_description(&self) -> Option<String> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(s) => {
                let conn = s.get_ref().1;
                let version = conn
                    .protocol_version()
                    .map(|v| format!("{v:?}").replace('_', "."))
                    .unwrap_or_default();
                let suite = conn
                    .negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite()))
                    .unwrap_or_default();
                Some(format!("{version} {suite}").trim().to_string())
            }
        }
    }

    /// QUIT and close, without caring how the server takes it.
    pub(super) async fn quit(&mut self) {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, async {
            if self.send(b"QUIT\r\n", QUIT_TIMEOUT).await.is_ok() {
                let _ = self.read_reply(QUIT_TIMEOUT).await;
            }
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn encode_normalises_and_stuffs() {
        assert_eq!(encode_data(b""), b".\r\n");
        assert_eq!(encode_data(b"a"), b"a\r\n.\r\n");
        assert_eq!(encode_data(b"a\nb\rc\r\n"), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(encode_data(b".x\n..y\n."), b"..x\r\n...y\r\n..\r\n.\r\n");
        // Smuggling shapes cannot end the data early.
        assert_eq!(encode_data(b"a\r\n.\r\r\nb"), b"a\r\n..\r\n\r\nb\r\n.\r\n");
        assert_eq!(encode_data(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
    }

    #[test]
    fn xtext_encodes_specials() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("é"), "+C3+A9");
    }

    #[test]
    fn reply_lines() {
        assert!(parse_reply_line(b"250-PIPELINING").unwrap().1);
        assert_eq!(parse_reply_line(b"250").unwrap().0, 250);
        assert!(parse_reply_line(b"25").is_err());
        assert!(parse_reply_line(b"250xok").is_err());
        assert!(parse_reply_line(b"150 ok").is_err());
        let r = Reply {
            code: 550,
            lines: vec!["5.1.1 user unknown".into()],
        };
        assert_eq!(r.enhanced(), "5.1.1");
        assert_eq!(r.text(), "user unknown");
        let r = Reply {
            code: 550,
            lines: vec!["4.1.1 odd".into()],
        };
        assert_eq!(r.enhanced(), "5.0.0");
    }

    #[test]
    fn failures_become_temporary() {
        let f = Failure::new(554, "5.7.1", "go away").temporary();
        assert_eq!((f.code, f.enhanced.as_str()), (451, "4.7.1"));
    }
}
