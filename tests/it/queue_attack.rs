//! `mailflow queue` attacked as an outage, a careless administrator or a hostile local user
//! would, over the real binary, its socket and real TCP: commands racing a load delivered
//! to a slow next hop (nothing delivered twice, nothing lost, nothing both removed and
//! delivered), holds named carelessly, bounces that must not report, a damaged holds file,
//! a flooded socket, the stopped spool in the wrong hands, a kill -9 under a hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::raw::Raw;
use support::relay::*;
use support::sink::{Sink, SinkOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One message a next hop took: envelope sender, recipients, data.
type Taken = (String, Vec<String>, String);

/// A next hop that answers every final dot after `delay`, recording each message it took:
/// its envelope sender, recipients and data.
struct SlowHop {
    addr: std::net::SocketAddr,
    taken: Arc<Mutex<Vec<Taken>>>,
}

impl SlowHop {
    async fn start(delay: Duration) -> SlowHop {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let taken = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&taken);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(Self::session(tcp, delay, Arc::clone(&record)));
            }
        });
        SlowHop { addr, taken }
    }

    async fn session(tcp: tokio::net::TcpStream, delay: Duration, record: Arc<Mutex<Vec<Taken>>>) {
        let (r, mut w) = tcp.into_split();
        let mut r = BufReader::new(r);
        let _ = w.write_all(b"220 slow.test ESMTP\r\n").await;
        let (mut from, mut rcpts) = (String::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                b"250 slow.test\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                from = between(&line, '<', '>');
                rcpts.clear();
                b"250 2.1.0 ok\r\n"
            } else if upper.starts_with("RCPT TO:") {
                rcpts.push(between(&line, '<', '>'));
                b"250 2.1.5 ok\r\n"
            } else if upper.starts_with("DATA") {
                let _ = w.write_all(b"354 go on\r\n").await;
                let mut data = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    data.push_str(&line);
                }
                tokio::time::sleep(delay).await;
                record
                    .lock()
                    .unwrap()
                    .push((from.clone(), rcpts.clone(), data));
                b"250 2.0.0 queued\r\n"
            } else if upper.starts_with("QUIT") {
                let _ = w.write_all(b"221 bye\r\n").await;
                return;
            } else {
                b"250 ok\r\n"
            };
            if w.write_all(reply).await.is_err() {
                return;
            }
        }
    }

    /// The messages taken that are not reports (a non-null sender).
    fn delivered(&self) -> Vec<Taken> {
        let all = self.taken.lock().unwrap().clone();
        all.into_iter().filter(|(f, _, _)| !f.is_empty()).collect()
    }

    /// The reports (DSNs) taken.
    fn reports(&self) -> Vec<String> {
        let all = self.taken.lock().unwrap().clone();
        all.into_iter()
            .filter(|(f, _, _)| f.is_empty())
            .map(|(_, _, d)| d)
            .collect()
    }
}

fn between(line: &str, open: char, close: char) -> String {
    let start = line.find(open).map_or(0, |i| i + 1);
    let end = line[start..].find(close).map_or(line.len(), |i| start + i);
    line[start..end].to_string()
}

/// The Message-ID field's value of a message's text.
fn message_id(data: &str) -> String {
    header(data, "Message-ID").unwrap_or_default().to_string()
}

/// The relay of these tests: forward.mailflow, dead.example through Dead on `dead`, the
/// rest through Out on `out`; retries an hour apart, so only the commands make things go.
fn start(spool: &Path, dead: u16, out: u16, log: Option<&Path>, extra: &[&str]) -> Relay {
    let mut args = vec![
        s("--listen"),
        s("Loopback=127.0.0.1:0"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{out}"),
        s("--smart-host"),
        format!("Dead=127.0.0.1:{dead}"),
        s("--retry-min"),
        s("1h"),
        s("--retry-max"),
        s("1h"),
        s("--queue-interval"),
        s("1s"),
        s("--smtp-timeout"),
        s("5s"),
        s("--admin"),
        s("127.0.0.1:0"),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Relay::start_logged(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        spool,
        &args,
        log,
    )
}

fn queue(spool: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `queue ARGS --format json`: the exit code and the document.
fn qj(spool: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = queue(spool, &all);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)));
    (out.status.code().unwrap(), doc)
}

fn ids(doc: &Value) -> Vec<String> {
    doc["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["id"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Sends one message per subject (`Message-ID: <subject@origin.example>`) from `from` to
/// `rcpts`, with `params` on each RCPT; every one must be acknowledged.
async fn send(
    addr: std::net::SocketAddr,
    from: &str,
    rcpts: &[&str],
    params: &str,
    subjects: &[String],
) {
    let (mut c, _) = Raw::connect(addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    for subject in subjects {
        assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).await.code, 250);
        for r in rcpts {
            let reply = c.cmd(&format!("RCPT TO:<{r}>{params}")).await;
            assert_eq!(reply.code, 250, "{reply:?}");
        }
        assert_eq!(c.cmd("DATA").await.code, 354);
        c.send(format!(
            "From: app@origin.example\r\nSubject: {subject}\r\nMessage-ID: <{subject}@origin.example>\r\n\r\nbody of {subject}\r\n.\r\n"
        ))
        .await;
        assert_eq!(c.reply().await.unwrap().code, 250, "{subject}");
    }
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// `n` messages `{prefix}{i}` to user@out.example over four connections at once.
async fn load(relay: &Relay, prefix: &str, n: usize) -> BTreeSet<String> {
    let subjects: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let mut tasks = Vec::new();
    for part in subjects.chunks(n.div_ceil(4)) {
        let part = part.to_vec();
        let addr = relay.addr;
        tasks.push(tokio::spawn(async move {
            send(addr, "app@origin.example", &["user@out.example"], "", &part).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    subjects
        .iter()
        .map(|s| format!("<{s}@origin.example>"))
        .collect()
}

/// The Message-IDs of the messages `reply.done` names, as the listing before it had them.
fn message_ids_of(listing: &Value, done: &BTreeSet<String>) -> BTreeSet<String> {
    listing["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| done.contains(m["id"].as_str().unwrap()))
        .map(|m| m["message_id"].as_str().unwrap().to_string())
        .collect()
}

fn metric(relay: &Relay, name: &str) -> u64 {
    let body = http_get(relay.admin.unwrap(), "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {body}"))
}

fn no_panics(log: &Path) {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

/// A load held at the next hop's connector is released and, while it is being delivered
/// to a next hop that takes 150 ms per message, `action --all` is run on it. Every
/// acknowledged message ends up exactly once: delivered, removed by the command (as its
/// reply says), or still queued; none is delivered twice or both removed and delivered.
/// Returns the relay's reply, the Message-IDs it removed and the slow hop.
async fn race(action: &str) -> (Value, BTreeSet<String>, SlowHop) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let log = tmp.path().join("relay.log");
    let hop = SlowHop::start(Duration::from_millis(5)).await;
    let mut relay = start(
        &spool,
        dead_port(),
        hop.addr.port(),
        Some(&log),
        &["--destination-concurrency", "2"],
    );
    let (code, _) = qj(&spool, &["hold", "--connector", "Out"]);
    assert_eq!(code, 0);
    let acknowledged = load(&relay, &format!("{action}-"), 300).await;
    let (_, before) = qj(&spool, &["list"]);
    assert_eq!(ids(&before).len(), 300);

    let (code, _) = qj(&spool, &["release", "--connector", "Out"]);
    assert_eq!(code, 0);
    let (code, reply) = qj(&spool, &[action, "--all"]);
    assert!(code == 0 || code == 1, "{reply}");
    let done = strings(&reply["done"]);
    let removed = message_ids_of(&before, &done);
    assert_eq!(removed.len(), done.len());

    // What the command skipped (being delivered) is delivered; then the queue is empty.
    assert!(
        wait_until(40, || queue(&spool, &["list"]).status.code() == Some(1)).await,
        "{}",
        text(&queue(&spool, &["list"]))
    );
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, data) in hop.delivered() {
        *delivered.entry(message_id(&data)).or_default() += 1;
    }
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let delivered: BTreeSet<String> = delivered.into_keys().collect();
    let both: Vec<_> = delivered.intersection(&removed).collect();
    assert!(
        both.is_empty(),
        "{} messages delivered and reported as {action}d: {both:?}",
        both.len()
    );
    let accounted: BTreeSet<String> = delivered.union(&removed).cloned().collect();
    assert_eq!(accounted, acknowledged, "lost or invented");
    assert!(
        !removed.is_empty() && !delivered.is_empty(),
        "the command raced nothing: {} removed, {} delivered",
        removed.len(),
        delivered.len()
    );
    for skip in reply["skipped"].as_array().into_iter().flatten() {
        let why = skip["why"].as_str().unwrap();
        assert!(
            why.starts_with("being delivered now") || why.starts_with("no longer queued"),
            "{skip}"
        );
    }
    assert_eq!(metric(&relay, "mailflow_queue_size"), 0);
    // The tracking log records what was done, not what was tried.
    let recorded = || {
        relay
            .track(&["--event", "ADMIN"])
            .iter()
            .filter(|e| e["source-context"].as_str().unwrap().starts_with(action))
            .map(|e| e["internal-message-id"].as_str().unwrap().to_string())
            .collect::<BTreeSet<String>>()
    };
    assert!(wait_until(10, || recorded().len() >= done.len()).await);
    assert_eq!(recorded(), done);
    relay.terminate().await;
    no_panics(&log);
    (reply, removed, hop)
}

/// Nothing a bounce reports as returned was delivered, and its report names only it.
#[tokio::test(flavor = "multi_thread")]
async fn bounce_racing_deliveries_returns_only_what_it_did_not_deliver() {
    let (reply, removed, hop) = race("bounce").await;
    // NOTIFY absent: a report per bounced message, naming that message.
    assert!(
        wait_until(30, || hop.reports().len() >= removed.len()).await,
        "{} reports for {} bounced",
        hop.reports().len(),
        removed.len()
    );
    let reports = hop.reports();
    assert_eq!(reports.len(), removed.len(), "{reply}");
    for r in &reports {
        let about: Vec<&String> = removed.iter().filter(|id| r.contains(*id)).collect();
        assert_eq!(about.len(), 1, "a report about one bounced message: {r}");
        assert!(r.contains("Action: failed") && r.contains("5.3.0"), "{r}");
    }
}

/// A delete racing deliveries loses and duplicates nothing.
#[tokio::test(flavor = "multi_thread")]
async fn delete_racing_deliveries_loses_and_duplicates_nothing() {
    let (_, _, hop) = race("delete").await;
    assert!(hop.reports().is_empty(), "a delete reports to no one");
}

/// `n` messages `{prefix}{i}` to user@dead.example (whose next hop is down), each deferred
/// for the hour; their queue ids, oldest first.
async fn stuck(relay: &Relay, spool: &Path, prefix: &str, n: usize) -> Vec<String> {
    let subjects: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let (_, before) = qj(spool, &["list"]);
    let had = ids(&before).len();
    send(
        relay.addr,
        "app@origin.example",
        &["user@dead.example"],
        "",
        &subjects,
    )
    .await;
    assert!(
        wait_until(20, || {
            let (_, doc) = qj(spool, &["list", "--domain", "dead.example"]);
            ids(&doc).len() == had + n
        })
        .await
    );
    let (_, doc) = qj(spool, &["list", "--sender", "app@"]);
    let mine: BTreeSet<String> = subjects
        .iter()
        .map(|s| format!("<{s}@origin.example>"))
        .collect();
    doc["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| mine.contains(m["message_id"].as_str().unwrap()))
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn held(spool: &Path) -> usize {
    let (_, doc) = qj(spool, &["list", "--state", "held"]);
    ids(&doc).len()
}

/// A hold named as an administrator types it (a domain with a trailing dot or in capitals,
/// a connector in other case, an id in lower case) holds what the same words select in a
/// filter; a hold on a message that is not queued says so (exit 1) instead of holding
/// nothing silently.
#[tokio::test(flavor = "multi_thread")]
async fn holds_named_carelessly_hold_what_the_filters_take() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    let m = stuck(&relay, &spool, "careless-", 3).await;
    assert_eq!(m.len(), 3);

    for (hold, release) in [
        (["--domain", "DEAD.Example."], ["--domain", "dead.example"]),
        (["--domain", "dead.example"], ["--domain", "Dead.Example."]),
        (["--connector", "dead"], ["--connector", "DEAD"]),
    ] {
        let (_, listed) = qj(&spool, &["list", hold[0], hold[1]]);
        assert_eq!(ids(&listed).len(), 3, "the filter {hold:?} takes them");
        let (code, doc) = qj(&spool, &["hold", hold[0], hold[1]]);
        assert_eq!(code, 0, "{doc}");
        assert_eq!(held(&spool), 3, "hold {hold:?}: {doc}");
        let (code, doc) = qj(&spool, &["hold", hold[0], &hold[1].to_lowercase()]);
        assert_eq!(code, 1, "already held: {doc}");
        let (code, doc) = qj(&spool, &["release", release[0], release[1]]);
        assert_eq!(code, 0, "release {release:?} after hold {hold:?}: {doc}");
        assert_eq!(held(&spool), 0, "{doc}");
        assert!(
            doc["holds"]["domains"].as_array().unwrap().is_empty()
                && doc["holds"]["connectors"].as_array().unwrap().is_empty(),
            "{doc}"
        );
    }

    // A connector the rules do not have: said so, nothing held.
    let (code, doc) = qj(
        &spool,
        &["hold", "--connector", "Daed", "--domain", "x.example"],
    );
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["skipped"][0]["what"], "send connector Daed", "{doc}");
    assert_eq!(
        strings(&doc["done"]),
        [s("domain x.example")].into(),
        "{doc}"
    );
    assert!(doc["holds"]["connectors"].as_array().unwrap().is_empty());
    let (code, _) = qj(&spool, &["release", "--domain", "x.example"]);
    assert_eq!(code, 0);

    let (code, doc) = qj(&spool, &["hold", &m[0].to_lowercase()]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(held(&spool), 1);
    let (code, doc) = qj(&spool, &["hold", "00000000DEADBEEF"]);
    assert_eq!(code, 1, "not queued: {doc}");
    assert!(
        doc["holds"]["messages"].as_array().unwrap().len() == 1,
        "a hold on nothing is not kept: {doc}"
    );
    let (code, doc) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(held(&spool), 0);
    relay.terminate().await;
}

/// A bounce reports only as the sender asked and only what it failed: nothing for
/// NOTIFY=NEVER, nothing for a message from `<>` (a report of a report), and for a message
/// whose other recipient was delivered, a report naming the pending recipient alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_bounce_reports_only_as_asked_and_only_what_it_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = start(&spool, dead_port(), sink.addr.port(), None, &[]);
    let dead = ["user@dead.example"];
    let never = [s("never")];
    send(
        relay.addr,
        "app@origin.example",
        &dead,
        " NOTIFY=NEVER",
        &never,
    )
    .await;
    send(relay.addr, "", &dead, "", &[s("null")]).await;
    let both = ["half@out.example", "half@dead.example"];
    let half = [s("half")];
    send(
        relay.addr,
        "app@origin.example",
        &both,
        " NOTIFY=FAILURE",
        &half,
    )
    .await;
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    assert!(
        wait_until(20, || {
            let (_, doc) = qj(&spool, &["list", "--state", "delivered"]);
            ids(&doc).len() == 1
        })
        .await
    );
    let (_, doc) = qj(&spool, &["list"]);
    assert_eq!(ids(&doc).len(), 3, "{doc}");
    let (code, reply) = qj(&spool, &["bounce", "--domain", "DEAD.example."]);
    assert_eq!(code, 0, "{reply}");
    assert_eq!(strings(&reply["done"]), ids(&doc).into_iter().collect());

    assert!(wait_until(20, || sink.messages().len() == 2).await);
    assert!(
        wait_until(20, || queue(&spool, &["list"]).status.code() == Some(1)).await,
        "nothing left, no report queued"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = sink.messages();
    assert_eq!(got.len(), 2, "the delivery and one report");
    let report = got.iter().find(|m| m.mail_from.is_empty()).unwrap();
    assert_eq!(report.rcpts, ["app@origin.example"]);
    let text = data_text(report);
    assert!(
        text.contains("<half@origin.example>")
            && text.contains("Final-Recipient: rfc822; half@dead.example")
            && !text.contains("half@out.example")
            && text.contains("Action: failed"),
        "{text}"
    );
    let fails = relay.track(&["--event", "FAIL"]);
    assert_eq!(fails.len(), 3, "one FAIL per bounced recipient: {fails:?}");
    relay.terminate().await;
}

/// Runs the relay on `spool` expecting it to refuse to start: its exit code and its log.
fn refuses_to_start(spool: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("relay")
        .arg(root().join("tests/fixtures/relay/forward.mailflow"))
        .arg("--spool")
        .arg(spool)
        .args([
            "--hostname",
            "relay.test",
            "--listen",
            "Loopback=127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the relay started on a damaged spool");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out))
}

/// A damaged holds file (garbage, a folder in its place) keeps the relay from starting with
/// a message naming it, and the queue command says the same; nothing is delivered, deleted
/// or released because of it. A symlink in its place is replaced, never written through.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_holds_file_stops_the_relay_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let dead = dead_port();
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    let m = stuck(&relay, &spool, "damaged-", 2).await;
    let (code, _) = qj(&spool, &["hold", &m[0]]);
    assert_eq!(code, 0);
    relay.terminate().await;
    let file = spool.join("holds.json");
    let good = std::fs::read(&file).unwrap();

    std::fs::write(&file, b"\x00\xffnot json{{{").unwrap();
    let (code, log) = refuses_to_start(&spool);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("holds.json"), "{log}");
    let out = queue(&spool, &["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("holds.json"), "{}", text(&out));
    let out = queue(&spool, &["release", "--all"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"\x00\xffnot json{{{",
        "left for the administrator to look at"
    );

    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    let (code, log) = refuses_to_start(&spool);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("holds.json"), "{log}");
    let out = queue(&spool, &["hold", &m[1]]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("holds.json"), "{}", text(&out));
    std::fs::remove_dir(&file).unwrap();

    // A symlink to a file elsewhere is read, and replaced by the next change.
    let elsewhere = tmp.path().join("elsewhere.json");
    std::fs::write(&elsewhere, &good).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    assert_eq!(held(&spool), 1, "the hold survived all this");
    let (code, doc) = qj(&spool, &["retry", "--all"]);
    assert_eq!(code, 0, "{doc}");
    assert!(wait_until(10, || back.messages().len() == 1).await);
    let (code, doc) = qj(&spool, &["hold", "--domain", "x.example"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        std::fs::read(&elsewhere).unwrap(),
        good,
        "not written through"
    );
    assert!(!std::fs::symlink_metadata(&file).unwrap().is_symlink());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(back.messages().len(), 1, "the held one stays");
    let (_, doc) = qj(&spool, &["list"]);
    assert_eq!(ids(&doc), [m[0].clone()], "nothing lost");
    relay.terminate().await;
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A message whose DATA gets 250 through a fresh SMTP session within `secs`.
async fn smtp_serves(addr: std::net::SocketAddr, subject: &str, secs: u64) -> bool {
    let go = async {
        send(
            addr,
            "app@origin.example",
            &["user@dead.example"],
            "",
            &[s(subject)],
        )
        .await;
    };
    tokio::time::timeout(Duration::from_secs(secs), go)
        .await
        .is_ok()
}

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
/// answers of a 30 MB message would pile up. Meanwhile SMTP and the socket keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn the_socket_flooded_costs_bounded_descriptors_and_memory() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let log = tmp.path().join("relay.log");
    let mut relay = start(&spool, dead_port(), dead_port(), Some(&log), &[]);
    let pid = relay.child.id();
    let sock = spool.join("admin.sock");

    // A file limit as tight as a service's: 150 descriptors above what the relay uses.
    let limit = open_fds(pid) + 150;
    let set = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(set.success());
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
        u.write_all(request.as_bytes()).unwrap();
        unread.push(u);
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    let rss = status_kib(pid, "VmRSS:");
    assert!(
        smtp_serves(relay.addr, "during-unread-flood", 10).await,
        "SMTP under unread answers"
    );
    assert!(
        rss < before + 500 * 1024,
        "24 unread 40 MB answers: RSS {before} -> {rss} KiB"
    );
    told_busy(&sock);
    drop(unread);
    served(&spool, &["show", &id]).await;
    relay.terminate().await;
    no_panics(&log);
}

/// Every file under `dir`: its path, size and modification time.
fn files(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                let name = e.path().strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, (md.len(), md.modified().unwrap()));
            }
        }
    }
    out
}

fn chown(path: &Path, owner: &str) {
    let ok = Command::new("chown")
        .args(["-R", owner])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// `mailflow queue ARGS --spool SPOOL` run as `user`.
fn queue_as(user: &str, spool: &Path, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", user, "--", BIN, "queue"])
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .unwrap()
}

/// With the relay stopped, the spool belongs to its user: anyone else (root included) is
/// refused and writes nothing; its user deletes and holds, and at the next start what was
/// deleted is not delivered and what was held stays held until released.
#[tokio::test(flavor = "multi_thread")]
async fn the_stopped_spool_is_its_owners_and_what_they_do_there_holds() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = tmp.path().join("spool");
    let dead = dead_port();
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    let m = stuck(&relay, &spool, "offline-", 3).await;
    relay.terminate().await;

    chown(&spool, "nobody");
    let before = files(&spool);
    for args in [
        vec!["list"],
        vec!["hold", &m[0]],
        vec!["delete", &m[1]],
        vec!["retry", "--all"],
    ] {
        let out = queue(&spool, &args);
        assert_eq!(out.status.code(), Some(2), "root: {}", text(&out));
        assert!(text(&out).contains("uid 65534"), "{}", text(&out));
    }
    assert_eq!(files(&spool), before, "a refused command writes nothing");

    let out = queue_as("nobody", &spool, &["delete", &m[1], "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = queue_as(
        "nobody",
        &spool,
        &["hold", &m[0], "--domain", "nothing.example"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = queue_as("nobody", &spool, &["hold", "00000000DEADBEEF"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = queue_as("nobody", &spool, &["bounce", &m[2]]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = queue_as("nobody", &spool, &["list", "--format", "json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&doc), [m[0].clone(), m[2].clone()]);
    assert!(
        files(&spool).keys().all(|f| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(spool.join(f)).unwrap().uid() == 65534
        }),
        "what the owner's commands wrote stays the owner's"
    );

    // Back to the relay's user (root here) and started: m1 is gone, m0 held, m2 goes.
    chown(&spool, "root");
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    assert_eq!(held(&spool), 1);
    let (code, doc) = qj(&spool, &["retry", "--all"]);
    assert_eq!(code, 0, "{doc}");
    assert!(wait_until(10, || back.messages().len() == 1).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(back.messages().len(), 1, "m0 is held");
    let (code, _) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0);
    assert!(wait_until(10, || back.messages().len() == 2).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got: BTreeSet<String> = back
        .messages()
        .iter()
        .map(|r| message_id(&data_text(r)))
        .collect();
    let want: BTreeSet<String> = ["<offline-0@origin.example>", "<offline-2@origin.example>"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want, "the deleted one is never delivered");
    relay.terminate().await;
}

/// An administrator's `queue list` on the stopped spool at the moment the relay starts
/// (the spool is theirs for an instant) does not keep the relay from starting.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_starts_while_the_queue_is_read_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    stuck(&relay, &spool, "starting-", 2).await;
    relay.terminate().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (spool, stop) = (spool.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut codes = BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let out = queue(&spool, &["list"]);
                    *codes.entry(out.status.code()).or_insert(0) += 1;
                }
                codes
            })
        })
        .collect();
    for _ in 0..5 {
        let (code, log) = {
            let mut child = Command::new(BIN)
                .arg("relay")
                .arg(root().join("tests/fixtures/relay/forward.mailflow"))
                .arg("--spool")
                .arg(&spool)
                .args([
                    "--hostname",
                    "relay.test",
                    "--listen",
                    "Loopback=127.0.0.1:0",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            let mut r = std::io::BufReader::new(child.stdout.take().unwrap());
            std::io::BufRead::read_line(&mut r, &mut line).unwrap();
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let out = child.wait_with_output().unwrap();
            (line, text(&out))
        };
        assert!(code.contains("listeners"), "the relay did not start: {log}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let codes = r.join().unwrap();
        assert!(
            codes.keys().all(|c| *c == Some(0) || *c == Some(2)),
            "{codes:?}"
        );
    }
}

fn held_count(spool: &Path) -> u64 {
    let (_, doc) = qj(spool, &["list", "--state", "held", "--limit", "1"]);
    doc["matched"].as_u64().unwrap_or(0)
}

/// A send connector held with 1,000 messages queued, through a kill -9 and a clean
/// restart: nothing goes while held; released, every message arrives once.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_held_messages_survive_kill_9_and_arrive_once_released() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let out = sink.addr.port();
    let mut relay = start(&spool, dead_port(), out, None, &[]);
    let (code, _) = qj(&spool, &["hold", "--connector", "Out"]);
    assert_eq!(code, 0);
    let acknowledged = load(&relay, "held-", 1000).await;
    assert!(wait_until(20, || held_count(&spool) == 1000).await);
    assert_eq!(metric(&relay, "mailflow_queue_held_deliveries"), 1000);

    relay.kill9();
    let mut relay = start(&spool, dead_port(), out, None, &[]);
    assert_eq!(held_count(&spool), 1000, "after kill -9");
    relay.terminate().await;
    let mut relay = start(&spool, dead_port(), out, None, &[]);
    assert_eq!(held_count(&spool), 1000, "after a clean restart");
    assert_eq!(metric(&relay, "mailflow_queue_held_deliveries"), 1000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(sink.messages().is_empty(), "nothing goes while held");

    let (code, doc) = qj(&spool, &["release", "--connector", "out"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        wait_until(60, || sink.messages().len() >= 1000).await,
        "{} arrived",
        sink.messages().len()
    );
    let mut arrived: BTreeMap<String, usize> = BTreeMap::new();
    for m in sink.messages() {
        *arrived.entry(message_id(&data_text(&m))).or_default() += 1;
    }
    assert!(arrived.values().all(|n| *n == 1), "delivered twice");
    assert_eq!(arrived.into_keys().collect::<BTreeSet<_>>(), acknowledged);
    assert!(wait_until(10, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    assert_eq!(metric(&relay, "mailflow_queue_size"), 0);
    relay.terminate().await;
}

/// Ids in lower case, unknown ids, `--older-than` at its edges, `--domain` with a trailing
/// dot or in capitals, `retry --domain` touching only that domain's recipient of a message
/// that has two; every exit code and JSON reply as docs/relay.md gives them.
#[tokio::test(flavor = "multi_thread")]
async fn filters_and_exit_codes_are_what_the_docs_say() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let dead = dead_port();
    let mut relay = start(&spool, dead, dead_port(), None, &[]);
    let two = ["a@dead.example", "b@else.example"];
    send(relay.addr, "app@origin.example", &two, "", &[s("two")]).await;
    let m = stuck(&relay, &spool, "one-", 1).await;
    let (_, doc) = qj(&spool, &["list", "--recipient", "b@else"]);
    let both = ids(&doc)[0].clone();
    let one = m[0].clone();
    let unknown = "00000000DEADBEEF";

    let (code, doc) = qj(&spool, &["show", &both.to_lowercase()]);
    assert_eq!((code, doc["reply"].as_str()), (0, Some("message")), "{doc}");
    let (code, doc) = qj(&spool, &["show", unknown]);
    assert_eq!((code, doc["reply"].as_str()), (1, Some("missing")), "{doc}");
    for action in ["delete", "retry", "bounce"] {
        let (code, doc) = qj(&spool, &[action, unknown]);
        assert_eq!(code, 1, "{action}: {doc}");
        assert_eq!(doc["skipped"][0]["why"], "not in the queue", "{doc}");
    }
    for target in [
        vec![unknown],
        vec!["--connector", "Nope"],
        vec!["--domain", "x."],
    ] {
        let mut args = vec!["release"];
        args.extend(target);
        let (code, doc) = qj(&spool, &args);
        assert_eq!(code, 1, "{args:?}: {doc}");
    }
    for args in [
        vec!["delete"],
        vec!["retry"],
        vec!["delete", &one, "--all"],
        vec!["bounce", &one, "--domain", "dead.example"],
        vec!["hold"],
        vec!["release"],
        vec!["release", &one, "--all"],
        vec!["list", "--older-than", "-1h"],
        vec!["list", "--older-than", "4y"],
        vec!["list", "--state", "stuck"],
    ] {
        let out = queue(&spool, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let out = queue(&spool, &["export", unknown]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let count = |args: &[&str]| {
        let (code, doc) = qj(&spool, args);
        (code, doc["matched"].as_u64().unwrap_or(0))
    };
    assert_eq!(count(&["list", "--older-than", "0s"]), (0, 2));
    assert_eq!(count(&["list", "--older-than", "500ms"]), (0, 2));
    assert_eq!(count(&["list", "--older-than", "1000d"]), (1, 0));
    assert_eq!(
        count(&["list", "--older-than", "99999999999999999d"]),
        (1, 0)
    );
    assert_eq!(count(&["list", "--domain", "DEAD.Example."]), (0, 2));
    assert_eq!(count(&["list", "--domain", "else.example."]), (0, 1));
    assert_eq!(count(&["list", "--domain", "example"]), (1, 0));
    assert_eq!(count(&["list", "--connector", "dead"]), (0, 2));
    assert_eq!(count(&["list", "--sender", "<>"]), (1, 0));
    let (code, doc) = qj(&spool, &["summary", "--domain", "ELSE.EXAMPLE"]);
    assert_eq!(code, 0);
    let dests = doc["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 1, "{doc}");
    assert_eq!(dests[0]["domain"], "else.example");

    // Retry one domain: only that domain's recipient of the message with two goes.
    let back = Sink::start_on(dead, SinkOptions::default()).await;
    let (code, doc) = qj(&spool, &["retry", "--domain", "DEAD.EXAMPLE."]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["deliveries"], 2, "{doc}");
    assert!(wait_until(10, || back.messages().len() == 2).await);
    assert!(wait_until(10, || count(&["list"]) == (0, 1)).await);
    let (_, doc) = qj(&spool, &["show", &both]);
    let rcpts = doc["message"]["recipients"].as_array().unwrap();
    let state = |addr: &str| {
        rcpts
            .iter()
            .find(|r| r["address"] == addr)
            .map(|r| (r["state"].clone(), r["next_attempt"].as_u64()))
            .unwrap()
    };
    assert_eq!(state("a@dead.example").0, "delivered", "{doc}");
    let (st, next) = state("b@else.example");
    assert_eq!(st, "deferred", "{doc}");
    assert!(next.unwrap() > support_now() + 3000, "untouched: {doc}");
    assert_eq!(count(&["list", "--state", "delivered"]), (0, 1));
    let (code, doc) = qj(&spool, &["delete", &both.to_lowercase()]);
    assert_eq!((code, strings(&doc["done"])), (0, [both].into()), "{doc}");
    assert_eq!(queue(&spool, &["list"]).status.code(), Some(1), "empty");
    assert_eq!(metric(&relay, "mailflow_queue_size"), 0);
    relay.terminate().await;
}

fn support_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
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
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let log = tmp.path().join("relay.log");
    let mut relay = start(&spool, dead_port(), dead_port(), Some(&log), &[]);
    let pid = relay.child.id();
    let m = stuck(&relay, &spool, "hostile-", 2).await;
    let sock = spool.join("admin.sock");
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

/// A hold put on a connector mid-load stops it: only the attempts in flight at that moment
/// (at most the destination's concurrency) finish; held messages deleted or bounced then
/// never go; released, the rest arrive once each.
#[tokio::test(flavor = "multi_thread")]
async fn a_hold_mid_load_stops_it_and_a_release_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let log = tmp.path().join("relay.log");
    let hop = SlowHop::start(Duration::from_millis(50)).await;
    let mut relay = start(&spool, dead_port(), hop.addr.port(), Some(&log), &[]);
    let (code, _) = qj(&spool, &["hold", "--connector", "Out"]);
    assert_eq!(code, 0);
    let acknowledged = load(&relay, "mid-", 300).await;
    let (code, _) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0);
    assert!(wait_until(20, || hop.delivered().len() >= 40).await);
    let (code, doc) = qj(&spool, &["hold", "--connector", "OUT"]);
    assert_eq!(code, 0, "{doc}");
    let at_hold = hop.delivered().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = hop.delivered().len();
    assert!(
        after <= at_hold + 20,
        "{at_hold} delivered at the hold, {after} two seconds later"
    );
    assert!(after < 300, "the hold stopped nothing");
    let (_, held_doc) = qj(&spool, &["list", "--state", "held"]);
    let held_ids = ids(&held_doc);
    assert_eq!(held_ids.len() + after, 300, "held + delivered");
    assert_eq!(
        metric(&relay, "mailflow_queue_held_deliveries"),
        held_ids.len() as u64
    );

    let (gone, bounced) = (&held_ids[..10], &held_ids[10..20]);
    let mut args = vec!["delete"];
    args.extend(gone.iter().map(String::as_str));
    let (code, doc) = qj(&spool, &args);
    assert_eq!(
        (code, doc["done"].as_array().unwrap().len()),
        (0, 10),
        "{doc}"
    );
    let mut args = vec!["bounce"];
    args.extend(bounced.iter().map(String::as_str));
    let (code, doc) = qj(&spool, &args);
    assert_eq!(
        (code, doc["done"].as_array().unwrap().len()),
        (0, 10),
        "{doc}"
    );

    let (code, _) = qj(&spool, &["release", "--connector", "out"]);
    assert_eq!(code, 0);
    assert!(
        wait_until(30, || hop.delivered().len() >= 280).await,
        "{}",
        hop.delivered().len()
    );
    assert!(wait_until(10, || hop.reports().len() >= 10).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut arrived: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, data) in hop.delivered() {
        *arrived.entry(message_id(&data)).or_default() += 1;
    }
    assert!(arrived.values().all(|n| *n == 1), "delivered twice");
    assert_eq!(arrived.len(), 280);
    let removed = message_ids_of(&held_doc, &held_ids[..20].iter().cloned().collect());
    assert_eq!(removed.len(), 20);
    assert!(
        removed.iter().all(|id| !arrived.contains_key(id)),
        "deleted or bounced, then delivered"
    );
    assert!(arrived.keys().all(|id| acknowledged.contains(id)));
    assert_eq!(hop.reports().len(), 10, "one report per bounce");
    for r in hop.reports() {
        let about: Vec<_> = acknowledged.iter().filter(|id| r.contains(*id)).collect();
        assert_eq!(about.len(), 1, "{r}");
        assert!(
            !arrived.contains_key(about[0]),
            "bounced and delivered: {r}"
        );
    }
    assert!(wait_until(10, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    relay.terminate().await;
    no_panics(&log);
}

/// A message held past its lifetime does not expire while held; released, it bounces as it
/// would have, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_held_past_its_lifetime_bounces_once_released() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = start(
        &spool,
        dead_port(),
        sink.addr.port(),
        None,
        &["--lifetime", "3s"],
    );
    let (code, _) = qj(&spool, &["hold", "--domain", "dead.example"]);
    assert_eq!(code, 0);
    send(
        relay.addr,
        "app@origin.example",
        &["late@dead.example"],
        "",
        &[s("late")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(held(&spool), 1, "held mail does not expire");
    assert!(sink.messages().is_empty(), "no report while held");
    let (code, _) = qj(&spool, &["release", "--domain", "DEAD.EXAMPLE"]);
    assert_eq!(code, 0);
    assert!(wait_until(10, || sink.messages().len() == 1).await);
    assert!(wait_until(10, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = sink.messages();
    assert_eq!(got.len(), 1, "one report");
    assert!(got[0].mail_from.is_empty());
    let dsn = data_text(&got[0]);
    assert!(
        dsn.contains("Action: failed") && dsn.contains("late@dead.example"),
        "{dsn}"
    );
    relay.terminate().await;
}

/// A bounce racing deliveries of messages with two recipients in two domains: each
/// recipient is delivered or named in its sender's report, never both, never neither, and
/// none is delivered twice.
#[tokio::test(flavor = "multi_thread")]
async fn bounce_racing_half_delivered_messages_reports_only_the_undelivered_half() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let log = tmp.path().join("relay.log");
    let hop = SlowHop::start(Duration::from_millis(5)).await;
    let mut relay = start(
        &spool,
        dead_port(),
        hop.addr.port(),
        Some(&log),
        &["--destination-concurrency", "2"],
    );
    // two.example's half waits while one.example's goes: the bounce meets messages half
    // delivered, half being delivered and not yet attempted.
    let (code, _) = qj(
        &spool,
        &["hold", "--connector", "Out", "--domain", "two.example"],
    );
    assert_eq!(code, 0);
    let subjects: Vec<String> = (0..150).map(|i| format!("pair-{i}")).collect();
    let rcpts = ["x@one.example", "y@two.example"];
    let mut tasks = Vec::new();
    for part in subjects.chunks(50) {
        let (part, addr) = (part.to_vec(), relay.addr);
        tasks.push(tokio::spawn(async move {
            send(addr, "app@origin.example", &rcpts, "", &part).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (code, _) = qj(&spool, &["release", "--connector", "Out"]);
    assert_eq!(code, 0);
    assert!(wait_until(20, || hop.delivered().len() >= 30).await);
    let (code, reply) = qj(&spool, &["bounce", "--all"]);
    assert!(code == 0 || code == 1, "{reply}");
    let (code, _) = qj(&spool, &["release", "--all"]);
    assert_eq!(code, 0);
    assert!(wait_until(40, || queue(&spool, &["list"]).status.code() == Some(1)).await);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut delivered: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (_, to, data) in hop.delivered() {
        for r in to {
            *delivered.entry((message_id(&data), r)).or_default() += 1;
        }
    }
    assert!(delivered.values().all(|n| *n == 1), "delivered twice");
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    for r in hop.reports() {
        let about: Vec<String> = subjects
            .iter()
            .map(|s| format!("<{s}@origin.example>"))
            .filter(|id| r.contains(&format!("Message-ID: {id}\r\n")))
            .collect();
        assert_eq!(about.len(), 1, "{r}");
        for rcpt in rcpts {
            if r.contains(&format!("Final-Recipient: rfc822; {rcpt}")) {
                let pair = (about[0].clone(), rcpt.to_string());
                assert!(
                    !delivered.contains_key(&pair),
                    "{pair:?} delivered and reported failed"
                );
                assert!(reported.insert(pair), "reported twice");
            }
        }
    }
    let half = subjects.iter().any(|s| {
        let id = format!("<{s}@origin.example>");
        let d = |r: &str| delivered.contains_key(&(id.clone(), r.to_string()));
        d(rcpts[0]) != d(rcpts[1])
    });
    assert!(half, "no message was caught half delivered");
    for s in &subjects {
        for rcpt in rcpts {
            let pair = (format!("<{s}@origin.example>"), rcpt.to_string());
            assert!(
                delivered.contains_key(&pair) || reported.contains(&pair),
                "{pair:?} neither delivered nor reported"
            );
        }
    }
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
    let limit = open_fds(pid) + 10;
    let set = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(set.success());
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

/// A symlink planted where the holds file is written before it replaces the old one
/// (`holds.json.tmp`) is not written through, online or offline: the file it points at
/// keeps its bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_planted_temporary_holds_file_is_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let mut relay = start(&spool, dead_port(), dead_port(), None, &[]);
    let plant = || {
        let link = spool.join("holds.json.tmp");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
    };
    plant();
    let (code, doc) = qj(&spool, &["hold", "--domain", "a.example"]);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "online: {doc}"
    );
    assert_eq!(code, 0, "{doc}");
    relay.terminate().await;
    plant();
    let (code, doc) = qj(&spool, &["hold", "--domain", "b.example"]);
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious\n",
        "offline: {doc}"
    );
    assert_eq!(code, 0, "{doc}");
    let (_, doc) = qj(&spool, &["list"]);
    assert_eq!(
        doc["holds"]["domains"],
        serde_json::json!(["a.example", "b.example"])
    );
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
