//! DKIM signing of what leaves: the `DKIM-Signature` fields a delivery attempt puts before
//! the message, one per `dkim-key` of the domain of its `From` address, computed over the
//! bytes that attempt sends (after rewriting and the header firewall's stripping). The
//! scheduler calls [`for_attempt`] once per attempt, which signs on a blocking thread; the
//! keys are the ones read at load ([`crate::auth::keys::KeyStore`]).

use crate::auth::keys::{KeyStore, LoadedKey};
use crate::eval::Message;
use crate::eval::message::Header;
use crate::relay::metrics::Metrics;

/// What signing one message came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Signing {
    /// The fields to put before the message (each ending CRLF), and how many there are.
    Signed(String, usize),
    /// Sent unsigned, and why (for the debug log).
    Unsigned(Unsigned),
}

/// Why a message leaves without our signature.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    /// No `From` field.
    #[error("the message has no `From` field")]
    NoFrom,
    /// More than one `From` field, or a `From` with other than one address: no one domain
    /// to sign for (RFC 6376 leaves it to the signer; DMARC receivers reject such mail).
    #[error("the message has no single `From` address to sign for")]
    NotOneAuthor,
    /// No `dkim-key` for the `From` domain.
    #[error("no `dkim-key` for `{0}`")]
    NoKey(String),
    /// Every key failed to sign (logged per key).
    #[error("every key of `{0}` failed to sign")]
    Failed(String),
}

/// The signatures for `message` (header and body as they will be sent, CRLF lines), one
/// per key of its `From` domain, in the order the keys were defined.
pub fn sign(keys: &KeyStore, message: &[u8]) -> Signing {
    let (domain, signers) = match signers(keys, message) {
        Ok(found) => found,
        Err(why) => return Signing::Unsigned(why),
    };
    let mut fields = String::new();
    let mut n = 0;
    for key in signers {
        match key.signer.sign(message) {
            Ok(field) => {
                fields.push_str(&field);
                n += 1;
            }
            Err(e) => tracing::warn!(
                "DKIM key {}._domainkey.{} did not sign: {e}",
                key.selector,
                key.domain
            ),
        }
    }
    if n == 0 {
        return Signing::Unsigned(Unsigned::Failed(domain));
    }
    Signing::Signed(fields, n)
}

/// The `From` domain of `message` and the keys that sign for it (at least one), or why
/// none does; what [`sign`] signs with, for a dry run to show.
pub fn signers<'k>(
    keys: &'k KeyStore,
    message: &[u8],
) -> Result<(String, Vec<&'k LoadedKey>), Unsigned> {
    let domain = author_domain(message)?;
    let found: Vec<&LoadedKey> = keys.for_domain(&domain).collect();
    if found.is_empty() {
        return Err(Unsigned::NoKey(domain));
    }
    Ok((domain, found))
}

/// The `DKIM-Signature` fields for what a delivery attempt through `c` sends (`stripped`,
/// else `original`; empty: unsigned, by the connector's `dkim-sign off`, for want of keys,
/// or as the debug log says), with the bodies handed back. Off the async workers: an RSA
/// signature and the body hash hold a core for a millisecond to tens of milliseconds
/// (BENCHMARKS.md). The bodies move to the blocking task and back, uncopied; `None` only if
/// that task died (a panic in the signer), and the bodies with it.
pub(crate) async fn for_attempt(
    shared: &super::Shared,
    c: &crate::model::SendConnector,
    id: &crate::queue::QueueId,
    original: Vec<u8>,
    stripped: Option<Vec<u8>>,
) -> Option<(Vec<u8>, Option<Vec<u8>>, String)> {
    let keys = shared.dkim_keys();
    if !c.dkim_sign || keys.is_empty() {
        return Some((original, stripped, String::new()));
    }
    let signing = tokio::task::spawn_blocking(move || {
        let signing = sign(&keys, stripped.as_deref().unwrap_or(&original));
        (original, stripped, signing)
    })
    .await;
    let (original, stripped, signing) = match signing {
        Ok(done) => done,
        Err(e) => {
            tracing::error!("message {id}: the DKIM signer failed: {e}");
            return None;
        }
    };
    let fields = match signing {
        Signing::Signed(fields, n) => {
            Metrics::inc(&shared.metrics.dkim_signed);
            tracing::debug!("message {id}: {n} DKIM signature(s)");
            fields
        }
        Signing::Unsigned(why) => {
            tracing::debug!("message {id}: sent without a DKIM signature: {why}");
            String::new()
        }
    };
    Some((original, stripped, fields))
}

/// The domain (lowercase) of the one address of the one `From` field. Only the header is
/// read (and copied, to parse it); the body is not touched.
fn author_domain(message: &[u8]) -> Result<String, Unsigned> {
    let head = message
        .get(..Message::header_len(message))
        .unwrap_or_default();
    let parsed = Message::parse(head);
    let mut from = parsed
        .headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("From"));
    let field: &Header = from.next().ok_or(Unsigned::NoFrom)?;
    if from.next().is_some() {
        return Err(Unsigned::NotOneAuthor);
    }
    let addresses = crate::eval::message::addresses(field.raw_value());
    let [(_, address)] = addresses.as_slice() else {
        return Err(Unsigned::NotOneAuthor);
    };
    let (_, domain) = address.rsplit_once('@').ok_or(Unsigned::NotOneAuthor)?;
    if domain.is_empty() {
        return Err(Unsigned::NotOneAuthor);
    }
    Ok(domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::dkim::{Algorithm, generate};
    use crate::model::{DkimKey, Spanned};
    use crate::source::{FileId, Span};

    fn store(dir: &std::path::Path, keys: &[(&str, &str, Algorithm)]) -> KeyStore {
        let span = Span {
            file: FileId(0),
            start: 0,
            end: 0,
        };
        let keys: Vec<DkimKey> = keys
            .iter()
            .map(|(domain, selector, alg)| {
                let path = dir.join(format!("{selector}.{domain}.pem"));
                std::fs::write(&path, generate(*alg).unwrap()).unwrap();
                DkimKey {
                    domain: Spanned::new(domain.to_string(), span),
                    selector: Spanned::new(selector.to_string(), span),
                    key: Spanned::new(path, span),
                    span,
                }
            })
            .collect();
        KeyStore::load(&keys).unwrap()
    }

    fn message(from: &str) -> Vec<u8> {
        format!("{from}To: b@partner.example\r\nSubject: hi\r\n\r\nHello.\r\n").into_bytes()
    }

    #[test]
    fn every_key_of_the_from_domain_signs() {
        let dir = tempfile::tempdir().unwrap();
        let keys = store(
            dir.path(),
            &[
                ("shared.example", "rsa1", Algorithm::Rsa(2048)),
                ("other.example", "x", Algorithm::Ed25519),
                ("shared.example", "ed1", Algorithm::Ed25519),
            ],
        );
        let m = message("From: \"John Smith\" <John.Smith@Shared.Example>\r\n");
        let Signing::Signed(fields, 2) = sign(&keys, &m) else {
            panic!("{:?}", sign(&keys, &m))
        };
        let rsa = fields.find("s=rsa1").unwrap();
        let ed = fields.find("s=ed1").unwrap();
        assert!(rsa < ed, "{fields}");
        assert_eq!(fields.matches("DKIM-Signature: ").count(), 2);
        assert_eq!(fields.matches("d=shared.example").count(), 2);
        assert!(fields.contains("a=ed25519-sha256"), "{fields}");
        assert!(fields.ends_with("\r\n"));
    }

    #[test]
    fn no_key_no_from_or_several_authors_leave_unsigned() {
        let dir = tempfile::tempdir().unwrap();
        let keys = store(dir.path(), &[("shared.example", "ed1", Algorithm::Ed25519)]);
        let cases = [
            (
                "From: a@elsewhere.example\r\n",
                Unsigned::NoKey("elsewhere.example".into()),
            ),
            ("", Unsigned::NoFrom),
            (
                "From: a@shared.example, b@shared.example\r\n",
                Unsigned::NotOneAuthor,
            ),
            (
                "From: a@shared.example\r\nFrom: b@shared.example\r\n",
                Unsigned::NotOneAuthor,
            ),
            ("From: undisclosed\r\n", Unsigned::NotOneAuthor),
        ];
        for (from, why) in cases {
            assert_eq!(
                sign(&keys, &message(from)),
                Signing::Unsigned(why),
                "{from}"
            );
        }
        // A From in the body is no author.
        let body_from = b"Subject: x\r\n\r\nFrom: a@shared.example\r\n";
        assert_eq!(sign(&keys, body_from), Signing::Unsigned(Unsigned::NoFrom));
    }
}
