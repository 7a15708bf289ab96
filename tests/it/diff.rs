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
