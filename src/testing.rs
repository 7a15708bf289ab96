//! Running `test` blocks: each test's envelope and message are evaluated against the compiled
//! rule set, and each `expect` line is compared with the verdict. The library reads the
//! test's message file (the evaluator itself never does I/O) and returns results; the CLI
//! prints them.

use crate::compile::Table;
use crate::eval::{Envelope, Fate, Header, Message, Verdict, evaluate};
use crate::model::{Address, AuthAs, Expect, RuleSet, TestCase};
use crate::source::Span;
use std::collections::BTreeSet;

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The `expect` line.
    pub span: Span,
    /// What the line expects.
    pub expected: String,
    /// What happened.
    pub actual: String,
}

/// A test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Where the test is.
    pub span: Span,
    /// Expectations that failed (empty: passed).
    pub mismatches: Vec<Mismatch>,
    /// The verdict, with its trace.
    pub verdict: Verdict,
}

impl TestResult {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Builds the message a test describes: its message file (if any) plus its `header` lines.
pub fn test_message(t: &TestCase) -> Result<Message, String> {
    let mut m = match &t.message {
        Some(path) => {
            // A regular file of bounded size (a FIFO would block the run; `/dev/zero` would
            // never end).
            let raw = crate::input::read_limited(&path.value).map_err(|e| {
                format!(
                    "cannot read `{}`: {}",
                    path.value.display(),
                    crate::resolve::io_reason(&e)
                )
            })?;
            Message::parse(&raw)
        }
        None => Message::default(),
    };
    for (name, value) in &t.headers {
        let header = Header::new(name, &format!(" {value}"));
        match m
            .headers
            .iter_mut()
            .find(|h| h.name().eq_ignore_ascii_case(name))
        {
            Some(h) => *h = header,
            None => m.headers.push(header),
        }
    }
    Ok(m)
}

/// The envelope a test describes.
pub fn test_envelope(t: &TestCase) -> Envelope {
    Envelope {
        connector: t.connector.as_ref().map(|c| c.value.clone()),
        local: None,
        client_ip: t.client_ip.as_ref().map(|c| c.value),
        tls_peer: t.tls_peer.clone(),
        xoorg: t.xoorg.clone(),
        mail_from: t.from.clone(),
        rcpt_to: t.to.iter().map(|a| a.value.clone()).collect(),
        auth: t.auth.clone(),
        day: Some(crate::clock::days_since_epoch()),
    }
}

/// Runs every test of a rule set.
pub fn run_tests(set: &RuleSet, table: &Table) -> Vec<TestResult> {
    set.tests.iter().map(|t| run_test(t, table)).collect()
}

/// Runs one test.
pub fn run_test(t: &TestCase, table: &Table) -> TestResult {
    let mut mismatches = Vec::new();
    let message = match test_message(t) {
        Ok(m) => m,
        Err(e) => {
            mismatches.push(Mismatch {
                span: t.name.span,
                expected: "the test's message file".into(),
                actual: e,
            });
            Message::default()
        }
    };
    let verdict = evaluate(table, &test_envelope(t), Some(&message), true);
    // Headers whose value came from the message file. Its contents are never printed (it may
    // lie in a folder `--allow-path` allows, such as a CI's): a failed expectation about such
    // a header says so instead of quoting it.
    let from_file: Vec<String> = match &t.message {
        Some(_) => message
            .headers
            .iter()
            .map(|h| h.name().to_ascii_lowercase())
            .filter(|n| {
                !t.headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case(n))
            })
            .collect(),
        None => Vec::new(),
    };
    for e in &t.expectations {
        if let Some((expected, actual)) = check(&e.value, &verdict) {
            let actual = match &e.value {
                Expect::Header(name, _) | Expect::NoHeader(name)
                    if from_file.contains(&name.to_ascii_lowercase())
                        && verdict.message.get(name).is_some() =>
                {
                    format!("{name}: (a value made from the message file; not shown)")
                }
                _ => actual,
            };
            mismatches.push(Mismatch {
                span: e.span,
                expected,
                actual,
            });
        }
    }
    TestResult {
        name: t.name.value.clone(),
        span: t.span,
        mismatches,
        verdict,
    }
}

fn fate_text(f: &Fate) -> String {
    match f {
        Fate::Deliver { connector } => format!("delivered via `{connector}`"),
        Fate::Drop { reason } => format!("dropped ({reason})"),
        Fate::Reject(status) => format!("rejected {status}"),
    }
}

fn auth_text(a: AuthAs) -> &'static str {
    match a {
        AuthAs::Internal => "internal",
        AuthAs::Anonymous => "anonymous",
        AuthAs::Partner => "partner",
    }
}

fn list(v: &[Address]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the fate of the listed recipients (all when empty); `None` when it holds.
fn fates(
    verdict: &Verdict,
    who: &[Address],
    want: &str,
    ok: impl Fn(&Fate) -> bool,
) -> Option<(String, String)> {
    let targets: Vec<_> = if who.is_empty() {
        verdict.recipients.iter().collect()
    } else {
        let mut t = Vec::new();
        for a in who {
            let found: Vec<_> = verdict
                .recipients
                .iter()
                .filter(|r| &r.address == a || &r.original == a)
                .collect();
            if found.is_empty() {
                return Some((
                    format!("{a} {want}"),
                    format!(
                        "{a} is not among the recipients ({})",
                        list(
                            &verdict
                                .recipients
                                .iter()
                                .map(|r| r.address.clone())
                                .collect::<Vec<_>>()
                        )
                    ),
                ));
            }
            t.extend(found);
        }
        t
    };
    if targets.is_empty() {
        return Some((
            format!("recipients {want}"),
            "there are no recipients".into(),
        ));
    }
    let bad: Vec<String> = targets
        .iter()
        .filter(|r| !ok(&r.fate))
        .map(|r| format!("{} {}", r.address, fate_text(&r.fate)))
        .collect();
    if bad.is_empty() {
        None
    } else {
        let subject = if who.is_empty() {
            "every recipient".to_string()
        } else {
            list(who)
        };
        Some((format!("{subject} {want}"), bad.join("; ")))
    }
}

fn check(e: &Expect, v: &Verdict) -> Option<(String, String)> {
    match e {
        Expect::Delivered { recipients, via } => {
            let want = match via {
                Some(c) => format!("delivered via `{c}`"),
                None => "delivered".into(),
            };
            fates(v, recipients, &want, |f| match f {
                Fate::Deliver { connector } => via.as_ref().is_none_or(|c| c == connector),
                _ => false,
            })
        }
        Expect::Rejected {
            code,
            enhanced,
            recipients,
        } => {
            let want = format!(
                "rejected {code}{}",
                enhanced
                    .as_ref()
                    .map(|e| format!(" {e}"))
                    .unwrap_or_default()
            );
            fates(v, recipients, &want, |f| match f {
                Fate::Reject(s) => {
                    s.code == *code && enhanced.as_ref().is_none_or(|e| *e == s.enhanced)
                }
                _ => false,
            })
        }
        Expect::Dropped(who) => fates(v, who, "dropped", |f| matches!(f, Fate::Drop { .. })),
        Expect::Fired(names) => {
            let missing: Vec<&String> = names
                .iter()
                .filter(|n| !v.rules_fired.contains(n))
                .collect();
            (!missing.is_empty()).then(|| {
                (
                    format!("rule(s) fired: {}", names.join(", ")),
                    format!(
                        "fired: {}",
                        if v.rules_fired.is_empty() {
                            "none".to_string()
                        } else {
                            v.rules_fired.join(", ")
                        }
                    ),
                )
            })
        }
        Expect::NotFired(names) => {
            let fired: Vec<&String> = names.iter().filter(|n| v.rules_fired.contains(n)).collect();
            (!fired.is_empty()).then(|| {
                (
                    format!("not fired: {}", names.join(", ")),
                    format!("fired: {}", v.rules_fired.join(", ")),
                )
            })
        }
        Expect::MailFrom(a) => (v.mail_from != *a).then(|| {
            let show =
                |a: &Option<Address>| a.as_ref().map_or("<>".to_string(), ToString::to_string);
            (
                format!("MAIL FROM {}", show(a)),
                format!("MAIL FROM {}", show(&v.mail_from)),
            )
        }),
        Expect::Recipients(want) => {
            let got: BTreeSet<String> = v
                .recipients
                .iter()
                .filter(|r| !matches!(r.fate, Fate::Reject { .. }))
                .map(|r| r.address.key())
                .collect();
            let expected: BTreeSet<String> = want.iter().map(Address::key).collect();
            (got != expected).then(|| {
                (
                    format!("recipients {}", list(want)),
                    format!(
                        "recipients {}",
                        v.recipients
                            .iter()
                            .filter(|r| !matches!(r.fate, Fate::Reject { .. }))
                            .map(|r| r.address.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })
        }
        Expect::Header(name, value) => {
            let got = v.message.get(name);
            (got.as_deref() != Some(value.as_str())).then(|| {
                (
                    format!("{name}: {value}"),
                    got.map_or(format!("no {name} header"), |g| format!("{name}: {g}")),
                )
            })
        }
        Expect::NoHeader(name) => v
            .message
            .get(name)
            .map(|g| (format!("no {name} header"), format!("{name}: {g}"))),
        Expect::AuthAs(a) => (v.auth_as != *a).then(|| {
            (
                format!("AuthAs {}", auth_text(*a)),
                format!("AuthAs {}", auth_text(v.auth_as)),
            )
        }),
        Expect::OriginatingOrg(o) => (v.originating_org != *o).then(|| {
            let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".into());
            (
                format!("originating organization {}", show(o)),
                format!("originating organization {}", show(&v.originating_org)),
            )
        }),
    }
}
