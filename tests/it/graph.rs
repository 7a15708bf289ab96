//! `mailflow graph` on every rule set under `rules/`: a Mermaid and a DOT snapshot each (a new
//! rule set is a new case, no Rust needed), Graphviz accepts every DOT output, every
//! connector and rule appears in order, and the diagram in the README is the current one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailflow::check::check_file;
use mailflow::graph::{Format, render};
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mailflow");

fn rule_set(path: &Path) -> mailflow::model::RuleSet {
    let report = check_file(path).unwrap();
    assert!(!report.has_errors(), "{}", path.display());
    report.rule_sets.into_iter().next().unwrap().rules
}

#[test]
fn every_rule_set_draws_in_both_formats() {
    insta::glob!("../../rules", "*.mailflow", |path| {
        let set = rule_set(path);
        insta::assert_snapshot!("mermaid", render(&set, Format::Mermaid));
        insta::assert_snapshot!("dot", render(&set, Format::Dot));
    });
}

#[test]
fn graphviz_accepts_every_dot_output() {
    insta::glob!("../../rules", "*.mailflow", |path| {
        let dot = render(&rule_set(path), Format::Dot);
        let mut child = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("Graphviz `dot` is needed (.ci/run installs the graphviz package)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(dot.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}\n{dot}", path.display());
        assert!(!err.contains("Warning"), "{}: {err}", path.display());
        assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
    });
}

/// Every connector and rule is drawn, the rules in priority order, and the way from the
/// receive connectors to the send connectors is connected.
#[test]
fn every_item_is_drawn_in_order() {
    insta::glob!("../../rules", "*.mailflow", |path| {
        let set = rule_set(path);
        let text = render(&set, Format::Mermaid);
        for c in &set.receive_connectors {
            assert!(text.contains(&c.name.value), "{}", c.name.value);
        }
        for c in &set.send_connectors {
            assert!(text.contains(&c.name.value), "{}", c.name.value);
        }
        let mut at = 0;
        for r in &set.rules {
            let name = r.name.value.replace('"', "#quot;");
            let found = text[at..]
                .find(&name)
                .unwrap_or_else(|| panic!("{} missing or out of order", r.name.value));
            at += found;
        }
        for i in 0..set.rules.len().saturating_sub(1) {
            assert!(text.contains(&format!("rule{i} --> rule{}", i + 1)));
        }
        for i in 0..set.send_connectors.len() {
            assert!(text.contains(&format!("| sc{i}\n")), "sc{i} unreachable");
        }
    });
}

#[test]
fn readme_shows_the_current_diagram() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("```mermaid\n")
        .expect("a mermaid block in the README")
        + 11;
    let end = start + readme[start..].find("```").unwrap();
    let want = render(
        &rule_set(&root.join("rules/shared-domain.mailflow")),
        Format::Mermaid,
    );
    assert_eq!(
        &readme[start..end],
        want,
        "README.md's diagram is stale: paste `mailflow graph rules/shared-domain.mailflow`"
    );
}

#[test]
fn cli_draws_a_file_and_refuses_a_broken_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args(["graph", "--format", "dot"])
        .arg(root.join("rules/cloud-groups.mailflow"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("digraph mailflow {"));
    assert!(text.contains("To Office 365"));

    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.mailflow");
    std::fs::write(
        &broken,
        "send-connector \"Out\" { address-space * }\nrule {\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("graph")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("E001"));

    let out = Command::new(BIN)
        .args(["graph", "/nonexistent/rules.mailflow"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
