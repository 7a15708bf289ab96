//! The `dkim-key` blocks and the `authentication` block: signing keys read and checked at
//! `check` (so the relay's load cannot fail on them later), and the verification, ARC and
//! SRS settings with the cross-checks that need the whole rule set (a sealing domain needs
//! a key, the SRS domain must be one of ours).

use super::Resolver;
use super::settings::{Arity, Schema, Settings};
use super::values;
use crate::ast::{Block, Setting, Text};
use crate::auth::dkim::PrivateKey;
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Authentication, DkimKey, Spanned, SrsSettings};
use crate::source::Span;
use std::collections::HashMap;
use std::path::PathBuf;

pub(super) const DKIM_KEY: Schema = &[("selector", Arity::One), ("key", Arity::One)];

pub(super) const AUTHENTICATION: Schema = &[
    ("authserv-id", Arity::One),
    ("arc-seal", Arity::One),
    ("srs-domain", Arity::One),
    ("srs-secret", Arity::List),
    ("srs-max-age", Arity::One),
];

/// An SRS secret is an HMAC key an attacker may guess offline from one SRS address.
const MIN_SRS_SECRET_CHARS: usize = 16;

/// SRS0 timestamps count days modulo 1024 (the SRS spec), so an older address cannot be
/// told from a new one.
const MAX_SRS_AGE_DAYS: u64 = 1023;

const DEFAULT_SRS_AGE_DAYS: u32 = 21;

impl Resolver<'_> {
    pub(super) fn dkim_key(&mut self, block: &Block) {
        let s = Settings::read("dkim-key", &block.settings, DKIM_KEY, &mut self.diags);
        let domain = self.check(values::domain(&block.name));
        let selector = s.one("selector").and_then(|t| self.selector(t));
        let key = s.one("key").and_then(|t| self.dkim_key_file(t));
        for missing in ["selector", "key"].into_iter().filter(|n| !s.has(n)) {
            self.diags.push(
                Diagnostic::new(
                    Code::E017,
                    format!("dkim-key `{}` has no `{missing}`", block.name.value),
                )
                .primary(block.name.span, "a key cannot sign without it")
                .help("write `selector NAME` (the `s=` tag) and `key \"FILE.pem\"`"),
            );
        }
        match (domain, selector, key) {
            (Some(domain), Some(selector), Some(key)) => self.set.dkim_keys.push(DkimKey {
                domain: Spanned::new(domain, block.name.span),
                selector,
                key,
                span: block.span,
            }),
            _ => self
                .broken_dkim_domains
                .push(block.name.value.to_ascii_lowercase()),
        }
    }

    fn selector(&mut self, t: &Text) -> Option<Spanned<String>> {
        match selector_problem(&t.value) {
            None => Some(Spanned::new(t.value.clone(), t.span)),
            Some(why) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::E081,
                        format!("`{}` is not a valid DKIM selector", t.value),
                    )
                    .primary(t.span, why)
                    .help("use letters, digits and hyphens, with dots between labels (`mf2026`, `s1.eu`)"),
                );
                None
            }
        }
    }

    /// Reads the key file as the relay will, so what passes here signs.
    fn dkim_key_file(&mut self, t: &Text) -> Option<Spanned<PathBuf>> {
        let path = self.relative_path(t);
        let pem = match crate::input::read_limited(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::E033,
                        format!("the DKIM key file `{}` cannot be used", t.value),
                    )
                    .primary(
                        t.span,
                        format!("cannot read `{}`: {}", path.display(), super::io_reason(&e)),
                    )
                    .help(
                        "point at a PEM private key; paths are relative to the rule file's folder",
                    ),
                );
                return None;
            }
        };
        match PrivateKey::from_pem(&pem) {
            Err(why) => {
                self.diags.push(
                    Diagnostic::new(
                        Code::E080,
                        format!("`{}` is not a usable DKIM key", t.value),
                    )
                    .primary(t.span, why.to_string())
                    .help("make one with `mailflow dkim keygen DOMAIN SELECTOR`"),
                );
                None
            }
            // RSA keys under 2048 bits never get here: the signer (ring) refuses them, so
            // `from_pem` reports them and a warning for weak keys could not fire.
            Ok(_) => Some(Spanned::new(path, t.span)),
        }
    }

    pub(super) fn authentication(&mut self, settings: &[Setting], span: Span) {
        if let Some(first) = &self.set.authentication {
            self.diags.push(
                Diagnostic::new(Code::E084, "the `authentication` block is given twice")
                    .primary(keyword(span), "given again here")
                    .secondary(keyword(first.span), "first given here")
                    .help("merge the two blocks into one"),
            );
            return;
        }
        let s = Settings::read(
            "authentication block",
            settings,
            AUTHENTICATION,
            &mut self.diags,
        );
        let authserv_id = s.one("authserv-id").and_then(|t| {
            let v = self.check(values::domain(t))?;
            Some(Spanned::new(v, t.span))
        });
        let arc_seal = s.one("arc-seal").and_then(|t| {
            let v = self.check(values::domain(t))?;
            Some(Spanned::new(v, t.span))
        });
        let srs = self.srs_settings(&s);
        self.set.authentication = Some(Authentication {
            span,
            authserv_id,
            arc_seal,
            srs,
        });
    }

    fn srs_settings(&mut self, s: &Settings<'_>) -> Option<SrsSettings> {
        let domain = s.one("srs-domain");
        let secrets = s.list("srs-secret");
        match (domain, secrets.first()) {
            (None, None) => {
                if let Some(t) = s.one("srs-max-age") {
                    self.diags.push(srs_missing("srs-domain", t.span));
                }
                return None;
            }
            (Some(d), None) => {
                self.diags.push(srs_missing("srs-secret", d.span));
                return None;
            }
            (None, Some(t)) => {
                self.diags.push(srs_missing("srs-domain", t.span));
                return None;
            }
            (Some(_), Some(_)) => {}
        }
        for t in &secrets {
            let chars = t.value.chars().count();
            if chars < MIN_SRS_SECRET_CHARS {
                self.diags.push(
                    Diagnostic::new(
                        Code::W060,
                        format!("an SRS secret of {chars} characters can be guessed"),
                    )
                    .primary(t.span, "shorter than 16 characters")
                    .help("use a long random secret, e.g. the output of `openssl rand -base64 32`"),
                );
            }
        }
        let max_age_days = match s.one("srs-max-age") {
            None => DEFAULT_SRS_AGE_DAYS,
            Some(t) => self.srs_max_age(t)?,
        };
        let domain = domain.and_then(|t| {
            let v = self.check(values::domain(t))?;
            Some(Spanned::new(v, t.span))
        });
        Some(SrsSettings {
            domain: domain?,
            secrets: secrets
                .into_iter()
                .map(|t| Spanned::new(t.value.clone(), t.span))
                .collect(),
            max_age_days,
        })
    }

    fn srs_max_age(&mut self, t: &Text) -> Option<u32> {
        let secs = self.check(values::duration(t))?.as_secs();
        let days = secs / 86_400;
        if secs % 86_400 != 0 || !(1..=MAX_SRS_AGE_DAYS).contains(&days) {
            self.diags.push(
                Diagnostic::new(
                    Code::E014,
                    format!("`{}` is not an SRS address lifetime", t.value),
                )
                .primary(
                    t.span,
                    format!("expected whole days from 1 to {MAX_SRS_AGE_DAYS}"),
                )
                .help("SRS timestamps count days: write e.g. `21d`"),
            );
            return None;
        }
        u32::try_from(days).ok()
    }

    /// The checks that need every item read: keys, accepted domains and the block may come
    /// in any order and any file.
    pub(super) fn authentication_references(&mut self) {
        let mut seen: HashMap<(String, String), Span> = HashMap::new();
        let mut found = Vec::new();
        for k in &self.set.dkim_keys {
            let id = (
                k.domain.value.clone(),
                k.selector.value.to_ascii_lowercase(),
            );
            if let Some(first) = seen.get(&id) {
                found.push(
                    Diagnostic::new(
                        Code::E011,
                        format!(
                            "the dkim-key `{}._domainkey.{}` is defined twice",
                            k.selector.value, k.domain.value
                        ),
                    )
                    .primary(k.selector.span, "defined again here")
                    .secondary(*first, "first defined here")
                    .help("one DNS record publishes one key: give the second key its own selector"),
                );
            } else {
                seen.insert(id, k.selector.span);
            }
        }
        let Some(auth) = &self.set.authentication else {
            self.diags.extend(found);
            return;
        };
        if let Some(seal) = &auth.arc_seal {
            let known = self
                .set
                .dkim_keys
                .iter()
                .any(|k| k.domain.value == seal.value)
                || self.broken_dkim_domains.contains(&seal.value);
            if !known {
                found.push(
                    Diagnostic::new(
                        Code::E082,
                        format!("`arc-seal {}` has no dkim-key to seal with", seal.value),
                    )
                    .primary(seal.span, "no `dkim-key` for this domain")
                    .help(format!(
                        "add `dkim-key \"{}\" {{ selector NAME; key \"FILE.pem\" }}`",
                        seal.value
                    )),
                );
            }
        }
        if let Some(srs) = &auth.srs {
            let ours = self
                .set
                .accepted_domains
                .iter()
                .any(|d| d.domain.value.matches(&srs.domain.value));
            if !ours {
                found.push(
                    Diagnostic::new(
                        Code::E083,
                        format!(
                            "the SRS domain `{}` is not an accepted domain",
                            srs.domain.value
                        ),
                    )
                    .primary(
                        srs.domain.span,
                        "bounces to SRS addresses would not come back here",
                    )
                    .help(format!(
                        "add `accepted-domain {}`, or use one of the accepted domains",
                        srs.domain.value
                    )),
                );
            }
        }
        self.diags.extend(found);
    }
}

fn srs_missing(name: &str, at: Span) -> Diagnostic {
    Diagnostic::new(
        Code::E017,
        format!("the authentication block has no `{name}`"),
    )
    .primary(at, "SRS needs both `srs-domain` and `srs-secret`")
    .help(format!("add `{name}`, or remove the other SRS settings"))
}

/// The `authentication` keyword that opens a block.
fn keyword(block: Span) -> Span {
    let start = block.start as usize;
    Span::new(block.file, start, start + "authentication".len())
}

/// Why a selector is not one, if it is not: RFC 6376 3.1 makes it DNS labels of ASCII
/// letters, digits and inner hyphens.
fn selector_problem(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("longer than 253 characters".into());
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Some("an empty label (two dots in a row, or a dot at an end)".into());
        }
        if label.len() > 63 {
            return Some(format!("the label `{label}` is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label `{label}` starts or ends with a hyphen"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Some(format!("`{c}` cannot appear in a selector"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::check::check_text;
    use crate::model::RuleSet;

    fn resolved(text: &str) -> RuleSet {
        let report = check_text("auth.mailflow", text);
        assert!(
            report.diagnostics.is_empty(),
            "{:?}",
            report
                .diagnostics
                .iter()
                .map(|d| &d.message)
                .collect::<Vec<_>>()
        );
        report.rule_sets.into_iter().next().unwrap().rules
    }

    #[test]
    fn blocks_resolve_into_the_model() {
        let set = resolved(
            "accepted-domain *.example.com\n\
             dkim-key \"Example.COM\" { selector mf2026; key \"tests/fixtures/dkim-keys/rsa2048.pem\" }\n\
             dkim-key \"example.com\" { selector ed.2026; key \"tests/fixtures/dkim-keys/ed25519.pem\" }\n\
             authentication {\n  authserv-id mx.example.com\n  arc-seal example.com\n  \
             srs-domain fwd.example.com\n  srs-secret \"a long random secret\", \"the previous long one\"\n  \
             srs-max-age 30d\n}\n\
             send-connector \"Out\" { address-space *; dkim-sign off }\n\
             send-connector \"Other\" { address-space example.org }\n",
        );
        let keys: Vec<(&str, &str)> = set
            .dkim_keys
            .iter()
            .map(|k| (k.domain.value.as_str(), k.selector.value.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("example.com", "mf2026"), ("example.com", "ed.2026")]
        );
        assert!(set.dkim_keys[0].key.value.ends_with("rsa2048.pem"));
        let auth = set.authentication.unwrap();
        assert_eq!(auth.authserv_id.unwrap().value, "mx.example.com");
        assert_eq!(auth.arc_seal.unwrap().value, "example.com");
        let srs = auth.srs.unwrap();
        assert_eq!(srs.domain.value, "fwd.example.com");
        let secrets: Vec<&str> = srs.secrets.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(secrets, ["a long random secret", "the previous long one"]);
        assert_eq!(srs.max_age_days, 30);
        let sign: Vec<bool> = set.send_connectors.iter().map(|c| c.dkim_sign).collect();
        assert_eq!(sign, [false, true]);
    }

    #[test]
    fn srs_lifetime_defaults_to_21_days_and_verification_is_optional() {
        let set = resolved(
            "accepted-domain example.com\n\
             authentication { srs-domain example.com; srs-secret \"0123456789abcdef\" }\n",
        );
        let auth = set.authentication.unwrap();
        assert!(auth.authserv_id.is_none() && auth.arc_seal.is_none());
        assert_eq!(auth.srs.unwrap().max_age_days, 21);
    }

    #[test]
    fn a_broken_key_is_not_reported_again_as_missing() {
        let report = check_text(
            "auth.mailflow",
            "dkim-key \"example.com\" { selector s1; key \"tests/fixtures/dkim-keys/missing.pem\" }\n\
             authentication { authserv-id mx.example.com; arc-seal example.com }\n",
        );
        let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code.id()).collect();
        assert_eq!(codes, ["E033"]);
    }

    #[test]
    fn selectors_are_dns_labels() {
        use super::selector_problem;
        assert_eq!(selector_problem("mf2026"), None);
        assert_eq!(selector_problem("s1.eu-west"), None);
        assert!(selector_problem("").is_some());
        assert!(selector_problem("a..b").is_some());
        assert!(selector_problem("-a").is_some());
        assert!(selector_problem("sél").is_some());
        assert!(selector_problem("a_b").is_some());
        assert!(selector_problem(&"a".repeat(64)).is_some());
    }

    #[test]
    fn srs_lifetime_is_whole_days_within_the_timestamp_range() {
        for bad in ["0d", "36h", "1024d", "3w"] {
            let report = check_text(
                "auth.mailflow",
                &format!(
                    "accepted-domain example.com\nauthentication {{ srs-domain example.com; srs-secret \"0123456789abcdef\"; srs-max-age {bad} }}\n"
                ),
            );
            let codes: Vec<&str> = report.diagnostics.iter().map(|d| d.code.id()).collect();
            assert_eq!(codes, ["E014"], "{bad}");
        }
    }
}
