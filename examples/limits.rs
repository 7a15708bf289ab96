//! The measurements behind the rule-set limits (E045, BENCHMARKS.md "Rule-set limits"):
//! memory of the word automaton for word lists of several shapes, built with the same builder
//! settings as `compile::rules`, and the compiled size of typical `matches` patterns.
//!
//! `cargo run --release --example limits` (about a minute; run under `/usr/bin/time -v` for
//! the peak RSS).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use aho_corasick::{AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use std::time::Instant;

fn random_words(n: usize, len: usize) -> Vec<String> {
    let mut s = 7u64;
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    char::from(b'a' + u8::try_from(s % 26).unwrap())
                })
                .collect()
        })
        .collect()
}

fn automaton(label: &str, words: &[String]) {
    let bytes: usize = words.iter().map(String::len).sum();
    let mut line = format!("{label:28} {:>7} words {bytes:>9} B:", words.len());
    for (name, kind) in [
        ("built", None),
        ("noncontiguous", Some(AhoCorasickKind::NoncontiguousNFA)),
    ] {
        let t = Instant::now();
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(kind)
            .build(words)
            .unwrap();
        let used = ac.memory_usage();
        #[allow(clippy::cast_precision_loss)]
        let per_byte = used as f64 / bytes as f64;
        line += &format!(
            "  {name} {:.1} MB ({per_byte:.1} B/B, {:.2} s)",
            used as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    }
    println!("{line}");
}

fn main() {
    let domains = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("user{i}@tenant{}.example.com", i % 97))
            .collect()
    };
    automaton("random, 16 chars", &random_words(10_000, 16));
    automaton("random, 16 chars", &random_words(100_000, 16));
    automaton("random, 20 chars (4 MB)", &random_words(200_000, 20));
    automaton("random, 1,000 chars (DFA)", &random_words(100, 1_000));
    automaton("random, 1,000 chars", &random_words(1_000, 1_000));
    automaton("random, 1,000 chars (4 MB)", &random_words(4_000, 1_000));
    automaton("addresses", &domains(10_000));
    automaton("addresses", &domains(100_000));
    let letters: Vec<char> = (b'!'..=b'~').map(char::from).take(60).collect();
    let mut three = Vec::new();
    for a in &letters {
        for b in &letters {
            for c in &letters {
                three.push(format!("{a}{b}{c}"));
            }
        }
    }
    automaton("every 3-char word of 60", &three);

    for p in [
        r"^\[ok1\]",
        r"\w+@example\.com",
        r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}",
        r"\w{10}",
        r"[a-z]{1000}",
    ] {
        let hir = regex_syntax::ParserBuilder::new()
            .case_insensitive(true)
            .build()
            .parse(p)
            .unwrap();
        let size = |reverse: bool| {
            regex_automata::nfa::thompson::Compiler::new()
                .configure(
                    regex_automata::nfa::thompson::Config::new()
                        .reverse(reverse)
                        .which_captures(regex_automata::nfa::thompson::WhichCaptures::None),
                )
                .build_from_hir(&hir)
                .map_or(0, |n| n.memory_usage())
        };
        println!(
            "pattern {p:40} forward {:>8} B, reverse {:>8} B",
            size(false),
            size(true)
        );
    }
    let t = Instant::now();
    let mut total = 0;
    for i in 0..10_000 {
        total += mailflow::resolve::pattern_problem(&format!(r"^\[ok{i}\]")).unwrap();
    }
    println!(
        "check of 10,000 patterns `^\\[ok{{i}}\\]`: {:.3} s, {:.1} MB of forward programs",
        t.elapsed().as_secs_f64(),
        f64::from(u32::try_from(total).unwrap()) / 1e6
    );
}
