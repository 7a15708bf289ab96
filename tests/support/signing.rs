//! DKIM keys, signatures and shipped rule sets for the authentication tests: the test key and
//! a fresh Ed25519 key with their TXT records, `dkim-key` blocks naming them, dkimpy's
//! verdict on every signature of a message (an independent verifier), a message signed by
//! dkimpy, and a bundled rule set copied into a test's folder with its files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::relay::{Relay, root, s, wait_until};
use super::sink::{Received, Sink, SinkOptions};
use mailflow::auth::dkim::{Algorithm, PrivateKey, generate};
use std::path::Path;

/// The RSA-2048 test key and a new Ed25519 key, written to `dir/keys/`; their TXT records.
pub fn write_keys(dir: &Path) -> (String, String) {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    let rsa = std::fs::read(root().join("tests/fixtures/bytes/dkim-test.key")).unwrap();
    std::fs::write(dir.join("keys/rsa.pem"), &rsa).unwrap();
    let ed = generate(Algorithm::Ed25519).unwrap();
    std::fs::write(dir.join("keys/ed.pem"), &ed).unwrap();
    (
        PrivateKey::from_pem(&rsa).unwrap().dns_record(),
        PrivateKey::from_pem(ed.as_bytes()).unwrap().dns_record(),
    )
}

/// Both keys for `domain`, RSA first.
pub fn dkim_keys(domain: &str) -> String {
    format!(
        "\ndkim-key \"{domain}\" {{\n  selector rsa2026\n  key \"keys/rsa.pem\"\n}}\n\
dkim-key \"{domain}\" {{\n  selector ed2026\n  key \"keys/ed.pem\"\n}}\n"
    )
}

/// dkimpy's verdict on each `DKIM-Signature` of `message`, top first (`d=… s=… pass`),
/// the keys looked up in `records` (`selector._domainkey.domain`, TXT record).
pub fn signatures(message: &[u8], records: &[(String, &str)]) -> Vec<String> {
    let mut args = vec!["signatures".to_string()];
    args.extend(records.iter().map(|(name, r)| format!("{name}={r}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = super::dkimpy::run(&args, message);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&out));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `message` signed by dkimpy (simple/simple: any changed byte breaks it) with the test
/// RSA key as `sel._domainkey.DOMAIN`.
pub fn signed_by(domain: &str, message: &[u8]) -> Vec<u8> {
    let key = root().join("tests/fixtures/bytes/dkim-test.key");
    let args = ["sign", key.to_str().unwrap(), domain, "sel"];
    let (code, signed) = super::dkimpy::run(&args, message);
    assert_eq!(code, 0);
    signed
}

pub fn test_key_record() -> String {
    let public =
        std::fs::read_to_string(root().join("tests/fixtures/bytes/dkim-test.pub")).unwrap();
    format!("v=DKIM1; k=rsa; p={}", public.trim())
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A shipped rule set (`rules/NAME`, its folders beside it) in `dir`, through `edit`.
pub fn shipped_rules(dir: &Path, name: &str, folders: &[&str], edit: impl Fn(String) -> String) {
    for f in folders {
        copy_dir(&root().join("rules").join(f), &dir.join(f));
    }
    let text = std::fs::read_to_string(root().join("rules").join(name)).unwrap();
    std::fs::write(dir.join(name), edit(text)).unwrap();
}

/// The `n`th message the sink received, waiting up to 20 s for it.
pub async fn next_message(sink: &Sink, n: usize) -> Received {
    assert!(wait_until(20, || sink.messages().len() > n).await);
    sink.messages().remove(n)
}

/// `text` without its `dkim-key` blocks (a shipped rule set's example key), so a test signs
/// with keys of its own.
pub fn without_dkim_keys(text: String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("\ndkim-key ") {
        out.push_str(&rest[..=start]);
        let block = &rest[start + 1..];
        let end = block.find("\n}\n").map_or(block.len(), |e| e + 3);
        rest = &block[end..];
    }
    out.push_str(rest);
    out
}

/// The TXT record of the shipped example key (`rules/keys/`), published as
/// `mf2026._domainkey.myexchlab.com`.
pub fn shipped_key_record() -> String {
    let pem = std::fs::read(root().join("rules/keys/example-rsa2048.pem")).unwrap();
    PrivateKey::from_pem(&pem).unwrap().dns_record()
}

/// Seed 000 (`rules/cloud-groups.mailflow` as shipped) in `dir`, with SRS at domain.org
/// (`secret`) and a contact `desk@domain.org` forwarding to `external`; every next hop is one
/// sink started with `sink`.
pub async fn seed_000_forwarding(
    dir: &Path,
    external: &str,
    secret: &str,
    sink: SinkOptions,
) -> (Relay, Sink) {
    shipped_rules(dir, "cloud-groups.mailflow", &["certs", "messages"], |t| {
        t + &format!(
            "\ncontact \"Partner desk\" {{\n  address desk@domain.org\n  external {external}\n}}\n\
authentication {{\n  srs-domain domain.org\n  srs-secret \"{secret}\"\n}}\n"
        )
    });
    let sink = Sink::start(sink).await;
    let mut args = vec![
        s("--queue-interval"),
        s("1s"),
        s("--listen"),
        s("Internet=127.0.0.1:0"),
        s("--listen"),
        s("Internal applications=127.0.0.1:0"),
    ];
    for c in ["To Exchange", "To Internet"] {
        args.extend([s("--smart-host"), format!("{c}={}", sink.addr)]);
    }
    let relay = Relay::start(
        &dir.join("cloud-groups.mailflow"),
        &dir.join("spool"),
        &args,
    );
    (relay, sink)
}
