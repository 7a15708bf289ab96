//! Verifying mail from the Internet before any rule sees it: SPF of the client (the MAIL FROM
//! domain, or the HELO name for the null sender), each DKIM signature, DMARC of the From
//! domain and the ARC chain that arrived, with mail-auth's `MessageAuthenticator` asking the
//! same DNS the relay delivers with. The only I/O in `auth`.
//!
//! Bounded: one deadline for the whole verification (what has not finished by then is
//! `temperror`), at most [`MAX_SIGNATURES`] DKIM signatures verified (the rest are counted
//! in the field, never looked up: a thousand signatures would be a thousand DNS queries and
//! RSA operations bought by one client), and the work runs in its own task, so a panic in
//! the crate on hostile input costs that message its results (all `temperror`), never the
//! session.

use super::report::{SignatureInfo, SpfIdentity, Verified, timed_out};
use super::results::{AuthResults, Verification};
use crate::model::AuthResult;
use base64::Engine;
use bytes::Bytes;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, Error,
    MessageAuthenticator, SpfOutput, SpfResult,
};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::{Instant, timeout_at};

/// DKIM signatures verified per message; more are reported as not verified.
pub const MAX_SIGNATURES: usize = 10;

/// The whole verification's bound by default: SPF, DKIM and ARC run side by side, DMARC
/// after them, within it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Verifies messages against one DNS configuration. Cheap to clone (one shared resolver).
#[derive(Clone)]
pub struct Verifier {
    auth: MessageAuthenticator,
    timeout: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What the session knows of the client.
#[derive(Debug, Clone)]
pub struct Client {
    /// Its address.
    pub ip: IpAddr,
    /// The name it gave in EHLO or HELO.
    pub helo: String,
    /// MAIL FROM as `local@domain`; `None`: the null sender.
    pub mail_from: Option<String>,
    /// This relay's name (SPF's `%{r}` macro).
    pub host: String,
}

impl Verifier {
    /// The system's resolver configuration (`/etc/resolv.conf`), as delivery uses it.
    pub fn system() -> Result<Verifier, String> {
        let (config, options) =
            hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string())?;
        let auth = MessageAuthenticator::new(config, options).map_err(|e| e.to_string())?;
        Ok(Verifier {
            auth,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// One name server at `addr` (`--dns`), no hosts file and no cache, with the options
    /// delivery's resolver has for it, so a test's DNS server sees every query.
    pub fn with_nameserver(addr: SocketAddr) -> Verifier {
        let builder = crate::deliver::one_nameserver(addr);
        Verifier {
            auth: MessageAuthenticator(builder.build()),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same, bounded by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Verifier {
        self.timeout = timeout;
        self
    }

    /// Verifies `message` (as received) from `client`. Always returns within the timeout
    /// and a little more: what did not finish is `temperror`.
    pub async fn verify(&self, message: Bytes, client: Client) -> Verified {
        let deadline = Instant::now() + self.timeout;
        let this = self.clone();
        let fallback = client.clone();
        let task = tokio::spawn(async move { this.run(&message, &client, deadline).await });
        let abort = task.abort_handle();
        // The task honours the deadline itself; this is the backstop for work that does
        // not yield (parsing, hashing a large body).
        match timeout_at(deadline + Duration::from_secs(1), task).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!("message verification failed: {e}");
                unfinished(&fallback)
            }
            Err(_) => {
                abort.abort();
                unfinished(&fallback)
            }
        }
    }

    async fn run(&self, raw: &[u8], client: &Client, deadline: Instant) -> Verified {
        let identity = spf_identity(client);
        let spf = timeout_at(deadline, self.spf(client, &identity));
        let Some(mut message) = AuthenticatedMessage::parse(raw) else {
            // No header at all: nothing to verify but the client.
            let spf = spf.await;
            let mut v = unfinished(client);
            v.results.spf = spf.map_or_else(|_| timed_out(identity_domain(&identity)), |(v, _)| v);
            for m in [&mut v.results.dmarc, &mut v.results.arc] {
                *m = Verification::new(AuthResult::None, "");
            }
            return v;
        };
        let skipped = message.dkim_headers.len().saturating_sub(MAX_SIGNATURES);
        message.dkim_headers.truncate(MAX_SIGNATURES);
        let (spf, dkim, arc) = tokio::join!(
            spf,
            timeout_at(deadline, self.auth.verify_dkim(&message)),
            timeout_at(deadline, self.auth.verify_arc(&message)),
        );
        let from_domain = message
            .from()
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let (dkim_results, signatures) = match &dkim {
            Ok(outputs) => outputs.iter().map(dkim_verification).unzip(),
            Err(_) => message
                .dkim_headers
                .iter()
                .map(|h| match &h.header {
                    Ok(s) => (timed_out(&s.d), signature_info(s)),
                    Err(_) => (timed_out(""), SignatureInfo::default()),
                })
                .unzip(),
        };
        let (dmarc, dmarc_policy) = match (&spf, &dkim) {
            (Ok((_, spf_output)), Ok(dkim)) => {
                let mail_from_domain = identity_domain(&identity).to_string();
                let params = DmarcParameters::new(&message, dkim, &mail_from_domain, spf_output);
                match timeout_at(deadline, self.auth.verify_dmarc(params)).await {
                    Ok(out) => self.dmarc_verification(&out, &from_domain, deadline).await,
                    Err(_) => (timed_out(&from_domain), None),
                }
            }
            _ => (timed_out(&from_domain), None),
        };
        Verified {
            results: AuthResults {
                spf: match spf {
                    Ok((v, _)) => v,
                    Err(_) => timed_out(identity_domain(&identity)),
                },
                dkim: dkim_results,
                dmarc,
                arc: match &arc {
                    Ok(out) => arc_verification(out),
                    Err(_) => timed_out(""),
                },
            },
            spf_identity: identity,
            signatures,
            dmarc_policy,
            signatures_skipped: skipped,
        }
    }

    /// SPF of the client's identity, and mail-auth's output (DMARC reads it).
    async fn spf(&self, client: &Client, identity: &SpfIdentity) -> (Verification, SpfOutput) {
        let params = match identity {
            SpfIdentity::MailFrom(sender) => {
                SpfParameters::verify_mail_from(client.ip, &client.helo, &client.host, sender)
            }
            SpfIdentity::Helo(helo) if is_domain(helo) => {
                SpfParameters::verify_ehlo(client.ip, helo, &client.host)
            }
            // An address literal or garbage: no domain to ask about.
            SpfIdentity::Helo(_) => {
                return (
                    Verification::new(AuthResult::None, ""),
                    SpfOutput::new(String::new()),
                );
            }
        };
        let out = self.auth.verify_spf(params).await;
        let domain = out.domain().to_string();
        let mut result = match out.result() {
            SpfResult::Pass => AuthResult::Pass,
            SpfResult::Fail => AuthResult::Fail,
            SpfResult::SoftFail => AuthResult::Softfail,
            SpfResult::Neutral => AuthResult::Neutral,
            SpfResult::TempError => AuthResult::Temperror,
            SpfResult::PermError => AuthResult::Permerror,
            SpfResult::None => AuthResult::None,
        };
        // mail-auth reads a SERVFAIL as "no record": ask again to tell the two apart.
        if result == AuthResult::None && !domain.is_empty() && self.dns_failed(&domain).await {
            result = AuthResult::Temperror;
        }
        (Verification::new(result, domain), out)
    }

    async fn dmarc_verification(
        &self,
        out: &DmarcOutput,
        from_domain: &str,
        deadline: Instant,
    ) -> (Verification, Option<String>) {
        let domain = if out.domain().is_empty() {
            from_domain
        } else {
            out.domain()
        };
        let (spf, dkim) = (out.spf_result(), out.dkim_result());
        let record = out.dmarc_record().is_some();
        let (result, detail) = if *spf == DmarcResult::Pass || *dkim == DmarcResult::Pass {
            (AuthResult::Pass, None)
        } else if let Some(e) = dmarc_error(spf).or_else(|| dmarc_error(dkim)) {
            e
        } else if record {
            // Neither SPF nor DKIM passed aligned with the From domain. mail-auth leaves
            // both `none` when neither passed at all; a record makes that a failure.
            (AuthResult::Fail, None)
        } else if !domain.is_empty()
            && timeout_at(deadline, self.dns_failed(&format!("_dmarc.{domain}")))
                .await
                .unwrap_or(true)
        {
            (AuthResult::Temperror, Some("dns error".to_string()))
        } else {
            (AuthResult::None, None)
        };
        let policy = record.then(|| out.policy().to_string());
        (
            Verification {
                result,
                domain: domain.to_string(),
                detail,
            },
            policy,
        )
    }

    /// Whether a TXT lookup of `name` fails for another reason than there being no such
    /// name or record (SERVFAIL, REFUSED, no answer).
    async fn dns_failed(&self, name: &str) -> bool {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.auth.resolver().txt_lookup(fqdn).await {
            Ok(_) => false,
            Err(e) => !matches!(
                e.proto().map(|p| p.kind()),
                Some(ProtoErrorKind::NoRecordsFound {
                    response_code: ResponseCode::NXDomain | ResponseCode::NoError,
                    ..
                })
            ),
        }
    }
}

fn dmarc_error(r: &DmarcResult) -> Option<(AuthResult, Option<String>)> {
    match r {
        DmarcResult::TempError(e) => Some((AuthResult::Temperror, Some(e.to_string()))),
        DmarcResult::PermError(e) => Some((AuthResult::Permerror, Some(e.to_string()))),
        _ => None,
    }
}

fn spf_identity(client: &Client) -> SpfIdentity {
    match &client.mail_from {
        Some(a) if a.contains('@') => SpfIdentity::MailFrom(a.clone()),
        _ => SpfIdentity::Helo(client.helo.clone()),
    }
}

fn identity_domain(identity: &SpfIdentity) -> &str {
    match identity {
        SpfIdentity::MailFrom(a) => a.rsplit_once('@').map_or("", |(_, d)| d),
        SpfIdentity::Helo(h) => h,
    }
}

/// A name SPF can be asked about: dot-separated labels of letters, digits and hyphens.
fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn signature_info(s: &mail_auth::dkim::Signature) -> SignatureInfo {
    let b = s.b.get(..6).unwrap_or(&s.b);
    SignatureInfo {
        selector: s.s.clone(),
        b: base64::engine::general_purpose::STANDARD.encode(b),
    }
}

fn dkim_verification(out: &DkimOutput<'_>) -> (Verification, SignatureInfo) {
    let (result, error) = dkim_result(out.result());
    let (domain, info) = match out.signature() {
        Some(s) => (s.d.to_ascii_lowercase(), signature_info(s)),
        None => (String::new(), SignatureInfo::default()),
    };
    (
        Verification {
            result,
            domain,
            detail: error.map(ToString::to_string),
        },
        info,
    )
}

/// mail-auth's DKIM result in RFC 8601's words, with the error behind it. A missing key
/// record is `permerror`, as RFC 6376 has it, unless the "missing" was a SERVFAIL.
fn dkim_result(r: &DkimResult) -> (AuthResult, Option<&Error>) {
    match r {
        DkimResult::Pass => (AuthResult::Pass, None),
        DkimResult::None => (AuthResult::None, None),
        DkimResult::Neutral(e) => (AuthResult::Neutral, Some(e)),
        DkimResult::Fail(e) => (AuthResult::Fail, Some(e)),
        DkimResult::TempError(e) => (AuthResult::Temperror, Some(e)),
        DkimResult::PermError(e @ Error::DnsRecordNotFound(code))
            if !matches!(code, ResponseCode::NXDomain | ResponseCode::NoError) =>
        {
            (AuthResult::Temperror, Some(e))
        }
        DkimResult::PermError(e) => (AuthResult::Permerror, Some(e)),
    }
}

/// The chain's validation in RFC 8617's words (none, pass, fail); a DNS failure stays
/// `temperror`, so a chain is never failed for our resolver's trouble.
fn arc_verification(out: &ArcOutput<'_>) -> Verification {
    let (result, error) = match dkim_result(out.result()) {
        (AuthResult::Pass, _) => (AuthResult::Pass, None),
        (AuthResult::None, _) => (AuthResult::None, None),
        (AuthResult::Temperror, e) => (AuthResult::Temperror, e),
        (_, e) => (AuthResult::Fail, e),
    };
    let domain = out
        .sets()
        .last()
        .map(|s| s.seal.header.d.to_ascii_lowercase())
        .unwrap_or_default();
    Verification {
        result,
        domain,
        detail: error.map(ToString::to_string),
    }
}

/// Results for a verification that did not finish at all: every method `temperror`.
fn unfinished(client: &Client) -> Verified {
    let identity = spf_identity(client);
    Verified {
        results: AuthResults {
            spf: timed_out(identity_domain(&identity)),
            dkim: Vec::new(),
            dmarc: timed_out(""),
            arc: timed_out(""),
        },
        spf_identity: identity,
        signatures: Vec::new(),
        dmarc_policy: None,
        signatures_skipped: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_sender_is_checked_by_its_helo_name() {
        let mut c = Client {
            ip: IpAddr::from([192, 0, 2, 1]),
            helo: "mail.origin.example".into(),
            mail_from: Some("alice@origin.example".into()),
            host: "mx.example.com".into(),
        };
        assert_eq!(
            spf_identity(&c),
            SpfIdentity::MailFrom("alice@origin.example".into())
        );
        assert_eq!(identity_domain(&spf_identity(&c)), "origin.example");
        c.mail_from = None;
        assert_eq!(
            spf_identity(&c),
            SpfIdentity::Helo("mail.origin.example".into())
        );
        assert_eq!(identity_domain(&spf_identity(&c)), "mail.origin.example");
    }

    #[test]
    fn only_domain_names_are_asked_about() {
        assert!(is_domain("mail.origin.example"));
        assert!(is_domain("localhost"));
        assert!(!is_domain("[192.0.2.1]"));
        assert!(!is_domain("a..b"));
        assert!(!is_domain(""));
        assert!(!is_domain(&"a".repeat(64)));
    }

    #[test]
    fn a_servfail_behind_a_missing_key_is_temporary() {
        let servfail = DkimResult::PermError(Error::DnsRecordNotFound(ResponseCode::ServFail));
        assert_eq!(dkim_result(&servfail).0, AuthResult::Temperror);
        let nx = DkimResult::PermError(Error::DnsRecordNotFound(ResponseCode::NXDomain));
        assert_eq!(dkim_result(&nx).0, AuthResult::Permerror);
        let dns = DkimResult::TempError(Error::DnsError("timeout".into()));
        assert_eq!(dkim_result(&dns).0, AuthResult::Temperror);
        assert_eq!(
            dkim_result(&DkimResult::Fail(Error::FailedVerification)).0,
            AuthResult::Fail
        );
    }

    #[tokio::test]
    async fn a_dns_server_that_never_answers_gives_temperror_within_the_bound() {
        // A bound UDP socket that reads nothing: every query goes unanswered.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let v = Verifier::with_nameserver(silent.local_addr().unwrap())
            .with_timeout(Duration::from_millis(300));
        let message = Bytes::from_static(
            b"From: a@origin.example\r\nDKIM-Signature: v=1; a=rsa-sha256; d=origin.example; s=s; h=from; bh=AAAA; b=AAAA\r\n\r\nbody\r\n",
        );
        let client = Client {
            ip: IpAddr::from([192, 0, 2, 1]),
            helo: "client.example".into(),
            mail_from: Some("a@origin.example".into()),
            host: "mx.example.com".into(),
        };
        let started = std::time::Instant::now();
        let got = v.verify(message, client).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(got.results.spf.result, AuthResult::Temperror);
        assert_eq!(got.results.dmarc.result, AuthResult::Temperror);
    }
}
