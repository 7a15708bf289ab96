//! DKIM signing keys: reading one from a PEM file (RSA in PKCS#1 or PKCS#8, Ed25519 in
//! PKCS#8), the DNS record that publishes its public half, signing a message with it
//! (relaxed/relaxed, a fixed list of header fields, `From` oversigned), and making a new one
//! for `mailflow dkim keygen`. The cryptography is mail-auth's (on ring), the same crate
//! that verifies; making an RSA key is the `rsa` crate's, as ring cannot.

use base64::Engine;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rustls::pki_types::pem::SectionKind;

/// The fields signed when present, in this order; each listed field that is absent is
/// signed as absent, so it cannot be added later. `From` is listed twice: a second `From`
/// added in transit breaks the signature (oversigning, RFC 6376 8.15).
pub const SIGNED_FIELDS: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The smallest RSA key accepted: RFC 8301 forbids signing with fewer than 1024 bits.
pub const MIN_RSA_BITS: usize = 1024;

/// A private key read from a file, ready to sign.
pub enum PrivateKey {
    /// RSA (rsa-sha256), with its size in bits.
    Rsa(RsaKey<Sha256>, usize),
    /// Ed25519 (ed25519-sha256, RFC 8463).
    Ed25519(Ed25519Key),
}

/// Why a file is not a signing key, in words for an administrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No PEM block at all.
    #[error(
        "no PEM key found (`-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----`); an encrypted key must be decrypted first"
    )]
    NotPem,
    /// A PEM block, but a public key or a certificate, not a private key.
    #[error("`{0}` is not a private key; DKIM signs with the private key")]
    NotPrivate(String),
    /// A private key of a kind DKIM does not sign with (EC P-256, encrypted, ...).
    #[error(
        "`{0}` is not an RSA or Ed25519 private key (DKIM signs with rsa-sha256 or ed25519-sha256)"
    )]
    Unsupported(String),
    /// The key's bytes do not parse or the key is inconsistent.
    #[error("the key does not parse: {0}")]
    Invalid(String),
    /// An RSA key too short to sign with: below [`MIN_RSA_BITS`], or below the 2048 bits
    /// the signer takes.
    #[error(
        "the RSA key has {0} bits; the signer takes 2048 bits or more (RFC 8301 forbids fewer than 1024, and verifiers distrust short keys)"
    )]
    TooShort(usize),
}

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not sign: {0}")]
pub struct SignError(String);

/// The kind of key `keygen` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSA with this many bits (2048 is what every receiver takes).
    Rsa(usize),
    /// Ed25519: small and fast, but some receivers still verify only RSA (sign with both).
    Ed25519,
}

impl PrivateKey {
    /// Reads the first PEM section of `pem` as a private key.
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, KeyError> {
        let (kind, der) = crate::pem::first_section(pem).map_err(|_| KeyError::NotPem)?;
        match kind {
            SectionKind::RsaPrivateKey => {
                let key = RsaKey::<Sha256>::from_der(&der).map_err(|e| rsa_refused(&der, &e))?;
                rsa_checked(key)
            }
            SectionKind::PrivateKey => {
                match RsaKey::<Sha256>::from_pkcs8_der(&der) {
                    Ok(key) => return rsa_checked(key),
                    Err(e) if rsa_bits_pkcs8(&der).is_some() => return Err(rsa_refused(&der, &e)),
                    Err(_) => {}
                }
                match Ed25519Key::from_pkcs8_maybe_unchecked_der(&der) {
                    Ok(key) => Ok(PrivateKey::Ed25519(key)),
                    Err(_) => Err(KeyError::Unsupported("PRIVATE KEY".into())),
                }
            }
            SectionKind::EcPrivateKey => Err(KeyError::Unsupported("EC PRIVATE KEY".into())),
            SectionKind::PublicKey => Err(KeyError::NotPrivate("PUBLIC KEY".into())),
            SectionKind::Certificate => Err(KeyError::NotPrivate("CERTIFICATE".into())),
            other => Err(KeyError::Unsupported(format!("{other:?}"))),
        }
    }

    /// `rsa` or `ed25519`, as the `k=` tag and `a=` algorithm name it.
    pub fn kind(&self) -> &'static str {
        match self {
            PrivateKey::Rsa(..) => "rsa",
            PrivateKey::Ed25519(_) => "ed25519",
        }
    }

    /// The TXT record to publish at `SELECTOR._domainkey.DOMAIN`.
    pub fn dns_record(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        match self {
            // RFC 6376 3.6.1: the public key as a DER SubjectPublicKeyInfo.
            PrivateKey::Rsa(key, _) => {
                use rsa::pkcs8::EncodePublicKey;
                let spki = rsa_public(&key.public_key())
                    .and_then(|p| p.to_public_key_der().ok())
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default(); // read when the key was loaded (`rsa_checked`)
                format!("v=DKIM1; k=rsa; p={}", b64.encode(spki))
            }
            // RFC 8463 4.2: the bare 32-byte public key.
            PrivateKey::Ed25519(key) => {
                format!("v=DKIM1; k=ed25519; p={}", b64.encode(key.public_key()))
            }
        }
    }

    /// Binds the key to the domain and selector it signs for.
    pub fn into_signer(self, domain: &str, selector: &str) -> Signer {
        let record = self.dns_record();
        let kind = match self {
            PrivateKey::Rsa(key, _) => SignerKind::Rsa(Box::new(
                DkimSigner::from_key(key)
                    .domain(domain)
                    .selector(selector)
                    .headers(SIGNED_FIELDS.iter().copied()),
            )),
            PrivateKey::Ed25519(key) => SignerKind::Ed25519(Box::new(
                DkimSigner::from_key(key)
                    .domain(domain)
                    .selector(selector)
                    .headers(SIGNED_FIELDS.iter().copied()),
            )),
        };
        Signer { kind, record }
    }
}

/// A key bound to its domain and selector: signs messages.
pub struct Signer {
    kind: SignerKind,
    record: String,
}

enum SignerKind {
    Rsa(Box<DkimSigner<RsaKey<Sha256>, Done>>),
    Ed25519(Box<DkimSigner<Ed25519Key, Done>>),
}

impl Signer {
    /// A `DKIM-Signature` field (name, value, CRLF) for `message` (its header and body as
    /// they will be sent), to be put before its header.
    pub fn sign(&self, message: &[u8]) -> Result<String, SignError> {
        let signature = match &self.kind {
            SignerKind::Rsa(s) => s.sign(message),
            SignerKind::Ed25519(s) => s.sign(message),
        }
        .map_err(|e| SignError(e.to_string()))?;
        Ok(unfold_end(signature.to_header()))
    }

    /// The TXT record that publishes the public half.
    pub fn dns_record(&self) -> &str {
        &self.record
    }
}

/// mail-auth 0.7.0 folds the line when the last character of `b=` fills it, so the field
/// ends in `CRLF TAB ;`. It signed the field with `b=` empty, where that fold was not, and a
/// verifier that removes the `b=` value keeps the fold's whitespace (`b= ;`): the signature
/// fails for every message whose field layout puts the end there. Dropping that last fold
/// makes the field what was signed.
fn unfold_end(header: String) -> String {
    match header.strip_suffix("\r\n\t;\r\n") {
        Some(rest) => format!("{rest};\r\n"),
        None => header,
    }
}

/// ring refuses RSA keys under 2048 bits with a bare `TooSmall`; the size, read with the
/// `rsa` crate, tells the administrator what is wrong.
fn rsa_refused(der: &[u8], e: &dyn std::fmt::Display) -> KeyError {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let bits = rsa::RsaPrivateKey::from_pkcs1_der(der)
        .ok()
        .map(|k| k.n().bits())
        .or_else(|| rsa_bits_pkcs8(der));
    match bits {
        Some(bits) if bits < SIGNING_RSA_BITS => KeyError::TooShort(bits),
        _ => KeyError::Invalid(e.to_string()),
    }
}

/// The modulus size of a PKCS#8 RSA key; `None`: not an RSA key.
fn rsa_bits_pkcs8(der: &[u8]) -> Option<usize> {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    rsa::RsaPrivateKey::from_pkcs8_der(der)
        .ok()
        .map(|k| k.n().bits())
}

/// The smallest RSA key the signer (ring) takes.
const SIGNING_RSA_BITS: usize = 2048;

fn rsa_checked(key: RsaKey<Sha256>) -> Result<PrivateKey, KeyError> {
    use rsa::traits::PublicKeyParts;
    // The modulus's size in bits is what RFC 8301 limits.
    // ring took the key; one the `rsa` crate cannot read would publish an empty record.
    let public = rsa_public(&key.public_key())
        .ok_or_else(|| KeyError::Invalid("its public key does not parse".into()))?;
    let bits = public.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(KeyError::TooShort(bits));
    }
    Ok(PrivateKey::Rsa(key, bits))
}

/// A new private key as PEM (PKCS#8 `PRIVATE KEY`).
pub fn generate(algorithm: Algorithm) -> Result<String, KeyError> {
    let der = match algorithm {
        Algorithm::Ed25519 => {
            Ed25519Key::generate_pkcs8().map_err(|e| KeyError::Invalid(e.to_string()))?
        }
        Algorithm::Rsa(bits) => {
            use rsa::pkcs8::EncodePrivateKey;
            // What the signer takes, refused before minutes of key generation rather than
            // after, when the new key would not read back.
            if bits < SIGNING_RSA_BITS {
                return Err(KeyError::TooShort(bits));
            }
            let mut rng = rsa::rand_core::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut rng, bits)
                .map_err(|e| KeyError::Invalid(e.to_string()))?;
            key.to_pkcs8_der()
                .map_err(|e| KeyError::Invalid(e.to_string()))?
                .as_bytes()
                .to_vec()
        }
    };
    Ok(pem_encode("PRIVATE KEY", &der))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The RSA public key of a key pair, from ring's PKCS#1 form, read by the `rsa` crate (its
/// size and its SubjectPublicKeyInfo are that crate's, not DER written here).
fn rsa_public(pkcs1: &[u8]) -> Option<rsa::RsaPublicKey> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    rsa::RsaPublicKey::from_pkcs1_der(pkcs1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"From: John <john@example.com>\r\nTo: alex@fabrikam.com\r\n\
Subject: hello\r\nDate: Mon, 7 Dec 2026 09:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n\
Hello.\r\n";

    #[test]
    fn rsa_keys_read_from_pkcs1_and_pkcs8_and_publish_an_spki() {
        let pkcs1 = std::fs::read("tests/fixtures/bytes/dkim-test.key").unwrap();
        let key = PrivateKey::from_pem(&pkcs1).unwrap();
        assert_eq!(key.kind(), "rsa");
        let PrivateKey::Rsa(_, bits) = &key else {
            unreachable!()
        };
        assert_eq!(*bits, 2048);
        // The fixture's public half, made by openssl: the same SubjectPublicKeyInfo.
        let published = std::fs::read_to_string("tests/fixtures/bytes/dkim-test.pub").unwrap();
        assert_eq!(
            key.dns_record(),
            format!("v=DKIM1; k=rsa; p={}", published.trim())
        );
        let pkcs8 = generate(Algorithm::Rsa(2048)).unwrap();
        assert!(pkcs8.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = PrivateKey::from_pem(pkcs8.as_bytes()).unwrap();
        assert!(matches!(key, PrivateKey::Rsa(_, 2048)));
    }

    #[test]
    fn ed25519_keys_round_trip() {
        let pem = generate(Algorithm::Ed25519).unwrap();
        let key = PrivateKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(key.kind(), "ed25519");
        let record = key.dns_record();
        let p = record.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        assert_eq!(raw.len(), 32);
        let sig = key.into_signer("example.com", "ed1").sign(MESSAGE).unwrap();
        assert!(sig.starts_with("DKIM-Signature: "), "{sig}");
        assert!(sig.contains("a=ed25519-sha256"), "{sig}");
    }

    #[test]
    fn what_is_not_a_usable_private_key_says_why() {
        assert_eq!(PrivateKey::from_pem(b"hello").err(), Some(KeyError::NotPem));
        let public = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert_eq!(
            PrivateKey::from_pem(public).err(),
            Some(KeyError::NotPrivate("PUBLIC KEY".into()))
        );
        let ec = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pem(ec),
            Err(KeyError::Unsupported(_))
        ));
        let junk = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(PrivateKey::from_pem(junk).is_err());
        assert_eq!(
            generate(Algorithm::Rsa(512)).err(),
            Some(KeyError::TooShort(512))
        );
    }

    #[test]
    fn rsa_keys_the_signer_refuses_say_their_size() {
        let pkcs1 = std::fs::read("tests/fixtures/dkim-keys/rsa1024.pem").unwrap();
        assert_eq!(
            PrivateKey::from_pem(&pkcs1).err(),
            Some(KeyError::TooShort(1024))
        );
        let pkcs8 = std::fs::read("tests/fixtures/dkim-keys/rsa1024.pkcs8.pem").unwrap();
        assert_eq!(
            PrivateKey::from_pem(&pkcs8).err(),
            Some(KeyError::TooShort(1024))
        );
    }

    #[test]
    fn signatures_oversign_from_and_sign_absent_fields() {
        let pkcs1 = std::fs::read("tests/fixtures/bytes/dkim-test.key").unwrap();
        let key = PrivateKey::from_pem(&pkcs1).unwrap();
        let sig = key.into_signer("example.com", "s1").sign(MESSAGE).unwrap();
        assert!(sig.contains("c=relaxed/relaxed"), "{sig}");
        assert!(sig.contains("d=example.com"), "{sig}");
        let h = sig
            .split(';')
            .find_map(|t| t.trim().strip_prefix("h="))
            .unwrap()
            .replace([' ', '\t', '\r', '\n'], "");
        let fields: Vec<&str> = h.split(':').collect();
        let froms = fields
            .iter()
            .filter(|f| f.eq_ignore_ascii_case("from"))
            .count();
        assert_eq!(froms, 2, "{h}");
        assert!(
            fields.iter().any(|f| f.eq_ignore_ascii_case("reply-to")),
            "{h}"
        );
    }
}
