//! Evaluating one message with three recipients: with 10 rewrite entries and 10 rules, and
//! with 100,000 entries and 10,000 rules (the cost should stay flat), against a naive linear
//! scan of the same rules and entries in the same run.
//!
//! `cargo bench --bench eval`; figures in BENCHMARKS.md.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "generate.rs"]
mod generate;

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use mailflow::compile::{Table, compile};
use mailflow::eval::{Envelope, Message, evaluate};
use mailflow::model::{Address, Predicate, RewriteFrom, RewriteTo, RuleSet, TextOp};
use std::time::Instant;

fn rule_set(entries: usize, rules: usize) -> RuleSet {
    let mut text = generate::generate(entries, rules);
    // An anonymous internet connector that also relays, so every stage has work to do.
    text.push_str(
        "receive-connector \"Internet\" {\n  remote 0.0.0.0/0\n  accept-any-recipient\n}\n",
    );
    let mut report = mailflow::check::check_text("bench.mailflow", &text);
    assert!(!report.has_errors(), "generated rules have errors");
    report.rule_sets.remove(0).rules
}

fn addr(s: &str) -> Address {
    let (l, d) = s.split_once('@').unwrap();
    Address {
        local: l.into(),
        domain: d.into(),
    }
}

fn envelope() -> Envelope {
    Envelope {
        client_ip: Some("203.0.113.7".parse().unwrap()),
        mail_from: Some(addr("partner@fabrikam.example")),
        rcpt_to: vec![
            addr("user7@example.com"),
            addr("c1@example.com"),
            addr("someone@word3.example.org"),
        ],
        ..Envelope::default()
    }
}

fn message() -> Message {
    Message::parse(
        b"From: Partner <partner@fabrikam.example>\r\nTo: user7@example.com, c1@example.com\r\nCc: someone@word3.example.org\r\nSubject: quarterly figures\r\nX-Tenant: t3\r\nMessage-ID: <1@fabrikam.example>\r\n\r\nHello.\r\n",
    )
}

/// What one would write without the index: every rule in turn, every `contains` by a
/// lowercase substring search, every rewrite entry compared in turn.
fn naive(set: &RuleSet, env: &Envelope, msg: &Message) -> usize {
    let rcpts: Vec<String> = env
        .rcpt_to
        .iter()
        .map(|a| a.to_string().to_lowercase())
        .collect();
    let subject = msg.get("Subject").unwrap_or_default().to_lowercase();
    let mut fired = 0;
    for a in &env.rcpt_to {
        for e in &set.rewrites {
            let hit = match (&e.internal.value, &e.external.value) {
                (_, RewriteTo::Address(x)) => x == a,
                (RewriteFrom::Domain(_), RewriteTo::Domain(d)) => *d == a.domain,
                _ => false,
            };
            if hit {
                break;
            }
        }
    }
    for r in &set.rules {
        let all = r.conditions.iter().all(|c| match &c.value {
            Predicate::RecipientAddress(m) if m.op == TextOp::Contains => m
                .values
                .iter()
                .any(|v| rcpts.iter().any(|x| x.contains(&v.to_lowercase()))),
            Predicate::Subject(m) if m.op == TextOp::Contains => {
                m.values.iter().any(|v| subject.contains(&v.to_lowercase()))
            }
            Predicate::SenderScope(_) => true,
            _ => false,
        });
        fired += usize::from(all);
    }
    fired
}

fn bench(c: &mut Criterion) {
    let sizes = [(10usize, 10usize), (100_000, 10_000)];
    let mut group = c.benchmark_group("evaluate/3-recipients");
    for (entries, rules) in sizes {
        let t0 = Instant::now();
        let set = rule_set(entries, rules);
        let checked = t0.elapsed();
        let t1 = Instant::now();
        let table: Table = compile(&set).unwrap();
        let compiled = t1.elapsed();
        eprintln!(
            "{entries} entries + {rules} rules: check {checked:?}, compile {compiled:?}, lookup structures ~{} KiB",
            table.memory() / 1024
        );
        let env = envelope();
        let msg = message();
        let label = format!("{entries}-entries-{rules}-rules");
        group.bench_with_input(BenchmarkId::new("mailflow", &label), &(), |b, ()| {
            b.iter(|| {
                black_box(evaluate(
                    &table,
                    black_box(&env),
                    Some(black_box(&msg)),
                    false,
                ))
            })
        });
        group.bench_with_input(BenchmarkId::new("naive-scan", &label), &(), |b, ()| {
            b.iter(|| black_box(naive(&set, black_box(&env), black_box(&msg))))
        });
    }
    group.finish();

    let set = rule_set(100_000, 10_000);
    c.bench_function("compile/100000-entries-10000-rules", |b| {
        b.iter(|| black_box(compile(black_box(&set)).unwrap()))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
