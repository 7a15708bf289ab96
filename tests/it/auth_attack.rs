//! Issue 16 attacked as an attacker and an outage would, over real SMTP against the relay
//! binary, a recording sink as every next hop. Each test tries to break one promise and
//! asserts a bound:
//! - SRS is no open relay: a client that may not relay gets nothing delivered through a
//!   forged, altered, foreign or misplaced SRS address (550 at RCPT, nothing at the sink),
//!   and a valid one carries nobody else along;
//! - forged Authentication-Results under our authserv-id are removed however they are
//!   spelled, and nothing else is;
//! - a reload with a signing key replaced by garbage is refused and the old key keeps
//!   signing.

use crate::support;

use mailflow::auth::srs::Srs;
use support::raw::Raw;
use support::relay::*;
use support::signing::*;
use support::sink::{Sink, SinkOptions};

const SECRET: &str = "a long random secret for the attack tests";

/// Seed 000 as shipped with SRS at domain.org and a contact forwarding to the Internet;
/// every next hop is the sink. The Internet connector relays for nobody.
async fn srs_relay(dir: &std::path::Path) -> (Relay, Sink) {
    seed_000_forwarding(dir, "desk@partner.example", SECRET, SinkOptions::default()).await
}

/// One transaction from the Internet: each RCPT's reply, and DATA's when any was taken.
async fn transaction(relay: &Relay, from: &str, to: &[&str]) -> (Vec<String>, Option<u16>) {
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
    let mut replies = Vec::new();
    for t in to {
        let r = c.cmd(&format!("RCPT TO:<{t}>")).await;
        replies.push(format!("{} {}", r.code, r.text));
    }
    if !replies.iter().any(|r| r.starts_with("250")) {
        return (replies, None);
    }
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send("From: <x@contoso.com>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n")
        .await;
    (replies, Some(c.reply().await.unwrap().code))
}

/// `address` (an SRS0 one) with its four hash characters replaced by `hash`.
fn with_hash(address: &str, hash: &str) -> String {
    let (tag, rest) = address.split_at(5);
    format!("{tag}{hash}{}", &rest[4..])
}

#[tokio::test(flavor = "multi_thread")]
async fn srs_addresses_relay_nothing_but_the_bounce_they_vouch_for() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink) = srs_relay(tmp.path()).await;
    let srs = Srs::new(&[SECRET], 21).unwrap();
    let today = mailflow::clock::days_since_epoch();
    let valid = srs
        .forward("dana.reyes@contoso.com", "domain.org", today)
        .unwrap();
    let hash = &valid[5..9];

    // Hashes no secret made, in every case spelling; the original changed under a valid
    // hash; another secret's address; a stamp from tomorrow; the 1024-day wrap minus one.
    let other = Srs::new(&["someone else's secret"], 21).unwrap();
    let mut refused: Vec<String> = ["AAAA", "aaaa", "ZzZz", "+/+/", "////"]
        .iter()
        .filter(|h| !h.eq_ignore_ascii_case(hash))
        .map(|h| with_hash(&valid, h))
        .collect();
    refused.extend([
        valid.replace("=dana.reyes@", "=mallory@"),
        valid.replace("=contoso.com=", "=victim.example="),
        // The boundary between domain and local part moved (libsrs2's hash would keep it).
        valid.replace("=contoso.com=dana.reyes@", "=contoso.co=mdana.reyes@"),
        valid.replace("=contoso.com=dana.reyes@", "=contoso.comd=ana.reyes@"),
        other
            .forward("mallory@victim.example", "domain.org", today)
            .unwrap(),
        srs.forward("mallory@victim.example", "domain.org", today + 1)
            .unwrap(),
        srs.forward("mallory@victim.example", "domain.org", today + 1000)
            .unwrap(),
        // SRS1 naming another forwarder, signed by nobody we know, and one naming us.
        format!("SRS1=abcd=forwarder.example=={}", &valid[4..]),
        other
            .forward(
                &valid.replace("@domain.org", "@forwarder.example"),
                "domain.org",
                today,
            )
            .unwrap(),
        format!("SRS1=abcd=domain.org=={}", &valid[4..]),
        // Malformed shapes.
        "SRS0=@domain.org".into(),
        "SRS0==@domain.org".into(),
        "SRS0=abcd=AA==mallory@domain.org".into(),
        "SRS0=abcd=AA=victim.example=@domain.org".into(),
        "srs1=@domain.org".into(),
        "SRS1=abcd=victim.example=@domain.org".into(),
    ]);
    // Quoted, the same mailbox (RFC 5321 4.1.2): checked as the unquoted one.
    let forged = valid.replace("=dana.reyes@", "=mallory@");
    let (local, _) = forged.rsplit_once('@').unwrap();
    refused.push(format!("\"{local}\"@domain.org"));
    for to in &refused {
        let (replies, data) = transaction(&relay, "", &[to]).await;
        assert!(replies[0].starts_with("550 5.7.1"), "{to}: {replies:?}");
        assert_eq!(data, None, "{to}");
    }

    // A valid address's shape at a domain that is not the srs-domain, quoted, or with a
    // routing local part: not ours, so not relayed (or not a recipient at all).
    let elsewhere = [
        valid.replace("@domain.org", "@partner.example"),
        valid.replace("@domain.org", "@contoso.com"),
        valid.replace("=dana.reyes@", "=mallory%victim.example@"),
        valid.replace("@domain.org", "@domain.org@victim.example"),
    ];
    for to in &elsewhere {
        let (replies, data) = transaction(&relay, "", &[to]).await;
        assert!(
            replies[0].starts_with('5') && !replies[0].starts_with("250"),
            "{to}: {replies:?}"
        );
        assert_eq!(data, None, "{to}");
    }

    // The valid one, its hash lowercased (as a next hop may), with outside recipients
    // in the same transaction: only the bounce goes on, to dana.
    let lower = valid.to_ascii_lowercase();
    let (replies, data) = transaction(
        &relay,
        "",
        &[
            &lower,
            "victim@victim.example",
            &valid.replace("@domain.org", "@victim.example"),
        ],
    )
    .await;
    assert!(replies[0].starts_with("250"), "{replies:?}");
    assert!(replies[1].starts_with("550"), "{replies:?}");
    assert!(replies[2].starts_with("550"), "{replies:?}");
    assert_eq!(data, Some(250));
    let bounce = next_message(&sink, 0).await;
    assert_eq!(bounce.rcpts, [s("dana.reyes@contoso.com")]);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let all: Vec<Vec<String>> = sink.messages().iter().map(|m| m.rcpts.clone()).collect();
    assert_eq!(all, [[s("dana.reyes@contoso.com")]]);
}

/// Guessing a hash (about 20 bits, compared without regard to case) costs connections:
/// a session that guesses wrong is closed after 19 refusals.
#[tokio::test(flavor = "multi_thread")]
async fn guessing_srs_hashes_is_bounded_per_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink) = srs_relay(tmp.path()).await;
    let srs = Srs::new(&[SECRET], 21).unwrap();
    let today = mailflow::clock::days_since_epoch();
    let target = srs
        .forward("victim@victim.example", "domain.org", today)
        .unwrap();
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<>").await.code, 250);
    let mut refused = 0;
    for i in 0..100u32 {
        let guess = format!("{:04}", i % 10_000);
        if guess.eq_ignore_ascii_case(&target[5..9]) {
            continue;
        }
        if !c
            .try_send(format!("RCPT TO:<{}>\r\n", with_hash(&target, &guess)))
            .await
        {
            break;
        }
        match c.reply().await {
            Some(r) if r.code == 550 => refused += 1,
            Some(r) => {
                assert_eq!(r.code, 421, "{r:?}");
                break;
            }
            None => break,
        }
    }
    assert_eq!(refused, 19);
    assert!(c.closed().await);
    assert!(sink.messages().is_empty());
}

// ------------------------------------------------- Authentication-Results forgeries

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

/// edge.mailflow without anything that changes a message, verifying and sealing as
/// mx.example.com; its DNS answers nothing useful (every result is `none`).
async fn edge_verifying(tmp: &std::path::Path) -> (Relay, Sink, support::dns::DnsServer) {
    std::fs::copy(
        root().join("tests/fixtures/bytes/dkim-test.key"),
        tmp.join("arc.key"),
    )
    .unwrap();
    let dns = support::dns::DnsServer::start(support::dns::Zone::new()).await;
    let addr = dns.addr.to_string();
    let (relay, sink, _ca) = EDGE
        .start(
            tmp,
            |t| {
                let t = t.replace("rewrite \"Tenant\" tenant.example -> example.com\n", "");
                let rule = t.find("rule \"Mark outside senders\"").unwrap();
                t[..rule].to_string() + AUTH
            },
            &["--dns", &addr],
        )
        .await;
    (relay, sink, dns)
}

/// Each `Authentication-Results` (any case of the name) field's value, unfolded.
fn results_fields(m: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(m);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .replace("\r\n\t", " ");
    let head = head.replace("\r\n ", "  ");
    head.split("\r\n")
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("Authentication-Results")
                .then(|| v.trim().to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spelling_of_our_authserv_id_is_removed_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _dns) = edge_verifying(tmp.path()).await;
    // Each claims a pass for bank.example under a spelling of mx.example.com a reader
    // could take for ours.
    let forged = [
        "Authentication-Results: mx.example.com; dmarc=pass header.from=bank.example",
        "authentication-results: MX.Example.COM; dmarc=pass header.from=bank.example",
        "AUTHENTICATION-RESULTS : mx.example.com; dmarc=pass header.from=bank.example",
        "Authentication-Results: (a (nested) comment)\r\n mx.example.com;\r\n\tdmarc=pass header.from=bank.example",
        "Authentication-Results:\r\n mx.example.com 1; dmarc=pass header.from=bank.example",
        "Authentication-Results: \"mx.example.com\"; dmarc=pass header.from=bank.example",
        "Authentication-Results: \"mx.example\\.com\"; dmarc=pass header.from=bank.example",
        "Authentication-Results: mx.example.com.; dmarc=pass header.from=bank.example",
        "Authentication-Results: mx.example.com(c); dmarc=pass header.from=bank.example",
        "Authentication-Results:mx.example.com;dmarc=pass header.from=bank.example",
    ];
    // Others' results, and fields that only look like ours: kept byte for byte.
    let kept = [
        "Authentication-Results: mx.partner.example; spf=pass smtp.mailfrom=a@partner.example",
        "Authentication-Results: mx.example.com.evil.example; dmarc=pass",
        "Authentication-Results: evil-mx.example.com; dmarc=pass",
        "X-Authentication-Results: mx.example.com; dmarc=pass",
        "ARC-Authentication-Results: i=1; mx.example.com; dmarc=pass",
        "Comments: Authentication-Results: mx.example.com; dmarc=pass",
        "Authentication-Results:",
    ];
    let mut head = String::new();
    for f in forged.iter().chain(&kept) {
        head.push_str(f);
        head.push_str("\r\n");
    }
    let message = format!(
        "{head}From: Alice <alice@elsewhere.example>\r\nTo: bob@tenant.example\r\n\
         Subject: hi\r\nMessage-ID: <f1@elsewhere.example>\r\n\r\nbody\r\n"
    );
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<alice@elsewhere.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@tenant.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(mailflow::smtp::dot_stuff(message.as_bytes())).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let got = next_message(&sink, 0).await.data;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(!text.contains("header.from=bank.example"), "{text}");
    for k in &kept {
        assert!(text.contains(&format!("{k}\r\n")), "{k} lost:\n{text}");
    }
    let ours: Vec<String> = results_fields(&got)
        .into_iter()
        .filter(|v| v.starts_with("mx.example.com;"))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].contains("dmarc=none"), "{ours:?}");
    assert!(
        text.contains(
            "From: Alice <alice@elsewhere.example>\r\nTo: bob@tenant.example\r\n\
             Subject: hi\r\nMessage-ID: <f1@elsewhere.example>\r\n"
        ) && text.ends_with("\r\n\r\nbody\r\n"),
        "{text}"
    );
}

// ------------------------------------------------------------- reload with bad keys

/// The relay's ARC seal on `m`, validated by dkimpy with the test key published for
/// `arc1._domainkey.example.com`.
fn arc_valid(m: &[u8]) -> bool {
    let public =
        std::fs::read_to_string(root().join("tests/fixtures/bytes/dkim-test.pub")).unwrap();
    let record = format!(
        "arc1._domainkey.example.com=v=DKIM1; k=rsa; p={}",
        public.trim()
    );
    support::dkimpy::run(&["arc-verify", &record], m).0 == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_with_a_key_replaced_by_garbage_is_refused_and_the_old_key_keeps_sealing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/fixtures/bytes/dkim-test.key"),
        tmp.path().join("arc.key"),
    )
    .unwrap();
    let dns = support::dns::DnsServer::start(support::dns::Zone::new()).await;
    let addr = dns.addr.to_string();
    let (relay, sink, _ca) = EDGE
        .start(
            tmp.path(),
            |t| t + AUTH,
            &["--dns", &addr, "--admin", "127.0.0.1:0"],
        )
        .await;
    let admin = relay.admin.unwrap();
    let send = |n: usize| {
        let relay = &relay;
        async move {
            let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
            assert_eq!(c.cmd("EHLO client.test").await.code, 250);
            assert_eq!(c.cmd("MAIL FROM:<alice@elsewhere.example>").await.code, 250);
            assert_eq!(c.cmd("RCPT TO:<bob@example.com>").await.code, 250);
            assert_eq!(c.cmd("DATA").await.code, 354);
            c.send(format!(
                "From: <alice@elsewhere.example>\r\nTo: <bob@example.com>\r\nSubject: {n}\r\n\r\nbody\r\n.\r\n"
            ))
            .await;
            assert_eq!(c.reply().await.unwrap().code, 250);
        }
    };
    send(0).await;
    let first = next_message(&sink, 0).await.data;
    assert!(arc_valid(&first), "{}", String::from_utf8_lossy(&first));

    // Garbage, an empty file, a public key, a truncated PEM: each reload refused.
    let pem = std::fs::read_to_string(tmp.path().join("arc.key")).unwrap();
    let public =
        std::fs::read_to_string(root().join("tests/fixtures/bytes/dkim-test.pub")).unwrap();
    let replacements: Vec<Vec<u8>> = vec![
        b"\x00\xff garbage \xfe".to_vec(),
        Vec::new(),
        format!("-----BEGIN PUBLIC KEY-----\n{public}\n-----END PUBLIC KEY-----\n").into_bytes(),
        pem.as_bytes()[..pem.len() / 2].to_vec(),
    ];
    for (i, bad) in replacements.iter().enumerate() {
        std::fs::write(tmp.path().join("arc.key"), bad).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["reload", "--admin", &admin.to_string()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "replacement {i} was loaded");
        let failed = format!("mailflow_reloads_failed_total {}\n", i + 1);
        assert!(
            http_get(admin, "/metrics").contains(&failed),
            "replacement {i}"
        );
        send(i + 1).await;
        let m = next_message(&sink, i + 1).await.data;
        assert!(
            arc_valid(&m),
            "after replacement {i}: {}",
            String::from_utf8_lossy(&m)
        );
    }
}

// ---------------------------------------------------------- ARC sets forged as ours

#[tokio::test(flavor = "multi_thread")]
async fn an_arc_set_forged_in_our_name_is_sealed_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/fixtures/bytes/dkim-test.key"),
        tmp.path().join("arc.key"),
    )
    .unwrap();
    let dns_record = format!(
        "v=DKIM1; k=rsa; p={}",
        std::fs::read_to_string(root().join("tests/fixtures/bytes/dkim-test.pub"))
            .unwrap()
            .trim()
    );
    // Our sealing key is published, as it must be; the attacker seals with another key.
    let zone = support::dns::Zone::new().txt("arc1._domainkey.example.com", &dns_record);
    let dns = support::dns::DnsServer::start(zone).await;
    let addr = dns.addr.to_string();
    let (relay, sink, _ca) = EDGE
        .start(tmp.path(), |t| t + AUTH, &["--dns", &addr])
        .await;
    let attacker_key = root().join("tests/fixtures/dkim-keys/rsa2048.pem");
    let message = "Authentication-Results: mx.example.com; dmarc=pass header.from=bank.example\r\n\
        From: <ceo@bank.example>\r\nTo: <bob@example.com>\r\nSubject: wire\r\n\r\npay now\r\n";
    let (code, forged) = support::dkimpy::run(
        &[
            "arc-sign",
            attacker_key.to_str().unwrap(),
            "example.com",
            "arc1",
            "mx.example.com",
        ],
        message.as_bytes(),
    );
    assert_eq!(code, 0);
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<ceo@bank.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.com>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(mailflow::smtp::dot_stuff(&forged)).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let got = next_message(&sink, 0).await.data;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        text.starts_with("ARC-Seal: i=2; a=rsa-sha256; s=arc1; d=example.com; cv=fail;"),
        "{text}"
    );
    let ours: Vec<String> = results_fields(&got)
        .into_iter()
        .filter(|v| v.starts_with("mx.example.com;"))
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].contains("arc=fail"), "{ours:?}");
    assert!(ours[0].contains("dmarc=none"), "{ours:?}");
    // The forged top-level result is gone; the forged set stays, judged failed by our seal.
    assert!(
        results_fields(&got)
            .iter()
            .all(|v| !v.contains("dmarc=pass")),
        "{text}"
    );
    assert!(!arc_valid(&got), "{text}");
}

// ------------------------------------------------------------------ resource bounds

/// One message from `from` to bob@example.com: the reply to its data and how long the
/// whole transaction took.
async fn timed(relay: &Relay, from: &str, message: &[u8]) -> (u16, std::time::Duration) {
    let started = std::time::Instant::now();
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@example.com>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(mailflow::smtp::dot_stuff(message)).await;
    let code = c.reply().await.unwrap().code;
    (code, started.elapsed())
}

/// SPF that loops, SPF that includes forever or names forty hosts, and a header filled to
/// its 256 KiB limit with signatures and seals: each session still answers within the
/// verification's 5 s (with a margin for a loaded machine), SPF stops within RFC 7208's ten
/// look-ups, at most ten signatures' keys are fetched, and the relay's peak resident set
/// grows by a bounded amount (1.6 MiB measured; 64 MiB allowed).
#[tokio::test(flavor = "multi_thread")]
async fn hostile_dns_and_header_floods_are_answered_within_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/fixtures/bytes/dkim-test.key"),
        tmp.path().join("arc.key"),
    )
    .unwrap();
    let mut zone = support::dns::Zone::new()
        .txt("loop.example", "v=spf1 include:loop2.example -all")
        .txt("loop2.example", "v=spf1 include:loop.example -all")
        .txt(
            "wide.example",
            &format!(
                "v=spf1 {} -all",
                (0..40)
                    .map(|i| format!("a:h{i}.wide.example"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
    for i in 0..40 {
        zone = zone.txt(
            &format!("c{i}.chain.example"),
            &format!("v=spf1 include:c{}.chain.example -all", i + 1),
        );
    }
    let dns = support::dns::DnsServer::start(zone).await;
    let addr = dns.addr.to_string();
    let (relay, sink, _ca) = EDGE
        .start(tmp.path(), |t| t + AUTH, &["--dns", &addr])
        .await;
    let pid = relay.child.id();
    let bound = std::time::Duration::from_secs(5 + 5);

    let (code, took) = timed(&relay, "a@loop.example", b"Subject: warm\r\n\r\nx\r\n").await;
    assert_eq!(code, 250);
    assert!(took < bound, "loop: {took:?}");
    let base = status_kib(pid, "VmHWM:");
    for from in ["a@c0.chain.example", "a@wide.example"] {
        let (code, took) = timed(&relay, from, b"Subject: spf\r\n\r\nx\r\n").await;
        assert_eq!(code, 250, "{from}");
        assert!(took < bound, "{from}: {took:?}");
    }
    let queries = dns.queries();
    let chain = queries
        .iter()
        .filter(|(n, _)| n.ends_with("chain.example"))
        .count();
    let wide = queries
        .iter()
        .filter(|(n, _)| n.ends_with("wide.example"))
        .count();
    let looped = queries
        .iter()
        .filter(|(n, _)| n.starts_with("loop"))
        .count();
    // RFC 7208 4.6.4: ten mechanisms that query DNS, plus the first record (and the DMARC
    // and DKIM look-ups of the same names, at most a few).
    for (what, n) in [("chain", chain), ("wide", wide), ("loop", looped)] {
        assert!(n <= 16, "{what}: {n} queries\n{queries:?}");
    }
    for i in 0..3 {
        let m = next_message(&sink, i).await;
        let text = data_text(&m);
        assert!(
            text.contains("spf=permerror") || text.contains("spf=temperror"),
            "{text}"
        );
    }

    // 600 signatures (each `l=1`, naming From ten times) and 600 seals, just under the
    // 256 KiB header limit: taken, at most ten signatures' keys looked up.
    let before = dns.queries().len();
    let names = ["from"; 10].join(":");
    let mut flood = String::new();
    for i in 0..600 {
        flood.push_str(&format!(
            "DKIM-Signature: v=1; a=rsa-sha256; d=d{i}.example; s=s; c=relaxed/relaxed; l=1; h={names}; bh=AAAA; b=AAAA\r\n\
             ARC-Seal: i={i}; a=rsa-sha256; d=d{i}.example; s=s; cv=pass; b=AAAA\r\n"
        ));
    }
    flood.push_str("From: <a@origin.example>\r\nSubject: flood\r\n\r\nbody\r\n");
    let (code, took) = timed(&relay, "a@origin.example", flood.as_bytes()).await;
    assert_eq!(code, 250, "flood");
    assert!(took < bound, "flood: {took:?}");
    let keys = dns.queries()[before..]
        .iter()
        .filter(|(n, _)| n.contains("._domainkey."))
        .count();
    assert!(keys <= 10, "{keys} key look-ups");
    let m = next_message(&sink, 3).await;
    assert!(
        data_text(&m).contains("590 further signatures not verified"),
        "{}",
        data_text(&m)
    );
    let grown = status_kib(pid, "VmHWM:").saturating_sub(base);
    eprintln!(
        "flood: {} bytes, reply {code}, {took:?}, peak grew {grown} KiB",
        flood.len()
    );
    assert!(grown < 64 * 1024, "peak resident set grew {grown} KiB");
}

// ------------------------------------------------------------------------- signing

/// Every message the relay signs for origin.example whatever its From looks like: each
/// signature it adds verifies under dkimpy, or the message goes unsigned; never a broken
/// signature. A large body is signed with the peak resident set bounded.
#[tokio::test(flavor = "multi_thread")]
async fn odd_from_fields_are_signed_validly_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let (rsa, ed) = write_keys(tmp.path());
    let (relay, sink, _) = EDGE
        .start(
            tmp.path(),
            |t| {
                let t = t.replace("rewrite \"Tenant\" tenant.example -> example.com\n", "");
                let rule = t.find("rule \"Mark outside senders\"").unwrap();
                t[..rule].to_string() + &dkim_keys("origin.example")
            },
            &[],
        )
        .await;
    let records = [
        (s("rsa2026._domainkey.origin.example"), rsa.as_str()),
        (s("ed2026._domainkey.origin.example"), ed.as_str()),
    ];
    let froms: [(&str, &str); 7] = [
        ("upper case", "From: A <a@ORIGIN.Example>\r\n"),
        (
            "two addresses",
            "From: a@origin.example, b@elsewhere.example\r\n",
        ),
        (
            "other first",
            "From: b@elsewhere.example, a@origin.example\r\n",
        ),
        (
            "two fields",
            "From: a@origin.example\r\nFrom: x@elsewhere.example\r\n",
        ),
        ("utf-8", "From: J\u{f6}rg <j\u{f6}rg@origin.example>\r\n"),
        ("group", "From: team: a@origin.example;\r\n"),
        ("folded", "From: A\r\n <a@origin.example>\r\n"),
    ];
    let mut signed = Vec::new();
    for (n, (what, from)) in froms.iter().enumerate() {
        let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
        assert_eq!(c.cmd("EHLO client.test").await.code, 250);
        let utf8 = if from.is_ascii() { "" } else { " SMTPUTF8" };
        let r = c.cmd(&format!("MAIL FROM:<a@origin.example>{utf8}")).await;
        assert_eq!(r.code, 250, "{what}: {r:?}");
        assert_eq!(c.cmd("RCPT TO:<bob@tenant.example>").await.code, 250);
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!(
            "{from}To: bob@tenant.example\r\nSubject: {what}\r\n\r\nhello\r\n.\r\n"
        ))
        .await;
        assert_eq!(c.reply().await.unwrap().code, 250, "{what}");
        let m = next_message(&sink, n).await;
        let verdicts = signatures(&m.data, &records);
        eprintln!("{what}: {verdicts:?}");
        assert!(
            verdicts.iter().all(|v| v.ends_with(" pass")),
            "{what}: {verdicts:?}\n{}",
            data_text(&m)
        );
        if !verdicts.is_empty() {
            signed.push(*what);
        }
    }
    // One From address of our domain, however spelled, is signed (by both keys).
    for what in ["upper case", "group", "folded"] {
        assert!(signed.contains(&what), "{what} unsigned: {signed:?}");
    }

    // 12 MB of body: signed and verified, the peak resident set bounded (24 MiB growth
    // measured for 12 MB, 40 MiB for 20 MB: twice the message, not more).
    let pid = relay.child.id();
    let base = status_kib(pid, "VmHWM:");
    let line = format!("{}\r\n", "x".repeat(998));
    let body = line.repeat(12 * 1024 * 1024 / line.len());
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@origin.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@tenant.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!(
        "From: a@origin.example\r\nSubject: big\r\n\r\n{body}.\r\n"
    ))
    .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let m = next_message(&sink, froms.len()).await;
    let grown = status_kib(pid, "VmHWM:").saturating_sub(base);
    let verdicts = signatures(&m.data, &records);
    eprintln!("big: {verdicts:?}, peak grew {grown} KiB");
    assert_eq!(verdicts.len(), 2, "{verdicts:?}");
    assert!(
        verdicts.iter().all(|v| v.ends_with(" pass")),
        "{verdicts:?}"
    );
    assert!(grown < 96 * 1024, "peak resident set grew {grown} KiB");
}

// ------------------------------------------------------------------- the l= tag

/// A signature with `l=` covers only the start of the body: content appended after it
/// (the known `l=` attack) must not be reported, and ARC-sealed, as `dkim=pass`. Any
/// signature with `l=` reads as `neutral`, appended to or not, so DMARC does not pass on it.
#[tokio::test(flavor = "multi_thread")]
async fn content_appended_past_a_signatures_length_is_not_a_pass() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("tests/fixtures/bytes/dkim-test.key"),
        tmp.path().join("arc.key"),
    )
    .unwrap();
    let zone = support::dns::Zone::new()
        .txt("sel._domainkey.origin.example", &test_key_record())
        .txt("_dmarc.origin.example", "v=DMARC1; p=reject");
    let dns = support::dns::DnsServer::start(zone).await;
    let addr = dns.addr.to_string();
    let (relay, sink, _ca) = EDGE
        .start(tmp.path(), |t| t + AUTH, &["--dns", &addr])
        .await;
    let key = root().join("tests/fixtures/bytes/dkim-test.key");
    let original =
        b"From: <ceo@origin.example>\r\nTo: <bob@example.com>\r\nSubject: hi\r\n\r\nshort\r\n";
    let (code, signed) = support::dkimpy::run(
        &[
            "sign-length",
            key.to_str().unwrap(),
            "origin.example",
            "sel",
        ],
        original,
    );
    assert_eq!(code, 0);
    let mut appended = signed.clone();
    appended.extend_from_slice(b"\r\nPay the invoice to IBAN XX00 EVIL.\r\n");
    for (n, (what, message)) in [("as signed", &signed), ("appended", &appended)]
        .into_iter()
        .enumerate()
    {
        let (code, _) = timed(&relay, "ceo@origin.example", message).await;
        assert_eq!(code, 250, "{what}");
        let got = next_message(&sink, n).await.data;
        let ours: Vec<String> = results_fields(&got)
            .into_iter()
            .filter(|v| v.starts_with("mx.example.com;"))
            .collect();
        assert_eq!(ours.len(), 1, "{what}: {ours:?}");
        assert!(ours[0].contains("dkim=neutral"), "{what}: {ours:?}");
        assert!(ours[0].contains("dmarc=fail"), "{what}: {ours:?}");
    }
}
