//! Connection reuse and PIPELINING towards next hops, as the next hop (the loopback sink)
//! sees them: the delivery client with a connection pool, then the relay end to end with
//! `--connection-reuse-limit` and `--connection-idle-timeout`. Also the promise that
//! certificates are read when the rules are loaded, not per attempt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;
use support::outbound::{BODY, message, rcpts};

use mailflow::deliver::{self, Attempt, ClientConfig, Hop, Pool, RcptOutcome, ReuseOptions};
use mailflow::model::OutboundTls;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::relay::*;
use support::sink::{SessionLog, Sink, SinkOptions};
use support::tls::TestCa;

// ------------------------------------------------------------- the client and its pool

fn config() -> ClientConfig {
    let roots = Arc::new(rustls::RootCertStore::empty());
    let mut cfg = ClientConfig::new("relay.example.test", OutboundTls::Off, None, &roots, None);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.command_timeout = Duration::from_secs(5);
    cfg.data_timeout = Duration::from_secs(5);
    cfg
}

fn pool(limit: u32, idle: Duration) -> Arc<Pool> {
    Pool::new(ReuseOptions {
        limit,
        idle_timeout: idle,
        per_destination: 4,
        total: 16,
    })
}

fn hops(sink: &Sink) -> Vec<Hop> {
    vec![Hop {
        host: "sink.test".into(),
        addrs: vec![sink.addr],
        preference: 0,
    }]
}

fn delivered(a: &Attempt) -> bool {
    a.outcomes
        .iter()
        .all(|o| matches!(o, RcptOutcome::Delivered { .. }))
}

/// Each session's verbs from its first MAIL on, and whether it ended with QUIT.
fn after_hello(s: &SessionLog) -> Vec<String> {
    let verbs = s.verbs();
    let first = verbs
        .iter()
        .position(|v| v == "MAIL")
        .unwrap_or(verbs.len());
    verbs[first..].to_vec()
}

#[tokio::test]
async fn a_pipelined_group_arrives_in_one_read_and_lock_step_otherwise() {
    for pipelining in [true, false] {
        let sink = Sink::start(SinkOptions {
            pipelining,
            ..SinkOptions::default()
        })
        .await;
        let r = rcpts(&["b@example.test", "c@example.test"]);
        let a = deliver::deliver(&config(), &hops(&sink), &message(&r, BODY)).await;
        assert!(delivered(&a), "{a:?}");
        let session = &sink.sessions()[0];
        let group: Vec<(String, bool)> = session
            .commands
            .iter()
            .skip_while(|c| !c.line.starts_with("MAIL"))
            .take(4)
            .map(|c| (c.line.split(':').next().unwrap().to_string(), c.pipelined))
            .collect();
        // Pipelined: everything up to DATA was already waiting when each line was read;
        // DATA ends the group. Lock-step: each command waited for the previous reply.
        let expected = [
            ("MAIL FROM".to_string(), pipelining),
            ("RCPT TO".to_string(), pipelining),
            ("RCPT TO".to_string(), pipelining),
            ("DATA".to_string(), false),
        ];
        assert_eq!(group, expected, "pipelining {pipelining}");
    }
}

#[tokio::test]
async fn a_recipient_refused_in_a_pipelined_group_gets_its_own_outcome() {
    let sink = Sink::start(SinkOptions::default().rcpt("bad@", "550 5.1.1 no such user")).await;
    let r = rcpts(&["b@example.test", "bad@example.test", "c@example.test"]);
    let a = deliver::deliver(&config(), &hops(&sink), &message(&r, BODY)).await;
    assert!(matches!(a.outcomes[0], RcptOutcome::Delivered { .. }));
    match &a.outcomes[1] {
        RcptOutcome::Permanent(s) => {
            assert_eq!((s.code, s.enhanced.as_str()), (550, "5.1.1"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(a.outcomes[2], RcptOutcome::Delivered { .. }));
    assert_eq!(
        sink.messages()[0].rcpts,
        ["b@example.test", "c@example.test"]
    );
    assert!(sink.sessions()[0].commands[2].pipelined);
}

#[tokio::test]
async fn kept_connections_carry_the_next_messages_with_mail_first() {
    let sink = Sink::start(SinkOptions::default()).await;
    let pool = pool(100, Duration::from_secs(10));
    let cfg = config();
    let r = rcpts(&["b@example.test"]);
    for _ in 0..5 {
        let a = deliver::deliver_reusing(&cfg, &pool, &hops(&sink), &message(&r, BODY)).await;
        assert!(delivered(&a), "{a:?}");
    }
    assert_eq!(sink.connections(), 1);
    assert_eq!(sink.messages().len(), 5);
    assert_eq!(pool.idle(), 1);
    // One EHLO, then MAIL right after each final dot: no RSET, no second EHLO.
    let verbs = sink.sessions()[0].verbs();
    assert_eq!(verbs.iter().filter(|v| *v == "EHLO").count(), 1);
    let tx = ["MAIL", "RCPT", "DATA", "."];
    let expected: Vec<&str> = tx.iter().cycle().take(20).copied().collect();
    assert_eq!(after_hello(&sink.sessions()[0]), expected);
}

#[tokio::test]
async fn the_cap_closes_a_connection_after_its_share() {
    let sink = Sink::start(SinkOptions::default()).await;
    let pool = pool(3, Duration::from_secs(10));
    let cfg = config();
    let r = rcpts(&["b@example.test"]);
    for _ in 0..10 {
        let a = deliver::deliver_reusing(&cfg, &pool, &hops(&sink), &message(&r, BODY)).await;
        assert!(delivered(&a), "{a:?}");
    }
    assert_eq!(sink.connections(), 4);
    let sessions = sink.sessions();
    let per: Vec<usize> = sessions.iter().map(SessionLog::transactions).collect();
    assert_eq!(per, [3, 3, 3, 1]);
    // The full ones said goodbye.
    assert!(sessions[..3].iter().all(|s| s.quit.is_some()));
}

#[tokio::test]
async fn a_kept_connection_the_hop_closed_costs_no_attempt() {
    // Closed without a word after each message, closed with 421 when idle, and closed
    // without a word by a server that does not pipeline.
    let dropping = SinkOptions {
        messages_per_connection: Some(1),
        ..SinkOptions::default()
    };
    let idle = SinkOptions {
        idle_timeout: Some(Duration::from_millis(500)),
        ..SinkOptions::default()
    };
    let lock_step = SinkOptions {
        pipelining: false,
        ..dropping.clone()
    };
    for options in [dropping, idle, lock_step] {
        let sink = Sink::start(options).await;
        let pool = pool(100, Duration::from_secs(10));
        let cfg = config();
        let r = rcpts(&["b@example.test"]);
        for _ in 0..3 {
            let a = deliver::deliver_reusing(&cfg, &pool, &hops(&sink), &message(&r, BODY)).await;
            assert!(delivered(&a), "{a:?}");
            // Long enough for the idle sink to have closed the kept connection.
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        assert_eq!(sink.messages().len(), 3);
        assert_eq!(sink.connections(), 3);
    }
}

#[tokio::test]
async fn a_kept_connection_to_a_later_hop_goes_before_a_hop_that_is_down() {
    // The first hop accepts connections and never greets: each try costs a timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let sink = Sink::start(SinkOptions::default()).await;
    let mut cfg = config();
    cfg.command_timeout = Duration::from_millis(300);
    let pool = pool(100, Duration::from_secs(10));
    let mut hops = vec![Hop {
        host: "silent.test".into(),
        addrs: vec![silent_addr],
        preference: 0,
    }];
    hops.extend(self::hops(&sink));
    let r = rcpts(&["b@example.test"]);
    for _ in 0..3 {
        let a = deliver::deliver_reusing(&cfg, &pool, &hops, &message(&r, BODY)).await;
        assert!(delivered(&a), "{a:?}");
        assert_eq!(a.host, "sink.test");
    }
    // Only the first message waited for the silent hop.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(sink.connections(), 1);
    holder.abort();
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_timeout() {
    let sink = Sink::start(SinkOptions::default()).await;
    let pool = pool(100, Duration::from_millis(500));
    let r = rcpts(&["b@example.test"]);
    let a = deliver::deliver_reusing(&config(), &pool, &hops(&sink), &message(&r, BODY)).await;
    assert!(delivered(&a));
    assert_eq!(pool.idle(), 1);
    assert!(wait_until(5, || sink.sessions()[0].closed.is_some()).await);
    let s = &sink.sessions()[0];
    let dot = s.commands.iter().find(|c| c.line == ".").unwrap().at;
    let quit = s.quit.expect("QUIT before the close");
    let waited = quit.duration_since(dot);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_millis(3500),
        "{waited:?}"
    );
    assert_eq!(pool.idle(), 0);
}

#[tokio::test]
async fn a_connection_is_reused_only_under_the_configuration_it_was_opened_with() {
    let sink = Sink::start(SinkOptions::default()).await;
    let pool = pool(100, Duration::from_secs(10));
    let r = rcpts(&["b@example.test"]);
    let (old, new) = (config(), config());
    for cfg in [&old, &new, &old, &new] {
        let a = deliver::deliver_reusing(cfg, &pool, &hops(&sink), &message(&r, BODY)).await;
        assert!(delivered(&a), "{a:?}");
    }
    // Same settings, built twice (as a reload does): two connections, each reused once.
    assert_eq!(sink.connections(), 2);
    let per: Vec<usize> = sink
        .sessions()
        .iter()
        .map(SessionLog::transactions)
        .collect();
    assert_eq!(per, [2, 2]);
}

// ------------------------------------------------------------------ the relay end to end

fn relay_args(sink: &Sink, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        s("--listen"),
        s("Loopback=127.0.0.1:0"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{}", sink.addr.port()),
        s("--smart-host"),
        format!("Dead=127.0.0.1:{}", dead_port()),
        s("--queue-interval"),
        s("1s"),
    ];
    args.extend(extra.iter().map(|a| s(a)));
    args
}

async fn send(relay: &Relay, count: usize) {
    let count = count.to_string();
    let out = client(with_port(
        relay,
        &[
            "--from",
            "app@origin.example",
            "--to",
            "user@example.net",
            "--count",
            &count,
            "--data",
            "Subject: reuse\r\nX-Seq: {seq}\r\n\r\nmessage {seq}\r\n",
        ],
    ))
    .await;
    let acked = out["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["data"][0] == 250).count());
    assert_eq!(acked.to_string(), count, "{out}");
}

/// Every message arrived once, by its X-Seq header.
fn each_once(sink: &Sink, count: usize) -> bool {
    let mut seqs: Vec<String> = sink
        .messages()
        .iter()
        .filter_map(|m| header(&data_text(m), "X-Seq").map(str::to_string))
        .collect();
    let n = seqs.len();
    seqs.sort();
    seqs.dedup();
    n == count && seqs.len() == count
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_messages_for_one_hop_share_few_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let rules = root().join("tests/fixtures/relay/forward.mailflow");
    let args = relay_args(
        &sink,
        &[
            "--connection-reuse-limit",
            "10",
            "--destination-concurrency",
            "2",
            "--connection-idle-timeout",
            "5s",
        ],
    );
    let relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    send(&relay, 50).await;
    assert!(wait_until(30, || sink.messages().len() >= 50).await);
    assert!(each_once(&sink, 50));
    // ceil(50 / 10) + the destination's concurrency.
    let sessions = sink.sessions();
    assert!(sessions.len() <= 5 + 2, "{} connections", sessions.len());
    for s in &sessions {
        assert!(s.transactions() <= 10);
        let verbs = after_hello(s);
        // Every transaction on a kept connection starts with MAIL right after the last dot.
        for (i, v) in verbs.iter().enumerate() {
            if v == "MAIL" && i > 0 {
                assert_eq!(verbs[i - 1], ".", "{verbs:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reuse_limit_of_three_opens_a_connection_per_three_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let rules = root().join("tests/fixtures/relay/forward.mailflow");
    let args = relay_args(&sink, &["--connection-reuse-limit", "3"]);
    let relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    send(&relay, 10).await;
    assert!(wait_until(30, || sink.messages().len() >= 10).await);
    assert!(each_once(&sink, 10));
    assert!(
        sink.connections() >= 4,
        "{} connections",
        sink.connections()
    );
    assert!(sink.sessions().iter().all(|s| s.transactions() <= 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hop_that_drops_connections_loses_nothing_and_delays_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions {
        messages_per_connection: Some(1),
        ..SinkOptions::default()
    })
    .await;
    let rules = root().join("tests/fixtures/relay/forward.mailflow");
    // A deferral would wait a minute: everything arriving well before says none happened.
    let args = relay_args(&sink, &["--retry-min", "60s", "--retry-max", "60s"]);
    let relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    let started = Instant::now();
    send(&relay, 10).await;
    assert!(wait_until(30, || sink.messages().len() >= 10).await);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(each_once(&sink, 10));
    assert!(relay.track(&["--event", "DEFER"]).is_empty());
    assert_eq!(relay.track(&["--event", "SEND"]).len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_relay_says_goodbye_on_its_kept_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let rules = root().join("tests/fixtures/relay/forward.mailflow");
    let args = relay_args(&sink, &["--connection-idle-timeout", "60s"]);
    let mut relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    send(&relay, 1).await;
    assert!(wait_until(15, || sink.messages().len() == 1).await);
    assert!(sink.sessions()[0].quit.is_none());
    relay.terminate().await;
    assert!(wait_until(5, || sink.sessions()[0].quit.is_some()).await);
}

/// The `Out` connector with a client certificate, in a rule set of its own.
fn rules_with_client_cert(dir: &Path, ca: &TestCa, certificate: bool) -> std::path::PathBuf {
    let (cert, key) = ca.issue_client("relay.test").write(dir, "client");
    let fixture =
        std::fs::read_to_string(root().join("tests/fixtures/relay/forward.mailflow")).unwrap();
    let with = if certificate {
        format!(
            "  smart-host sink.invalid\n  certificate \"{}\"\n  key \"{}\"\n",
            cert.display(),
            key.display()
        )
    } else {
        "  smart-host sink.invalid\n".to_string()
    };
    let text = fixture.replace(
        "  address-space *\n  smart-host sink.invalid\n",
        &format!("  address-space *\n{with}"),
    );
    assert!(
        !certificate || text != fixture,
        "the fixture's `Out` connector moved"
    );
    let rules = dir.join("rules.mailflow");
    std::fs::write(&rules, text).unwrap();
    rules
}

fn tls_sink_options(ca: &TestCa) -> SinkOptions {
    SinkOptions::default().tls(support::tls::server_config(
        &ca.issue(&["sink.test"]),
        Some(ca),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_read_at_load_and_a_reload_without_them_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let sink = Sink::start(tls_sink_options(&ca)).await;
    let rules = rules_with_client_cert(tmp.path(), &ca, true);
    // A new connection, so a new handshake, for every message.
    let mut args = relay_args(&sink, &["--connection-reuse-limit", "0"]);
    args.extend([s("--admin"), s("127.0.0.1:0")]);
    let relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    send(&relay, 1).await;
    assert!(wait_until(15, || sink.messages().len() == 1).await);

    std::fs::remove_file(tmp.path().join("client.crt")).unwrap();
    std::fs::remove_file(tmp.path().join("client.key")).unwrap();
    send(&relay, 1).await;
    assert!(wait_until(15, || sink.messages().len() == 2).await);
    assert_eq!(sink.connections(), 2);
    assert!(sink.messages().iter().all(|m| m.tls && m.client_cert));

    let out = Command::new(BIN)
        .args(["reload", "--admin", &relay.admin.unwrap().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("client."), "{said}");
    // The old rules, certificate included, stay.
    send(&relay, 1).await;
    assert!(wait_until(15, || sink.messages().len() == 3).await);
    assert!(sink.messages()[2].client_cert);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_with_new_tls_settings_opens_a_new_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let sink = Sink::start(tls_sink_options(&ca)).await;
    let rules = rules_with_client_cert(tmp.path(), &ca, false);
    let mut args = relay_args(&sink, &["--connection-idle-timeout", "30s"]);
    args.extend([s("--admin"), s("127.0.0.1:0")]);
    let relay = Relay::start(&rules, &tmp.path().join("spool"), &args);
    send(&relay, 1).await;
    assert!(wait_until(15, || sink.messages().len() == 1).await);
    assert!(!sink.messages()[0].client_cert);

    rules_with_client_cert(tmp.path(), &ca, true);
    let out = Command::new(BIN)
        .args(["reload", "--admin", &relay.admin.unwrap().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    send(&relay, 1).await;
    assert!(wait_until(15, || sink.messages().len() == 2).await);
    // The kept connection was opened without a certificate: not used for the new settings.
    assert_eq!(sink.connections(), 2);
    assert!(sink.messages()[1].client_cert);
    assert_eq!(sink.sessions()[0].transactions(), 1);
}
