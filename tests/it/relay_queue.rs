//! The queue through a next hop's outage, over real TCP on 127.0.0.1: one destination whose
//! next hop is down is suspended and probed once per backoff while mail to every other
//! destination flows; nothing queued behind it is lost when it comes back; senders hear of
//! the delay once (RFC 3464 `action=delayed`), as their NOTIFY asks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::raw::Raw;
use support::relay::*;
use support::sink::{Received, Sink, SinkOptions};
use tokio::net::TcpListener;

/// A next hop that is down: it accepts and closes at once, and counts the connections.
async fn counting_dead_hop() -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    (port, count, task)
}

fn start(tmp: &std::path::Path, dead: u16, out: u16, extra: &[&str]) -> Relay {
    let mut args = loopback(out, dead, "1s", "2s");
    args.extend(["--admin", "127.0.0.1:0"].map(String::from));
    args.extend(extra.iter().map(|a| s(a)));
    Relay::start(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.join("spool"),
        &args,
    )
}

/// Sends `n` messages in one session, each to `rcpt` with RCPT parameters `params`.
async fn send_many(relay: &Relay, n: usize, rcpt: &str, params: &str, subject: &str) {
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    for i in 0..n {
        assert_eq!(c.cmd("MAIL FROM:<app@origin.example>").await.code, 250);
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>{params}")).await;
        assert_eq!(r.code, 250, "{r:?}");
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!(
            "From: app@origin.example\r\nSubject: {subject} {i}\r\n\r\nbody {i}\r\n.\r\n"
        ))
        .await;
        let r = c.reply().await.unwrap();
        assert_eq!(r.code, 250, "{r:?}");
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

fn metric(relay: &Relay, name: &str) -> Option<u64> {
    let text = http_get(relay.admin.unwrap(), "/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn reports(sink: &Sink) -> Vec<Received> {
    sink.messages()
        .into_iter()
        .filter(|m| m.mail_from.is_empty())
        .collect()
}

/// 200 messages wait for a next hop that is down. The relay tries it with a handful of
/// connections, suspends it, and probes it once a backoff (1 s here): the old scheduler
/// made a connection per queued message per retry. Meanwhile mail to another destination
/// is delivered, and when the next hop comes back every one of the 200 arrives.
#[tokio::test(flavor = "multi_thread")]
async fn one_dead_next_hop_does_not_hold_the_others_back() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let (dead, connections, hop) = counting_dead_hop().await;
    let mut relay = start(
        tmp.path(),
        dead,
        sink.addr.port(),
        &["--destination-concurrency", "2", "--delay-warning", "0s"],
    );
    send_many(&relay, 200, "user@dead.example", "", "queued").await;
    assert!(
        wait_until(20, || metric(&relay, "mailflow_destinations_suspended")
            == Some(1))
        .await,
        "the dead destination is suspended"
    );
    let t0 = std::time::Instant::now();
    let before = connections.load(Ordering::SeqCst);
    send_many(&relay, 10, "user@elsewhere.example", "", "flows").await;
    assert!(
        wait_until(20, || sink.messages().len() == 10).await,
        "mail to the live destination is delivered while the other is down: {}",
        sink.messages().len()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = connections.load(Ordering::SeqCst) - before;
    let secs = t0.elapsed().as_secs() + 1;
    // One probe per second of backoff at most (two if a probe straddles a second), where
    // trying each queued message would be 200 connections per retry.
    assert!(
        probes as u64 <= 2 * secs + 2,
        "{probes} connections to the dead next hop in {secs} s"
    );
    assert!(probes >= 1, "the dead next hop is probed");
    assert_eq!(metric(&relay, "mailflow_queue_size"), Some(200));
    assert!(
        reports(&sink).is_empty(),
        "no delay notice: --delay-warning 0s"
    );

    // The next hop comes back on its port: a probe finds it, then all 200 go out.
    hop.abort();
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    assert!(
        wait_until(60, || back.messages().len() == 200).await,
        "delivered after the outage: {}",
        back.messages().len()
    );
    let mut subjects: Vec<String> = back
        .messages()
        .iter()
        .map(|m| header(&data_text(m), "Subject").unwrap().to_string())
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 200, "each message once");
    assert!(wait_until(10, || metric(&relay, "mailflow_queue_size") == Some(0)).await);
    assert_eq!(metric(&relay, "mailflow_destinations_suspended"), Some(0));
    relay.terminate().await;
}

/// With `--delay-warning 2s` a message still queued after two seconds gets one delay
/// notice, to a sender whose NOTIFY allows it (none given, or DELAY listed), and never a
/// second one, while retries go on every second. A sender who asked for FAILURE only gets
/// none. The notice is an RFC 3464 report with `Action: delayed` and the original header.
#[tokio::test(flavor = "multi_thread")]
async fn delay_notices_go_once_to_senders_who_want_them() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let (dead, _connections, _hop) = counting_dead_hop().await;
    let mut relay = start(
        tmp.path(),
        dead,
        sink.addr.port(),
        &["--delay-warning", "2s"],
    );
    send_many(&relay, 1, "plain@dead.example", "", "no-notify").await;
    send_many(
        &relay,
        1,
        "fail@dead.example",
        " NOTIFY=FAILURE",
        "failure-only",
    )
    .await;
    send_many(
        &relay,
        1,
        "both@dead.example",
        " NOTIFY=DELAY,FAILURE",
        "delay-too",
    )
    .await;
    // A generous bound: the destination is suspended, so a notice waits for the next probe,
    // whose backoff grows; on a loaded 2-core machine running the whole suite the second one
    // once took longer than 20 s. What is asserted is who gets one, once, not how soon.
    assert!(
        wait_until(60, || reports(&sink).len() >= 2).await,
        "delay notices: {}",
        reports(&sink).len()
    );
    // Several more retries, and no second notice.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let notices = reports(&sink);
    assert_eq!(notices.len(), 2, "one notice per message that wants one");
    let mut about: Vec<String> = Vec::new();
    for n in &notices {
        assert_eq!(n.rcpts, ["app@origin.example"]);
        let text = data_text(n);
        assert!(
            text.contains("multipart/report; report-type=\"delivery-status\""),
            "{text}"
        );
        assert!(text.contains("Action: delayed"), "{text}");
        assert!(!text.contains("Action: failed"), "{text}");
        assert!(text.contains("Status: 4."), "{text}");
        let rcpt = text
            .lines()
            .find_map(|l| l.strip_prefix("Final-Recipient: rfc822; "))
            .unwrap()
            .trim()
            .to_string();
        // The notice returns the message's header block, never its body (RFC 3461 4.3).
        let subject = if rcpt == "plain@dead.example" {
            "Subject: no-notify 0"
        } else {
            "Subject: delay-too 0"
        };
        assert!(text.contains("text/rfc822-headers"), "{text}");
        assert!(text.contains(subject), "{text}");
        assert!(!text.contains("body 0"), "{text}");
        about.push(rcpt);
    }
    about.sort();
    assert_eq!(about, ["both@dead.example", "plain@dead.example"]);
    assert_eq!(
        metric(&relay, "mailflow_queue_size"),
        Some(3),
        "still queued"
    );
    relay.terminate().await;
}

/// `--max-queue 5`: with five messages waiting for a dead next hop, the sixth MAIL gets
/// `452 4.3.1` (the client keeps it and tries later) and nothing more is queued, however
/// many sessions try: the queue's memory is bounded by configuration, not by senders.
#[tokio::test(flavor = "multi_thread")]
async fn the_queue_is_bounded_by_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let (dead, _connections, _hop) = counting_dead_hop().await;
    let mut relay = start(
        tmp.path(),
        dead,
        sink.addr.port(),
        &["--max-queue", "5", "--delay-warning", "0s"],
    );
    send_many(&relay, 5, "user@dead.example", "", "fills").await;
    for _ in 0..3 {
        let (mut c, _) = Raw::connect(relay.addr).await;
        assert_eq!(c.cmd("EHLO c.test").await.code, 250);
        let r = c.cmd("MAIL FROM:<app@origin.example>").await;
        assert_eq!(r.status(), "452 4.3.1", "{r:?}");
        assert!(r.text.contains("queue full"), "{r:?}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    assert_eq!(metric(&relay, "mailflow_queue_size"), Some(5));
    relay.terminate().await;
}
