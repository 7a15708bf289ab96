//! `mailflow queue` attacked as an outage, a careless administrator or a hostile local user
//! would, over the real binary, its socket and real TCP: commands racing a load delivered
//! to a slow next hop (nothing delivered twice, nothing lost, nothing both removed and
//! delivered), holds named carelessly, bounces that must not report, a damaged holds file,
//! a flooded socket, the stopped spool in the wrong hands, a kill -9 under a hold. This
//! file holds what the topics share: the slow next hop, the relay, the command runners.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod commands;
mod holds;
mod offline;
mod race;
mod socket;
mod stream;

use crate::support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
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

/// Where a test's relay keeps its spool, its log and its admin socket, in a temporary folder
/// (the first: removed when dropped).
pub(crate) fn place() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let (log, sock) = (tmp.path().join("relay.log"), spool.join("admin.sock"));
    (tmp, spool, log, sock)
}

/// The relay of these tests: forward.mailflow, dead.example through Dead on `dead`, the
/// rest through Out on `out`; retries an hour apart, so only the commands make things go.
pub(crate) fn start(
    spool: &Path,
    dead: u16,
    out: u16,
    log: Option<&Path>,
    extra: &[&str],
) -> Relay {
    let mut args = loopback(out, dead, "1h", "5s");
    args.extend(["--queue-interval", "1s", "--admin", "127.0.0.1:0"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    Relay::start_logged(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        spool,
        &args,
        log,
    )
}

/// Runs `mailflow queue ARGS --spool SPOOL`.
pub(crate) fn queue(spool: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .unwrap()
}

/// A command's output, both streams.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `queue ARGS --format json`: the exit code and the document.
pub(crate) fn qj(spool: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = queue(spool, &all);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out)));
    (out.status.code().unwrap(), doc)
}

/// The ids of a `list` reply.
pub(crate) fn ids(doc: &Value) -> Vec<String> {
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

/// Caps process `pid`'s open files at `above` more than it has open now (prlimit), as a
/// service's tight limit would; the limit.
fn limit_fds(pid: u32, above: usize) -> usize {
    let limit = open_fds(pid) + above;
    let set = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap();
    assert!(set.success());
    limit
}

/// `mailflow relay` on forward.mailflow and `spool`, its output piped, not yet started: for
/// tests that watch it refuse or race its start.
fn relay_command(spool: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("relay")
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
        .stderr(std::process::Stdio::piped());
    cmd
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

/// Now, in unix seconds.
pub(crate) fn support_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
