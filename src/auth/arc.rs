//! ARC sealing (RFC 8617): the `ARC-Authentication-Results`, `ARC-Message-Signature` and
//! `ARC-Seal` set the relay puts on verified Internet mail, so a receiver that trusts this
//! relay as a sealer (Exchange Online's `Set-ArcConfig`) can honour what was verified here
//! before the relay rewrote the message and broke its DKIM signature. Pure and synchronous:
//! what to seal is decided from the message's own ARC fields and the chain's validation
//! ([`super::verify`] did that on the message as it arrived); the seal covers the message
//! as it will be stored.

use super::dkim::{PrivateKey, SIGNED_FIELDS};
use super::keys::{KeyStore, LoadedKey};
use crate::model::AuthResult;
use bytes::Bytes;
use mail_auth::arc::{ArcSealer, ChainValidation, Set};
use mail_auth::common::crypto::{Sha256, SigningKey};
use mail_auth::common::headers::{Header, HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, Done};
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimResult, Error};

/// The most ARC sets a chain may have (RFC 8617 section 4.2.1): a message carrying this
/// many is passed on unsealed.
pub const MAX_INSTANCES: usize = 50;

/// A message's ARC chain as its fields say, not validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chain {
    /// How many sets it has.
    pub sets: usize,
    /// The newest seal says `cv=fail`: an earlier sealer found the chain broken.
    pub failed: bool,
    /// Fields missing from a set or not parsing: no instance number to continue from.
    pub malformed: bool,
}

impl Chain {
    /// The chain in a message's header.
    pub fn of(message: &AuthenticatedMessage<'_>) -> Chain {
        let (seals, signatures, results) = (
            &message.as_headers,
            &message.ams_headers,
            &message.aar_headers,
        );
        Chain {
            sets: seals.len(),
            failed: seals
                .last()
                .and_then(|s| s.header.as_ref().ok())
                .is_some_and(|s| s.cv == ChainValidation::Fail),
            malformed: seals.len() != signatures.len()
                || seals.len() != results.len()
                || seals.iter().any(|h| h.header.is_err())
                || signatures.iter().any(|h| h.header.is_err())
                || results.iter().any(|h| h.header.is_err()),
        }
    }
}

/// Whether a verified message gets a seal, and if not why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Seal it: `i=` one past the chain's last set, `cv=` from the validation.
    Seal,
    /// Pass it on as it is, for this reason.
    Skip(&'static str),
}

/// What to do with a message whose chain is `chain` and validated as `validation` when it
/// arrived. A chain that failed validation is sealed `cv=fail` (RFC 8617 section 5.1.2),
/// which tells every later receiver not to trust it; one an earlier sealer already failed
/// gets nothing more (section 5.1.2, step 2). A chain that could not be validated
/// (`temperror`: our DNS) is not sealed either way: `cv=fail` would condemn it for our
/// trouble and `cv=pass` would vouch for what was not checked.
pub fn decide(validation: AuthResult, chain: Chain) -> Decision {
    if chain.malformed {
        Decision::Skip("its ARC fields are incomplete or do not parse")
    } else if chain.failed {
        Decision::Skip("an earlier sealer failed its chain (cv=fail)")
    } else if chain.sets >= MAX_INSTANCES {
        Decision::Skip("its chain has 50 sets, the most RFC 8617 allows")
    } else if validation == AuthResult::Temperror {
        Decision::Skip("its chain could not be validated (temperror)")
    } else {
        Decision::Seal
    }
}

/// The key that seals for `domain`: its first RSA key, since RFC 8617 defines rsa-sha256
/// only; else its first key of any kind; `None` without a `dkim-key` for the domain.
pub fn sealing_key<'k>(keys: &'k KeyStore, domain: &'k str) -> Option<&'k LoadedKey> {
    let rsa = keys
        .for_domain(domain)
        .find(|k| k.signer.dns_record().contains("k=rsa"));
    rsa.or_else(|| keys.for_domain(domain).next())
}

/// The header with its blank line, and the body, of a message as received: the parts
/// [`seal`] takes. A message
/// without a blank line is all header; its header gets one here, for parsing only.
pub fn split_at_body(original: &Bytes) -> (Vec<u8>, Bytes) {
    let len = crate::eval::Message::header_len(original);
    match original.get(len..) {
        Some(rest) if rest.starts_with(b"\r\n") => (
            original.slice(..len + 2).to_vec(),
            original.slice(len + 2..),
        ),
        Some(rest) if rest.starts_with(b"\n") => (
            original.slice(..len + 1).to_vec(),
            original.slice(len + 1..),
        ),
        _ => {
            let mut head = original.to_vec();
            head.extend_from_slice(b"\r\n");
            (head, Bytes::new())
        }
    }
}

/// Why a message was not sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The decision was not to.
    #[error("not sealed: {0}")]
    Skipped(&'static str),
    /// The header does not parse as one.
    #[error("not sealed: the header does not parse")]
    Unparsed,
    /// The key or the signing failed.
    #[error("sealing failed: {0}")]
    Failed(String),
}

/// The ARC set for a message whose header (fields and the blank line, as they will be
/// stored) is `head` and body `body`, sealed with `key`, its AAR carrying `results` (the
/// `Authentication-Results` text after `i=N;`, one line) and its `cv=` following
/// `validation`, the incoming chain's. Three fields, CRLF-terminated, to go on top.
pub fn seal(
    head: &[u8],
    body: &[u8],
    key: &LoadedKey,
    results: &str,
    validation: AuthResult,
) -> Result<String, SealError> {
    let mut message = AuthenticatedMessage::parse(head).ok_or(SealError::Unparsed)?;
    if let Decision::Skip(why) = decide(validation, Chain::of(&message)) {
        return Err(SealError::Skipped(why));
    }
    // The header is parsed alone; the body, kept where it is, is hashed by the sealer (the
    // hashes parsing made are of an empty body).
    message.raw_message = body;
    message.body_offset = 0;
    message.body_hashes.clear();
    let output = chain_output(&message, validation);
    let results = AuthenticationResults::new(results);
    for extra in LAYOUTS {
        let set = match &key.sealing {
            PrivateKey::Rsa(k, _) => {
                sealed(sealer(Borrowed(k), key, extra), &message, &results, &output)
            }
            PrivateKey::Ed25519(k) => {
                sealed(sealer(Borrowed(k), key, extra), &message, &results, &output)
            }
        }?;
        if !signature_ends_in_fold(&set) {
            return Ok(unfold_ends(&set));
        }
    }
    Err(SealError::Failed(
        "no layout of the ARC-Message-Signature the seal can cover".into(),
    ))
}

/// The key parsed at load, lent to one sealer: mail-auth's sealer owns its key and its key
/// types do not clone, and parsing (ring validates an RSA key as it reads it) is work to do
/// once per load, not once per message.
struct Borrowed<'k, T>(&'k T);

impl<T: SigningKey> SigningKey for Borrowed<'_, T> {
    type Hasher = T::Hasher;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn algorithm(&self) -> mail_auth::common::crypto::Algorithm {
        self.0.algorithm()
    }
}

/// Fields signed beyond [`SIGNED_FIELDS`], one list per attempt: each moves where the
/// `ARC-Message-Signature`'s `b=` ends (see [`signature_ends_in_fold`]). Both are
/// oversigned as absent when the message lacks them, which only makes adding them later
/// break the signature.
const LAYOUTS: [&[&str]; 3] = [&[], &["Sender"], &["Sender", "Resent-From"]];

/// Whether the `ARC-Message-Signature` ends in `CRLF TAB ;` (see [`unfold_ends`]). Its own
/// signature needs that fold gone, but the seal, which mail-auth signs over the field as it
/// wrote it, needs it kept: no form satisfies both, so such a set is made again with
/// another layout.
fn signature_ends_in_fold(set: &str) -> bool {
    set.contains("\r\n\t;\r\nARC-Authentication-Results:")
}

fn sealer<T: SigningKey<Hasher = Sha256>>(
    k: T,
    key: &LoadedKey,
    extra: &[&str],
) -> ArcSealer<T, Done> {
    ArcSealer::from_key(k)
        .domain(key.domain.as_str())
        .selector(key.selector.as_str())
        .headers(SIGNED_FIELDS.iter().chain(extra).copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

fn sealed<T: SigningKey<Hasher = Sha256>>(
    sealer: ArcSealer<T, Done>,
    message: &AuthenticatedMessage<'_>,
    results: &AuthenticationResults<'_>,
    output: &ArcOutput<'_>,
) -> Result<String, SealError> {
    sealer
        .seal(message, results, output)
        .map(|set| set.to_header())
        .map_err(|e| SealError::Failed(e.to_string()))
}

/// The incoming chain's sets with its validation, as the sealer continues from them.
fn chain_output<'x>(
    message: &'x AuthenticatedMessage<'x>,
    validation: AuthResult,
) -> ArcOutput<'x> {
    let result = match validation {
        AuthResult::Pass => DkimResult::Pass,
        AuthResult::None => DkimResult::None,
        _ => DkimResult::Fail(Error::ArcBrokenChain),
    };
    let mut output = ArcOutput::default().with_result(result);
    let sets = message
        .as_headers
        .iter()
        .zip(&message.ams_headers)
        .zip(&message.aar_headers);
    for ((seal, signature), results) in sets {
        // INVARIANT: `decide` refused malformed chains, so every field parsed.
        if let (Ok(s), Ok(m), Ok(r)) = (&seal.header, &signature.header, &results.header) {
            output = output.with_set(Set {
                signature: Header::new(signature.name, signature.value, m),
                seal: Header::new(seal.name, seal.value, s),
                results: Header::new(results.name, results.value, r),
            });
        }
    }
    output
}

/// mail-auth 0.7.0 folds a line when the last character of `b=` fills it, ending a field in
/// `CRLF TAB ;`; it signed the field without that fold, and a verifier that empties `b=`
/// keeps the fold's blank (`b= ;`), so the signature would fail. `auth::dkim` fixes its
/// signatures the same way. A line holding only `;` appears nowhere else in a set, and
/// after [`signature_ends_in_fold`] only the `ARC-Seal` can end so, which nothing in this
/// set signs with its `b=`.
fn unfold_ends(set: &str) -> String {
    set.replace("\r\n\t;\r\n", ";\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::dkim::{Algorithm, generate};
    use std::path::PathBuf;

    fn key() -> LoadedKey {
        let pem = generate(Algorithm::Ed25519).unwrap().into_bytes();
        let signer = PrivateKey::from_pem(&pem)
            .unwrap()
            .into_signer("relay.example", "arc1");
        LoadedKey {
            domain: "relay.example".into(),
            selector: "arc1".into(),
            path: PathBuf::from("arc1.pem"),
            sealing: PrivateKey::from_pem(&pem).unwrap(),
            signer,
        }
    }

    const HEAD: &[u8] =
        b"From: Alice <alice@origin.example>\r\nTo: bob@tenant.example\r\nSubject: hi\r\n\r\n";
    const BODY: &[u8] = b"Hello.\r\n";

    fn chain(head: &[u8]) -> Chain {
        Chain::of(&AuthenticatedMessage::parse(head).unwrap())
    }

    #[test]
    fn the_decision_follows_rfc_8617() {
        let fresh = Chain::default();
        assert_eq!(decide(AuthResult::None, fresh), Decision::Seal);
        let one = Chain {
            sets: 1,
            ..Chain::default()
        };
        assert_eq!(decide(AuthResult::Pass, one), Decision::Seal);
        assert_eq!(decide(AuthResult::Fail, one), Decision::Seal);
        assert!(matches!(
            decide(AuthResult::Temperror, one),
            Decision::Skip(_)
        ));
        let failed = Chain {
            failed: true,
            ..one
        };
        assert!(matches!(
            decide(AuthResult::Fail, failed),
            Decision::Skip(_)
        ));
        let full = Chain {
            sets: 50,
            ..Chain::default()
        };
        assert!(matches!(decide(AuthResult::Pass, full), Decision::Skip(_)));
        let broken = Chain {
            malformed: true,
            ..one
        };
        assert!(matches!(
            decide(AuthResult::Pass, broken),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn a_first_seal_is_instance_one_and_the_next_continues_the_chain() {
        let k = key();
        let first = seal(
            HEAD,
            BODY,
            &k,
            "mx.relay.example; dkim=pass header.d=origin.example",
            AuthResult::None,
        )
        .unwrap();
        assert!(
            first.starts_with("ARC-Seal: i=1; a=ed25519-sha256; s=arc1; d=relay.example; cv=none;"),
            "{first}"
        );
        assert!(first.contains("ARC-Message-Signature: i=1;"), "{first}");
        assert!(first.contains("ARC-Authentication-Results: i=1; mx.relay.example; dkim=pass header.d=origin.example\r\n"), "{first}");
        assert!(!first.contains("\r\n\t;\r\n"));
        let mut head = first.clone().into_bytes();
        head.extend_from_slice(HEAD);
        assert_eq!(
            chain(&head),
            Chain {
                sets: 1,
                failed: false,
                malformed: false
            }
        );
        let second = seal(&head, BODY, &k, "mx2; arc=pass", AuthResult::Pass).unwrap();
        assert!(
            second
                .starts_with("ARC-Seal: i=2; a=ed25519-sha256; s=arc1; d=relay.example; cv=pass;"),
            "{second}"
        );
        let failed = seal(&head, BODY, &k, "mx2; arc=fail", AuthResult::Fail).unwrap();
        assert!(failed.contains("; cv=fail;"), "{failed}");
        // Once failed, a chain gets no more seals.
        let mut head3 = failed.into_bytes();
        head3.extend_from_slice(&head);
        assert_eq!(
            seal(&head3, BODY, &k, "mx3; arc=fail", AuthResult::Fail),
            Err(SealError::Skipped(
                "an earlier sealer failed its chain (cv=fail)"
            ))
        );
    }

    /// DKIM key records answered from memory, so mail-auth's verifier needs no DNS.
    struct Records(std::collections::HashMap<String, mail_auth::Txt>);

    impl mail_auth::ResolverCache<String, mail_auth::Txt> for Records {
        fn get<Q>(&self, name: &Q) -> Option<mail_auth::Txt>
        where
            String: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.get(name).cloned()
        }
        fn remove<Q>(&self, _: &Q) -> Option<mail_auth::Txt>
        where
            String: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            None
        }
        fn insert(&self, _: String, _: mail_auth::Txt, _: std::time::Instant) {}
    }

    /// Every selector length from 1 to 80 moves the fields' folds; whichever layout a seal
    /// ends up in, its chain verifies (mail-auth reading the fields as written here; the
    /// relay tests check with dkimpy too).
    #[tokio::test]
    async fn seals_verify_whatever_their_layout() {
        use mail_auth::common::parse::TxtRecordParser;
        use mail_auth::common::verify::DomainKey;
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/bytes/dkim-test.key"
        ))
        .unwrap();
        let record = PrivateKey::from_pem(&pem).unwrap().dns_record();
        let auth = mail_auth::MessageAuthenticator::new(
            hickory_resolver::config::ResolverConfig::default(),
            hickory_resolver::config::ResolverOpts::default(),
        )
        .unwrap();
        for n in 1..=80 {
            let selector = "s".repeat(n);
            let key = LoadedKey {
                domain: "relay.example".into(),
                selector: selector.clone(),
                path: PathBuf::from("k.pem"),
                sealing: PrivateKey::from_pem(&pem).unwrap(),
                signer: PrivateKey::from_pem(&pem)
                    .unwrap()
                    .into_signer("relay.example", &selector),
            };
            let set = seal(
                HEAD,
                BODY,
                &key,
                "mx.relay.example; arc=none",
                AuthResult::None,
            )
            .unwrap();
            let mut sealed = set.into_bytes();
            sealed.extend_from_slice(HEAD);
            sealed.extend_from_slice(BODY);
            let message = AuthenticatedMessage::parse(&sealed).unwrap();
            let mut records = std::collections::HashMap::new();
            let txt =
                mail_auth::Txt::DomainKey(DomainKey::parse(record.as_bytes()).unwrap().into());
            records.insert(format!("{selector}._domainkey.relay.example."), txt.clone());
            records.insert(format!("{selector}._domainkey.relay.example"), txt);
            let records = Records(records);
            let out = auth
                .verify_arc(mail_auth::Parameters::new(&message).with_txt_cache(&records))
                .await;
            assert_eq!(
                out.result(),
                &DkimResult::Pass,
                "selector of {n}:\n{}",
                String::from_utf8_lossy(&sealed)
            );
        }
    }

    #[test]
    fn a_set_with_a_field_missing_is_not_continued() {
        let k = key();
        let first = seal(HEAD, BODY, &k, "mx; arc=none", AuthResult::None).unwrap();
        // Drop the ARC-Seal line (and its folds).
        let without_seal: String = first
            .split_inclusive("\r\n")
            .scan(false, |in_seal, line| {
                if line.starts_with("ARC-Seal:") {
                    *in_seal = true;
                } else if !line.starts_with('\t') {
                    *in_seal = false;
                }
                Some(if *in_seal { "" } else { line })
            })
            .collect();
        let mut head = without_seal.into_bytes();
        head.extend_from_slice(HEAD);
        assert!(chain(&head).malformed);
        assert!(matches!(
            seal(&head, BODY, &k, "mx; arc=fail", AuthResult::Fail),
            Err(SealError::Skipped(_))
        ));
    }

    #[test]
    fn the_body_starts_after_the_first_blank_line() {
        let m = bytes::Bytes::from_static(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore\r\n");
        let (head, body) = split_at_body(&m);
        assert_eq!(head, b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(&body[..], b"body\r\n\r\nmore\r\n");
        let (head, body) = split_at_body(&bytes::Bytes::from_static(b"A: 1\r\n"));
        assert_eq!(head, b"A: 1\r\n\r\n");
        assert!(body.is_empty());
    }
}
