//! The admin socket under stalled, flooding, hostile and foreign clients: bounded
//! descriptors and memory, an answer for every request, SMTP served throughout.

use super::*;

/// While stalled clients fill the socket's slots a command waits its turn: it is served
/// once the relay gives up on a client that sends nothing (10 s).
async fn served_in_turn(spool: &Path, args: &[&str]) {
    let t0 = std::time::Instant::now();
    let out = tokio::task::spawn_blocking({
        let (spool, args) = (
            spool.to_path_buf(),
            args.iter().map(|a| s(a)).collect::<Vec<_>>(),
        );
        move || queue(&spool, &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
}

/// While they take their answers' minute, one more client is told at once to try again.
fn told_busy(sock: &Path) {
    use std::io::{Read, Write};
    let t0 = std::time::Instant::now();
    let mut c = std::os::unix::net::UnixStream::connect(sock).unwrap();
    let _ = c.write_all(b"{\"action\":\"list\"}\n");
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let reply: Value = serde_json::from_str(answer.trim()).unwrap();
    assert_eq!(reply["reply"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("try again"),
        "{reply}"
    );
}

/// Once they are gone, it is served.
async fn served(spool: &Path, args: &[&str]) {
    assert!(
        wait_until(15, || queue(spool, args).status.code() == Some(0)).await,
        "{}",
        text(&queue(spool, args))
    );
}

/// Clients of the socket that connect and never send, or never read a large answer, cost
/// the relay a bounded number of file descriptors and bounded memory: under a file limit
/// an idle flood would otherwise starve SMTP of descriptors, and unread `show --message`
/// answers of a 30 MB message would pile up (they did: 8 answers held whole took ~400 MB,
/// and more when they were encoded at once). Meanwhile SMTP and the socket keep serving,
/// and the message exported afterwards is the one stored.
#[tokio::test(flavor = "multi_thread")]
async fn the_socket_flooded_costs_bounded_descriptors_and_memory() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let (_tmp, spool, log, sock) = place();
    let mut relay = start(&spool, dead_port(), dead_port(), Some(&log), &[]);
    let pid = relay.child.id();

    // A file limit as tight as a service's: 150 descriptors above what the relay uses.
    let limit = limit_fds(pid, 150);
    let idle: Vec<UnixStream> = (0..400)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        smtp_serves(relay.addr, "during-idle-flood", 5).await,
        "SMTP starved by {} idle socket clients ({} descriptors open, limit {limit})",
        idle.len(),
        open_fds(pid)
    );
    served_in_turn(&spool, &["list"]).await;
    drop(idle);
    assert!(open_fds(pid) < limit - 100, "{} descriptors", open_fds(pid));

    // A 30 MB message, asked for in full by clients that never read the answer.
    let big = "x".repeat(998) + "\r\n";
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<app@origin.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<big@dead.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!(
        "Subject: big\r\nMessage-ID: <big@origin.example>\r\n\r\n{}.\r\n",
        big.repeat(30_000)
    ))
    .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let (_, doc) = qj(&spool, &["list", "--recipient", "big@"]);
    let id = ids(&doc)[0].clone();
    let before = status_kib(pid, "VmRSS:");
    let request = format!("{{\"action\":\"show\",\"id\":\"{id}\",\"message\":true}}\n");
    let mut unread = Vec::new();
    for _ in 0..24 {
        let mut u = UnixStream::connect(&sock).unwrap();
        // Past the 8 served, the relay says "busy" and closes, maybe before this is written.
        let _ = u.write_all(request.as_bytes());
        unread.push(u);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let rss = status_kib(pid, "VmRSS:");
    assert!(
        smtp_serves(relay.addr, "during-unread-flood", 10).await,
        "SMTP under unread answers"
    );
    // Each answer is read from the spool a piece at a time as its client takes it.
    assert!(
        rss < before + 64 * 1024,
        "24 unread 40 MB answers: RSS {before} -> {rss} KiB"
    );
    told_busy(&sock);
    drop(unread);
    served(&spool, &["show", &id]).await;
    let eml = spool.with_file_name("big.eml");
    let out = queue(&spool, &["export", &id, "-o", eml.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stored = std::fs::read(&eml).unwrap();
    let body = stored
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| &stored[p + 4..]);
    assert!(
        body == Some(big.repeat(30_000).as_bytes()),
        "the exported message's body differs ({} octets exported)",
        stored.len()
    );
    relay.terminate().await;
    no_panics(&log);
}

/// One raw request on the socket (written from another thread, as the relay may stop
/// reading it) and the reply it gets.
fn raw_request(sock: &Path, request: Vec<u8>) -> Value {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&request);
    });
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    drop(c);
    let _ = writer.join();
    serde_json::from_str(answer.trim()).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

/// Hostile requests on the socket (10 MB long, not UTF-8, ids that are paths, many
/// clients at once) get an answer each and change nothing; SMTP and the socket go on.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_requests_get_an_answer_and_change_nothing() {
    let (_tmp, spool, log, sock) = place();
    let mut relay = start(&spool, dead_port(), dead_port(), Some(&log), &[]);
    let pid = relay.child.id();
    let m = stuck(&relay, &spool, "hostile-", 2).await;
    let rss = status_kib(pid, "VmRSS:");

    let mut long = b"{\"action\":\"list\",\"filter\":{\"sender\":\"".to_vec();
    long.resize(10 << 20, b'a');
    long.extend_from_slice(b"\"}}\n");
    for request in [
        long,
        b"{\"action\":\"list\xff\xfe\"}\n".to_vec(),
        b"\xc3\x28\n".to_vec(),
        b"{\"action\":\"show\",\"id\":\"../../../etc/passwd\",\"message\":true}\n".to_vec(),
        b"{\"action\":\"hold\",\"targets\":[{\"kind\":\"message\",\"name\":\"../holds\"}]}\n"
            .to_vec(),
        b"{\"action\":\"delete\",\"select\":{\"ids\":[\"../../queue\"]}}\n".to_vec(),
        b"{\"action\":\"release\",\"targets\":[],\"all\":\"yes\"}\n".to_vec(),
        b"{\"action\":\"list\",\"limit\":-1}\n".to_vec(),
    ] {
        let reply = raw_request(&sock, request);
        assert!(
            matches!(reply["reply"].as_str(), Some("error" | "missing" | "done")),
            "{reply}"
        );
        assert!(
            reply["done"].as_array().is_none_or(|d| d.is_empty()),
            "{reply}"
        );
    }
    assert!(
        status_kib(pid, "VmRSS:") < rss + 64 * 1024,
        "a 10 MB request is not read whole"
    );

    // Forty commands at once: each answered, none refused outright.
    let runs: Vec<_> = (0..40)
        .map(|_| {
            let spool = spool.clone();
            std::thread::spawn(move || queue(&spool, &["list", "--format", "json"]))
        })
        .collect();
    for r in runs {
        let out = r.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    }
    assert!(smtp_serves(relay.addr, "after-hostile", 10).await);
    let (_, doc) = qj(&spool, &["list", "--sender", "app@"]);
    assert_eq!(ids(&doc).len(), 3, "nothing deleted: {doc}");
    assert!(ids(&doc).starts_with(&m));
    assert_eq!(held(&spool), 0);
    assert_eq!(metric(&relay, "mailflow_queue_size"), 3);
    relay.terminate().await;
    no_panics(&log);
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Out of file descriptors, a client waiting on the admin port (where `/metrics` is
/// scraped) costs the relay no CPU: the accept that fails is retried after a pause, not
/// at once, forever.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_the_admin_port_does_not_spin() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    let pid = relay.child.id();
    let _ = limit_fds(pid, 10);
    let mut smtp = Vec::new();
    for _ in 0..20 {
        smtp.push(std::net::TcpStream::connect(relay.addr).unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _scrape = std::net::TcpStream::connect(relay.admin.unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - t0;
    // 100 ticks a second: a spinning loop takes a core, about 200 in two seconds.
    assert!(
        used < 60,
        "{used} ticks in 2 s with the descriptors used up"
    );
    drop(smtp);
    relay.kill9();
}

/// A user outside the relay's user and group cannot reach its socket, and is not sent to
/// the spool instead: refused (exit 2), nothing changed.
#[tokio::test(flavor = "multi_thread")]
async fn another_user_cannot_steer_a_running_relay() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    let m = stuck(&relay, &spool, "theirs-", 2).await;
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [vec!["list"], vec!["delete", "--all"], vec!["hold", &m[0]]] {
        let out = queue_as("nobody", &spool, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("ermission denied"), "{}", text(&out));
    }
    let (_, doc) = qj(&spool, &["list"]);
    assert_eq!(ids(&doc), m);
    assert_eq!(held(&spool), 0);
    assert!(!spool.join("holds.json").exists());
    relay.terminate().await;
}
