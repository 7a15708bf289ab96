//! `mailflow diff` as a reviewer runs it: each case under tests/fixtures/diff (a rule change
//! in one rewrite entry, one rule priority, one connector range, one group member) reported
//! as a pull request comment and snapshotted; the git forms (`diff HEAD~1 FILE`, `--base`)
//! in a temporary repository; exit codes for CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support::relay::{BIN, root};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn diff(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("diff")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// `diff OLD NEW CAPTURE --no-tests --format json` in `dir`, which must run (exit 0).
fn diff_capture(dir: &Path, old: &str, new: &str, capture: &Path) -> Value {
    let capture = capture.to_str().unwrap();
    let out = diff(dir, &[old, new, capture, "--no-tests", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An admin port, and `candidate` as the `--shadow` rule set.
fn shadow_args(candidate: &Path) -> Vec<String> {
    vec![
        "--admin".into(),
        "127.0.0.1:0".into(),
        "--shadow".into(),
        candidate.display().to_string(),
    ]
}

/// `mailflow reload` through the relay's admin port.
fn reload(relay: &crate::support::relay::Relay) -> Output {
    Command::new(BIN)
        .args(["reload", "--admin", &relay.admin.unwrap().to_string()])
        .output()
        .unwrap()
}

/// The shadow counters on the relay's /metrics: messages, differences, and differences in
/// acceptance and in recipients.
fn shadow_counts(relay: &crate::support::relay::Relay) -> [u64; 4] {
    let text = crate::support::relay::http_get(relay.admin.unwrap(), "/metrics");
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    [
        value("mailflow_shadow_messages_total"),
        value("mailflow_shadow_differences_total"),
        value("mailflow_shadow_difference_kinds_total{kind=\"acceptance\"}"),
        value("mailflow_shadow_difference_kinds_total{kind=\"recipients\"}"),
    ]
}

/// The `digest` label of an info metric (`mailflow_rules_info`, ...).
fn digest(relay: &crate::support::relay::Relay, name: &str) -> String {
    crate::support::relay::http_get(relay.admin.unwrap(), "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{digest=\"")))
        .map(|rest| rest.trim_end_matches("\"} 1").to_string())
        .unwrap_or_default()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn each_case_reports_what_the_change_does() {
    insta::glob!("../fixtures/diff", "*/old.mailflow", |old| {
        let dir = old.parent().unwrap();
        let mut args = vec!["old.mailflow", "new.mailflow"];
        if dir.join("messages").is_dir() {
            args.push("messages");
        }
        let md = diff(dir, &[&args[..], &["--format", "markdown"]].concat());
        assert_eq!(md.status.code(), Some(0), "{}", text(&md));
        insta::assert_snapshot!(String::from_utf8(md.stdout).unwrap());
        // CI's form: JSON, and exit 1 because something changed.
        let json = diff(
            dir,
            &[&args[..], &["--format", "json", "--fail-on-change"]].concat(),
        );
        assert_eq!(json.status.code(), Some(1), "{}", text(&json));
        let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
        assert!(!doc["changes"].as_array().unwrap().is_empty());
        // A rule set compared with itself changes nothing.
        let same = diff(dir, &["old.mailflow", "old.mailflow", "--fail-on-change"]);
        assert_eq!(same.status.code(), Some(0), "{}", text(&same));
        assert!(
            text(&same).contains("0 treated differently"),
            "{}",
            text(&same)
        );
    });
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=t@example.com", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

/// The old rule set read from git: a revision of the file being reviewed, includes and all.
#[test]
fn old_may_be_a_git_revision_of_new() {
    let case = root().join("tests/fixtures/diff/rewrite-entry");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    git(repo, &["init", "-q"]);
    std::fs::create_dir(repo.join("rules")).unwrap();
    // The entries live in an included file, as a real rule set splits them: the old side
    // must see the included file as it was too.
    let old = std::fs::read_to_string(case.join("old.mailflow")).unwrap();
    let new = std::fs::read_to_string(case.join("new.mailflow")).unwrap();
    let split = |text: &str| {
        let (main, entries): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| !l.starts_with("rewrite "));
        (
            format!("{}\ninclude \"entries.mailflow\"\n", main.join("\n")),
            entries.join("\n") + "\n",
        )
    };
    let (old_main, old_entries) = split(&old);
    let (new_main, new_entries) = split(&new);
    assert_eq!(old_main, new_main, "only the included entries differ");
    std::fs::write(repo.join("rules/edge.mailflow"), &old_main).unwrap();
    std::fs::write(repo.join("rules/entries.mailflow"), &old_entries).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "old"]);
    std::fs::write(repo.join("rules/entries.mailflow"), &new_entries).unwrap();

    let by_rev = diff(repo, &["HEAD", "rules/edge.mailflow", "--format", "json"]);
    assert_eq!(by_rev.status.code(), Some(0), "{}", text(&by_rev));
    let by_files = diff(&case, &["old.mailflow", "new.mailflow", "--format", "json"]);
    let changes = |o: &Output| {
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            doc["messages"].clone(),
            doc["changes"].clone(),
            doc["by_kind"].clone(),
        )
    };
    assert_eq!(changes(&by_rev), changes(&by_files));
    let base = diff(
        repo,
        &["--base", "HEAD", "rules/edge.mailflow", "--fail-on-change"],
    );
    assert_eq!(base.status.code(), Some(1), "{}", text(&base));
    assert!(
        text(&base).starts_with("rules/edge.mailflow at HEAD -> rules/edge.mailflow\n"),
        "{}",
        text(&base)
    );

    // Committed: nothing left to review.
    git(repo, &["commit", "-qam", "new"]);
    let clean = diff(repo, &["HEAD", "rules/edge.mailflow", "--fail-on-change"]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    let before = diff(repo, &["HEAD~1", "rules/edge.mailflow", "--fail-on-change"]);
    assert_eq!(before.status.code(), Some(1), "{}", text(&before));

    let bad = diff(repo, &["no-such-rev", "rules/edge.mailflow"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("neither a rule file nor a git revision"),
        "{}",
        text(&bad)
    );
}

/// A message without its envelope is an error that names the file to write, not a guess.
#[test]
fn a_message_without_an_envelope_is_refused() {
    let case = root().join("tests/fixtures/diff/connector-range");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(case.join("messages/scan.eml"), tmp.path().join("scan.eml")).unwrap();
    let out = diff(
        &case,
        &["old.mailflow", "new.mailflow", tmp.path().to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("scan.envelope"), "{}", text(&out));
}

/// A relay on the group-member case's old rules, every send connector to `sink`, with
/// `extra` arguments.
fn group_member_relay(
    spool: &Path,
    sink: &crate::support::sink::Sink,
    extra: &[String],
) -> crate::support::relay::Relay {
    relay_on(
        &root().join("tests/fixtures/diff/group-member/old.mailflow"),
        spool,
        sink,
        extra,
    )
}

/// A relay on `rules` (the group-member case's connectors), every send connector to `sink`.
fn relay_on(
    rules: &Path,
    spool: &Path,
    sink: &crate::support::sink::Sink,
    extra: &[String],
) -> crate::support::relay::Relay {
    use crate::support::relay::s;
    let mut args = vec![
        s("--listen"),
        s("Internet=127.0.0.1:0"),
        s("--listen"),
        s("Apps=127.0.0.1:0"),
        s("--smart-host"),
        format!("Tenant 1={}", sink.addr),
        s("--smart-host"),
        format!("Out={}", sink.addr),
    ];
    args.extend_from_slice(extra);
    crate::support::relay::Relay::start(rules, spool, &args)
}

/// One message from dana@contoso.com to `to`, in its own session.
async fn send_one(addr: std::net::SocketAddr, to: &str) {
    let (mut c, _) = crate::support::raw::Raw::connect(addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<dana@contoso.com>").await.code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{to}>")).await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!(
        "From: Dana <dana@contoso.com>\r\nTo: {to}\r\nMessage-ID: <{to}>\r\nSubject: a private subject\r\n\r\na secret body\r\n.\r\n"
    ))
    .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// Captured traffic from a real relay, replayed: the relay records what the evaluator saw
/// (never the body, only the header fields rules read), and `diff` finds which of those
/// messages a group change treats differently.
#[tokio::test(flavor = "multi_thread")]
async fn captured_traffic_from_a_relay_is_replayed() {
    use crate::support::relay::{s, wait_until};
    use crate::support::sink::{Sink, SinkOptions};
    let case = root().join("tests/fixtures/diff/group-member");
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = group_member_relay(&spool, &sink, &[s("--capture")]);
    for to in ["board@example.com", "ann@example.com"] {
        send_one(relay.addr, to).await;
    }
    assert!(
        wait_until(10, || sink.messages().len() == 2).await,
        "board (one transaction to tenant1) and ann"
    );
    relay.terminate().await;

    let capture = spool.join("capture");
    let log = std::fs::read_to_string(capture.join("capture.log")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(!log.contains("secret body"), "never the body: {log}");
    assert!(
        !log.contains("private subject"),
        "no rule reads the Subject: {log}"
    );
    let first: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(first["envelope"]["to"][0], "board@example.com");
    assert_eq!(
        first["envelope"]["connector"], "Internet",
        "the connector the relay chose"
    );
    assert_eq!(first["envelope"]["client-ip"], "127.0.0.1");
    assert!(first["size"].as_u64().unwrap() > 50);

    let doc = diff_capture(&case, "old.mailflow", "new.mailflow", &capture);
    assert_eq!(doc["messages"], 2);
    let changes = doc["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{doc}");
    assert!(
        changes[0]["name"]
            .as_str()
            .unwrap()
            .ends_with("capture.log:1")
    );
    assert_eq!(changes[0]["kinds"], serde_json::json!(["recipients"]));
    // Replayed under the rules it was captured with, nothing differs.
    let same = diff(
        &case,
        &[
            "old.mailflow",
            "old.mailflow",
            capture.to_str().unwrap(),
            "--no-tests",
            "--fail-on-change",
        ],
    );
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
}

/// Captured traffic names the connector the relay chose; replayed, the new rules choose
/// again by their own listen addresses and ranges, so a change that stops a client being
/// accepted shows. The capture records the address the client reached, so rules that split
/// a wildcard listener into the addresses in use change nothing for mail that came to them.
#[tokio::test(flavor = "multi_thread")]
async fn captured_traffic_meets_the_new_rules_connector_ranges() {
    use crate::support::relay::{Relay, dead_port, s};
    use crate::support::sink::{Sink, SinkOptions};
    let tmp = tempfile::tempdir().unwrap();
    let port = dead_port();
    let old = std::fs::read_to_string(root().join("tests/fixtures/diff/group-member/old.mailflow"))
        .unwrap()
        .replace("listen 0.0.0.0:25", &format!("listen 0.0.0.0:{port}"));
    let listen_on = |ip: &str| old.replace("listen 0.0.0.0:", &format!("listen {ip}:"));
    let narrowed = old.replacen(
        "  auth anonymous",
        "  remote 10.0.0.0/8\n  auth anonymous",
        1,
    );
    for (name, text) in [
        ("old", old.clone()),
        ("split", listen_on("127.0.0.1")),
        ("elsewhere", listen_on("127.0.0.2")),
        ("narrowed", narrowed),
    ] {
        std::fs::write(tmp.path().join(format!("{name}.mailflow")), text).unwrap();
    }
    // The same rule sets as --shadow candidates on the live relay.
    let candidate = tmp.path().join("candidate.mailflow");
    std::fs::copy(tmp.path().join("split.mailflow"), &candidate).unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let spool = tmp.path().join("spool");
    let mut args = vec![
        s("--smart-host"),
        format!("Tenant 1={}", sink.addr),
        s("--smart-host"),
        format!("Out={}", sink.addr),
        s("--capture"),
    ];
    args.extend(shadow_args(&candidate));
    let mut relay = Relay::start(&tmp.path().join("old.mailflow"), &spool, &args);
    let reached = ([127, 0, 0, 1], port).into();
    send_one(reached, "ann@example.com").await;
    assert_eq!(
        shadow_counts(&relay),
        [1, 0, 0, 0],
        "split: nothing changes"
    );
    std::fs::copy(tmp.path().join("elsewhere.mailflow"), &candidate).unwrap();
    assert!(reload(&relay).status.success());
    send_one(reached, "bob@example.com").await;
    assert_eq!(shadow_counts(&relay), [2, 1, 1, 1], "elsewhere: refused");
    relay.terminate().await;

    let capture = spool.join("capture");
    let changes = |new: &str| {
        let doc = diff_capture(tmp.path(), "old.mailflow", new, &capture);
        assert_eq!(doc["messages"], 2, "{doc}");
        doc["changes"].as_array().unwrap().clone()
    };
    assert!(
        changes("split.mailflow").is_empty(),
        "the address it came to is still bound"
    );
    for refusing in ["elsewhere.mailflow", "narrowed.mailflow"] {
        let c = changes(refusing);
        assert_eq!(c.len(), 2, "{refusing}: {c:?}");
        assert_eq!(c[0]["kinds"][0], "acceptance", "{refusing}: {c:?}");
    }
}

/// `relay --shadow`: a candidate rule set beside the live one, counted in /metrics, changing
/// nothing; reloaded with the live rules.
#[tokio::test(flavor = "multi_thread")]
async fn shadow_rules_count_differences_on_a_live_relay() {
    use crate::support::relay::wait_until;
    use crate::support::sink::{Sink, SinkOptions};
    let case = root().join("tests/fixtures/diff/group-member");
    let tmp = tempfile::tempdir().unwrap();
    let candidate = tmp.path().join("candidate.mailflow");
    std::fs::copy(case.join("new.mailflow"), &candidate).unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = group_member_relay(&tmp.path().join("spool"), &sink, &shadow_args(&candidate));
    send_one(relay.addr, "board@example.com").await;
    send_one(relay.addr, "ann@example.com").await;
    // Messages, differences, of which in acceptance and in recipients.
    assert_eq!(shadow_counts(&relay), [2, 1, 0, 1]);
    // Which candidate: its digest beside the live rules' one.
    let digest_of = |name: &str| digest(&relay, name);
    let (candidate_digest, live_digest) = (
        digest_of("mailflow_shadow_rules_info"),
        digest_of("mailflow_rules_info"),
    );
    assert_eq!(candidate_digest.len(), 64, "{candidate_digest}");
    assert_ne!(candidate_digest, live_digest);
    // Nothing changed: the board got the live rules' two members, not Cleo.
    assert!(wait_until(10, || sink.messages().len() == 2).await);
    let rcpts: Vec<String> = sink
        .rcpts_seen()
        .iter()
        .map(|r| r.address.clone())
        .collect();
    assert!(!rcpts.iter().any(|r| r.contains("cleo")), "{rcpts:?}");

    // The candidate becomes the live rules' twin; a reload takes it.
    std::fs::copy(case.join("old.mailflow"), &candidate).unwrap();
    let out = reload(&relay);
    assert!(out.status.success(), "{}", text(&out));
    send_one(relay.addr, "board@example.com").await;
    assert_eq!(
        digest_of("mailflow_shadow_rules_info"),
        digest_of("mailflow_rules_info"),
        "the reloaded candidate is the live rules' twin"
    );
    assert_eq!(shadow_counts(&relay), [3, 1, 0, 1]);

    // A candidate whose `Internet` connector no longer takes this client chooses the
    // connector itself (the live rules named theirs) and would refuse the message.
    let narrowed = std::fs::read_to_string(case.join("old.mailflow"))
        .unwrap()
        .replacen(
            "  auth anonymous",
            "  remote 10.0.0.0/8\n  auth anonymous",
            1,
        );
    std::fs::write(&candidate, narrowed).unwrap();
    let out = reload(&relay);
    assert!(out.status.success(), "{}", text(&out));
    send_one(relay.addr, "ann@example.com").await;
    // Refused, its recipient's fate changes too.
    assert_eq!(shadow_counts(&relay), [4, 2, 1, 2]);
    relay.terminate().await;
}

/// The candidate is reloaded even when the live rules' reload is refused: an operator
/// trying a change edits the candidate, and a broken live file must not hide it.
#[tokio::test(flavor = "multi_thread")]
async fn the_shadow_reloads_when_the_live_reload_is_refused() {
    use crate::support::sink::{Sink, SinkOptions};
    let case = root().join("tests/fixtures/diff/group-member");
    let tmp = tempfile::tempdir().unwrap();
    let (live, candidate) = (
        tmp.path().join("live.mailflow"),
        tmp.path().join("c.mailflow"),
    );
    std::fs::copy(case.join("old.mailflow"), &live).unwrap();
    std::fs::copy(case.join("old.mailflow"), &candidate).unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let mut relay = relay_on(
        &live,
        &tmp.path().join("spool"),
        &sink,
        &shadow_args(&candidate),
    );
    let digest_of = |name: &str| digest(&relay, name);
    let (live_before, candidate_before) = (
        digest_of("mailflow_rules_info"),
        digest_of("mailflow_shadow_rules_info"),
    );
    assert_eq!(live_before, candidate_before);
    std::fs::write(&live, "rule \"broken\" {\n").unwrap();
    std::fs::copy(case.join("new.mailflow"), &candidate).unwrap();
    let out = reload(&relay);
    assert!(
        !out.status.success(),
        "the live reload is refused: {}",
        text(&out)
    );
    assert_eq!(digest_of("mailflow_rules_info"), live_before);
    let now = digest_of("mailflow_shadow_rules_info");
    assert!(now.len() == 64 && now != candidate_before, "{now}");
    relay.terminate().await;
}

/// A `test` block that names its receive connector and its client, but not the address
/// it connected to, is judged on that connector under both rule sets: a partner connector
/// added on another port for the client's range does not take it (`mailflow test` on the
/// new rules would not move it either), so nothing is reported.
#[test]
fn a_test_that_names_its_connector_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let old = "accepted-domain example.com internal-relay

receive-connector \"Internet\" {
  listen 0.0.0.0:25
  auth anonymous
}

send-connector \"Out\" {
  address-space *
}

test \"Partner mail arrives on the Internet connector\" {
  connector \"Internet\"
  client-ip 203.0.113.5
  from a@partner.example
  to b@example.com
}
";
    let new = old.replacen(
        "send-connector",
        "receive-connector \"Partner\" {\n  listen 0.0.0.0:2525\n  remote 203.0.113.0/24\n  auth partner\n}\n\nsend-connector",
        1,
    );
    std::fs::write(tmp.path().join("old.mailflow"), old).unwrap();
    std::fs::write(tmp.path().join("new.mailflow"), new).unwrap();
    let out = diff(
        tmp.path(),
        &[
            "old.mailflow",
            "new.mailflow",
            "--format",
            "json",
            "--fail-on-change",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["messages"], 1, "{doc}");
    assert_eq!(doc["changes"], serde_json::json!([]), "{doc}");
}
