//! What a rule change does to mail (`mailflow diff`): two compiled rule sets evaluate the
//! same messages, and every message whose outcome differs is reported, with what changed
//! (acceptance, final recipients, routing, rewritten addresses, rules fired) and the trace
//! lines that differ. Pure: the inputs come from [`inputs`], the CLI renders.

pub mod inputs;

use crate::compile::Table;
use crate::eval::{Envelope, Fate, Message, Step, Verdict, evaluate};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One message to evaluate under both rule sets.
#[derive(Debug, Clone)]
pub struct Input {
    /// What to call it: a test's name, a file's path, a capture's line.
    pub name: String,
    /// The envelope.
    pub envelope: Envelope,
    /// The message (headers the rules read; the body may be empty).
    pub message: Message,
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Accepted, rejected (and with which code) or dropped.
    Acceptance,
    /// The final recipients (rewriting, forwarding, expansion).
    Recipients,
    /// The send connector.
    Routing,
    /// MAIL FROM after rewriting.
    Sender,
    /// Header fields changed on the way.
    Headers,
    /// The transport rules that fired.
    Rules,
    /// The receive connector, the authentication level or the originating organization.
    Attribution,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Kind; 7] = [
        Kind::Acceptance,
        Kind::Recipients,
        Kind::Routing,
        Kind::Sender,
        Kind::Headers,
        Kind::Rules,
        Kind::Attribution,
    ];

    /// Its name in JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Acceptance => "acceptance",
            Kind::Recipients => "recipients",
            Kind::Routing => "routing",
            Kind::Sender => "sender",
            Kind::Headers => "headers",
            Kind::Rules => "rules",
            Kind::Attribution => "attribution",
        }
    }

    /// In words, for people.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Acceptance => "accepted, rejected or dropped",
            Kind::Recipients => "final recipients",
            Kind::Routing => "send connector",
            Kind::Sender => "envelope sender",
            Kind::Headers => "header fields",
            Kind::Rules => "rules fired",
            Kind::Attribution => "connector, authentication or organization",
        }
    }
}

/// One recipient's outcome, comparable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipient {
    /// The final address.
    pub address: String,
    /// `delivered via X`, `dropped: why`, `rejected 550 5.1.1 ...`.
    pub fate: String,
}

/// A verdict reduced to what a reviewer compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The receive connector.
    pub connector: Option<String>,
    /// internal, anonymous, partner.
    pub auth_as: String,
    /// The trusted originating organization.
    pub originating_org: Option<String>,
    /// MAIL FROM after rewriting (`<>`: the null sender).
    pub mail_from: String,
    /// Per RCPT TO address, what became of it.
    pub recipients: BTreeMap<String, Vec<Recipient>>,
    /// Rules that fired, in order.
    pub rules_fired: Vec<String>,
    /// Header changes: `Name: before -> after`.
    pub headers: Vec<String>,
    /// A rule dropped the connection.
    pub disconnect: bool,
}

fn fate(f: &Fate) -> String {
    match f {
        Fate::Deliver { connector } => format!("delivered via `{connector}`"),
        Fate::Drop { reason } => format!("dropped: {reason}"),
        Fate::Reject(status) => format!("rejected {status}"),
    }
}

/// The fate without its connector or text: what acceptance compares.
fn acceptance(f: &Fate) -> String {
    match f {
        Fate::Deliver { .. } => "delivered".into(),
        Fate::Drop { .. } => "dropped".into(),
        Fate::Reject(s) => format!("rejected {} {}", s.code, s.enhanced),
    }
}

impl Outcome {
    fn of(v: &Verdict) -> Outcome {
        let mut recipients: BTreeMap<String, Vec<Recipient>> = BTreeMap::new();
        for r in &v.recipients {
            recipients
                .entry(r.original.to_string())
                .or_default()
                .push(Recipient {
                    address: r.address.to_string(),
                    fate: fate(&r.fate),
                });
        }
        let headers = v
            .header_changes
            .iter()
            .map(|(name, before, after)| {
                let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
                format!("{name}: {} -> {}", or_none(before), or_none(after))
            })
            .collect();
        Outcome {
            connector: v.connector.clone(),
            auth_as: format!("{:?}", v.auth_as).to_ascii_lowercase(),
            originating_org: v.originating_org.clone(),
            mail_from: v
                .mail_from
                .as_ref()
                .map_or_else(|| "<>".to_string(), ToString::to_string),
            recipients,
            rules_fired: v.rules_fired.clone(),
            headers,
            disconnect: v.disconnect,
        }
    }
}

/// A verdict's recipients: per RCPT TO address, each final address and its fate.
fn by_original(v: &Verdict) -> BTreeMap<String, BTreeMap<String, &Fate>> {
    let mut m: BTreeMap<String, BTreeMap<String, &Fate>> = BTreeMap::new();
    for r in &v.recipients {
        m.entry(r.original.to_string())
            .or_default()
            .insert(r.address.to_string(), &r.fate);
    }
    m
}

/// The kinds of difference between two verdicts of one message (none: treated alike).
pub fn kinds(old: &Verdict, new: &Verdict) -> Vec<Kind> {
    let mut k = Vec::new();
    let (a, b) = (by_original(old), by_original(new));
    let accepted =
        |m: &BTreeMap<String, BTreeMap<String, &Fate>>| -> BTreeMap<String, BTreeSet<String>> {
            m.iter()
                .map(|(o, rs)| (o.clone(), rs.values().map(|f| acceptance(f)).collect()))
                .collect()
        };
    if accepted(&a) != accepted(&b) || old.disconnect != new.disconnect {
        k.push(Kind::Acceptance);
    }
    let addresses =
        |m: &BTreeMap<String, BTreeMap<String, &Fate>>| -> BTreeMap<String, BTreeSet<String>> {
            m.iter()
                .map(|(o, rs)| (o.clone(), rs.keys().cloned().collect()))
                .collect()
        };
    if addresses(&a) != addresses(&b) {
        k.push(Kind::Recipients);
    }
    // Routing: an address delivered under both, through another connector.
    let rerouted = a.iter().any(|(o, rs)| {
        rs.iter().any(|(addr, fa)| {
            let fb = b.get(o).and_then(|x| x.get(addr));
            matches!((fa, fb), (Fate::Deliver { connector: x }, Some(Fate::Deliver { connector: y })) if x != y)
        })
    });
    if rerouted {
        k.push(Kind::Routing);
    }
    if old.mail_from != new.mail_from {
        k.push(Kind::Sender);
    }
    if old.header_changes != new.header_changes {
        k.push(Kind::Headers);
    }
    if old.rules_fired != new.rules_fired {
        k.push(Kind::Rules);
    }
    if old.connector != new.connector
        || old.auth_as != new.auth_as
        || old.originating_org != new.originating_org
    {
        k.push(Kind::Attribution);
    }
    k
}

/// One message whose outcome changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The input's name.
    pub name: String,
    /// What kinds of difference.
    pub kinds: Vec<Kind>,
    /// Under the old rules.
    pub old: Outcome,
    /// Under the new rules.
    pub new: Outcome,
    /// Trace lines only the old rules wrote.
    pub trace_removed: Vec<Step>,
    /// Trace lines only the new rules wrote.
    pub trace_added: Vec<Step>,
}

/// What the new rules change on the inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    /// Messages evaluated.
    pub messages: usize,
    /// Those whose outcome differs, in input order.
    pub changes: Vec<Change>,
    /// How many changes have each kind.
    pub by_kind: BTreeMap<Kind, usize>,
}

/// The change between two verdicts of one message named `name`; `None`: treated alike.
pub fn change(name: &str, old: &Verdict, new: &Verdict) -> Option<Change> {
    let k = kinds(old, new);
    if k.is_empty() {
        return None;
    }
    Some(Change {
        name: name.to_string(),
        kinds: k,
        old: Outcome::of(old),
        new: Outcome::of(new),
        trace_removed: only_in(&old.trace, &new.trace),
        trace_added: only_in(&new.trace, &old.trace),
    })
}

/// The lines of trace `a` that trace `b` does not have, in order. A trace has a line per
/// rule (10,000 rules, 10,000 lines): a set, not a scan of `b` per line.
fn only_in(a: &[Step], b: &[Step]) -> Vec<Step> {
    let other: std::collections::HashSet<&Step> = b.iter().collect();
    a.iter().filter(|s| !other.contains(s)).cloned().collect()
}

/// Evaluates every input under `old` and `new` and reports the differences. Each input is
/// first evaluated without a trace (the relay's fast path), only changed ones again with
/// one. Inputs are taken one at a time, so a large capture is never held whole; the first
/// that cannot be read ends the comparison with its error.
pub fn diff(
    old: &Table,
    new: &Table,
    inputs: impl IntoIterator<Item = Result<Input, String>>,
) -> Result<Diff, String> {
    let mut d = Diff {
        messages: 0,
        changes: Vec::new(),
        by_kind: BTreeMap::new(),
    };
    for input in inputs {
        let input = input?;
        d.messages += 1;
        let rechosen = rechoose(old, &input.envelope);
        let for_new = rechosen.as_ref().unwrap_or(&input.envelope);
        let a = evaluate(old, &input.envelope, Some(&input.message), false);
        let b = evaluate(new, for_new, Some(&input.message), false);
        if kinds(&a, &b).is_empty() {
            continue;
        }
        let a = evaluate(old, &input.envelope, Some(&input.message), true);
        let b = evaluate(new, for_new, Some(&input.message), true);
        if let Some(c) = change(&input.name, &a, &b) {
            for kind in &c.kinds {
                *d.by_kind.entry(*kind).or_default() += 1;
            }
            d.changes.push(c);
        }
    }
    Ok(d)
}

/// The envelope the new rules see when the receive connector named in it is the one the
/// old rules choose for its client and local address anyway (as in captured traffic, which
/// names the connector the relay chose): without the name, so that the new rules choose by
/// their own listen addresses and remote ranges, and a change to them shows. `None`: the
/// envelope as it is (no client address, or a name the old rules would not choose, as when
/// the relay ran with `--listen` or `--remote` overrides). Nor without the local address
/// (a `test` block, an envelope file that names its connector): which port the message
/// came in on is unknown, and choosing among every port's connectors would move it to one
/// it could not have reached.
pub(crate) fn rechoose(old: &Table, env: &Envelope) -> Option<Envelope> {
    let name = env.connector.as_ref()?;
    let local = env.local?;
    let chosen =
        crate::compile::select_receive(&old.receive_connectors, Some(local), env.client_ip?)
            .and_then(|i| old.receive_connectors.get(i))?;
    (chosen.name.value == *name).then(|| Envelope {
        connector: None,
        ..env.clone()
    })
}

/// What differs between the two outcomes of one message, a line each.
pub fn describe(c: &Change) -> Vec<String> {
    let (a, b) = (&c.old, &c.new);
    let mut out = Vec::new();
    let rcpts: BTreeSet<&String> = a.recipients.keys().chain(b.recipients.keys()).collect();
    for r in rcpts {
        let (before, after) = (
            a.recipients.get(r).map_or(&[][..], Vec::as_slice),
            b.recipients.get(r).map_or(&[][..], Vec::as_slice),
        );
        if before == after {
            continue;
        }
        let one = |x: &Recipient| {
            if x.address == *r {
                x.fate.clone()
            } else {
                format!("as {}: {}", x.address, x.fate)
            }
        };
        match (before, after) {
            ([x], [y]) => out.push(format!("{r}: {} -> {}", one(x), one(y))),
            ([], [y]) => out.push(format!("{r}: now a recipient, {}", one(y))),
            ([x], []) => out.push(format!("{r}: no longer a recipient ({})", one(x))),
            _ => {
                // An expansion: what left it and what joined it.
                for x in before.iter().filter(|x| !after.contains(x)) {
                    out.push(format!("{r}: no longer {}", one(x)));
                }
                for y in after.iter().filter(|y| !before.contains(y)) {
                    out.push(format!("{r}: now {}", one(y)));
                }
            }
        }
    }
    if a.mail_from != b.mail_from {
        out.push(format!("MAIL FROM: {} -> {}", a.mail_from, b.mail_from));
    }
    if a.rules_fired != b.rules_fired {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push(format!(
            "rules fired: {} -> {}",
            list(&a.rules_fired),
            list(&b.rules_fired)
        ));
    }
    for h in a.headers.iter().filter(|h| !b.headers.contains(h)) {
        out.push(format!("header change gone: {h}"));
    }
    for h in b.headers.iter().filter(|h| !a.headers.contains(h)) {
        out.push(format!("header change new: {h}"));
    }
    let attribution = |o: &Outcome| {
        format!(
            "connector {}, {}{}{}",
            o.connector.as_deref().unwrap_or("(none)"),
            o.auth_as,
            o.originating_org
                .as_ref()
                .map_or(String::new(), |org| format!(", organization {org}")),
            if o.disconnect { ", disconnects" } else { "" }
        )
    };
    if attribution(a) != attribution(b) {
        out.push(format!("{} -> {}", attribution(a), attribution(b)));
    }
    out
}

#[cfg(test)]
mod tests {
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

    /// One captured message: named connector, the relay's configured listen address, client.
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
            [Ok(captured("Apps", "0.0.0.0:25", "10.0.0.77"))],
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
                Ok(captured("Internet", "0.0.0.0:25", "203.0.113.5")),
                Ok(captured("Narrow", "0.0.0.0:25", "10.0.0.3")),
                Ok(captured("Six", "[::]:25", "2001:db8:1::9")),
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
            [Ok(captured("Narrow", "0.0.0.0:25", "10.0.0.3"))],
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
                Ok(captured("Narrow", "0.0.0.0:25", "10.0.0.3")),
                Ok(captured("Narrow", "0.0.0.0:25", "10.0.0.4")),
                Ok(captured("Narrow", "0.0.0.0:25", "::ffff:10.0.0.3")),
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
            [Ok(captured("Six", "[::]:25", "2001:db8:1::9"))],
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
}
