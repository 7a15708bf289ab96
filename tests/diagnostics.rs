//! One fixture per diagnostic: `tests/fixtures/diagnostics/<CODE>[-what].mailflow` must report
//! `<CODE>`, and its rendered report is snapshotted. Clean fixtures under
//! `tests/fixtures/ok/` must report nothing. Adding a case is adding a file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailflow::check::check_file;
use mailflow::diagnostic::{Code, render};
use std::path::{Path, PathBuf};

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .to_path_buf()
}

#[test]
fn every_fixture_reports_its_code() {
    insta::glob!("fixtures/diagnostics/*.mailflow", |path| {
        let rel = relative(path);
        let report = check_file(&rel).unwrap();
        let stem = rel.file_stem().unwrap().to_string_lossy().to_string();
        let code = stem.get(..4).unwrap();
        assert!(
            report.diagnostics.iter().any(|d| d.code.id() == code),
            "{} should report {code}; it reported {:?}",
            rel.display(),
            report
                .diagnostics
                .iter()
                .map(|d| d.code.id())
                .collect::<Vec<_>>()
        );
        let rendered = render::human(&report.diagnostics, &report.sources, false);
        insta::assert_snapshot!(rendered);
    });
}

/// Codes of `check` have a rule-file fixture here; codes of `mailflow import` (E07x, W04x)
/// have a `.ps1` fixture in `tests/fixtures/import/exchange/`, run by `tests/import.rs`.
#[test]
fn every_code_has_a_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = Vec::new();
    for (dir, ext) in [
        ("tests/fixtures/diagnostics", ".mailflow"),
        ("tests/fixtures/import/exchange", ".ps1"),
    ] {
        names.extend(
            std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(ext)),
        );
    }
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.id())
        .filter(|id| !names.iter().any(|n| n.starts_with(id)))
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn clean_fixtures_report_nothing() {
    insta::glob!("fixtures/ok/*.mailflow", |path| {
        let rel = relative(path);
        let report = check_file(&rel).unwrap();
        assert!(
            report.diagnostics.is_empty(),
            "{}:\n{}",
            rel.display(),
            render::human(&report.diagnostics, &report.sources, false)
        );
    });
}

#[test]
fn docs_list_every_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/diagnostics.md");
    let generated = mailflow::diagnostic::codes::markdown();
    if std::env::var_os("MAILFLOW_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "docs/diagnostics.md is out of date: run `MAILFLOW_UPDATE_DOCS=1 cargo test --test diagnostics docs_list_every_code`"
    );
}
