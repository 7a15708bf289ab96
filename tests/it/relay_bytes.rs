//! The bytes of a message are kept (issue 14 §3), over real TCP against the relay binary with
//! a recording sink as next hop: header fields with raw 8-bit bytes (Latin-1, Shift_JIS) arrive
//! byte for byte, except the fields the relay adds or rewrites, and within a rewritten field
//! only the addr-spec changes; a message DKIM-signed by dkimpy still verifies after the relay;
//! and a line longer than RFC 5321's 998 octets is refused at the end of the data, on DATA and
//! on BDAT, while a line of 998 octets is delivered intact. SECURITY.md cites these tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::path::Path;
use support::raw::{Raw, Reply};
use support::relay::*;
use support::sink::{Received, Sink, SinkOptions};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/bytes").join(name)).unwrap()
}

/// The edge rule set without its inbound rewrite and its header rule: nothing in it changes a
/// message's header; the relay only adds its Received and AuthAs fields. Mail goes to
/// tenant.example, an internal-relay domain.
fn unchanged(t: String) -> String {
    let t = t.replace("rewrite \"Tenant\" tenant.example -> example.com\n", "");
    let rule = t.find("rule \"Mark outside senders\"").unwrap();
    t[..rule].to_string()
}

/// EHLO, MAIL and RCPT, then the message by DATA (dot-stuffed) or by one BDAT LAST chunk.
async fn send(relay: &Relay, to: &str, message: &[u8], bdat: bool) -> Reply {
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    let r = c
        .cmd("MAIL FROM:<sender@origin.example> BODY=8BITMIME")
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd(&format!("RCPT TO:<{to}>")).await;
    assert_eq!(r.code, 250, "{r:?}");
    if bdat {
        let mut chunk = format!("BDAT {} LAST\r\n", message.len()).into_bytes();
        chunk.extend_from_slice(message);
        c.send(chunk).await;
    } else {
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(mailflow::smtp::dot_stuff(message)).await;
    }
    c.reply().await.unwrap()
}

/// The next message the sink records, as delivered, without the relay's Received field
/// (asserted to be the first field, ours).
async fn delivered(sink: &Sink, n: usize) -> Vec<u8> {
    assert!(wait_until(20, || sink.messages().len() > n).await);
    let m: Received = sink.messages().remove(n);
    let data = m.data;
    assert!(
        data.starts_with(
            b"Received: from client.test (127.0.0.1 [127.0.0.1])\r\n\tby mx.example.com (mailflow)"
        ),
        "{}",
        String::from_utf8_lossy(&data)
    );
    // The field ends at the first line break not followed by a blank.
    let end = (0..data.len())
        .find(|&i| data[i..].starts_with(b"\r\n") && !matches!(data.get(i + 2), Some(b' ' | b'\t')))
        .unwrap();
    data[end + 2..].to_vec()
}

/// The header lines (without CRLF) of a message, up to the blank line.
fn head_lines(m: &[u8]) -> Vec<&[u8]> {
    let end = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    m[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

/// Lines of `a` that are not in `b`, in order.
fn missing<'a>(a: &[&'a [u8]], b: &[&[u8]]) -> Vec<&'a [u8]> {
    a.iter().filter(|l| !b.contains(l)).copied().collect()
}

/// `message` with `extra` fields added at the end of its header.
fn with_fields(message: &[u8], extra: &[&[u8]]) -> Vec<u8> {
    let end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
    let mut out = message[..end].to_vec();
    for f in extra {
        out.extend_from_slice(f);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&message[end..]);
    out
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = haystack
        .windows(from.len())
        .position(|w| w == from)
        .unwrap();
    [&haystack[..at], to, &haystack[at + from.len()..]].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_bit_headers_arrive_byte_for_byte_when_no_rule_changes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = EDGE.start(tmp.path(), unchanged, &[]).await;
    let input = fixture("latin1-sjis.eml");
    for (n, bdat) in [(0, false), (1, true)] {
        let r = send(&relay, "alice@tenant.example", &input, bdat).await;
        assert_eq!(r.status(), "250 2.6.0", "{r:?}");
        let out = delivered(&sink, n).await;
        // Exactly one line differs: the AuthAs the relay stamps (the Received is checked and
        // cut by `delivered`). Every other byte, `caf\xe9` and Shift_JIS included, is as sent.
        assert_eq!(
            missing(&head_lines(&out), &head_lines(&input)),
            [b"X-MS-Exchange-Organization-AuthAs: Anonymous".as_slice()]
        );
        assert!(missing(&head_lines(&input), &head_lines(&out)).is_empty());
        assert_eq!(
            out,
            with_fields(&input, &[b"X-MS-Exchange-Organization-AuthAs: Anonymous"]),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_to_changes_only_its_addr_specs() {
    let tmp = tempfile::tempdir().unwrap();
    // The edge rule set as it is: inbound rewriting example.com -> tenant.example (RCPT TO,
    // To and Cc) and a rule that adds X-Edge-Sender.
    let (relay, sink, _) = EDGE.start(tmp.path(), |t| t, &[]).await;
    let input = fixture("latin1-sjis.eml");
    let r = send(&relay, "alice@example.com", &input, false).await;
    assert_eq!(r.status(), "250 2.6.0", "{r:?}");
    let out = delivered(&sink, 0).await;
    assert_eq!(sink.messages()[0].rcpts, ["alice@tenant.example"]);
    let to = b"To: \"\x93\xfa\x96\x7b\x8c\xea\" <alice@example.com> (\x83\x65\x83\x58\x83\x67), Bob M\xfcller <bob@else.example>,".as_slice();
    let to_new = b"To: \"\x93\xfa\x96\x7b\x8c\xea\" <alice@tenant.example> (\x83\x65\x83\x58\x83\x67), Bob M\xfcller <bob@else.example>,".as_slice();
    let (out_lines, in_lines) = (head_lines(&out), head_lines(&input));
    // Which lines differ, exactly: the two lines of To (one address each, display name in
    // Shift_JIS, comment and the address of another domain kept), and the two added fields.
    assert_eq!(
        missing(&in_lines, &out_lines),
        [to, b"\tcarol@example.com".as_slice()]
    );
    assert_eq!(
        missing(&out_lines, &in_lines),
        [
            to_new,
            b"\tcarol@tenant.example".as_slice(),
            b"X-MS-Exchange-Organization-AuthAs: Anonymous".as_slice(),
            b"X-Edge-Sender: outside".as_slice(),
        ]
    );
    let want = replace(&input, to, to_new);
    let want = replace(&want, b"\tcarol@example.com", b"\tcarol@tenant.example");
    let want = with_fields(
        &want,
        &[
            b"X-MS-Exchange-Organization-AuthAs: Anonymous",
            b"X-Edge-Sender: outside",
        ],
    );
    assert_eq!(out, want, "{}", String::from_utf8_lossy(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dsn_returns_the_header_as_it_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SinkOptions::default().rcpt("gone@", "550 5.1.1 no such user");
    let (relay, sink, _) = EDGE.start_with(tmp.path(), unchanged, &[], sink).await;
    let input = fixture("latin1-sjis.eml");
    let r = send(&relay, "gone@tenant.example", &input, false).await;
    assert_eq!(r.status(), "250 2.6.0", "{r:?}");
    // The next hop refuses the recipient; the DSN goes back to origin.example, through the
    // same sink.
    assert!(wait_until(20, || !sink.messages().is_empty()).await);
    let dsn = &sink.messages()[0];
    assert_eq!(dsn.rcpts, ["sender@origin.example"]);
    let head = &input[..input.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2];
    assert!(
        dsn.data.windows(head.len()).any(|w| w == head),
        "the returned header is not the original's bytes:\n{}",
        data_text(dsn)
    );
}

fn dkim(args: &[&str], message: &[u8]) -> (i32, Vec<u8>) {
    support::dkimpy::run(args, message)
}

fn key(name: &str) -> String {
    let p = root().join("tests/fixtures/bytes").join(name);
    assert!(Path::new(&p).exists());
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dkim_signed_message_still_verifies_after_the_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = EDGE.start(tmp.path(), unchanged, &[]).await;
    let public = String::from_utf8(fixture("dkim-test.pub")).unwrap();
    let (code, signed) = dkim(
        &["sign", &key("dkim-test.key"), "origin.example", "sel"],
        &fixture("dkim.eml"),
    );
    assert_eq!(code, 0);
    assert!(signed.starts_with(b"DKIM-Signature:"));
    assert_eq!(
        dkim(&["verify", &public], &signed).0,
        0,
        "the signer's own copy"
    );
    // The verifier is not blind: the Subject decoded and re-encoded as UTF-8 (what a
    // re-serializing relay did) breaks the signature.
    let lossy = replace(&signed, b"caf\xe9", "caf\u{fffd}".as_bytes());
    assert_eq!(dkim(&["verify", &public], &lossy).0, 1);

    let r = send(&relay, "bob@tenant.example", &signed, false).await;
    assert_eq!(r.status(), "250 2.6.0", "{r:?}");
    assert!(wait_until(20, || !sink.messages().is_empty()).await);
    let copy = sink.messages()[0].data.clone();
    let (code, out) = dkim(&["verify", &public], &copy);
    assert_eq!(
        code,
        0,
        "{}\n{}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&copy)
    );
}

/// A message whose one body line (or, with `head`, one header field) is `len` octets long.
fn with_line(len: usize, head: bool, lead: &str) -> Vec<u8> {
    let text = format!("{lead}{}", "x".repeat(len - lead.len()));
    if head {
        let field = format!("X-Long: {}", &text[8..]);
        format!("Subject: long\r\n{field}\r\n\r\nshort body\r\n").into_bytes()
    } else {
        format!("Subject: long\r\n\r\nfirst\r\n{text}\r\nlast\r\n").into_bytes()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_over_998_octets_are_refused_at_the_end_of_data_and_998_pass_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let (relay, sink, _) = EDGE.start(tmp.path(), unchanged, &[]).await;
    let mut n = 0;
    for bdat in [false, true] {
        // 998 octets, in the header and in the body, and a body line whose first dot is
        // doubled on the wire (999 octets there; RFC 5321 does not count it).
        for (head, lead) in [(true, ""), (false, ""), (false, ".")] {
            let m = with_line(998, head, lead);
            let r = send(&relay, "alice@tenant.example", &m, bdat).await;
            assert_eq!(r.status(), "250 2.6.0", "bdat {bdat} head {head}: {r:?}");
            let out = delivered(&sink, n).await;
            n += 1;
            assert_eq!(
                out,
                with_fields(&m, &[b"X-MS-Exchange-Organization-AuthAs: Anonymous"])
            );
        }
        // 999 and 5,000 octets: 554 5.6.0 after the whole message, nothing delivered.
        for (len, head) in [(999, false), (999, true), (5000, false)] {
            let r = send(
                &relay,
                "alice@tenant.example",
                &with_line(len, head, ""),
                bdat,
            )
            .await;
            assert_eq!(r.status(), "554 5.6.0", "bdat {bdat} {len}: {r:?}");
            assert!(r.text.contains("line longer than 998 octets"), "{r:?}");
        }
    }
    // BDAT: the limit applies to the reassembled message. A 5,000-octet line split over two
    // chunks (900 octets in the first, which is taken) is refused with the last one.
    let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<sender@origin.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@tenant.example>").await.code, 250);
    let m = with_line(5000, false, "");
    let split = m.iter().position(|&b| b == b'x').unwrap() + 900;
    let mut first = format!("BDAT {split}\r\n").into_bytes();
    first.extend_from_slice(&m[..split]);
    c.send(first).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let mut last = format!("BDAT {} LAST\r\n", m.len() - split).into_bytes();
    last.extend_from_slice(&m[split..]);
    c.send(last).await;
    assert_eq!(c.reply().await.unwrap().status(), "554 5.6.0");
    // The session goes on: the next transaction on it is served.
    assert_eq!(c.cmd("MAIL FROM:<sender@origin.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<alice@tenant.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(mailflow::smtp::dot_stuff(b"Subject: after\r\n\r\nok\r\n"))
        .await;
    assert_eq!(c.reply().await.unwrap().status(), "250 2.6.0");
    // It is the next one delivered: nothing refused was queued before it.
    assert!(wait_until(20, || sink.messages().len() > n).await);
    assert_eq!(sink.messages().len(), n + 1);
    assert!(data_text(&sink.messages()[n]).contains("Subject: after\r\n"));
}
