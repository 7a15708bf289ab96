//! TLS for receive connectors: one rustls server configuration per connector (its certificate
//! and key); a client certificate asked for only where the connector uses it (`accept-oorg`),
//! and never a reason to fail the handshake: it is verified against the relay's trust anchors
//! after the handshake, and one that does not verify counts as no certificate. Then the check
//! that turns a verified client certificate into the peer name the evaluator trusts XOORG from.

use crate::model::{DomainPattern, ReceiveConnector};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// Why TLS could not be set up for a connector.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("tls configuration for `{connector}`: {why}")]
    Config {
        /// The connector.
        connector: String,
        /// rustls's reason.
        why: String,
    },
}

impl From<crate::pem::PemError> for TlsError {
    fn from(e: crate::pem::PemError) -> TlsError {
        TlsError::Pem {
            path: e.path.display().to_string(),
            why: e.why,
        }
    }
}

/// The trust anchors: a PEM bundle when given, else the Mozilla roots.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    match ca_file {
        Some(path) => Ok(crate::pem::read_roots(path)?),
        None => Ok(crate::deliver::webpki_roots()),
    }
}

/// A connector's TLS: the rustls configuration and, where the connector asks for client
/// certificates, the verifier that judges them once the handshake is done.
#[derive(Debug, Clone)]
pub struct ConnectorTls {
    /// What the handshake runs with.
    pub config: Arc<rustls::ServerConfig>,
    /// The real verifier (`None`: no client certificate is asked for).
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// What a client's certificate amounts to after the handshake.
#[derive(Debug, Clone)]
pub enum ClientCert {
    /// None was asked for or none was presented.
    None,
    /// It chains to a trust anchor and is valid for client authentication now.
    Verified(Vec<CertificateDer<'static>>),
    /// It was presented but does not verify (unknown CA, self-signed, expired, ...): the
    /// session goes on as if there were none.
    Unverified(String),
}

impl ConnectorTls {
    /// Judges the certificate chain the client presented (`None`: it presented none).
    pub fn client_cert(&self, certs: Option<&[CertificateDer<'_>]>) -> ClientCert {
        let (Some(verifier), Some((leaf, intermediates))) =
            (&self.verifier, certs.and_then(<[_]>::split_first))
        else {
            return ClientCert::None;
        };
        match verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            Ok(_) => ClientCert::Verified(
                std::iter::once(leaf)
                    .chain(intermediates)
                    .map(|c| c.clone().into_owned())
                    .collect(),
            ),
            Err(e) => ClientCert::Unverified(e.to_string()),
        }
    }
}

/// Asks for a client certificate without ever refusing one: many MTAs present a self-signed
/// certificate, and a public MX must take their mail (RFC 3207). The chain is judged after the
/// handshake ([`ConnectorTls::client_cert`]). The handshake signature is still checked by the
/// real verifier: a client that cannot prove it holds the key of the certificate it shows
/// (EOP's certificate is public) is not served, or a copied certificate would verify later.
#[derive(Debug)]
struct Lenient(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Lenient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The server configuration of a connector that offers TLS (`None` when it has no certificate).
pub fn server_config(
    c: &ReceiveConnector,
    roots: &Arc<RootCertStore>,
) -> Result<Option<ConnectorTls>, TlsError> {
    let (Some(cert), Some(key)) = (&c.certificate, &c.key) else {
        return Ok(None);
    };
    let config_error = |e: rustls::Error| TlsError::Config {
        connector: c.name.value.clone(),
        why: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    // A certificate is asked for only where it decides something (XOORG); elsewhere asking
    // just makes clients with odd certificates fail.
    let (builder, verifier) = if c.accept_oorg.is_empty() {
        (builder.with_no_client_auth(), None)
    } else {
        let verifier: Arc<dyn ClientCertVerifier> =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config {
                    connector: c.name.value.clone(),
                    why: e.to_string(),
                })?;
        (
            builder.with_client_cert_verifier(Arc::new(Lenient(Arc::clone(&verifier)))),
            Some(verifier),
        )
    };
    let config = builder
        .with_single_cert(
            crate::pem::read_certificates(&cert.value)?,
            crate::pem::read_private_key(&key.value)?,
        )
        .map_err(config_error)?;
    Ok(Some(ConnectorTls {
        config: Arc::new(config),
        verifier,
    }))
}

/// The name of a verified client certificate as the evaluator should see it: the trusted
/// pattern it is valid for (so `accept-oorg` decides), else its first DNS name (for the
/// tracking log). `certs` is a chain [`ConnectorTls::client_cert`] verified.
pub fn peer_name(certs: &[CertificateDer<'_>], c: &ReceiveConnector) -> Option<String> {
    let leaf = certs.first()?;
    let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
    for pattern in &c.accept_oorg {
        match &pattern.value {
            DomainPattern::Exact(name) => {
                if let Ok(sn) = ServerName::try_from(name.as_str()) {
                    if ee.verify_is_valid_for_subject_name(&sn).is_ok() {
                        return Some(name.clone());
                    }
                }
            }
            DomainPattern::Wildcard(_) => {
                if let Some(n) = ee.valid_dns_names().find(|n| {
                    let n = n.to_ascii_lowercase();
                    !n.starts_with("*.") && pattern.value.matches(&n)
                }) {
                    return Some(n.to_ascii_lowercase());
                }
            }
        }
    }
    ee.valid_dns_names().next().map(str::to_ascii_lowercase)
}

/// Whether the verified client certificate is trusted for XOORG on this connector.
pub fn trusted_for_oorg(peer: Option<&str>, c: &ReceiveConnector) -> bool {
    peer.is_some_and(|p| c.accept_oorg.iter().any(|pat| pat.value.matches(p)))
}
