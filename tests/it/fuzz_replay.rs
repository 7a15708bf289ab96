#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The stable, deterministic side of the `smtp_command` and `header_rewrite` fuzz targets in
//! `fuzz/`: every file under `tests/fixtures/fuzz/<target>/` (inputs the fuzzer once found
//! failing, saved as they were) is run through the very checks the target runs, which this
//! test includes from `fuzz/fuzz_targets/`. Adding a case is adding a file.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/fuzz_targets/header_checks.rs"]
mod header_checks;
use crate::smtp_checks;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cases(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = root().join("tests/fixtures/fuzz").join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    out
}

/// Runs `check` on every case, catching panics so that one report names every failing file.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let cases = cases(target);
    assert!(!cases.is_empty(), "no cases for {target}");
    let failed: Vec<String> = cases
        .iter()
        .filter(|(_, data)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(data))).is_err()
        })
        .map(|(p, _)| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "failing cases: {failed:#?}");
}

#[test]
fn smtp_command_cases() {
    replay("smtp_command", smtp_checks::run);
}

#[test]
fn header_rewrite_cases() {
    let sets = header_checks::load(root());
    replay("header_rewrite", |data| header_checks::run(&sets, data));
}
