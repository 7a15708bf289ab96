//! What a mailflow does with a spool another version wrote. Upgrade: a spool of the current
//! format written by a real relay run (`tests/fixtures/spool-v1/`, with messages pending
//! behind a next hop that refused) is recovered and delivered; every future format change
//! must keep this passing, or read the old format. Downgrade: a segment of a newer format
//! makes the relay refuse to start, naming it, and leaves every file as it was (it used to
//! be quarantined as damage and its messages lost).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::relay::*;
use support::sink::{Sink, SinkOptions};

/// A copy of the fixture's spool, its folders closed to others as the relay requires.
fn copy_fixture(tmp: &Path) -> PathBuf {
    let spool = tmp.join("spool");
    let journal = spool.join("queue/journal");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&journal)
        .unwrap();
    let fixture = root().join("tests/fixtures/spool-v1/queue/journal");
    for e in std::fs::read_dir(&fixture).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), journal.join(e.file_name())).unwrap();
    }
    spool
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spool_of_the_current_format_from_an_earlier_run_is_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = copy_fixture(tmp.path());
    let sink = Sink::start(SinkOptions {
        dsn: true,
        ..SinkOptions::default()
    })
    .await;
    let relay = Relay::start(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &spool,
        &[
            s("--listen"),
            s("Loopback=127.0.0.1:0"),
            s("--smart-host"),
            format!("Out={}", sink.addr),
            // The fixture ages: its messages must not expire or draw delay notices.
            s("--lifetime"),
            s("3650d"),
            s("--delay-warning"),
            s("0s"),
            s("--admin"),
            s("127.0.0.1:0"),
        ],
    );
    let rcpts = |sink: &Sink| {
        let mut r: Vec<String> = sink
            .messages()
            .iter()
            .flat_map(|m| m.rcpts.clone())
            .collect();
        r.sort();
        r
    };
    assert!(
        wait_until(30, || rcpts(&sink).len() >= 4).await,
        "{:?}",
        rcpts(&sink)
    );
    assert_eq!(
        rcpts(&sink),
        [
            "four@upgrade.example",
            "one@upgrade.example",
            "three@upgrade.example",
            "two@upgrade.example"
        ]
    );
    let messages = sink.messages();
    let by_subject = |subject: &str| {
        messages
            .iter()
            .find(|m| data_text(m).contains(&format!("Subject: {subject}\r\n")))
            .unwrap_or_else(|| panic!("no `{subject}` in {messages:?}"))
    };
    let one = by_subject("spool-v1 one");
    assert_eq!(one.mail_from, "app@origin.example");
    assert!(data_text(one).contains("X-Relay-Test: tagged\r\n"));
    assert!(
        data_text(one).ends_with("\r\nfirst message\r\n"),
        "{}",
        data_text(one)
    );
    let two = by_subject("spool-v1 two");
    assert_eq!(two.rcpts.len(), 2, "one transaction for both recipients");
    assert!(
        two.mail_params.iter().any(|p| p == "ENVID=fixture-2"),
        "{:?}",
        two.mail_params
    );
    assert!(
        two.mail_params.iter().any(|p| p == "RET=HDRS"),
        "{:?}",
        two.mail_params
    );
    let three = by_subject("spool-v1 three");
    assert_eq!(three.mail_from, "", "the null sender stays null");
    assert!(
        wait_until(10, || {
            let m = http_get(relay.admin.unwrap(), "/metrics");
            m.lines().any(|l| l == "mailflow_queue_size 0")
        })
        .await
    );
    let corrupt = spool.join("queue/corrupt");
    assert_eq!(
        std::fs::read_dir(corrupt).unwrap().count(),
        0,
        "nothing taken for damage"
    );
}

/// Runs the relay on `spool` expecting a refusal; returns its stderr.
fn refused(spool: &Path) -> String {
    // A relay that wrongly starts is stopped by `timeout` (exit 124), not waited for.
    let out = Command::new("timeout")
        .args(["30", BIN, "relay"])
        .arg(root().join("tests/fixtures/relay/forward.mailflow"))
        .arg("--spool")
        .arg(spool)
        .args([
            "--hostname",
            "relay.test",
            "--listen",
            "Loopback=127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no ready line");
    stderr
}

#[test]
fn a_spool_written_by_a_newer_format_is_refused_and_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = copy_fixture(tmp.path());
    let journal = spool.join("queue/journal");
    // A newer mailflow wrote a second segment, of format 2, after the first one.
    let mut newer = std::fs::read(journal.join("00000001.seg")).unwrap();
    newer[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(journal.join("00000002.seg"), &newer).unwrap();
    let before = snapshot(&journal);

    let stderr = refused(&spool);
    let seg = journal.join("00000002.seg");
    assert!(
        stderr.contains(&format!(
            "error: spool: {}: written by a newer mailflow, format 2; this one reads up to 1",
            seg.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("help: run the newer mailflow on this spool"),
        "{stderr}"
    );
    assert!(!stderr.contains("corrupt"), "{stderr}");
    assert_eq!(snapshot(&journal), before, "the journal is untouched");
    let corrupt = spool.join("queue/corrupt");
    assert!(!corrupt.exists() || std::fs::read_dir(corrupt).unwrap().count() == 0);

    // Alone, too: the only segment is newer.
    std::fs::remove_file(journal.join("00000001.seg")).unwrap();
    let before = snapshot(&journal);
    let stderr = refused(&spool);
    assert!(
        stderr.contains("format 2; this one reads up to 1"),
        "{stderr}"
    );
    assert_eq!(snapshot(&journal), before);
}
