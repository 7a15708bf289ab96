//! How the client talks to next hops, per send connector: the EHLO name, the STARTTLS policy
//! and the rustls configuration it runs with, and the timeouts. The configuration is built
//! once, when the rules are loaded or reloaded (certificates read, rustls set up there), and
//! shared by every attempt and probe; each build has its own identity, so a connection opened
//! with one is never reused under another ([`super::pool`]).

use super::DeliverError;
use super::tls;
use crate::model::{OutboundTls, SendConnector};
use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Identities of built configurations; never reused within a process.
static NEXT_IDENTITY: AtomicU64 = AtomicU64::new(1);

/// How to talk to next hops.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    helo: String,
    tls: OutboundTls,
    tls_name: Option<String>,
    /// What STARTTLS runs with (`None` under [`OutboundTls::Off`]); a configuration rustls
    /// refused (no trust anchors) fails the handshake with its reason, as it always did.
    rustls: Result<Option<Arc<rustls::ClientConfig>>, String>,
    client_cert: bool,
    identity: u64,
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Longest wait for the greeting and each reply before the final dot, and for each
    /// write, data blocks included (RFC 5321 4.5.3.2: 5 minutes; 2 for DATA, 3 per block).
    pub command_timeout: Duration,
    /// Longest wait for the reply to the final dot (RFC 5321: 10 minutes).
    pub data_timeout: Duration,
}

impl ClientConfig {
    /// The timeouts `--smtp-timeout` (the relay) or `--timeout` (`queue drain`) set: `t` for
    /// each command, twice that for the final dot, and no longer than `t` to connect.
    pub fn set_timeouts(&mut self, t: Duration) {
        self.command_timeout = t;
        self.data_timeout = t.saturating_mul(2);
        self.connect_timeout = self.connect_timeout.min(t);
    }

    /// A configuration: `helo` in EHLO/HELO, the STARTTLS policy, the name the server
    /// certificate must carry under [`OutboundTls::Required`] (`None`: the hop's host name),
    /// its trust anchors, and the client certificate presented when a server asks. RFC 5321
    /// timeouts and a 30 second connect timeout.
    pub fn new(
        helo: impl Into<String>,
        tls: OutboundTls,
        tls_name: Option<String>,
        roots: &Arc<RootCertStore>,
        client_cert: Option<Arc<CertifiedKey>>,
    ) -> ClientConfig {
        let rustls = match tls {
            OutboundTls::Off => Ok(None),
            OutboundTls::Opportunistic | OutboundTls::Required => {
                let verify = tls == OutboundTls::Required;
                tls::client_config(verify, roots, client_cert.as_ref())
                    .map(|c| Some(Arc::new(c)))
                    .map_err(|e| e.to_string())
            }
        };
        ClientConfig {
            helo: helo.into(),
            tls,
            tls_name,
            rustls,
            client_cert: client_cert.is_some(),
            identity: NEXT_IDENTITY.fetch_add(1, Ordering::Relaxed),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
        }
    }

    /// The configuration for `c`: its FQDN (else `default_helo`) in EHLO, its TLS policy and
    /// name, its client certificate (read here from the PEM files, once; a certificate
    /// without a key, or the reverse, is an error).
    pub fn for_connector(
        c: &SendConnector,
        default_helo: &str,
        roots: Arc<RootCertStore>,
    ) -> Result<ClientConfig, DeliverError> {
        let client_cert = match (&c.certificate, &c.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Arc::new(load_certified_key(&cert.value, &key.value)?)),
            (Some(cert), None) => {
                return Err(DeliverError::Certificate {
                    path: cert.value.clone(),
                    message: "a client certificate needs a key".into(),
                });
            }
            (None, Some(key)) => {
                return Err(DeliverError::Certificate {
                    path: key.value.clone(),
                    message: "a client key needs a certificate".into(),
                });
            }
        };
        Ok(ClientConfig::new(
            c.fqdn.clone().unwrap_or_else(|| default_helo.to_string()),
            c.tls.value,
            c.tls_name.as_ref().map(|n| n.value.clone()),
            &roots,
            client_cert,
        ))
    }

    /// The name in EHLO/HELO.
    pub fn helo(&self) -> &str {
        &self.helo
    }

    /// The STARTTLS policy.
    pub fn tls(&self) -> OutboundTls {
        self.tls
    }

    /// The name a verified server certificate must carry, when not the hop's.
    pub fn tls_name(&self) -> Option<&str> {
        self.tls_name.as_deref()
    }

    /// Whether a client certificate is presented when a server asks.
    pub fn has_client_cert(&self) -> bool {
        self.client_cert
    }

    /// Which build this is: clones share it, every [`ClientConfig::new`] gets a new one.
    pub(super) fn identity(&self) -> u64 {
        self.identity
    }

    pub(super) fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        match &self.rustls {
            Ok(Some(c)) => Ok(Arc::clone(c)),
            Ok(None) => Err("TLS is off for this connector".into()),
            Err(e) => Err(e.clone()),
        }
    }
}

impl From<crate::pem::PemError> for DeliverError {
    fn from(e: crate::pem::PemError) -> DeliverError {
        DeliverError::Certificate {
            path: e.path,
            message: e.why,
        }
    }
}

/// Loads a PEM certificate chain and its private key.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, DeliverError> {
    let chain = crate::pem::read_certificates(cert)?;
    let der = crate::pem::read_private_key(key)?;
    CertifiedKey::from_der(chain, der, &tls::provider()).map_err(|e| DeliverError::Certificate {
        path: key.to_path_buf(),
        message: e.to_string(),
    })
}

/// The Mozilla root certificates, for verifying public servers.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The CA certificates in a PEM file (at least one, all valid).
pub fn load_roots(pem_file: &Path) -> Result<RootCertStore, DeliverError> {
    Ok(crate::pem::read_roots(pem_file)?)
}
