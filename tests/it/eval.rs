//! Evaluator cases as files: every rule set under `tests/fixtures/eval/` carries `test` blocks
//! that must all pass. Adding a case is adding a `test` block or a file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailflow::check::check_file;
use mailflow::compile::compile;
use mailflow::diagnostic::{Severity, render};
use mailflow::testing::run_tests;

#[test]
fn every_evaluator_fixture_passes() {
    let mut ran = 0;
    insta::glob!("../fixtures/eval", "*.mailflow", |path| {
        let rel = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(path);
        let report = check_file(std::path::Path::new(rel)).unwrap();
        let errors: Vec<_> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
            .cloned()
            .collect();
        assert!(
            errors.is_empty(),
            "{}",
            render::human(&errors, &report.sources, false)
        );
        let set = &report.rule_sets[0].rules;
        let table = compile(set).unwrap();
        for r in run_tests(set, &table) {
            ran += 1;
            assert!(
                r.passed(),
                "{}: `{}` failed: {:#?}\ntrace: {:#?}",
                rel.display(),
                r.name,
                r.mismatches,
                r.verdict.trace
            );
        }
    });
    assert!(ran >= 10, "only {ran} tests ran");
}
