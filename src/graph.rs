//! `mailflow graph`: the mail flow of a checked rule set as a picture, in Mermaid or Graphviz
//! DOT. Mail enters at the receive connectors, is rewritten inbound, resolved to recipients,
//! passes the transport rules in priority order, is rewritten outbound and leaves by the send
//! connector its address space picks. Pure: a model in, text out.

use crate::model::{
    Action, AddressSpacePattern, AuthLevel, DomainKind, InboundTls, OutboundTls, RecipientKind,
    RewriteEntry, RuleMode, RuleSet,
};
use std::fmt::Write as _;

/// The output language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Mermaid `flowchart` (GitHub renders it in Markdown).
    Mermaid,
    /// Graphviz DOT.
    Dot,
}

/// How many rewrite entries a node lists by name before it only counts the rest.
const LISTED_ENTRIES: usize = 4;

struct Node {
    id: String,
    lines: Vec<String>,
    shape: Shape,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Box,
    Round,
    End,
}

struct Edge {
    from: String,
    to: String,
    label: Option<String>,
    dashed: bool,
}

struct Cluster {
    title: &'static str,
    nodes: Vec<Node>,
}

#[derive(Default)]
struct Graph {
    clusters: Vec<Cluster>,
    loose: Vec<Node>,
    edges: Vec<Edge>,
}

impl Graph {
    fn edge(&mut self, from: &str, to: &str, label: Option<String>, dashed: bool) {
        self.edges.push(Edge {
            from: from.to_string(),
            to: to.to_string(),
            label,
            dashed,
        });
    }
}

/// Draws the rule set.
pub fn render(set: &RuleSet, format: Format) -> String {
    let g = build(set);
    match format {
        Format::Mermaid => mermaid(&g),
        Format::Dot => dot(&g),
    }
}

fn build(set: &RuleSet) -> Graph {
    let mut g = Graph::default();

    // Receive connectors.
    let mut receive = Vec::new();
    for (i, c) in set.receive_connectors.iter().enumerate() {
        let mut lines = vec![c.name.value.clone()];
        if !c.listen.is_empty() {
            lines.push(format!("listen {}", join(c.listen.iter().map(|l| l.value))));
        }
        lines.push(if c.remote.is_empty() {
            "remote any".to_string()
        } else {
            format!(
                "remote {}",
                short(join(c.remote.iter().map(|r| &r.value)), 48)
            )
        });
        let tls = match c.tls.value {
            InboundTls::Off => "tls off",
            InboundTls::Optional => "tls optional",
            InboundTls::Required => "tls required",
        };
        let auth = match c.auth.value {
            AuthLevel::Anonymous => "anonymous",
            AuthLevel::Partner => "partner",
            AuthLevel::ExternallySecured if c.accept_oorg.is_empty() => "internal",
            AuthLevel::ExternallySecured => "internal for our tenants",
        };
        let mut facts = vec![tls.to_string(), auth.to_string()];
        if c.accept_any_recipient.is_some() {
            facts.push("relays for outside senders".into());
        }
        if !c.accept_oorg.is_empty() {
            facts.push(format!(
                "XOORG from {}",
                join(c.accept_oorg.iter().map(|d| &d.value))
            ));
        }
        lines.push(facts.join(" · "));
        receive.push(Node {
            id: format!("rc{i}"),
            lines,
            shape: Shape::Box,
        });
    }
    if receive.is_empty() {
        receive.push(Node {
            id: "rc".into(),
            lines: vec!["no receive connector".into()],
            shape: Shape::Box,
        });
    }
    let entry_ids: Vec<String> = receive.iter().map(|n| n.id.clone()).collect();
    g.clusters.push(Cluster {
        title: "Receive connectors",
        nodes: receive,
    });

    // Rewriting and recipients.
    let inbound: Vec<&RewriteEntry> = set.rewrites.iter().filter(|r| !r.outbound_only).collect();
    let mut pipeline = Vec::new();
    if !inbound.is_empty() {
        let mut lines = vec![format!("inbound rewrite: {} entries", inbound.len())];
        lines.extend(entries(&inbound, |r| {
            format!("{} → {}", r.external.value, r.internal.value)
        }));
        pipeline.push(Node {
            id: "inbound".into(),
            lines,
            shape: Shape::Round,
        });
    }
    let mut lines = vec!["accepted domains and recipients".to_string()];
    for d in &set.accepted_domains {
        let kind = match d.kind {
            DomainKind::Authoritative => "authoritative",
            DomainKind::InternalRelay => "internal relay",
            DomainKind::ExternalRelay => "external relay",
        };
        lines.push(format!("{} ({kind})", d.domain.value));
    }
    let count = |k: RecipientKind, deleted: bool| {
        set.recipients
            .iter()
            .filter(|r| r.kind == k && r.deleted == deleted)
            .count()
    };
    let mut who = Vec::new();
    for (n, word) in [
        (count(RecipientKind::Contact, false), "contacts"),
        (count(RecipientKind::Group, false), "groups"),
        (count(RecipientKind::MailUser, false), "mail users"),
    ] {
        if n > 0 {
            who.push(format!("{n} {word}"));
        }
    }
    let deleted = set.recipients.iter().filter(|r| r.deleted).count();
    if deleted > 0 {
        who.push(format!("{deleted} deleted"));
    }
    if !who.is_empty() {
        lines.push(who.join(", "));
    }
    pipeline.push(Node {
        id: "resolve".into(),
        lines,
        shape: Shape::Round,
    });
    let pipeline_ids: Vec<String> = pipeline.iter().map(|n| n.id.clone()).collect();
    g.loose.extend(pipeline);
    let first = pipeline_ids.first().cloned().unwrap_or_default();
    for id in &entry_ids {
        g.edge(id, &first, None, false);
    }
    chain(&mut g, &pipeline_ids);
    let mut last = pipeline_ids.last().cloned().unwrap_or_default();

    // Transport rules, in the order they run; the actions that end processing branch off.
    let mut rules = Vec::new();
    let mut ends: Vec<Node> = Vec::new();
    let mut end_edges = Vec::new();
    let mut stops = Vec::new();
    for (i, r) in set.rules.iter().enumerate() {
        let id = format!("rule{i}");
        let mut lines = vec![match &r.priority {
            Some(p) => format!("{}. {}", p.value, r.name.value),
            None => r.name.value.clone(),
        }];
        if r.mode == RuleMode::Audit {
            lines[0].push_str(" (audit)");
        }
        lines.extend(r.conditions.iter().map(|c| format!("if {}", c.value)));
        lines.extend(r.exceptions.iter().map(|c| format!("unless {}", c.value)));
        for a in &r.actions {
            lines.push(short(a.value.to_string(), 60));
            if matches!(a.value, Action::Stop) {
                stops.push(id.clone());
            }
            if let Some(end) = ending(&a.value) {
                let end_id = format!("end{i}");
                ends.push(Node {
                    id: end_id.clone(),
                    lines: vec![end],
                    shape: Shape::End,
                });
                end_edges.push((id.clone(), end_id));
            }
        }
        rules.push(Node {
            id,
            lines,
            shape: Shape::Box,
        });
    }
    let ids: Vec<String> = rules.iter().map(|n| n.id.clone()).collect();
    if let (Some(first), Some(end)) = (ids.first(), ids.last()) {
        g.edge(&last, first, None, false);
        chain(&mut g, &ids);
        last = end.clone();
        g.clusters.push(Cluster {
            title: "Transport rules, in priority order",
            nodes: rules,
        });
        for (from, to) in end_edges {
            g.edge(&from, &to, Some("when it matches".into()), true);
        }
        g.loose.extend(ends);
    }

    // Outbound rewriting and the send connectors. A rule that stops processing skips the
    // rest of the rules, not the routing.
    let after_rules = if set.rewrites.is_empty() {
        "route"
    } else {
        "outbound"
    };
    for id in stops {
        g.edge(&id, after_rules, Some("stop".into()), true);
    }
    if !set.rewrites.is_empty() {
        let all: Vec<&RewriteEntry> = set.rewrites.iter().collect();
        let mut lines = vec![format!(
            "outbound rewrite (internal senders): {} entries",
            all.len()
        )];
        lines.extend(entries(&all, |r| {
            format!("{} → {}", r.internal.value, r.external.value)
        }));
        g.loose.push(Node {
            id: "outbound".into(),
            lines,
            shape: Shape::Round,
        });
        g.edge(&last, "outbound", None, false);
        last = "outbound".into();
    }
    g.loose.push(Node {
        id: "route".into(),
        lines: vec!["route by address space".into()],
        shape: Shape::Round,
    });
    g.edge(&last, "route", None, false);
    let mut send = Vec::new();
    for (i, c) in set.send_connectors.iter().enumerate() {
        let id = format!("sc{i}");
        let mut lines = vec![c.name.value.clone()];
        lines.push(if c.smart_hosts.is_empty() {
            "MX lookup".to_string()
        } else {
            format!(
                "smart host {}",
                join(c.smart_hosts.iter().map(|h| if h.value.port == 25 {
                    h.value.host.clone()
                } else {
                    format!("{}:{}", h.value.host, h.value.port)
                }))
            )
        });
        let tls = match c.tls.value {
            OutboundTls::Off => "tls off".to_string(),
            OutboundTls::Opportunistic => "tls opportunistic".to_string(),
            OutboundTls::Required => match &c.tls_name {
                Some(n) => format!("tls required, name {}", n.value),
                None => "tls required".to_string(),
            },
        };
        lines.push(tls);
        let spaces = join(c.address_spaces.iter().map(|s| match &s.pattern {
            AddressSpacePattern::All => "*".to_string(),
            AddressSpacePattern::Domain(d) => d.to_string(),
            AddressSpacePattern::AcceptedDomains => "--".to_string(),
        }));
        g.edge("route", &id, Some(spaces), false);
        send.push(Node {
            id,
            lines,
            shape: Shape::Box,
        });
    }
    if !send.is_empty() {
        g.clusters.push(Cluster {
            title: "Send connectors",
            nodes: send,
        });
    }
    g
}

/// Edges from each node to the next.
fn chain(g: &mut Graph, ids: &[String]) {
    for (a, b) in ids.iter().zip(ids.iter().skip(1)) {
        g.edge(a, b, None, false);
    }
}

/// The node an ending action leads to, for the actions that end a message's way.
fn ending(a: &Action) -> Option<String> {
    match a {
        Action::Delete => Some("deleted".into()),
        Action::Reject(s) => Some(format!("rejected {} {}", s.code, s.enhanced)),
        Action::Quarantine(q) => Some(format!("quarantined to {q}")),
        Action::Disconnect => Some("disconnected".into()),
        Action::RedirectTo(v) => Some(format!(
            "redirected to {}",
            join(v.iter().map(ToString::to_string))
        )),
        _ => None,
    }
}

fn entries(list: &[&RewriteEntry], line: impl Fn(&RewriteEntry) -> String) -> Vec<String> {
    let mut out: Vec<String> = list.iter().take(LISTED_ENTRIES).map(|r| line(r)).collect();
    if list.len() > LISTED_ENTRIES {
        out.push(format!("… and {} more", list.len() - LISTED_ENTRIES));
    }
    out
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

fn short(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn mermaid_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| {
            let mut out = String::with_capacity(l.len());
            for c in l.chars() {
                match c {
                    '"' => out.push_str("#quot;"),
                    '<' => out.push_str("#lt;"),
                    '>' => out.push_str("#gt;"),
                    '#' => out.push_str("#35;"),
                    _ => out.push(c),
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("<br/>")
}

fn mermaid_node(out: &mut String, indent: &str, n: &Node) {
    let text = mermaid_text(&n.lines);
    let _ = match n.shape {
        Shape::Box => writeln!(out, "{indent}{}[\"{text}\"]", n.id),
        Shape::Round => writeln!(out, "{indent}{}(\"{text}\")", n.id),
        Shape::End => writeln!(out, "{indent}{}([\"{text}\"])", n.id),
    };
}

fn mermaid(g: &Graph) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, c) in g.clusters.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster{i}[\"{}\"]", c.title);
        out.push_str("    direction TB\n");
        for n in &c.nodes {
            mermaid_node(&mut out, "    ", n);
        }
        out.push_str("  end\n");
    }
    for n in &g.loose {
        mermaid_node(&mut out, "  ", n);
    }
    for e in &g.edges {
        let arrow = if e.dashed { "-.->" } else { "-->" };
        let _ = match &e.label {
            Some(l) => writeln!(
                out,
                "  {} {arrow}|\"{}\"| {}",
                e.from,
                mermaid_text(std::slice::from_ref(l)),
                e.to
            ),
            None => writeln!(out, "  {} {arrow} {}", e.from, e.to),
        };
    }
    out
}

fn dot_text(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| l.replace('\\', "\\\\").replace('"', "\\\""))
        .collect::<Vec<_>>()
        .join("\\n")
}

fn dot_node(out: &mut String, indent: &str, n: &Node) {
    let shape = match n.shape {
        Shape::Box => "box",
        Shape::Round => "box, style=rounded",
        Shape::End => "oval",
    };
    let _ = writeln!(
        out,
        "{indent}{} [label=\"{}\", shape={shape}];",
        n.id,
        dot_text(&n.lines)
    );
}

fn dot(g: &Graph) -> String {
    let mut out = String::from(
        "digraph mailflow {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\"];\n",
    );
    for (i, c) in g.clusters.iter().enumerate() {
        let _ = writeln!(out, "  subgraph cluster{i} {{");
        let _ = writeln!(out, "    label=\"{}\";", c.title);
        for n in &c.nodes {
            dot_node(&mut out, "    ", n);
        }
        out.push_str("  }\n");
    }
    for n in &g.loose {
        dot_node(&mut out, "  ", n);
    }
    for e in &g.edges {
        let mut attrs = Vec::new();
        if let Some(l) = &e.label {
            attrs.push(format!("label=\"{}\"", dot_text(std::slice::from_ref(l))));
        }
        if e.dashed {
            attrs.push("style=dashed".into());
        }
        if attrs.is_empty() {
            let _ = writeln!(out, "  {} -> {};", e.from, e.to);
        } else {
            let _ = writeln!(out, "  {} -> {} [{}];", e.from, e.to, attrs.join(", "));
        }
    }
    out.push_str("}\n");
    out
}
