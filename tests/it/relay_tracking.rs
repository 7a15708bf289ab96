//! The tracking log against the ways it could fill the spool's disk, over real TCP against the
//! relay binary: a flood of refused RCPTs from one client (once 287 MB in 10 s), rotation by
//! size with `mailflow track` reading across the files and a cap that deletes the oldest,
//! and a spool so nearly full that the log must stop while mail is still accepted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use support::raw::Raw;
use support::relay::*;
use support::sink::SinkOptions;

/// Refused RCPTs the flood sends: 19 per session (one under the 20-error limit), pipelined.
const PER_SESSION: usize = 19;
const SESSIONS: usize = 5300;
/// Sessions at once (the connector allows 8 per source address).
const CLIENTS: usize = 6;

/// The files of the tracking-log folder: (count, bytes by length, bytes allocated on disk).
fn folder_size(dir: &Path) -> (usize, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut n, mut len, mut blocks) = (0, 0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let m = e.unwrap().metadata().unwrap();
        n += 1;
        len += m.len();
        blocks += m.blocks() * 512;
    }
    (n, len, blocks)
}

/// One session: EHLO, then MAIL and every RCPT and QUIT in one write; the number of `550`s.
async fn refused_session(addr: SocketAddr, session: usize) -> usize {
    let (mut c, greeting) = Raw::connect(addr).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(c.cmd("EHLO flood.test").await.code, 250);
    let mut batch = String::from("MAIL FROM:<spammer@outside.example>\r\n");
    for i in 0..PER_SESSION {
        batch.push_str(&format!("RCPT TO:<user{session}-{i}@victim.invalid>\r\n"));
    }
    batch.push_str("QUIT\r\n");
    c.send(batch).await;
    assert_eq!(c.reply().await.unwrap().code, 250, "MAIL");
    let mut refused = 0;
    for _ in 0..PER_SESSION {
        let r = c.reply().await.unwrap();
        assert_eq!(r.status(), "550 5.7.54", "{r:?}");
        refused += 1;
    }
    assert_eq!(c.reply().await.unwrap().code, 221);
    refused
}

/// A client floods the relay with refused recipients as fast as it can, pipelined (100,700
/// RCPTs). The tracking log writes one event per client and reply with the count instead of
/// a line per RCPT, and its folder stays under the configured cap throughout.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_refused_recipients_is_counted_not_written_line_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cap: u64 = 64 * 1024;
    let (mut relay, _sink, _) = EDGE
        .start(
            tmp.path(),
            |t| t,
            &[
                "--tracking-log-max-file-size",
                "16KB",
                "--tracking-log-max-directory-size",
                "64KB",
            ],
        )
        .await;
    let dir = relay.spool.join("tracking");
    let addr = relay.listener("Internet");
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..CLIENTS {
        workers.spawn(async move {
            let mut refused = 0;
            for s in (w..SESSIONS).step_by(CLIENTS) {
                refused += refused_session(addr, s).await;
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(n) = workers.join_next().await {
        refused += n.unwrap();
        let (_, len, _) = folder_size(&dir);
        assert!(len <= cap, "{len} bytes in the tracking log folder");
    }
    assert_eq!(refused, SESSIONS * PER_SESSION);
    // The counts still being made are written at shutdown.
    relay.terminate().await;
    let (files, len, on_disk) = folder_size(&dir);
    assert!(len <= cap, "{len} bytes in {files} files");
    assert!(
        on_disk <= cap + 4096 * files as u64,
        "{on_disk} bytes allocated"
    );
    let fails: Vec<Value> = relay
        .track(&["--event", "FAIL"])
        .into_iter()
        .filter(|e| e["client-ip"] == "127.0.0.1")
        .collect();
    let counted: u64 = fails
        .iter()
        .map(|e| e["recipient-count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, refused as u64, "{fails:?}");
    // One event a minute per client and reply: a handful, not one per RCPT.
    assert!(fails.len() * 1000 < refused, "{} FAIL events", fails.len());
    let first = &fails[0];
    assert_eq!(
        first["recipient-status"][0],
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
    );
    assert_eq!(first["sender-address"], "spammer@outside.example");
    assert_eq!(first["connector-id"], "Internet");
    assert_eq!(first["recipient-address"].as_array().unwrap().len(), 10);
    // A named recipient finds its event.
    let named = first["recipient-address"][0].as_str().unwrap().to_string();
    assert_eq!(relay.track(&["--recipient", &named]).len(), 1);
    println!(
        "{refused} refused RCPTs: {} FAIL events, {files} files, {len} bytes ({on_disk} allocated)",
        fails.len()
    );
}

/// Accepted mail through `messages` sessions, each with its own Message-ID; every `250`.
async fn send_messages(relay: &Relay, from: &str, n: usize, tag: &str) {
    for i in 0..n {
        let (mut c, _) = Raw::connect(relay.listener("Internet")).await;
        assert_eq!(c.cmd("EHLO client.test").await.code, 250);
        assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
        assert_eq!(c.cmd("RCPT TO:<alice@example.com>").await.code, 250);
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!(
            "Message-ID: <{tag}-{i}@outside.example>\r\nSubject: {tag} {i}\r\n\r\nhello\r\n.\r\n"
        ))
        .await;
        let r = c.reply().await.unwrap();
        assert_eq!(r.status(), "250 2.6.0", "{tag} {i}: {r:?}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
}

/// Files of 4 KB: sixty messages' events fill several, and `mailflow track` finds the
/// events of the first and the last message and all sixty in the order they came. A restart
/// with a smaller cap deletes the oldest files at once: the first messages are gone from the
/// log, the last are still found, and the folder is under the new cap.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_by_size_is_read_across_and_the_cap_deletes_the_oldest() {
    let tmp = tempfile::tempdir().unwrap();
    let small = ["--tracking-log-max-file-size", "4KB"];
    let (mut relay, sink, _) = EDGE.start(tmp.path(), |t| t, &small).await;
    let n = 60;
    send_messages(&relay, "rotation@outside.example", n, "rot").await;
    assert!(wait_until(30, || sink.messages().len() == n).await);
    assert!(wait_until(10, || relay.track(&["--event", "SEND"]).len() == n).await);
    let dir = relay.spool.join("tracking");
    let rotated = mailflow::relay::track::rotated_files(&dir).unwrap();
    assert!(rotated.len() >= 5, "{rotated:?}");
    for f in &rotated {
        assert!(std::fs::metadata(f).unwrap().len() <= 4096, "{f:?}");
    }
    let received: Vec<String> = relay
        .track(&["--sender", "rotation@outside.example", "--event", "RECEIVE"])
        .iter()
        .map(|e| e["message-id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..n)
        .map(|i| format!("<rot-{i}@outside.example>"))
        .collect();
    assert_eq!(received, want);
    for id in ["rot-0@outside.example", "rot-59@outside.example"] {
        let ids: Vec<Value> = relay
            .track(&["--message-id", id])
            .iter()
            .map(|e| e["event-id"].clone())
            .collect();
        assert!(
            ids.contains(&"RECEIVE".into()) && ids.contains(&"SEND".into()),
            "{id}: {ids:?}"
        );
    }
    // One file of the folder is searched alone with --log.
    let oldest = std::process::Command::new(BIN)
        .args([
            "track",
            "--json",
            "--message-id",
            "rot-0@outside.example",
            "--log",
        ])
        .arg(&rotated[0])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&oldest.stdout).contains("RECEIVE"));

    relay.terminate().await;
    drop(relay);
    let cap = 12 * 1024u64;
    let rules = tmp.path().join("edge.mailflow");
    let spool = tmp.path().join("spool");
    let mut args = vec![
        s("--ca-file"),
        tmp.path().join("ca.pem").display().to_string(),
        s("--listen"),
        s("Internet=127.0.0.1:0"),
        s("--listen"),
        s("Slow=127.0.0.1:0"),
        s("--listen"),
        s("Tenant=127.0.0.1:0"),
        s("--smart-host"),
        format!("Out={}", sink.addr),
        s("--tracking-log-max-directory-size"),
        s("12KB"),
    ];
    args.extend(small.iter().map(|a| s(a)));
    let mut relay = Relay::start(&rules, &spool, &args);
    let (files, len, _) = folder_size(&dir);
    assert!(len <= cap, "{len} bytes in {files} files");
    assert!(
        relay
            .track(&["--message-id", "rot-0@outside.example"])
            .is_empty()
    );
    assert!(
        !relay
            .track(&["--message-id", "rot-59@outside.example"])
            .is_empty()
    );
    relay.terminate().await;
}

/// The free space of the file system `path` is on.
fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).unwrap();
    st.f_bavail * st.f_frsize
}

/// A spool so nearly full that it still takes a message of the largest size (its floor, 1.5x
/// that size, plus the size are free) but has not the log's reserve above that (one more
/// largest message): the connector's size limit is set to a third of the free space, so MAIL
/// needs 5/6 of it and the log stops below 7/6. Mail is still accepted with `250` and
/// delivered; the tracking log writes nothing, counts what it dropped in /metrics and says
/// so once in the relay's log.
#[tokio::test(flavor = "multi_thread")]
async fn a_nearly_full_spool_stops_the_log_and_still_takes_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let limit = free_bytes(tmp.path()) / 3;
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap().to_string();
    drop(admin);
    let log = tmp.path().join("relay.log");
    let (mut relay, sink, _) = EDGE
        .start_logged(
            tmp.path(),
            |t| t.replace("max-hop-count 30", &format!("max-message-size {limit}")),
            &["--admin", &admin_addr],
            SinkOptions::default(),
            Some(&log),
        )
        .await;
    send_messages(&relay, "full@outside.example", 5, "full").await;
    assert!(wait_until(30, || sink.messages().len() == 5).await);
    let dropped = || -> u64 {
        let m = http_get(relay.admin.unwrap(), "/metrics");
        m.lines()
            .find_map(|l| l.strip_prefix("mailflow_tracking_events_dropped_total "))
            .unwrap()
            .parse()
            .unwrap()
    };
    // RECEIVE, AGENTINFO (the edge rule marks outside senders) and SEND for each message.
    assert!(wait_until(10, || dropped() >= 15).await, "{}", dropped());
    relay.terminate().await;
    let (_, len, _) = folder_size(&relay.spool.join("tracking"));
    assert_eq!(
        len, 0,
        "the log wrote while the spool was within its reserve"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let stops = text
        .lines()
        .filter(|l| l.contains("tracking log") && l.contains("stopped writing"))
        .count();
    assert_eq!(stops, 1, "{text}");
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(tcp, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    out
}
