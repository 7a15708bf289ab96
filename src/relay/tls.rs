//! TLS for receive connectors: one rustls server configuration per connector (its certificate
//! and key), client certificates requested but optional, verified against the relay's trust
//! anchors; and the check that turns a verified client certificate into the peer name the
//! evaluator trusts XOORG from.

use crate::model::{DomainPattern, ReceiveConnector};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
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

fn pem_error(path: &Path, why: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error(path, e))
}

/// The trust anchors: a PEM bundle when given, else the Mozilla roots.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                store.add(cert).map_err(|e| pem_error(path, e))?;
            }
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(store)
}

/// The server configuration of a connector that offers TLS (`None` when it has no certificate).
pub fn server_config(
    c: &ReceiveConnector,
    roots: &Arc<RootCertStore>,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (Some(cert), Some(key)) = (&c.certificate, &c.key) else {
        return Ok(None);
    };
    let config_error = |e: rustls::Error| TlsError::Config {
        connector: c.name.value.clone(),
        why: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Ask every client for a certificate but accept those without one: only XOORG depends
    // on it, and a public MX must take mail from anyone (RFC 3207).
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config {
                connector: c.name.value.clone(),
                why: e.to_string(),
            })?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&cert.value)?, load_key(&key.value)?)
        .map_err(config_error)?;
    Ok(Some(Arc::new(config)))
}

/// The name of a verified client certificate as the evaluator should see it: the trusted
/// pattern it is valid for (so `accept-oorg` decides), else its first DNS name (for the
/// tracking log). rustls has already verified the chain when `certs` is non-empty.
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
