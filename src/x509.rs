//! What mailflow needs to know about a certificate beyond "it parses": the leaf's names and
//! validity period, for `check`'s certificate lints ([`crate::lint`]) and the relay's expiry
//! gauge. The leaf is the first certificate of a PEM file, the one presented in a handshake;
//! the rest of a chain is not looked at.

use std::path::Path;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// The facts about a certificate file's leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The leaf's DER: two files holding the same certificate compare equal on it.
    pub der: Vec<u8>,
    /// The names it is valid for: the SAN's dNSNames, else the subject's CNs (the fallback
    /// receivers still honour), lowercased.
    pub names: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// The leaf of PEM text.
pub fn leaf(pem: &[u8]) -> Result<Leaf, String> {
    let certs = crate::pem::certificates(pem)?;
    let first = certs.first().ok_or("no certificate in the file")?;
    leaf_of_der(first.as_ref())
}

/// The leaf of a PEM file.
pub fn read_leaf(path: &Path) -> Result<Leaf, String> {
    let bytes = crate::input::read_limited(path).map_err(|e| e.to_string())?;
    leaf(&bytes)
}

/// The facts of one DER certificate.
pub fn leaf_of_der(der: &[u8]) -> Result<Leaf, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let validity = cert.validity();
    Ok(Leaf {
        der: der.to_vec(),
        names: names(&cert),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

fn names(cert: &X509Certificate<'_>) -> Vec<String> {
    // RFC 6125: with any dNSName in the SAN, the CN is not a name of the certificate.
    let san: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if !san.is_empty() {
        return san;
    }
    cert.subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// A date as `YYYY-MM-DD` (UTC), for messages: stable where "in 12 days" would change daily.
pub fn date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_798_761_599), "2026-12-31");
        assert_eq!(date(-86_400), "1969-12-31");
    }

    #[test]
    fn names_come_from_the_san_else_the_cn() {
        let with_san = include_bytes!("../rules/certs/edge.pem");
        let edge = leaf(with_san).unwrap();
        assert_eq!(edge.names, ["edge.myexchlab.com"]);
        // 2026-11-22 to 2126-10-29, as `openssl x509 -dates` prints them.
        assert_eq!(date(edge.not_before), "2026-11-22");
        assert_eq!(date(edge.not_after), "2126-10-29");
        let cn_only = include_bytes!("../rules/certs/mail-domain-com.pem");
        assert_eq!(leaf(cn_only).unwrap().names, ["mail.domain.com"]);
        let mut params = rcgen::CertificateParams::new(vec!["A.Example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cn.example");
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        assert_eq!(leaf(pem.as_bytes()).unwrap().names, ["a.example"]);
        assert!(leaf(b"not pem").is_err());
    }
}
