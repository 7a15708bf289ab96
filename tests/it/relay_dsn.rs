//! What a DSN from the relay contains, over real TCP against the real binary: the next hop
//! refuses a recipient at RCPT, refuses the data, the rules refuse a recipient after data
//! (`bounce_refused`), or the message expires. Each report is parsed back: its returned part
//! must be the original's header block (default RET) or the original message (`RET=FULL`,
//! up to 50,000 octets), and its per-recipient fields must say who, what and why.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use mail_parser::MimeHeaders;
use support::raw::Raw;
use support::relay::*;
use support::sink::{Received, Sink, SinkOptions};

/// The message sent in every case: its header block, then its body (with a line that needs
/// dot-stuffing), CRLF throughout as on the wire.
const HEADER: &str = "From: App <app@origin.example>\r\n\
                      To: gone@dead.example, ok@dead.example\r\n\
                      Subject: quarterly figures\r\n\
                      Message-ID: <dsn-test-1@origin.example>\r\n\
                      X-Original-Only: kept as sent\r\n";
const BODY: &str = "first line of the body\r\n.a line that starts with a dot\r\nlast line\r\n";

fn original() -> Vec<u8> {
    format!("{HEADER}\r\n{BODY}").into_bytes()
}

/// Sends `message` from app@origin.example with `mail_params` to each `(rcpt, params)`;
/// asserts every step was accepted.
async fn send(relay: &Relay, mail_params: &str, rcpts: &[(&str, &str)], message: &[u8]) {
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    let r = c
        .cmd(&format!("MAIL FROM:<app@origin.example>{mail_params}"))
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    for (rcpt, params) in rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>{params}")).await;
        assert_eq!(r.code, 250, "{rcpt}: {r:?}");
    }
    assert_eq!(c.cmd("DATA").await.code, 354);
    let mut data = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    c.send(data).await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// A relay on `dsn.mailflow`: `dead.example` goes to `dead` (a port), everything else to
/// `out`.
fn start(tmp: &std::path::Path, out: u16, dead: u16, extra: &[&str]) -> Relay {
    let mut args = loopback(out, dead, "1s", "2s");
    args.extend(["--queue-interval", "1s"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    Relay::start(
        &root().join("tests/fixtures/relay/dsn.mailflow"),
        &tmp.join("spool"),
        &args,
    )
}

/// A DSN taken apart.
struct Dsn {
    envelope: Received,
    /// The `message/delivery-status` part.
    status: String,
    /// The third part's content type and bytes, if there is one.
    returned: Option<(String, Vec<u8>)>,
}

fn parse_dsn(m: &Received) -> Dsn {
    let raw = &m.data;
    let msg = mail_parser::MessageParser::default().parse(raw).unwrap();
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let mail_parser::PartType::Multipart(ids) = &msg.root_part().body else {
        panic!("not multipart");
    };
    let parts: Vec<&mail_parser::MessagePart<'_>> =
        ids.iter().map(|i| &msg.parts[*i as usize]).collect();
    let body = |p: &mail_parser::MessagePart<'_>| {
        raw[p.offset_body as usize..p.offset_end as usize].to_vec()
    };
    let kind = |p: &mail_parser::MessagePart<'_>| {
        let ct = p.content_type().unwrap();
        format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
    };
    assert_eq!(kind(parts[0]), "text/plain");
    assert_eq!(kind(parts[1]), "message/delivery-status");
    assert!(parts.len() <= 3, "{} parts", parts.len());
    Dsn {
        envelope: m.clone(),
        status: String::from_utf8(body(parts[1])).unwrap(),
        returned: parts.get(2).map(|p| (kind(p), body(p))),
    }
}

impl Dsn {
    /// The per-recipient block naming `rcpt` in its Final-Recipient field, as its lines.
    fn recipient(&self, rcpt: &str) -> Vec<String> {
        let want = format!("Final-Recipient: rfc822; {rcpt}");
        self.status
            .split("\r\n\r\n")
            .find(|b| b.lines().any(|l| l == want))
            .unwrap_or_else(|| panic!("no block for {rcpt} in {}", self.status))
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn recipients(&self) -> usize {
        self.status.matches("Final-Recipient:").count()
    }

    /// The returned part: its type, and its bytes with the fields the relay adds on the way
    /// (its Received line, the rule's X-Relay-Test, the organization's stamps) taken out.
    fn returned(&self) -> (String, Vec<u8>) {
        let (kind, bytes) = self.returned.clone().expect("a returned-content part");
        (kind, without_added_fields(&bytes))
    }
}

/// `bytes` with the header fields the relay adds on the way removed from its header block:
/// its own Received field, the rule's X-Relay-Test, the organization's stamps.
fn without_added_fields(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let (head, rest) = match text.find("\r\n\r\n") {
        Some(p) => (&text[..p + 2], &text[p + 2..]),
        None => (text.as_str(), ""),
    };
    // Whole fields, continuation lines included.
    let mut fields: Vec<String> = Vec::new();
    for line in head.split_inclusive("\r\n") {
        match fields.last_mut() {
            Some(f) if line.starts_with(' ') || line.starts_with('\t') => f.push_str(line),
            _ => fields.push(line.to_string()),
        }
    }
    let mut out: String = fields
        .into_iter()
        .filter(|f| {
            let name = f.split(':').next().unwrap_or_default().to_ascii_lowercase();
            !((name == "received" && f.contains("by relay.test (mailflow)"))
                || name == "x-relay-test"
                || name.starts_with("x-ms-exchange-organization-"))
        })
        .collect();
    out.push_str(rest);
    out.into_bytes()
}

fn dsns(sink: &Sink) -> Vec<Dsn> {
    sink.messages()
        .iter()
        .filter(|m| m.mail_from.is_empty())
        .map(parse_dsn)
        .collect()
}

async fn one_dsn(sink: &Sink) -> Dsn {
    assert!(
        wait_until(20, || !dsns(sink).is_empty()).await,
        "no DSN arrived"
    );
    let mut all = dsns(sink);
    assert_eq!(all.len(), 1, "one DSN");
    let d = all.remove(0);
    assert_eq!(d.envelope.rcpts, ["app@origin.example"]);
    d
}

/// The Diagnostic-Code field starts with `start` (type, code, enhanced status) and ends with
/// the next hop's words.
fn assert_diagnostic(block: &[String], start: &str, end: &str) {
    let d = block
        .iter()
        .find_map(|l| l.strip_prefix("Diagnostic-Code: "))
        .unwrap_or_else(|| panic!("no Diagnostic-Code in {block:?}"));
    assert!(d.starts_with(start) && d.ends_with(end), "{d:?}");
}

fn assert_fields(block: &[String], expected: &[&str]) {
    for e in expected {
        assert!(block.iter().any(|l| l == e), "missing {e:?} in {block:?}");
    }
}

/// The next hop refuses one recipient at RCPT and takes the other: with default RET the
/// report returns the header block exactly as sent; its recipient block carries the ORCPT,
/// the action, the status and the hop's words; the ENVID comes back.
#[tokio::test(flavor = "multi_thread")]
async fn rcpt_refused_returns_the_header_block() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Sink::start(SinkOptions::default()).await;
    let hop = Sink::start(SinkOptions::default().rcpt("gone@", "550 5.1.1 no such user")).await;
    let relay = start(tmp.path(), out.addr.port(), hop.addr.port(), &[]);
    send(
        &relay,
        " ENVID=env-42",
        &[
            ("gone@dead.example", " ORCPT=rfc822;Gone@Dead.example"),
            ("ok@dead.example", ""),
        ],
        &original(),
    )
    .await;
    let d = one_dsn(&out).await;
    assert_eq!(d.recipients(), 1, "{}", d.status);
    assert!(
        d.status.contains("Original-Envelope-Id: env-42\r\n"),
        "{}",
        d.status
    );
    assert_fields(
        &d.recipient("gone@dead.example"),
        &[
            "Original-Recipient: rfc822; Gone@Dead.example",
            "Action: failed",
            "Status: 5.1.1",
            "Remote-MTA: dns; 127.0.0.1",
        ],
    );
    assert_diagnostic(
        &d.recipient("gone@dead.example"),
        "smtp; 550 5.1.1 ",
        "no such user",
    );
    let (kind, returned) = d.returned();
    assert_eq!(kind, "text/rfc822-headers");
    assert_eq!(String::from_utf8(returned).unwrap(), HEADER);
    // The copy the hop took is the same message.
    assert_eq!(hop.messages().len(), 1);
    assert_eq!(
        without_added_fields(&hop.messages()[0].data),
        original(),
        "the delivered copy"
    );
}

/// The next hop refuses the data: `RET=FULL` returns the whole message as sent, and both
/// recipients are reported.
#[tokio::test(flavor = "multi_thread")]
async fn data_refused_with_ret_full_returns_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Sink::start(SinkOptions::default()).await;
    let hop = Sink::start(SinkOptions {
        data_reply: "550 5.7.1 content refused".into(),
        ..SinkOptions::default()
    })
    .await;
    let relay = start(tmp.path(), out.addr.port(), hop.addr.port(), &[]);
    send(
        &relay,
        " RET=FULL ENVID=env-full",
        &[("gone@dead.example", ""), ("ok@dead.example", "")],
        &original(),
    )
    .await;
    let d = one_dsn(&out).await;
    assert_eq!(d.recipients(), 2, "{}", d.status);
    assert!(d.status.contains("Original-Envelope-Id: env-full\r\n"));
    for rcpt in ["gone@dead.example", "ok@dead.example"] {
        let block = d.recipient(rcpt);
        assert_fields(&block, &["Action: failed", "Status: 5.7.1"]);
        assert_diagnostic(&block, "smtp; 550 5.7.1 ", "content refused");
        assert!(
            !block.iter().any(|l| l.starts_with("Original-Recipient:")),
            "no ORCPT was given: {block:?}"
        );
    }
    let (kind, returned) = d.returned();
    assert_eq!(kind, "message/rfc822");
    assert_eq!(
        String::from_utf8(returned).unwrap(),
        String::from_utf8(original()).unwrap()
    );
}

/// `RET=FULL` on a message over 50,000 octets returns its header block only.
#[tokio::test(flavor = "multi_thread")]
async fn ret_full_over_the_limit_returns_the_header_block() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Sink::start(SinkOptions::default()).await;
    let hop = Sink::start(SinkOptions::default().rcpt("gone@", "550 5.1.1 no such user")).await;
    let relay = start(tmp.path(), out.addr.port(), hop.addr.port(), &[]);
    let line = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n";
    let big = format!("{HEADER}\r\n{}", line.repeat(52_000 / line.len() + 1));
    assert!(big.len() > 50_000);
    send(
        &relay,
        " RET=FULL",
        &[("gone@dead.example", "")],
        big.as_bytes(),
    )
    .await;
    let d = one_dsn(&out).await;
    let (kind, returned) = d.returned();
    assert_eq!(kind, "text/rfc822-headers");
    assert_eq!(String::from_utf8(returned).unwrap(), HEADER);
    assert!(
        d.envelope.data.len() < 8_000,
        "{} octets",
        d.envelope.data.len()
    );
}

/// The rules add a recipient no send connector covers, which is refused after data while
/// the message's own recipient is queued: the client got 250, so the relay reports the
/// refusal itself (`bounce_refused`), returning the message as it was received.
#[tokio::test(flavor = "multi_thread")]
async fn refused_after_data_returns_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Sink::start(SinkOptions::default()).await;
    let relay = start(tmp.path(), out.addr.port(), dead_port(), &[]);
    let message = String::from_utf8(original())
        .unwrap()
        .replace("quarterly figures", "figures for the audit");
    send(
        &relay,
        " RET=FULL ENVID=env-rules",
        &[("b@elsewhere.example", "")],
        message.as_bytes(),
    )
    .await;
    let d = one_dsn(&out).await;
    assert_eq!(d.recipients(), 1, "{}", d.status);
    assert!(d.status.contains("Original-Envelope-Id: env-rules\r\n"));
    let block = d.recipient("audit@unrouted.example");
    assert_fields(&block, &["Action: failed", "Status: 5.4.4"]);
    assert_diagnostic(
        &block,
        "smtp; 550 5.4.4 ",
        "no route to the recipient's domain",
    );
    let (kind, returned) = d.returned();
    assert_eq!(kind, "message/rfc822");
    assert_eq!(String::from_utf8(returned).unwrap(), message);
    // The accepted recipient got it.
    assert!(wait_until(10, || out.messages().len() == 2).await);
    let delivered: Vec<Received> = out
        .messages()
        .into_iter()
        .filter(|m| !m.mail_from.is_empty())
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].rcpts, ["b@elsewhere.example"]);
}

/// A message that outlives its lifetime behind a dead hop: the report returns its header
/// block and says 4.4.7 with the last error.
#[tokio::test(flavor = "multi_thread")]
async fn expiry_returns_the_header_block() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Sink::start(SinkOptions::default()).await;
    let relay = start(
        tmp.path(),
        out.addr.port(),
        dead_port(),
        &["--lifetime", "2s"],
    );
    send(
        &relay,
        "",
        &[("gone@dead.example", " ORCPT=rfc822;gone@dead.example")],
        &original(),
    )
    .await;
    let d = one_dsn(&out).await;
    assert!(!d.status.contains("Original-Envelope-Id:"), "{}", d.status);
    let block = d.recipient("gone@dead.example");
    assert_fields(
        &block,
        &[
            "Original-Recipient: rfc822; gone@dead.example",
            "Action: failed",
            "Status: 4.4.7",
        ],
    );
    assert!(
        block
            .iter()
            .any(|l| l.starts_with("Diagnostic-Code: smtp; ") && l.contains("expired")),
        "{block:?}"
    );
    let (kind, returned) = d.returned();
    assert_eq!(kind, "text/rfc822-headers");
    assert_eq!(String::from_utf8(returned).unwrap(), HEADER);
}

/// Each recipient's NOTIFY goes from its RCPT through the spool to the next hop's RCPT, in
/// the wire's upper case and RFC order whatever case and order the sender wrote; a recipient
/// without NOTIFY is passed on without one (the next hop applies the same default).
#[tokio::test(flavor = "multi_thread")]
async fn notify_is_passed_on_to_the_next_hop() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Sink::start(SinkOptions::default()).await;
    let hop = Sink::start(SinkOptions {
        dsn: true,
        ..SinkOptions::default()
    })
    .await;
    let relay = start(tmp.path(), out.addr.port(), hop.addr.port(), &[]);
    send(
        &relay,
        "",
        &[
            ("a@dead.example", " NOTIFY=delay,Success"),
            ("b@dead.example", " NOTIFY=never"),
            ("c@dead.example", ""),
            ("d@dead.example", " NOTIFY=FAILURE"),
        ],
        &original(),
    )
    .await;
    assert!(wait_until(20, || hop.messages().len() == 1).await);
    let m = &hop.messages()[0];
    let mut sent: Vec<(String, Vec<String>)> = m
        .rcpts
        .iter()
        .cloned()
        .zip(m.rcpt_params.iter().cloned())
        .collect();
    sent.sort();
    let notify = |params: &[String]| -> Vec<String> {
        params
            .iter()
            .filter(|p| p.starts_with("NOTIFY="))
            .cloned()
            .collect()
    };
    let got: Vec<(&str, Vec<String>)> = sent
        .iter()
        .map(|(rcpt, params)| (rcpt.as_str(), notify(params)))
        .collect();
    assert_eq!(
        got,
        [
            ("a@dead.example", vec!["NOTIFY=SUCCESS,DELAY".to_string()]),
            ("b@dead.example", vec!["NOTIFY=NEVER".to_string()]),
            ("c@dead.example", vec![]),
            ("d@dead.example", vec!["NOTIFY=FAILURE".to_string()]),
        ]
    );
    assert!(dsns(&out).is_empty(), "all were delivered: no report");
}
