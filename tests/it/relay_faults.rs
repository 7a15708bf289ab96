//! The relay against broken next hops and a damaged spool, over real TCP on 127.0.0.1: a hop
//! that closes at once, greets with 421, refuses the data with 421, or says nothing at all
//! defers the message, which is kept and delivered once the hop is well; a spool segment
//! damaged on disk is copied aside and the rest of the queue goes out; a damaged last record
//! is bounced, a torn one cut off, both after a copy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;
use std::os::unix::fs::PermissionsExt;

use std::time::Duration;
use support::raw::Raw;
use support::relay::*;
use support::sink::{Sink, SinkOptions};
use tokio::net::TcpListener;

fn args(hop: u16) -> Vec<String> {
    let mut args = loopback(hop, hop, "1s", "1s");
    args.extend(["--queue-interval", "1s"].map(String::from));
    args
}

fn start(tmp: &std::path::Path, hop: u16) -> Relay {
    Relay::start(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.join("spool"),
        &args(hop),
    )
}

/// Sends one message and asserts it was acknowledged.
async fn send(relay: &Relay, subject: &str) {
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<app@origin.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@elsewhere.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!(
        "Subject: {subject}\r\n\r\nbody of {subject}\r\n.\r\n"
    ))
    .await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 250, "{subject}: {r:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// How a broken next hop behaves on each connection.
#[derive(Clone, Copy, Debug)]
enum Broken {
    /// Accepts and closes at once.
    Drops,
    /// Accepts and never says a word.
    Stalls,
}

/// A next hop that misbehaves until dropped (its connections with it), on a free port (bound
/// here, not found free earlier: another socket may take a port in between).
async fn broken_hop(how: Broken) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            match how {
                Broken::Drops => drop(tcp),
                Broken::Stalls => held.push(tcp),
            }
        }
    });
    (port, task)
}

/// Each broken behaviour defers (a DEFER in the tracking log, the message still queued);
/// when a working hop takes the port, the message is delivered, once.
#[tokio::test(flavor = "multi_thread")]
async fn broken_next_hops_defer_and_the_message_is_kept() {
    for how in [Broken::Drops, Broken::Stalls] {
        let tmp = tempfile::tempdir().unwrap();
        let (port, hop) = broken_hop(how).await;
        let relay = start(tmp.path(), port);
        send(&relay, &format!("{how:?}")).await;
        assert!(
            wait_until(15, || relay.track(&["--event", "DEFER"]).len() >= 2).await,
            "{how:?}: not deferred (twice)"
        );
        assert!(relay.track(&["--event", "SEND"]).is_empty());
        hop.abort();
        let _ = hop.await;
        let sink = Sink::start_on(port, SinkOptions::default()).await;
        assert!(
            wait_until(15, || !sink.messages().is_empty()).await,
            "{how:?}: not delivered after the hop recovered"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(sink.messages().len(), 1, "{how:?}: delivered twice");
        assert!(data_text(&sink.messages()[0]).contains(&format!("body of {how:?}")));
    }
}

/// 421 at the greeting, and 421 after the data: both are temporary, the message is kept.
#[tokio::test(flavor = "multi_thread")]
async fn next_hop_421_defers_and_the_message_is_kept() {
    let bad = [
        SinkOptions {
            greeting: 421,
            ..SinkOptions::default()
        },
        SinkOptions {
            data_reply: "421 4.3.0 out of resources, closing".into(),
            ..SinkOptions::default()
        },
    ];
    for (i, options) in bad.into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let port = dead_port();
        let broken = Sink::start_on(port, options).await;
        let relay = start(tmp.path(), port);
        send(&relay, &format!("case {i}")).await;
        assert!(
            wait_until(15, || relay.track(&["--event", "DEFER"]).len() >= 2).await,
            "case {i}: not deferred"
        );
        assert!(broken.connections() >= 2);
        assert!(broken.messages().is_empty());
        drop(broken);
        let sink = Sink::start_on(port, SinkOptions::default()).await;
        assert!(
            wait_until(15, || !sink.messages().is_empty()).await,
            "case {i}: not delivered after the hop recovered"
        );
        assert!(relay.track(&["--event", "FAIL"]).is_empty());
        assert!(relay.track(&["--event", "DSN"]).is_empty());
    }
}

/// Damage in the middle of a spool segment, found at restart: the segment is copied to
/// `corrupt/`, the relay starts and serves, and every message whose record survived is
/// delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_spool_is_set_aside_and_the_rest_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let port = dead_port();
    let mut relay = start(tmp.path(), port);
    for i in 0..10 {
        send(&relay, &format!("queued {i}")).await;
    }
    relay.kill9();
    let journal = tmp.path().join("spool/queue/journal");
    let segment = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a spool segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 64] {
        *b ^= 0xA5;
    }
    std::fs::write(&segment, &bytes).unwrap();
    // As a segment written by an older relay, or restored from a backup, may be.
    std::fs::set_permissions(&segment, std::fs::Permissions::from_mode(0o644)).unwrap();

    let sink = Sink::start_on(port, SinkOptions::default()).await;
    let relay = start(tmp.path(), port);
    let corrupt: Vec<_> = std::fs::read_dir(tmp.path().join("spool/queue/corrupt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(corrupt.len(), 1, "the damaged segment is copied aside");
    let mode = std::fs::metadata(&corrupt[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the copy of mail is the service user's alone");
    // The relay still takes new mail.
    send(&relay, "after the damage").await;
    assert!(
        wait_until(20, || sink
            .messages()
            .iter()
            .filter(|m| !m.mail_from.is_empty())
            .count()
            >= 10)
        .await,
        "delivered: {}",
        sink.messages().len()
    );
    // A message whose body the damage hit is bounced (a DSN from <>), not delivered.
    let delivered: Vec<_> = sink
        .messages()
        .into_iter()
        .filter(|m| !m.mail_from.is_empty())
        .collect();
    let subjects: Vec<String> = delivered
        .iter()
        .map(|m| {
            header(&data_text(m), "Subject")
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(subjects.contains(&"after the damage".to_string()));
    // At most the one record the damage hit is not delivered; everything delivered is whole.
    assert!(subjects.len() >= 10, "{subjects:?}");
    for m in delivered {
        let text = data_text(&m);
        let subject = header(&text, "Subject").unwrap().to_string();
        assert!(
            text.contains(&format!("body of {subject}")),
            "{subject}: {text:?}"
        );
    }
}

/// The relay's log as written to a file: plain text, no terminal colour codes in it.
fn plain(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log).to_string();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file: {text:?}"
    );
    text
}

/// The newest spool segment as a relay killed with three messages queued left it, cut back
/// to the end of the last message's record (the deferral records the scheduler wrote after
/// it dropped, as if the crash came first): its path, its bytes, and where that last record
/// starts and its body lies.
async fn killed_with_three_queued(tmp: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, usize) {
    let port = dead_port();
    let mut relay = start(tmp, port);
    for i in 0..3 {
        send(&relay, &format!("queued {i}")).await;
    }
    relay.kill9();
    let journal = tmp.join("spool/queue/journal");
    let mut segs: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    let seg = segs.pop().expect("a spool segment");
    let mut bytes = std::fs::read(&seg).unwrap();
    let body_at = bytes
        .windows(16)
        .position(|w| w == b"body of queued 2")
        .expect("the last message's body");
    let rec = bytes[..body_at]
        .windows(4)
        .rposition(|w| w == b"MFR1")
        .unwrap();
    let word = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
    let end = rec + 24 + word(rec + 8) + word(rec + 12);
    bytes.truncate(end);
    std::fs::write(&seg, &bytes).unwrap();
    (seg, bytes, body_at)
}

fn corrupt_copies(tmp: &std::path::Path) -> Vec<Vec<u8>> {
    std::fs::read_dir(tmp.join("spool/queue/corrupt"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

fn subjects(sink: &Sink) -> Vec<String> {
    let mut v: Vec<String> = sink
        .messages()
        .iter()
        .filter(|m| !m.mail_from.is_empty())
        .map(|m| header(&data_text(m), "Subject").unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The newest segment's last record written whole but damaged (a byte of its body flipped
/// after a kill -9): at restart the segment is copied to `corrupt/` as it was, an error
/// names segment, offset and message, the other messages are delivered, and the damaged
/// one, acknowledged with 250, is not dropped: its sender gets a DSN for its recipient.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_last_record_is_bounced_not_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (seg, mut bytes, body_at) = killed_with_three_queued(tmp.path()).await;
    bytes[body_at + 3] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();

    let port = dead_port();
    let sink = Sink::start_on(port, SinkOptions::default()).await;
    let log = tmp.path().join("relay.log");
    let _relay = Relay::start_logged(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.path().join("spool"),
        &args(port),
        Some(&log),
    );
    assert_eq!(
        corrupt_copies(tmp.path()),
        vec![bytes],
        "copied aside as it was"
    );
    let dsn = |s: &Sink| s.messages().into_iter().find(|m| m.mail_from.is_empty());
    assert!(
        wait_until(20, || dsn(&sink).is_some() && subjects(&sink).len() == 2).await,
        "delivered {:?}, DSN {}",
        subjects(&sink),
        dsn(&sink).is_some()
    );
    assert_eq!(subjects(&sink), ["queued 0", "queued 1"]);
    let d = dsn(&sink).unwrap();
    assert_eq!(d.rcpts, ["app@origin.example"]);
    let text = data_text(&d);
    for field in [
        "Final-Recipient: rfc822; user@elsewhere.example",
        "Action: failed",
        "Status: 5.3.0",
    ] {
        assert!(text.contains(&format!("{field}\r\n")), "{field}: {text}");
    }
    // The body is not returned: it cannot be trusted. No empty part pretends otherwise.
    assert!(!text.contains("text/rfc822-headers"), "{text}");
    assert!(!text.contains("message/rfc822"), "{text}");
    assert!(!text.contains("body of queued"), "{text}");

    let log = plain(&std::fs::read(&log).unwrap());
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(name)
            && l.contains("offset=")
            && l.contains("fails its checksum")
            && l.contains("from <app@origin.example>")),
        "{log}"
    );
    assert!(!log.contains("torn"), "{log}");
}

/// The newest segment ends inside its last record (a write a crash cut short): at restart
/// the segment is copied to `corrupt/` as it was before the cut, the cut is logged as an
/// error, the intact messages are delivered, and nothing is bounced for the torn one (it
/// was never acknowledged).
#[tokio::test(flavor = "multi_thread")]
async fn a_torn_last_record_is_cut_off_after_a_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let (seg, mut bytes, body_at) = killed_with_three_queued(tmp.path()).await;
    bytes.truncate(body_at + 5);
    std::fs::write(&seg, &bytes).unwrap();

    let port = dead_port();
    let sink = Sink::start_on(port, SinkOptions::default()).await;
    let log = tmp.path().join("relay.log");
    let relay = Relay::start_logged(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.path().join("spool"),
        &args(port),
        Some(&log),
    );
    assert_eq!(
        corrupt_copies(tmp.path()),
        vec![bytes],
        "copied before the cut"
    );
    assert!(
        wait_until(20, || subjects(&sink).len() == 2).await,
        "{:?}",
        subjects(&sink)
    );
    assert_eq!(subjects(&sink), ["queued 0", "queued 1"]);
    // One more scheduler pass: still no DSN, nothing more delivered.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sink.messages().len(), 2);
    assert!(relay.track(&["--event", "DSN"]).is_empty());
    let log = plain(&std::fs::read(&log).unwrap());
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains(name)
            && l.contains("offset=")
            && l.contains("torn write")),
        "{log}"
    );
}
