//! `queue show --message` and `queue export` as the relay streams them a piece at a time:
//! met by a delete while a slow client reads, by clients that leave halfway, by slow readers
//! of a large message, and by a body damaged on disk.

use super::*;
use base64::Engine;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// One message of `lines` lines of 8-bit text (under 998 octets each) to big@dead.example
/// (its next hop is down, so it stays queued), marked with `marker`; its queue id.
async fn stuck_big(relay: &Relay, spool: &Path, marker: &str, lines: usize) -> String {
    big_to(relay, spool, marker, lines, "big@dead.example").await
}

/// One message of `lines` lines of 8-bit text to `to`, marked with `marker`; its queue id.
async fn big_to(relay: &Relay, spool: &Path, marker: &str, lines: usize, to: &str) -> String {
    let line = format!("{marker} {}\r\n", "\u{e9}x".repeat(300));
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(
        c.cmd("MAIL FROM:<app@origin.example> BODY=8BITMIME")
            .await
            .code,
        250
    );
    assert_eq!(c.cmd(&format!("RCPT TO:<{to}>")).await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!(
        "Subject: {marker}\r\nMessage-ID: <{marker}@origin.example>\r\n\r\n{}.\r\n",
        line.repeat(lines)
    ))
    .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let (_, doc) = qj(spool, &["list"]);
    doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"].as_str() == Some(&format!("<{marker}@origin.example>")))
        .map(|m| m["id"].as_str().unwrap().to_string())
        .unwrap()
}

/// A relay of these tests (next hops down) logging to `log`, holding one message of `lines`
/// lines of about 900 octets marked `marker`: the relay, the message's id and its stored
/// octets.
async fn holding_big(
    spool: &Path,
    log: &Path,
    marker: &str,
    lines: usize,
) -> (Relay, String, Vec<u8>) {
    let relay = start(spool, dead_port(), dead_port(), Some(log), &[]);
    let id = stuck_big(&relay, spool, marker, lines).await;
    let stored = exported(spool, &id);
    assert!(stored.len() > lines * 900, "{}", stored.len());
    (relay, id, stored)
}

/// After what a test did the relay still takes mail, and it stops without a panic in its
/// log.
async fn serves_to_the_end(mut relay: Relay, log: &Path, subject: &str) {
    assert!(smtp_serves(relay.addr, subject, 10).await, "{subject}");
    relay.terminate().await;
    no_panics(log);
}

/// `queue export ID`: the stored octets.
fn exported(spool: &Path, id: &str) -> Vec<u8> {
    let out = queue(spool, &["export", id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    out.stdout
}

/// A raw `show --message` request on the socket: the relay writes as fast as this client
/// reads, past what the socket's buffers hold. A relay serving as many clients as it takes
/// answers "busy" and closes, maybe before the request is written: that is the answer.
fn ask_message(sock: &Path, id: &str) -> UnixStream {
    let c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = (&c).write_all(
        format!("{{\"action\":\"show\",\"id\":\"{id}\",\"message\":true}}\n").as_bytes(),
    );
    c
}

/// As [`ask_message`], asking again while the relay says it is serving as many clients as
/// it takes (as `mailflow queue` does, for up to 30 seconds: clients that left are noticed
/// at the relay's next write, a moment later); the connection and its first `head` octets.
fn ask_message_in_turn(sock: &Path, id: &str, head: usize) -> (UnixStream, Vec<u8>) {
    let t0 = std::time::Instant::now();
    loop {
        let mut c = ask_message(sock, id);
        let head = read_some(&mut c, head);
        // Told so, or closed before the line reached this client.
        let busy = head.is_empty()
            || head.starts_with(b"{\"reply\":\"error\"")
                && String::from_utf8_lossy(&head).contains("try again");
        if !busy || t0.elapsed() > Duration::from_secs(30) {
            return (c, head);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads the rest of an answer into `got`, `chunk` octets at a time, `pause` apart.
fn read_rest(c: &mut UnixStream, got: &mut Vec<u8>, chunk: usize, pause: Duration) {
    loop {
        let more = read_some(c, chunk);
        if more.is_empty() {
            return;
        }
        got.extend(more);
        std::thread::sleep(pause);
    }
}

/// Reads `n` octets (fewer at the end of the answer).
fn read_some(c: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    let mut at = 0;
    while at < n {
        match c.read(&mut got[at..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => at += k,
        }
    }
    got.truncate(at);
    got
}

/// The message an answer line carries; panics on anything but a whole `message` reply.
fn carried(line: &[u8]) -> Vec<u8> {
    let v: Value =
        serde_json::from_slice(line).unwrap_or_else(|e| panic!("{e}: {} octets", line.len()));
    assert_eq!(
        v["reply"],
        "message",
        "{}",
        String::from_utf8_lossy(&line[..200.min(line.len())])
    );
    base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().unwrap())
        .unwrap()
}

/// A message deleted while a slow client is still reading it: the client gets the exact
/// stored octets (the open segment still holds them) or an unfinished line, never a mix;
/// the delete is done at once, not after the reader; the relay does not panic and the slot
/// is given back.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_deleted_while_a_slow_client_reads_it() {
    let (_tmp, spool, log, sock) = place();
    let (relay, id, stored) = holding_big(&spool, &log, "deleted-while-read", 3000).await;
    let pid = relay.child.id();
    let fds = open_fds(pid);

    let mut readers: Vec<UnixStream> = (0..3).map(|_| ask_message(&sock, &id)).collect();
    let mut heads: Vec<Vec<u8>> = readers.iter_mut().map(|r| read_some(r, 50_000)).collect();
    let t0 = std::time::Instant::now();
    let (code, reply) = qj(&spool, &["delete", &id]);
    assert_eq!(code, 0, "{reply}");
    assert_eq!(strings(&reply["done"]), BTreeSet::from([id.clone()]));
    // Not after the readers, which have stopped reading: their answers wait a minute.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    let (code, _) = qj(&spool, &["list"]);
    assert_eq!(code, 1, "the queue is empty");
    // A new request for it is told it is gone.
    let out = queue(&spool, &["export", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    for (r, head) in readers.iter_mut().zip(&mut heads) {
        read_rest(r, head, 65_536, Duration::from_millis(2));
        assert_eq!(head.last(), Some(&b'\n'));
        assert!(carried(head) == stored, "a mix of octets");
    }
    drop(readers);
    assert!(
        wait_until(10, || open_fds(pid) <= fds).await,
        "{} descriptors, {fds} before",
        open_fds(pid)
    );
    serves_to_the_end(relay, &log, "after-delete-while-read").await;
}

/// Clients that ask for a large message and leave after a few octets give their slots
/// back within a moment, not the minute an answer may wait: eight of them leave, again and
/// again, and then eight at once read their whole answers (asking again within 30 seconds
/// when told the relay is busy, as `mailflow queue` does), each the stored message; while
/// eight read a 10 MB message slowly the relay's memory grows by far less than their
/// answers'.
#[tokio::test(flavor = "multi_thread")]
async fn clients_that_leave_halfway_give_their_slots_back() {
    let (_tmp, spool, log, sock) = place();
    let (relay, id, stored) = holding_big(&spool, &log, "left-halfway", 10_000).await;
    let pid = relay.child.id();

    for round in 0..4 {
        let mut gone = Vec::new();
        for _ in 0..8 {
            let (g, head) = ask_message_in_turn(&sock, &id, 1000 + round * 100_000);
            gone.push(g);
            assert!(
                head.starts_with(b"{\"reply\":\"message\""),
                "round {round}: {}",
                String::from_utf8_lossy(&head[..head.len().min(200)])
            );
        }
        drop(gone);
        // The relay sees each leave at its next write: a moment, not the minute a
        // client that stays and stops reading costs.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = status_kib(pid, "VmRSS:");
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(
                    status_kib(pid, "VmRSS:"),
                    std::sync::atomic::Ordering::Relaxed,
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let sock = sock.clone();
            let id = id.clone();
            std::thread::spawn(move || {
                let (mut c, mut all) = ask_message_in_turn(&sock, &id, 256 * 1024);
                read_rest(&mut c, &mut all, 256 * 1024, Duration::from_millis(10));
                all
            })
        })
        .collect();
    for r in readers {
        let line = r.join().unwrap();
        assert!(
            carried(&line) == stored,
            "an answer differs from the stored message"
        );
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    // Eight answers of 13 MB each held whole would be over 100 MB.
    assert!(
        peak < before + 32 * 1024,
        "8 slow readers of a 10 MB message: RSS {before} -> {peak} KiB"
    );
    serves_to_the_end(relay, &log, "after-readers").await;
}

/// A body damaged in its segment while the relay runs: `show --message` and `export`
/// answer an error naming the checksum and write no file; the relay goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_damaged_on_disk_is_refused_naming_the_checksum() {
    use std::os::unix::fs::FileExt;
    let (_tmp, spool, log, _) = place();
    let (relay, id, stored) = holding_big(&spool, &log, "damaged-at-rest", 400).await;
    let marker = b"damaged-at-rest \xc3\xa9x";
    let mut flipped = 0;
    for e in std::fs::read_dir(spool.join("queue/journal")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        // Well inside the body: the 200th line's marker.
        if let Some(at) = bytes
            .windows(marker.len())
            .enumerate()
            .filter(|(_, w)| w == marker)
            .nth(200)
            .map(|(i, _)| i)
        {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&[bytes[at] ^ 0x20], at as u64).unwrap();
            f.sync_all().unwrap();
            flipped += 1;
        }
    }
    assert_eq!(flipped, 1, "the body is in one segment");

    let out = queue(&spool, &["show", &id, "--message"]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("checksum"), "{}", text(&out));
    assert!(!out.stdout.windows(marker.len()).any(|w| w == marker));
    let eml = spool.with_file_name("damaged.eml");
    let out = queue(&spool, &["export", &id, "-o", eml.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("checksum"), "{}", text(&out));
    assert!(!eml.exists(), "a damaged export was written");
    assert_ne!(stored.len(), 0);
    // The relay goes on: the envelope is shown, SMTP serves.
    let (code, doc) = qj(&spool, &["show", &id]);
    assert_eq!(code, 0, "{doc}");
    serves_to_the_end(relay, &log, "after-damage").await;
}

/// A message delivered while slow clients read it: each still gets the exact stored
/// octets; then the relay stops (SIGTERM) while another client is halfway through: the
/// relay exits cleanly without a panic and that client is left an unfinished line, which
/// no JSON reader takes for an answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_delivered_or_a_relay_stopped_while_clients_read() {
    let (_tmp, spool, log, sock) = place();
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = start(&spool, dead_port(), sink.addr.port(), Some(&log), &[]);
    let (code, _) = qj(&spool, &["hold", "--connector", "Out"]);
    assert_eq!(code, 0);
    let id = big_to(
        &relay,
        &spool,
        "delivered-while-read",
        3000,
        "user@out.example",
    )
    .await;
    let stored = exported(&spool, &id);
    let mut readers: Vec<UnixStream> = (0..2).map(|_| ask_message(&sock, &id)).collect();
    let mut heads: Vec<Vec<u8>> = readers.iter_mut().map(|r| read_some(r, 30_000)).collect();
    let (code, _) = qj(&spool, &["release", "--connector", "Out"]);
    assert_eq!(code, 0);
    assert!(
        wait_until(30, || queue(&spool, &["list"]).status.code() == Some(1)).await,
        "not delivered: {}",
        text(&queue(&spool, &["list"]))
    );
    assert_eq!(sink.messages().len(), 1);
    for (r, head) in readers.iter_mut().zip(&mut heads) {
        read_rest(r, head, 65_536, Duration::ZERO);
        assert!(carried(head) == stored, "a mix of octets");
    }
    drop(readers);

    let id = stuck_big(&relay, &spool, "stopped-while-read", 3000).await;
    let mut reader = ask_message(&sock, &id);
    let mut line = read_some(&mut reader, 30_000);
    assert_eq!(line.len(), 30_000);
    relay.terminate().await;
    loop {
        let more = read_some(&mut reader, 65_536);
        if more.is_empty() {
            break;
        }
        line.extend(more);
    }
    // What the socket's buffers held may follow, but not the end of the line.
    assert!(
        serde_json::from_slice::<Value>(&line).is_err(),
        "an answer cut by the stop parses ({} octets)",
        line.len()
    );
    no_panics(&log);
}
