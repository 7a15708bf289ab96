//! `mailflow queue` as an administrator uses it, over a real relay on 127.0.0.1 whose next
//! hop for dead.example is down and then comes back: list, summary, show and export what is
//! stuck and why; delete, bounce, hold a send connector through a restart, work on the
//! stopped spool, retry and release; every action in the tracking log with who did it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use crate::queue_attack::{ids, qj as queue_json, queue, support_now, text};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::raw::Raw;
use support::relay::*;
use support::sink::{Sink, SinkOptions};

/// The queue tests' relay (queue_attack's), without a log or extra arguments.
fn start(spool: &Path, dead: u16, out: u16) -> Relay {
    crate::queue_attack::start(spool, dead, out, None, &[])
}

fn subjects(sink: &Sink) -> Vec<String> {
    let mut v: Vec<String> = sink
        .messages()
        .iter()
        .filter_map(|m| header(&data_text(m), "Subject").map(str::to_string))
        .collect();
    v.sort();
    v
}

async fn send(relay: &Relay, subjects: &[&str]) {
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    for subject in subjects {
        assert_eq!(c.cmd("MAIL FROM:<app@origin.example>").await.code, 250);
        let r = c.cmd("RCPT TO:<user@dead.example> NOTIFY=FAILURE").await;
        assert_eq!(r.code, 250, "{r:?}");
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!(
            "From: app@origin.example\r\nSubject: {subject}\r\nMessage-ID: <{subject}@origin.example>\r\n\r\nbody\r\n.\r\n"
        ))
        .await;
        assert_eq!(c.reply().await.unwrap().code, 250);
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// What is stuck and why, then make it go: the whole administrator's round.
#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_sees_what_is_stuck_and_makes_it_go() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let dead = dead_port();
    let mut relay = start(&spool, dead, sink.addr.port());
    // m0 first: its attempt fails and suspends the destination for the retry time (an
    // hour), so the others wait behind it.
    send(&relay, &["m0"]).await;
    assert!(
        wait_until(20, || {
            let (_, doc) = queue_json(&spool, &["list", "--state", "deferred"]);
            ids(&doc).len() == 1
        })
        .await
    );
    send(&relay, &["m1", "m2", "m3"]).await;

    // Stuck: no message is due for an hour.
    assert!(
        wait_until(20, || {
            let (_, doc) = queue_json(&spool, &["list"]);
            let later = support_now() + 3000;
            ids(&doc).len() == 4
                && doc["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["recipients"][0]["next_attempt"].as_u64().unwrap() > later)
        })
        .await
    );
    let (code, doc) = queue_json(&spool, &["list"]);
    assert_eq!(code, 0);
    let m: Vec<String> = ids(&doc);
    let first = &doc["messages"][0];
    assert_eq!(first["sender"], "app@origin.example");
    assert_eq!(first["message_id"], "<m0@origin.example>");
    let r = &first["recipients"][0];
    assert_eq!(
        (r["state"].as_str(), r["connector"].as_str()),
        (Some("deferred"), Some("Dead"))
    );
    assert_eq!(r["notify"], "FAILURE");
    assert!(r["last_reply"].as_str().unwrap().starts_with("4"), "{r}");
    assert!(
        r["next_attempt"].as_u64().unwrap() > support_now() + 3000,
        "{r}"
    );

    let (code, doc) = queue_json(&spool, &["list", "--limit", "0"]);
    assert_eq!(
        (code, doc["matched"].as_u64()),
        (0, Some(4)),
        "matches, none listed: {doc}"
    );
    let (_, doc) = queue_json(&spool, &["list", "--limit", "1"]);
    assert_eq!((ids(&doc).len(), doc["matched"].as_u64()), (1, Some(4)));
    assert_eq!(ids(&doc)[0], m[0], "the oldest");

    let (code, doc) = queue_json(&spool, &["summary"]);
    assert_eq!(code, 0);
    let d = &doc["destinations"][0];
    assert_eq!(doc["destinations"].as_array().unwrap().len(), 1);
    assert_eq!(
        (d["connector"].as_str(), d["domain"].as_str()),
        (Some("Dead"), Some("dead.example"))
    );
    assert_eq!(
        (d["messages"].as_u64(), d["recipients"].as_u64()),
        (Some(4), Some(4))
    );
    assert!(d["last_error"].as_str().is_some(), "{d}");
    let human = text(&queue(&spool, &["summary"]));
    assert!(
        human.contains("Dead") && human.contains("dead.example"),
        "{human}"
    );
    let human = text(&queue(&spool, &["show", &m[0].to_lowercase()]));
    assert!(
        human.contains(&m[0]) && human.contains("deferred") && human.contains("notify FAILURE"),
        "{human}"
    );
    let out = queue(&spool, &["show", "0000000000000000"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let eml = tmp.path().join("m0.eml");
    let out = queue(&spool, &["export", &m[0], "-o", eml.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let bytes = std::fs::read_to_string(&eml).unwrap();
    assert!(
        bytes.contains("Subject: m0\r\n") && bytes.contains("X-Relay-Test: tagged"),
        "{bytes}"
    );

    // An action must name its messages.
    let out = queue(&spool, &["delete"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let (code, doc) = queue_json(&spool, &["delete", &m[1]]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["done"][0].as_str(), Some(m[1].as_str()));
    let (code, _) = queue_json(&spool, &["delete", &m[1]]);
    assert_eq!(code, 1, "a second delete finds nothing");
    // A bounce returns m2 to its sender, as its NOTIFY=FAILURE asks; nothing else is sent.
    let (code, doc) = queue_json(&spool, &["bounce", &m[2]]);
    assert_eq!(code, 0, "{doc}");
    assert!(wait_until(10, || sink.messages().len() == 1).await);
    let dsn = data_text(&sink.messages()[0]);
    assert!(
        sink.messages()[0].mail_from.is_empty(),
        "a DSN has the null sender"
    );
    assert!(
        dsn.contains("Action: failed") && dsn.contains("administrator"),
        "{dsn}"
    );
    // The DSN is a message of its own until the sink takes it.
    assert!(
        wait_until(10, || {
            let (_, doc) = queue_json(&spool, &["list"]);
            ids(&doc) == [m[0].clone(), m[3].clone()]
        })
        .await
    );

    let (code, doc) = queue_json(&spool, &["hold", "0000000000000000"]);
    assert_eq!(code, 1, "no such message to hold: {doc}");
    assert!(
        doc["holds"]["messages"].as_array().unwrap().is_empty(),
        "{doc}"
    );

    // Hold the send connector: with the next hop back and a retry asked for, nothing goes.
    let (code, doc) = queue_json(&spool, &["hold", "--connector", "Dead"]);
    assert_eq!(code, 0, "{doc}");
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    let (_, doc) = queue_json(&spool, &["retry", "--all"]);
    assert_eq!(
        doc["deliveries"], 0,
        "held deliveries are not retried: {doc}"
    );
    let metrics = http_get(relay.admin.unwrap(), "/metrics");
    assert!(
        metrics.contains("mailflow_queue_held_deliveries 2\n"),
        "{metrics}"
    );
    let (_, doc) = queue_json(&spool, &["list", "--state", "held"]);
    assert_eq!(ids(&doc).len(), 2);

    // The hold outlives the relay; with it stopped the commands work on the spool itself.
    relay.terminate().await;
    assert!(!spool.join("admin.sock").exists());
    // Looking writes nothing: no new segment, no compaction, the journal byte for byte.
    let journal = |spool: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(spool.join("queue/journal"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = journal(&spool);
    for look in [&["list"][..], &["summary"], &["show", &m[0], "--message"]] {
        assert_eq!(queue(&spool, look).status.code(), Some(0));
    }
    assert!(
        journal(&spool) == before,
        "a stopped spool was written by looking at it"
    );
    let (code, doc) = queue_json(&spool, &["list", "--state", "held"]);
    assert_eq!((code, ids(&doc).len()), (0, 2), "{doc}");
    let (code, doc) = queue_json(&spool, &["hold", &m[3]]);
    assert_eq!(code, 0, "{doc}");
    let (code, _) = queue_json(&spool, &["release", "--connector", "Dead"]);
    assert_eq!(code, 0);
    let out = queue(&spool, &["bounce", &m[0]]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("running relay"), "{}", text(&out));

    let mut relay = start(&spool, dead, sink.addr.port());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(back.messages().is_empty(), "m0 waits its hour, m3 is held");
    let (code, doc) = queue_json(&spool, &["retry", "--domain", "dead.example"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        wait_until(10, || subjects(&back) == ["m0"]).await,
        "{:?}",
        subjects(&back)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(subjects(&back), ["m0"], "m3 is still held");
    let (code, _) = queue_json(&spool, &["release", &m[3]]);
    assert_eq!(code, 0);
    assert!(wait_until(10, || subjects(&back) == ["m0", "m3"]).await);
    assert!(
        wait_until(10, || queue(&spool, &["list"]).status.code() == Some(1)).await,
        "empty"
    );

    // Who did what, in the tracking log.
    let admin = relay.track(&["--event", "ADMIN"]);
    let contexts: Vec<&str> = admin
        .iter()
        .map(|e| e["source-context"].as_str().unwrap())
        .collect();
    for what in [
        "delete by uid",
        "bounce by uid",
        "hold send connector Dead by uid",
        "release message",
    ] {
        assert!(
            contexts.iter().any(|c| c.starts_with(what)),
            "{what}: {contexts:?}"
        );
    }
    let deleted = admin
        .iter()
        .find(|e| e["source-context"].as_str().unwrap().starts_with("delete"))
        .unwrap();
    assert_eq!(deleted["internal-message-id"].as_str(), Some(m[1].as_str()));
    assert_eq!(deleted["message-id"], "<m1@origin.example>");
    let fail = relay.track(&["--event", "FAIL"]);
    assert_eq!(fail.len(), 1, "the bounce's recipient: {fail:?}");
    relay.terminate().await;
}

/// The socket is the relay's user's and group's, and takes nothing but one bounded request.
#[tokio::test(flavor = "multi_thread")]
async fn the_socket_is_private_and_bounded() {
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port());
    let sock = spool.join("admin.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    for request in [b"not json\n".to_vec(), vec![b'x'; 200_000]] {
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let _ = c.write_all(&request);
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        let reply: Value = serde_json::from_str(answer.trim()).unwrap();
        assert_eq!(reply["reply"], "error", "{reply}");
    }
    // Still serving.
    let (code, _) = queue_json(&spool, &["list"]);
    assert_eq!(code, 1, "an empty queue");
    relay.terminate().await;
}

/// A spool path too long for a socket's name (108 bytes) costs the queue commands, not the
/// relay: it starts, takes mail, and `queue` says why it cannot reach it.
#[tokio::test(flavor = "multi_thread")]
async fn a_spool_path_too_long_for_a_socket_still_relays() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("s".repeat(60)).join("p".repeat(60));
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = start(&spool, dead_port(), sink.addr.port());
    assert!(!spool.join("admin.sock").exists());
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<app@origin.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@elsewhere.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send("Subject: long\r\n\r\nx\r\n.\r\n".to_string()).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert!(wait_until(10, || sink.messages().len() == 1).await);
    let out = queue(&spool, &["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("too long for a socket"),
        "{}",
        text(&out)
    );
    relay.terminate().await;
}
