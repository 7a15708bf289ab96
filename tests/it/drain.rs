//! `mailflow queue drain`: a relay whose next hop refuses (4xx) queues messages and is
//! stopped; its queue is handed to a peer over SMTP. The peer must get every message once,
//! with the stored sender, ENVID/RET, SMTPUTF8 and BODY as stored, one RCPT per pending
//! recipient with NOTIFY and ORCPT (the client's, else `rfc822;` and the address it gave),
//! the final (rewritten) address as the RCPT, and the stored bytes. Afterwards the spool is
//! empty and the tracking log says where each went; a recipient the peer refuses stays
//! queued (exit 1, no bounce) for a later drain; a running relay's spool is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use mailflow::queue::{RecipientState, Spool, SpoolOptions};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::raw::Raw;
use support::relay::*;
use support::sink::{Received, Sink, SinkOptions};

/// dsn.mailflow with a rewrite, so one recipient's final address differs from its RCPT.
fn rules(tmp: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("tests/fixtures/relay/dsn.mailflow")).unwrap();
    let path = tmp.join("rules.mailflow");
    std::fs::write(
        &path,
        format!("{text}\nrewrite \"Alias\" inner.b@origin.example -> b@origin.example\n"),
    )
    .unwrap();
    path
}

/// A relay on the rules whose every next hop is `hop` (a port), retrying slowly.
fn start(rules: &Path, spool: &Path, hop: u16) -> Relay {
    let args = vec![
        s("--listen"),
        s("Loopback=127.0.0.1:0"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{hop}"),
        s("--smart-host"),
        format!("Dead=127.0.0.1:{hop}"),
        s("--retry-min"),
        s("300s"),
        s("--smtp-timeout"),
        s("5s"),
    ];
    Relay::start(rules, spool, &args)
}

/// A next hop that answers every RCPT with 451 (offering what the messages need, so that
/// the relay defers rather than bounces).
async fn refusing_hop() -> Sink {
    let o = SinkOptions {
        dsn: true,
        smtputf8: true,
        ..SinkOptions::default()
    };
    Sink::start(o.rcpt("", "451 4.3.0 try again later")).await
}

/// A peer that offers DSN and SMTPUTF8 (and 8BITMIME, PIPELINING), refusing addresses that
/// start with each of `refuse` with 550.
async fn peer(refuse: &[&str]) -> Sink {
    let mut o = SinkOptions {
        dsn: true,
        smtputf8: true,
        ..SinkOptions::default()
    };
    for p in refuse {
        o = o.rcpt(p, "550 5.1.1 no such user here");
    }
    Sink::start(o).await
}

/// One message: MAIL parameters, each RCPT with its parameters, and the data (CRLF lines).
struct Outgoing {
    mail_params: &'static str,
    rcpts: Vec<(&'static str, &'static str)>,
    data: Vec<u8>,
}

fn message(n: usize, extra_header: &str, body: &str) -> Vec<u8> {
    format!(
        "From: App <app@origin.example>\r\nTo: b@elsewhere.example\r\nSubject: drain {n}\r\n\
         Message-ID: <drain-{n}@origin.example>\r\n{extra_header}\r\n{body}"
    )
    .into_bytes()
}

async fn send(relay: &Relay, m: &Outgoing) {
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    let r = c
        .cmd(&format!("MAIL FROM:<app@origin.example>{}", m.mail_params))
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    for (rcpt, params) in &m.rcpts {
        let r = c.cmd(&format!("RCPT TO:<{rcpt}>{params}")).await;
        assert_eq!(r.code, 250, "{rcpt}: {r:?}");
    }
    assert_eq!(c.cmd("DATA").await.code, 354);
    let mut data = Vec::new();
    for line in m.data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    c.send(data).await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// `mailflow queue drain --spool SPOOL --to 127.0.0.1:PORT --format FORMAT`: exit code,
/// stdout, stderr. Off the test's runtime thread, which serves the sinks.
async fn drain_as(spool: &Path, port: u16, format: &str) -> (i32, String, String) {
    drain_with(spool, port, format, &[]).await
}

/// [`drain_as`] with more options.
async fn drain_with(
    spool: &Path,
    port: u16,
    format: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(["queue", "drain", "--spool"])
        .arg(spool)
        .args(["--to", &format!("127.0.0.1:{port}"), "--format", format])
        .args(["--hostname", "draining.test", "--timeout", "10s"])
        .args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// [`drain_as`] in JSON: exit code, the document, stderr.
async fn drain(spool: &Path, port: u16) -> (i32, Value, String) {
    let (code, stdout, stderr) = drain_as(spool, port, "json").await;
    let doc = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (code, doc, stderr)
}

/// Queues `messages` on a relay whose hop refuses, waits until each was tried once, stops it;
/// returns the stored bytes of each message by Message-ID, read from the spool.
async fn queue_and_stop(
    rules: &Path,
    spool: &Path,
    messages: &[Outgoing],
) -> HashMap<String, Vec<u8>> {
    let hop = refusing_hop().await;
    let mut relay = start(rules, spool, hop.addr.port());
    for m in messages {
        send(&relay, m).await;
    }
    let rcpts: usize = messages.iter().map(|m| m.rcpts.len()).sum();
    assert!(
        wait_until(20, || hop.rcpts_seen().len() >= rcpts).await,
        "the relay tried its hop: {:?}",
        hop.rcpts_seen()
    );
    assert!(hop.messages().is_empty());
    relay.terminate().await;
    let (queue, live) = Spool::open(&spool.join("queue"), SpoolOptions::default()).unwrap();
    let stored = live
        .iter()
        .map(|m| {
            let id = m.meta.message_id.clone().unwrap();
            (id, queue.read_body(&m.id).unwrap())
        })
        .collect();
    // Dropping the last handle releases the spool's lock.
    drop(queue);
    stored
}

fn by_message_id(got: &[Received], n: usize) -> &Received {
    let want = format!("<drain-{n}@origin.example>");
    let found: Vec<&Received> = got
        .iter()
        .filter(|m| header(&data_text(m), "Message-ID") == Some(want.as_str()))
        .collect();
    assert_eq!(found.len(), 1, "{want} arrived {} times", found.len());
    found[0]
}

/// The stored bytes arrive unchanged (they are the client's with the relay's own fields).
fn assert_stored_bytes(m: &Received, stored: &HashMap<String, Vec<u8>>, n: usize) {
    let stored = &stored[&format!("<drain-{n}@origin.example>")];
    assert!(stored.starts_with(b"Received: "));
    assert_eq!(data_text(m), String::from_utf8_lossy(stored));
    assert_eq!(&m.data, stored);
}

#[tokio::test]
async fn a_stopped_relays_queue_is_handed_to_a_peer_with_its_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules(tmp.path());
    let spool = tmp.path().join("spool");
    let utf8_body = "Grüße aus dem Büro\r\n.a line with a leading dot\r\n";
    let messages = vec![
        Outgoing {
            mail_params: " RET=FULL ENVID=env+2Bone",
            rcpts: vec![
                (
                    "b@elsewhere.example",
                    " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B@elsewhere.example",
                ),
                ("b@origin.example", " NOTIFY=NEVER"),
            ],
            data: message(0, "", "plain body\r\n"),
        },
        Outgoing {
            mail_params: " BODY=8BITMIME SMTPUTF8 RET=HDRS",
            rcpts: vec![("c@elsewhere.example", "")],
            data: message(1, "Content-Type: text/plain; charset=utf-8\r\n", utf8_body),
        },
        Outgoing {
            mail_params: "",
            rcpts: vec![("d@elsewhere.example", " NOTIFY=DELAY")],
            data: message(2, "", "third\r\n"),
        },
    ];
    let stored = queue_and_stop(&rules, &spool, &messages).await;

    let peer = peer(&[]).await;
    let (code, doc, stderr) = drain(&spool, peer.addr.port()).await;
    assert_eq!(code, 0, "{doc} {stderr}");
    let summary = &doc["summary"];
    assert_eq!(summary["messages"], 3, "{doc}");
    assert_eq!(summary["messages_handed"], 3, "{doc}");
    assert_eq!(summary["recipients_handed"], 4, "{doc}");
    assert_eq!(summary["messages_left"], 0, "{doc}");
    let got = peer.messages();
    assert_eq!(got.len(), 3, "one transaction per message");

    let m0 = by_message_id(&got, 0);
    assert_eq!(m0.mail_from, "app@origin.example");
    assert_eq!(m0.helo, "draining.test");
    let params = m0.mail_params.join(" ");
    assert!(params.contains("RET=FULL"), "{params}");
    assert!(params.contains("ENVID=env+2Bone"), "{params}");
    assert!(!params.contains("SMTPUTF8"), "{params}");
    // The final address is the RCPT; ORCPT says what the client wrote, given or not.
    assert_eq!(m0.rcpts, ["b@elsewhere.example", "inner.b@origin.example"]);
    assert_eq!(
        m0.rcpt_params[0],
        ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;B@elsewhere.example"]
    );
    assert_eq!(
        m0.rcpt_params[1],
        ["NOTIFY=NEVER", "ORCPT=rfc822;b@origin.example"]
    );
    assert_stored_bytes(m0, &stored, 0);

    let m1 = by_message_id(&got, 1);
    let params = m1.mail_params.join(" ");
    assert!(params.contains("SMTPUTF8"), "{params}");
    assert!(params.contains("BODY=8BITMIME"), "{params}");
    assert!(params.contains("RET=HDRS"), "{params}");
    assert!(!params.contains("ENVID"), "{params}");
    assert_eq!(m1.rcpts, ["c@elsewhere.example"]);
    assert_eq!(m1.rcpt_params[0], ["ORCPT=rfc822;c@elsewhere.example"]);
    assert_stored_bytes(m1, &stored, 1);

    let m2 = by_message_id(&got, 2);
    assert_eq!(
        m2.rcpt_params[0],
        ["NOTIFY=DELAY", "ORCPT=rfc822;d@elsewhere.example"]
    );
    assert_stored_bytes(m2, &stored, 2);

    // The tracking log says where each recipient went.
    let events = track_events(&spool, "SEND");
    let context = format!("drain to 127.0.0.1:{}", peer.addr.port());
    let drained: Vec<&Value> = events
        .iter()
        .filter(|e| e["source-context"] == context.as_str())
        .collect();
    assert_eq!(drained.len(), 4, "{events:?}");
    for n in 0..3 {
        let id = format!("<drain-{n}@origin.example>");
        assert!(drained.iter().any(|e| e["message-id"] == id.as_str()));
    }
    assert!(drained.iter().all(|e| {
        e["recipient-status"][0]
            .as_str()
            .unwrap()
            .starts_with("250")
    }));
    // And who drained: one ADMIN event per message, as the other queue commands write.
    let admin = track_events(&spool, "ADMIN");
    assert_eq!(admin.len(), 3, "{admin:?}");
    assert!(admin.iter().all(|e| {
        e["source-context"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("{context} by uid ")))
    }));

    // The spool is empty: a relay started on it has nothing queued and sends nothing more.
    let (code, again, _) = drain(&spool, peer.addr.port()).await;
    assert_eq!((code, &again["summary"]["messages"]), (0, &Value::from(0)));
    let mut relay = start(&rules, &spool, peer.addr.port());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    relay.terminate().await;
    assert_eq!(peer.messages().len(), 3);
}

fn track_events(spool: &Path, event: &str) -> Vec<Value> {
    let out = Command::new(BIN)
        .arg("track")
        .arg("--spool")
        .arg(spool)
        .args(["--json", "--event", event])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_recipient_the_peer_refuses_stays_queued_for_a_later_drain() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules(tmp.path());
    let spool = tmp.path().join("spool");
    let messages = vec![Outgoing {
        mail_params: " ENVID=refused-one",
        rcpts: vec![
            ("ok@elsewhere.example", ""),
            ("refused@elsewhere.example", " NOTIFY=FAILURE"),
        ],
        data: message(10, "", "body\r\n"),
    }];
    queue_and_stop(&rules, &spool, &messages).await;

    // A peer that is down: nothing handed, the drain stops, the message stays (shown here
    // as people read it).
    let down = dead_port();
    let (code, stdout, _) = drain_as(&spool, down, "human").await;
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("left ") && lines[0].contains("<drain-10@origin.example>"),
        "{stdout}"
    );
    assert!(lines[0].ends_with(": 0 of 2 recipients handed"), "{stdout}");
    assert!(
        lines[1].trim().starts_with("ok@elsewhere.example: 4"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "drained 0 of 1 messages to 127.0.0.1:{down} (0 recipients); 1 messages stay queued (2 recipients)\nstopped: the peer could not be reached: "
        )),
        "{stdout}"
    );

    // A peer that refuses one recipient (550): that one stays pending, never bounced.
    let picky = peer(&["refused@"]).await;
    let (code, doc, _) = drain(&spool, picky.addr.port()).await;
    assert_eq!(code, 1, "{doc}");
    let s = &doc["summary"];
    assert_eq!(
        (
            &s["messages_left"],
            &s["recipients_handed"],
            &s["recipients_left"]
        ),
        (&Value::from(1), &Value::from(1), &Value::from(1)),
        "{doc}"
    );
    let left = &doc["messages"][0]["recipients"][1];
    assert_eq!(left["address"], "refused@elsewhere.example");
    assert_eq!(left["handed"], false);
    assert!(left["reply"].as_str().unwrap().starts_with("550"), "{doc}");
    assert_eq!(picky.messages().len(), 1);
    assert_eq!(picky.messages()[0].rcpts, ["ok@elsewhere.example"]);
    let deferred = track_events(&spool, "DEFER");
    assert!(
        deferred
            .iter()
            .any(|e| e["recipient-address"][0] == "refused@elsewhere.example"
                && e["source-context"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("drain to "))),
        "{deferred:?}"
    );
    // In the spool: the handed recipient delivered with the peer's reply, the refused one
    // pending with its answer, its own attempts and schedule as they were.
    {
        let (queue, live) = Spool::open(&spool.join("queue"), SpoolOptions::default()).unwrap();
        drop(queue);
        assert_eq!(live.len(), 1);
        let at = format!("127.0.0.1:{}", picky.addr.port());
        assert_eq!(
            live[0].states[0],
            RecipientState::Delivered {
                reply: format!("drained to {at}: 250 2.0.0 queued")
            }
        );
        let RecipientState::Pending {
            attempts,
            last_error,
            ..
        } = &live[0].states[1]
        else {
            panic!("{:?}", live[0].states[1]);
        };
        assert_eq!(*attempts, 1, "the relay's own attempt, no more");
        assert_eq!(
            last_error.as_deref(),
            Some(format!("drain to {at}: 550 5.1.1 RCPT: no such user here").as_str())
        );
    }
    assert!(track_events(&spool, "FAIL").is_empty(), "no bounce");
    assert!(track_events(&spool, "DSN").is_empty(), "no bounce");

    // A later drain to another peer hands only the recipient still pending.
    let other = peer(&[]).await;
    let (code, doc, _) = drain(&spool, other.addr.port()).await;
    assert_eq!(code, 0, "{doc}");
    let got = other.messages();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpts, ["refused@elsewhere.example"]);
    assert_eq!(got[0].rcpt_params[0][0], "NOTIFY=FAILURE");
    assert!(
        got[0]
            .mail_params
            .contains(&"ENVID=refused-one".to_string())
    );
}

#[tokio::test]
async fn drain_refuses_the_spool_of_a_running_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules(tmp.path());
    let spool = tmp.path().join("spool");
    let peer = peer(&[]).await;
    let relay = start(&rules, &spool, dead_port());
    let (code, _, stderr) = drain(&spool, peer.addr.port()).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    assert_eq!(peer.connections(), 0);
    drop(relay);
    let (code, _, stderr) = drain(&tmp.path().join("nothing"), peer.addr.port()).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no relay spool"), "{stderr}");

    // Someone other than the spool's owner (root, here, on nobody's spool) is refused before
    // anything is opened: the files a drain writes must stay the relay's.
    if rustix::process::geteuid().is_root() {
        let nobody = 65534;
        for dir in ["", "queue", "queue/journal"] {
            std::os::unix::fs::chown(spool.join(dir), Some(nobody), Some(nobody)).unwrap();
        }
        let entries = |p: &Path| std::fs::read_dir(p).unwrap().count();
        let before = (entries(&spool), entries(&spool.join("queue/journal")));
        let (code, _, stderr) = drain(&spool, peer.addr.port()).await;
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("belongs to uid 65534"), "{stderr}");
        assert_eq!(
            before,
            (entries(&spool), entries(&spool.join("queue/journal")))
        );
    } else {
        eprintln!("skipped: the owner check needs root to run on another user's spool");
    }
    assert_eq!(peer.connections(), 0);
}

#[tokio::test]
async fn a_peer_certificate_is_verified_when_a_name_or_trust_anchors_are_given() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules(tmp.path());
    let spool = tmp.path().join("spool");
    let messages = vec![Outgoing {
        mail_params: "",
        rcpts: vec![("tls@elsewhere.example", "")],
        data: message(20, "", "over TLS\r\n"),
    }];
    queue_and_stop(&rules, &spool, &messages).await;
    let ca = support::tls::TestCa::new();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let config = support::tls::server_config(&ca.issue(&["peer.test"]), None);
    let peer = Sink::start(SinkOptions::default().tls(config)).await;
    let port = peer.addr.port();

    // A name alone: the Mozilla roots do not know the test CA, so nothing is handed.
    let (code, stdout, _) = drain_with(&spool, port, "json", &["--tls-name", "peer.test"]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(peer.messages().is_empty());
    // The wrong name under the right anchors: refused too.
    let ca = ca_file.to_str().unwrap();
    let wrong = ["--ca-file", ca, "--tls-name", "other.test"];
    let (code, stdout, _) = drain_with(&spool, port, "json", &wrong).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(peer.messages().is_empty());
    // Both right: handed over TLS.
    let right = ["--ca-file", ca, "--tls-name", "peer.test"];
    let (code, stdout, _) = drain_with(&spool, port, "json", &right).await;
    assert_eq!(code, 0, "{stdout}");
    let got = peer.messages();
    assert_eq!(got.len(), 1);
    assert!(got[0].tls);
    assert_eq!(got[0].rcpts, ["tls@elsewhere.example"]);
}

/// `mailflow queue ARGS... --spool SPOOL` on the stopped spool; its exit code.
fn queue_command(spool: &Path, args: &[&str]) -> i32 {
    let out = Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .unwrap();
    out.status.code().unwrap()
}

#[tokio::test]
async fn held_recipients_stay_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = rules(tmp.path());
    let spool = tmp.path().join("spool");
    let messages = vec![Outgoing {
        mail_params: "",
        rcpts: vec![("kept@origin.example", ""), ("go@elsewhere.example", "")],
        data: message(30, "", "half held\r\n"),
    }];
    queue_and_stop(&rules, &spool, &messages).await;
    assert_eq!(
        queue_command(&spool, &["hold", "--domain", "origin.example"]),
        0
    );

    let peer = peer(&[]).await;
    let (code, doc, _) = drain(&spool, peer.addr.port()).await;
    assert_eq!(code, 1, "{doc}");
    let rcpts = &doc["messages"][0]["recipients"];
    assert_eq!(rcpts[0]["address"], "go@elsewhere.example", "{doc}");
    assert_eq!(rcpts[0]["handed"], true, "{doc}");
    assert_eq!(rcpts[1]["address"], "kept@origin.example", "{doc}");
    assert!(
        rcpts[1]["reply"].as_str().unwrap().starts_with("held"),
        "{doc}"
    );
    assert_eq!(peer.messages().len(), 1);
    assert_eq!(peer.messages()[0].rcpts, ["go@elsewhere.example"]);

    assert_eq!(queue_command(&spool, &["release", "--all"]), 0);
    let (code, doc, _) = drain(&spool, peer.addr.port()).await;
    assert_eq!(code, 0, "{doc}");
    assert_eq!(peer.messages().len(), 2);
    assert_eq!(peer.messages()[1].rcpts, ["kept@origin.example"]);
}
