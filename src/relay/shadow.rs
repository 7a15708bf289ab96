//! `mailflow relay --shadow NEW_RULES`: a candidate rule set evaluated beside the live one on
//! every message that reaches the end of data, changing nothing. Each message it would treat
//! differently is logged (what would change, recipient by recipient) and counted per kind
//! of difference in `/metrics`, so a change can meet production traffic before it takes
//! effect. The live verdict alone decides what happens to the message.

use super::Shared;
use crate::compile::Table;
use crate::diff::{Kind, change, describe, rechoose};
use crate::eval::{Envelope, Message, Verdict, evaluate};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the shadow evaluation.
#[derive(Debug, Default)]
pub struct ShadowCounts {
    /// Messages evaluated under both rule sets.
    pub evaluated: AtomicU64,
    /// Of them, treated differently.
    pub differing: AtomicU64,
    /// Per kind of difference, in [`Kind::ALL`]'s order.
    pub by_kind: [AtomicU64; Kind::ALL.len()],
    /// The candidate's rule-set digest (empty: no candidate).
    digest: std::sync::Mutex<String>,
}

impl ShadowCounts {
    /// Records the candidate's digest (at start and at each reload that takes it).
    pub fn set_digest(&self, digest: &str) {
        match self.digest.lock() {
            Ok(mut d) => digest.clone_into(&mut d),
            Err(poisoned) => digest.clone_into(&mut poisoned.into_inner()),
        }
    }

    /// The Prometheus lines.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let digest = match self.digest.lock() {
            Ok(d) => d.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if !digest.is_empty() {
            // Beside mailflow_rules_info: which candidate the counts below are about. A
            // digest is hex, nothing to escape.
            let _ = write!(
                out,
                "# HELP mailflow_shadow_rules_info The --shadow rule set: SHA-256 of its compiled form.\n# TYPE mailflow_shadow_rules_info gauge\nmailflow_shadow_rules_info{{digest=\"{digest}\"}} 1\n"
            );
        }
        let _ = write!(
            out,
            "# HELP mailflow_shadow_messages_total Messages evaluated under the --shadow rule set too.\n# TYPE mailflow_shadow_messages_total counter\nmailflow_shadow_messages_total {}\n",
            get(&self.evaluated)
        );
        let _ = write!(
            out,
            "# HELP mailflow_shadow_differences_total Messages the --shadow rule set would treat differently.\n# TYPE mailflow_shadow_differences_total counter\nmailflow_shadow_differences_total {}\n",
            get(&self.differing)
        );
        out.push_str("# HELP mailflow_shadow_difference_kinds_total Differences by kind (a message may count under several).\n# TYPE mailflow_shadow_difference_kinds_total counter\n");
        for (kind, n) in Kind::ALL.iter().zip(&self.by_kind) {
            let _ = writeln!(
                out,
                "mailflow_shadow_difference_kinds_total{{kind=\"{}\"}} {}",
                kind.name(),
                get(n)
            );
        }
    }
}

/// Evaluates the message under the shadow rule set, if there is one, and records how its
/// verdict differs from the live one (`live_table`'s), naming it in the log by its
/// Message-ID. `reached` is the address the client connected to.
pub(crate) fn compare(
    shared: &Shared,
    live_table: &Table,
    env: &Envelope,
    reached: SocketAddr,
    message: &Message,
    live: &Verdict,
) {
    let Some(table) = shared.shadow_table() else {
        return;
    };
    // The candidate chooses the receive connector by its own listen addresses and ranges,
    // as `mailflow diff` does with captured traffic, and by the address the client reached
    // (a connector the candidate binds to one address beside a wildcard takes its clients);
    // by the configured one only where that differs in port (a `--listen ...:0` override).
    let rechosen = if env.local.is_some_and(|l| l.port() == reached.port()) {
        let at_reached = Envelope {
            local: Some(reached),
            ..env.clone()
        };
        rechoose(live_table, &at_reached)
    } else {
        rechoose(live_table, env)
    };
    let candidate = evaluate(
        &table,
        rechosen.as_ref().unwrap_or(env),
        Some(message),
        false,
    );
    let counts = &shared.metrics.shadow;
    counts.evaluated.fetch_add(1, Ordering::Relaxed);
    let name = message.get("Message-ID").unwrap_or_default();
    let Some(c) = change(name.trim(), live, &candidate) else {
        return;
    };
    counts.differing.fetch_add(1, Ordering::Relaxed);
    for k in &c.kinds {
        if let Some(i) = Kind::ALL.iter().position(|x| x == k) {
            if let Some(n) = counts.by_kind.get(i) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let kinds: Vec<&str> = c.kinds.iter().map(|k| k.name()).collect();
    let from = env
        .mail_from
        .as_ref()
        .map_or_else(|| "<>".to_string(), ToString::to_string);
    tracing::info!(
        message_id = %c.name,
        sender = %from,
        kinds = %kinds.join(","),
        "shadow rules would treat this message differently: {}",
        describe(&c).join("; ")
    );
}

/// The table type the shared state keeps.
pub(crate) type ShadowTable = Option<Arc<crate::compile::Table>>;
