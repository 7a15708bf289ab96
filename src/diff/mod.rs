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
/// it could not have reached. Nor when the local address is a wildcard (`0.0.0.0:25`, as
/// captures written before they recorded the address reached have it): new rules that bind
/// the addresses in use would match none of them.
pub(crate) fn rechoose(old: &Table, env: &Envelope) -> Option<Envelope> {
    let name = env.connector.as_ref()?;
    let local = env.local.filter(|l| !l.ip().is_unspecified())?;
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
mod tests;
