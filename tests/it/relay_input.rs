//! The relay's rule files are input too: a file that is not a regular file (a FIFO swapped in
//! for an included file) makes a reload answer with an error instead of blocking, the relay
//! keeps serving with its old rules, and SIGTERM still stops it (SECURITY.md §7).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::relay::*;
use support::sink::{Sink, SinkOptions};

fn mkfifo(path: &std::path::Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_swapped_in_for_an_include_fails_the_reload_and_sigterm_still_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let dir = tmp.path().join("rules");
    std::fs::create_dir(&dir).unwrap();
    let rules = dir.join("main.mailflow");
    let part = dir.join("part.mailflow");
    std::fs::write(&part, "accepted-domain part.example\n").unwrap();
    let text = std::fs::read_to_string(root().join("tests/fixtures/relay/forward.mailflow"))
        .unwrap()
        + "include \"part.mailflow\"\n";
    std::fs::write(&rules, text).unwrap();
    let args = vec![
        s("--listen"),
        s("Loopback=127.0.0.1:0"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{}", sink.addr.port()),
        s("--smart-host"),
        format!("Dead=127.0.0.1:{}", dead_port()),
        s("--admin"),
        s("127.0.0.1:0"),
    ];
    let mut relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    let admin = relay.admin.unwrap();

    std::fs::remove_file(&part).unwrap();
    mkfifo(&part);
    // The admin /reload answers, with the error (`timeout` is a watchdog: a hang fails).
    let out = Command::new("timeout")
        .args(["60", BIN, "reload", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("E002"), "{stdout}");
    assert!(
        stdout.contains("named pipe (FIFO), not a regular file"),
        "{stdout}"
    );
    // SIGHUP too: counted as failed, and the admin port still answers.
    let status = Command::new(BIN)
        .args(["reload", "--spool"])
        .arg(&relay.spool)
        .status()
        .unwrap();
    assert!(status.success());
    let t0 = Instant::now();
    while !http_get(admin, "/metrics").contains("mailflow_reloads_failed_total 2") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "SIGHUP reload never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old rules still relay.
    let sent = client(with_port(
        &relay,
        &["--from", "app@origin.example", "--to", "user@example.net"],
    ))
    .await;
    assert_eq!(sent["messages"][0]["data"][0], 250, "{sent}");

    // SIGTERM completes.
    relay.terminate().await;

    // Given a FIFO as its rule file, the relay refuses to start.
    let fifo = tmp.path().join("fifo.mailflow");
    mkfifo(&fifo);
    let out = Command::new("timeout")
        .args(["60", BIN, "relay"])
        .arg(&fifo)
        .arg("--spool")
        .arg(tmp.path().join("spool2"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

/// What a rule file accepts in `remote` and `smart-host`, the command line accepts too: v4
/// and v6 addresses, blocks and ranges, `[v6]:port`, names with and without a port.
#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_accepts_what_the_rule_file_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let remote = "127.0.0.0/8,::1,192.0.2.10-192.0.2.20,2001:db8::/32,2001:db8:1::5-2001:db8:1::9";
    let dead = "dead-host.invalid,dead-host.invalid:2525,[2001:db8::25]:2525,192.0.2.25";
    let rules = tmp.path().join("accepted.mailflow");
    std::fs::write(
        &rules,
        format!(
            "receive-connector \"Loopback\" {{\n  listen 127.0.0.1:2625\n  remote {remote}\n}}\n\
             send-connector \"Dead\" {{\n  address-space dead.example\n  smart-host {dead}\n}}\n"
        )
        .replace(",", ", "),
    )
    .unwrap();
    let check = Command::new(BIN).arg("check").arg(&rules).output().unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let args = vec![
        s("--listen"),
        s("Loopback=127.0.0.1:0"),
        s("--remote"),
        format!("Loopback={remote}"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{}", sink.addr.port()),
        s("--smart-host"),
        format!("Dead={dead}"),
    ];
    let fixture = root().join("tests/fixtures/relay/forward.mailflow");
    let mut relay = Relay::start(&fixture, &tmp.path().join("spool"), &args);
    let sent = client(with_port(
        &relay,
        &["--from", "app@origin.example", "--to", "user@example.net"],
    ))
    .await;
    assert_eq!(sent["messages"][0]["data"][0], 250, "{sent}");
    relay.terminate().await;
}
