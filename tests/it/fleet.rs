//! Several independent relays running one compiled rule set: each reports the rule set's
//! digest (ready line, `/metrics`), the same whether it started from the rule files or from
//! their `mailflow compile` output, changed by a reload that takes and kept by one that is
//! refused; and two relays behind a sender that fails over between them, one killed with
//! `kill -9` mid-load, lose nothing they acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use mailflow::queue::{Spool, SpoolOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::relay::*;

/// The rule set every relay here runs.
fn rules_source() -> PathBuf {
    root().join("tests/fixtures/relay/dsn.mailflow")
}

/// `mailflow compile RULES -o OUT`; returns the digest it printed.
fn compile(rules: &Path, out: &Path) -> String {
    let run = Command::new(BIN)
        .arg("compile")
        .arg(rules)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "{stdout}");
    let digest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("rules digest: "))
        .unwrap_or_else(|| panic!("no digest in {stdout:?}"))
        .to_string();
    assert_eq!(digest.len(), 64, "{digest}");
    digest
}

/// A relay on `rules` with its own spool under `tmp/name`, an admin port, delivering
/// everything to `out` (a port).
fn start(rules: &Path, tmp: &Path, name: &str, out: u16, extra: &[&str]) -> Relay {
    let mut args = loopback(out, out, "1s", "5s");
    args.extend(["--admin", "127.0.0.1:0", "--queue-interval", "1s"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    Relay::start(rules, &tmp.join(name), &args)
}

/// The digest in the relay's `/metrics` (its one `mailflow_rules_info` series).
fn metrics_digest(relay: &Relay) -> String {
    let text = http_get(relay.admin.unwrap(), "/metrics");
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mailflow_rules_info{"))
        .collect();
    assert_eq!(series.len(), 1, "{text}");
    series[0]
        .strip_prefix("mailflow_rules_info{digest=\"")
        .and_then(|rest| rest.strip_suffix("\"} 1"))
        .unwrap_or_else(|| panic!("{}", series[0]))
        .to_string()
}

fn ready_digest(relay: &Relay) -> String {
    relay.ready["rules_digest"].as_str().unwrap().to_string()
}

/// `mailflow reload --admin` against the relay; whether it took.
fn reload(relay: &Relay) -> bool {
    Command::new(BIN)
        .arg("reload")
        .arg("--admin")
        .arg(relay.admin.unwrap().to_string())
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn relays_from_one_artifact_and_from_its_sources_report_one_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("rules.table");
    let compiled = compile(&rules_source(), &table);
    let out = dead_port();
    let a = start(&table, tmp.path(), "a", out, &[]);
    let b = start(&table, tmp.path(), "b", out, &[]);
    // Started from the text, with other site overrides (a node's own smart host): the same
    // rules, the same digest.
    let c = start(&rules_source(), tmp.path(), "c", dead_port(), &[]);
    for relay in [&a, &b, &c] {
        assert_eq!(metrics_digest(relay), compiled);
        assert_eq!(ready_digest(relay), compiled);
    }
}

#[tokio::test]
async fn a_reload_changes_the_digest_and_a_refused_one_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = tmp.path().join("rules.mailflow");
    let text = std::fs::read_to_string(rules_source()).unwrap();
    std::fs::write(&rules, &text).unwrap();
    let first = compile(&rules, &tmp.path().join("first.table"));
    let relay = start(&rules, tmp.path(), "spool", dead_port(), &[]);
    assert_eq!(metrics_digest(&relay), first);

    // One rule changed: a new digest, the one `compile` gives the changed file.
    let changed = text.replace("\"for the audit\"", "\"for the auditors\"");
    assert_ne!(changed, text);
    std::fs::write(&rules, &changed).unwrap();
    let second = compile(&rules, &tmp.path().join("second.table"));
    assert_ne!(second, first);
    assert!(reload(&relay));
    assert_eq!(metrics_digest(&relay), second);
    assert!(
        http_get(relay.admin.unwrap(), "/metrics").contains("mailflow_reloads_total 1\n"),
        "the reload took"
    );

    // A broken file is refused: the rules in use, and their digest, stay.
    std::fs::write(
        &rules,
        format!("{changed}\nrule \"broken\" {{ if nonsense }}\n"),
    )
    .unwrap();
    assert!(!reload(&relay));
    let metrics = http_get(relay.admin.unwrap(), "/metrics");
    assert!(
        metrics.contains("mailflow_reloads_failed_total 1\n"),
        "{metrics}"
    );
    assert_eq!(metrics_digest(&relay), second);
}

/// A free port on `ip` (bound and released), so that a relay can be restarted on it.
fn free_port(ip: &str) -> u16 {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    l.local_addr().unwrap().port()
}

/// A relay of the fleet: the artifact, its own spool, listening on `ip:port`, delivering to
/// the sink.
fn node(table: &Path, spool: &Path, ip: &str, port: u16, sink: u16) -> Relay {
    let args = vec![
        s("--listen"),
        format!("Loopback={ip}:{port}"),
        s("--admin"),
        format!("{ip}:0"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{sink}"),
        s("--smart-host"),
        format!("Dead=127.0.0.1:{sink}"),
        s("--retry-min"),
        s("1s"),
        s("--retry-max"),
        s("1s"),
        s("--queue-interval"),
        s("1s"),
    ];
    Relay::start(table, spool, &args)
}

/// Sends messages `range` over one connection to `addr`; the Message-IDs the relay answered
/// 250 to are added to `acked`.
async fn load(
    addr: std::net::SocketAddr,
    range: std::ops::Range<usize>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use support::raw::Raw;
    let (mut c, _) = Raw::connect(addr).await;
    assert_eq!(c.cmd("EHLO load.test").await.code, 250);
    for i in range {
        let id = format!("<fleet-{i}@origin.example>");
        if c.cmd("MAIL FROM:<app@origin.example>").await.code != 250 {
            c.cmd("RSET").await;
            continue;
        }
        let rcpt = c
            .cmd(&format!("RCPT TO:<x{}@elsewhere.example>", i % 7))
            .await;
        if rcpt.code != 250 || c.cmd("DATA").await.code != 354 {
            c.cmd("RSET").await;
            continue;
        }
        c.send(format!(
            "From: app@origin.example\r\nTo: x@elsewhere.example\r\nSubject: load {i}\r\n\
             Message-ID: {id}\r\n\r\nmessage {i} of the failover test\r\n.\r\n"
        ))
        .await;
        if c.reply().await.is_some_and(|r| r.code == 250) {
            acked.lock().unwrap().push(id);
        }
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// Message-ID of each message the sink received, with how many times it came.
fn received_ids(sink: &support::sink::Sink) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for m in sink.messages() {
        if let Some(id) = header(&data_text(&m), "Message-ID") {
            *seen.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

/// Two relays A (127.0.0.2) and B (127.0.0.3) from one artifact, each with its own spool,
/// both delivering to one sink; a sending MTA (a third relay whose send connector has A then
/// B as smart hosts: the delivery client moves to the next hop when one does not answer)
/// takes a load from three clients. A is killed with `kill -9` once a third of the load is
/// acknowledged and restarted on its spool after the load. Nothing the sender acknowledged
/// may be lost; duplicates are allowed (delivery is at least once) and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_lose_nothing_when_one_is_killed_mid_load() {
    use std::sync::{Arc, Mutex};
    const MESSAGES: usize = 600;
    let tmp = tempfile::tempdir().unwrap();
    let table = tmp.path().join("rules.table");
    let digest = compile(&rules_source(), &table);
    let sink = support::sink::Sink::start(support::sink::SinkOptions::default()).await;
    let (port_a, port_b) = (free_port("127.0.0.2"), free_port("127.0.0.3"));
    let spool_a = tmp.path().join("a");
    let mut a = node(&table, &spool_a, "127.0.0.2", port_a, sink.addr.port());
    let b = node(
        &table,
        &tmp.path().join("b"),
        "127.0.0.3",
        port_b,
        sink.addr.port(),
    );
    assert_eq!(metrics_digest(&a), digest);
    assert_eq!(metrics_digest(&b), digest);

    // The sender's `Out` (all the load) goes to A, else B; its `Dead` is not used.
    let sender = start(
        &rules_source(),
        tmp.path(),
        "sender",
        dead_port(),
        &[
            "--smart-host",
            &format!("Out=127.0.0.2:{port_a},127.0.0.3:{port_b}"),
        ],
    );
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..3)
        .map(|k| {
            let range = k * MESSAGES / 3..(k + 1) * MESSAGES / 3;
            tokio::spawn(load(sender.addr, range, Arc::clone(&acked)))
        })
        .collect();
    assert!(
        wait_until(30, || acked.lock().unwrap().len() >= MESSAGES / 3).await,
        "the sender took a third of the load"
    );
    a.kill9();
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // What A had acknowledged and not yet delivered when it was killed: its restart must
    // deliver these.
    let held = {
        let queue = spool_a.join("queue");
        let (spool, live) = Spool::open(&queue, SpoolOptions::default()).unwrap();
        drop(spool);
        live.len()
    };
    let a = node(&table, &spool_a, "127.0.0.2", port_a, sink.addr.port());
    assert_eq!(ready_digest(&a), digest);
    assert_eq!(metrics_digest(&a), metrics_digest(&b));

    let delivered = wait_until(30, || {
        let seen = received_ids(&sink);
        acked.iter().all(|id| seen.contains_key(id))
    })
    .await;
    let seen = received_ids(&sink);
    let lost: Vec<&String> = acked.iter().filter(|id| !seen.contains_key(*id)).collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    // The sender has recorded every hand-over (its queue is empty) before it stops.
    let sender_admin = sender.admin.unwrap();
    let emptied = wait_until(30, || {
        http_get(sender_admin, "/metrics").contains("\nmailflow_queue_size 0\n")
    })
    .await;
    let mut sender = sender;
    sender.terminate().await;
    // Which relay the sender handed each message to, from its tracking log.
    let sends = sender.track(&["--event", "SEND"]);
    let to = |ip: &str| {
        sends
            .iter()
            .filter(|e| e["server-ip"] == ip)
            .filter_map(|e| e["message-id"].as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let (to_a, to_b) = (to("127.0.0.2"), to("127.0.0.3"));
    println!(
        "failover: {} sent, {} acknowledged by the sender, {to_a} acknowledged by A, \
         {to_b} by B, {held} in A's spool when killed, {} distinct received by the sink, \
         {duplicates} duplicates, {} lost",
        MESSAGES,
        acked.len(),
        seen.len(),
        lost.len()
    );
    assert!(delivered && lost.is_empty(), "lost: {lost:?}");
    assert!(emptied, "the sender's queue emptied");
    assert_eq!(acked.len(), MESSAGES, "the sender took every message");
    assert!(
        to_a > 0 && to_b > 0,
        "both relays took part: A {to_a}, B {to_b}"
    );
    assert!(seen.keys().all(|id| acked.contains(id)), "nothing unknown");
}
