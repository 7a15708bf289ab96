//! The conditions on verification results (`if dmarc fail`, `if dkim pass for DOMAIN`) and
//! a test block's `auth` setting, both read with the words of `auth::results`.

use super::Resolver;
use super::values;
use crate::ast::Text;
use crate::auth::AuthResults;
use crate::auth::results;
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{AuthMethod, Predicate};
use crate::source::Span;

impl Resolver<'_> {
    pub(super) fn auth_predicate(
        &mut self,
        method: &Text,
        words: &[Text],
        domains: &[Text],
        for_kw: Option<Span>,
    ) -> Option<Predicate> {
        // The grammar only takes the four method words.
        let method_span = method.span;
        let method = results::method(&method.value).ok()?;
        if words.is_empty() {
            self.diags.push(
                Diagnostic::new(
                    Code::E014,
                    format!("`{}` needs the results to test", method.keyword()),
                )
                .primary(method_span, "no result before `for`")
                .help(format!(
                    "write e.g. `{} pass for DOMAIN`; results are pass, fail, softfail, neutral, none, temperror, permerror",
                    method.keyword()
                )),
            );
            return None;
        }
        let mut found = Vec::new();
        let mut bad = false;
        for w in words {
            match results::result(&w.value) {
                Ok(r) if !found.contains(&r) => found.push(r),
                Ok(_) => {}
                Err(why) => {
                    bad = true;
                    self.diags.push(
                        Diagnostic::new(
                            Code::E014,
                            format!("`{}` is not a verification result", w.value),
                        )
                        .primary(
                            w.span,
                            "expected pass, fail, softfail, neutral, none, temperror or permerror",
                        )
                        .help(
                            why.split_once("; ")
                                .map_or(why.as_str(), |(_, h)| h)
                                .to_string(),
                        ),
                    );
                }
            }
        }
        if let (Some(at), false) = (for_kw, method == AuthMethod::Dkim) {
            self.diags.push(
                Diagnostic::new(
                    Code::E085,
                    format!("`for` limits `dkim` only, not `{}`", method.keyword()),
                )
                .primary(at, "only a DKIM signature has a domain of its own to test")
                .help(match method {
                    AuthMethod::Dmarc => "DMARC is always about the From domain: add `if sender domain-is DOMAIN` to test it",
                    AuthMethod::Spf => "SPF is about the envelope sender's domain: add `if sender domain-is DOMAIN` to test it",
                    _ => "remove `for ...`",
                }),
            );
            return None;
        }
        let checked: Vec<String> = domains
            .iter()
            .filter_map(|t| self.check(values::domain(t)))
            .collect();
        if bad || checked.len() != domains.len() {
            return None;
        }
        Some(Predicate::Auth {
            method,
            results: found,
            domains: checked,
        })
    }

    /// A test block's `auth spf=pass, dkim=pass:partner.example, ...`.
    pub(super) fn test_auth(&mut self, entries: &[&Text]) -> Option<AuthResults> {
        // Each entry alone first, so a mistake is pointed at where it is.
        for t in entries {
            if let Err(why) = AuthResults::from_spec(&t.value) {
                let message = format!("`{}` is not a verification result", t.value);
                self.diags.push(auth_spec_error(t.span, message, why));
                return None;
            }
        }
        let spec: Vec<&str> = entries.iter().map(|t| t.value.as_str()).collect();
        match AuthResults::from_spec(&spec.join(", ")) {
            Ok(r) => Some(r),
            Err(why) => {
                let first = entries.first()?.span;
                let at = entries.last().map_or(first, |t| first.to(t.span));
                let message = "a method is given twice in `auth`".to_string();
                self.diags.push(auth_spec_error(at, message, why));
                None
            }
        }
    }
}

fn auth_spec_error(at: Span, message: String, why: String) -> Diagnostic {
    Diagnostic::new(Code::E014, message)
        .primary(at, why)
        .help("write `auth spf=pass, dkim=pass:partner.example, dmarc=fail, arc=none`; methods not given are `none`")
}
