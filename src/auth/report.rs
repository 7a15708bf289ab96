//! What verifying a message found, written out: the `Authentication-Results` field the relay
//! adds (RFC 8601) and the same results as the text of an `ARC-Authentication-Results`
//! (RFC 8617); and which incoming `Authentication-Results` fields claim the relay's own
//! authserv-id, forgeries to remove (RFC 8601 section 5). Pure: [`super::verify`] fills a
//! [`Verified`], the relay writes it.

use super::results::{AuthResults, Verification};
use crate::model::AuthResult;

/// The identity SPF checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfIdentity {
    /// The MAIL FROM address.
    MailFrom(String),
    /// The HELO name (the null sender's identity, RFC 7208 section 2.4).
    Helo(String),
}

/// What the A-R field says of one DKIM signature besides its result and domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignatureInfo {
    /// `s=`.
    pub selector: String,
    /// The first characters of `b=`, telling two signatures of one domain apart (RFC 6008).
    pub b: String,
}

/// Everything verified about one message, with what its fields need to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The results rules read.
    pub results: AuthResults,
    /// What SPF checked.
    pub spf_identity: SpfIdentity,
    /// Per entry of `results.dkim`, in the same order.
    pub signatures: Vec<SignatureInfo>,
    /// The DMARC policy that applied (`reject`, `quarantine`, `none`), when a record exists.
    pub dmarc_policy: Option<String>,
    /// Signatures past the cap that were not verified at all.
    pub signatures_skipped: usize,
}

impl Verified {
    /// `Authentication-Results: ID;` and one folded line per method, CRLF-terminated.
    pub fn header_field(&self, authserv_id: &str) -> String {
        let mut out = format!("Authentication-Results: {}", token(authserv_id));
        for r in self.resinfos() {
            out.push_str(";\r\n\t");
            out.push_str(&r);
        }
        out.push_str("\r\n");
        out
    }

    /// The same results on one line (`ID; spf=...; dkim=...`), the payload of an
    /// `ARC-Authentication-Results` field. One line with single spaces, because mail-auth
    /// writes this text unchanged into the seal's signed form, where relaxed
    /// canonicalization of folded text would differ.
    pub fn arc_results(&self, authserv_id: &str) -> String {
        let mut out = token(authserv_id);
        for r in self.resinfos() {
            out.push_str("; ");
            out.push_str(&r);
        }
        out
    }

    fn resinfos(&self) -> Vec<String> {
        let r = &self.results;
        let mut out = Vec::with_capacity(4 + r.dkim.len());
        let spf = match &self.spf_identity {
            SpfIdentity::MailFrom(a) => format!("smtp.mailfrom={}", property(a)),
            SpfIdentity::Helo(h) => format!("smtp.helo={}", property(h)),
        };
        out.push(format!(
            "spf={}{} {spf}",
            r.spf.result.keyword(),
            comment(&r.spf)
        ));
        if r.dkim.is_empty() {
            out.push("dkim=none".to_string());
        }
        let last = r.dkim.len().saturating_sub(1);
        for (n, v) in r.dkim.iter().enumerate() {
            let mut s = format!("dkim={}{}", v.result.keyword(), comment(v));
            if !v.domain.is_empty() {
                s.push_str(&format!(" header.d={}", property(&v.domain)));
            }
            if let Some(info) = self.signatures.get(n) {
                if !info.selector.is_empty() {
                    s.push_str(&format!(" header.s={}", property(&info.selector)));
                }
                if !info.b.is_empty() {
                    s.push_str(&format!(" header.b={}", property(&info.b)));
                }
            }
            if n == last && self.signatures_skipped > 0 {
                s.push_str(&format!(
                    " ({} further signatures not verified)",
                    self.signatures_skipped
                ));
            }
            out.push(s);
        }
        let mut dmarc = format!("dmarc={}", r.dmarc.result.keyword());
        if let Some(p) = &self.dmarc_policy {
            dmarc.push_str(&format!(" (p={})", property(p)));
        } else {
            dmarc.push_str(&comment(&r.dmarc));
        }
        if !r.dmarc.domain.is_empty() {
            dmarc.push_str(&format!(" header.from={}", property(&r.dmarc.domain)));
        }
        out.push(dmarc);
        out.push(format!("arc={}{}", r.arc.result.keyword(), comment(&r.arc)));
        out
    }
}

/// ` (detail)` when there is one, as a comment: parentheses, backslashes and control
/// characters left out so it can neither end early nor break the field, `;` and `=` so a
/// naive reader cannot take it for a result.
fn comment(v: &Verification) -> String {
    match &v.detail {
        Some(d) => {
            let text: String = d
                .chars()
                .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
                .filter(|c| !matches!(c, '(' | ')' | '\\' | ';' | '='))
                .collect();
            let words: Vec<&str> = text.split_whitespace().take(16).collect();
            if words.is_empty() {
                String::new()
            } else {
                format!(" ({})", words.join(" "))
            }
        }
        None => String::new(),
    }
}

/// A property value: printable ASCII but for `;`, `(`, `)`, `"` and `\`, which would end or
/// break the resinfo; anything else becomes `?`. Values come from the message and the
/// client, so this is what keeps them from forging a result of their own.
fn property(s: &str) -> String {
    s.chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, ';' | '(' | ')' | '"' | '\\') {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The authserv-id as a token (it comes from the rule set; a stray blank must not split it).
fn token(s: &str) -> String {
    let t = property(s);
    if t.is_empty() { "?".to_string() } else { t }
}

/// The authserv-id an `Authentication-Results` value starts with: the first token after
/// blanks and comments (RFC 8601's CFWS), up to `;`, a blank or a comment.
pub fn authserv_id(value: &str) -> Option<&str> {
    let rest = skip_cfws(value);
    let end = rest
        .find(|c: char| c == ';' || c == '(' || c.is_whitespace())
        .unwrap_or(rest.len());
    let id = rest.get(..end)?;
    let id = id.trim_matches('"');
    (!id.is_empty()).then_some(id)
}

fn skip_cfws(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        let Some(inner) = s.strip_prefix('(') else {
            return s;
        };
        // Comments nest (RFC 5322 section 3.2.2); an unclosed one swallows the rest.
        let mut depth = 1usize;
        let mut end = inner.len();
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        s = inner.get(end..).unwrap_or_default();
    }
}

/// Whether a field named `name` with `value` is an `Authentication-Results` that claims
/// `ours` (compared case-insensitively, as RFC 8601 section 5 has it): a result we did not
/// write, to be removed before anything downstream trusts it.
pub fn is_forged(name: &str, value: &str, ours: &str) -> bool {
    name.trim().eq_ignore_ascii_case("Authentication-Results")
        && authserv_id(value).is_some_and(|id| same_id(id, ours))
}

/// Whether `id` names `ours` to a lenient reader too: a quoted-pair (`"mx\.example"`) is
/// the character it escapes, and a trailing dot is the same DNS name, so either would slip
/// a forgery past an exact comparison.
fn same_id(id: &str, ours: &str) -> bool {
    let mut unescaped = String::with_capacity(id.len());
    let mut chars = id.chars();
    while let Some(c) = chars.next() {
        unescaped.extend(if c == '\\' { chars.next() } else { Some(c) });
    }
    let bare = |s: &str| s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    bare(&unescaped) == bare(ours)
}

/// A result a verification that did not finish in time gets.
pub fn timed_out(domain: &str) -> Verification {
    Verification {
        result: AuthResult::Temperror,
        domain: domain.to_string(),
        detail: Some("verification timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Verified {
        Verified {
            results: AuthResults {
                spf: Verification::new(AuthResult::Pass, "origin.example"),
                dkim: vec![
                    Verification::new(AuthResult::Pass, "origin.example"),
                    Verification {
                        result: AuthResult::Fail,
                        domain: "esp.example".into(),
                        detail: Some("body hash did not verify".into()),
                    },
                ],
                dmarc: Verification::new(AuthResult::Pass, "origin.example"),
                arc: Verification::new(AuthResult::None, ""),
            },
            spf_identity: SpfIdentity::MailFrom("alice@origin.example".into()),
            signatures: vec![
                SignatureInfo {
                    selector: "s1".into(),
                    b: "AbCdEfGh".into(),
                },
                SignatureInfo {
                    selector: "esp".into(),
                    b: "ZyXw".into(),
                },
            ],
            dmarc_policy: Some("reject".into()),
            signatures_skipped: 0,
        }
    }

    #[test]
    fn the_field_names_each_method_with_its_identity() {
        assert_eq!(
            sample().header_field("mx.example.com"),
            "Authentication-Results: mx.example.com;\r\n\
             \tspf=pass smtp.mailfrom=alice@origin.example;\r\n\
             \tdkim=pass header.d=origin.example header.s=s1 header.b=AbCdEfGh;\r\n\
             \tdkim=fail (body hash did not verify) header.d=esp.example header.s=esp header.b=ZyXw;\r\n\
             \tdmarc=pass (p=reject) header.from=origin.example;\r\n\
             \tarc=none\r\n"
        );
        assert_eq!(
            sample().arc_results("mx.example.com"),
            "mx.example.com; spf=pass smtp.mailfrom=alice@origin.example; \
             dkim=pass header.d=origin.example header.s=s1 header.b=AbCdEfGh; \
             dkim=fail (body hash did not verify) header.d=esp.example header.s=esp header.b=ZyXw; \
             dmarc=pass (p=reject) header.from=origin.example; arc=none"
        );
    }

    #[test]
    fn no_signature_is_dkim_none_and_the_null_sender_is_checked_by_helo() {
        let mut v = sample();
        v.results.dkim.clear();
        v.signatures.clear();
        v.spf_identity = SpfIdentity::Helo("client.example".into());
        v.results.dmarc = timed_out("origin.example");
        v.dmarc_policy = None;
        let f = v.header_field("mx");
        assert!(f.contains("\tspf=pass smtp.helo=client.example;"), "{f}");
        assert!(f.contains("\tdkim=none;"), "{f}");
        assert!(
            f.contains("\tdmarc=temperror (verification timed out) header.from=origin.example;"),
            "{f}"
        );
    }

    #[test]
    fn skipped_signatures_are_said_and_hostile_values_cannot_add_results() {
        let mut v = sample();
        v.signatures_skipped = 990;
        v.spf_identity = SpfIdentity::MailFrom("x;dkim=pass@evil (\r\n\tdkim=pass".into());
        v.results.dkim[1].detail = Some("a) ; dkim=pass (b".into());
        let f = v.header_field("mx");
        assert!(f.contains("header.b=ZyXw (990 further signatures not verified);"));
        assert!(
            f.contains("smtp.mailfrom=x?dkim=pass@evil?????dkim=pass;"),
            "{f}"
        );
        assert!(f.contains("dkim=fail (a dkimpass b) header.d"), "{f}");
        // Only the field's own folds: every line break is one we put before a method.
        assert_eq!(f.matches("\r\n").count(), 6);
    }

    #[test]
    fn the_authserv_id_is_the_first_token_after_comments() {
        assert_eq!(
            authserv_id(" mx.example.com; spf=pass"),
            Some("mx.example.com")
        );
        assert_eq!(
            authserv_id("mx.example.com 1; none"),
            Some("mx.example.com")
        );
        assert_eq!(
            authserv_id(" (a (nested) comment)\r\n\tMX.Example.COM;dkim=pass"),
            Some("MX.Example.COM")
        );
        assert_eq!(authserv_id("mx(comment);"), Some("mx"));
        assert_eq!(authserv_id("  ; spf=pass"), None);
        assert_eq!(authserv_id(" (unclosed"), None);
    }

    #[test]
    fn an_escaped_or_fully_qualified_spelling_of_our_id_is_forged() {
        let ours = "mx.example.com";
        for v in [
            " \"mx.example\\.com\"; dmarc=pass",
            " mx.example.com.; dmarc=pass",
            " \"MX\\.EXAMPLE.COM.\"; dmarc=pass",
        ] {
            assert!(is_forged("Authentication-Results", v, ours), "{v}");
        }
        for v in [
            " mx.example.com..; x",
            " mx.example.co; x",
            " mx.example.com.evil; x",
        ] {
            assert!(!is_forged("Authentication-Results", v, ours), "{v}");
        }
    }

    #[test]
    fn only_results_claiming_our_id_are_forged() {
        let ours = "mx.example.com";
        assert!(is_forged(
            "Authentication-Results",
            " mx.example.com; dkim=pass",
            ours
        ));
        assert!(is_forged(
            "authentication-results",
            " MX.EXAMPLE.COM; dkim=pass",
            ours
        ));
        assert!(is_forged(
            "Authentication-Results ",
            " (x) mx.example.com;",
            ours
        ));
        assert!(!is_forged(
            "Authentication-Results",
            " mx.partner.example; dkim=pass",
            ours
        ));
        assert!(!is_forged(
            "Authentication-Results",
            " mx.example.com.evil; spf=pass",
            ours
        ));
        assert!(!is_forged(
            "ARC-Authentication-Results",
            " i=1; mx.example.com;",
            ours
        ));
        assert!(!is_forged(
            "X-Authentication-Results",
            " mx.example.com;",
            ours
        ));
    }
}
