//! What verifying a message found: SPF, each DKIM signature, DMARC and the ARC chain, as
//! the relay's verification reports them and rules (`if dmarc fail`) read them. Pure data:
//! the evaluator takes it as input beside the envelope, so it never does DNS itself.

use crate::model::{AuthMethod, AuthResult};
use serde::{Deserialize, Serialize};

/// One verification's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

impl AuthResults {
    /// Every method `none`: what a message with nothing to verify reads as.
    pub fn none() -> Self {
        AuthResults {
            spf: Verification::new(AuthResult::None, ""),
            dkim: Vec::new(),
            dmarc: Verification::new(AuthResult::None, ""),
            arc: Verification::new(AuthResult::None, ""),
        }
    }

    /// Reads results as a test block's `auth` setting and `mailflow dry-run --auth` write
    /// them: `spf=pass, dkim=pass:partner.example, dmarc=fail, arc=none`, each
    /// `METHOD=RESULT[:DOMAIN]`. Methods not given are `none`; `dkim` may repeat (one entry
    /// per signature); the others may not. The error is a message for the administrator.
    pub fn from_spec(spec: &str) -> Result<AuthResults, String> {
        let mut out = AuthResults::none();
        let mut given: Vec<AuthMethod> = Vec::new();
        for entry in spec.split(',').map(str::trim) {
            let (method, v) = entry_of(entry)?;
            if method != AuthMethod::Dkim && given.contains(&method) {
                return Err(format!(
                    "`{}` is given twice; only `dkim` may repeat (one entry per signature)",
                    method.keyword()
                ));
            }
            given.push(method);
            match method {
                AuthMethod::Spf => out.spf = v,
                AuthMethod::Dkim => out.dkim.push(v),
                AuthMethod::Dmarc => out.dmarc = v,
                AuthMethod::Arc => out.arc = v,
            }
        }
        Ok(out)
    }

    /// One line for the trace: `spf=pass (example.org), dkim=fail (example.org), ...`.
    pub fn summary(&self) -> String {
        let one = |m: AuthMethod, v: &Verification| {
            let mut s = format!("{}={}", m.keyword(), v.result.keyword());
            if !v.domain.is_empty() {
                s.push_str(&format!(" ({})", v.domain));
            }
            s
        };
        let mut parts = vec![one(AuthMethod::Spf, &self.spf)];
        if self.dkim.is_empty() {
            parts.push("dkim=none".to_string());
        }
        parts.extend(self.dkim.iter().map(|v| one(AuthMethod::Dkim, v)));
        parts.push(one(AuthMethod::Dmarc, &self.dmarc));
        parts.push(one(AuthMethod::Arc, &self.arc));
        parts.join(", ")
    }
}

/// A method named in a rule or a spec.
pub fn method(word: &str) -> Result<AuthMethod, String> {
    const METHODS: [AuthMethod; 4] = [
        AuthMethod::Spf,
        AuthMethod::Dkim,
        AuthMethod::Dmarc,
        AuthMethod::Arc,
    ];
    METHODS
        .into_iter()
        .find(|m| m.keyword() == word)
        .ok_or_else(|| unknown(word, "method", METHODS.map(AuthMethod::keyword)))
}

/// A result word (RFC 8601's), with a suggestion when it is not one.
pub fn result(word: &str) -> Result<AuthResult, String> {
    AuthResult::ALL
        .into_iter()
        .find(|r| r.keyword() == word)
        .ok_or_else(|| unknown(word, "result", AuthResult::ALL.map(AuthResult::keyword)))
}

fn unknown<const N: usize>(word: &str, what: &str, known: [&'static str; N]) -> String {
    match crate::diagnostic::did_you_mean(word, known) {
        Some(s) => format!("`{word}` is not a verification {what}; did you mean `{s}`?"),
        None => format!(
            "`{word}` is not a verification {what}; write one of: {}",
            known.join(", ")
        ),
    }
}

/// `METHOD=RESULT[:DOMAIN]`.
fn entry_of(entry: &str) -> Result<(AuthMethod, Verification), String> {
    let Some((m, rest)) = entry.split_once('=') else {
        return Err(format!(
            "`{entry}` is not `METHOD=RESULT`; write e.g. `dmarc=fail` or `dkim=pass:example.com`"
        ));
    };
    let (r, domain) = rest.split_once(':').unwrap_or((rest, ""));
    let method = method(m.trim().to_ascii_lowercase().as_str())?;
    let result = result(r.trim().to_ascii_lowercase().as_str())?;
    let domain = domain.trim().to_ascii_lowercase();
    if let Some(why) = (!domain.is_empty())
        .then(|| crate::resolve::domain_problem(&domain))
        .flatten()
    {
        return Err(format!("`{domain}` in `{entry}` is not a domain: {why}"));
    }
    Ok((method, Verification::new(result, domain)))
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
    fn a_spec_reads_as_the_results_it_names_and_none_for_the_rest() {
        let r = AuthResults::from_spec(
            "spf=pass, dkim=pass:Partner.Example, dkim=fail:example.org, dmarc=fail",
        )
        .unwrap();
        assert_eq!(r.spf, Verification::new(AuthResult::Pass, ""));
        assert_eq!(
            r.dkim,
            vec![
                Verification::new(AuthResult::Pass, "partner.example"),
                Verification::new(AuthResult::Fail, "example.org"),
            ]
        );
        assert_eq!(r.dmarc.result, AuthResult::Fail);
        assert_eq!(r.arc.result, AuthResult::None);
        assert!(r.holds(
            AuthMethod::Dkim,
            &[AuthResult::Pass],
            &["partner.example".into()]
        ));
        assert_eq!(
            r.summary(),
            "spf=pass, dkim=pass (partner.example), dkim=fail (example.org), dmarc=fail, arc=none"
        );
        assert_eq!(
            AuthResults::from_spec("arc=none").unwrap().summary(),
            "spf=none, dkim=none, dmarc=none, arc=none"
        );
    }

    #[test]
    fn a_bad_spec_says_what_is_wrong() {
        let err = |s: &str| AuthResults::from_spec(s).unwrap_err();
        assert!(err("dmarc=failed").contains("did you mean `fail`"));
        assert!(err("dkm=pass").contains("did you mean `dkim`"));
        assert!(err("spf=pass, spf=fail").contains("given twice"));
        assert!(err("dmarc").contains("METHOD=RESULT"));
        assert!(err("").contains("METHOD=RESULT"));
        assert!(err("dkim=pass:bad..domain").contains("not a domain"));
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
