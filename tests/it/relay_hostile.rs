//! The relay against hostile clients, over real TCP on 127.0.0.1: SMTP smuggling end-of-data
//! variants on DATA and BDAT, open-relay address forms, STARTTLS command injection, commands
//! out of order or ahead of their replies, 10,000 recipients, megabyte lines, slow drips,
//! connection floods, forged organization headers, loops and a full disk. Each vector is a
//! row of a table; the reply each one gets is asserted. The vectors are those of
//! `shared/reference/security-and-reliability.md`; SECURITY.md says what they prove.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::raw::Raw;
use support::relay::*;
use support::sink::{Received, Sink};
use support::tls::TestCa;

/// The relay on `tests/fixtures/relay/edge.mailflow` with `edit` applied to the text.
async fn edge(tmp: &Path, edit: impl Fn(String) -> String) -> (Relay, Sink, TestCa) {
    EDGE.start(tmp, edit, &[]).await
}

/// EHLO, MAIL and RCPT on a fresh connection to the internet connector.
async fn transaction(relay: &Relay, from: &str, to: &str) -> Raw {
    let (mut c, greeting) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    assert_eq!(r.code, 250, "RCPT TO:<{to}>: {r:?}");
    c
}

fn subject(m: &Received) -> String {
    header(&data_text(m), "Subject")
        .unwrap_or_default()
        .to_string()
}

/// No CR without LF after it and no LF without CR before it.
fn only_crlf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        _ => true,
    })
}

/// Every end-of-data look-alike: inbound ones, hannob/smtpsmug's, the SEC Consult checker's.
const SMUGGLING: &[(&str, &[u8])] = &[
    ("lf-dot-lf", b"\n.\n"),
    ("lf-dot-cr", b"\n.\r"),
    ("cr-dot-lf", b"\r.\n"),
    ("cr-dot-cr", b"\r.\r"),
    ("lf-dot-crlf", b"\n.\r\n"),
    ("cr-dot-crlf", b"\r.\r\n"),
    ("crlf-nul-dot-crlf", b"\r\n\x00.\r\n"),
    ("crlf-dot-crcrlf", b"\r\n.\r\r\n"),
    ("crcrlf-dot-crcrlf", b"\r\r\n.\r\r\n"),
    ("crlf-dot-nul-crlf", b"\r\n.\x00\r\n"),
    ("lflf-dot-crlf", b"\n\n.\r\n"),
    ("crlf-dot-lf", b"\r\n.\n"),
    ("lf-dot-crlf-crlf", b"\n.\r\n\r\n"),
    ("crlf-dot-cr-crlf", b"\r\n.\r\r\n"),
];

/// The message a smuggler sends: a first part, the fake end of data, and a second message.
fn smuggling_payload(name: &str, end: &[u8]) -> Vec<u8> {
    let mut p = format!("Subject: vector {name}\r\n\r\nfirst part").into_bytes();
    p.extend_from_slice(end);
    p.extend_from_slice(
        format!(
            "MAIL FROM:<smuggler@outside.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n\
             Subject: smuggled {name}\r\n\r\nsecond part\r\n"
        )
        .as_bytes(),
    );
    p
}

/// DATA: every fake end stays body text of the one message; the final CRLF.CRLF ends it, the
/// client gets one 250, and no second message starts. What goes out has only CRLF endings.
#[tokio::test(flavor = "multi_thread")]
async fn smuggling_vectors_on_data_stay_body_text() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    for (name, end) in SMUGGLING {
        let mut c = transaction(&relay, "sender@outside.example", "alice@example.com").await;
        assert_eq!(c.cmd("DATA").await.code, 354, "{name}");
        let mut payload = smuggling_payload(name, end);
        payload.extend_from_slice(b".\r\n");
        c.send(&payload).await;
        let r = c.reply().await.unwrap();
        assert_eq!(r.status(), "250 2.6.0", "{name}: {r:?}");
        // The smuggled commands were data: nothing else was answered.
        assert_eq!(c.cmd("QUIT").await.code, 221, "{name}");
    }
    assert!(wait_until(20, || sink.messages().len() >= SMUGGLING.len()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.messages();
    assert_eq!(got.len(), SMUGGLING.len(), "a second message was started");
    for (name, _) in SMUGGLING {
        let m = got
            .iter()
            .find(|m| subject(m) == format!("vector {name}"))
            .unwrap_or_else(|| panic!("{name} not delivered"));
        assert_eq!(m.rcpts, ["alice@tenant.example"], "{name}");
        let text = data_text(m);
        assert!(text.contains("second part"), "{name}: body lost: {text:?}");
        assert!(only_crlf(&m.raw), "{name}: bare CR or LF sent: {:?}", m.raw);
    }
    assert!(got.iter().all(|m| !subject(m).starts_with("smuggled")));
}

/// BDAT: the chunk is counted, never scanned for an end, so every vector is kept verbatim
/// (and sent on with only CRLF line ends).
#[tokio::test(flavor = "multi_thread")]
async fn smuggling_vectors_on_bdat_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    for (name, end) in SMUGGLING {
        let mut c = transaction(&relay, "sender@outside.example", "alice@example.com").await;
        let mut payload = smuggling_payload(name, end);
        payload.extend_from_slice(b".\r\n");
        let mut chunk = format!("BDAT {} LAST\r\n", payload.len()).into_bytes();
        chunk.extend_from_slice(&payload);
        c.send(&chunk).await;
        let r = c.reply().await.unwrap();
        assert_eq!(r.status(), "250 2.6.0", "{name}: {r:?}");
        assert_eq!(c.cmd("QUIT").await.code, 221, "{name}");
    }
    assert!(wait_until(20, || sink.messages().len() >= SMUGGLING.len()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = sink.messages();
    assert_eq!(got.len(), SMUGGLING.len());
    for (name, _) in SMUGGLING {
        let m = got
            .iter()
            .find(|m| subject(m) == format!("vector {name}"))
            .unwrap_or_else(|| panic!("{name} not delivered"));
        let text = data_text(m);
        assert!(
            text.contains("MAIL FROM:<smuggler@outside.example>"),
            "{name}"
        );
        assert!(text.contains("second part"), "{name}");
        assert!(only_crlf(&m.raw), "{name}: bare CR or LF sent: {:?}", m.raw);
    }
}

/// nmap's smtp-open-relay forms and Postfix's routed-address forms, to the relay's own name,
/// its address literal, the shared domain (rewritten to the tenant) and the tenant itself:
/// every one is refused at RCPT on the anonymous internet connector.
#[tokio::test(flavor = "multi_thread")]
async fn open_relay_forms_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    let table: &[(&str, &str)] = &[
        // Plain relaying.
        ("to@victim.example", "550 5.7.54"),
        ("to@[127.0.0.1]", "550 5.7.54"),
        ("to@[192.0.2.1]", "550 5.7.54"),
        // Percent hack.
        ("to%victim.example@[127.0.0.1]", "550 5.7.1"),
        ("to%victim.example@mx.example.com", "550 5.7.1"),
        ("to%victim.example@example.com", "550 5.7.1"),
        ("to%victim.example@tenant.example", "550 5.7.1"),
        ("user%dom.ain1@example.com", "550 5.7.1"),
        // Quoted local parts.
        ("\"to@victim.example\"", "501 5.1.3"),
        ("\"to%victim.example\"", "501 5.1.3"),
        ("\"to@victim.example\"@[127.0.0.1]", "550 5.7.1"),
        ("\"to@victim.example\"@example.com", "550 5.7.1"),
        // Two at-signs.
        ("to@victim.example@[127.0.0.1]", "501 5.1.3"),
        ("to@victim.example@mx.example.com", "501 5.1.3"),
        ("user@dom.ain1@example.com", "501 5.1.3"),
        ("user@[1.2.3.4]@example.com", "501 5.1.3"),
        // Source routes: the route is ignored (RFC 5321 §3.6.1), the mailbox judged.
        ("@[127.0.0.1]:to@victim.example", "550 5.7.54"),
        ("@mx.example.com:to@victim.example", "550 5.7.54"),
        (
            "@example.com,@tenant.example:to@victim.example",
            "550 5.7.54",
        ),
        // UUCP bang paths.
        ("victim.example!to", "501 5.1.3"),
        ("victim.example!to@[127.0.0.1]", "550 5.7.1"),
        ("victim.example!to@mx.example.com", "550 5.7.1"),
        ("dom.ain1!user@example.com", "550 5.7.1"),
        ("dom.ain1!user@tenant.example", "550 5.7.1"),
        // Nothing much at all.
        ("@", "501 5.1.3"),
        ("@@", "501 5.1.3"),
        ("", "501 5.1.3"),
    ];
    let mut wrong = Vec::new();
    for (form, want) in table {
        let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
        assert_eq!(c.cmd("EHLO client.test").await.code, 250);
        assert_eq!(c.cmd("MAIL FROM:<sender@outside.example>").await.code, 250);
        let r = c.cmd(&format!("RCPT TO:<{form}>")).await;
        if r.status() != *want {
            wrong.push(format!("RCPT TO:<{form}>: want {want}, got {r:?}"));
        }
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The same forms through the whole path: nothing reaches the next hop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.messages().is_empty());
}

/// `STARTTLS\r\nNOOP\r\n` in one write: the NOOP was sent in the clear and is thrown away,
/// so the first reply over TLS answers the client's EHLO (CVE-2011-0411).
#[tokio::test(flavor = "multi_thread")]
async fn starttls_injection_is_not_executed() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, _sink, ca) = edge(tmp.path(), |t| t).await;
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.text.contains("STARTTLS"), "{ehlo:?}");
    c.send("STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.unwrap().status(), "220 2.0.0");
    let (mut tls, leftover) = c.starttls(ca.roots(), "mx.example.com").await;
    assert!(leftover.is_empty());
    let r = tls.cmd("EHLO client.test").await;
    assert_eq!(r.code, 250);
    assert!(
        r.text.starts_with("mx.example.com Hello client.test"),
        "the injected NOOP was answered: {r:?}"
    );
    assert!(!r.text.contains("STARTTLS"));
    assert_eq!(tls.cmd("NOOP").await.status(), "250 2.0.0");
    assert_eq!(tls.cmd("QUIT").await.code, 221);
}

/// Commands out of order, each on a connection of its own, with the reply each gets.
#[tokio::test(flavor = "multi_thread")]
async fn commands_out_of_order_get_the_right_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    // (what to send first, waiting for each reply; the last command's expected reply)
    let table: &[(&[&str], &str)] = &[
        (&["MAIL FROM:<a@outside.example>"], "503 5.5.1"),
        (&["EHLO c.test", "RCPT TO:<alice@example.com>"], "503 5.5.1"),
        (&["EHLO c.test", "DATA"], "503 5.5.1"),
        (
            &["EHLO c.test", "MAIL FROM:<a@outside.example>", "DATA"],
            "554 5.5.1",
        ),
        (
            &[
                "EHLO c.test",
                "MAIL FROM:<a@outside.example>",
                "RCPT TO:<nobody@victim.example>",
                "DATA",
            ],
            "554 5.5.1",
        ),
        (
            &[
                "EHLO c.test",
                "MAIL FROM:<a@outside.example>",
                "MAIL FROM:<b@outside.example>",
            ],
            "503 5.5.1",
        ),
        (&["EHLO c.test", "BDAT 0 LAST"], "503 5.5.1"),
        (
            &["HELO c.test", "MAIL FROM:<a@outside.example> SIZE=10"],
            "555 5.5.4",
        ),
        (
            &[
                "EHLO c.test",
                "MAIL FROM:<a@outside.example> XOORG=tenant.example",
            ],
            "555 5.5.4",
        ),
        (
            &[
                "EHLO c.test",
                "MAIL FROM:<a@outside.example> SIZE=999999999999",
            ],
            "552 5.3.4",
        ),
        (&["EHLO c.test", "RCPT TO:alice@example.com"], "501 5.1.3"),
        (&["EHLO c.test", "MAIL FROM:a@outside.example"], "501 5.1.7"),
        (&["EHLO c.test", "XYZZY"], "500 5.5.1"),
        (&["EHLO"], "501 5.5.4"),
        (&["EHLO c.test", "EXPN staff"], "502 5.5.1"),
        (&["EHLO c.test", "AUTH PLAIN AGFhAGI="], "502 5.5.1"),
        (&["EHLO c.test", "STARTTLS x"], "501 5.5.4"),
    ];
    let mut wrong = Vec::new();
    for (lines, want) in table {
        let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
        let mut last = None;
        for l in *lines {
            last = Some(c.cmd(l).await);
        }
        let last = last.unwrap();
        if last.status() != *want {
            wrong.push(format!("{lines:?}: want {want}, got {last:?}"));
        }
        let _ = c.try_send("QUIT\r\n").await;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Twenty errors end the session.
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    for i in 1..20 {
        assert_eq!(c.cmd("XYZZY").await.code, 500, "error {i}");
    }
    assert_eq!(c.cmd("XYZZY").await.status(), "421 4.7.0");
    assert!(c.closed().await);
    assert!(sink.messages().is_empty());
}

/// Writing ahead of the replies where RFC 2920 forbids it (before EHLO's reply, after HELO,
/// message content before DATA's 354) is answered 554 5.5.0 and the connection closed;
/// pipelining after EHLO is served.
#[tokio::test(flavor = "multi_thread")]
async fn unauthorised_pipelining_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    let table: &[(&[&str], &str, &str)] = &[
        (
            &[],
            "EHLO c.test\r\nMAIL FROM:<a@outside.example>\r\n",
            "ahead of EHLO",
        ),
        (
            &["HELO c.test"],
            "MAIL FROM:<a@outside.example>\r\nRCPT TO:<alice@example.com>\r\n",
            "after HELO",
        ),
        (
            &[
                "EHLO c.test",
                "MAIL FROM:<a@outside.example>",
                "RCPT TO:<alice@example.com>",
            ],
            "DATA\r\nSubject: early\r\n\r\nbody\r\n.\r\n",
            "content before 354",
        ),
        (
            &["EHLO c.test"],
            "EHLO again.test\r\nNOOP\r\n",
            "ahead of EHLO again",
        ),
    ];
    for (before, burst, what) in table {
        let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
        for l in *before {
            assert!(c.cmd(l).await.code < 400, "{what}: {l}");
        }
        c.send(burst).await;
        let r = c.reply().await.unwrap();
        assert_eq!(r.status(), "554 5.5.0", "{what}: {r:?}");
        assert!(c.closed().await, "{what}");
    }

    // After EHLO, MAIL, RCPT and DATA may travel together; the content waits for 354.
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    c.send(
        "MAIL FROM:<a@outside.example>\r\nRCPT TO:<alice@example.com>\r\n\
         RCPT TO:<bob@example.com>\r\nDATA\r\n",
    )
    .await;
    for want in [250, 250, 250, 354] {
        assert_eq!(c.reply().await.unwrap().code, want);
    }
    c.send("Subject: pipelined\r\n\r\nbody\r\n.\r\n").await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    assert_eq!(subject(&sink.messages()[0]), "pipelined");
}

/// 10,000 pipelined RCPTs: the connector's 20 are taken, the next 1,000 are told 452 4.5.3
/// (so a real MTA sends the rest in another transaction), and past that the errors count
/// until the session is closed. A megabyte command line is one 500 5.5.2, and the session
/// goes on. The relay's memory stays bounded throughout.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_recipients_and_megabyte_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, _sink, _) = edge(tmp.path(), |t| t).await;
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@outside.example>").await.code, 250);
    let mut burst = String::new();
    for i in 0..10_000 {
        burst.push_str(&format!("RCPT TO:<user{i}@example.com>\r\n"));
    }
    let Raw { stream, .. } = c;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = wr.write_all(burst.as_bytes()).await;
        wr
    });
    let mut replies = Vec::new();
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => text.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the relay neither answered nor closed"),
        }
    }
    let _ = writer.await;
    for line in String::from_utf8_lossy(&text).split("\r\n") {
        if line.len() >= 9 {
            replies.push(line[..9].to_string());
        }
    }
    let count = |s: &str| replies.iter().filter(|r| r.as_str() == s).count();
    assert_eq!(count("250 2.1.5"), 20);
    assert_eq!(count("452 4.5.3"), 1000 + 19);
    assert_eq!(replies.last().map(String::as_str), Some("421 4.7.0"));
    assert_eq!(replies.len(), 20 + 1019 + 1);

    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    let mut line = b"NOOP ".to_vec();
    line.resize(1024 * 1024, b'A');
    line.extend_from_slice(b"\r\n");
    c.send(&line).await;
    assert_eq!(c.reply().await.unwrap().status(), "500 5.5.2");
    assert_eq!(c.cmd("NOOP").await.status(), "250 2.0.0");
    // Ten megabytes with no line end at all: one error when the line finally ends.
    let junk = vec![b'x'; 10 * 1024 * 1024];
    c.send(&junk).await;
    c.send(b"\r\n").await;
    assert_eq!(c.reply().await.unwrap().status(), "500 5.5.2");
    assert_eq!(c.cmd("QUIT").await.code, 221);
    let rss = status_kib(relay.child.id(), "VmRSS:");
    assert!(rss < 200 * 1024, "relay RSS {rss} KiB after the floods");
}

/// A client that drips a byte at a time is cut off by the connector's connection timeout,
/// one that says nothing by the inactivity timeout; a drip inside DATA loses the message,
/// never half-delivers it.
#[tokio::test(flavor = "multi_thread")]
async fn slow_drip_clients_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    let slow = relay.listener("Slow");

    let (mut c, _) = Raw::connect_from(slow, "127.0.0.9").await;
    let started = Instant::now();
    let r = c.reply().await.unwrap();
    assert_eq!(r.status(), "421 4.4.2");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(c.closed().await);

    let (mut c, _) = Raw::connect_from(slow, "127.0.0.9").await;
    let drip = async {
        for b in b"NOOP and a very long line that never seems to end ...".repeat(10) {
            if !c.try_send([b]).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), drip).await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.status(), "421 4.4.2", "{r:?}");

    let (mut c, _) = Raw::connect_from(slow, "127.0.0.9").await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@outside.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@example.com>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    let drip = async {
        for b in b"Subject: drip\r\n\r\n"
            .iter()
            .chain(b"x".repeat(100).iter())
        {
            if !c.try_send([*b]).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(6), drip).await;
    assert!(c.closed().await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.messages().is_empty());
}

/// The connector's per-source limit: the ninth concurrent connection from one address gets
/// 421 4.7.0 and is closed, and a slot is free again once a session quits.
#[tokio::test(flavor = "multi_thread")]
async fn connection_floods_are_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, _sink, _) = edge(tmp.path(), |t| t).await;
    let addr = relay.listener("Internet");
    let mut open = Vec::new();
    for _ in 0..8 {
        let (c, g) = Raw::connect(addr).await;
        assert_eq!(g.code, 220);
        open.push(c);
    }
    for _ in 0..50 {
        let (mut c, g) = Raw::connect(addr).await;
        assert_eq!(g.status(), "421 4.7.0", "{g:?}");
        assert!(c.closed().await);
    }
    // Another source address is not affected.
    let (_other, g) = Raw::connect_from(addr, "127.0.0.3").await;
    assert_eq!(g.code, 220);
    let mut first = open.remove(0);
    assert_eq!(first.cmd("QUIT").await.code, 221);
    let (_again, g) = Raw::connect(addr).await;
    assert_eq!(g.code, 220);
}

/// Organization headers from an anonymous peer are not believed: X-MS-Exchange-Organization-*
/// and X-OriginatorOrg are stripped, AuthAs is stamped Anonymous, and a sender claiming the
/// organization's own domain is still outside for the rules.
#[tokio::test(flavor = "multi_thread")]
async fn forged_organization_headers_are_stripped() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    let mut c = transaction(&relay, "ceo@example.com", "alice@example.com").await;
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(
        "X-MS-Exchange-Organization-AuthAs: Internal\r\n\
         X-MS-Exchange-Organization-AuthSource: edge.example.com\r\n\
         x-ms-exchange-organization-scl: -1\r\n\
         X-OriginatorOrg: example.com\r\n\
         From: CEO <ceo@example.com>\r\n\
         Subject: wire the money\r\n\r\nnow\r\n.\r\n",
    )
    .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    let text = data_text(&sink.messages()[0]);
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert_eq!(
        header(&text, "X-MS-Exchange-Organization-AuthAs"),
        Some("Anonymous")
    );
    assert_eq!(head.matches("x-ms-exchange-organization-authas").count(), 1);
    assert!(!head.contains("authsource"), "{text}");
    assert!(!head.contains("organization-scl"), "{text}");
    assert!(!head.contains("x-originatororg"), "{text}");
    assert_eq!(header(&text, "X-Edge-Sender"), Some("outside"));
}

/// A message that has already passed 30 hops is refused as a loop.
#[tokio::test(flavor = "multi_thread")]
async fn hop_count_stops_loops() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    for (hops, want) in [(29, "250 2.6.0"), (30, "554 5.4.6"), (200, "554 5.4.6")] {
        let mut c = transaction(&relay, "a@outside.example", "alice@example.com").await;
        assert_eq!(c.cmd("DATA").await.code, 354);
        let mut m = String::new();
        for i in 0..hops {
            m.push_str(&format!(
                "Received: from hop{i}.test by hop{}.test\r\n",
                i + 1
            ));
        }
        m.push_str(&format!("Subject: {hops} hops\r\n\r\nbody\r\n.\r\n"));
        c.send(m).await;
        assert_eq!(c.reply().await.unwrap().status(), want, "{hops} hops");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.messages().len(), 1);
}

/// A spool without room for the largest message the connector accepts (Postfix's rule:
/// 1.5 times the size limit free) answers MAIL with 452 4.3.1, and never a 250 for a
/// message it could not write. The disk is made "full" by a size limit larger than it.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_refuses_at_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| {
        t.replace("max-hop-count 30", "max-message-size 1000000000GB")
    })
    .await;
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    for _ in 0..3 {
        let r = c.cmd("MAIL FROM:<a@outside.example>").await;
        assert_eq!(r.status(), "452 4.3.1", "{r:?}");
    }
    assert_eq!(
        c.cmd("RCPT TO:<alice@example.com>").await.status(),
        "503 5.5.1"
    );
    assert_eq!(c.cmd("QUIT").await.code, 221);
    // The spool is shared: a connector with a small limit finds it just as full.
    let (mut c, _) = Raw::connect_from(relay.listener("Slow"), "127.0.0.9").await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    let r = c.cmd("MAIL FROM:<a@outside.example>").await;
    assert_eq!(r.status(), "452 4.3.1", "the spool is shared: {r:?}");
    assert!(sink.messages().is_empty());
}

/// Header forms through the relay, rewritten inbound (example.com -> tenant.example): only
/// the addr-specs change, folding, groups, comments, quoted and encoded text are kept, and a
/// bare CR in a display name never becomes a line of its own.
#[tokio::test(flavor = "multi_thread")]
async fn header_forms_round_trip_through_rewriting() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = edge(tmp.path(), |t| t).await;
    let dir = root().join("tests/fixtures/eval/header-forms");
    let table: &[(&str, &str)] = &[
        (
            "folded.eml",
            "To: \"Smith, John\"\r\n <john@tenant.example>,\r\n\tmary@tenant.example\r\n",
        ),
        (
            "group.eml",
            "To: Team: john@tenant.example, \"Mary Smith\" <mary@tenant.example>;\r\n\
             Cc: undisclosed-recipients:;\r\n",
        ),
        (
            "comments.eml",
            "To: john@tenant.example (John (the boss) Smith), <mary@tenant.example> (Mary)\r\n",
        ),
        (
            "quoted.eml",
            "To: \"john@example.com\" <mary@tenant.example>, \"john smith\"@tenant.example\r\n",
        ),
        (
            "encoded.eml",
            "To: =?UTF-8?B?SsO2cmcgU23DtnRo?= <john@tenant.example>\r\n\
             Subject: =?UTF-8?Q?caf=C3=A9?=\r\n",
        ),
    ];
    for (file, _) in table {
        let mut c = transaction(&relay, "sender@outside.example", "john@example.com").await;
        assert_eq!(c.cmd("DATA").await.code, 354);
        let mut m = std::fs::read(dir.join(file)).unwrap();
        m.extend_from_slice(b".\r\n");
        c.send(&m).await;
        assert_eq!(c.reply().await.unwrap().code, 250, "{file}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    assert!(wait_until(20, || sink.messages().len() == table.len()).await);
    for (file, want) in table {
        let m = sink
            .messages()
            .into_iter()
            .find(|m| {
                let stem = file.trim_end_matches(".eml");
                String::from_utf8_lossy(&m.data).contains(&format!("Subject: {stem}"))
                    || (stem == "encoded" && m.data.windows(5).any(|w| w == b"caf=C"))
            })
            .unwrap_or_else(|| panic!("{file} not delivered"));
        let text = data_text(&m);
        assert!(text.contains(want), "{file}: {text:?}");
        assert!(only_crlf(&m.raw), "{file}");
    }
}

/// XOORG is offered, and its value believed, only over TLS to a client whose certificate
/// verifies against the trust anchors and names a host the connector lists in `accept-oorg`.
#[tokio::test(flavor = "multi_thread")]
async fn xoorg_is_trusted_only_from_a_verified_listed_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, _sink, ca) = edge(tmp.path(), |t| t).await;
    let stranger = TestCa::new();
    let table: &[(&str, Option<support::tls::Pem>, Option<&str>)] = &[
        ("no certificate", None, Some("555 5.5.4")),
        (
            "listed name from the trusted CA",
            Some(ca.issue_client("gw.tenant.example")),
            Some("250 2.1.0"),
        ),
        (
            "another name from the trusted CA",
            Some(ca.issue_client("gw.other.example")),
            Some("555 5.5.4"),
        ),
        // Not verified: the handshake goes on as without a certificate (no XOORG).
        (
            "listed name from an unknown CA",
            Some(stranger.issue_client("gw.tenant.example")),
            Some("555 5.5.4"),
        ),
    ];
    for (what, cert, want) in table {
        let (mut c, _) = Raw::connect_from(relay.listener("Tenant"), "127.0.0.4").await;
        assert_eq!(c.cmd("EHLO gw.test").await.code, 250);
        assert_eq!(
            c.cmd("MAIL FROM:<a@tenant.example> XOORG=tenant.example")
                .await
                .status(),
            "530 5.7.0",
            "{what}: before TLS"
        );
        assert_eq!(c.cmd("STARTTLS").await.status(), "220 2.0.0");
        let tls = c
            .starttls_as(ca.roots(), "mx.example.com", cert.as_ref())
            .await;
        let Some(want) = want else {
            // The handshake fails or the server hangs up: never a trusted session.
            if let Ok((mut tls, _)) = tls {
                let _ = tls.try_send("EHLO gw.test\r\n").await;
                assert!(tls.reply().await.is_none(), "{what}: a session was served");
            }
            continue;
        };
        let (mut tls, _) = tls.unwrap_or_else(|e| panic!("{what}: {e}"));
        let ehlo = tls.cmd("EHLO gw.test").await;
        assert_eq!(ehlo.code, 250);
        assert_eq!(
            ehlo.text.lines().any(|l| l == "XOORG"),
            *want == "250 2.1.0",
            "{what}: {ehlo:?}"
        );
        let r = tls
            .cmd("MAIL FROM:<a@tenant.example> XOORG=tenant.example")
            .await;
        assert_eq!(r.status(), *want, "{what}: {r:?}");
        let _ = tls.try_send("QUIT\r\n").await;
    }
}
