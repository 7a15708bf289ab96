//! The one reader of PEM files in mailflow: certificate chains, private keys and trust
//! anchors, for `check` (is the file usable?), the relay's listeners (server certificates)
//! and its send connectors (client certificates, CA bundles), and DKIM signing keys. Files are read bounded
//! ([`crate::input::read_limited`]) and parsed from memory, so every caller gets the same
//! limits and the same reasons.

use rustls::RootCertStore;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// A PEM file that cannot be read or holds nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct PemError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

impl PemError {
    fn new(path: &Path, why: impl ToString) -> PemError {
        PemError {
            path: path.to_path_buf(),
            why: why.to_string(),
        }
    }
}

/// Every certificate in PEM text, at least one; a damaged block anywhere is an error.
pub fn certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

/// The first private key in PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(bytes: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(bytes).map_err(|e| e.to_string())
}

/// The first PEM section of a kind the parser knows, with its kind: for a caller that says
/// what a file holds when it is not what it needs (a DKIM key file holding a public key).
pub fn first_section(bytes: &[u8]) -> Result<(SectionKind, Vec<u8>), String> {
    <(SectionKind, Vec<u8>)>::from_pem_slice(bytes).map_err(|e| e.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    crate::input::read_limited(path).map_err(|e| PemError::new(path, e))
}

/// Every certificate in a PEM file, at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates(&read(path)?).map_err(|why| PemError::new(path, why))
}

/// The private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    private_key(&read(path)?).map_err(|why| PemError::new(path, why))
}

/// The trust anchors in a PEM bundle: at least one, every one usable as an anchor.
pub fn read_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(|e| PemError::new(path, e))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_and_damaged_files_are_refused() {
        assert_eq!(certificates(b"").unwrap_err(), "no certificate in the file");
        assert!(private_key(b"").is_err());
        let damaged = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(certificates(damaged).is_err());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_certificates(&missing).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e.to_string().starts_with(&missing.display().to_string()));
        assert!(read_roots(&missing).is_err());
    }
}
