//! Several independent relays running one compiled rule set: each reports the rule set's
//! digest (ready line, `/metrics`), the same whether it started from the rule files or from
//! their `mailflow compile` output, changed by a reload that takes and kept by one that is
//! refused; and two relays behind a sender that fails over between them, one killed with
//! `kill -9` mid-load, lose nothing they acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

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
    let mut args = vec![
        s("--listen"),
        s("Loopback=127.0.0.1:0"),
        s("--admin"),
        s("127.0.0.1:0"),
        s("--smart-host"),
        format!("Out=127.0.0.1:{out}"),
        s("--smart-host"),
        format!("Dead=127.0.0.1:{out}"),
        s("--retry-min"),
        s("1s"),
        s("--retry-max"),
        s("1s"),
        s("--queue-interval"),
        s("1s"),
        s("--smtp-timeout"),
        s("5s"),
    ];
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
