//! docs/operations.md's example alert rules: valid for Prometheus (`promtool check rules`),
//! firing when they should (`promtool test rules` on docs/prometheus-alerts.test.yml), and
//! naming only metrics a running relay's `/metrics` exports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::support;

use std::collections::BTreeSet;
use std::process::Command;
use support::relay::*;

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool (Debian package `prometheus`) is needed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_are_valid_and_fire_as_their_tests_say() {
    let text = promtool(&["check", "rules", "docs/prometheus-alerts.yml"]);
    assert!(text.contains("SUCCESS: 11 rules found"), "{text}");
    let text = promtool(&["test", "rules", "docs/prometheus-alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn the_alert_rules_name_only_metrics_the_relay_exports() {
    let rules = std::fs::read_to_string(root().join("docs/prometheus-alerts.yml")).unwrap();
    let used: BTreeSet<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("mailflow_"))
        .map(str::to_string)
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    let tmp = tempfile::tempdir().unwrap();
    let relay = Relay::start(
        &root().join("tests/fixtures/relay/forward.mailflow"),
        &tmp.path().join("spool"),
        &[
            s("--listen"),
            s("Loopback=127.0.0.1:0"),
            s("--admin"),
            s("127.0.0.1:0"),
        ],
    );
    let metrics = http_get(relay.admin.unwrap(), "/metrics");
    let exported: BTreeSet<String> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{metrics}");
}
