//! `mailflow test`.

use super::Exit;
use mailflow::diagnostic::render;
use mailflow::source::SourceMap;
use mailflow::testing::{TestResult, run_tests};
use std::path::PathBuf;

fn location(sources: &SourceMap, span: mailflow::source::Span) -> String {
    let path = sources.path(span.file).display().to_string();
    match sources.get(span.file) {
        Some(f) => {
            let (line, col) = f.line_col(span.start as usize);
            format!("{path}:{line}:{col}")
        }
        None => path,
    }
}

fn print_result(r: &TestResult, sources: &SourceMap, verbose: bool) {
    if r.passed() {
        println!("PASS {}  {}", location(sources, r.span), r.name);
        if !verbose {
            return;
        }
    } else {
        println!("FAIL {}  {}", location(sources, r.span), r.name);
        for m in &r.mismatches {
            println!("    at {}", location(sources, m.span));
            println!("      expected: {}", m.expected);
            println!("      actual:   {}", m.actual);
        }
    }
    println!("    trace:");
    for s in &r.verdict.trace {
        println!(
            "      [{}] {}",
            serde_json::to_value(s.stage)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            s.text
        );
    }
}

pub(super) fn run(paths: &[PathBuf], allow: &[PathBuf], verbose: bool) -> Exit {
    let report = match mailflow::check::check_paths_allowing(paths, allow) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    if report.has_errors() {
        print!(
            "{}",
            render::human(&report.diagnostics, &report.sources, false)
        );
        println!("the rule sets have errors, so no test was run");
        println!("0 passed, 0 failed");
        return Exit::Findings;
    }
    let (mut passed, mut failed) = (0, 0);
    for set in &report.rule_sets {
        let table = match mailflow::compile::compile(&set.rules) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: {e}", set.root.display());
                return Exit::Error;
            }
        };
        for r in run_tests(&set.rules, &table) {
            print_result(&r, &report.sources, verbose);
            if r.passed() {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        Exit::Findings
    } else {
        Exit::Clean
    }
}
