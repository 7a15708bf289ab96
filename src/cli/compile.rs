//! `mailflow compile`.

use super::Exit;
use mailflow::compile::artifact;
use mailflow::diagnostic::render;
use std::path::{Path, PathBuf};

pub(super) fn run(rules: &Path, allow: &[PathBuf], output: &PathBuf) -> Exit {
    let report = match mailflow::check::check_file_allowing(rules, allow) {
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
        eprintln!("error: the rule set has errors; nothing was written");
        return Exit::Findings;
    }
    let Some(set) = report.rule_sets.first() else {
        eprintln!("error: no rule set found");
        return Exit::Error;
    };
    let table = match mailflow::compile::compile(&set.rules) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Findings;
        }
    };
    let bytes = match artifact::to_bytes(&set.rules) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    };
    let digest = artifact::digest_of(&bytes);
    if let Err(e) = std::fs::write(output, &bytes) {
        eprintln!("error: cannot write `{}`: {e}", output.display());
        return Exit::Error;
    }
    let r = &set.rules;
    println!(
        "compiled {}: {} accepted domains, {} receive and {} send connectors, {} rewrite entries, {} rules, {} recipients",
        rules.display(),
        r.accepted_domains.len(),
        r.receive_connectors.len(),
        r.send_connectors.len(),
        r.rewrites.len(),
        table.rules.rules().len(),
        r.recipients.len()
    );
    println!(
        "wrote {} ({} bytes); lookup structures in memory: about {} KiB",
        output.display(),
        bytes.len(),
        table.memory() / 1024
    );
    // The same digest each relay started from this file shows in /metrics and its ready line.
    println!("rules digest: {digest}");
    Exit::Clean
}
