//! `mailflow dkim keygen`: a new signing key and the DNS record that publishes it.

use super::Exit;
use mailflow::auth::dkim::{self, Algorithm, PrivateKey};
use std::io::Write;
use std::path::Path;

pub(super) struct Keygen<'a> {
    pub domain: &'a str,
    pub selector: &'a str,
    pub algorithm: Algorithm,
    pub output: &'a Path,
    pub force: bool,
}

pub(super) fn keygen(k: Keygen<'_>) -> Exit {
    if !valid_label_list(k.domain) || !valid_label_list(k.selector) {
        eprintln!(
            "error: `{}` and `{}` must be DNS names (letters, digits, hyphens, dots)",
            k.domain, k.selector
        );
        return Exit::Error;
    }
    let pem = match dkim::generate(k.algorithm) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    // Read back what was made, so the record printed is the one of the file written.
    let record = match PrivateKey::from_pem(pem.as_bytes()) {
        Ok(key) => key.dns_record(),
        Err(e) => {
            eprintln!("error: the new key does not read back: {e}");
            return Exit::Error;
        }
    };
    if let Err(e) = write_private(k.output, pem.as_bytes(), k.force) {
        eprintln!("error: cannot write `{}`: {e}", k.output.display());
        return Exit::Error;
    }
    eprintln!(
        "wrote {} (keep it private); publish this TXT record:",
        k.output.display()
    );
    println!(
        "{}._domainkey.{} IN TXT {}",
        k.selector,
        k.domain,
        txt_strings(&record)
    );
    Exit::Clean
}

/// Owner-only from the first byte, and never over an existing key unless asked: a key
/// overwritten by mistake breaks every signature its record still vouches for.
fn write_private(path: &Path, bytes: &[u8], force: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A TXT record's text as quoted strings of at most 255 octets each (RFC 1035 3.3.14):
/// an RSA-2048 record is longer than one string may be.
fn txt_strings(record: &str) -> String {
    record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn valid_label_list(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
