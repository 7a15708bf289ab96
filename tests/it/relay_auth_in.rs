//! Inbound authentication (issue 16), over real SMTP against the relay binary, its DNS a
//! loopback server (`--dns`) publishing SPF, DKIM and DMARC records: Internet mail is
//! verified before the rules run (`if dmarc fail`, `if spf fail` refuse at the end of
//! data), stored with the relay's Authentication-Results (forgeries of its authserv-id
//! removed, other ids kept) and ARC-sealed, continuing a chain that arrived. Every
//! signature and seal is checked by dkimpy (tests/support/dkim_check.py), not by
//! mail-auth, which made them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::dkimpy;
use support::dns::{DnsServer, Zone};
use support::raw::{Raw, Reply};
use support::relay::*;
use support::sink::Sink;

/// The outside sender's key (and, in these tests, the relay's sealing key and the
/// forwarder's: one throwaway RSA key under three names).
fn key() -> std::path::PathBuf {
    root().join("tests/fixtures/bytes/dkim-test.key")
}

fn public() -> String {
    std::fs::read_to_string(root().join("tests/fixtures/bytes/dkim-test.pub"))
        .unwrap()
        .trim()
        .to_string()
}

fn record() -> String {
    format!("v=DKIM1; k=rsa; p={}", public())
}

/// origin.example: SPF allows 127.0.0.1 (the test client), DKIM key `sel`, DMARC p=reject.
/// strict.example: SPF allows someone else only. broken.example: SERVFAIL for everything.
/// silent.example: no answer ever. forwarder.example: an ARC sealer before us.
fn zone() -> Zone {
    let dkim = record();
    let mut z = Zone::new()
        .txt("origin.example", "v=spf1 ip4:127.0.0.1 -all")
        .txt("sel._domainkey.origin.example", &dkim)
        .txt("_dmarc.origin.example", "v=DMARC1; p=reject")
        .txt("arc._domainkey.forwarder.example", &dkim)
        .txt("strict.example", "v=spf1 ip4:192.0.2.1 -all");
    for name in [
        "broken.example",
        "sel._domainkey.broken.example",
        "_dmarc.broken.example",
    ] {
        z = z.servfail(name);
    }
    for name in [
        "silent.example",
        "sel._domainkey.silent.example",
        "_dmarc.silent.example",
    ] {
        z = z.silent(name);
    }
    z
}

const AUTH: &str = r#"
dkim-key "example.com" {
  selector arc1
  key "arc.key"
}

authentication {
  authserv-id mx.example.com
  arc-seal example.com
}
"#;

/// The edge rule set (inbound mail to example.com is rewritten to tenant.example, To
/// included) with verification and sealing.
fn with_auth(t: String) -> String {
    t + AUTH
}

const RULES: &str = r#"
rule "Reject DMARC failures" {
  if dmarc fail
  reject 550 5.7.1 "DMARC policy of the sender's domain"
}

rule "Reject SPF failures" {
  if spf fail
  reject 550 5.7.23 "SPF check of the sender failed"
}
"#;

/// The same with rules refusing DMARC and SPF failures.
fn with_rules(t: String) -> String {
    t + AUTH + RULES
}

/// The same without anything that changes a message's header; mail goes to
/// tenant.example, an internal-relay domain.
fn unchanged(t: String) -> String {
    let t = t.replace("rewrite \"Tenant\" tenant.example -> example.com\n", "");
    let rule = t.find("rule \"Mark outside senders\"").unwrap();
    t[..rule].to_string() + AUTH
}

async fn start(tmp: &Path, edit: impl Fn(String) -> String) -> (Relay, Sink, DnsServer) {
    std::fs::copy(key(), tmp.join("arc.key")).unwrap();
    let dns = DnsServer::start(zone()).await;
    let addr = dns.addr.to_string();
    let (relay, sink, _ca) = EDGE.start(tmp, edit, &["--dns", &addr]).await;
    (relay, sink, dns)
}

/// EHLO client.test, MAIL FROM `from`, RCPT TO `to`, DATA: the reply to the message.
async fn send(relay: &Relay, from: &str, to: &str, message: &[u8]) -> Reply {
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let r = c.cmd(&format!("MAIL FROM:<{from}>")).await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(mailflow::smtp::dot_stuff(message)).await;
    c.reply().await.unwrap()
}

fn message(from: &str, extra: &str) -> Vec<u8> {
    format!(
        "{extra}From: Alice <{from}>\r\nTo: Bob <bob@example.com>\r\nSubject: Quarterly figures\r\n\
         Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <q1@origin.example>\r\n\r\n\
         The figures are attached.\r\n"
    )
    .into_bytes()
}

/// `message` signed by origin.example (dkimpy, simple/simple: To is signed).
fn signed(message: &[u8], domain: &str) -> Vec<u8> {
    let (code, out) = dkimpy::run(&["sign", key().to_str().unwrap(), domain, "sel"], message);
    assert_eq!(code, 0);
    out
}

async fn delivered(sink: &Sink, n: usize) -> Vec<u8> {
    assert!(wait_until(20, || sink.messages().len() > n).await);
    sink.messages().remove(n).data
}

/// Every field named `name` in the header, unfolded.
fn fields(m: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(m);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .replace("\r\n\t", " ")
        .replace("\r\n ", "  ");
    head.split("\r\n")
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .collect()
}

/// dkimpy's verdict on the message's first DKIM signature.
fn dkim_verifies(m: &[u8]) -> bool {
    let p = public();
    dkimpy::run(&["verify", &p], m).0 == 0
}

/// dkimpy's ARC validation of the whole chain, DNS answered for the three sealers' names.
fn arc_verifies(m: &[u8]) -> (bool, String) {
    let r = record();
    let args = [
        "arc-verify".to_string(),
        format!("arc1._domainkey.example.com={r}"),
        format!("arc._domainkey.forwarder.example={r}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, out) = dkimpy::run(&args, m);
    (code == 0, String::from_utf8_lossy(&out).to_string())
}

#[tokio::test]
async fn rewritten_mail_carries_an_arc_chain_with_the_results_from_before_the_rewrite() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = start(tmp.path(), with_auth).await;
    let sent = signed(&message("alice@origin.example", ""), "origin.example");
    assert!(dkim_verifies(&sent), "dkimpy signs what it verifies");
    let r = send(&relay, "alice@origin.example", "bob@example.com", &sent).await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = delivered(&sink, 0).await;
    let text = String::from_utf8_lossy(&got).to_string();
    // The rewrite happened, so the sender's signature no longer holds...
    assert!(
        fields(&got, "To")[0].contains("bob@tenant.example"),
        "{text}"
    );
    assert!(!dkim_verifies(&got), "{text}");
    // ...and the chain that vouches for it does.
    let (ok, why) = arc_verifies(&got);
    assert!(ok, "{why}\n{text}");
    assert!(
        text.starts_with("ARC-Seal: i=1; a=rsa-sha256; s=arc1; d=example.com; cv=none;"),
        "{text}"
    );
    let aar = fields(&got, "ARC-Authentication-Results");
    assert_eq!(aar.len(), 1, "{text}");
    for want in [
        "i=1; mx.example.com;",
        "spf=pass smtp.mailfrom=alice@origin.example",
        "dkim=pass header.d=origin.example header.s=sel",
        "dmarc=pass (p=reject) header.from=origin.example",
        "arc=none",
    ] {
        assert!(aar[0].contains(want), "{want} in {}", aar[0]);
    }
    let ar = fields(&got, "Authentication-Results");
    assert_eq!(ar.len(), 1, "{text}");
    assert!(ar[0].starts_with("mx.example.com;"), "{}", ar[0]);
    assert!(
        ar[0].contains("dkim=pass header.d=origin.example"),
        "{}",
        ar[0]
    );
}

#[tokio::test]
async fn a_chain_that_arrives_is_continued_at_instance_two() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = start(tmp.path(), with_auth).await;
    let original = signed(&message("alice@origin.example", ""), "origin.example");
    let mut at_forwarder =
        b"Authentication-Results: forwarder.example; dkim=pass header.d=origin.example\r\n"
            .to_vec();
    at_forwarder.extend_from_slice(&original);
    let (code, sealed) = dkimpy::run(
        &[
            "arc-sign",
            key().to_str().unwrap(),
            "forwarder.example",
            "arc",
            "forwarder.example",
        ],
        &at_forwarder,
    );
    assert_eq!(code, 0);
    assert!(arc_verifies(&sealed).0, "dkimpy validates its own i=1");
    let r = send(&relay, "alice@origin.example", "bob@example.com", &sealed).await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = delivered(&sink, 0).await;
    let text = String::from_utf8_lossy(&got).to_string();
    let (ok, why) = arc_verifies(&got);
    assert!(ok, "{why}\n{text}");
    assert!(
        text.starts_with("ARC-Seal: i=2; a=rsa-sha256; s=arc1; d=example.com; cv=pass;"),
        "{text}"
    );
    let seals = fields(&got, "ARC-Seal");
    assert_eq!(seals.len(), 2, "{text}");
    let aar = fields(&got, "ARC-Authentication-Results");
    assert!(
        aar.iter()
            .any(|a| a.starts_with("i=2; mx.example.com;") && a.contains("arc=pass")),
        "{aar:?}"
    );
    // The forwarder's own Authentication-Results is another id's: kept.
    let ar = fields(&got, "Authentication-Results");
    assert_eq!(ar.len(), 2, "{ar:?}");
    assert!(
        ar.iter().any(|a| a.starts_with("forwarder.example;")),
        "{ar:?}"
    );
}

#[tokio::test]
async fn results_forged_under_our_authserv_id_are_removed_and_others_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = start(tmp.path(), unchanged).await;
    let forged = message(
        "alice@elsewhere.example",
        "Authentication-Results: mx.example.com; dkim=pass header.d=bank.example\r\n\
         Authentication-Results: (sneaky) MX.EXAMPLE.COM;\r\n\tdmarc=pass header.from=bank.example\r\n\
         Authentication-Results: mx.partner.example; spf=pass smtp.mailfrom=alice@elsewhere.example\r\n",
    );
    let r = send(
        &relay,
        "alice@elsewhere.example",
        "bob@tenant.example",
        &forged,
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = delivered(&sink, 0).await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(!text.contains("bank.example"), "{text}");
    let ar = fields(&got, "Authentication-Results");
    assert_eq!(ar.len(), 2, "{ar:?}");
    // Ours, first, says what was found: no signature, no SPF record.
    assert!(ar[0].starts_with("mx.example.com;"), "{ar:?}");
    assert!(ar[0].contains("dkim=none"), "{ar:?}");
    assert!(
        ar[0].contains("spf=none smtp.mailfrom=alice@elsewhere.example"),
        "{ar:?}"
    );
    assert!(ar[1].starts_with("mx.partner.example;"), "{ar:?}");
    // The body and every other field arrived as sent.
    assert!(
        text.ends_with("\r\n\r\nThe figures are attached.\r\n"),
        "{text}"
    );
    assert!(
        text.contains("\r\nFrom: Alice <alice@elsewhere.example>\r\nTo: Bob <bob@example.com>\r\n")
    );
}

#[tokio::test]
async fn dmarc_and_spf_failures_are_refused_at_the_end_of_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = start(tmp.path(), with_rules).await;
    // From the p=reject domain, unsigned, by a MAIL FROM without SPF: DMARC fails.
    let spoofed = message("ceo@origin.example", "");
    let r = send(
        &relay,
        "billing@elsewhere.example",
        "bob@example.com",
        &spoofed,
    )
    .await;
    assert_eq!(r.status(), "550 5.7.1", "{r:?}");
    assert!(r.text.contains("DMARC"), "{r:?}");
    // SPF of the client's address: strict.example allows 192.0.2.1 only.
    let r = send(
        &relay,
        "alice@strict.example",
        "bob@example.com",
        &message("alice@strict.example", ""),
    )
    .await;
    assert_eq!(r.status(), "550 5.7.23", "{r:?}");
    // Genuine mail of the p=reject domain passes both.
    let sent = signed(&message("alice@origin.example", ""), "origin.example");
    let r = send(&relay, "alice@origin.example", "bob@example.com", &sent).await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(!delivered(&sink, 0).await.is_empty());
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn dns_failures_are_temperror_and_the_mail_is_still_taken_within_a_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = start(tmp.path(), with_auth).await;
    for (n, domain) in ["broken.example", "silent.example"].into_iter().enumerate() {
        let from = format!("alice@{domain}");
        let sent = signed(&message(&from, ""), domain);
        let started = Instant::now();
        let r = send(&relay, &from, "bob@example.com", &sent).await;
        assert_eq!(r.code, 250, "{domain}: {r:?}");
        // The verification's own bound is 5 s; this is a liveness check, not a timing.
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{domain}: {:?}",
            started.elapsed()
        );
        let got = delivered(&sink, n).await;
        let ar = fields(&got, "Authentication-Results");
        assert_eq!(ar.len(), 1, "{ar:?}");
        for want in ["spf=temperror", "dkim=temperror", "dmarc=temperror"] {
            assert!(ar[0].contains(want), "{domain}: {want} in {}", ar[0]);
        }
    }
}

#[tokio::test]
async fn an_unchanged_message_keeps_its_signature_and_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = start(tmp.path(), unchanged).await;
    let sent = signed(&message("alice@origin.example", ""), "origin.example");
    let r = send(&relay, "alice@origin.example", "bob@tenant.example", &sent).await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = delivered(&sink, 0).await;
    let text = String::from_utf8_lossy(&got).to_string();
    // Below our fields, the message as sent, but for the AuthAs field the relay stamps at
    // the end of every header.
    let start = got
        .windows(15)
        .position(|w| w == b"DKIM-Signature:")
        .unwrap();
    let tail = String::from_utf8_lossy(&got[start..])
        .replace("X-MS-Exchange-Organization-AuthAs: Anonymous\r\n", "");
    assert_eq!(tail.as_bytes(), &sent[..], "{text}");
    assert!(dkim_verifies(&got), "{text}");
    // Sealed all the same: the tenant sees this relay's address, not the sender's, so its
    // own SPF check fails; the seal carries the SPF result from here.
    let (ok, why) = arc_verifies(&got);
    assert!(ok, "{why}\n{text}");
}

/// A thousand signatures cost ten key lookups, and a megabyte of header fields and broken
/// ARC sets nothing worse than results: the verifier, driven directly.
#[tokio::test]
async fn verification_is_bounded_on_hostile_input() {
    use mailflow::auth::verify::{Client, MAX_SIGNATURES, Verifier};
    use mailflow::model::AuthResult;
    let dns = DnsServer::start(zone()).await;
    let verifier = Verifier::with_nameserver(dns.addr);
    let client = Client {
        ip: "127.0.0.1".parse().unwrap(),
        helo: "client.test".into(),
        mail_from: Some("alice@origin.example".into()),
        host: "mx.example.com".into(),
    };
    let sent = signed(&message("alice@origin.example", ""), "origin.example");
    let end = sent.windows(6).position(|w| w == b"\r\nFrom").unwrap() + 2;
    let (signature, rest) = sent.split_at(end);
    let mut hostile = signature.repeat(1000);
    hostile.extend_from_slice(rest);
    let v = verifier
        .verify(bytes::Bytes::from(hostile), client.clone())
        .await;
    assert_eq!(v.results.dkim.len(), MAX_SIGNATURES);
    assert!(v.results.dkim.iter().all(|d| d.result == AuthResult::Pass));
    assert_eq!(v.signatures_skipped, 1000 - MAX_SIGNATURES);
    let lookups = dns
        .queries()
        .iter()
        .filter(|(name, _)| name == "sel._domainkey.origin.example")
        .count();
    assert!(lookups <= MAX_SIGNATURES, "{lookups} key lookups");
    assert!(
        v.header_field("mx.example.com")
            .contains("(990 further signatures not verified)")
    );

    let mut junk = Vec::new();
    for i in 0..20_000 {
        junk.extend_from_slice(format!("X-Junk-{i}: {}\r\n", "x".repeat(40)).as_bytes());
    }
    junk.extend_from_slice(
        b"ARC-Seal: i=7; cv=maybe; b=!!!\r\nARC-Message-Signature: i=1; h=from\r\n\
          ARC-Authentication-Results: i=99\r\nDKIM-Signature: v=9; d=\xff\r\n",
    );
    junk.extend_from_slice(&message("alice@origin.example", ""));
    let v = verifier.verify(bytes::Bytes::from(junk), client).await;
    assert_eq!(v.results.arc.result, AuthResult::Fail, "{v:?}");
    assert_eq!(v.results.spf.result, AuthResult::Pass);
    assert_eq!(v.results.dmarc.result, AuthResult::Pass);
}

/// A chain whose last set no longer verifies (the body changed after the forwarder sealed)
/// is continued with `cv=fail`, which every later receiver reads as "do not trust".
#[tokio::test]
async fn a_broken_chain_is_sealed_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = start(tmp.path(), with_auth).await;
    let mut at_forwarder =
        b"Authentication-Results: forwarder.example; dkim=pass header.d=origin.example\r\n"
            .to_vec();
    at_forwarder.extend_from_slice(&message("alice@origin.example", ""));
    let (code, sealed) = dkimpy::run(
        &[
            "arc-sign",
            key().to_str().unwrap(),
            "forwarder.example",
            "arc",
            "forwarder.example",
        ],
        &at_forwarder,
    );
    assert_eq!(code, 0);
    let tampered = String::from_utf8(sealed)
        .unwrap()
        .replace("The figures are attached.", "The figures are NOT attached.");
    let r = send(
        &relay,
        "alice@origin.example",
        "bob@example.com",
        tampered.as_bytes(),
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    let got = delivered(&sink, 0).await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        text.starts_with("ARC-Seal: i=2; a=rsa-sha256; s=arc1; d=example.com; cv=fail;"),
        "{text}"
    );
    let aar = fields(&got, "ARC-Authentication-Results");
    assert!(
        aar.iter()
            .any(|a| a.starts_with("i=2; mx.example.com;") && a.contains("arc=fail")),
        "{aar:?}"
    );
    let (ok, why) = arc_verifies(&got);
    assert!(!ok, "a failed chain stays failed: {why}");
    // dkimpy stops at our seal's cv=fail: the verdict is ours, not a broken signature.
    assert!(why.contains("ARC-Seal[2] reported failure"), "{why}");
}

/// `mailflow dry-run --verify`: the same verification as the relay's, over the same
/// loopback DNS, its results read by the rules, and the field and seal the relay would add.
#[tokio::test]
async fn a_dry_run_verifies_over_dns_and_shows_the_field_and_the_seal() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(key(), tmp.path().join("arc.key")).unwrap();
    let rules = tmp.path().join("r.mailflow");
    std::fs::write(
        &rules,
        format!(
            "accepted-domain example.com internal-relay
receive-connector \"Internet\" {{
  listen 127.0.0.1:25
  auth anonymous
}}
send-connector \"Out\" {{
  address-space *
  smart-host 192.0.2.1
}}
{AUTH}{RULES}"
        ),
    )
    .unwrap();
    let dns = DnsServer::start(zone()).await;
    let run = |ip: &'static str, from: &'static str, message: Vec<u8>| {
        let (rules, dir, dns) = (
            rules.clone(),
            tmp.path().to_path_buf(),
            dns.addr.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let m = dir.join("m.eml");
            std::fs::write(&m, message).unwrap();
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_mailflow"))
                .args(["dry-run", rules.to_str().unwrap(), "--client-ip", ip])
                .args(["--from", from, "--to", "bob@example.com", "--verify"])
                .args(["--helo", "client.test", "--dns", &dns, "--message"])
                .arg(&m)
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            (
                o.status.code(),
                String::from_utf8_lossy(&o.stdout).to_string(),
            )
        })
    };
    let sent = signed(&message("alice@origin.example", ""), "origin.example");
    let (code, out) = run("127.0.0.1", "alice@origin.example", sent)
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("\ninbound:\n  Authentication-Results: mx.example.com;"),
        "{out}"
    );
    for found in [
        "spf=pass",
        "dkim=pass",
        "header.d=origin.example",
        "dmarc=pass",
    ] {
        assert!(out.contains(found), "{found}: {out}");
    }
    assert!(
        out.contains("ARC-sealed: i=1; s=arc1; d=example.com; cv=none"),
        "{out}"
    );
    // The p=reject domain's name from an address its SPF does not list, unsigned: the
    // rule refuses it.
    let spoofed = message("ceo@origin.example", "");
    let (code, out) = run("127.0.0.2", "ceo@origin.example", spoofed)
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("dmarc=fail"), "{out}");
    assert!(out.contains("rejected: 550 5.7.1"), "{out}");
}
