//! Recipient verification (`verify-recipients`, issue 14 §2): no backscatter. Over real TCP
//! against the relay binary, with a recording sink as the tenant's next hop that refuses some
//! addresses: an unknown recipient of an internal-relay domain is refused at RCPT time with
//! `550 5.1.1` (no message accepted, no DSN to a forged sender), a known one is accepted and
//! delivered, each answer is probed once and then remembered, a probe without an answer is
//! `450 4.1.1`, and a flood of RCPTs is bounded in probes and in remembered answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::path::Path;
use std::time::Instant;
use support::raw::Raw;
use support::relay::*;
use support::sink::{SeenRcpt, Sink, SinkOptions};
use support::tls::{TestCa, self_signed, server_config};

const RULES: &str = "tests/fixtures/relay/verify.mailflow";

/// The tenant's mailbox server: refuses `nobody@` and `flood` addresses, answers `busy@`
/// with 450, takes everyone else.
fn tenant_hop() -> SinkOptions {
    SinkOptions::default()
        .rcpt("nobody@", "550 5.1.1 <nobody@tenant.example>: user unknown")
        .rcpt("flood", "550 5.1.1 user unknown")
        .rcpt("busy@", "450 4.2.1 mailbox busy, try later")
}

fn start(tmp: &Path, sink: &Sink, down: u16, extra: &[&str]) -> Relay {
    start_rules(&root().join(RULES), tmp, sink, down, extra)
}

fn start_rules(rules: &Path, tmp: &Path, sink: &Sink, down: u16, extra: &[&str]) -> Relay {
    let mut args = vec![
        s("--listen"),
        s("Internet=127.0.0.1:0"),
        s("--smart-host"),
        format!("Tenant={}", sink.addr),
        s("--smart-host"),
        format!("Out={}", sink.addr),
        s("--smart-host"),
        format!("Down=127.0.0.1:{down}"),
        s("--retry-min"),
        s("1s"),
        s("--queue-interval"),
        s("1s"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Relay::start(rules, &tmp.join("spool"), &args)
}

/// The probes the sink has seen for `address`: RCPTs in a transaction from the null sender.
fn probes(sink: &Sink, address: &str) -> Vec<SeenRcpt> {
    sink.rcpts_seen()
        .into_iter()
        .filter(|r| r.mail_from.is_empty() && r.address == address)
        .collect()
}

async fn session(relay: &Relay, from: &str) -> Raw {
    let (mut c, greeting) = Raw::connect(relay.addr).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(c.cmd("EHLO client.test").await.code, 250);
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
    c
}

#[tokio::test]
async fn an_unknown_recipient_is_refused_at_rcpt_time_and_no_dsn_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(tenant_hop()).await;
    let relay = start(tmp.path(), &sink, dead_port(), &[]);

    // A forged sender writes to a real and an invented address of the tenant.
    let mut c = session(&relay, "forged@victim.example").await;
    let known = c.cmd("RCPT TO:<alice@tenant.example>").await;
    assert_eq!(known.status(), "250 2.1.5", "{known:?}");
    let unknown = c.cmd("RCPT TO:<nobody@tenant.example>").await;
    assert_eq!(unknown.status(), "550 5.1.1", "{unknown:?}");
    // Recipients known here are never probed: the helpdesk is forwarded to a partner.
    assert_eq!(c.cmd("RCPT TO:<helpdesk@tenant.example>").await.code, 250);
    // A domain without `verify-recipients` is relayed as before, unprobed.
    assert_eq!(c.cmd("RCPT TO:<carol@plain.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send("Subject: verify\r\n\r\nhello\r\n.\r\n").await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);

    // The same again in a new session: both answers come from the cache (in any case).
    let mut c = session(&relay, "forged@victim.example").await;
    assert_eq!(c.cmd("RCPT TO:<alice@tenant.example>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<NoBody@tenant.example>").await.status(),
        "550 5.1.1"
    );
    assert_eq!(c.cmd("QUIT").await.code, 221);

    let delivered = |sink: &Sink| -> Vec<String> {
        sink.messages()
            .iter()
            .flat_map(|m| m.rcpts.clone())
            .collect()
    };
    let all = [
        "alice@tenant.example",
        "carol@plain.example",
        "helpdesk@partner.example",
    ];
    assert!(
        wait_until(30, || all.iter().all(|a| delivered(&sink).contains(&s(a)))).await,
        "{:?}",
        sink.messages()
    );
    // One probe per address in all, each the RCPT of a `MAIL FROM:<>` transaction that
    // never reached DATA (the sink records only messages whose data it took).
    let alice = probes(&sink, "alice@tenant.example");
    assert_eq!(alice.len(), 1, "{:?}", sink.rcpts_seen());
    assert_eq!(alice[0].code, 250);
    let nobody = probes(&sink, "nobody@tenant.example");
    assert_eq!(nobody.len(), 1, "{:?}", sink.rcpts_seen());
    assert_eq!(nobody[0].code, 550);
    assert!(probes(&sink, "helpdesk@tenant.example").is_empty());
    assert!(probes(&sink, "helpdesk@partner.example").is_empty());
    assert!(probes(&sink, "carol@plain.example").is_empty());
    assert!(sink.messages().iter().all(|m| !m.mail_from.is_empty()));

    // Delivered: alice, carol and the helpdesk's partner copy; never the unknown recipient.
    assert!(!delivered(&sink).iter().any(|r| r.starts_with("nobody@")));
    // No bounce was written: the forged sender gets nothing, and the relay records no DSN.
    assert!(relay.track(&["--event", "DSN"]).is_empty());
    assert!(
        sink.messages()
            .iter()
            .all(|m| !m.rcpts.contains(&s("forged@victim.example")))
    );
}

#[tokio::test]
async fn a_probe_without_an_answer_is_450_and_nothing_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(tenant_hop()).await;
    let relay = start(tmp.path(), &sink, dead_port(), &[]);

    let mut c = session(&relay, "someone@victim.example").await;
    // The tenant's hop answers 450 for this mailbox.
    let busy = c.cmd("RCPT TO:<busy@tenant.example>").await;
    assert_eq!(busy.status(), "450 4.1.1", "{busy:?}");
    // The next hop of down.example is a closed port.
    let down = c.cmd("RCPT TO:<bob@down.example>").await;
    assert_eq!(down.status(), "450 4.1.1", "{down:?}");
    // No recipient was accepted, so there is no message to accept and later bounce.
    assert_eq!(c.cmd("DATA").await.code / 100, 5);
    assert_eq!(c.cmd("QUIT").await.code, 221);

    // A temporary answer is not remembered: the client's retry probes again.
    let mut c = session(&relay, "someone@victim.example").await;
    assert_eq!(
        c.cmd("RCPT TO:<busy@tenant.example>").await.status(),
        "450 4.1.1"
    );
    assert_eq!(c.cmd("QUIT").await.code, 221);
    assert_eq!(probes(&sink, "busy@tenant.example").len(), 2);
    assert!(relay.track(&["--event", "RECEIVE"]).is_empty());
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_rcpt_flood_is_bounded_in_probes_and_in_remembered_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(tenant_hop()).await;
    let relay = start(
        tmp.path(),
        &sink,
        dead_port(),
        &[
            "--verify-rate",
            "5",
            "--verify-concurrency",
            "2",
            "--verify-cache-size",
            "3",
        ],
    );

    // 40 invented addresses, 10 per session (a session is closed after 20 errors).
    let t0 = Instant::now();
    let (mut refused, mut deferred) = (0, 0);
    for session_no in 0..4 {
        let mut c = session(&relay, "attacker@evil.example").await;
        for i in 0..10 {
            let r = c
                .cmd(&format!("RCPT TO:<flood{session_no}-{i}@tenant.example>"))
                .await;
            match r.status().as_str() {
                "550 5.1.1" => refused += 1,
                "450 4.1.1" => deferred += 1,
                other => panic!("unexpected reply {other}: {r:?}"),
            }
        }
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let flood: Vec<SeenRcpt> = sink
        .rcpts_seen()
        .into_iter()
        .filter(|r| r.address.starts_with("flood"))
        .collect();
    // Every refusal is one probe; the rest were deferred without one.
    assert_eq!(flood.len(), refused);
    assert_eq!(refused + deferred, 40);
    // At most a second's burst plus the refill while the flood lasted (5 a second).
    let bound = 5 + (5.0 * elapsed).ceil() as usize;
    assert!(
        refused <= bound,
        "{refused} probes in {elapsed:.2}s (bound {bound})"
    );
    assert!(deferred > 0, "{refused} probes in {elapsed:.2}s");

    // The cache holds 3 answers: after 3 other addresses, the first is asked again.
    for round in 0..2 {
        let mut c = session(&relay, "someone@example.org").await;
        for name in ["dora", "erin", "fred", "gina"] {
            // Probes are rate-limited: wait for a token instead of counting deferrals.
            let mut tries = 0;
            loop {
                let r = c.cmd(&format!("RCPT TO:<{name}@tenant.example>")).await;
                if r.code == 250 {
                    break;
                }
                assert_eq!(r.status(), "450 4.1.1", "round {round}: {r:?}");
                tries += 1;
                assert!(tries < 15, "never verified");
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        }
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    // Four addresses through a cache of three, twice in the same order: every answer was
    // pushed out before it was asked for again, so each address was probed twice.
    for name in ["dora", "erin", "fred", "gina"] {
        assert_eq!(
            probes(&sink, &format!("{name}@tenant.example")).len(),
            2,
            "{name}"
        );
    }
}

/// The probe talks to the hop as a delivery would: with the send connector's `tls required`
/// and `tls-name`, a hop whose certificate verifies is probed over TLS; one whose certificate
/// does not verify is not asked in the clear, and the recipient gets `450 4.1.1`.
#[tokio::test]
async fn the_probe_uses_the_send_connectors_tls_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    std::fs::write(tmp.path().join("ca.pem"), &ca.cert_pem).unwrap();
    let text = std::fs::read_to_string(root().join(RULES))
        .unwrap()
        .replace(
            "  smart-host tenant-host.invalid\n",
            "  smart-host tenant-host.invalid\n  tls required\n  tls-name mailbox.tenant.example\n",
        );
    assert!(text.contains("tls-name mailbox.tenant.example"));
    let rules = tmp.path().join("verify-tls.mailflow");
    std::fs::write(&rules, text).unwrap();
    let ca_file = tmp.path().join("ca.pem").display().to_string();

    for (trusted, pem) in [
        (true, ca.issue(&["mailbox.tenant.example"])),
        (false, self_signed(&["mailbox.tenant.example"])),
    ] {
        let sink = Sink::start(tenant_hop().tls(server_config(&pem, None))).await;
        let run = tmp
            .path()
            .join(if trusted { "trusted" } else { "untrusted" });
        std::fs::create_dir_all(&run).unwrap();
        let relay = start_rules(&rules, &run, &sink, dead_port(), &["--ca-file", &ca_file]);
        let mut c = session(&relay, "someone@example.org").await;
        let alice = c.cmd("RCPT TO:<alice@tenant.example>").await;
        let nobody = c.cmd("RCPT TO:<nobody@tenant.example>").await;
        assert_eq!(c.cmd("QUIT").await.code, 221);
        let seen = sink.rcpts_seen();
        if trusted {
            assert_eq!(alice.status(), "250 2.1.5", "{alice:?}");
            assert_eq!(nobody.status(), "550 5.1.1", "{nobody:?}");
            assert_eq!(seen.len(), 2, "{seen:?}");
            assert!(
                seen.iter().all(|r| r.tls && r.mail_from.is_empty()),
                "{seen:?}"
            );
        } else {
            assert_eq!(alice.status(), "450 4.1.1", "{alice:?}");
            assert_eq!(nobody.status(), "450 4.1.1", "{nobody:?}");
            assert!(seen.is_empty(), "asked in the clear: {seen:?}");
        }
    }
}

/// Probes at once are bounded: with `--verify-concurrency 2` and a next hop that accepts
/// connections and never speaks, two probes wait on it while a third and fourth RCPT get
/// `450 4.1.1` at once, without a connection; the waiting two get `450 4.1.1` when
/// `--verify-timeout` ends them, long before a client's own RCPT timeout.
#[tokio::test]
async fn probes_at_once_are_bounded_and_a_stalled_hop_ends_in_450() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start(tenant_hop()).await;
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = stall.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let _stalling = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = stall.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(tcp);
        }
    });
    let relay = start(
        tmp.path(),
        &sink,
        port,
        &["--verify-concurrency", "2", "--verify-timeout", "3s"],
    );

    let mut waiting = Vec::new();
    for i in 0..2 {
        let mut c = session(&relay, "someone@example.org").await;
        c.send(format!("RCPT TO:<user{i}@down.example>\r\n")).await;
        waiting.push(c);
    }
    assert!(
        wait_until(20, || accepted.load(Ordering::SeqCst) == 2).await,
        "{} probes reached the stalled hop",
        accepted.load(Ordering::SeqCst)
    );
    for i in 2..4 {
        let mut c = session(&relay, "someone@example.org").await;
        let r = c.cmd(&format!("RCPT TO:<user{i}@down.example>")).await;
        assert_eq!(r.status(), "450 4.1.1", "{r:?}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    for mut c in waiting {
        let r = c.reply().await.unwrap();
        assert_eq!(r.status(), "450 4.1.1", "{r:?}");
        assert_eq!(c.cmd("QUIT").await.code, 221);
    }
    assert!(relay.track(&["--event", "RECEIVE"]).is_empty());
}
