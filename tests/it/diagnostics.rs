//! One fixture per diagnostic: `tests/fixtures/diagnostics/<CODE>[-what].mailflow` must report
//! `<CODE>`, and its rendered report is snapshotted. Clean fixtures under
//! `tests/fixtures/ok/` must report nothing. Adding a case is adding a file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailflow::check::{check_file, check_file_options};
use mailflow::diagnostic::{Code, render};
use mailflow::lint::LintOptions;
use std::path::{Path, PathBuf};

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .to_path_buf()
}

/// The time the fixtures are checked at, 2027-03-01 00:00 UTC: the certificates of the W07x
/// fixtures (`certs/make.py`) are dated around it, so their findings do not change with the
/// clock.
const FIXTURES_CHECKED_AT: i64 = 1_803_859_200;

#[test]
fn every_fixture_reports_its_code() {
    insta::glob!("../fixtures/diagnostics", "*.mailflow", |path| {
        let rel = relative(path);
        let report = check_file_options(&rel, &LintOptions::at(FIXTURES_CHECKED_AT)).unwrap();
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
/// have a `.ps1` fixture in `tests/fixtures/import/exchange/`, run by `tests/it/import.rs`.
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
    insta::glob!("../fixtures/ok", "*.mailflow", |path| {
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
        "docs/diagnostics.md is out of date: run `MAILFLOW_UPDATE_DOCS=1 cargo test --test it diagnostics::docs_list_every_code`"
    );
}

/// The errors `check_text` reports for generated rule text, as (code, message).
fn codes_of(text: &str) -> Vec<(&'static str, String)> {
    mailflow::check::check_text("generated.mailflow", text)
        .diagnostics
        .iter()
        .filter(|d| d.severity() == mailflow::diagnostic::Severity::Error)
        .map(|d| (d.code.id(), d.message.clone()))
        .collect()
}

/// One rule whose subject condition lists these values.
fn rule_with(op: &str, values: impl Iterator<Item = String>) -> String {
    let list: Vec<String> = values.map(|v| format!("\"{v}\"")).collect();
    format!(
        "rule \"Generated\" {{\n  if subject {op} {}\n  delete\n}}\n",
        list.join(", ")
    )
}

// The rule-set totals of E045 need inputs too big for a fixture file; they are generated here,
// each just over its limit, with a case just under where the limit is cheap to reach.

#[test]
fn too_many_contains_words_is_e045() {
    use mailflow::resolve::MAX_WORDS;
    let under = codes_of(&rule_with(
        "contains",
        (0..MAX_WORDS).map(|i| format!("w{i}")),
    ));
    assert!(under.is_empty(), "{under:?}");
    // Repeats count: each word written is a slot of its own.
    let over = codes_of(&rule_with(
        "contains",
        (0..=MAX_WORDS).map(|i| format!("w{}", i % 10)),
    ));
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(over[0].0, "E045");
    assert!(
        over[0].1.contains("more than 200000 `contains` words"),
        "{over:?}"
    );
}

#[test]
fn too_many_contains_word_bytes_is_e045() {
    use mailflow::resolve::{MAX_TEXT_CHARS, MAX_WORD_BYTES};
    let n = MAX_WORD_BYTES / MAX_TEXT_CHARS + 1;
    let word = |i: usize| format!("{i:08}{}", "x".repeat(MAX_TEXT_CHARS - 8));
    let text = rule_with("contains-words", (0..n).map(word));
    let over = codes_of(&text);
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(over[0].0, "E045");
    assert!(over[0].1.contains("add up to more than 4 MiB"), "{over:?}");
    // The same words again in another rule cost nothing more: the automaton holds each once.
    let twice = rule_with("contains", (0..n - 1).map(word));
    assert!(codes_of(&format!("{twice}{}", twice.replace("Generated", "Again"))).is_empty());
}

#[test]
fn too_many_patterns_is_e045() {
    use mailflow::resolve::MAX_MATCHES_PATTERNS;
    let over = codes_of(&rule_with(
        "matches",
        (0..=MAX_MATCHES_PATTERNS).map(|i| format!("^p{i}$")),
    ));
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(over[0].0, "E045");
    assert!(
        over[0].1.contains("more than 20000 `matches` patterns"),
        "{over:?}"
    );
}

#[test]
fn patterns_compiling_too_large_together_is_e045() {
    // Five Unicode word characters compile to about 91 KB: 370 of them pass 32 MiB, though
    // each is well within the 512 KiB of one pattern.
    let one = r"\\w{5}";
    let fits = codes_of(&rule_with("matches", (0..300).map(|_| one.to_string())));
    assert!(fits.is_empty(), "{fits:?}");
    let over = codes_of(&rule_with("matches", (0..400).map(|_| one.to_string())));
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(over[0].0, "E045");
    assert!(
        over[0].1.contains("compile to more than 32 MiB"),
        "{over:?}"
    );
}

#[test]
fn an_over_long_pattern_is_e045_and_a_large_one_e041() {
    let long = codes_of(&rule_with("matches", std::iter::once("a".repeat(1001))));
    assert_eq!(long.len(), 1, "{long:?}");
    assert_eq!(long[0].0, "E045");
    assert!(
        long[0].1.contains("this pattern is 1001 characters long"),
        "{long:?}"
    );
    // No counted repetition, yet 100 Unicode classes: too large to compile (once caught only
    // when the evaluator compiled it, so it never matched).
    let classes = codes_of(&rule_with("matches", std::iter::once(r"\\w".repeat(100))));
    assert_eq!(classes.len(), 1, "{classes:?}");
    assert_eq!(classes[0].0, "E041");
}

#[test]
fn files_over_the_size_limit_are_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.mailflow");
    // Sparse: nothing is written to disk, and nothing is read.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(mailflow::load::FILE_SIZE_LIMIT + 1)
        .unwrap();
    let err = check_file(&big).unwrap_err().to_string();
    assert!(
        err.contains("the file is 128.0 MiB, more than the 128 MiB limit"),
        "{err}"
    );
    let csv = tmp.path().join("entries.csv");
    std::fs::rename(&big, &csv).unwrap();
    let root = tmp.path().join("root.mailflow");
    std::fs::write(&root, "import rewrites \"entries.csv\"\n").unwrap();
    let report = check_file(&root).unwrap();
    assert_eq!(report.diagnostics.len(), 1, "{:?}", report.diagnostics);
    let d = &report.diagnostics[0];
    assert_eq!(d.code.id(), "E002");
    let rendered = render::human(&report.diagnostics, &report.sources, false);
    assert!(
        rendered.contains("more than the 128 MiB limit"),
        "{rendered}"
    );
}
