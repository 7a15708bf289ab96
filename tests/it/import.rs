//! `mailflow import exchange` and `mailflow import csv`, driven through the binary on the files
//! under `tests/fixtures/import/{exchange,csv}/` (adding a case is adding a file). Each
//! fixture is imported in a scratch folder holding the edge certificate (`--certificate
//! certs/edge.pem --key certs/edge.key` unless a `NAME.args` file next to it gives other
//! arguments); the rule text, the findings and the exit code are snapshotted, and `mailflow
//! check` must accept the rule text with no errors. A fixture named after a code (`E073-...`)
//! must report it; every other fixture except the verbatim seeds (`seed-NNN-*.ps1` without
//! `-fixed`/`-filled`) must import without errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mailflow");

struct Run {
    code: i32,
    text: String,
    findings: String,
}

fn import(kind: &str, fixture: &Path) -> (tempfile::TempDir, Run) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("certs")).unwrap();
    for f in ["edge.pem", "edge.key"] {
        std::fs::copy(
            root.join("rules/certs").join(f),
            tmp.path().join("certs").join(f),
        )
        .unwrap();
    }
    let name = fixture.file_name().unwrap();
    std::fs::copy(fixture, tmp.path().join(name)).unwrap();
    let args_file = fixture.with_extension("args");
    let extra: Vec<String> = if args_file.exists() {
        std::fs::read_to_string(&args_file)
            .unwrap()
            .split_whitespace()
            .map(String::from)
            .collect()
    } else if kind == "exchange" {
        ["--certificate", "certs/edge.pem", "--key", "certs/edge.key"]
            .map(String::from)
            .to_vec()
    } else {
        Vec::new()
    };
    let out = Command::new(BIN)
        .current_dir(tmp.path())
        .args(["import", kind])
        .arg(name)
        .args(["-o", "imported.mailflow", "--color", "never"])
        .args(&extra)
        .output()
        .unwrap();
    let text = std::fs::read_to_string(tmp.path().join("imported.mailflow")).unwrap();
    let run = Run {
        code: out.status.code().unwrap(),
        text,
        findings: String::from_utf8(out.stderr).unwrap(),
    };
    (tmp, run)
}

fn check_accepts(dir: &Path, label: &str) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["check", "imported.mailflow", "--color", "never"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{label}: `mailflow check` refuses the imported rule set:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("imported.mailflow")).unwrap()
    );
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(["fmt", "--check", "imported.mailflow", "--color", "never"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{label}: the imported rule set is not in `mailflow fmt` layout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn expectations(fixture: &Path, run: &Run) {
    let stem = fixture.file_stem().unwrap().to_string_lossy().to_string();
    let coded = stem.len() >= 4
        && (stem.starts_with('E') || stem.starts_with('W'))
        && stem[1..4].chars().all(|c| c.is_ascii_digit());
    if coded {
        let code = &stem[..4];
        assert!(
            run.findings.contains(&format!("[{code}]")),
            "{stem} should report {code}:\n{}",
            run.findings
        );
        if code.starts_with('E') {
            assert_eq!(run.code, 1, "{stem}: errors exit with 1");
        }
    }
    let verbatim_seed =
        stem.starts_with("seed-") && !stem.ends_with("-fixed") && !stem.ends_with("-filled");
    let may_fail = verbatim_seed || (coded && stem.starts_with('E'));
    if !may_fail {
        assert_eq!(
            run.code, 0,
            "{stem} should import without errors:\n{}",
            run.findings
        );
    }
    assert!(
        run.findings.contains("imported "),
        "{stem}: the summary line is missing"
    );
}

#[test]
fn exchange_fixtures_import_and_pass_check() {
    insta::glob!("../fixtures/import/exchange", "*.ps1", |path| {
        let (tmp, run) = import("exchange", path);
        expectations(path, &run);
        check_accepts(tmp.path(), &path.display().to_string());
        insta::assert_snapshot!(format!(
            "exit code {}\n\n{}\n{}",
            run.code, run.text, run.findings
        ));
    });
}

#[test]
fn csv_fixtures_import_and_pass_check() {
    insta::glob!("../fixtures/import/csv", "*.csv", |path| {
        let (tmp, run) = import("csv", path);
        expectations(path, &run);
        check_accepts(tmp.path(), &path.display().to_string());
        insta::assert_snapshot!(format!(
            "exit code {}\n\n{}\n{}",
            run.code, run.text, run.findings
        ));
    });
}

/// The imported seed 002 behaves like the hand-written rule set: the same rewrite and
/// transport-rule lines, in the same order, once check's W013 suggestion is applied to the
/// seed's `-AnyOfRecipientAddressContains` (rules/ writes `domain-is`). Neither relays for
/// anonymous clients: the seed's Accept-Any-Recipient is left out (W043).
#[test]
fn seed_002_matches_the_hand_translation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (_tmp, run) = import(
        "exchange",
        &root.join("tests/fixtures/import/exchange/seed-002-shared-domain-filled.ps1"),
    );
    assert_eq!(run.code, 0, "{}", run.findings);
    let by_hand = std::fs::read_to_string(root.join("rules/shared-domain.mailflow")).unwrap()
        + &std::fs::read_to_string(root.join("rules/shared-domain/transport-rules.mailflow"))
            .unwrap();
    let statements = |text: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|l| {
                l.starts_with("rewrite \"John")
                    || l.starts_with("rewrite \"Mary")
                    || l.starts_with("rule ")
                    || l.starts_with("priority ")
                    || l.starts_with("if ")
                    || *l == "stop"
                    || *l == "delete"
                    || l.starts_with("accept-oorg")
                    || *l == "accept-any-recipient"
                    || *l == "auth externally-secured"
                    || l.starts_with("accepted-domain tenant")
            })
            .map(String::from)
            .collect()
    };
    assert!(run.findings.contains("W043"), "{}", run.findings);
    let suggested: Vec<String> = statements(&run.text)
        .into_iter()
        .map(|l| match l.strip_prefix("if recipient contains \"") {
            Some(rest) => format!("if recipient domain-is {}", rest.trim_end_matches('"')),
            None => l,
        })
        .collect();
    assert_eq!(suggested, statements(&by_hand));
}

#[test]
fn stdout_and_unreadable_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["import", "csv", "rules/shared-domain/entries.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("# Imported from rules/shared-domain/entries.csv"));
    assert_eq!(text.matches("\nrewrite ").count(), 5, "{text}");

    let out = Command::new(BIN)
        .current_dir(root)
        .args([
            "import",
            "exchange",
            "tests/fixtures/import/exchange/E070-unsupported-cmdlet.ps1",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(json.to_string().contains("\"E070\""), "{json}");
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("accepted-domain contoso.com")
    );

    let out = Command::new(BIN)
        .args(["import", "exchange", "/nonexistent/file.ps1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    let out = Command::new(BIN)
        .current_dir(root)
        .args([
            "import",
            "exchange",
            "tests/fixtures/import/exchange/connectors.ps1",
            "--certificate",
            "certs/edge.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The importer never panics and its output always passes `check`, whatever part of a
/// command line it is given: every prefix of each fixture (cut at every 5th character, so
/// inside strings, brackets, parameters and hashtables).
#[test]
fn every_prefix_of_every_fixture_imports_into_a_rule_set_check_accepts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let options = mailflow::import::Options::default();
    let dir = root.join("tests/fixtures/import/exchange");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ps1") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cuts: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .step_by(5)
            .chain([text.len()])
            .collect();
        for cut in cuts {
            let part = &text[..cut];
            let result = mailflow::import::exchange(Path::new("cut.ps1"), part, &options);
            let report = mailflow::check::check_text("imported.mailflow", &result.text);
            assert!(
                !report.has_errors(),
                "{} cut at {cut}:\n{}\n{:#?}",
                path.display(),
                result.text,
                report.diagnostics
            );
            cases += 1;
        }
    }
    assert!(cases > 500, "{cases}");
}
