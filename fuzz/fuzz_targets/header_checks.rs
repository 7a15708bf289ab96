//! The checks of the `header_rewrite` fuzz target, shared with the stable replay test
//! (`tests/it/fuzz_replay.rs`): a message parsed with `Message::parse` goes through `evaluate`
//! against fixed rule sets that rewrite addresses in headers and set, prepend to and extend
//! header fields; the serialised result (what the relay queues, see `stamp` in
//! `src/relay/session.rs`) must not have gained a bare line ending, an over-long header line, a
//! header field nobody asked for, or a changed body, and every field no rule or stage touched
//! must be written back byte for byte.
//!
//! Input layout (missing bytes read as 0):
//! - byte 0: the rule set (modulo their number) and, above that, the receive connector;
//! - byte 1: bit 0 a trusted TLS peer, bits 1-2 the XOORG value, bit 3 the message as raw
//!   bytes (clear: normalised to CRLF as the relay's DATA and BDAT receivers do), bit 4 the
//!   null sender, bits 5-7 how many recipients (at most 4);
//! - byte 2: the sender, bytes 3-6: the recipients, each from a fixed list of addresses or,
//!   past its end, the n-th address found in the message's header fields (so the envelope
//!   and the header can name the same address);
//! - the rest: the message.

use mailflow::compile::{Table, compile};
use mailflow::eval::message::addresses;
use mailflow::eval::{Envelope, Message, evaluate};
use mailflow::model::Address;
use mailflow::smtp::{BdatReceiver, Command, parse_command};
use std::path::Path;

/// The longest header line RFC 5322 §2.1.1 allows, CRLF excluded.
const MAX_LINE: usize = 998;

/// A compiled rule set and its receive connectors' names.
pub struct Set {
    /// The table.
    pub table: Table,
    /// Receive connectors, by name.
    pub connectors: Vec<String>,
}

/// The rule sets, relative to the repository root: the shared-domain seed (per-user and
/// per-domain rewriting both ways), a set whose rules write To, Cc and Subject, and the
/// evaluator's action fixture.
pub const RULE_SETS: &[&str] = &[
    "rules/shared-domain.mailflow",
    "fuzz/rules/header-actions.mailflow",
    "tests/fixtures/eval/actions.mailflow",
];

/// Checks and compiles [`RULE_SETS`].
pub fn load(root: &Path) -> Vec<Set> {
    RULE_SETS
        .iter()
        .map(|rel| {
            let path = root.join(rel);
            let report = mailflow::check::check_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !report.has_errors(),
                "{}",
                mailflow::diagnostic::render::human(&report.diagnostics, &report.sources, false)
            );
            let rules = &report.rule_sets[0].rules;
            Set {
                table: compile(rules).unwrap_or_else(|e| panic!("{rel}: {e}")),
                connectors: rules
                    .receive_connectors
                    .iter()
                    .map(|c| c.name.value.clone())
                    .collect(),
            }
        })
        .collect()
}

/// Envelope addresses to pick from: the rewrite entries and rule triggers of the sets, and
/// some strangers.
const ADDRESSES: &[&str] = &[
    "John.Smith@tenant1.myexchlab.com",
    "John.Smith@myexchlab.com",
    "Mary.Smith@tenant2.myexchlab.com",
    "Mary.Smith@myexchlab.com",
    "noreply@notifications.tenant1.myexchlab.com",
    "helpdesk@tenant2.myexchlab.com",
    "support@myexchlab.com",
    "ann@tenant1.example.com",
    "ann@example.com",
    "add@example.com",
    "copy@tenant1.example.com",
    "legal@tenant1.example.com",
    "someone@outside.example",
    "alex.wilber@fabrikam.com",
];

const XOORG: &[Option<&str>] = &[
    None,
    Some("tenant1.myexchlab.com"),
    Some("contoso.com"),
    Some("example.com"),
];

fn fixed(s: &str) -> Address {
    let (local, domain) = s.rsplit_once('@').unwrap_or((s, ""));
    Address {
        local: local.to_string(),
        domain: domain.to_ascii_lowercase(),
    }
}

/// The `n`-th address in the header fields, if the SMTP parser would take it in RCPT TO.
fn from_message(message: &Message, n: usize) -> Option<Address> {
    let found = message
        .headers
        .iter()
        .flat_map(|h| addresses(h.raw_value()))
        .nth(n)?;
    match parse_command(format!("RCPT TO:<{}>", found.1).as_bytes()) {
        Ok(Command::Rcpt { to, .. }) => Some(to),
        _ => None,
    }
}

fn pick(message: &Message, b: u8) -> Option<Address> {
    let i = usize::from(b);
    match ADDRESSES.get(i) {
        Some(s) => Some(fixed(s)),
        None => from_message(message, i - ADDRESSES.len()),
    }
}

/// Runs every check on one input.
pub fn run(sets: &[Set], data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let raw = data.get(7..).unwrap_or_default();
    let set = &sets[usize::from(byte(0)) % sets.len()];
    let flags = byte(1);
    let input = if flags & 8 != 0 {
        raw.to_vec()
    } else {
        let mut b = BdatReceiver::new(u64::MAX);
        b.feed(raw);
        b.finish().unwrap_or_default()
    };
    let message = Message::parse(&input);
    let connector = usize::from(byte(0)) / sets.len() % set.connectors.len().max(1);
    let env = Envelope {
        connector: set.connectors.get(connector).cloned(),
        local: None,
        client_ip: Some(std::net::IpAddr::from([40, 107, 22, 51])),
        tls_peer: (flags & 1 != 0).then(|| "mail.protection.outlook.com".to_string()),
        xoorg: XOORG[usize::from(flags >> 1) & 3].map(str::to_string),
        mail_from: if flags & 16 != 0 {
            None
        } else {
            pick(&message, byte(2))
        },
        rcpt_to: (0..usize::from(flags >> 5).min(4))
            .filter_map(|i| pick(&message, byte(3 + i)))
            .collect(),
        ..Envelope::default()
    };
    check(set, &env, &input, &message);
}

fn check(set: &Set, env: &Envelope, input: &[u8], message: &Message) {
    let fast = evaluate(&set.table, env, Some(message), false);
    let explained = evaluate(&set.table, env, Some(message), true);
    assert_eq!(fast.recipients, explained.recipients, "paths disagree");
    assert_eq!(fast.rules_fired, explained.rules_fired, "paths disagree");
    assert_eq!(fast.message, explained.message, "paths disagree");
    assert_eq!(
        fast.header_changes, explained.header_changes,
        "paths disagree"
    );

    let out = fast.message.to_bytes();
    if has_no_bare_endings(input) {
        assert!(
            has_no_bare_endings(&out),
            "bare CR or LF in the output: {:?}",
            String::from_utf8_lossy(&out)
        );
    }
    let (in_head, in_body) = split(input);
    let (out_head, out_body) = split(&out);
    // The body is kept byte for byte; header lines that are not fields (and all after the
    // first of them) become body text in front of it, as Postfix reads them.
    assert!(
        out_body.ends_with(in_body) && out_body == &Message::parse(input).body[..],
        "the body changed: {:?} -> {:?}",
        String::from_utf8_lossy(in_body),
        String::from_utf8_lossy(out_body)
    );
    // Header lines as the evaluator reads them (invalid UTF-8 replaced).
    let in_lines: Vec<String> = in_head
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let mut names: Vec<String> = in_lines
        .iter()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim_end_matches([' ', '\t']).to_ascii_lowercase())
        .collect();
    names.extend(
        fast.header_changes
            .iter()
            .map(|(n, _, _)| n.to_ascii_lowercase()),
    );
    for raw_line in &out_head {
        let line = String::from_utf8_lossy(raw_line);
        if line.starts_with([' ', '\t']) || in_head.contains(raw_line) {
            continue;
        }
        let name = line
            .split_once(':')
            .map(|(n, _)| n.trim_end_matches([' ', '\t']));
        assert!(
            name.is_some_and(|n| names.contains(&n.to_ascii_lowercase())),
            "a header line neither the input nor the rules have: {line:?}"
        );
    }
    // An over-long line is allowed only when the input had one, or when it has nowhere to
    // fold (a single run without blanks, which `fold` leaves as it is).
    let longest_in = in_lines.iter().map(String::len).max().unwrap_or(0);
    if longest_in <= MAX_LINE {
        for line in &out_head {
            assert!(
                line.len() <= MAX_LINE || !foldable(line),
                "a header line of {} octets: {:?}",
                line.len(),
                String::from_utf8_lossy(line)
            );
        }
    }
    // Fields no rule or stage touched are written back as they arrived, byte for byte and
    // in order, 8-bit bytes included (issue 14 §3): only changed fields differ.
    let touched: Vec<String> = fast
        .header_changes
        .iter()
        .map(|(n, _, _)| n.to_ascii_lowercase())
        .collect();
    let kept = |m: &Message| -> Vec<Vec<u8>> {
        m.headers
            .iter()
            .filter(|h| !touched.contains(&h.name().to_ascii_lowercase()))
            .map(|h| h.raw().to_vec())
            .collect()
    };
    assert_eq!(
        kept(message),
        kept(&fast.message),
        "an untouched field changed"
    );
    if has_no_bare_endings(input) {
        for h in &fast.message.headers {
            // (A last line without its line end is given one.)
            let raw = h.raw().strip_suffix(b"\r\n").unwrap_or(h.raw());
            if !touched.contains(&h.name().to_ascii_lowercase()) {
                assert!(
                    input.windows(raw.len()).any(|w| w == raw),
                    "a field not as it arrived: {:?}",
                    String::from_utf8_lossy(h.raw())
                );
            }
        }
    }
    // What is queued reads back as what was evaluated.
    assert_eq!(
        Message::parse(&out),
        fast.message,
        "serialisation round trip"
    );
}

/// Whether a header line has a blank with text before it (after the colon, on the first line
/// of a field) and after it: a place where `fold` could break it.
fn foldable(line: &[u8]) -> bool {
    let value = if line.starts_with(b" ") || line.starts_with(b"\t") {
        line
    } else {
        match line.iter().position(|&b| b == b':') {
            Some(colon) => &line[colon + 1..],
            None => return false,
        }
    };
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    match (
        value.iter().position(|b| !blank(b)),
        value.iter().rposition(|b| !blank(b)),
    ) {
        (Some(first), Some(last)) => value[first..last].iter().any(blank),
        _ => false,
    }
}

/// `true` when every CR is followed by LF and every LF preceded by CR.
pub fn has_no_bare_endings(msg: &[u8]) -> bool {
    msg.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => msg.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && msg[i - 1] == b'\r',
        _ => true,
    })
}

/// The reference reading of a message (RFC 5322 §2.1, with a bare LF also ending a line, as
/// `Message::parse` documents): the header lines up to the first empty line, and the body
/// after it.
fn split(msg: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut lines = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (
                rest[..i].strip_suffix(b"\r").unwrap_or(&rest[..i]),
                &rest[i + 1..],
            ),
            // The last line, without a line end: a CR at its end is part of it.
            None => (rest, &[][..]),
        };
        if line.is_empty() {
            return (lines, next);
        }
        lines.push(line);
        rest = next;
    }
    (lines, &[])
}
