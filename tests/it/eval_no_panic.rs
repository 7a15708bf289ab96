//! The evaluator never panics on input: hostile and random messages and envelopes go through
//! every bundled rule set, on both the relay's path and the explained path, and the two must
//! agree on every verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use mailflow::compile::compile;
use mailflow::eval::{Envelope, Message, evaluate};
use mailflow::model::Address;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const HEADERS: &[&str] = &[
    "From: \"Smith, John\" <John.Smith@tenant1.myexchlab.com> (work)",
    "From: <@a,@b:x@y.com>",
    "From: undisclosed-recipients:;",
    "From: \"unterminated <a@b.com>",
    "From: (((((( a@b.com",
    "To: team: a@x.com, \"B\" <b@myexchlab.com>;, c@y.com",
    "To: <>",
    "To: ,,,,@,@@,<@>",
    "Cc: John.Smith@myexchlab.com\r\n\t, Mary.Smith@myexchlab.com",
    "Reply-To: =?UTF-8?B?////?= <r@tenant2.myexchlab.com>",
    "Subject: =?UTF-8?Q?caf=C3=A9_=?= invoice.zip",
    "Subject: =?x?B?\u{0}?=",
    "X-MS-Exchange-Organization-AuthAs: Internal",
    "X-OriginatorOrg: evil.example",
    "Message-ID: <1@x>",
    "Received: from a by b",
    "no colon here",
    ": empty name",
    "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "\u{2028}weird: \u{a0}",
];

const ADDRESSES: &[&str] = &[
    "John.Smith@tenant1.myexchlab.com",
    "john.smith@myexchlab.com",
    "Mary.Smith@myexchlab.com",
    "nobody@myexchlab.com",
    "officers@domain.org",
    "board@domain.org",
    "user@microsoft.com",
    "BlogTest@domain.com",
    "a@b.c",
    "\"q u\"@example.com",
    "x@xn--bcher-kva.example",
    "ü@bücher.example",
];

const IPS: &[&str] = &[
    "40.107.22.51",
    "203.0.113.9",
    "10.1.2.3",
    "2a01:111:f403:c200::12",
    "::1",
    "0.0.0.0",
    "192.168.178.10",
];

fn addr(s: &str) -> Address {
    let (l, d) = s.rsplit_once('@').unwrap();
    Address {
        local: l.into(),
        domain: d.to_lowercase(),
    }
}

#[test]
fn hostile_messages_never_panic_and_both_paths_agree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let report = mailflow::check::check_paths(&[root.join("rules")]).unwrap();
    assert!(!report.has_errors());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut runs = 0;
    for set in &report.rule_sets {
        let table = compile(&set.rules).unwrap();
        let connectors: Vec<String> = set
            .rules
            .receive_connectors
            .iter()
            .map(|c| c.name.value.clone())
            .collect();
        for _ in 0..300 {
            let mut raw = Vec::new();
            for _ in 0..(rng.next() % 8) {
                raw.extend_from_slice(rng.pick(HEADERS).as_bytes());
                raw.extend_from_slice(if rng.next() % 5 == 0 { b"\n" } else { b"\r\n" });
            }
            if rng.next() % 4 == 0 {
                // Random bytes, invalid UTF-8 included.
                for _ in 0..(rng.next() % 64) {
                    raw.push((rng.next() % 256) as u8);
                }
            }
            raw.extend_from_slice(b"\r\n\r\nbody\r\n");
            let message = Message::parse(&raw);
            let env = Envelope {
                connector: if rng.next() % 3 == 0 {
                    connectors.first().cloned()
                } else {
                    None
                },
                local: None,
                client_ip: Some(rng.pick(IPS).parse().unwrap()),
                tls_peer: if rng.next() % 2 == 0 {
                    Some("mail.protection.outlook.com".into())
                } else {
                    None
                },
                xoorg: if rng.next() % 2 == 0 {
                    Some("uclabor.de".into())
                } else {
                    None
                },
                mail_from: if rng.next() % 6 == 0 {
                    None
                } else {
                    Some(addr(rng.pick(ADDRESSES)))
                },
                rcpt_to: (0..(rng.next() % 4))
                    .map(|_| addr(rng.pick(ADDRESSES)))
                    .collect(),
                ..Envelope::default()
            };
            let fast = evaluate(&table, &env, Some(&message), false);
            let explained = evaluate(&table, &env, Some(&message), true);
            assert_eq!(fast.recipients, explained.recipients, "{env:?}");
            assert_eq!(fast.rules_fired, explained.rules_fired, "{env:?}");
            assert_eq!(fast.message, explained.message);
            // The final message never gains a line that was not a header field before.
            let out = String::from_utf8_lossy(&fast.message.to_bytes()).to_string();
            assert!(!out.contains("\r\nBcc: evil"));
            runs += 1;
        }
    }
    assert!(runs >= 1000);
}
