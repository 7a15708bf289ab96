//! Issue 16, the outbound side, over real SMTP with a recording sink as every next hop, each
//! signature checked by dkimpy (an independent implementation, `tests/support/dkim_check.py`)
//! against the records `PrivateKey::dns_record` publishes:
//! - seed 002 (`rules/shared-domain.mailflow` as shipped, with two `dkim-key`s for the shared
//!   domain): a tenant's mail, signed by the tenant and rewritten to the shared domain, leaves
//!   with valid RSA-2048 and Ed25519 signatures `d=myexchlab.com` (the tenant's own one is
//!   broken by the rewrite, as the issue says); with `dkim-sign off` it leaves unsigned;
//! - a message no rule changes keeps the signature it came with, valid next to ours;
//! - seed 000 (`rules/cloud-groups.mailflow` as shipped, with SRS configured): an outside
//!   sender's mail forwarded by contacts (to the cloud tenant and to the Internet) leaves with
//!   an SRS0 envelope sender; a bounce to it reaches the original sender; forged and expired
//!   SRS addresses are refused at RCPT; our own senders are never rewritten; the tracking log
//!   and `/metrics` say what happened.

use crate::support;

use mailflow::auth::srs::Srs;
use support::raw::Raw;
use support::relay::*;
use support::signing::*;
use support::sink::{Received, Sink, SinkOptions};
use support::tls::{TestCa, server_config};

async fn metric(relay: &Relay, name: &str) -> u64 {
    let text = http_get(relay.admin.unwrap(), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------- seed 002: signing

struct Seed002 {
    relay: Relay,
    sink: Sink,
    records: Vec<(String, String)>,
    cert: String,
    key: String,
    tmp: tempfile::TempDir,
}

/// Seed 002 as shipped, `edit`ed, with RSA and Ed25519 keys for myexchlab.com; EOP (the
/// tenants) at 127.0.0.2 with Microsoft's client certificate; the Internet is the sink.
async fn seed_002(edit: impl Fn(String) -> String) -> Seed002 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (rsa, ed) = write_keys(dir);
    shipped_rules(
        dir,
        "shared-domain.mailflow",
        &["shared-domain", "certs", "messages"],
        |t| edit(without_dkim_keys(t)) + &dkim_keys("myexchlab.com"),
    );
    let ca = TestCa::new();
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let args = vec![
        s("--remote"),
        s("From EOP=127.0.0.2"),
        s("--ca-file"),
        dir.join("ca.pem").display().to_string(),
        s("--queue-interval"),
        s("1s"),
        s("--listen"),
        s("From EOP=127.0.0.1:0"),
        s("--listen"),
        s("Internet=127.0.0.1:0"),
        s("--smart-host"),
        format!("To Internet={}", sink.addr),
        s("--admin"),
        s("127.0.0.1:0"),
    ];
    let relay = Relay::start(
        &dir.join("shared-domain.mailflow"),
        &dir.join("spool"),
        &args,
    );
    let (cert, key) = write_pem(
        &ca.issue_client("mail.protection.outlook.com"),
        dir,
        "eop-client",
    );
    let records = vec![
        (s("rsa2026._domainkey.myexchlab.com"), rsa),
        (s("ed2026._domainkey.myexchlab.com"), ed),
        (s("sel._domainkey.tenant1.myexchlab.com"), test_key_record()),
    ];
    Seed002 {
        relay,
        sink,
        records,
        cert,
        key,
        tmp,
    }
}

impl Seed002 {
    /// John's mail from tenant 1, signed by the tenant, through EOP to alex@fabrikam.com;
    /// what the Internet got.
    async fn john_to_fabrikam(&self) -> Received {
        let message = signed_by(
            "tenant1.myexchlab.com",
            b"From: John Smith <John.Smith@tenant1.myexchlab.com>\r\n\
To: Alex Wilber <alex.wilber@fabrikam.com>\r\nSubject: figures\r\n\
Date: Mon, 7 Dec 2026 09:00:00 +0000\r\nMessage-ID: <q4@tenant1.myexchlab.com>\r\n\r\n\
The figures are attached.\r\n",
        );
        let path = self.tmp.path().join("john.eml");
        std::fs::write(&path, &message).unwrap();
        let out = client(vec![
            s("--port"),
            self.relay.listener("From EOP").port().to_string(),
            s("--source"),
            s("127.0.0.2"),
            s("--starttls"),
            s("--cert"),
            self.cert.clone(),
            s("--key"),
            self.key.clone(),
            s("--from"),
            s("John.Smith@tenant1.myexchlab.com"),
            s("--to"),
            s("alex.wilber@fabrikam.com"),
            s("--mail-option"),
            s("XOORG=tenant1.myexchlab.com"),
            s("--message"),
            path.display().to_string(),
        ])
        .await;
        assert_eq!(out["messages"][0]["data"][0], 250, "{out}");
        next_message(&self.sink, 0).await
    }

    fn verdicts(&self, m: &Received) -> Vec<String> {
        let records: Vec<(String, &str)> = self
            .records
            .iter()
            .map(|(n, r)| (n.clone(), r.as_str()))
            .collect();
        signatures(&m.data, &records)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_002_mail_rewritten_to_the_shared_domain_leaves_signed_for_it() {
    let seed = seed_002(|t| t).await;
    let m = seed.john_to_fabrikam().await;
    let text = data_text(&m);
    assert_eq!(m.mail_from, "John.Smith@myexchlab.com");
    assert!(
        header(&text, "From")
            .unwrap()
            .contains("John.Smith@myexchlab.com"),
        "{text}"
    );
    assert!(text.starts_with("DKIM-Signature: "), "{text}");
    assert_eq!(
        seed.verdicts(&m),
        [
            "d=myexchlab.com s=rsa2026 pass",
            "d=myexchlab.com s=ed2026 pass",
            // The rewrite broke the tenant's signature: what ours is for.
            "d=tenant1.myexchlab.com s=sel fail",
        ],
        "{text}"
    );
    // The verifier is not blind: a changed body byte fails both of ours.
    let tampered = String::from_utf8(m.data.clone())
        .unwrap()
        .replace("figures are attached", "figures are attacked");
    let records: Vec<(String, &str)> = seed
        .records
        .iter()
        .map(|(n, r)| (n.clone(), r.as_str()))
        .collect();
    assert_eq!(
        signatures(tampered.as_bytes(), &records)[..2],
        [
            "d=myexchlab.com s=rsa2026 fail",
            "d=myexchlab.com s=ed2026 fail"
        ]
    );
    assert_eq!(metric(&seed.relay, "mailflow_dkim_signed_total").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_connector_with_dkim_sign_off_sends_unsigned() {
    let seed = seed_002(|t| {
        let open = "send-connector \"To Internet\" {\n";
        assert!(t.contains(open));
        t.replace(open, &format!("{open}  dkim-sign off\n"))
    })
    .await;
    let m = seed.john_to_fabrikam().await;
    assert_eq!(
        seed.verdicts(&m),
        ["d=tenant1.myexchlab.com s=sel fail"],
        "{}",
        data_text(&m)
    );
    assert_eq!(metric(&seed.relay, "mailflow_dkim_signed_total").await, 0);
}

// ---------------------------------------------------------------- the byte-exact path

/// The edge rule set without its inbound rewrite and header rule (nothing changes a header),
/// with our keys for origin.example.
fn unchanged_with_keys(t: String) -> String {
    let t = t.replace("rewrite \"Tenant\" tenant.example -> example.com\n", "");
    let rule = t.find("rule \"Mark outside senders\"").unwrap();
    t[..rule].to_string() + &dkim_keys("origin.example")
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_no_rule_changes_keeps_its_signature_valid_next_to_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let (rsa, ed) = write_keys(tmp.path());
    let (relay, sink, _) = EDGE.start(tmp.path(), unchanged_with_keys, &[]).await;
    let original = std::fs::read(root().join("tests/fixtures/bytes/dkim.eml")).unwrap();
    let signed = signed_by("origin.example", &original);

    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let r = c
        .cmd("MAIL FROM:<sender@origin.example> BODY=8BITMIME")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("RCPT TO:<bob@tenant.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(mailflow::smtp::dot_stuff(&signed)).await;
    assert_eq!(c.reply().await.unwrap().status(), "250 2.6.0");

    let m = next_message(&sink, 0).await;
    let records = [
        (s("rsa2026._domainkey.origin.example"), rsa.as_str()),
        (s("ed2026._domainkey.origin.example"), ed.as_str()),
        (s("sel._domainkey.origin.example"), &test_key_record()),
    ];
    assert_eq!(
        signatures(&m.data, &records),
        [
            "d=origin.example s=rsa2026 pass",
            "d=origin.example s=ed2026 pass",
            "d=origin.example s=sel pass",
        ]
    );
    // Byte for byte: after our fields and the Received field comes the message as sent,
    // with only the AuthAs field the relay adds for the organization's next hop.
    let end = signed.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let mut expected = signed[..end + 2].to_vec();
    expected.extend_from_slice(b"X-MS-Exchange-Organization-AuthAs: Anonymous\r\n");
    expected.extend_from_slice(&signed[end + 2..]);
    assert!(m.data.ends_with(&expected), "{}", data_text(&m));
}

// ---------------------------------------------------------------- seed 000: SRS

const SECRET: &str = "a long random secret for the tests";

struct Seed000 {
    relay: Relay,
    sink: Sink,
    _tmp: tempfile::TempDir,
}

/// Seed 000 as shipped, with SRS at domain.org and a contact that forwards to the
/// Internet; every next hop is the sink (TLS with Microsoft's name, as Office 365 needs).
async fn seed_000() -> Seed000 {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    shipped_rules(dir, "cloud-groups.mailflow", &["certs", "messages"], |t| {
        t + &format!(
            "\ncontact \"Partner desk\" {{\n  address desk@domain.org\n  external desk@partner.example\n}}\n\
authentication {{\n  srs-domain domain.org\n  srs-secret \"{SECRET}\", \"the previous secret\"\n}}\n"
        )
    });
    let ca = TestCa::new();
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).unwrap();
    let sink = Sink::start(SinkOptions::default().tls(server_config(
        &ca.issue(&["mail.protection.outlook.com"]),
        None,
    )))
    .await;
    let mut args = vec![
        s("--ca-file"),
        dir.join("ca.pem").display().to_string(),
        s("--queue-interval"),
        s("1s"),
        s("--listen"),
        s("Internet=127.0.0.1:0"),
        s("--listen"),
        s("Internal applications=127.0.0.1:0"),
        s("--admin"),
        s("127.0.0.1:0"),
    ];
    for c in ["To Office 365", "To Exchange", "To Internet"] {
        args.extend([s("--smart-host"), format!("{c}={}", sink.addr)]);
    }
    let relay = Relay::start(
        &dir.join("cloud-groups.mailflow"),
        &dir.join("spool"),
        &args,
    );
    Seed000 {
        relay,
        sink,
        _tmp: tmp,
    }
}

impl Seed000 {
    /// One transaction on the Internet connector: the RCPT replies, and DATA's when any
    /// recipient was taken.
    async fn send(&self, from: &str, to: &[&str]) -> (Vec<String>, Option<String>) {
        let (mut c, _) = Raw::connect(self.relay.listener("Internet")).await;
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
        c.send(format!(
            "From: <{from}>\r\nTo: {}\r\nSubject: hello\r\n\r\nhello\r\n.\r\n",
            to.join(", ")
        ))
        .await;
        let data = c.reply().await.unwrap();
        (replies, Some(data.status()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_000_forwarded_mail_gets_an_srs_sender_and_its_bounce_comes_back() {
    let seed = seed_000().await;
    let sink = &seed.sink;

    // An outside sender to the Officers contact (the cloud tenant) and the partner desk.
    let (rcpts, data) = seed
        .send(
            "dana.reyes@contoso.com",
            &["officers@domain.org", "desk@domain.org"],
        )
        .await;
    assert!(rcpts.iter().all(|r| r.starts_with("250")), "{rcpts:?}");
    assert_eq!(data.as_deref(), Some("250 2.6.0"));
    assert!(wait_until(20, || sink.messages().len() >= 2).await);
    let mut forwarded = sink.messages();
    forwarded.sort_by(|a, b| a.rcpts.cmp(&b.rcpts));
    let got: Vec<&[String]> = forwarded.iter().map(|m| m.rcpts.as_slice()).collect();
    assert_eq!(
        got,
        [
            [s("desk@partner.example")],
            [s("officers@domain.mail.onmicrosoft.com")]
        ]
    );
    let srs = forwarded[0].mail_from.clone();
    for m in &forwarded {
        assert!(
            m.mail_from.starts_with("SRS0=")
                && m.mail_from.ends_with("=contoso.com=dana.reyes@domain.org"),
            "{}",
            m.mail_from
        );
    }
    // The tracking log keeps the original sender and names the SRS one used.
    let sends = seed.relay.track(&["--event", "SEND"]);
    assert_eq!(sends.len(), 2, "{sends:?}");
    for e in &sends {
        assert_eq!(e["sender-address"], "dana.reyes@contoso.com", "{e}");
        assert!(
            e["srs-sender-address"]
                .as_str()
                .is_some_and(|a| a.starts_with("SRS0=") && a.ends_with("@domain.org")),
            "{e}"
        );
    }

    // The partner's server bounces: the bounce goes back to dana, though the Internet
    // connector relays for nobody.
    let (rcpts, data) = seed.send("", &[&srs]).await;
    assert!(rcpts[0].starts_with("250"), "{rcpts:?}");
    assert_eq!(data.as_deref(), Some("250 2.6.0"));
    let bounce = next_message(sink, 2).await;
    assert_eq!(bounce.rcpts, [s("dana.reyes@contoso.com")]);
    assert_eq!(bounce.mail_from, "");

    // Forged (another local part under the same hash) and expired: refused at RCPT.
    let forged = srs.replace("=dana.reyes@", "=mallory@");
    let srs_engine = Srs::new(&[SECRET], 21).unwrap();
    let today = mailflow::clock::days_since_epoch();
    let expired = srs_engine
        .forward("dana.reyes@contoso.com", "domain.org", today - 30)
        .unwrap();
    let fresh = srs_engine
        .forward("dana.reyes@contoso.com", "domain.org", today)
        .unwrap();
    assert_eq!(fresh, srs, "the test makes the relay's addresses");
    let (rcpts, data) = seed.send("", &[&forged, &expired]).await;
    assert!(rcpts[0].starts_with("550 5.7.1 "), "{rcpts:?}");
    assert!(rcpts[0].contains("hash does not match"), "{rcpts:?}");
    assert!(rcpts[1].starts_with("550 5.7.1 "), "{rcpts:?}");
    assert!(rcpts[1].contains("expired"), "{rcpts:?}");
    assert_eq!(data, None);

    // Our own sender, through the same contacts: never rewritten.
    let (rcpts, _) = seed
        .send(
            "scanner@domain.org",
            &["officers@domain.org", "desk@domain.org"],
        )
        .await;
    assert!(rcpts.iter().all(|r| r.starts_with("250")), "{rcpts:?}");
    assert!(wait_until(20, || sink.messages().len() >= 5).await);
    let ours: Vec<String> = sink.messages()[3..]
        .iter()
        .map(|m| m.mail_from.clone())
        .collect();
    assert_eq!(ours, ["scanner@domain.org", "scanner@domain.org"]);

    assert_eq!(metric(&seed.relay, "mailflow_srs_rewrites_total").await, 2);
    assert_eq!(metric(&seed.relay, "mailflow_srs_reversals_total").await, 1);
    assert_eq!(metric(&seed.relay, "mailflow_srs_refused_total").await, 2);
    // Nothing else left.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(sink.messages().len(), 5);
}

/// Delivery status notifications the relay writes for forwarded mail go to the original
/// sender, not to the SRS address the attempt used.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_forward_is_reported_to_the_original_sender() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (relay, sink) = seed_000_forwarding(
        dir,
        "gone@partner.example",
        SECRET,
        SinkOptions::default().rcpt("gone@", "550 5.1.1 no such user"),
    )
    .await;
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<dana.reyes@contoso.com>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<desk@domain.org>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send("Subject: hi\r\n\r\nhello\r\n.\r\n").await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    // The refusal was to the SRS sender; the report goes to dana (through the sink, the
    // Internet's next hop).
    let dsn = next_message(&sink, 0).await;
    assert_eq!(
        dsn.rcpts,
        [s("dana.reyes@contoso.com")],
        "{}",
        data_text(&dsn)
    );
    assert_eq!(dsn.mail_from, "");
    let seen = sink.rcpts_seen();
    let refused = seen
        .iter()
        .find(|r| r.address == "gone@partner.example")
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(refused.code, 550);
    assert!(
        refused.mail_from.starts_with("SRS0=")
            && refused
                .mail_from
                .ends_with("=contoso.com=dana.reyes@domain.org"),
        "{seen:?}"
    );
}
