//! `mailflow check` on generated rule files: a small one (10 rewrite entries, 10 transport
//! rules) and a large one (100,000 entries, 10,000 rules), and parsing the large one alone.
//!
//! Run with `cargo bench --bench check` (add `-- --quick` for a shorter run). Set
//! `MAILFLOW_GEN_DUMP=/tmp/large.mailflow` to also write the large file, e.g. to compare it with
//! what `benches/gen_rules.py` writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "generate.rs"]
mod generate;

use criterion::{BatchSize, Criterion, Throughput, black_box};
use std::time::Duration;

const SMALL: (usize, usize) = (10, 10);
const LARGE: (usize, usize) = (100_000, 10_000);

/// The generated text, after making sure it checks clean: a benchmark of a file full of
/// diagnostics would measure the wrong thing.
fn clean_text(entries: usize, rules: usize) -> String {
    let text = generate::generate(entries, rules);
    let name = format!("generated-{entries}-{rules}.mailflow");
    let report = mailflow::check::check_text(&name, &text);
    if !report.diagnostics.is_empty() {
        eprintln!(
            "{}",
            mailflow::diagnostic::render::human(&report.diagnostics, &report.sources, false)
        );
        panic!(
            "the generated file ({entries} entries, {rules} rules) is not clean: {} diagnostics",
            report.diagnostics.len()
        );
    }
    assert_eq!(report.rule_sets.len(), 1);
    let set = &report.rule_sets[0].rules;
    assert_eq!(set.rewrites.len(), entries);
    assert_eq!(set.rules.len(), rules);
    text
}

fn bench_small(c: &mut Criterion) {
    let text = clean_text(SMALL.0, SMALL.1);
    let mut g = c.benchmark_group("check");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("small", |b| {
        b.iter(|| mailflow::check::check_text("small.mailflow", black_box(&text)));
    });
    g.finish();
}

fn bench_large(c: &mut Criterion) {
    let text = clean_text(LARGE.0, LARGE.1);
    if let Some(path) = std::env::var_os("MAILFLOW_GEN_DUMP") {
        std::fs::write(&path, &text).expect("write MAILFLOW_GEN_DUMP");
    }

    let mut g = c.benchmark_group("check");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(text.len() as u64));
    // The report is dropped outside the timing: freeing it is not part of checking.
    g.bench_function("large", |b| {
        b.iter_batched(
            || (),
            |()| mailflow::check::check_text("large.mailflow", black_box(&text)),
            BatchSize::PerIteration,
        );
    });
    g.finish();

    let mut g = c.benchmark_group("parse");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("large", |b| {
        b.iter_batched(
            || (),
            |()| mailflow::parse::parse_file(mailflow::source::FileId(0), black_box(&text)),
            BatchSize::PerIteration,
        );
    });
    g.finish();
}

criterion::criterion_group!(benches, bench_small, bench_large);
criterion::criterion_main!(benches);
