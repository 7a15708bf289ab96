//! Connection reuse and PIPELINING under a hostile or broken next hop: extra replies after
//! the final dot or while a connection is idle, too few replies to a pipelined group,
//! replies out of protocol, a hop that closes after accepting. Each test asserts a bound:
//! every recipient's outcome, what the hop took, how many connections, and that nothing
//! waits past the command timeout. The hop is `support::scripted_hop`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support::outbound::{BODY, message, rcpts};
use crate::support::scripted_hop::{Act, Hop, Script};
use mailflow::deliver::{
    self, Attempt, ClientConfig, OutboundRcpt, Pool, RcptOutcome, ReuseOptions,
};
use mailflow::model::OutboundTls;
use std::sync::Arc;
use std::time::{Duration, Instant};

const COMMAND_TIMEOUT: Duration = Duration::from_millis(800);

fn config() -> ClientConfig {
    let roots = Arc::new(rustls::RootCertStore::empty());
    let mut cfg = ClientConfig::new("relay.example.test", OutboundTls::Off, None, &roots, None);
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.command_timeout = COMMAND_TIMEOUT;
    cfg.data_timeout = COMMAND_TIMEOUT;
    cfg
}

fn pool() -> Arc<Pool> {
    Pool::new(ReuseOptions {
        limit: 100,
        idle_timeout: Duration::from_secs(10),
        per_destination: 4,
        total: 16,
    })
}

fn is_delivered(o: &RcptOutcome) -> bool {
    matches!(o, RcptOutcome::Delivered { .. })
}

fn is_temporary(o: &RcptOutcome) -> bool {
    matches!(o, RcptOutcome::Temporary(_))
}

/// Sends `m`, bounded: the attempt must end within `limit`.
async fn send(
    cfg: &ClientConfig,
    pool: &Arc<Pool>,
    hop: &Hop,
    r: &[OutboundRcpt],
    limit: Duration,
) -> Attempt {
    let started = Instant::now();
    let a = tokio::time::timeout(
        limit,
        deliver::deliver_reusing(cfg, pool, &hop.hops(), &message(r, BODY)),
    )
    .await
    .expect("the attempt hung");
    assert!(started.elapsed() < limit);
    a
}

/// A hop that refuses `bad@` at RCPT and whose first message on each connection ends with
/// `after_dot` (the usual 250 plus whatever it adds).
fn refusing_bad(after_dot: Act) -> Arc<Script> {
    Arc::new(move |_, messages, cmd: &str| {
        if cmd.to_ascii_lowercase().starts_with("rcpt to:<bad@") {
            return Some(Act::Say("550 5.1.1 no such user\r\n".into()));
        }
        (cmd == "." && messages == 0).then(|| after_dot.clone())
    })
}

/// The second message, to a good and a refused recipient, after the first ended with an
/// extra reply: each recipient gets the hop's own answer, the hop took the good one only.
async fn second_message_gets_its_own_replies(pipelining: bool, after_dot: Act) {
    let hop = Hop::start(pipelining, refusing_bad(after_dot)).await;
    let (cfg, pool) = (config(), pool());
    let bound = COMMAND_TIMEOUT * 4;
    let first = rcpts(&["a@example.test"]);
    let a = send(&cfg, &pool, &hop, &first, bound).await;
    assert!(is_delivered(&a.outcomes[0]), "{a:?}");
    // Long enough for a late extra reply to be waiting on the kept connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = rcpts(&["good@example.test", "bad@example.test"]);
    let a = send(&cfg, &pool, &hop, &second, bound).await;
    assert!(
        is_delivered(&a.outcomes[0]),
        "pipelining {pipelining}: {a:?}"
    );
    match &a.outcomes[1] {
        RcptOutcome::Permanent(s) => assert_eq!((s.code, s.enhanced.as_str()), (550, "5.1.1")),
        other => panic!("pipelining {pipelining}: {other:?}"),
    }
    let taken = hop.taken();
    assert_eq!(taken.len(), 2, "{taken:?}");
    assert_eq!(taken[1].rcpts, ["good@example.test"]);
    // The out-of-step connection was not reused.
    assert_eq!(hop.connections(), 2);
    assert_eq!(taken[1].connection, 1);
}

#[tokio::test]
async fn a_second_reply_to_the_dot_in_the_same_write_is_never_read_as_the_next_mail() {
    for pipelining in [true, false] {
        let twice = Act::Say("250 2.0.0 queued\r\n250 2.0.0 queued again\r\n".into());
        second_message_gets_its_own_replies(pipelining, twice).await;
    }
}

#[tokio::test]
async fn a_late_second_reply_to_the_dot_is_never_read_as_the_next_mail() {
    for pipelining in [true, false] {
        let late = Act::SayThenLater(
            "250 2.0.0 queued\r\n".into(),
            Duration::from_millis(50),
            "250 2.0.0 queued again\r\n".into(),
        );
        second_message_gets_its_own_replies(pipelining, late).await;
    }
}

#[tokio::test]
async fn an_unsolicited_reply_while_idle_is_never_read_as_the_next_mail() {
    for pipelining in [true, false] {
        // Well after the client has put the connection back in the pool.
        let idle = Act::SayThenLater(
            "250 2.0.0 queued\r\n".into(),
            Duration::from_millis(150),
            "250-ok\r\n250 ok\r\n".into(),
        );
        second_message_gets_its_own_replies(pipelining, idle).await;
    }
}

#[tokio::test]
async fn too_few_replies_to_a_pipelined_group_defer_within_the_timeout() {
    // MAIL and the first RCPT are answered, then nothing: not the second RCPT, not DATA.
    let script: Arc<Script> = Arc::new(|_, _, cmd: &str| {
        let c = cmd.to_ascii_lowercase();
        (c.starts_with("rcpt to:<c@") || c == "data").then_some(Act::Silent)
    });
    let hop = Hop::start(true, script).await;
    let (cfg, pool) = (config(), pool());
    let r = rcpts(&["b@example.test", "c@example.test"]);
    let started = Instant::now();
    let a = send(&cfg, &pool, &hop, &r, COMMAND_TIMEOUT * 3).await;
    // One command timeout for the missing reply, not one per missing reply.
    assert!(started.elapsed() >= COMMAND_TIMEOUT);
    assert!(a.outcomes.iter().all(is_temporary), "{a:?}");
    assert!(hop.taken().is_empty());
    // A connection that lost count of its replies is not kept.
    assert_eq!(pool.idle(), 0);
}

/// Sends one message to `b@` and `c@` over a hop whose script is `script` and returns the
/// attempt, checked to be bounded by a few command timeouts; nothing may be kept.
async fn one_message(pipelining: bool, script: Arc<Script>) -> (Attempt, Hop) {
    let hop = Hop::start(pipelining, script).await;
    let (cfg, pool) = (config(), pool());
    let r = rcpts(&["b@example.test", "c@example.test"]);
    let a = send(&cfg, &pool, &hop, &r, COMMAND_TIMEOUT * 3).await;
    assert_eq!(pool.idle(), 0, "pipelining {pipelining}: {a:?}");
    (a, hop)
}

#[tokio::test]
async fn a_354_to_mail_is_no_acceptance() {
    for pipelining in [true, false] {
        let script: Arc<Script> = Arc::new(|_, _, cmd: &str| {
            cmd.starts_with("MAIL")
                .then(|| Act::Say("354 go on\r\n".into()))
        });
        let (a, hop) = one_message(pipelining, script).await;
        assert!(a.outcomes.iter().all(is_temporary), "{a:?}");
        assert!(hop.taken().is_empty());
    }
}

#[tokio::test]
async fn a_250_to_data_before_the_data_delivers_nothing() {
    for pipelining in [true, false] {
        let script: Arc<Script> =
            Arc::new(|_, _, cmd: &str| (cmd == "DATA").then(|| Act::Say("250 ok\r\n".into())));
        let (a, hop) = one_message(pipelining, script).await;
        assert!(a.outcomes.iter().all(is_temporary), "{a:?}");
        assert!(hop.taken().is_empty());
    }
}

#[tokio::test]
async fn a_multi_line_reply_whose_codes_disagree_accepts_nobody() {
    for pipelining in [true, false] {
        // A first line that accepts and a last that refuses: neither is believed.
        let script: Arc<Script> = Arc::new(|_, _, cmd: &str| {
            cmd.to_ascii_lowercase()
                .starts_with("rcpt to:<c@")
                .then(|| Act::Say("250-ok\r\n550 5.1.1 no\r\n".into()))
        });
        let (a, hop) = one_message(pipelining, script).await;
        assert!(!a.outcomes.iter().any(is_delivered), "{a:?}");
        assert!(is_temporary(&a.outcomes[1]), "{a:?}");
        // Whatever b@ got, the hop took no message for c@.
        assert!(
            hop.taken()
                .iter()
                .all(|t| !t.rcpts.contains(&"c@example.test".to_string()))
        );
    }
}

#[tokio::test]
async fn a_reply_line_of_100_kb_is_cut_and_read_in_step() {
    for pipelining in [true, false] {
        let long = format!("550 5.1.1 {}\r\n", "x".repeat(100 * 1024));
        let script: Arc<Script> = Arc::new(move |_, _, cmd: &str| {
            cmd.to_ascii_lowercase()
                .starts_with("rcpt to:<c@")
                .then(|| Act::Say(long.clone()))
        });
        let hop = Hop::start(pipelining, script).await;
        let (cfg, pool) = (config(), pool());
        let r = rcpts(&["b@example.test", "c@example.test"]);
        let a = send(&cfg, &pool, &hop, &r, COMMAND_TIMEOUT * 3).await;
        // The reply after the long line (DATA's 354) was read as DATA's: b@ delivered.
        assert!(
            is_delivered(&a.outcomes[0]),
            "pipelining {pipelining}: {a:?}"
        );
        match &a.outcomes[1] {
            RcptOutcome::Permanent(s) => {
                assert_eq!((s.code, s.enhanced.as_str()), (550, "5.1.1"));
                assert!(s.text.len() <= 600, "{}", s.text.len());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(hop.taken()[0].rcpts, ["b@example.test"]);
        // In step after it: the connection is kept, and the next message goes over it.
        assert_eq!(pool.idle(), 1);
        let r = rcpts(&["b@example.test"]);
        let a = send(&cfg, &pool, &hop, &r, COMMAND_TIMEOUT * 3).await;
        assert!(is_delivered(&a.outcomes[0]), "{a:?}");
        assert_eq!(hop.connections(), 1);
    }
}

#[tokio::test]
async fn a_reply_line_that_never_ends_is_bounded_by_the_timeout() {
    let script: Arc<Script> = Arc::new(|_, _, cmd: &str| {
        cmd.starts_with("MAIL")
            .then(|| Act::Say(format!("250 {}", "x".repeat(1024 * 1024))))
    });
    let (a, hop) = one_message(true, script).await;
    assert!(a.outcomes.iter().all(is_temporary), "{a:?}");
    assert!(hop.taken().is_empty());
}

#[tokio::test]
async fn a_hop_that_closes_after_accepting_gets_each_message_once() {
    let script: Arc<Script> = Arc::new(|_, _, cmd: &str| {
        (cmd == ".").then(|| Act::SayAndClose("250 2.0.0 queued\r\n".into()))
    });
    for pipelining in [true, false] {
        let hop = Hop::start(pipelining, script.clone()).await;
        let (cfg, pool) = (config(), pool());
        let r = rcpts(&["b@example.test"]);
        // Back to back: the close may or may not have arrived when the next message starts.
        for _ in 0..5 {
            let a = send(&cfg, &pool, &hop, &r, COMMAND_TIMEOUT * 3).await;
            assert!(
                is_delivered(&a.outcomes[0]),
                "pipelining {pipelining}: {a:?}"
            );
        }
        let taken = hop.taken();
        assert_eq!(taken.len(), 5);
        let per: Vec<usize> = taken.iter().map(|t| t.connection).collect();
        assert_eq!(per, [0, 1, 2, 3, 4]);
        assert_eq!(hop.connections(), 5);
    }
}

fn small_pool() -> Arc<Pool> {
    Pool::new(ReuseOptions {
        limit: 100,
        idle_timeout: Duration::from_secs(30),
        per_destination: 2,
        total: 5,
    })
}

/// Waits up to 5 s for `f` to hold.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test]
async fn idle_connections_to_many_destinations_stay_within_the_total() {
    let usual: Arc<Script> = Arc::new(|_, _, _: &str| None);
    let mut hops = Vec::new();
    for _ in 0..20 {
        hops.push(Hop::start(true, usual.clone()).await);
    }
    let (cfg, pool) = (config(), small_pool());
    let r = rcpts(&["b@example.test"]);
    for hop in &hops {
        let a = send(&cfg, &pool, hop, &r, COMMAND_TIMEOUT * 3).await;
        assert!(is_delivered(&a.outcomes[0]), "{a:?}");
    }
    assert_eq!(pool.idle(), 5);
    // Counted where it matters, at the hops: the rest were closed.
    let open = || hops.iter().map(Hop::open).sum::<usize>();
    assert!(eventually(|| open() == 5).await, "{} open", open());
    assert!(hops.iter().all(|h| h.open() <= 1));
}

#[tokio::test]
async fn idle_connections_to_one_destination_stay_within_its_share() {
    // Slow to answer MAIL, so that ten messages at once need ten connections.
    let slow: Arc<Script> = Arc::new(|_, _, cmd: &str| {
        cmd.starts_with("MAIL").then(|| {
            Act::SayThenLater(
                String::new(),
                Duration::from_millis(200),
                "250 ok\r\n".into(),
            )
        })
    });
    let hop = Arc::new(Hop::start(true, slow).await);
    let (cfg, pool) = (Arc::new(config()), small_pool());
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (cfg, pool, hop) = (cfg.clone(), pool.clone(), hop.clone());
        all.spawn(async move {
            let r = rcpts(&["b@example.test"]);
            send(&cfg, &pool, &hop, &r, COMMAND_TIMEOUT * 3).await
        });
    }
    while let Some(a) = all.join_next().await {
        let a = a.unwrap();
        assert!(is_delivered(&a.outcomes[0]), "{a:?}");
    }
    assert_eq!(hop.connections(), 10);
    assert_eq!(pool.idle(), 2);
    assert!(eventually(|| hop.open() == 2).await, "{} open", hop.open());
}
