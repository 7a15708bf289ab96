//! `diff` on hand-made inputs: what is reported and what is not, and the receive connector
//! re-chosen by the new rules.

use super::*;
use crate::model::Address;

fn table(text: &str) -> Table {
    let report = crate::check::check_text("t.mailflow", text);
    assert!(!report.has_errors(), "{:?}", report.diagnostics);
    crate::compile::compile(&report.rule_sets[0].rules).unwrap()
}

const BASE: &str = "accepted-domain example.com internal-relay
receive-connector \"In\" {
  listen 127.0.0.1:25
  auth anonymous
}
send-connector \"T1\" {
  address-space example.com
  smart-host 192.0.2.1
}
send-connector \"T2\" {
  address-space other.example.com
  smart-host 192.0.2.2
}
";

fn input(to: &str) -> Input {
    let (local, domain) = to.split_once('@').unwrap();
    Input {
        name: to.to_string(),
        envelope: Envelope {
            connector: Some("In".into()),
            mail_from: Some(Address {
                local: "a".into(),
                domain: "sender.example".into(),
            }),
            rcpt_to: vec![Address {
                local: local.into(),
                domain: domain.into(),
            }],
            ..Envelope::default()
        },
        message: Message::parse(b"Subject: hi\r\n\r\nbody\r\n"),
    }
}

#[test]
fn only_changed_messages_are_reported_with_their_kinds_and_trace() {
    let old = table(BASE);
    let new = table(&format!(
        "{BASE}rule \"Block bob\" {{\n  if recipient contains \"bob@\"\n  reject 550 5.7.1 \"no\"\n}}\n"
    ));
    let d = diff(
        &old,
        &new,
        [input("alice@example.com"), input("bob@example.com")].map(Ok),
    )
    .unwrap();
    assert_eq!(d.messages, 2);
    assert_eq!(d.changes.len(), 1);
    let c = &d.changes[0];
    assert_eq!(c.name, "bob@example.com");
    assert!(
        c.kinds.contains(&Kind::Acceptance) && c.kinds.contains(&Kind::Rules),
        "{:?}",
        c.kinds
    );
    assert!(!c.kinds.contains(&Kind::Recipients));
    assert_eq!(
        c.new.recipients["bob@example.com"][0].fate,
        "rejected 550 5.7.1 no"
    );
    assert!(
        c.trace_added.iter().any(|s| s.text.contains("Block bob")),
        "{:?}",
        c.trace_added
    );
    assert_eq!(d.by_kind[&Kind::Acceptance], 1);
    let same = diff(&old, &old, [Ok(input("bob@example.com"))]).unwrap();
    assert!(same.changes.is_empty());
}

/// Captured traffic names the connector the relay chose: the new rules choose again
/// when the old ones would have chosen it, so narrowing a remote range shows.
#[test]
fn a_named_connector_the_old_rules_chose_is_chosen_again_by_the_new() {
    let ranged = |range: &str| {
        BASE.replace(
            "  auth anonymous",
            &format!("  auth anonymous\n  remote {range}"),
        )
    };
    let (old, new) = (table(&ranged("10.0.0.0/24")), table(&ranged("10.0.0.0/26")));
    let mut captured = input("alice@example.com");
    captured.envelope.local = Some("127.0.0.1:25".parse().unwrap());
    captured.envelope.client_ip = Some("10.0.0.200".parse().unwrap());
    let d = diff(&old, &new, [Ok(captured.clone())]).unwrap();
    assert_eq!(d.changes.len(), 1, "no longer accepted from 10.0.0.200");
    assert!(d.changes[0].kinds.contains(&Kind::Acceptance));
    // Inside both ranges, or named where the old rules would not choose it (a relay
    // run with overrides): as before.
    captured.envelope.client_ip = Some("10.0.0.3".parse().unwrap());
    assert!(
        diff(&old, &new, [Ok(captured.clone())])
            .unwrap()
            .changes
            .is_empty()
    );
    captured.envelope.client_ip = Some("10.0.0.200".parse().unwrap());
    captured.envelope.local = Some("127.0.0.1:2525".parse().unwrap());
    assert!(diff(&old, &new, [Ok(captured)]).unwrap().changes.is_empty());
}

/// Connectors on shared and separate addresses, IPv4 and IPv6, nested ranges.
const CONNECTORS: &str = "accepted-domain example.com internal-relay
receive-connector \"Internet\" {
  listen 0.0.0.0:25
  auth anonymous
}
receive-connector \"Apps\" {
  listen 0.0.0.0:25
  remote 10.0.0.0/24, 2001:db8::/64
  auth externally-secured
}
receive-connector \"Narrow\" {
  listen 0.0.0.0:25
  remote 10.0.0.0/26
  auth partner
}
receive-connector \"Sub\" {
  listen 192.0.2.10:587
  remote 0.0.0.0/0, ::/0
  auth partner
}
receive-connector \"Six\" {
  listen [::]:25
  remote 2001:db8:1::/48
  auth externally-secured
}
send-connector \"Out\" {
  address-space *
}
";

/// Every combination of a named connector (none, each, one in another case, one the
/// rules lack), a local address and a client address, to `to`.
fn generated(to: &str) -> Vec<Input> {
    let names = [
        None,
        Some("Internet"),
        Some("Apps"),
        Some("Narrow"),
        Some("Sub"),
        Some("Six"),
        Some("internet"),
        Some("Gone"),
    ];
    let locals = [
        None,
        Some("0.0.0.0:25"),
        Some("127.0.0.1:25"),
        Some("192.0.2.10:587"),
        Some("192.0.2.10:25"),
        Some("[::]:25"),
        Some("[::1]:25"),
        Some("127.0.0.1:2525"),
    ];
    let clients = [
        None,
        Some("10.0.0.3"),
        Some("10.0.0.77"),
        Some("10.0.0.200"),
        Some("203.0.113.5"),
        Some("2001:db8::5"),
        Some("2001:db8:1::9"),
        Some("::ffff:10.0.0.3"),
        Some("::1"),
    ];
    let mut out = Vec::new();
    for n in names {
        for l in locals {
            for c in clients {
                let mut i = input(to);
                i.name = format!("{n:?} {l:?} {c:?}");
                i.envelope.connector = n.map(String::from);
                i.envelope.local = l.map(|l| l.parse().unwrap());
                i.envelope.client_ip = c.map(|c| c.parse().unwrap());
                out.push(i);
            }
        }
    }
    out
}

/// Property: a rule set against itself reports nothing, whatever the envelope names,
/// re-chosen or not, for local and relayed recipients.
#[test]
fn the_rules_against_themselves_report_nothing_over_generated_envelopes() {
    for text in [BASE, CONNECTORS] {
        let t = table(text);
        for to in ["alice@example.com", "bob@elsewhere.example"] {
            let inputs = generated(to);
            let n = inputs.len();
            let d = diff(&t, &t, inputs.into_iter().map(Ok)).unwrap();
            assert_eq!(d.messages, n);
            assert!(
                d.changes.is_empty(),
                "{} of {n} changed, first {:?}",
                d.changes.len(),
                d.changes.first().map(|c| (&c.name, &c.kinds))
            );
        }
    }
}

/// One captured message: named connector, the address the client reached, client.
fn captured(connector: &str, local: &str, client: &str) -> Input {
    let mut i = input("alice@example.com");
    i.envelope.connector = Some(connector.into());
    i.envelope.local = Some(local.parse().unwrap());
    i.envelope.client_ip = Some(client.parse().unwrap());
    i
}

/// A connector renamed, and nothing else: captured traffic on it lands on the new name
/// (an attribution change), not refused as if no connector took it.
#[test]
fn a_renamed_connector_is_an_attribution_change_only() {
    let old = table(CONNECTORS);
    let new = table(&CONNECTORS.replace("\"Apps\"", "\"Applications\""));
    let d = diff(
        &old,
        &new,
        [Ok(captured("Apps", "192.0.2.10:25", "10.0.0.77"))],
    )
    .unwrap();
    assert_eq!(d.changes.len(), 1);
    assert_eq!(d.changes[0].kinds, [Kind::Attribution]);
    assert_eq!(d.changes[0].new.connector.as_deref(), Some("Applications"));
    // Traffic on the others is untouched by the rename.
    let d = diff(
        &old,
        &new,
        [
            Ok(captured("Internet", "192.0.2.10:25", "203.0.113.5")),
            Ok(captured("Narrow", "192.0.2.10:25", "10.0.0.3")),
            Ok(captured("Six", "[2001:db8::10]:25", "2001:db8:1::9")),
            Ok(captured("Sub", "192.0.2.10:587", "10.0.0.77")),
        ],
    )
    .unwrap();
    assert!(d.changes.is_empty(), "{:?}", d.changes);
}

/// A connector removed: its clients land on the next widest range that takes them; a
/// more specific one added takes its clients; an IPv6 client of a removed IPv6
/// connector is refused (no other connector on `[::]:25`).
#[test]
fn removed_and_more_specific_connectors_are_chosen_by_the_new_ranges() {
    let old = table(CONNECTORS);
    let without_narrow = table(&CONNECTORS.replace(
        "receive-connector \"Narrow\" {\n  listen 0.0.0.0:25\n  remote 10.0.0.0/26\n  auth partner\n}\n",
        "",
    ));
    let d = diff(
        &old,
        &without_narrow,
        [Ok(captured("Narrow", "192.0.2.10:25", "10.0.0.3"))],
    )
    .unwrap();
    assert_eq!(d.changes.len(), 1);
    assert_eq!(d.changes[0].new.connector.as_deref(), Some("Apps"));
    let finer = table(&format!(
        "{CONNECTORS}receive-connector \"Printer\" {{\n  listen 0.0.0.0:25\n  remote 10.0.0.3/32\n  auth partner\n}}\n"
    ));
    let d = diff(
        &old,
        &finer,
        [
            Ok(captured("Narrow", "192.0.2.10:25", "10.0.0.3")),
            Ok(captured("Narrow", "192.0.2.10:25", "10.0.0.4")),
            Ok(captured("Narrow", "192.0.2.10:25", "::ffff:10.0.0.3")),
        ],
    )
    .unwrap();
    let names: Vec<&str> = d.changes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(d.changes.len(), 2, "{names:?}");
    assert!(
        d.changes
            .iter()
            .all(|c| c.new.connector.as_deref() == Some("Printer"))
    );
    let without_six = table(&CONNECTORS.replace(
        "receive-connector \"Six\" {\n  listen [::]:25\n  remote 2001:db8:1::/48\n  auth externally-secured\n}\n",
        "",
    ));
    let d = diff(
        &old,
        &without_six,
        [Ok(captured("Six", "[2001:db8::10]:25", "2001:db8:1::9"))],
    )
    .unwrap();
    // `Internet` listens on every address of port 25, so it takes the client.
    assert_eq!(d.changes.len(), 1);
    assert!(d.changes[0].kinds.contains(&Kind::Attribution));
    assert!(!d.changes[0].kinds.contains(&Kind::Acceptance));
    assert_eq!(d.changes[0].new.connector.as_deref(), Some("Internet"));
}

/// A test block (or an envelope file) that names its connector and gives no local
/// address: which port the message came in on is unknown, so the new rules must not
/// choose among every port's connectors. A connector added on another port for this
/// client does not take a message that names `Internet`.
#[test]
fn a_named_connector_without_a_local_address_is_kept() {
    let base = "accepted-domain example.com internal-relay
receive-connector \"Internet\" {
  listen 0.0.0.0:25
  auth anonymous
}
send-connector \"Out\" {
  address-space *
}
";
    let old = table(base);
    let new = table(&format!(
        "{base}receive-connector \"Partner\" {{\n  listen 0.0.0.0:2525\n  remote 203.0.113.0/24\n  auth partner\n}}\n"
    ));
    let mut named = captured("Internet", "0.0.0.0:25", "203.0.113.5");
    named.envelope.local = None;
    let d = diff(&old, &new, [Ok(named)]).unwrap();
    assert!(
        d.changes.is_empty(),
        "{:?}",
        d.changes.first().map(|c| (&c.kinds, &c.new.connector))
    );
    // Captured on port 25, it stays on `Internet` under the new rules too.
    let d = diff(
        &old,
        &new,
        [Ok(captured("Internet", "0.0.0.0:25", "203.0.113.5"))],
    )
    .unwrap();
    assert!(d.changes.is_empty());
}

/// A capture that recorded a wildcard (written before captures kept the address reached)
/// or an IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`): new rules that bind the
/// addresses in use must not read its messages as refused.
#[test]
fn wildcard_and_mapped_local_addresses_are_not_read_as_refused() {
    let split = "accepted-domain example.com internal-relay
receive-connector \"Internet\" {
  listen 192.0.2.10:25
  listen [2001:db8::10]:25
  auth anonymous
}
send-connector \"Out\" {
  address-space *
}
";
    let old = table(&split.replace(
        "  listen 192.0.2.10:25\n  listen [2001:db8::10]:25\n",
        "  listen [::]:25\n",
    ));
    let new = table(split);
    for local in [
        "0.0.0.0:25",
        "[::]:25",
        "[::ffff:192.0.2.10]:25",
        "192.0.2.10:25",
    ] {
        let d = diff(&old, &new, [Ok(captured("Internet", local, "203.0.113.5"))]).unwrap();
        assert!(d.changes.is_empty(), "{local}: {:?}", d.changes);
    }
    // Reached at an address the new rules no longer bind: refused, and said so.
    let d = diff(
        &old,
        &new,
        [Ok(captured("Internet", "192.0.2.99:25", "203.0.113.5"))],
    )
    .unwrap();
    assert_eq!(d.changes.len(), 1);
    assert!(d.changes[0].kinds.contains(&Kind::Acceptance));
}
