//! What DKIM signing adds to a delivery attempt: `relay::sign::sign` (the scheduler's call:
//! the From field read, one signature per key of its domain) with an RSA-2048 and an
//! Ed25519 key, on a 10 KB and a 1 MB message, next to what the attempt already costs
//! without it (the dot-stuffed copy of the message that goes on the wire).
//!
//! Run with `cargo bench --bench sign` (add `-- --quick` for a shorter run).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use criterion::{Criterion, Throughput, black_box};
use mailflow::auth::dkim::{Algorithm, generate};
use mailflow::auth::keys::KeyStore;
use mailflow::model::{DkimKey, Spanned};
use mailflow::relay::sign::{Signing, sign};
use mailflow::source::{FileId, Span};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn key(domain: &str, selector: &str, path: PathBuf) -> DkimKey {
    let span = Span {
        file: FileId(0),
        start: 0,
        end: 0,
    };
    DkimKey {
        domain: Spanned::new(domain.into(), span),
        selector: Spanned::new(selector.into(), span),
        key: Spanned::new(path, span),
        span,
    }
}

/// A message of about `size` bytes: a usual header, then 76-character lines.
fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: John Smith <John.Smith@rsa.example>\r\nTo: alex@fabrikam.example\r\n\
Subject: quarterly figures\r\nDate: Mon, 7 Dec 2026 09:00:00 +0000\r\n\
Message-ID: <bench@rsa.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
        .to_vec();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let ed = dir.path().join("ed.pem");
    std::fs::write(&ed, generate(Algorithm::Ed25519).unwrap()).unwrap();
    let rsa = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bytes/dkim-test.key");
    let keys = KeyStore::load(&[
        key("rsa.example", "rsa1", rsa),
        key("ed.example", "ed1", ed),
    ])
    .unwrap();

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5));
    let mut group = c.benchmark_group("sign");
    for (label, size) in [("10KB", 10 * 1024), ("1MB", 1024 * 1024)] {
        let rsa_message = message(size);
        let ed_message = String::from_utf8(rsa_message.clone())
            .unwrap()
            .replacen("@rsa.example>", "@ed.example>", 1)
            .into_bytes();
        assert!(matches!(sign(&keys, &rsa_message), Signing::Signed(_, 1)));
        assert!(matches!(sign(&keys, &ed_message), Signing::Signed(_, 1)));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("rsa2048/{label}"), |b| {
            b.iter(|| sign(&keys, black_box(&rsa_message)))
        });
        group.bench_function(format!("ed25519/{label}"), |b| {
            b.iter(|| sign(&keys, black_box(&ed_message)))
        });
        // The copy every attempt makes anyway, signed or not.
        group.bench_function(format!("dot-stuff/{label}"), |b| {
            b.iter(|| mailflow::smtp::data::dot_stuff(black_box(&rsa_message)))
        });
    }
    group.finish();
    c.final_summary();
}
