//! The examples in the documentation are real: every ```mailflow block in README.md,
//! docs/language.md and the diagnostic explanations parses (the explanations' examples show
//! mistakes, but mistakes of meaning, not of syntax, unless they explain E001).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailflow::diagnostic::Code;
use mailflow::parse::parse_file;
use mailflow::source::FileId;
use std::path::Path;

fn blocks(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == "```mailflow" => current = Some(String::new()),
            Some(b) if line.trim_start() == "```" => {
                out.push(std::mem::take(b));
                current = None;
            }
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

fn assert_parses(origin: &str, block: &str) {
    let (_, diags) = parse_file(FileId(0), block);
    assert!(
        diags.is_empty(),
        "an example in {origin} does not parse:\n{block}\n{diags:#?}"
    );
}

#[test]
fn documentation_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for doc in ["README.md", "docs/language.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for b in blocks(&text) {
            assert_parses(doc, &b);
            seen += 1;
        }
    }
    assert!(
        seen >= 10,
        "expected the docs to hold examples, found {seen}"
    );
}

#[test]
fn explanation_examples_parse() {
    let mut failures = Vec::new();
    for code in Code::ALL {
        if *code == Code::E001 {
            continue;
        }
        for b in blocks(code.info().explanation) {
            if !parse_file(FileId(0), &b).1.is_empty() {
                failures.push(format!("{}:\n{b}", code.id()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "examples that do not parse:\n{}",
        failures.join("\n")
    );
}
