//! What verifying a message found: SPF, each DKIM signature, DMARC and the ARC chain, as
//! the relay's verification reports them and rules (`if dmarc fail`) read them. Pure data:
//! the evaluator takes it as input beside the envelope, so it never does DNS itself.

use crate::model::{AuthMethod, AuthResult};
use serde::Serialize;

/// One verification's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// The result.
    pub result: AuthResult,
    /// The domain it is about: SPF's MAIL FROM (or HELO) domain, a signature's `d=`, the
    /// From domain for DMARC; empty where there is none.
    pub domain: String,
    /// Detail for the trace and `Authentication-Results` comments (a selector, a reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Verification {
    /// A result with nothing to say beyond its domain.
    pub fn new(result: AuthResult, domain: impl Into<String>) -> Self {
        Verification {
            result,
            domain: domain.into(),
            detail: None,
        }
    }
}

/// Everything verified about one message that arrived from the Internet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthResults {
    /// SPF of the envelope sender.
    pub spf: Verification,
    /// One per DKIM signature, in header order (empty: no signature).
    pub dkim: Vec<Verification>,
    /// DMARC of the From domain.
    pub dmarc: Verification,
    /// The ARC chain that arrived (`none`: no chain).
    pub arc: Verification,
}

impl AuthResults {
    /// Whether a rule's `METHOD RESULT, ... [for DOMAIN, ...]` holds. `dkim` with no
    /// signature at all has the result `none`; `for` limits `dkim` to signatures of those
    /// domains (lowercase, exact).
    pub fn holds(&self, method: AuthMethod, results: &[AuthResult], domains: &[String]) -> bool {
        match method {
            AuthMethod::Spf => results.contains(&self.spf.result),
            AuthMethod::Dmarc => results.contains(&self.dmarc.result),
            AuthMethod::Arc => results.contains(&self.arc.result),
            AuthMethod::Dkim => {
                if self.dkim.is_empty() {
                    return domains.is_empty() && results.contains(&AuthResult::None);
                }
                self.dkim.iter().any(|v| {
                    results.contains(&v.result)
                        && (domains.is_empty()
                            || domains.iter().any(|d| d.eq_ignore_ascii_case(&v.domain)))
                })
            }
        }
    }
}

/// A rule's test against a message that was not verified (not Internet mail, or no
/// `authentication` block): every method's result is `none`.
pub fn holds_unverified(results: &[AuthResult], domains: &[String]) -> bool {
    domains.is_empty() && results.contains(&AuthResult::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuthResults {
        AuthResults {
            spf: Verification::new(AuthResult::Softfail, "example.org"),
            dkim: vec![
                Verification::new(AuthResult::Fail, "example.org"),
                Verification::new(AuthResult::Pass, "esp.example"),
            ],
            dmarc: Verification::new(AuthResult::Fail, "example.org"),
            arc: Verification::new(AuthResult::None, ""),
        }
    }

    #[test]
    fn dkim_for_a_domain_looks_at_that_domains_signatures_only() {
        let r = sample();
        let pass = [AuthResult::Pass];
        assert!(r.holds(AuthMethod::Dkim, &pass, &[]));
        assert!(r.holds(AuthMethod::Dkim, &pass, &["esp.example".into()]));
        assert!(!r.holds(AuthMethod::Dkim, &pass, &["example.org".into()]));
        assert!(r.holds(
            AuthMethod::Dkim,
            &[AuthResult::Fail],
            &["example.org".into()]
        ));
        assert!(!r.holds(AuthMethod::Dkim, &[AuthResult::None], &[]));
    }

    #[test]
    fn no_signature_is_dkim_none() {
        let mut r = sample();
        r.dkim.clear();
        assert!(r.holds(AuthMethod::Dkim, &[AuthResult::None], &[]));
        assert!(!r.holds(AuthMethod::Dkim, &[AuthResult::None], &["x.example".into()]));
        assert!(r.holds(AuthMethod::Dmarc, &[AuthResult::Fail], &[]));
        assert!(r.holds(
            AuthMethod::Spf,
            &[AuthResult::Softfail, AuthResult::Fail],
            &[]
        ));
        assert!(holds_unverified(&[AuthResult::None], &[]));
        assert!(!holds_unverified(&[AuthResult::Fail], &[]));
    }
}
