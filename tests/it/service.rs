//! The relay as a service: `--user` drops every id of every thread after binding and mail
//! still flows (spool and tracking log written as that user); a spool open to others is
//! refused before anything listens; `--log-format json` writes one JSON object per line; the
//! packaged systemd unit passes `systemd-analyze verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use nix::unistd::{Uid, User};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use support::raw::Raw;
use support::relay::*;
use support::sink::{Sink, SinkOptions};

fn is_root() -> bool {
    Uid::effective().is_root()
}

fn forward_rules() -> std::path::PathBuf {
    root().join("tests/fixtures/relay/forward.mailflow")
}

/// One message through `relay` to `rcpt`.
async fn send_one(relay: &Relay, rcpt: &str, extra_header: &str) {
    let (mut c, greeting) = Raw::connect(relay.addr).await;
    assert_eq!(greeting.code, 220);
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<app@origin.example>").await.code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send(format!(
        "From: app@origin.example\r\n{extra_header}Subject: service\r\n\r\nbody\r\n.\r\n"
    ))
    .await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("QUIT").await.code, 221);
}

/// The values of a `Key:` line of /proc/PID/status.
fn status_ids(pid: u32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    line[key.len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        }
        out.push(p);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_drops_every_id_after_binding_and_mail_still_flows() {
    if !is_root() {
        eprintln!(
            "service::user_drops_every_id_after_binding_and_mail_still_flows: skipped, not root"
        );
        return;
    }
    let nobody = User::from_name("nobody").unwrap().expect("a `nobody` user");
    let tmp = tempfile::tempdir().unwrap();
    // The spool's parent must let the user through; the spool is the user's alone.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&spool, Some(nobody.uid.as_raw()), None).unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let relay = Relay::start(
        &forward_rules(),
        &spool,
        &[
            s("--listen"),
            s("Loopback=127.0.0.1:0"),
            s("--smart-host"),
            format!("Out={}", sink.addr),
            s("--admin"),
            s("127.0.0.1:0"),
            s("--user"),
            s("nobody"),
        ],
    );
    let pid = relay.child.id();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    assert_eq!(
        status_ids(pid, "Uid:"),
        vec![uid; 4],
        "real, effective, saved, fs"
    );
    assert_eq!(
        status_ids(pid, "Gid:"),
        vec![gid; 4],
        "real, effective, saved, fs"
    );
    let name = std::ffi::CString::new("nobody").unwrap();
    let mut groups: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
        .unwrap()
        .iter()
        .map(|g| g.as_raw())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let mut have = status_ids(pid, "Groups:");
    have.sort_unstable();
    assert_eq!(have, groups);
    assert!(!have.contains(&0));
    // No capability survives the switch from root.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for key in ["CapPrm:", "CapEff:", "CapAmb:"] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    // Every thread, the runtime's workers included.
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            line.split_whitespace()
                .skip(1)
                .all(|v| v == uid.to_string()),
            "{line}"
        );
    }

    send_one(&relay, "someone@elsewhere.example", "").await;
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    assert_eq!(sink.messages()[0].rcpts, vec!["someone@elsewhere.example"]);
    // The admin port bound before the drop still answers.
    assert!(http_get(relay.admin.unwrap(), "/metrics").contains("mailflow_"));

    let mut files = Vec::new();
    files_under(&spool, &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "seg")),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(spool.join("tracking")) && f.is_file()),
        "{files:?}"
    );
    for f in &files {
        assert_eq!(
            std::fs::metadata(f).unwrap().uid(),
            uid,
            "{} is not the user's",
            f.display()
        );
    }
    // The delivery's SEND event is written after the sink has the message.
    let sent = || {
        relay
            .track(&["--recipient", "someone@elsewhere.example"])
            .iter()
            .any(|e| e["event-id"] == "SEND")
    };
    assert!(
        wait_until(10, sent).await,
        "no SEND event in the tracking log"
    );
}

#[test]
fn a_spool_open_to_others_is_refused_and_nothing_listens() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A relay that wrongly starts is stopped by `timeout` (exit 124), not waited for.
    let out = Command::new("timeout")
        .args(["30", BIN, "relay"])
        .arg(forward_rules())
        .arg("--spool")
        .arg(&spool)
        .args(["--hostname", "relay.test", "--listen"])
        .arg(format!("Loopback=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no ready line: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shown = spool.display().to_string();
    assert!(
        stderr.contains(&format!(
            "error: spool folder {shown} is writable by group and others (mode 0777): anyone able to write the journal could inject mail"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("help: chmod go-w {shown}")),
        "{stderr}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // Nothing was created in it either.
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
}

/// A spool the user cannot create (its parent is root's): refused with the command that
/// makes it.
#[test]
fn a_spool_the_user_cannot_create_is_refused_with_the_fix() {
    if !is_root() {
        eprintln!(
            "service::a_spool_the_user_cannot_create_is_refused_with_the_fix: skipped, not root"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = tmp.path().join("spool");
    let out = Command::new("timeout")
        .args(["30", BIN, "relay"])
        .arg(forward_rules())
        .arg("--spool")
        .arg(&spool)
        .args(["--listen", "Loopback=127.0.0.1:0", "--user", "nobody"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains(&format!(
            "error: spool folder {} cannot be created by `nobody`",
            spool.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "help: install -d -o nobody -m 0700 {} (as root)",
            spool.display()
        )),
        "{stderr}"
    );
    assert!(!spool.exists());
}

#[test]
fn a_user_that_is_root_or_unknown_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    for (user, says) in [
        (
            "root",
            "--user `root`: names root (user or group): nothing would be dropped",
        ),
        (
            "nobody:root",
            "--user `nobody:root`: names root (user or group)",
        ),
        (
            "no-such-user-here",
            "--user `no-such-user-here`: no user `no-such-user-here` on this system",
        ),
    ] {
        let out = Command::new("timeout")
            .args(["30", BIN, "relay"])
            .arg(forward_rules())
            .arg("--spool")
            .arg(tmp.path().join("spool"))
            .args(["--listen", "Loopback=127.0.0.1:0", "--user", user])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{user}: {stderr}");
        assert!(stderr.contains(says), "{user}: {stderr}");
        assert!(out.stdout.is_empty());
    }
    assert!(!tmp.path().join("spool").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_each_parse_with_the_session_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("relay.log");
    let sink = Sink::start(SinkOptions::default()).await;
    let spool = tmp.path().join("spool");
    let relay = Relay::start_logged(
        &forward_rules(),
        &spool,
        &[
            s("--listen"),
            s("Loopback=127.0.0.1:0"),
            s("--smart-host"),
            format!("Out={}", sink.addr),
            s("--log"),
            s("info"),
            s("--log-format"),
            s("json"),
        ],
        Some(&log),
    );
    // A bare LF in the message is logged (info) with the session's client address.
    let (mut c, _) = Raw::connect(relay.addr).await;
    assert_eq!(c.cmd("EHLO c.test").await.code, 250);
    assert_eq!(c.cmd("MAIL FROM:<app@origin.example>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<someone@elsewhere.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send("Subject: bare\nFrom: app@origin.example\r\n\r\nbody\r\n.\r\n")
        .await;
    assert_eq!(c.reply().await.unwrap().code, 250);
    let local = c.stream.local_addr().unwrap();
    assert!(wait_until(20, || sink.messages().len() == 1).await);
    assert!(
        wait_until(10, || std::fs::read_to_string(&log)
            .unwrap()
            .contains("normalised"))
        .await
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines = 0;
    let mut session = None;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&v["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
        assert!(
            v["target"].as_str().unwrap().starts_with("mailflow"),
            "{line}"
        );
        if v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("normalised")
        {
            session = Some(v);
        }
        lines += 1;
    }
    assert!(lines >= 3, "{text}");
    let session = session.unwrap();
    assert_eq!(session["level"], "INFO");
    assert_eq!(session["fields"]["client"], local.to_string(), "{session}");
    assert!(!text.contains('\u{1b}'), "no colour codes");
}

/// The packaged unit, with ExecStart pointed at the binary under test (systemd-analyze
/// checks that it exists and is executable).
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(root().join("dist/mailflow.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/mailflow relay "),
        "{unit}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("mailflow.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/mailflow", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package `systemd`) is needed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Warnings (unknown keys, bad values) go to stderr without failing the run.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("mailflow.service"))
        .collect();
    assert!(own.is_empty(), "{stderr}");
    // An error in the unit is caught: the check is not vacuous.
    let broken = tmp.path().join("broken.service");
    std::fs::write(
        &broken,
        unit.replace("/usr/local/bin/mailflow", "/nonexistent/mailflow"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Its hardening, as systemd scores it: exposure 2.0 ("OK") at most, on a 0-10 scale.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Overall exposure level for mailflow.service"),
        "{text}"
    );
}

/// The unit's user, as systemd-sysusers would create it in an empty root.
#[test]
fn the_sysusers_file_creates_the_mailflow_user() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(format!("--root={}", tmp.path().display()))
        .arg(root().join("dist/mailflow.sysusers"))
        .output()
        .expect("systemd-sysusers (Debian package `systemd`) is needed");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Creating group 'mailflow'"), "{text}");
    assert!(
        text.contains("Creating user 'mailflow' (mailflow relay)"),
        "{text}"
    );
    assert!(!text.contains("rror"), "{text}");
}

/// `Type=notify`: READY=1 (with the pid) once the relay listens, STOPPING=1 on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("relay")
        .arg(forward_rules())
        .arg("--spool")
        .arg(tmp.path().join("spool"))
        .args(["--listen", "Loopback=127.0.0.1:0", "--log", "error"])
        .env("NOTIFY_SOCKET", &path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("READY=1\nMAINPID={}", child.id())
    );
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

/// Started as an ordinary user (`setpriv` takes root's place in the test): `--user` naming
/// another user is refused, naming the current one is accepted and changes nothing.
#[test]
fn user_when_not_root_must_be_the_current_user() {
    if !is_root() {
        eprintln!(
            "service::user_when_not_root_must_be_the_current_user: skipped, not root (it becomes nobody with setpriv)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let nobody = User::from_name("nobody").unwrap().expect("a `nobody` user");
    std::os::unix::fs::chown(&spool, Some(nobody.uid.as_raw()), None).unwrap();
    let as_nobody = |user: &str, secs: &str| {
        Command::new("timeout")
            .arg(secs)
            .arg("setpriv")
            .arg(format!("--reuid={}", nobody.uid))
            .arg(format!("--regid={}", nobody.gid))
            .arg("--clear-groups")
            .args([BIN, "relay"])
            .arg(forward_rules())
            .arg("--spool")
            .arg(&spool)
            .args([
                "--listen",
                "Loopback=127.0.0.1:0",
                "--log",
                "error",
                "--user",
                user,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (Debian package `util-linux`) is needed")
    };
    let out = as_nobody("root:root", "30");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("names root"), "{stderr}");
    let other = if nobody.name == "daemon" {
        "bin"
    } else {
        "daemon"
    };
    let out = as_nobody(other, "30");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: --user `{other}`: only root can switch users, and the relay runs as uid {}",
            nobody.uid
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // Its own name: the relay starts (and is stopped by `timeout`, exit 124).
    let out = as_nobody("nobody", "5");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ready: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(ready["ready"], true);
}

/// A reload reads the rules, certificates and keys as the `--user` the relay switched to:
/// rules only root can read are taken at the start, and the warning says then, not at the
/// first change, that every reload would fail; readable ones get no warning.
#[test]
fn rules_only_root_can_read_are_told_at_the_start() {
    if !is_root() {
        eprintln!("service::rules_only_root_can_read_are_told_at_the_start: skipped, not root");
        return;
    }
    let nobody = User::from_name("nobody").unwrap().expect("a `nobody` user");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rules = tmp.path().join("rules.mailflow");
    std::fs::copy(forward_rules(), &rules).unwrap();
    let warned = |mode: u32| {
        std::fs::set_permissions(&rules, std::fs::Permissions::from_mode(mode)).unwrap();
        let spool = tmp.path().join(format!("spool-{mode:o}"));
        std::fs::create_dir(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&spool, Some(nobody.uid.as_raw()), None).unwrap();
        let log = tmp.path().join(format!("relay-{mode:o}.log"));
        let relay = Relay::start_logged(
            &rules,
            &spool,
            &[
                s("--listen"),
                s("Loopback=127.0.0.1:0"),
                s("--user"),
                s("nobody"),
                s("--log"),
                s("warn"),
            ],
            Some(&log),
        );
        drop(relay);
        std::fs::read_to_string(&log).unwrap()
    };
    let log = warned(0o600);
    assert!(
        log.contains("as user `nobody` a reload would fail")
            && log.contains("rules.mailflow")
            && log.contains("readable by its group"),
        "{log}"
    );
    let log = warned(0o644);
    assert!(!log.contains("reload would fail"), "{log}");
}

/// Every file the relay makes in its spool (segments, the lock, holds, the tracking log,
/// captured traffic) is the service user's alone even under a umask of 000: only the
/// admin socket is shared, with the group (0660), by design.
#[tokio::test(flavor = "multi_thread")]
async fn spool_files_are_the_users_alone_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let relay = Relay::spawn(
        Command::new("sh")
            .args(["-c", "umask 000 && exec \"$@\"", "sh", BIN, "relay"])
            .arg(forward_rules())
            .arg("--spool")
            .arg(&spool)
            .args(["--hostname", "relay.test", "--log", "error", "--capture"])
            .args(["--listen", "Loopback=127.0.0.1:0", "--smart-host"])
            .arg(format!("Dead=127.0.0.1:{}", dead_port())),
        &spool,
    );
    send_one(&relay, "user@dead.example", "").await;
    let queue = |args: &[&str]| {
        Command::new(BIN)
            .arg("queue")
            .args(args)
            .arg("--spool")
            .arg(&spool)
            .output()
            .unwrap()
    };
    let listed = queue(&["list", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = doc["messages"][0]["id"].as_str().unwrap().to_string();
    assert!(queue(&["hold", &id]).status.success());
    assert!(wait_until(10, || relay.track(&["--event", "RECEIVE"]).len() == 1).await);
    let mut files = Vec::new();
    files_under(&spool, &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&spool).unwrap().display().to_string())
        .collect();
    for needed in [
        "queue/lock",
        "holds.json",
        "tracking/",
        "capture/",
        "queue/journal/",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(needed)),
            "{needed}: {names:?}"
        );
    }
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().mode() & 0o777;
        let shared = if f.ends_with("admin.sock") {
            0o660
        } else if f.is_dir() {
            0o700
        } else {
            0o600
        };
        assert_eq!(mode, shared, "{} is {mode:o}", f.display());
    }
}
